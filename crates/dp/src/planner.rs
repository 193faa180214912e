//! Parameter planning for distributed DP (Kairouz, Liu, Steinke 2021, §4.4 and Eq. 61).
//!
//! Inputs: noise multiplier `z` (or a target ε), δ, rounds `T`, Poisson rate `q`, cohort
//! size `n` (clients summed), `n_min` (smallest survivor count a round accepts), tolerated
//! colluders `t`, dimension `d` (padded to `m`), clip `C`, bits `b`.
//!
//! **Noise calibration.** The guarantee must hold whoever drops out, so it relies on the
//! `h = n_min − t` honest survivors only: each client's integer-domain noise variance is
//! `s² = (z·Δ₂)² / h`, where `Δ₂` is the inflated L2 sensitivity after rounding
//! ([`crate::quantize::inflated_l2_bound`] of `C/γ`). Calibrating to `Δ₂` rather than to
//! `C/γ` makes the effective noise multiplier `z_eff = √(h s²)/Δ₂ ≥ z` exactly (TFF
//! calibrates to the uninflated clip, so its `z_eff = z / inflation`); the
//! *sensitivity inflation* `Δ₂γ/C ≥ 1` then costs utility (more noise in model units)
//! instead of privacy. A round that ends with fewer than `n_min` survivors must release
//! nothing.
//!
//! **Scale and wrap-around.** Each coordinate of the aggregate of `n` clients is treated
//! as sub-Gaussian (after the rotation, flatness `ρ = 1`) with variance proxy
//! `V = C²n²/(mγ²) + n(1/4 + s²)` in integer units (`n²`: all clients aligned, the worst
//! case; `1/4`: rounding). We choose the smallest `γ` (finest lattice) with
//! `2k√V ≤ 2^b`: then `P(|S_j| ≥ 2^{b−1}) ≤ 2e^{−k²/2}` per coordinate for a sub-Gaussian
//! aggregate (about `erfc(k/√2)` if it is Gaussian: 6.3e−5 at the default `k = 4`).
//! Skellam tails are sub-exponential, so for Skellam the bound is approximate; a wrapped
//! coordinate is a utility loss, never a privacy loss (modular reduction is
//! post-processing).

use serde::{Deserialize, Serialize};

use crate::accountant::{self, DpEvent};
use crate::encoding::{Clipping, EncodingParams, Rounding};
use crate::error::{DpError, invalid};
use crate::noise::{NoiseSpec, Ratio};
use crate::quantize::{
    DEFAULT_BETA, DEFAULT_MAX_ATTEMPTS, check_bits, inflated_l2_bound, l1_bound_from_l2, norm_bound_sq,
};
use crate::rotation::padded_dim;

/// Default number of standard deviations of the aggregate that must fit in `b` bits.
pub const DEFAULT_K_STDDEVS: f64 = 4.0;

/// The integer noise mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Distributed discrete Gaussian.
    DiscreteGaussian,
    /// Distributed Skellam.
    Skellam,
}

/// What fixes the amount of noise.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseTarget {
    /// A noise multiplier `z = σ/Δ₂` (> 0).
    Multiplier(f64),
    /// The smallest multiplier whose ε over all rounds is at most this value.
    Epsilon(f64),
}

/// Inputs to [`plan`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    /// Noise mechanism.
    pub mechanism: Mechanism,
    /// Multiplier or target ε.
    pub noise: NoiseTarget,
    /// δ for the reported ε, in (0, 1).
    pub delta: f64,
    /// Number of rounds `T ≥ 1`.
    pub rounds: u64,
    /// Poisson client-sampling rate `q ∈ (0, 1]` (use 1 against the server).
    pub sampling_rate: f64,
    /// Cohort size `n ≥ 1`: the most clients whose vectors are summed in a round.
    pub clients: usize,
    /// Smallest survivor count a round accepts, `1 ≤ n_min ≤ n`.
    pub n_min: usize,
    /// Colluding clients tolerated (their noise is not counted), `< n_min`.
    pub colluders: usize,
    /// Model dimension `d ≥ 1`.
    pub dim: usize,
    /// L2 clip `C > 0` (model units).
    pub clip: f64,
    /// Bit width `b ∈ 1..=64`.
    pub bits: u32,
    /// Conditional rounding `β ∈ [0, 1)`.
    pub beta: f64,
    /// Standard deviations `k > 0` that must fit in `b` bits.
    pub k_stddevs: f64,
    /// Conditional-rounding retry cap.
    pub max_attempts: u32,
}

impl PlanInput {
    /// Inputs with the defaults `β = e^{−1/2}`, `k = 4`, no colluders and 1000 attempts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mechanism: Mechanism,
        noise: NoiseTarget,
        delta: f64,
        rounds: u64,
        sampling_rate: f64,
        clients: usize,
        n_min: usize,
        dim: usize,
        clip: f64,
        bits: u32,
    ) -> Self {
        Self {
            mechanism,
            noise,
            delta,
            rounds,
            sampling_rate,
            clients,
            n_min,
            colluders: 0,
            dim,
            clip,
            bits,
            beta: DEFAULT_BETA,
            k_stddevs: DEFAULT_K_STDDEVS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    fn validate(&self) -> Result<(), DpError> {
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(invalid("delta", format!("must be in (0, 1), got {}", self.delta)));
        }
        if self.rounds == 0 {
            return Err(invalid("rounds", "must be ≥ 1"));
        }
        if !(self.sampling_rate > 0.0 && self.sampling_rate <= 1.0) {
            return Err(invalid("sampling_rate", format!("must be in (0, 1], got {}", self.sampling_rate)));
        }
        if self.clients == 0 || self.n_min == 0 {
            return Err(invalid("clients", "n and n_min must be ≥ 1"));
        }
        if self.n_min > self.clients {
            return Err(DpError::NMinAboveCohort { n_min: self.n_min, clients: self.clients });
        }
        if self.colluders >= self.n_min {
            return Err(DpError::NoHonestClients { n_min: self.n_min, colluders: self.colluders });
        }
        if self.dim == 0 {
            return Err(invalid("dim", "must be ≥ 1"));
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err(invalid("clip", format!("must be finite and > 0, got {}", self.clip)));
        }
        check_bits(self.bits)?;
        if !(0.0..1.0).contains(&self.beta) {
            return Err(invalid("beta", format!("must be in [0, 1), got {}", self.beta)));
        }
        if !(self.k_stddevs.is_finite() && self.k_stddevs > 0.0) {
            return Err(invalid("k_stddevs", "must be finite and > 0"));
        }
        if self.max_attempts == 0 {
            return Err(invalid("max_attempts", "must be ≥ 1"));
        }
        let (n, k, b) = (self.clients as f64, self.k_stddevs, f64::from(self.bits));
        if 2f64.powf(2.0 * b) < n * k * k || 2f64.powf(b) < n {
            return Err(DpError::TooFewBits { bits: self.bits, clients: self.clients, k_stddevs: k });
        }
        Ok(())
    }
}

/// The modular wrap-around check of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WrapCheck {
    /// Standard deviations that fit.
    pub k_stddevs: f64,
    /// `√V`: std proxy of one aggregate coordinate (integer units, `n` clients).
    pub aggregate_std: f64,
    /// `2^{b−1}`: largest magnitude the centered lift represents.
    pub half_range: f64,
    /// Sub-Gaussian bound `2e^{−k²/2}` on one coordinate wrapping.
    pub per_coordinate_bound: f64,
    /// `erfc(k/√2)`: the wrap probability of a Gaussian coordinate.
    pub per_coordinate_gaussian: f64,
}

/// A feasible configuration: everything the encoder, the ledger and the operator need.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The inputs (with the noise target resolved in `noise_multiplier`).
    pub input: PlanInput,
    /// Padded dimension `m` (power of two).
    pub padded_dim: usize,
    /// Lattice step `γ` (model units per integer unit).
    pub gamma: f64,
    /// Requested (or solved) noise multiplier `z`.
    pub noise_multiplier: f64,
    /// Honest shares the guarantee relies on, `h = n_min − colluders`.
    pub honest_shares: usize,
    /// Each client's noise parameter in integer units (σ² of the discrete Gaussian share
    /// or variance of the Skellam share), rounded up exactly.
    pub local_variance: Ratio,
    /// Inflated L2 sensitivity `Δ₂` (integer units).
    pub l2_sensitivity: f64,
    /// L1 sensitivity `Δ₁` (integer units).
    pub l1_sensitivity: f64,
    /// `⌊Δ₂²⌋`, the exact squared-norm threshold clients enforce.
    pub norm_bound_sq: u128,
    /// `Δ₂ γ / C ≥ 1`: how much rounding inflates the sensitivity.
    pub sensitivity_inflation: f64,
    /// `√(h s²) / Δ₂ ≥ z`: noise std of the honest shares' sum per unit of sensitivity.
    pub effective_noise_multiplier: f64,
    /// Central noise std in model units, `√(h s²)·γ`.
    pub central_std: f64,
    /// Wrap-around check.
    pub wrap: WrapCheck,
    /// ε after `rounds` rounds at `delta` with sampling rate `q`.
    pub epsilon: f64,
    /// ε after `rounds` rounds at `delta` without amplification (`q = 1`): the
    /// guarantee against the server, who knows the cohort.
    pub epsilon_without_sampling: f64,
}

impl Plan {
    /// The DP event of one round of this plan (what the ledger records), with
    /// `sampling_rate` in place of the planned rate.
    pub fn dp_event_with_rate(&self, sampling_rate: f64) -> DpEvent {
        let (l2, l1) = (self.l2_sensitivity, self.l1_sensitivity);
        let s2 = self.local_variance.to_f64();
        match self.input.mechanism {
            Mechanism::DiscreteGaussian => DpEvent::DistributedDiscreteGaussian {
                sampling_rate,
                l2_sensitivity: l2,
                l1_sensitivity: l1,
                local_variance: s2,
                shares: self.honest_shares as u64,
                dim: self.padded_dim as u64,
            },
            Mechanism::Skellam => DpEvent::DistributedSkellam {
                sampling_rate,
                l2_sensitivity: l2,
                l1_sensitivity: l1,
                total_variance: s2 * self.honest_shares as f64,
            },
        }
    }

    /// The DP event of one round at the planned sampling rate.
    pub fn dp_event(&self) -> DpEvent {
        self.dp_event_with_rate(self.input.sampling_rate)
    }

    /// The clients' encoding parameters for a round with this rotation seed.
    pub fn encoding_params(&self, rotation_seed: [u8; 32]) -> EncodingParams {
        let noise = match self.input.mechanism {
            Mechanism::DiscreteGaussian => NoiseSpec::DiscreteGaussian { variance: self.local_variance },
            Mechanism::Skellam => NoiseSpec::Skellam { variance: self.local_variance },
        };
        EncodingParams {
            dim: self.input.dim,
            padded_dim: self.padded_dim,
            rotation_seed: Some(rotation_seed),
            gamma: self.gamma,
            bits: self.input.bits,
            clipping: Clipping::L2(self.input.clip),
            rounding: Rounding::Conditional {
                beta: self.input.beta,
                norm_bound_sq: self.norm_bound_sq,
                max_attempts: self.input.max_attempts,
            },
            noise,
        }
    }
}

/// Integer-domain quantities at a given `γ`.
struct AtGamma {
    delta_2: f64,
    /// `(z Δ₂)²/h`, rounded up to the exact rational the samplers use.
    local_variance: Ratio,
    aggregate_var: f64,
}

fn at_gamma(input: &PlanInput, m: usize, z: f64, gamma: f64) -> Result<AtGamma, DpError> {
    let c = input.clip / gamma;
    let delta_2 = inflated_l2_bound(c, m, input.beta)?;
    let h = (input.n_min - input.colluders) as f64;
    let local_variance = Ratio::from_f64_ceil((z * delta_2).powi(2) / h)?;
    let n = input.clients as f64;
    let aggregate_var = c * c * n * n / m as f64 + n * (0.25 + local_variance.to_f64());
    Ok(AtGamma { delta_2, local_variance, aggregate_var })
}

fn plan_for_multiplier(input: &PlanInput, z: f64) -> Result<Plan, DpError> {
    if !(z.is_finite() && z > 0.0) {
        return Err(invalid("noise_multiplier", format!("must be finite and > 0, got {z}")));
    }
    let m = padded_dim(input.dim);
    let k = input.k_stddevs;
    let limit = 2f64.powi(input.bits as i32);
    // A γ so fine that the noise variance leaves the samplers' range does not fit either.
    let fits = |g: f64| at_gamma(input, m, z, g).is_ok_and(|q| 2.0 * k * q.aggregate_var.sqrt() <= limit);
    // The spread 2k√V shrinks as γ grows (coarser lattice); find the smallest γ that fits
    // by bisection on ln γ.
    let (mut lo, mut hi) = ((input.clip * 1e-30).ln(), (input.clip * 1e30).ln());
    if !fits(hi.exp()) {
        return Err(DpError::WrapAroundRisk { bits: input.bits, k_stddevs: k });
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if fits(mid.exp()) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let gamma = hi.exp();
    let q = at_gamma(input, m, z, gamma)?;
    let local_variance = q.local_variance;
    let h = input.n_min - input.colluders;
    let l1 = l1_bound_from_l2(q.delta_2, m);
    let central_var = h as f64 * local_variance.to_f64();
    let mut plan = Plan {
        input: input.clone(),
        padded_dim: m,
        gamma,
        noise_multiplier: z,
        honest_shares: h,
        local_variance,
        l2_sensitivity: q.delta_2,
        l1_sensitivity: l1,
        norm_bound_sq: norm_bound_sq(q.delta_2)?,
        sensitivity_inflation: q.delta_2 * gamma / input.clip,
        effective_noise_multiplier: effective_noise_multiplier(h, local_variance.to_f64(), q.delta_2),
        central_std: central_var.sqrt() * gamma,
        wrap: WrapCheck {
            k_stddevs: k,
            aggregate_std: q.aggregate_var.sqrt(),
            half_range: limit / 2.0,
            per_coordinate_bound: 2.0 * (-k * k / 2.0).exp(),
            per_coordinate_gaussian: libm::erfc(k / std::f64::consts::SQRT_2),
        },
        epsilon: 0.0,
        epsilon_without_sampling: 0.0,
    };
    plan.input.noise = NoiseTarget::Multiplier(z);
    plan.epsilon = accountant::tightest_epsilon(&plan.dp_event(), input.rounds, input.delta)?;
    plan.epsilon_without_sampling =
        accountant::tightest_epsilon(&plan.dp_event_with_rate(1.0), input.rounds, input.delta)?;
    Ok(plan)
}

/// The noise multiplier that `honest_shares` noise shares of variance `share_variance`
/// give against an L2 sensitivity of `l2_sensitivity` (all in integer units):
/// √(h·s²)/Δ₂. Both the planner and a client checking a round's settings use it.
pub fn effective_noise_multiplier(honest_shares: usize, share_variance: f64, l2_sensitivity: f64) -> f64 {
    (honest_shares as f64 * share_variance).sqrt() / l2_sensitivity
}

/// Chooses `γ` and the noise share for `input`. Errors name the failed condition:
/// [`DpError::InvalidParameter`], [`DpError::NMinAboveCohort`],
/// [`DpError::NoHonestClients`], [`DpError::TooFewBits`] (`2^{2b} < n k²` or
/// `2^b < n`), [`DpError::WrapAroundRisk`] (no `γ` fits the noise in `b` bits),
/// [`DpError::EpsilonUnreachable`].
pub fn plan(input: &PlanInput) -> Result<Plan, DpError> {
    input.validate()?;
    match input.noise {
        NoiseTarget::Multiplier(z) => plan_for_multiplier(input, z),
        NoiseTarget::Epsilon(target) => {
            let z = accountant::smallest_multiplier_for(target, |z| Ok(plan_for_multiplier(input, z)?.epsilon))?;
            plan_for_multiplier(input, z)
        }
    }
}

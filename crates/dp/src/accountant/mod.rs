//! Rényi-DP accountant (Mironov, CSF 2017) reproducing Google's `dp_accounting` 0.6.0
//! `RdpAccountant`, with the discrete mechanisms of privagg.
//!
//! An `(α, ε(α))`-RDP curve is tracked on a fixed grid of orders
//! ([`DEFAULT_RDP_ORDERS`]: 1.1, 1.2, …, 10.9, 11, 12, …, 63, 128, 256, 512, 1024, as in
//! `dp_accounting`); composition adds curves. Mechanisms ([`DpEvent`]):
//! * the Poisson-subsampled Gaussian ([`gaussian`], Mironov, Talwar, Zhang 2019), the
//!   user-level DP-FedAvg release (McMahan et al. 2018) with `q` = client sampling rate;
//! * the distributed discrete Gaussian and Skellam ([`discrete`]), subsampled with the
//!   Zhu–Wang bound as Kairouz et al. (2021) and Agarwal et al. (2021) do.
//!
//! Conversion to `(ε, δ)` uses the improved bound of Canonne, Kamath, Steinke (2020,
//! Prop. 12) / Asoodeh et al. (2020), as `dp_accounting` does:
//! `ε = min_α ε(α) + ln(1 − 1/α) − (ln δ + ln α)/(α − 1)` over orders `α > 1.01`, and
//! `ε = 0` when `δ² + expm1(−ε(α)) > 0` (the KL bound).
//!
//! For `q = 1` the analytic Gaussian ([`analytic`], Balle and Wang 2018) is exact and
//! tighter than any RDP conversion. For the Gaussian at any `q`, the privacy-loss-
//! distribution accountant ([`pld`], connect-the-dots as `dp_accounting`'s
//! `PLDAccountant`) is tighter than RDP. [`epsilon_bounds`] computes every sound bound
//! for an event and [`tightest_epsilon`] their minimum: the headline figure. ρ of
//! zero-concentrated DP is [`DpEvent::zcdp_rho`].
//!
//! Neighbouring relation: one client's contribution replaced by zero (zero-out; for
//! Poisson subsampling the bounds are those of add/remove, as in `dp_accounting`).
//! Subsampling amplification assumes the cohort is hidden from the adversary; against
//! the server, who sees the cohort, account with `q = 1` (see [`crate::sampling`]).

pub mod analytic;
pub mod discrete;
mod fft;
pub mod gaussian;
pub mod pld;
mod special;

use serde::{Deserialize, Serialize};

use crate::error::{DpError, invalid};

/// `dp_accounting`'s `DEFAULT_RDP_ORDERS` (156 orders).
pub static DEFAULT_RDP_ORDERS: std::sync::LazyLock<Vec<f64>> = std::sync::LazyLock::new(|| {
    (1..100)
        .map(|x| 1.0 + f64::from(x) / 10.0)
        .chain((11..64).map(f64::from))
        .chain([128.0, 256.0, 512.0, 1024.0])
        .collect()
});

/// One round's privacy-relevant release. Sensitivities and variances of the discrete
/// mechanisms are in the integer domain.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mechanism", rename_all = "snake_case")]
pub enum DpEvent {
    /// Poisson-subsampled Gaussian: noise std / L2 sensitivity = `noise_multiplier`.
    Gaussian {
        /// `z = σ/Δ₂`, ≥ 0.
        noise_multiplier: f64,
        /// Poisson sampling rate `q ∈ [0, 1]`.
        sampling_rate: f64,
    },
    /// Sum of `shares` discrete Gaussian shares `N_Z(0, local_variance)`.
    DistributedDiscreteGaussian {
        /// Poisson sampling rate `q ∈ [0, 1]`.
        sampling_rate: f64,
        /// Inflated L2 sensitivity `Δ₂` (integer units), > 0.
        l2_sensitivity: f64,
        /// L1 sensitivity `Δ₁` (integer units), > 0.
        l1_sensitivity: f64,
        /// Each share's σ² parameter (integer units), > 0.
        local_variance: f64,
        /// Number of honest shares the guarantee relies on (`n_min − colluders`), ≥ 1.
        shares: u64,
        /// Padded dimension `d`, ≥ 1.
        dim: u64,
    },
    /// Skellam noise whose shares sum to `total_variance`.
    DistributedSkellam {
        /// Poisson sampling rate `q ∈ [0, 1]`.
        sampling_rate: f64,
        /// Inflated L2 sensitivity `Δ₂` (integer units), > 0.
        l2_sensitivity: f64,
        /// L1 sensitivity `Δ₁` (integer units), > 0.
        l1_sensitivity: f64,
        /// Variance of the honest shares' sum (integer units), > 0.
        total_variance: f64,
    },
}

fn check_rate(q: f64) -> Result<(), DpError> {
    if (0.0..=1.0).contains(&q) { Ok(()) } else { Err(invalid("sampling_rate", format!("must be in [0, 1], got {q}"))) }
}

fn check_positive(name: &'static str, v: f64) -> Result<(), DpError> {
    if v.is_finite() && v > 0.0 { Ok(()) } else { Err(invalid(name, format!("must be finite and > 0, got {v}"))) }
}

impl DpEvent {
    /// Checks the documented ranges.
    pub fn validate(&self) -> Result<(), DpError> {
        match *self {
            Self::Gaussian { noise_multiplier, sampling_rate } => {
                check_rate(sampling_rate)?;
                if noise_multiplier.is_nan() || noise_multiplier < 0.0 {
                    return Err(invalid("noise_multiplier", "must be ≥ 0"));
                }
            }
            Self::DistributedDiscreteGaussian {
                sampling_rate,
                l2_sensitivity,
                l1_sensitivity,
                local_variance,
                shares,
                dim,
            } => {
                check_rate(sampling_rate)?;
                check_positive("l2_sensitivity", l2_sensitivity)?;
                check_positive("l1_sensitivity", l1_sensitivity)?;
                check_positive("local_variance", local_variance)?;
                if shares == 0 || dim == 0 {
                    return Err(invalid("shares/dim", "must be ≥ 1"));
                }
            }
            Self::DistributedSkellam { sampling_rate, l2_sensitivity, l1_sensitivity, total_variance } => {
                check_rate(sampling_rate)?;
                check_positive("l2_sensitivity", l2_sensitivity)?;
                check_positive("l1_sensitivity", l1_sensitivity)?;
                check_positive("total_variance", total_variance)?;
            }
        }
        Ok(())
    }

    /// ρ of zero-concentrated DP (Bun and Steinke, TCC 2016) of one occurrence: a ρ with
    /// `D_α ≤ ρ·α` at *every* order `α > 1` (not only the accountant's grid), so `T`
    /// occurrences are `Tρ`-zCDP and `ε ≤ Tρ + 2√(Tρ ln(1/δ))`. Event assumed valid;
    /// `q = 0` gives 0.
    /// * Gaussian: `1/(2z²)` (∞ at `z = 0`) for every `q > 0`: subsampling gives no zCDP
    ///   amplification, since the subsampled curve's `ε(α)/α` tends to `1/(2z²)` as
    ///   `α → ∞`.
    /// * Distributed discrete Gaussian: each of Kairouz et al.'s three RDP bounds
    ///   ([`discrete`]) is at most linear in `α` once its constant is absorbed
    ///   (`c ≤ cα` for `α > 1`): `ρ = min{ s₂²/2 + τd, (s₂² + 2s₁τ + τ²d)/2, (s₂ + τ√d)²/2 }`
    ///   with `s₂ = Δ₂/σ`, `s₁ = Δ₁/σ`, `σ = √n·s`; no amplification for `q < 1`.
    /// * Skellam: likewise from Agarwal et al.'s bound,
    ///   `ρ = Δ₂²/(2μ) + min{ Δ₂²/(2μ²) + max(0, (6Δ₁ − Δ₂²)/(4μ²)),  3Δ₁/(2μ) }`.
    pub fn zcdp_rho(&self) -> f64 {
        match *self {
            Self::Gaussian { sampling_rate, .. }
            | Self::DistributedDiscreteGaussian { sampling_rate, .. }
            | Self::DistributedSkellam { sampling_rate, .. }
                if sampling_rate == 0.0 =>
            {
                0.0
            }
            Self::Gaussian { noise_multiplier, .. } => 0.5 / (noise_multiplier * noise_multiplier),
            Self::DistributedDiscreteGaussian {
                l2_sensitivity, l1_sensitivity, local_variance, shares, dim, ..
            } => {
                let sigma = (shares as f64 * local_variance).sqrt();
                let tau = discrete::ddg_tau(local_variance, shares);
                let (s2, s1, d) = (l2_sensitivity / sigma, l1_sensitivity / sigma, dim as f64);
                let r1 = s2 * s2 / 2.0 + tau * d;
                let r2 = (s2 * s2 + 2.0 * s1 * tau + tau * tau * d) / 2.0;
                let r3 = (s2 + tau * d.sqrt()).powi(2) / 2.0;
                r1.min(r2).min(r3)
            }
            Self::DistributedSkellam { l2_sensitivity: l2, l1_sensitivity: l1, total_variance: mu, .. } => {
                let a = l2 * l2 / (2.0 * mu * mu) + ((6.0 * l1 - l2 * l2) / (4.0 * mu * mu)).max(0.0);
                let b = 3.0 * l1 / (2.0 * mu);
                l2 * l2 / (2.0 * mu) + a.min(b)
            }
        }
    }

    /// `ε(α)` of one occurrence of the event (event assumed valid).
    pub fn rdp(&self, alpha: f64) -> f64 {
        match *self {
            Self::Gaussian { noise_multiplier, sampling_rate } => {
                gaussian::subsampled_gaussian_rdp(sampling_rate, noise_multiplier, alpha)
            }
            Self::DistributedDiscreteGaussian {
                sampling_rate,
                l2_sensitivity,
                l1_sensitivity,
                local_variance,
                shares,
                dim,
            } => {
                let sigma = (shares as f64 * local_variance).sqrt();
                let tau = discrete::ddg_tau(local_variance, shares);
                discrete::subsampled_rdp(alpha, sampling_rate, |a| {
                    discrete::ddg_rdp(a, l2_sensitivity, l1_sensitivity, sigma, tau, dim)
                })
            }
            Self::DistributedSkellam { sampling_rate, l2_sensitivity, l1_sensitivity, total_variance } => {
                discrete::subsampled_rdp(alpha, sampling_rate, |a| {
                    discrete::skellam_rdp(a, l2_sensitivity, l1_sensitivity, total_variance)
                })
            }
        }
    }
}

/// The improved RDP → (ε, δ) conversion; returns `(ε, optimal order)`. Same semantics
/// as `dp_accounting.rdp.compute_epsilon`. Rejects `delta ∉ [0, 1]`, mismatched lengths
/// and orders below 1.
pub fn rdp_to_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> Result<(f64, f64), DpError> {
    if !(0.0..=1.0).contains(&delta) {
        return Err(invalid("delta", format!("must be in [0, 1], got {delta}")));
    }
    if orders.len() != rdp.len() || orders.is_empty() {
        return Err(invalid("orders", "need one RDP value per order"));
    }
    if orders.iter().any(|&a| a.is_nan() || a < 1.0) {
        return Err(invalid("orders", "must all be ≥ 1"));
    }
    if delta == 0.0 {
        return Ok(if rdp.iter().all(|&r| r == 0.0) { (0.0, 0.0) } else { (f64::INFINITY, 0.0) });
    }
    let mut best = (f64::INFINITY, orders[0]);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        // NaN never wins; the first minimum wins, as numpy's argmin.
        if eps < best.0 {
            best = (eps, a);
        }
    }
    Ok((best.0.max(0.0), best.1))
}

/// Accumulates RDP over a grid of orders.
#[derive(Clone, Debug, PartialEq)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An empty accountant on [`DEFAULT_RDP_ORDERS`].
    pub fn new() -> Self {
        let orders = DEFAULT_RDP_ORDERS.clone();
        let rdp = vec![0.0; orders.len()];
        Self { orders, rdp }
    }

    /// An empty accountant on custom orders (all > 1, finite, non-empty).
    pub fn with_orders(orders: Vec<f64>) -> Result<Self, DpError> {
        if orders.is_empty() || orders.iter().any(|&a| !(a > 1.0 && a.is_finite())) {
            return Err(invalid("orders", "must be non-empty, finite and > 1"));
        }
        let rdp = vec![0.0; orders.len()];
        Ok(Self { orders, rdp })
    }

    /// Adds `count` occurrences of `event`. Rejects invalid events.
    pub fn compose(&mut self, event: &DpEvent, count: u64) -> Result<(), DpError> {
        event.validate()?;
        if count == 0 {
            return Ok(());
        }
        for (r, &a) in self.rdp.iter_mut().zip(&self.orders) {
            *r += count as f64 * event.rdp(a);
        }
        Ok(())
    }

    /// The orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The accumulated RDP curve, one value per order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// `(ε, optimal order)` at `delta` by the improved conversion.
    pub fn epsilon_and_order(&self, delta: f64) -> Result<(f64, f64), DpError> {
        rdp_to_epsilon(&self.orders, &self.rdp, delta)
    }

    /// ε at `delta`.
    pub fn epsilon(&self, delta: f64) -> Result<f64, DpError> {
        Ok(self.epsilon_and_order(delta)?.0)
    }
}

/// ε after `rounds` repetitions of `event`, at `delta`, with the default orders.
pub fn epsilon(event: &DpEvent, rounds: u64, delta: f64) -> Result<f64, DpError> {
    let mut acc = RdpAccountant::new();
    acc.compose(event, rounds)?;
    acc.epsilon(delta)
}

/// ε of DP-FedAvg with the Poisson-subsampled Gaussian: noise multiplier `z`, sampling
/// rate `q`, `rounds` rounds, at `delta`. Equal to `dp_accounting`'s `RdpAccountant`.
pub fn epsilon_gaussian(z: f64, q: f64, rounds: u64, delta: f64) -> Result<f64, DpError> {
    epsilon(&DpEvent::Gaussian { noise_multiplier: z, sampling_rate: q }, rounds, delta)
}

/// Exact ε for `rounds` full-participation (`q = 1`) Gaussian rounds with multiplier `z`
/// (analytic Gaussian of Balle and Wang on `z/√rounds`). Rejects `z < 0`, `rounds = 0`
/// and `delta ∉ (0, 1]`.
pub fn analytic_gaussian_epsilon(z: f64, rounds: u64, delta: f64) -> Result<f64, DpError> {
    if z.is_nan() || z < 0.0 {
        return Err(invalid("noise_multiplier", "must be ≥ 0"));
    }
    if rounds == 0 {
        return Err(invalid("rounds", "must be ≥ 1"));
    }
    if !(delta > 0.0 && delta <= 1.0) {
        return Err(invalid("delta", format!("must be in (0, 1], got {delta}")));
    }
    Ok(analytic::epsilon_for_sigma(z / (rounds as f64).sqrt(), delta))
}

/// Every sound ε bound this crate has for `rounds` occurrences of one event at one δ,
/// and ρ of zCDP. All are valid upper bounds; [`EpsilonBounds::tightest`] is the one to
/// report.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EpsilonBounds {
    /// RDP with the improved conversion ([`epsilon`]); always available.
    pub rdp: f64,
    /// The exact analytic Gaussian ([`analytic_gaussian_epsilon`]): Gaussian with
    /// `q = 1` only.
    pub analytic_gaussian: Option<f64>,
    /// The connect-the-dots PLD ([`pld::epsilon`]): the Gaussian only (at any `q`); `None`
    /// for the discrete mechanisms, for which no PLD is known to be a valid bound.
    pub pld: Option<f64>,
    /// The PLD's grid step (nats), when `pld` is `Some`.
    pub pld_discretization: Option<f64>,
    /// ρ of zCDP of the composition: `rounds ·` [`DpEvent::zcdp_rho`].
    pub zcdp_rho: f64,
}

impl EpsilonBounds {
    /// The smallest of the ε bounds: the headline.
    pub fn tightest(&self) -> f64 {
        [self.analytic_gaussian, self.pld].into_iter().flatten().fold(self.rdp, f64::min)
    }
}

/// All sound ε bounds for `rounds` occurrences of `event` at `delta` (see
/// [`EpsilonBounds`]). The PLD uses [`pld::DEFAULT_VALUE_DISCRETIZATION_INTERVAL`],
/// coarsened tenfold (up to 1e-1) while its grid would exceed [`pld::MAX_GRID_LEN`]
/// (any step gives a valid bound; a coarser one is only looser). Rejects invalid events,
/// `rounds = 0` and `delta ∉ (0, 1)`.
pub fn epsilon_bounds(event: &DpEvent, rounds: u64, delta: f64) -> Result<EpsilonBounds, DpError> {
    event.validate()?;
    if rounds == 0 {
        return Err(invalid("rounds", "must be ≥ 1"));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(invalid("delta", format!("must be in (0, 1), got {delta}")));
    }
    let rdp = epsilon(event, rounds, delta)?;
    let analytic_gaussian = match *event {
        DpEvent::Gaussian { noise_multiplier, sampling_rate: 1.0 } => {
            Some(analytic_gaussian_epsilon(noise_multiplier, rounds, delta)?)
        }
        _ => None,
    };
    let (mut pld, mut pld_discretization) = (None, None);
    let mut h = pld::DEFAULT_VALUE_DISCRETIZATION_INTERVAL;
    while h <= 0.1 {
        match pld::epsilon(event, rounds, delta, h) {
            Ok(e) => {
                pld_discretization = e.map(|_| h);
                pld = e;
                break;
            }
            Err(DpError::PldGridTooLarge { .. }) => h *= 10.0,
            Err(e) => return Err(e),
        }
    }
    let zcdp_rho = rounds as f64 * event.zcdp_rho();
    Ok(EpsilonBounds { rdp, analytic_gaussian, pld, pld_discretization, zcdp_rho })
}

/// The tightest sound ε for `rounds` occurrences of `event` at `delta`: the minimum of
/// RDP, the analytic Gaussian (exact at `q = 1`) and the PLD (Gaussian only). What a
/// headline ε should use. Rejects what [`epsilon_bounds`] rejects.
pub fn tightest_epsilon(event: &DpEvent, rounds: u64, delta: f64) -> Result<f64, DpError> {
    Ok(epsilon_bounds(event, rounds, delta)?.tightest())
}

/// Largest noise multiplier the searches consider.
pub const MAX_NOISE_MULTIPLIER: f64 = 1.0e6;

/// The smallest `z` (to relative precision 1e-9) with `eps_of(z) ≤ target`, for a
/// non-increasing `eps_of`. The returned `z` always satisfies `eps_of(z) ≤ target`:
/// bisection keeps `eps_of(hi) ≤ target < eps_of(lo)` and returns `hi`.
pub fn smallest_multiplier_for(
    target: f64,
    mut eps_of: impl FnMut(f64) -> Result<f64, DpError>,
) -> Result<f64, DpError> {
    if !(target.is_finite() && target > 0.0) {
        return Err(invalid("target_epsilon", format!("must be finite and > 0, got {target}")));
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    loop {
        let e = eps_of(hi)?;
        if e <= target {
            break;
        }
        lo = hi;
        hi *= 2.0;
        if hi > MAX_NOISE_MULTIPLIER {
            return Err(DpError::EpsilonUnreachable { target, best: e });
        }
    }
    while hi - lo > 1e-9 * hi {
        let mid = 0.5 * (lo + hi);
        if eps_of(mid)? <= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// The smallest Gaussian noise multiplier whose RDP ε after `rounds` rounds at rate `q`
/// is at most `target_epsilon` at `delta` (never above the target).
pub fn noise_multiplier_for_epsilon(target_epsilon: f64, q: f64, rounds: u64, delta: f64) -> Result<f64, DpError> {
    smallest_multiplier_for(target_epsilon, |z| epsilon_gaussian(z, q, rounds, delta))
}

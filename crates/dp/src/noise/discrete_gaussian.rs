//! Exact discrete Laplace and discrete Gaussian samplers (Canonne, Kamath, Steinke,
//! "The Discrete Gaussian for Differential Privacy", NeurIPS 2020, Algorithms 2 and 3).
//!
//! The discrete Gaussian `N_Z(0, σ²)` has `P(x) ∝ exp(−x²/(2σ²))` on the integers. With
//! `σ² = num/den` and `t = ⌊σ⌋ + 1`, repeat: draw `Y` from the discrete Laplace with
//! `P(y) ∝ exp(−|y|/t)` and accept it with probability
//! `exp(−(|Y| − σ²/t)² / (2σ²)) = exp(−(|Y|·t·den − num)² / (2·num·den·t²))`.
//! The exponent is a ratio of integers, so the acceptance is an exact
//! Bernoulli(exp(−γ)) draw. Expected iterations are a small constant.
//!
//! [`DiscreteGaussian::sample`] draws the same distribution faster from a table
//! ([`BinnedGaussian`]) whenever the parameters fit it (every value the planner
//! produces); [`DiscreteGaussian::sample_reference`] is the algorithm above.
//!
//! Note `Var N_Z(0, σ²) < σ²` (about 0.215 for σ = 0.5), and a sum of discrete
//! Gaussians is not a discrete Gaussian (see the τ term in [`crate::accountant`]).

use rand_core::CryptoRng;

use std::sync::Arc;

use super::binned::BinnedGaussian;
use super::exact::{bernoulli_exp, bernoulli_exp_minus_one, uniform_below};
use super::ratio::Ratio;
use crate::error::{DpError, invalid};

/// Bound on the acceptance denominator `2·num·den·t²`. It guarantees that an exponent
/// numerator too large for `u128` means an exponent of at least `2^128 / 2^120 = 256`;
/// the sampler then needs 256 consecutive Bernoulli(e^−1) successes (probability
/// `e^−256 < 2^−369`) before it would have to report [`DpError::SamplerOverflow`].
const MAX_ACCEPT_DEN: u128 = 1 << 120;

/// Exact sampler for the discrete Laplace with `P(y) ∝ exp(−|y|/t)`, integer `t ≥ 1`.
pub fn sample_discrete_laplace<R: CryptoRng + ?Sized>(rng: &mut R, t: u64) -> Result<i64, DpError> {
    if t == 0 {
        return Err(invalid("t", "discrete Laplace scale must be ≥ 1"));
    }
    loop {
        let u = uniform_below(rng, t);
        if !bernoulli_exp(rng, u128::from(u), u128::from(t)) {
            continue;
        }
        let mut v: u64 = 0;
        while bernoulli_exp_minus_one(rng) {
            v += 1;
        }
        let x = v
            .checked_mul(t)
            .and_then(|tv| tv.checked_add(u))
            .and_then(|x| i64::try_from(x).ok())
            .ok_or(DpError::SamplerOverflow)?;
        let negative = uniform_below(rng, 2) == 1;
        if negative && x == 0 {
            continue;
        }
        return Ok(if negative { -x } else { x });
    }
}

/// Exact sampler for the discrete Gaussian `N_Z(0, σ²)` with rational `σ²`.
#[derive(Clone, Debug)]
pub struct DiscreteGaussian {
    variance: Ratio,
    /// Discrete Laplace scale `t = ⌊σ⌋ + 1`.
    t: u64,
    /// Acceptance denominator `2·num·den·t²`.
    accept_den: u128,
    /// The fast table, when `σ²` fits it (shared by clones: it depends on `σ²` only).
    table: Option<Arc<BinnedGaussian>>,
}

/// Two samplers are equal when they sample the same distribution (the table is a
/// function of `σ²`).
impl PartialEq for DiscreteGaussian {
    fn eq(&self, other: &Self) -> bool {
        self.variance == other.variance
    }
}

impl Eq for DiscreteGaussian {}

impl DiscreteGaussian {
    /// Sampler for `σ² = variance` (the parameter of the pmf, not the variance of the
    /// output, which is slightly smaller). Rejects parameters whose acceptance
    /// denominator `2·num·den·t²` exceeds `2^120`. Every value produced by
    /// [`Ratio::from_f64_ceil`] (σ² up to 2^59) is accepted.
    pub fn new(variance: Ratio) -> Result<Self, DpError> {
        let Ratio { num, den } = Ratio::new(variance.num, variance.den)?;
        let t = (num / den).isqrt() + 1;
        let accept_den = 2u128
            .checked_mul(u128::from(num))
            .and_then(|v| v.checked_mul(u128::from(den)))
            .and_then(|v| v.checked_mul(u128::from(t) * u128::from(t)))
            .filter(|&v| v <= MAX_ACCEPT_DEN)
            .ok_or_else(|| invalid("variance", format!("{num}/{den} is too large for the exact sampler")))?;
        // A variance the table cannot hold keeps the (slower) reference algorithm.
        let table = BinnedGaussian::new(num, den).ok().map(Arc::new);
        Ok(Self { variance: Ratio { num, den }, t, accept_den, table })
    }

    /// Whether [`sample`](Self::sample) uses the fast table.
    pub fn has_table(&self) -> bool {
        self.table.is_some()
    }

    /// The `σ²` parameter.
    pub fn variance(&self) -> Ratio {
        self.variance
    }

    /// One exact sample: from the table when there is one, else
    /// [`sample_reference`](Self::sample_reference). Same distribution either way.
    pub fn sample<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> Result<i64, DpError> {
        match &self.table {
            Some(table) => table.sample(rng),
            None => self.sample_reference(rng),
        }
    }

    /// Fills `out` with independent exact samples (in bulk from the table when there is
    /// one).
    pub fn fill<R: CryptoRng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) -> Result<(), DpError> {
        match &self.table {
            Some(table) => table.fill(rng, out),
            None => out.iter_mut().try_for_each(|x| {
                *x = self.sample_reference(rng)?;
                Ok(())
            }),
        }
    }

    /// One exact sample by the Canonne–Kamath–Steinke rejection from the discrete
    /// Laplace (the module comment); slower, kept as the reference.
    pub fn sample_reference<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> Result<i64, DpError> {
        let Ratio { num, den } = self.variance;
        loop {
            let y = sample_discrete_laplace(rng, self.t)?;
            let shifted = u128::from(y.unsigned_abs())
                .checked_mul(u128::from(self.t) * u128::from(den))
                .map(|a| a.abs_diff(u128::from(num)));
            let accepted = match shifted.and_then(|x| u64::try_from(x).ok()) {
                Some(x) => {
                    let x = u128::from(x);
                    bernoulli_exp(rng, x * x, self.accept_den)
                }
                // The exponent is at least ⌊(2^128−1)/accept_den⌋ ≥ 255: all of those
                // Bernoulli(e^−1) draws must succeed before the exact remainder matters.
                None => {
                    let lower = u128::MAX / self.accept_den;
                    let mut i = 0u128;
                    while i < lower {
                        if !bernoulli_exp_minus_one(rng) {
                            break;
                        }
                        i += 1;
                    }
                    if i == lower {
                        return Err(DpError::SamplerOverflow);
                    }
                    false
                }
            };
            if accepted {
                return Ok(y);
            }
        }
    }
}

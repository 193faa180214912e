//! Exact Poisson and symmetric Skellam samplers.
//!
//! The symmetric Skellam with variance `v` is `P₁ − P₂` for independent Poisson(`v/2`)
//! draws (Agarwal, Kairouz, Liu, NeurIPS 2021). It is closed under summation, so `n`
//! client shares of variance `v` sum to exactly a Skellam of variance `n·v`.
//!
//! # The Poisson sampler
//!
//! TensorFlow's Poisson sampler is floating point and therefore not exact. Here
//! Poisson(`λ`), `λ = a/b`, is drawn by rejection using only ratios of consecutive
//! probabilities, which are rational. With mode `m = ⌊λ⌋` and `r(j) = P(m+j)/P(m)`:
//! `r(j) = Π_{i=1..j} λ/(m+i)` for `j > 0` and `r(−j) = Π_{i=1..j} (m−i+1)/λ`; every
//! factor is at most 1 and they decrease in `i` (the pmf is log-concave). So for a
//! width `J ≈ √λ`, `r(j) ≤ E(j)` with the envelope `E(j) = 1` for `−J < j < J` and
//! `E(j) = f_J^{|j|−J+1}` beyond, where `f_J` is the `J`-th factor on that side.
//! Sampling: pick the flat part or a geometric tail in proportion to their (rational)
//! masses, draw `j`, then accept with probability `r(j)/E(j)`, which is a product of
//! rational Bernoulli draws (`λ/(m+i)` inside, `(m+J)/(m+i)` in the right tail,
//! `(m−i+1)/(m−J+1)` in the left tail). The acceptance rate is about 0.6 and the
//! expected cost is `O(√λ)` uniform draws per sample, so the discrete Gaussian (`O(1)`)
//! is the faster choice for large variances.

use rand_core::CryptoRng;

use super::exact::{bernoulli_ratio, geometric_ratio, uniform_below_u128};
use super::ratio::Ratio;
use crate::error::{DpError, invalid};

/// Exact sampler for Poisson(`a/b`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poisson {
    a: u128,
    b: u128,
    /// Mode `⌊λ⌋`.
    m: u128,
    /// Half-width of the flat part of the envelope.
    j: u128,
    /// Number of flat points left of the mode (`min(J, m+1) − 1`).
    left_flat: u128,
    /// Whether the envelope has a left geometric tail (`J ≤ m`).
    left_tail: bool,
    w_flat: u128,
    w_right: u128,
    w_left: u128,
}

fn overflow() -> DpError {
    invalid("lambda", "too large for the exact Poisson sampler")
}

impl Poisson {
    /// Sampler for `λ = a/b`; rejects `a = 0` or `b = 0` and parameters whose envelope
    /// weights overflow 128 bits (not reachable from [`Ratio::from_f64_ceil`] values).
    pub fn new(a: u64, b: u64) -> Result<Self, DpError> {
        if a == 0 || b == 0 {
            return Err(invalid("lambda", format!("{a}/{b} must be positive")));
        }
        let (a, b) = (u128::from(a), u128::from(b));
        let m = a / b;
        let j = if m == 0 { 1 } else { m.isqrt() + 2 };
        let left_flat = j.min(m + 1) - 1;
        let left_tail = j <= m;
        // Right tail mass f/(1−f) with f = λ/(m+J) = a/(b(m+J)): a/(b(m+J) − a).
        let r_den = b.checked_mul(m + j).ok_or_else(overflow)? - a;
        let flat = j + left_flat;
        let (w_flat, w_right, w_left) = if left_tail {
            // Left tail mass g/(1−g) with g = b(m−J+1)/a: b(m−J+1)/(a − b(m−J+1)).
            let g_num = b * (m - j + 1);
            let l_den = a - g_num;
            let common = r_den.checked_mul(l_den).ok_or_else(overflow)?;
            (
                flat.checked_mul(common).ok_or_else(overflow)?,
                a.checked_mul(l_den).ok_or_else(overflow)?,
                g_num.checked_mul(r_den).ok_or_else(overflow)?,
            )
        } else {
            (flat.checked_mul(r_den).ok_or_else(overflow)?, a, 0)
        };
        w_flat.checked_add(w_right).and_then(|s| s.checked_add(w_left)).ok_or_else(overflow)?;
        Ok(Self { a, b, m, j, left_flat, left_tail, w_flat, w_right, w_left })
    }

    /// One exact sample.
    pub fn sample<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> u64 {
        let (a, b, m, j) = (self.a, self.b, self.m, self.j);
        loop {
            let pick = uniform_below_u128(rng, self.w_flat + self.w_right + self.w_left);
            let (right, offset) = if pick < self.w_flat {
                let idx = uniform_below_u128(rng, j + self.left_flat);
                if idx < j { (true, idx) } else { (false, idx - j + 1) }
            } else if pick < self.w_flat + self.w_right {
                (true, j + u128::from(geometric_ratio(rng, a, b * (m + j))))
            } else {
                let g_num = b * (m - j + 1);
                (false, j + u128::from(geometric_ratio(rng, g_num, a)))
            };
            let accepted = if right {
                (1..=offset).all(|i| {
                    if i < j { bernoulli_ratio(rng, a, b * (m + i)) } else { bernoulli_ratio(rng, m + j, m + i) }
                })
            } else {
                offset <= m
                    && (1..=offset).all(|i| {
                        if i < j {
                            bernoulli_ratio(rng, b * (m - i + 1), a)
                        } else {
                            bernoulli_ratio(rng, m - i + 1, m - j + 1)
                        }
                    })
            };
            if accepted {
                let value = if right { m + offset } else { m - offset };
                // m ≤ 2^64 and offsets are geometric, so this fits except with
                // negligible probability; saturate rather than wrap.
                return u64::try_from(value).unwrap_or(u64::MAX);
            }
        }
    }
}

/// Exact sampler for the symmetric Skellam distribution with variance `v` (rational):
/// the difference of two independent Poisson(`v/2`) draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skellam {
    variance: Ratio,
    poisson: Poisson,
}

impl Skellam {
    /// Sampler with variance `variance`; rejects values whose `2·den` overflows or that
    /// the Poisson sampler rejects.
    pub fn new(variance: Ratio) -> Result<Self, DpError> {
        let variance = Ratio::new(variance.num, variance.den)?;
        let two_den = variance.den.checked_mul(2).ok_or_else(overflow)?;
        Ok(Self { variance, poisson: Poisson::new(variance.num, two_den)? })
    }

    /// The variance `v`.
    pub fn variance(&self) -> Ratio {
        self.variance
    }

    /// One exact sample.
    pub fn sample<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> Result<i64, DpError> {
        let x = self.poisson.sample(rng);
        let y = self.poisson.sample(rng);
        let diff = i128::from(x) - i128::from(y);
        i64::try_from(diff).map_err(|_| DpError::SamplerOverflow)
    }
}

//! Rigorous bounds on `e^{−x}` for rational `x`, and the exact comparison of a uniform
//! real with a number known only through such bounds.
//!
//! A table sampler ([`super::binned`]) accepts a proposal when a uniform real `U` falls
//! below a transcendental threshold `θ = e^{−x}·a/b`. `U < θ` is decided exactly by
//! looking at as many bits of `U` as it takes: with `θ` bounded by `lo ≤ θ·2^p ≤ hi`
//! (integers) and `u` the first `p` bits of `U`, `u + 1 ≤ lo` proves `U < θ` and
//! `u ≥ hi` proves `U ≥ θ`; otherwise draw 64 more bits of `U` and tighten the bounds.
//! Each round leaves the question open with probability about `(hi − lo + 1)/2^p`, so
//! the loop ends with probability 1 (after one round, almost always, since the tables
//! hold the 64-bit answer). No float is involved: the bounds come from the alternating
//! Taylor series of `e^{−x}` in fixed point with every rounding directed outwards.

use num_bigint::{BigInt, BigUint};
use rand_core::CryptoRng;

/// `⌈a / 2^s⌉`.
fn shr_ceil(a: &BigUint, s: u64) -> BigUint {
    let q = a >> s;
    if (&q << s) == *a { q } else { q + 1u32 }
}

/// `⌈a / b⌉` for `b > 0`.
fn div_ceil(a: &BigUint, b: &BigUint) -> BigUint {
    let q = a / b;
    if &q * b == *a { q } else { q + 1u32 }
}

/// Bounds on `e^{−g/d}·2^q` for `0 ≤ g ≤ d`, `d > 0`: the terms `x^k/k!` do not
/// increase, so the partial sums ending with a subtraction are lower bounds and those
/// ending with an addition upper bounds. Each term is carried as a (floor, ceil) pair.
fn exp_neg_unit(g: &BigUint, d: &BigUint, q: u64) -> (BigUint, BigUint) {
    let one = BigUint::from(1u32) << q;
    let (mut t_lo, mut t_hi) = (one.clone(), one.clone());
    let (mut sum_lo, mut sum_hi) = (BigInt::from(one.clone()), BigInt::from(one.clone()));
    let (mut best_lo, mut best_hi) = (BigInt::from(0u32), BigInt::from(one));
    let mut k = 1u32;
    loop {
        let step = d * k;
        t_lo = (&t_lo * g) / &step;
        t_hi = div_ceil(&(&t_hi * g), &step);
        if k % 2 == 1 {
            sum_lo -= BigInt::from(t_hi.clone());
            sum_hi -= BigInt::from(t_lo.clone());
            best_lo = best_lo.max(sum_lo.clone());
        } else {
            sum_lo += BigInt::from(t_lo.clone());
            sum_hi += BigInt::from(t_hi.clone());
            best_hi = best_hi.min(sum_hi.clone());
        }
        // Both parities have been seen once the remaining terms are below one unit.
        if k >= 2 && t_hi <= BigUint::from(1u32) {
            break;
        }
        k += 1;
    }
    (best_lo.to_biguint().unwrap_or_default(), best_hi.to_biguint().unwrap_or_default())
}

/// Bounds `(lo, hi)` with `lo ≤ e^{−num/den}·2^prec ≤ hi`, for `den > 0`.
///
/// `e^{−x} = (e^{−1})^w · e^{−f}` with `w = ⌊x⌋`; the power is taken by squaring with the
/// lower bound rounded down and the upper bound rounded up at every product (all factors
/// lie in `[0, 1]`, so the products are monotone). Guard bits keep `hi − lo` to a few
/// units.
pub(crate) fn exp_neg_bounds(num: &BigUint, den: &BigUint, prec: u64) -> (BigUint, BigUint) {
    let whole = num / den;
    let frac = num % den;
    let q = prec + 64 + 2 * whole.bits();
    let (mut lo, mut hi) = exp_neg_unit(&frac, den, q);
    if whole.bits() > 0 {
        let one = BigUint::from(1u32);
        let (mut base_lo, mut base_hi) = exp_neg_unit(&one, &one, q);
        let (mut acc_lo, mut acc_hi) = (BigUint::from(1u32) << q, BigUint::from(1u32) << q);
        for i in 0..whole.bits() {
            if whole.bit(i) {
                acc_lo = (&acc_lo * &base_lo) >> q;
                acc_hi = shr_ceil(&(&acc_hi * &base_hi), q);
            }
            base_lo = (&base_lo * &base_lo) >> q;
            base_hi = shr_ceil(&(&base_hi * &base_hi), q);
        }
        lo = (&lo * &acc_lo) >> q;
        hi = shr_ceil(&(&hi * &acc_hi), q);
    }
    let cap = BigUint::from(1u32) << prec;
    (lo >> (q - prec), shr_ceil(&hi, q - prec).min(cap))
}

/// The threshold `θ = e^{−exp_num/exp_den} · factor_num/factor_den` (must lie in
/// `[0, 1]`), known through rigorous bounds at any precision.
#[derive(Clone, Debug)]
pub(crate) struct ScaledExp {
    pub exp_num: BigUint,
    pub exp_den: BigUint,
    pub factor_num: BigUint,
    pub factor_den: BigUint,
}

impl ScaledExp {
    /// `(lo, hi)` with `lo ≤ θ·2^prec ≤ hi`.
    pub fn bounds(&self, prec: u64) -> (BigUint, BigUint) {
        // The factor can be large: carry its bits (and 16 more) as extra precision.
        let extra = self.factor_num.bits() + 16;
        let (e_lo, e_hi) = exp_neg_bounds(&self.exp_num, &self.exp_den, prec + extra);
        let den = &self.factor_den << extra;
        ((e_lo * &self.factor_num) / &den, div_ceil(&(e_hi * &self.factor_num), &den))
    }
}

/// Whether a uniform real `U ∈ [0, 1)`, whose first 64 bits are `first`, lies below
/// `θ`. Further bits of `U` come from `rng` as needed. Exact; see the module comment.
pub(crate) fn uniform_below_threshold<R: CryptoRng + ?Sized>(rng: &mut R, first: u64, theta: &ScaledExp) -> bool {
    let mut u = BigUint::from(first);
    let mut prec = 64;
    loop {
        let (lo, hi) = theta.bounds(prec);
        if u < lo {
            return true;
        }
        if u >= hi {
            return false;
        }
        u = (u << 64u32) | BigUint::from(rng.next_u64());
        prec += 64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_f64(v: &BigUint, prec: u64) -> f64 {
        let bits = v.bits();
        let shift = bits.saturating_sub(60);
        let top = (v >> shift).to_u64_digits().first().copied().unwrap_or(0) as f64;
        top * 2f64.powi(shift as i32 - prec as i32)
    }

    #[test]
    fn bounds_bracket_libm_and_are_tight() {
        for (num, den) in [(0u64, 1u64), (1, 1), (1, 3), (7, 2), (1000, 7), (123_456, 1000), (5, 100_000)] {
            let (lo, hi) = exp_neg_bounds(&BigUint::from(num), &BigUint::from(den), 80);
            assert!(lo <= hi);
            assert!(&hi - &lo <= BigUint::from(4u32), "{num}/{den}: width {}", &hi - &lo);
            let x = (-(num as f64) / den as f64).exp();
            let (l, h) = (to_f64(&lo, 80), to_f64(&hi, 80));
            assert!(l <= x * (1.0 + 1e-12) && h >= x * (1.0 - 1e-12), "{num}/{den}: {l} {x} {h}");
        }
        // e^0 = 1 exactly.
        let (lo, hi) = exp_neg_bounds(&BigUint::from(0u32), &BigUint::from(5u32), 64);
        assert_eq!((lo.clone(), hi), (BigUint::from(1u32) << 64u32, BigUint::from(1u32) << 64u32));
    }

    #[test]
    fn scaled_threshold_bounds_contain_the_value() {
        // θ = e^{−1/2} · 3/4.
        let theta = ScaledExp {
            exp_num: BigUint::from(1u32),
            exp_den: BigUint::from(2u32),
            factor_num: BigUint::from(3u32),
            factor_den: BigUint::from(4u32),
        };
        let (lo, hi) = theta.bounds(100);
        let x = (-0.5f64).exp() * 0.75;
        assert!(to_f64(&lo, 100) <= x * (1.0 + 1e-12) && to_f64(&hi, 100) >= x * (1.0 - 1e-12));
        assert!(&hi - &lo <= BigUint::from(2u32));
    }
}

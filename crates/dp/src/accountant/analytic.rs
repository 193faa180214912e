//! The analytic Gaussian mechanism (Balle and Wang, ICML 2018, Thm. 8).
//!
//! A Gaussian release with noise multiplier `σ` (std / L2 sensitivity) is exactly
//! `(ε, δ(ε))`-DP with
//! `δ(ε) = Φ(1/(2σ) − εσ) − e^ε Φ(−1/(2σ) − εσ)`.
//! `T` releases with multiplier `z` compose to exactly one release with `z/√T`, so for
//! full participation (`q = 1`) this gives the tight ε, below the RDP bound. Computed in
//! log space as `dp_accounting.gaussian_mechanism.get_epsilon_gaussian` does, and solved
//! for ε by bisection to `1e-12`.

use super::special::log_ndtr;

/// `ln δ(ε)` for noise multiplier `sigma` (−∞ when δ(ε) = 0).
pub fn log_delta(sigma: f64, eps: f64) -> f64 {
    let t = eps * sigma + 1.0 / (2.0 * sigma);
    let x = log_ndtr(1.0 / sigma - t);
    let y = eps + log_ndtr(-t);
    if y <= x { x + (-(y - x).exp()).ln_1p() } else { f64::NEG_INFINITY }
}

/// The smallest ε such that one Gaussian release with multiplier `sigma` is
/// `(ε, delta)`-DP. `sigma = 0` gives ∞, `delta = 1` gives 0. Callers validate ranges.
pub fn epsilon_for_sigma(sigma: f64, delta: f64) -> f64 {
    if delta >= 1.0 || sigma.is_infinite() {
        return 0.0;
    }
    if sigma == 0.0 || delta <= 0.0 {
        return f64::INFINITY;
    }
    let target = delta.ln();
    if log_delta(sigma, 0.0) < target {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while log_delta(sigma, hi) > target {
        lo = hi;
        hi *= 10.0;
        if hi > 1e12 {
            return f64::INFINITY;
        }
    }
    // δ(ε) is decreasing in ε; keep δ(lo) ≥ target ≥ δ(hi).
    while hi - lo > 1e-12 * hi.max(1.0) {
        let mid = 0.5 * (lo + hi);
        if log_delta(sigma, mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

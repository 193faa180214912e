//! Log-space helpers and special functions for the accountant.

/// `ln(e^x + e^y)` without overflow.
pub(crate) fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// `ln C(n, k)` for real `n`, `k` via `ln|Γ|` (as scipy's `gammaln`).
pub(crate) fn log_comb(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// `ln erfc(x)`, accurate in the far tail where `erfc` underflows.
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x < 26.0 {
        return libm::erfc(x).ln();
    }
    // Asymptotic expansion erfc(x) ~ e^{−x²}/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + …);
    // at x ≥ 26 the omitted terms are below 1e-13 relative.
    let r = 1.0 / (2.0 * x * x);
    let series = 1.0 - r + 3.0 * r * r - 15.0 * r * r * r + 105.0 * r * r * r * r;
    -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln()
}

/// `ln Φ(x)` for the standard normal CDF Φ.
pub(crate) fn log_ndtr(x: f64) -> f64 {
    log_erfc(-x / std::f64::consts::SQRT_2) - std::f64::consts::LN_2
}

/// The standard normal CDF Φ(x) (as scipy's `ndtr`).
pub(crate) fn ndtr(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

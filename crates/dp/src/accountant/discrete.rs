//! RDP of the distributed discrete Gaussian and the distributed Skellam mechanisms, and
//! the generic Poisson-subsampling bound they use.
//!
//! All quantities are in the integer domain: `Δ₂`, `Δ₁` are the inflated L2/L1
//! sensitivities after rounding, `s²` the per-client noise parameter, `n` the number of
//! shares the analysis relies on.
//!
//! **Distributed discrete Gaussian** (Kairouz, Liu, Steinke, ICML 2021, Thm. 1 and
//! Prop. 14). The sum of `n` shares `N_Z(0, s²)` is close to `N_Z(0, n s²)`; the gap is
//! `τ = 10 Σ_{k=1}^{n−1} e^{−2π² s² k/(k+1)}`. With `σ = √n·s`:
//! `ε(α) = min{ α/2·(Δ₂/σ)² + τd,  α/2·((Δ₂/σ)² + 2(Δ₁/σ)τ + τ²d),  α/2·(Δ₂/σ + τ√d)² }`.
//! `τ` decays like `e^{−π²s²}`, so for `s ≥ 2` the mechanism has the Gaussian's RDP.
//!
//! **Distributed Skellam** (Agarwal, Kairouz, Liu, NeurIPS 2021, Thm. 3.5). Shares sum
//! to an exact Skellam with variance `μ`:
//! `ε(α) = αΔ₂²/(2μ) + min{ ((2α−1)Δ₂² + 6Δ₁)/(4μ²),  3Δ₁/(2μ) }`.
//!
//! **Subsampling.** Neither has a closed-form subsampled RDP. As both papers' code does,
//! for Poisson rate `q < 1` and integer `α ≥ 2` we take the minimum of the unamplified
//! `ε(α)` and the general bound of Zhu and Wang (ICML 2019, Thm. 5):
//! `ε'(α) ≤ 1/(α−1) · ln( (1−q)^{α−1}(αq−q+1) + C(α,2)q²(1−q)^{α−2}e^{ε(2)}
//!          + 3 Σ_{l=3}^{α} C(α,l)(1−q)^{α−l} q^l e^{(l−1)ε(l)} )`.
//! Fractional orders get the unamplified `ε(α)` (always a valid bound).

use super::special::log_comb;

/// The τ correction of Kairouz et al. for `shares` discrete Gaussian shares with
/// parameter `local_variance` (integer domain).
pub fn ddg_tau(local_variance: f64, shares: u64) -> f64 {
    let c = 2.0 * std::f64::consts::PI.powi(2) * local_variance;
    let mut sum = 0.0;
    for k in 1..shares {
        let term = (-c * k as f64 / (k as f64 + 1.0)).exp();
        sum += term;
        if term == 0.0 {
            break;
        }
    }
    10.0 * sum
}

/// Unamplified RDP of the distributed discrete Gaussian (Prop. 14) with central
/// std `sigma = √n·s` and `tau` from [`ddg_tau`].
pub fn ddg_rdp(alpha: f64, l2: f64, l1: f64, sigma: f64, tau: f64, dim: u64) -> f64 {
    let d = dim as f64;
    let (s2, s1) = (l2 / sigma, l1 / sigma);
    let t1 = alpha / 2.0 * s2 * s2 + tau * d;
    let t2 = alpha / 2.0 * (s2 * s2 + 2.0 * s1 * tau + tau * tau * d);
    let t3 = alpha / 2.0 * (s2 + d.sqrt() * tau).powi(2);
    t1.min(t2).min(t3)
}

/// Unamplified RDP of the Skellam mechanism with total variance `mu`.
pub fn skellam_rdp(alpha: f64, l2: f64, l1: f64, mu: f64) -> f64 {
    let base = alpha * l2 * l2 / (2.0 * mu);
    let c1 = ((2.0 * alpha - 1.0) * l2 * l2 + 6.0 * l1) / (4.0 * mu * mu);
    let c2 = 3.0 * l1 / (2.0 * mu);
    base + c1.min(c2)
}

/// RDP at `alpha` of the Poisson-subsampled mechanism with unamplified curve `eps`
/// (min of Zhu–Wang Thm. 5 at integer orders and the unamplified value).
pub fn subsampled_rdp(alpha: f64, q: f64, eps: impl Fn(f64) -> f64) -> f64 {
    let plain = eps(alpha);
    if q >= 1.0 {
        return plain;
    }
    if q <= 0.0 {
        return 0.0;
    }
    if alpha.fract() != 0.0 || alpha < 2.0 {
        return plain;
    }
    let a = alpha as u64;
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let af = alpha;
    let mut terms = Vec::with_capacity(a as usize);
    terms.push(((af - 1.0) * l1q) + (af * q - q + 1.0).ln());
    terms.push(log_comb(af, 2.0) + 2.0 * lq + (af - 2.0) * l1q + eps(2.0));
    for l in 3..=a {
        let lf = l as f64;
        terms.push(3f64.ln() + (lf - 1.0) * eps(lf) + log_comb(af, lf) + (af - lf) * l1q + lf * lq);
    }
    let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return plain;
    }
    let lse = max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln();
    (lse / (af - 1.0)).min(plain)
}

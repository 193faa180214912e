//! The accountant against dp_accounting 0.6.0 reference values
//! (`tests/data/dp_accounting_reference.json`, made by
//! `tests/data/make_dp_accounting_reference.py`), closed forms and invariants.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use privagg_dp::DpError;
use privagg_dp::accountant::{
    DEFAULT_RDP_ORDERS, DpEvent, RdpAccountant, analytic_gaussian_epsilon, epsilon, epsilon_gaussian,
    gaussian::subsampled_gaussian_rdp, noise_multiplier_for_epsilon, rdp_to_epsilon,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    default_orders: Vec<f64>,
    rdp_epsilon: Vec<EpsCase>,
    rdp_curves: Vec<Curve>,
    analytic_gaussian: Vec<AnalyticCase>,
}

#[derive(Deserialize)]
struct EpsCase {
    z: f64,
    q: f64,
    rounds: u64,
    delta: f64,
    epsilon: f64,
    order: f64,
}

#[derive(Deserialize)]
struct Curve {
    z: f64,
    q: f64,
    rdp: Vec<Option<f64>>,
}

#[derive(Deserialize)]
struct AnalyticCase {
    sigma: f64,
    delta: f64,
    epsilon: f64,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("data/dp_accounting_reference.json")).expect("reference table parses")
}

#[test]
fn default_orders_match_dp_accounting() {
    let r = reference();
    assert_eq!(DEFAULT_RDP_ORDERS.len(), 156);
    assert_eq!(*DEFAULT_RDP_ORDERS, r.default_orders);
}

#[test]
fn epsilon_matches_dp_accounting_within_1e6() {
    for c in reference().rdp_epsilon {
        let mut acc = RdpAccountant::new();
        let event = DpEvent::Gaussian { noise_multiplier: c.z, sampling_rate: c.q };
        acc.compose(&event, c.rounds).unwrap();
        let (eps, order) = acc.epsilon_and_order(c.delta).unwrap();
        // A markdown row: z | q | T | δ | ours | dp_accounting | |diff| | order.
        println!(
            "| {} | {} | {} | {:e} | {eps:.9} | {:.9} | {:.1e} | {order} |",
            c.z,
            c.q,
            c.rounds,
            c.delta,
            c.epsilon,
            (eps - c.epsilon).abs()
        );
        assert!((eps - c.epsilon).abs() <= 1e-6, "ours {eps}, dp_accounting {}", c.epsilon);
        assert_eq!(order, c.order);
    }
}

#[test]
fn per_order_rdp_matches_dp_accounting() {
    // Integer orders: exact binomial sums, 1e-9 relative. Fractional orders: the same
    // absolute-value series, 1e-7 relative (different lgamma/erfc implementations).
    for c in reference().rdp_curves {
        for (&a, r) in DEFAULT_RDP_ORDERS.iter().zip(&c.rdp) {
            let ours = subsampled_gaussian_rdp(c.q, c.z, a);
            match r {
                None => assert!(ours.is_infinite(), "z={} q={} α={a}: {ours}", c.z, c.q),
                Some(r) => {
                    let tol = if a.fract() == 0.0 { 1e-9 } else { 1e-7 };
                    assert!((ours - r).abs() <= tol * r.abs().max(1e-12), "z={} q={} α={a}: {ours} vs {r}", c.z, c.q);
                }
            }
        }
    }
}

#[test]
fn analytic_gaussian_matches_dp_accounting() {
    for c in reference().analytic_gaussian {
        let eps = analytic_gaussian_epsilon(c.sigma, 1, c.delta).unwrap();
        assert!((eps - c.epsilon).abs() <= 1e-9, "σ={}: {eps} vs {}", c.sigma, c.epsilon);
    }
    // z = 5 over 100 full-participation rounds is one release with σ = 0.5.
    let r = reference();
    let half = r.analytic_gaussian.iter().find(|c| c.sigma == 0.5).unwrap();
    let eps = analytic_gaussian_epsilon(5.0, 100, 1e-5).unwrap();
    assert!((eps - half.epsilon).abs() <= 1e-9);
    // Tighter than RDP at q = 1.
    assert!(eps < epsilon_gaussian(5.0, 1.0, 100, 1e-5).unwrap());
}

#[test]
fn q1_single_round_is_the_closed_form() {
    for z in [0.5, 1.0, 3.7] {
        let mut acc = RdpAccountant::new();
        acc.compose(&DpEvent::Gaussian { noise_multiplier: z, sampling_rate: 1.0 }, 1).unwrap();
        for (&a, &r) in acc.orders().iter().zip(acc.rdp()) {
            assert!((r - a / (2.0 * z * z)).abs() <= 1e-15 * r);
        }
    }
}

#[test]
fn epsilon_is_monotone() {
    let base = (1.0, 0.01, 1000u64, 1e-5);
    let eps = |z: f64, q: f64, t: u64, d: f64| epsilon_gaussian(z, q, t, d).unwrap();
    let e0 = eps(base.0, base.1, base.2, base.3);
    let zs = [0.6, 0.8, 1.0, 1.5, 3.0, 10.0];
    assert!(zs.windows(2).all(|w| eps(w[0], base.1, base.2, base.3) > eps(w[1], base.1, base.2, base.3)));
    let qs = [0.001, 0.005, 0.01, 0.05, 0.2, 1.0];
    assert!(qs.windows(2).all(|w| eps(base.0, w[0], base.2, base.3) < eps(base.0, w[1], base.2, base.3)));
    let ts = [1u64, 10, 100, 1000, 10_000];
    assert!(ts.windows(2).all(|w| eps(base.0, base.1, w[0], base.3) < eps(base.0, base.1, w[1], base.3)));
    let ds = [1e-9, 1e-7, 1e-5, 1e-3];
    assert!(ds.windows(2).all(|w| eps(base.0, base.1, base.2, w[0]) > eps(base.0, base.1, base.2, w[1])));
    assert!(e0 > 0.0);
    assert_eq!(eps(0.0, 0.01, 10, 1e-5), f64::INFINITY);
    assert_eq!(eps(1.0, 0.0, 10, 1e-5), 0.0);
}

#[test]
fn noise_multiplier_round_trips_and_never_exceeds_target() {
    for (z, q, t, d) in [(1.0, 0.01, 1000u64, 1e-5), (0.8, 1.0, 10, 1e-6), (2.5, 0.05, 500, 1e-5)] {
        let target = epsilon_gaussian(z, q, t, d).unwrap();
        let found = noise_multiplier_for_epsilon(target, q, t, d).unwrap();
        assert!((found - z).abs() <= 1e-6 * z, "z {z} → ε {target} → z {found}");
        assert!(epsilon_gaussian(found, q, t, d).unwrap() <= target);
    }
    assert!(matches!(noise_multiplier_for_epsilon(1e-9, 1.0, 1000, 1e-5), Err(DpError::EpsilonUnreachable { .. })));
    assert!(noise_multiplier_for_epsilon(-1.0, 0.1, 10, 1e-5).is_err());
}

#[test]
fn conversion_edge_cases_and_bad_input() {
    let orders = [2.0, 4.0];
    assert_eq!(rdp_to_epsilon(&orders, &[0.0, 0.0], 0.0).unwrap().0, 0.0);
    assert_eq!(rdp_to_epsilon(&orders, &[0.1, 0.2], 0.0).unwrap().0, f64::INFINITY);
    // KL bound: tiny RDP gives ε = 0.
    assert_eq!(rdp_to_epsilon(&orders, &[1e-12, 2e-12], 1e-5).unwrap().0, 0.0);
    assert!(rdp_to_epsilon(&orders, &[0.1], 1e-5).is_err());
    assert!(rdp_to_epsilon(&orders, &[0.1, 0.1], 2.0).is_err());
    assert!(rdp_to_epsilon(&[0.5], &[0.1], 1e-5).is_err());
    assert!(RdpAccountant::with_orders(vec![1.0]).is_err());
    let mut acc = RdpAccountant::new();
    assert!(acc.compose(&DpEvent::Gaussian { noise_multiplier: 1.0, sampling_rate: 1.5 }, 1).is_err());
    assert!(acc.compose(&DpEvent::Gaussian { noise_multiplier: -1.0, sampling_rate: 0.5 }, 1).is_err());
    assert!(analytic_gaussian_epsilon(1.0, 0, 1e-5).is_err());
    assert!(analytic_gaussian_epsilon(1.0, 1, 0.0).is_err());
}

fn ddg(q: f64, local_variance: f64, shares: u64, l2: f64, dim: u64) -> DpEvent {
    DpEvent::DistributedDiscreteGaussian {
        sampling_rate: q,
        l2_sensitivity: l2,
        l1_sensitivity: (l2 * (dim as f64).sqrt().min(l2)).ceil(),
        local_variance,
        shares,
        dim,
    }
}

#[test]
fn discrete_mechanisms_approach_the_gaussian() {
    // Large shares: τ underflows, so with q = 1 the DDG is exactly the Gaussian with
    // z = √(n s²)/Δ₂, and Skellam differs only by its O(Δ/μ) correction.
    let (n, s2, l2, dim) = (100u64, 400.0 * 400.0, 1000.0, 1u64 << 16);
    let z = (n as f64 * s2).sqrt() / l2;
    let g = epsilon_gaussian(z, 1.0, 100, 1e-5).unwrap();
    let d = epsilon(&ddg(1.0, s2, n, l2, dim), 100, 1e-5).unwrap();
    assert!((d - g).abs() < 1e-12, "{d} vs {g}");
    let sk = DpEvent::DistributedSkellam {
        sampling_rate: 1.0,
        l2_sensitivity: l2,
        l1_sensitivity: (l2 * 256.0).ceil(),
        total_variance: n as f64 * s2,
    };
    let s = epsilon(&sk, 100, 1e-5).unwrap();
    assert!(s >= g && s - g < 1e-2 * g, "{s} vs {g}");
    // Subsampled: the generic Zhu–Wang bound is valid but looser than the exact
    // sampled-Gaussian analysis, and still far below no amplification.
    let dq = epsilon(&ddg(0.01, s2, n, l2, dim), 1000, 1e-5).unwrap();
    let gq = epsilon_gaussian(z, 0.01, 1000, 1e-5).unwrap();
    let d1 = epsilon(&ddg(1.0, s2, n, l2, dim), 1000, 1e-5).unwrap();
    assert!(gq <= dq && dq < d1, "{gq} ≤ {dq} < {d1}");
}

#[test]
fn ddg_tau_penalizes_small_shares() {
    // research/dp.md §2.2: n = 100, s = 1 gives τ = 5.5e-4; s = 2 gives τ ≈ 7e-17.
    let tau1 = privagg_dp::accountant::discrete::ddg_tau(1.0, 100);
    assert!((tau1 - 5.5e-4).abs() < 0.05e-4, "{tau1}");
    let tau2 = privagg_dp::accountant::discrete::ddg_tau(4.0, 100);
    assert!(tau2 < 1e-15 && tau2 > 0.0, "{tau2}");
    let small = epsilon(&ddg(1.0, 1.0, 100, 1.0, 1 << 16), 10, 1e-5).unwrap();
    let gauss = epsilon_gaussian(10.0, 1.0, 10, 1e-5).unwrap();
    assert!(small > gauss);
}

//! The PLD accountant against dp_accounting 0.6.0's `PLDAccountant`
//! (`tests/data/dp_accounting_pld_reference.json`, made by
//! `tests/data/make_dp_accounting_pld_reference.py`), against RDP and the analytic
//! Gaussian, and on bad input.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use privagg_dp::DpError;
use privagg_dp::accountant::pld::{self, PldAccountant};
use privagg_dp::accountant::{
    DpEvent, analytic_gaussian_epsilon, epsilon, epsilon_bounds, epsilon_gaussian, tightest_epsilon,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    pld_epsilon: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    z: f64,
    q: f64,
    rounds: u64,
    delta: f64,
    value_discretization_interval: f64,
    epsilon: f64,
}

fn reference() -> Vec<Case> {
    let r: Reference =
        serde_json::from_str(include_str!("data/dp_accounting_pld_reference.json")).expect("reference table parses");
    r.pld_epsilon
}

fn gaussian(z: f64, q: f64) -> DpEvent {
    DpEvent::Gaussian { noise_multiplier: z, sampling_rate: q }
}

/// Each case of the table, computed once (debug builds are slow): within 0.1 % of
/// dp_accounting, at most RDP, and for q = 1 between the exact analytic Gaussian and
/// 0.1 % above it.
#[test]
fn pld_matches_dp_accounting_is_below_rdp_and_exact_at_q1() {
    let mut worst: f64 = 0.0;
    for c in reference() {
        let ours = pld::epsilon_gaussian(c.z, c.q, c.rounds, c.delta, c.value_discretization_interval).unwrap();
        let rel = (ours - c.epsilon).abs() / c.epsilon;
        worst = worst.max(rel);
        // A markdown row: z | q | T | δ | h | ours | dp_accounting | rel. diff.
        println!(
            "| {} | {} | {} | {:e} | {:e} | {ours:.6} | {:.6} | {rel:.1e} |",
            c.z, c.q, c.rounds, c.delta, c.value_discretization_interval, c.epsilon
        );
        assert!(rel <= 1e-3, "z={} q={} T={}: ours {ours}, dp_accounting {}", c.z, c.q, c.rounds, c.epsilon);
        // Where dp_accounting's ε-for-δ scan does not underflow (losses below ~745), the
        // two agree far more closely. Above, dp_accounting overstates (module docs of
        // `pld`) and we are below it.
        if c.epsilon < 700.0 {
            assert!(rel <= 2e-5, "z={} q={} T={}: {rel}", c.z, c.q, c.rounds);
        } else {
            assert!(ours < c.epsilon);
        }
        let rdp = epsilon_gaussian(c.z, c.q, c.rounds, c.delta).unwrap();
        assert!(ours <= rdp * (1.0 + 1e-9), "z={} q={} T={}: PLD {ours} > RDP {rdp}", c.z, c.q, c.rounds);
        if c.q == 1.0 {
            let exact = analytic_gaussian_epsilon(c.z, c.rounds, c.delta).unwrap();
            // Pessimistic: never below the exact value, and within 0.1 %.
            assert!(
                ours >= exact * (1.0 - 1e-12) && ours <= exact * 1.001,
                "z={} T={}: {ours} vs {exact}",
                c.z,
                c.rounds
            );
        }
    }
    println!("worst relative deviation {worst:.2e}");
}

#[test]
fn finer_grid_is_tighter_and_close() {
    // dp_accounting at 1e-5 is below its 1e-4 value by under 1e-3 (research/dp.md §5.1).
    let coarse = pld::epsilon_gaussian(2.0, 0.05, 500, 1e-5, 1e-3).unwrap();
    let fine = pld::epsilon_gaussian(2.0, 0.05, 500, 1e-5, 1e-4).unwrap();
    assert!(fine <= coarse && coarse - fine < 1e-2, "{fine} vs {coarse}");
}

#[test]
fn accountant_composes_mixed_events() {
    // q = 1 events combine exactly: 400 rounds at z = 2 then 600 at z = 2 is 1000 at z = 2.
    let mut acc = PldAccountant::new(1e-4).unwrap();
    acc.compose(&gaussian(2.0, 1.0), 400).unwrap();
    acc.compose(&gaussian(2.0, 1.0), 600).unwrap();
    let one = pld::epsilon_gaussian(2.0, 1.0, 1000, 1e-5, 1e-4).unwrap();
    assert!((acc.epsilon(1e-5).unwrap() - one).abs() < 1e-12);
    // Subsampled events compose by convolution: 300 + 700 rounds = 1000 rounds.
    let mut acc = PldAccountant::new(1e-4).unwrap();
    acc.compose(&gaussian(1.0, 0.01), 300).unwrap();
    acc.compose(&gaussian(1.0, 0.01), 700).unwrap();
    let split = acc.epsilon(1e-5).unwrap();
    let whole = pld::epsilon_gaussian(1.0, 0.01, 1000, 1e-5, 1e-4).unwrap();
    assert!((split - whole).abs() <= 1e-3 * whole, "{split} vs {whole}");
    // Adding a full-participation round costs something, and no more than RDP says.
    acc.compose(&gaussian(5.0, 1.0), 1).unwrap();
    let mixed = acc.epsilon(1e-5).unwrap();
    assert!(mixed > split, "{mixed} vs {split}");
    // Degenerate events.
    let mut acc = PldAccountant::new(1e-4).unwrap();
    assert_eq!(acc.epsilon(1e-5).unwrap(), 0.0);
    acc.compose(&gaussian(1.0, 0.0), 10).unwrap();
    assert_eq!(acc.epsilon(1e-5).unwrap(), 0.0);
    acc.compose(&gaussian(0.0, 0.5), 1).unwrap();
    assert_eq!(acc.epsilon(1e-5).unwrap(), f64::INFINITY);
}

#[test]
fn epsilon_is_monotone() {
    let e = |z: f64, q: f64, t: u64, d: f64| pld::epsilon_gaussian(z, q, t, d, 1e-3).unwrap();
    assert!([0.7, 1.0, 2.0, 5.0].windows(2).all(|w| e(w[0], 0.01, 100, 1e-5) > e(w[1], 0.01, 100, 1e-5)));
    assert!([0.001, 0.01, 0.1, 1.0].windows(2).all(|w| e(1.0, w[0], 100, 1e-5) < e(1.0, w[1], 100, 1e-5)));
    assert!([1u64, 10, 100, 1000].windows(2).all(|w| e(1.0, 0.01, w[0], 1e-5) < e(1.0, 0.01, w[1], 1e-5)));
    assert!([1e-8, 1e-6, 1e-4].windows(2).all(|w| e(1.0, 0.01, 100, w[0]) > e(1.0, 0.01, 100, w[1])));
    assert_eq!(e(0.0, 0.01, 10, 1e-5), f64::INFINITY);
    assert_eq!(e(1.0, 0.0, 10, 1e-5), 0.0);
    assert_eq!(e(f64::INFINITY, 0.5, 10, 1e-5), 0.0);
}

#[test]
fn bad_input_is_rejected_with_typed_errors() {
    let bad = |r: Result<f64, DpError>, name: &str| match r {
        Err(DpError::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
        other => panic!("expected InvalidParameter({name}), got {other:?}"),
    };
    bad(pld::epsilon_gaussian(-1.0, 0.1, 10, 1e-5, 1e-4), "noise_multiplier");
    bad(pld::epsilon_gaussian(f64::NAN, 0.1, 10, 1e-5, 1e-4), "noise_multiplier");
    bad(pld::epsilon_gaussian(1.0, -0.1, 10, 1e-5, 1e-4), "sampling_rate");
    bad(pld::epsilon_gaussian(1.0, 1.5, 10, 1e-5, 1e-4), "sampling_rate");
    bad(pld::epsilon_gaussian(1.0, 0.1, 0, 1e-5, 1e-4), "rounds");
    for d in [0.0, 1.0, -1e-5, 2.0, f64::NAN] {
        bad(pld::epsilon_gaussian(1.0, 0.1, 10, d, 1e-4), "delta");
    }
    for h in [0.0, -1e-4, f64::INFINITY, f64::NAN] {
        bad(pld::epsilon_gaussian(1.0, 0.1, 10, 1e-5, h), "value_discretization_interval");
    }
    // A grid too fine for the mechanism is refused, not allocated.
    assert!(matches!(pld::epsilon_gaussian(0.01, 0.5, 10, 1e-5, 1e-4), Err(DpError::PldGridTooLarge { .. })));
    bad(tightest_epsilon(&gaussian(1.0, 0.1), 0, 1e-5), "rounds");
    bad(tightest_epsilon(&gaussian(1.0, 0.1), 10, 0.0), "delta");
    bad(tightest_epsilon(&gaussian(-1.0, 0.1), 10, 1e-5), "noise_multiplier");
}

fn ddg(q: f64) -> DpEvent {
    DpEvent::DistributedDiscreteGaussian {
        sampling_rate: q,
        l2_sensitivity: 1000.0,
        l1_sensitivity: 256_000.0,
        local_variance: 1600.0 * 1600.0,
        shares: 100,
        dim: 1 << 16,
    }
}

fn skellam(q: f64) -> DpEvent {
    DpEvent::DistributedSkellam {
        sampling_rate: q,
        l2_sensitivity: 1000.0,
        l1_sensitivity: 256_000.0,
        total_variance: 100.0 * 1600.0 * 1600.0,
    }
}

#[test]
fn discrete_mechanisms_have_no_pld() {
    for event in [ddg(1.0), ddg(0.01), skellam(1.0), skellam(0.01)] {
        assert_eq!(pld::epsilon(&event, 100, 1e-5, 1e-4).unwrap(), None);
        let mut acc = PldAccountant::new(1e-4).unwrap();
        assert!(matches!(acc.compose(&event, 1), Err(DpError::PldUnsupported { .. })));
        let b = epsilon_bounds(&event, 100, 1e-5).unwrap();
        assert_eq!((b.pld, b.analytic_gaussian), (None, None));
        assert_eq!(b.tightest(), epsilon(&event, 100, 1e-5).unwrap());
    }
    assert!(pld::epsilon(&ddg(1.5), 100, 1e-5, 1e-4).is_err());
}

#[test]
fn tightest_is_the_minimum_of_sound_bounds() {
    // q = 1: the analytic Gaussian is exact, the PLD a hair above, RDP well above.
    let b = epsilon_bounds(&gaussian(0.8, 1.0), 1000, 1e-5).unwrap();
    let exact = b.analytic_gaussian.unwrap();
    assert_eq!(b.tightest(), exact);
    assert!(exact <= b.pld.unwrap() && b.pld.unwrap() < b.rdp);
    assert!((b.zcdp_rho - 1000.0 / (2.0 * 0.64)).abs() < 1e-9);
    // q < 1: the PLD.
    let b = epsilon_bounds(&gaussian(0.8, 0.01), 1000, 1e-5).unwrap();
    assert_eq!(b.analytic_gaussian, None);
    assert_eq!(b.tightest(), b.pld.unwrap());
    assert_eq!(b.pld_discretization, Some(pld::DEFAULT_VALUE_DISCRETIZATION_INTERVAL));
    assert!(b.pld.unwrap() < b.rdp);
    // A small multiplier needs a coarser grid, which is still a valid bound.
    let b = epsilon_bounds(&gaussian(0.03, 0.5), 1, 1e-5).unwrap();
    assert!(b.pld_discretization.unwrap() > 1e-4 && b.pld.unwrap() <= b.rdp, "{b:?}");
}

#[test]
fn zcdp_rho_bounds_the_rdp_curve_at_every_order() {
    let events = [gaussian(0.8, 1.0), gaussian(0.8, 0.01), ddg(1.0), ddg(0.01), skellam(1.0), skellam(0.01)];
    let small_ddg = DpEvent::DistributedDiscreteGaussian {
        sampling_rate: 1.0,
        l2_sensitivity: 3.0,
        l1_sensitivity: 9.0,
        local_variance: 1.0,
        shares: 100,
        dim: 1 << 10,
    };
    for event in events.iter().chain([&small_ddg]) {
        let rho = event.zcdp_rho();
        assert!(rho > 0.0 && rho.is_finite());
        for alpha in [1.0001, 1.01, 1.1, 1.5, 2.0, 3.0, 8.0, 32.0, 256.0, 1e4] {
            let r = event.rdp(alpha);
            assert!(r <= rho * alpha * (1.0 + 1e-12), "{event:?} α={alpha}: {r} > {}", rho * alpha);
        }
    }
    // Exact for the Gaussian; the DDG at large shares is the Gaussian at z_eff = 1.6·10/1.
    assert!((gaussian(2.0, 1.0).zcdp_rho() - 0.125).abs() < 1e-15);
    assert!((ddg(1.0).zcdp_rho() - 0.5 / 16.0f64.powi(2)).abs() < 1e-12);
    assert_eq!(gaussian(1.0, 0.0).zcdp_rho(), 0.0);
    assert_eq!(gaussian(0.0, 1.0).zcdp_rho(), f64::INFINITY);
}

//! Parameter planner, privacy ledger and the FedAvg denominator.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use privagg_dp::DpError;
use privagg_dp::accountant::{DpEvent, RdpAccountant, epsilon_gaussian};
use privagg_dp::fedavg::{apply_fedavg_momentum_step, apply_fedavg_step, average_with_public_denominator};
use privagg_dp::ledger::{PrivacyLedger, Release};
use privagg_dp::planner::{Mechanism, NoiseTarget, PlanInput, plan};

fn input(mechanism: Mechanism, noise: NoiseTarget, bits: u32) -> PlanInput {
    PlanInput::new(mechanism, noise, 1e-5, 1000, 0.01, 100, 80, 1 << 16, 0.1, bits)
}

#[test]
fn plan_reports_inflation_effective_multiplier_and_wrap_check() {
    for mechanism in [Mechanism::DiscreteGaussian, Mechanism::Skellam] {
        for bits in [12u32, 16, 20] {
            let p = plan(&input(mechanism, NoiseTarget::Multiplier(1.0), bits)).unwrap();
            assert_eq!(p.padded_dim, 1 << 16);
            assert!(p.sensitivity_inflation >= 1.0);
            assert!(p.effective_noise_multiplier >= 1.0 && p.effective_noise_multiplier < 1.0 + 1e-4);
            // k standard deviations of the aggregate fit in the bit width.
            assert!(2.0 * p.wrap.k_stddevs * p.wrap.aggregate_std <= 2f64.powi(bits as i32) * (1.0 + 1e-9));
            assert!(p.wrap.per_coordinate_gaussian < 1e-4);
            assert_eq!(p.norm_bound_sq, (p.l2_sensitivity * p.l2_sensitivity).floor() as u128);
            assert_eq!(p.honest_shares, 80);
            assert!(
                (p.central_std - p.effective_noise_multiplier * p.l2_sensitivity * p.gamma).abs()
                    < 1e-9 * p.central_std
            );
            assert!(p.central_std >= 0.1 * 1.0, "σ ≥ z·C");
            assert!(p.epsilon < p.epsilon_without_sampling);
            // More bits: finer lattice, less inflation.
            println!(
                "{mechanism:?} b={bits}: γ={:.3e} inflation={:.4} local σ={:.1} ε={:.4} ε(q=1)={:.2}",
                p.gamma,
                p.sensitivity_inflation,
                p.local_variance.to_f64().sqrt(),
                p.epsilon,
                p.epsilon_without_sampling
            );
        }
    }
    let lo = plan(&input(Mechanism::DiscreteGaussian, NoiseTarget::Multiplier(1.0), 12)).unwrap();
    let hi = plan(&input(Mechanism::DiscreteGaussian, NoiseTarget::Multiplier(1.0), 20)).unwrap();
    assert!(hi.gamma < lo.gamma && hi.sensitivity_inflation < lo.sensitivity_inflation);
    // At 20 bits the discrete mechanism costs about what the Gaussian does under the
    // same (Zhu–Wang) subsampling bound; never less than the exact sampled Gaussian.
    assert!(hi.epsilon >= epsilon_gaussian(1.0, 0.01, 1000, 1e-5).unwrap());
}

#[test]
fn colluders_reduce_the_honest_shares() {
    let mut i = input(Mechanism::DiscreteGaussian, NoiseTarget::Multiplier(1.0), 16);
    let base = plan(&i).unwrap();
    i.colluders = 30;
    let p = plan(&i).unwrap();
    assert_eq!(p.honest_shares, 50);
    assert!(p.local_variance.to_f64() > base.local_variance.to_f64());
    assert!(p.effective_noise_multiplier >= 1.0);
}

#[test]
fn target_epsilon_gives_the_smallest_multiplier_not_above_target() {
    for mechanism in [Mechanism::DiscreteGaussian, Mechanism::Skellam] {
        let p = plan(&input(mechanism, NoiseTarget::Epsilon(3.0), 16)).unwrap();
        assert!(p.epsilon <= 3.0, "{}", p.epsilon);
        assert!(p.epsilon > 2.99, "{}", p.epsilon);
        assert_eq!(p.input.noise, NoiseTarget::Multiplier(p.noise_multiplier));
    }
}

#[test]
fn infeasible_settings_name_the_failed_condition() {
    let ok = input(Mechanism::DiscreteGaussian, NoiseTarget::Multiplier(1.0), 16);
    let mut i = ok.clone();
    i.bits = 3; // 2^6 < 100·16
    assert!(matches!(plan(&i), Err(DpError::TooFewBits { bits: 3, .. })));
    let mut i = ok.clone();
    i.colluders = 80;
    assert_eq!(plan(&i), Err(DpError::NoHonestClients { n_min: 80, colluders: 80 }));
    let mut i = ok.clone();
    i.n_min = 101;
    assert_eq!(plan(&i), Err(DpError::NMinAboveCohort { n_min: 101, clients: 100 }));
    let mut i = ok.clone();
    i.bits = 7; // enough for n k² but not for the noise of z = 1 with rounding
    i.clients = 2;
    i.n_min = 1;
    assert!(matches!(plan(&i), Err(DpError::WrapAroundRisk { bits: 7, .. })));
    let mut i = ok.clone();
    i.noise = NoiseTarget::Epsilon(1e-6);
    assert!(matches!(plan(&i), Err(DpError::EpsilonUnreachable { .. } | DpError::WrapAroundRisk { .. })));
    for bad in [
        PlanInput { delta: 0.0, ..ok.clone() },
        PlanInput { rounds: 0, ..ok.clone() },
        PlanInput { sampling_rate: 0.0, ..ok.clone() },
        PlanInput { dim: 0, ..ok.clone() },
        PlanInput { clip: f64::NAN, ..ok.clone() },
        PlanInput { beta: 1.0, ..ok.clone() },
        PlanInput { k_stddevs: 0.0, ..ok.clone() },
        PlanInput { noise: NoiseTarget::Multiplier(0.0), ..ok.clone() },
    ] {
        assert!(matches!(plan(&bad), Err(DpError::InvalidParameter { .. })), "{bad:?}");
    }
}

fn record(round: u64, event: DpEvent) -> Release {
    Release { round, attempt: 1, event, n_min: 80, survivors: 90, effective_noise_multiplier: 1.0 }
}

#[test]
fn ledger_recomputes_epsilon_and_enforces_the_budget() {
    let p = plan(&input(Mechanism::Skellam, NoiseTarget::Multiplier(1.0), 16)).unwrap();
    let event = p.dp_event();
    let mut ledger = PrivacyLedger::new();
    assert_eq!(ledger.epsilon(1e-5).unwrap(), 0.0);
    for r in 1..=50 {
        ledger.record(record(r, event)).unwrap();
    }
    let other = DpEvent::Gaussian { noise_multiplier: 2.0, sampling_rate: 0.05 };
    ledger.record(record(51, other)).unwrap();
    let mut acc = RdpAccountant::new();
    acc.compose(&event, 50).unwrap();
    acc.compose(&other, 1).unwrap();
    let eps = ledger.epsilon(1e-5).unwrap();
    assert!((eps - acc.epsilon(1e-5).unwrap()).abs() < 1e-12);
    assert!(ledger.epsilon(1e-7).unwrap() > eps);
    // Serde round trip (the server persists JSON).
    let json = serde_json::to_string(&ledger).unwrap();
    let back: PrivacyLedger = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ledger);
    assert_eq!(back.epsilon(1e-5).unwrap(), eps);
    // Budget: allowed with room, refused when the next round would exceed it.
    let next = ledger.epsilon_after(&event, 1e-5).unwrap();
    assert!(next > eps);
    ledger.check_budget(&event, next + 1e-9, 1e-5).unwrap();
    assert_eq!(
        ledger.check_budget(&event, eps, 1e-5),
        Err(DpError::BudgetExceeded { projected: next, max_epsilon: eps })
    );
    assert!(ledger.check_budget(&event, f64::NAN, 1e-5).is_err());
}

#[test]
fn ledger_charges_every_release_and_rejects_going_back_partial_rounds_and_bad_events() {
    let e = DpEvent::Gaussian { noise_multiplier: 1.0, sampling_rate: 1.0 };
    let mut ledger = PrivacyLedger::new();
    ledger.record(record(3, e)).unwrap();
    // A retried round is charged again: two releases cost more than one.
    let once = ledger.epsilon(1e-5).unwrap();
    ledger.record(Release { attempt: 2, ..record(3, e) }).unwrap();
    assert!(ledger.epsilon(1e-5).unwrap() > once);
    assert!(ledger.record(record(2, e)).is_err());
    assert!(ledger.record(Release { survivors: 10, ..record(4, e) }).is_err());
    let bad = DpEvent::Gaussian { noise_multiplier: 1.0, sampling_rate: 2.0 };
    assert!(ledger.record(record(5, bad)).is_err());
    assert_eq!(ledger.releases.len(), 2);
}

#[test]
fn fedavg_divides_by_the_public_denominator() {
    let avg = average_with_public_denominator(&[10.0, -5.0], 100.0).unwrap();
    assert_eq!(avg, vec![0.1, -0.05]);
    assert!(average_with_public_denominator(&[1.0], 0.0).is_err());
    let mut model = vec![1.0f32, 2.0];
    let norm = apply_fedavg_step(&mut model, &[10.0, -10.0], 10.0, 0.5).unwrap();
    assert_eq!(model, vec![1.5, 1.5]);
    assert!((norm - 2f64.sqrt()).abs() < 1e-12);
    assert!(apply_fedavg_step(&mut model, &[1.0], 10.0, 1.0).is_err());
    assert!(apply_fedavg_step(&mut model, &[1.0, 1.0], 10.0, f64::NAN).is_err());
}

#[test]
fn fedavg_with_momentum_accumulates_the_velocity() {
    let (mut model, mut velocity) = (vec![0.0f32, 0.0], vec![0.0f32, 0.0]);
    apply_fedavg_momentum_step(&mut model, &mut velocity, &[2.0, -2.0], 2.0, 1.0, 0.5).unwrap();
    assert_eq!((model.clone(), velocity.clone()), (vec![1.0, -1.0], vec![1.0, -1.0]));
    // v = 0.5·v + avg = 0.5 + 1; θ += 1.5.
    apply_fedavg_momentum_step(&mut model, &mut velocity, &[2.0, -2.0], 2.0, 1.0, 0.5).unwrap();
    assert_eq!((model, velocity.clone()), (vec![2.5, -2.5], vec![1.5, -1.5]));
    let mut model = vec![0.0f32, 0.0];
    assert!(apply_fedavg_momentum_step(&mut model, &mut velocity, &[1.0, 1.0], 1.0, 1.0, 1.0).is_err());
    assert!(apply_fedavg_momentum_step(&mut model, &mut velocity[..1], &[1.0, 1.0], 1.0, 1.0, 0.5).is_err());
}

//! With DP on, the released sum carries the planned noise: its empirical variance
//! matches the clients' noise shares, whoever drops out, and with n_min survivors it is
//! at least the configured σ = z·C.
#![allow(clippy::unwrap_used)] // test code

use privagg_client::DropPoint;
use privagg_dp::planner::Plan;
use privagg_e2e::{config, start, submit};
use privagg_server::aggregation::Aggregation;

const DIM: usize = 4096;

/// Runs one DP round in which every client submits a zero update and `dropped` clients
/// vanish after sharing keys; returns the plan and the new model (which is pure noise,
/// divided by the public denominator of 10).
async fn noise_only_round(name: &str, dropped: usize) -> (Plan, Vec<f32>, usize) {
    let mut cfg = config(name, DIM, 10, 8);
    cfg.dp.enabled = true;
    cfg.dp.noise_multiplier = 1.0;
    cfg.dp.clip = 1.0;
    let plan = Aggregation::new(&cfg).unwrap().plan().unwrap().clone();
    let mut running = start(cfg).await;
    let clients: Vec<_> = (0..10)
        .map(|i| {
            submit(&running, vec![0.0; DIM], 1.0, |o| {
                o.drop_point = (i < dropped).then_some(DropPoint::BeforeMaskedInput);
            })
        })
        .collect();
    let record = running.next_record().await;
    for c in clients {
        let _ = c.await.unwrap();
    }
    let summary = running.finish().await;
    (plan, summary.model, record.included.len())
}

fn mean_and_variance(xs: &[f32]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// Checks the sample variance of `model` against `inputs` noise shares. The model's
/// coordinates are (after the inverse rotation, which is orthonormal) independent-ish
/// with variance inputs·s²·γ²/10²; over 4096 of them the sample variance has a relative
/// standard error of √(2/4096) ≈ 2.2 %, so 5 standard errors is 11 %.
fn check(plan: &Plan, model: &[f32], inputs: usize) -> f64 {
    let share = plan.local_variance.to_f64() * plan.gamma * plan.gamma;
    let expected = inputs as f64 * share / 100.0;
    let (mean, var) = mean_and_variance(model);
    assert!((var / expected - 1.0).abs() < 0.11, "variance {var:e}, expected {expected:e}");
    assert!(mean.abs() < 5.0 * (expected / model.len() as f64).sqrt(), "mean {mean:e}");
    var
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sum_carries_every_participants_noise_share() {
    let (plan, model, inputs) = noise_only_round("dp-all", 0).await;
    assert_eq!(inputs, 10);
    check(&plan, &model, inputs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_n_min_survivors_the_noise_is_still_the_configured_sigma() {
    let (plan, model, inputs) = noise_only_round("dp-nmin", 2).await;
    assert_eq!(inputs, 8);
    let var = check(&plan, &model, inputs);
    // The sum's noise std, in model units, is at least z·C (here 1 · 1): the shares of
    // the n_min − colluders = 7 honest clients alone give the configured σ, inflated for
    // the rounding; the 8 in the sum give √(8/7) of it.
    assert_eq!(plan.honest_shares, 7, "one colluder assumed among 8 (5 %, rounded up)");
    let sum_std = var.sqrt() * 10.0;
    let expected = plan.central_std * (8.0f64 / 7.0).sqrt();
    assert!((sum_std / expected - 1.0).abs() < 0.06, "{sum_std} vs {expected}");
    assert!(plan.central_std >= 1.0 && plan.effective_noise_multiplier >= 1.0);
}

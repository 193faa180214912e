//! The FedAvg denominator under DP.
//!
//! DP-FedAvg (McMahan et al. 2018) releases the *sum* of clipped, noised updates; the
//! server then divides by a denominator. With DP on that denominator must be a
//! **fixed, public constant** — the configured expected cohort size `qN`, set before
//! training — never the live survivor count: the number of participants depends on who
//! is in the data (under add/remove adjacency it differs by one between neighbours), so
//! dividing by it releases it without noise. This is the "fixed denominator" estimator
//! `Σ Δ_k / (qN)` of McMahan et al., with sensitivity `C/(qN)`; it is unbiased, and its
//! variance grows when the realised cohort differs from `qN`. (TFF's
//! `ddp_secure_aggregator` divides by a securely summed count of participants, and Opacus
//! used the private dataset size; both leak the count.)
//!
//! With DP off, dividing by the number of summed clients is fine.

use crate::error::{DpError, invalid};

/// Divides the decoded sum by the public, configured `expected_clients` (> 0, finite)
/// and returns the average update.
pub fn average_with_public_denominator(sum: &[f64], expected_clients: f64) -> Result<Vec<f64>, DpError> {
    if !(expected_clients.is_finite() && expected_clients > 0.0) {
        return Err(invalid("expected_clients", format!("must be finite and > 0, got {expected_clients}")));
    }
    Ok(sum.iter().map(|s| s / expected_clients).collect())
}

/// Server step `θ ← θ + η · Σ / denominator` with the public denominator; `model` and
/// `sum` must have the same length, `server_lr` must be finite. Returns the L2 norm of
/// the average `Σ / denominator`.
pub fn apply_fedavg_step(
    model: &mut [f32],
    sum: &[f64],
    expected_clients: f64,
    server_lr: f64,
) -> Result<f64, DpError> {
    step(model, None, sum, expected_clients, server_lr)
}

/// Server step with momentum (FedAvgM): `v ← β·v + Σ / denominator`, `θ ← θ + η·v`;
/// `velocity` is the caller's, as long as the model; `β` in `[0, 1)`. Returns the L2
/// norm of the average.
pub fn apply_fedavg_momentum_step(
    model: &mut [f32],
    velocity: &mut [f32],
    sum: &[f64],
    expected_clients: f64,
    server_lr: f64,
    beta: f64,
) -> Result<f64, DpError> {
    if !(0.0..1.0).contains(&beta) {
        return Err(invalid("beta", format!("must be in [0, 1), got {beta}")));
    }
    step(model, Some((velocity, beta)), sum, expected_clients, server_lr)
}

fn step(
    model: &mut [f32],
    momentum: Option<(&mut [f32], f64)>,
    sum: &[f64],
    expected_clients: f64,
    server_lr: f64,
) -> Result<f64, DpError> {
    if model.len() != sum.len() {
        return Err(DpError::LengthMismatch { expected: model.len(), actual: sum.len() });
    }
    if !server_lr.is_finite() {
        return Err(invalid("server_lr", "must be finite"));
    }
    let avg = average_with_public_denominator(sum, expected_clients)?;
    let norm = avg.iter().map(|a| a * a).sum::<f64>().sqrt();
    match momentum {
        Some((velocity, beta)) => {
            if velocity.len() != model.len() {
                return Err(DpError::LengthMismatch { expected: model.len(), actual: velocity.len() });
            }
            for ((w, v), a) in model.iter_mut().zip(velocity.iter_mut()).zip(avg) {
                *v = (beta * f64::from(*v) + a) as f32;
                *w = (f64::from(*w) + server_lr * f64::from(*v)) as f32;
            }
        }
        None => {
            for (w, a) in model.iter_mut().zip(avg) {
                *w = (f64::from(*w) + server_lr * a) as f32;
            }
        }
    }
    Ok(norm)
}

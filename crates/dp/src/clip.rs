//! Flat L2 clipping (DP-FedAvg, McMahan et al., ICLR 2018).
//!
//! An update `x` is scaled by `min(1, C / ‖x‖₂)`, so its norm is at most `C` and its
//! direction is unchanged. The norm is computed in f64 with scaling by the largest
//! magnitude, so huge inputs do not overflow and subnormal inputs do not underflow to 0.
//! Clipping bounds the sensitivity only approximately in floating point; the bound the
//! privacy analysis relies on is re-checked exactly in the integer domain after rounding
//! (see [`crate::quantize`]).

use crate::error::{DpError, invalid};

/// Returns the index of the first NaN or infinite value, if any.
fn first_non_finite(x: &[f64]) -> Option<usize> {
    x.iter().position(|v| !v.is_finite())
}

/// L2 norm of `x`, computed as `s · ‖x / s‖₂` with `s = max |x_i|`, so it neither
/// overflows for values near `f64::MAX` nor loses subnormal inputs. Returns NaN or ∞ if
/// `x` contains them.
pub fn l2_norm(x: &[f64]) -> f64 {
    let scale = x.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    if scale == 0.0 || !scale.is_finite() {
        return if x.iter().any(|v| v.is_nan()) { f64::NAN } else { scale };
    }
    let sum: f64 = x.iter().map(|v| (v / scale) * (v / scale)).sum();
    scale * sum.sqrt()
}

/// Clips `update` in place to L2 norm at most `clip` and returns the norm before
/// clipping.
///
/// Rejects a `clip` that is not finite and positive, and any NaN or infinite
/// coordinate ([`DpError::NonFinite`]); on error `update` is unchanged. Below the bound
/// the update is left bit-for-bit unchanged.
pub fn clip_l2(update: &mut [f64], clip: f64) -> Result<f64, DpError> {
    if !(clip.is_finite() && clip > 0.0) {
        return Err(invalid("clip", format!("must be finite and > 0, got {clip}")));
    }
    if let Some(index) = first_non_finite(update) {
        return Err(DpError::NonFinite { index });
    }
    let norm = l2_norm(update);
    if norm <= clip {
        return Ok(norm);
    }
    // x_i / norm is in [-1, 1], so this neither overflows nor underflows to 0 for
    // representable inputs. Rounding can leave the result a few ulps above `clip`;
    // shrink until the computed norm is within the bound. The shrink step doubles each
    // time, so even subnormal results (where a tiny step changes nothing) terminate.
    let mut target = clip;
    let mut step = 4.0 * f64::EPSILON;
    let original: Vec<f64> = update.to_vec();
    loop {
        for (u, o) in update.iter_mut().zip(&original) {
            *u = (o / norm) * target;
        }
        if l2_norm(update) <= clip {
            return Ok(norm);
        }
        target *= 1.0 - step;
        step = (2.0 * step).min(0.5);
    }
}

/// Converts an f32 update to f64 and clips it to L2 norm `clip`; returns the clipped
/// vector and the norm before clipping. Same contract as [`clip_l2`].
pub fn clip_l2_f32(update: &[f32], clip: f64) -> Result<(Vec<f64>, f64), DpError> {
    let mut v: Vec<f64> = update.iter().map(|&x| f64::from(x)).collect();
    let norm = clip_l2(&mut v, clip)?;
    Ok((v, norm))
}

/// Checks that every coordinate is finite; used when clipping is off.
pub fn check_finite(update: &[f64]) -> Result<(), DpError> {
    match first_non_finite(update) {
        Some(index) => Err(DpError::NonFinite { index }),
        None => Ok(()),
    }
}

//! Adaptive clipping inside secure aggregation (Andrew, Thakkar, McMahan, Ramaswamy,
//! "Differentially Private Learning with Adaptive Clipping", NeurIPS 2021).
//!
//! Each round every client appends one more coordinate to its masked vector: its
//! clip indicator `b = 1[‖Δ‖ ≤ C]`, centred and scaled to `(b − ½)·κ` for an even integer
//! `κ`, plus its own noise share of the same distribution as the other coordinates. The
//! server learns only the noisy count of clients under the clip from the sum, and moves
//! `C` geometrically toward the target quantile `γ`: `C ← C·exp(−η·(b̄ − γ))`.
//!
//! **The noise split.** The indicator coordinate changes by at most `κ/2` when a client's
//! contribution is zeroed, so the round is one release of a `(d + 1)`-dimensional vector
//! with L2 sensitivity `√(Δ₂² + κ²/4)` ([`with_indicator`]): the accountant sees exactly
//! that. With the total noise standard deviation σ (integer units) the count's noise in
//! count units is `σ_b = σ/κ`; the paper's Theorem 1 gives the split: to keep the
//! requested multiplier `z` for the pair, the update is planned at
//! `z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2)` ([`update_noise_multiplier`]), and `κ` is chosen so
//! that `σ_b` is the configured fraction of the expected cohort (the paper's default
//! `n/20`, [`indicator_scale`]).
//!
//! Clipping state: `C` lives with the server, is public (it is in every round's
//! settings) and is a function of released outputs only, so updating it costs nothing
//! beyond the accounted release.

use serde::{Deserialize, Serialize};

use crate::accountant::DpEvent;
use crate::error::{DpError, invalid};
use crate::noise::IntegerNoise;
use crate::quantize::{centered_lift, modulus_mask};

/// How the clip adapts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveClipping {
    /// Target fraction γ of clients whose update is not clipped, in (0, 1). The paper's
    /// default is the median, 0.5.
    pub target_quantile: f64,
    /// Geometric learning rate η of the clip, > 0 (paper: 0.2).
    pub learning_rate: f64,
    /// Noise on the count of unclipped clients, as a fraction of the expected cohort
    /// (paper: 1/20), in (0, 1].
    pub count_noise_fraction: f64,
}

impl Default for AdaptiveClipping {
    fn default() -> Self {
        Self { target_quantile: 0.5, learning_rate: 0.2, count_noise_fraction: 0.05 }
    }
}

impl AdaptiveClipping {
    /// Rejects values outside the ranges documented on each field.
    pub fn validate(&self) -> Result<(), DpError> {
        if !(self.target_quantile > 0.0 && self.target_quantile < 1.0) {
            return Err(invalid("target_quantile", format!("must be in (0, 1), got {}", self.target_quantile)));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(invalid("learning_rate", format!("must be > 0, got {}", self.learning_rate)));
        }
        if !(self.count_noise_fraction > 0.0 && self.count_noise_fraction <= 1.0) {
            return Err(invalid(
                "count_noise_fraction",
                format!("must be in (0, 1], got {}", self.count_noise_fraction),
            ));
        }
        Ok(())
    }

    /// The count's noise standard deviation σ_b for an expected cohort of `expected`.
    pub fn count_stddev(&self, expected: f64) -> f64 {
        self.count_noise_fraction * expected
    }

    /// The next clip after a round whose decoded indicator sum (in count units, centred:
    /// `Σ(b − ½)` plus noise) is `centred_count` over `inputs` clients, with noise of
    /// standard deviation `count_stddev` on it: the fraction unclipped
    /// `b̄ = centred_count / inputs + ½` (clamped to [0, 1]) moves `clip` by
    /// `exp(−η·(b̄ − γ))`, and the result is kept within `initial_clip` ×/÷
    /// [`MAX_CLIP_RATIO`].
    ///
    /// A count no honest cohort could produce — beyond `±(inputs/2 + 8·count_stddev)` —
    /// is a client that wrote more than ±κ/2 into its indicator: the clip is held and
    /// the fraction is `None`. Within those bounds a single client can still shift the
    /// count enough to force the largest step every round (`b̄` is clamped to [0, 1]):
    /// the range [`MAX_CLIP_RATIO`] is what bounds the damage.
    pub fn next_clip(
        &self,
        clip: f64,
        centred_count: f64,
        inputs: usize,
        count_stddev: f64,
        initial_clip: f64,
    ) -> ClipMove {
        let half = inputs as f64 / 2.0;
        let plausible = centred_count.abs() <= half + 8.0 * count_stddev;
        if !plausible {
            return ClipMove { next_clip: clip, unclipped_fraction: None };
        }
        let fraction = (centred_count / inputs.max(1) as f64 + 0.5).clamp(0.0, 1.0);
        let moved = clip * (-self.learning_rate * (fraction - self.target_quantile)).exp();
        let next_clip = moved.clamp(initial_clip / MAX_CLIP_RATIO, initial_clip * MAX_CLIP_RATIO);
        ClipMove { next_clip, unclipped_fraction: Some(fraction) }
    }
}

/// How far adaptive clipping may move the clip from its initial value, either way: the
/// noise scales with the clip, so privacy holds at any clip, but a clip driven far off
/// (by a steering client, or a bad start) drowns or truncates every update.
pub const MAX_CLIP_RATIO: f64 = 100.0;

/// One round's move of the clip ([`AdaptiveClipping::next_clip`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipMove {
    /// The next round's clip.
    pub next_clip: f64,
    /// The noisy fraction of clients under the clip; `None` if the count was out of
    /// any honest range and ignored.
    pub unclipped_fraction: Option<f64>,
}

/// The noise multiplier to plan the update at so that update and indicator together
/// have multiplier `z`: `(z⁻² − (2σ_b)⁻²)^(−1/2)`. Rejects `z ≤ 0` and `2σ_b ≤ z` (the
/// count would need more noise than the whole budget allows).
pub fn update_noise_multiplier(z: f64, count_stddev: f64) -> Result<f64, DpError> {
    let share = 1.0 / (2.0 * count_stddev);
    if !(z.is_finite() && z > 0.0 && share.is_finite() && share < 1.0 / z) {
        return Err(invalid(
            "adaptive clipping",
            format!("the count's noise σ_b = {count_stddev} must exceed z/2 = {} (a larger cohort)", z / 2.0),
        ));
    }
    Ok((z.powi(-2) - share * share).powf(-0.5))
}

/// The indicator's scale κ: the even integer ≥ 2 nearest to `σ / σ_b` for a total noise
/// standard deviation `total_stddev` (integer units).
pub fn indicator_scale(total_stddev: f64, count_stddev: f64) -> u64 {
    let half = (total_stddev / count_stddev / 2.0).round();
    if half.is_finite() && half >= 1.0 { 2 * half as u64 } else { 2 }
}

/// `event` with the indicator coordinate of scale `scale` added: L2 sensitivity
/// `√(Δ₂² + κ²/4)`, L1 sensitivity `Δ₁ + κ/2`, one more dimension.
pub fn with_indicator(event: &DpEvent, scale: u64) -> DpEvent {
    let half = scale as f64 / 2.0;
    let mut event = *event;
    match &mut event {
        DpEvent::Gaussian { .. } => {}
        DpEvent::DistributedDiscreteGaussian { l2_sensitivity, l1_sensitivity, dim, .. } => {
            *l2_sensitivity = l2_sensitivity.hypot(half);
            *l1_sensitivity += half;
            *dim += 1;
        }
        DpEvent::DistributedSkellam { l2_sensitivity, l1_sensitivity, .. } => {
            *l2_sensitivity = l2_sensitivity.hypot(half);
            *l1_sensitivity += half;
        }
    }
    event
}

/// A client's indicator word: `(b − ½)·κ` plus a noise share from `noise`, mod `2^bits`,
/// with `b = 1` when the update's norm before clipping was at most `clip`. Rejects an odd
/// or zero `scale`.
pub fn indicator_word<R: rand_core::CryptoRng + ?Sized>(
    pre_clip_norm: f64,
    clip: f64,
    scale: u64,
    noise: &IntegerNoise,
    bits: u32,
    rng: &mut R,
) -> Result<u64, DpError> {
    if scale == 0 || !scale.is_multiple_of(2) || scale > i64::MAX as u64 / 4 {
        return Err(invalid("indicator scale", format!("must be even and positive, got {scale}")));
    }
    let half = (scale / 2) as i64;
    let value = if pre_clip_norm <= clip { half } else { -half };
    Ok((value.wrapping_add(noise.sample(rng)?) as u64) & modulus_mask(bits))
}

/// The server's side: the centred count `Σ(b − ½)` plus noise, in count units, from the
/// summed indicator word.
pub fn decode_indicator(word: u64, scale: u64, bits: u32) -> Result<f64, DpError> {
    if scale == 0 {
        return Err(invalid("indicator scale", "must be positive"));
    }
    Ok(centered_lift(word, bits)? as f64 / scale as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_keeps_the_combined_multiplier() {
        let (z, sigma_b) = (1.0, 5.0);
        let z_update = update_noise_multiplier(z, sigma_b).unwrap();
        // Theorem 1: (z_Δ⁻² + (2σ_b)⁻²)^(−1/2) = z.
        assert!(((z_update.powi(-2) + (2.0 * sigma_b).powi(-2)).powf(-0.5) - z).abs() < 1e-12);
        assert!(z_update > z);
        assert!(update_noise_multiplier(1.0, 0.5).is_err());
        assert!(update_noise_multiplier(0.0, 5.0).is_err());
        // The event the accountant sees has the combined sensitivity.
        let event = DpEvent::DistributedDiscreteGaussian {
            sampling_rate: 1.0,
            l2_sensitivity: 30.0,
            l1_sensitivity: 100.0,
            local_variance: 50.0,
            shares: 10,
            dim: 64,
        };
        let DpEvent::DistributedDiscreteGaussian { l2_sensitivity, l1_sensitivity, dim, .. } =
            with_indicator(&event, 80)
        else {
            panic!()
        };
        assert_eq!((l2_sensitivity, l1_sensitivity, dim), (50.0, 140.0, 65));
    }

    #[test]
    fn the_clip_moves_toward_the_target_quantile() {
        let a = AdaptiveClipping::default();
        let step = |clip: f64, count: f64| a.next_clip(clip, count, 100, 5.0, 1.0);
        // All unclipped (count = n/2 centred): the clip shrinks by exp(−0.2·0.5).
        let down = step(1.0, 50.0);
        assert_eq!(down.unclipped_fraction, Some(1.0));
        assert!((down.next_clip - (-0.1f64).exp()).abs() < 1e-12);
        // All clipped: it grows; at the target it stays.
        assert!(step(1.0, -50.0).next_clip > 1.0);
        assert_eq!(step(2.0, 0.0).next_clip, 2.0);
        // Noise beyond the range is clamped.
        assert_eq!(step(1.0, 50.0 + 39.0).unclipped_fraction, Some(1.0));
    }

    #[test]
    fn a_count_no_honest_cohort_gives_is_ignored_and_the_clip_stays_in_range() {
        let a = AdaptiveClipping::default();
        // One client writing 10⁹ into its indicator: the clip holds.
        for count in [1e9, -1e9, 50.0 + 41.0, f64::NAN] {
            let held = a.next_clip(1.5, count, 100, 5.0, 1.0);
            assert_eq!(held, ClipMove { next_clip: 1.5, unclipped_fraction: None }, "{count}");
        }
        // A clique that always reports "all clipped" grows the clip only up to 100×.
        let mut clip = 1.0;
        for _ in 0..1000 {
            clip = a.next_clip(clip, -50.0, 100, 5.0, 1.0).next_clip;
        }
        assert_eq!(clip, MAX_CLIP_RATIO);
        for _ in 0..2000 {
            clip = a.next_clip(clip, 50.0, 100, 5.0, 1.0).next_clip;
        }
        assert_eq!(clip, 1.0 / MAX_CLIP_RATIO);
    }

    #[test]
    fn invalid_rules_are_refused() {
        let a = AdaptiveClipping::default();
        for bad in [
            AdaptiveClipping { target_quantile: 1.0, ..a },
            AdaptiveClipping { learning_rate: 0.0, ..a },
            AdaptiveClipping { count_noise_fraction: f64::NAN, ..a },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}

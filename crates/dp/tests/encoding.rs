//! Encode → modular sum → decode, with and without noise.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use common::{noise_rng, test_rng};
use privagg_dp::adaptive_clip::{decode_indicator, indicator_scale, indicator_word};
use privagg_dp::encoding::{Clipping, Rounding};
use privagg_dp::noise::{IntegerNoise, NoiseSpec, Ratio};
use privagg_dp::planner::{Mechanism, NoiseTarget, PlanInput, plan};
use privagg_dp::quantize::{add_mod, modulus_mask};
use privagg_dp::{
    ClientEncoder, DpError, EncodingParams, NoiseRng, decode_sum, ensure_enough_survivors, plan_without_dp,
};
use rand::RngExt;

fn random_update(tag: u8, dim: usize, scale: f32) -> Vec<f32> {
    let mut rng = test_rng(tag);
    (0..dim).map(|_| (rng.random::<f32>() - 0.5) * scale).collect()
}

fn clipped_f64(u: &[f32], c: f64) -> Vec<f64> {
    let mut x: Vec<f64> = u.iter().map(|&v| f64::from(v)).collect();
    privagg_dp::clip::clip_l2(&mut x, c).unwrap();
    x
}

/// Encodes each update, sums mod 2^b, decodes.
fn round_trip(params: &EncodingParams, updates: &[Vec<f32>], rng: &mut NoiseRng) -> Vec<f64> {
    let enc = ClientEncoder::new(params.clone()).unwrap();
    let mut acc = vec![0u64; params.padded_dim];
    for u in updates {
        let e = enc.encode(u, rng).unwrap();
        assert_eq!(e.words.len(), params.padded_dim);
        add_mod(&mut acc, &e.words, params.bits).unwrap();
    }
    decode_sum(&acc, params).unwrap()
}

fn dp_plan(mechanism: Mechanism, bits: u32, dim: usize, clients: usize, n_min: usize) -> privagg_dp::planner::Plan {
    plan(&PlanInput::new(mechanism, NoiseTarget::Multiplier(1.0), 1e-5, 100, 1.0, clients, n_min, dim, 1.0, bits))
        .unwrap()
}

#[test]
fn zero_noise_sum_is_within_the_rounding_bound() {
    let (n, dim, c) = (8usize, 300usize, 1.0);
    let updates: Vec<Vec<f32>> = (0..n).map(|i| random_update(i as u8, dim, 0.3)).collect();
    let truth: Vec<f64> = (0..dim).map(|j| updates.iter().map(|u| clipped_f64(u, c)[j]).sum()).collect();
    // DP pipeline (rotation, conditional rounding) with the noise switched off, and the
    // DP-off mode with rotation and clipping.
    let mut with_dp = dp_plan(Mechanism::DiscreteGaussian, 20, dim, n, n).encoding_params([3; 32]);
    with_dp.noise = NoiseSpec::None;
    let gamma = plan_without_dp(n, c, 20).unwrap();
    let no_dp = EncodingParams::without_dp(dim, gamma, 20, Clipping::L2(c), Some([4; 32])).unwrap();
    for (tag, params) in [(1u8, with_dp), (2, no_dp)] {
        let mut rng = noise_rng(tag);
        let decoded = round_trip(&params, &updates, &mut rng);
        assert_eq!(decoded.len(), dim);
        let err: f64 = decoded.iter().zip(&truth).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        // Each client's rounding moves each of m coordinates by < γ: ‖error‖ < n·γ·√m.
        let bound = n as f64 * params.gamma * (params.padded_dim as f64).sqrt();
        assert!(err < bound, "error {err} ≥ bound {bound}");
        assert!(err > 0.0);
    }
}

#[test]
fn no_dp_plan_never_wraps_at_the_extremes() {
    let (n, dim, bits, max_abs) = (5usize, 16usize, 8u32, 1.0f64);
    let gamma = plan_without_dp(n, max_abs, bits).unwrap();
    let params = EncodingParams::without_dp(dim, gamma, bits, Clipping::None, None).unwrap();
    for sign in [1.0f32, -1.0] {
        let updates = vec![vec![sign * max_abs as f32; dim]; n];
        let mut rng = noise_rng(5);
        let decoded = round_trip(&params, &updates, &mut rng);
        for v in decoded {
            assert!((v - f64::from(sign) * n as f64 * max_abs).abs() <= n as f64 * gamma, "{v}");
        }
    }
    assert!(matches!(plan_without_dp(200, 1.0, 8), Err(DpError::TooFewBits { .. })));
    assert!(plan_without_dp(0, 1.0, 8).is_err());
    assert!(plan_without_dp(3, f64::NAN, 8).is_err());
    assert!(plan_without_dp(3, 1.0, 0).is_err());
}

#[test]
fn centered_lift_at_half_range_in_decode() {
    let params = EncodingParams::without_dp(4, 0.5, 8, Clipping::None, None).unwrap();
    let decoded = decode_sum(&[0x80, 0x7f, 0xff, 0], &params).unwrap();
    assert_eq!(decoded, vec![-64.0, 63.5, -0.5, 0.0]);
    let p64 = EncodingParams::without_dp(2, 1.0, 64, Clipping::None, None).unwrap();
    let d = decode_sum(&[1u64 << 63, (1u64 << 63) - 1], &p64).unwrap();
    assert_eq!(d, vec![-(2f64.powi(63)), 2f64.powi(63) - 1.0]);
}

#[test]
fn decode_and_encode_reject_bad_input() {
    let params = EncodingParams::without_dp(5, 0.1, 8, Clipping::L2(1.0), Some([1; 32])).unwrap();
    assert_eq!(params.padded_dim, 8);
    assert_eq!(decode_sum(&[0; 5], &params), Err(DpError::LengthMismatch { expected: 8, actual: 5 }));
    assert_eq!(decode_sum(&[0, 0, 256, 0, 0, 0, 0, 0], &params), Err(DpError::OutOfRange { index: 2 }));
    let enc = ClientEncoder::new(params).unwrap();
    let mut rng = noise_rng(6);
    assert_eq!(enc.encode(&[0.0; 4], &mut rng), Err(DpError::LengthMismatch { expected: 5, actual: 4 }));
    assert_eq!(enc.encode(&[0.0, f32::NAN, 0.0, 0.0, 0.0], &mut rng), Err(DpError::NonFinite { index: 1 }));
    let e = enc.encode(&[0.5, -0.5, 0.1, 0.0, 3.0], &mut rng).unwrap();
    assert!(e.words.iter().all(|&w| w < 256));
    assert!((e.pre_clip_norm - (0.25f64 + 0.25 + f64::from(0.1f32).powi(2) + 9.0).sqrt()).abs() < 1e-9);
    let debug = format!("{e:?}");
    assert!(debug.contains("8 words redacted") && !debug.contains("pre_clip_norm"), "{debug}");
    // Scaled values beyond 2^62 are rejected rather than wrapped.
    let tiny = EncodingParams::without_dp(1, 1e-300, 64, Clipping::None, None).unwrap();
    let enc = ClientEncoder::new(tiny).unwrap();
    assert_eq!(enc.encode(&[1.0], &mut rng), Err(DpError::OutOfRange { index: 0 }));
}

#[test]
fn params_validation_and_serde() {
    let p = dp_plan(Mechanism::Skellam, 16, 100, 10, 8).encoding_params([7; 32]);
    let json = serde_json::to_string(&p).unwrap();
    let back: EncodingParams = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    let mut bad = p.clone();
    bad.padded_dim = 100;
    assert!(matches!(bad.validate(), Err(DpError::InvalidParameter { name: "padded_dim", .. })));
    let mut bad = p.clone();
    bad.clipping = Clipping::None;
    assert!(matches!(bad.validate(), Err(DpError::InvalidParameter { name: "clipping", .. })));
    let mut bad = p.clone();
    bad.rounding = Rounding::Unbiased;
    assert!(matches!(bad.validate(), Err(DpError::InvalidParameter { name: "rounding", .. })));
    let mut bad = p.clone();
    bad.bits = 65;
    assert!(bad.validate().is_err());
    let mut bad = p.clone();
    bad.gamma = -1.0;
    assert!(bad.validate().is_err());
    let mut bad = p;
    bad.rotation_seed = None;
    assert!(ClientEncoder::new(bad).is_err());
    assert!(EncodingParams::without_dp(0, 1.0, 8, Clipping::None, None).is_err());
    assert!(EncodingParams::without_dp(4, 1.0, 8, Clipping::L2(0.0), None).is_err());
}

/// With all-zero updates the decoded sum is pure noise. Its per-coordinate variance must
/// be `s · Var(share) · γ²` for `s` survivors (the inverse rotation is orthogonal, so
/// i.i.d. noise stays i.i.d. with the same variance), never below the configured
/// `(z·C)²`, down to `s = n_min`. Tolerance: 4 standard errors of a sample variance,
/// `var·√(2/N)` for near-Gaussian noise (the sum of shares is close to Gaussian).
#[test]
fn decoded_noise_variance_matches_configuration_with_dropouts() {
    let (clients, n_min, dim, rounds) = (10usize, 6usize, 200usize, 100usize);
    for (tag, mechanism) in [(1u8, Mechanism::DiscreteGaussian), (2, Mechanism::Skellam)] {
        let plan = dp_plan(mechanism, 12, dim, clients, n_min);
        let params = plan.encoding_params([tag; 32]);
        let share_var = plan.local_variance.to_f64(); // σ ≥ 2 here: Var N_Z = σ² to 1e-16
        assert!(share_var > 4.0, "{share_var}");
        for survivors in [clients, n_min] {
            let mut rng = noise_rng(tag * 16 + survivors as u8);
            let zeros = vec![vec![0.0f32; dim]; survivors];
            let mut values = Vec::with_capacity(rounds * dim);
            for _ in 0..rounds {
                values.extend(round_trip(&params, &zeros, &mut rng));
            }
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
            let expected = survivors as f64 * share_var * plan.gamma * plan.gamma;
            assert!(mean.abs() <= 4.0 * (expected / n).sqrt(), "{mechanism:?} mean {mean}");
            assert!(
                (var - expected).abs() <= 4.0 * expected * (2.0 / n).sqrt(),
                "{mechanism:?} s={survivors}: variance {var} vs {expected}"
            );
            // The configured central noise, (z·C)² with z = 1 and C = 1, is always met.
            assert!(expected >= 1.0 * (survivors as f64 / n_min as f64) * 0.999);
        }
    }
}

#[test]
fn rounds_below_n_min_release_nothing() {
    ensure_enough_survivors(6, 6).unwrap();
    assert_eq!(ensure_enough_survivors(5, 6), Err(DpError::TooFewSurvivors { survivors: 5, n_min: 6 }));
}

/// Adaptive clipping: the clients' indicator words sum to the noisy count of updates
/// under the clip.
#[test]
fn indicator_words_sum_to_the_noisy_count() {
    // 200 clients, 150 under the clip, discrete Gaussian shares of σ² = 4 each.
    let noise = IntegerNoise::new(NoiseSpec::DiscreteGaussian { variance: Ratio::new(4, 1).unwrap() }).unwrap();
    let mut rng = NoiseRng::insecure_from_seed([7; 32]);
    let (scale, bits) = (indicator_scale(40.0, 10.0), 20);
    assert_eq!(scale, 4);
    let mut sum = 0u64;
    for i in 0..200 {
        let norm = if i < 150 { 0.5 } else { 2.0 };
        sum = (sum + indicator_word(norm, 1.0, scale, &noise, bits, &mut rng).unwrap()) & modulus_mask(bits);
    }
    let centred = decode_indicator(sum, scale, bits).unwrap();
    // Exact centred count 150 − 100 = 50; the noise has std √(200·4)/4 ≈ 7.1.
    assert!((centred - 50.0).abs() < 5.0 * 7.1, "{centred}");
    assert!(indicator_word(0.5, 1.0, 3, &noise, bits, &mut rng).is_err());
    assert_eq!(indicator_scale(1.0, 100.0), 2);
}

#[test]
fn encoding_does_not_depend_on_the_thread_count() {
    // Every parallel piece draws from its own generator keyed in order from the noise
    // RNG, and the norm's chunk sums are added in order, so one thread and four give
    // the same words and the same norm, bit for bit — here with the clip active.
    let plan = dp_plan(Mechanism::DiscreteGaussian, 20, 100_000, 10, 9);
    let encoder = ClientEncoder::new(plan.encoding_params([9; 32])).unwrap();
    let update = random_update(7, 100_000, 0.1);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let encoded = pool.install(|| encoder.encode(&update, &mut noise_rng(42)).unwrap());
        (encoded.words.clone(), encoded.pre_clip_norm.to_bits())
    };
    let one = run(1);
    assert!(f64::from_bits(one.1) > 1.0, "the clip must be active");
    assert_eq!(one, run(4));
}

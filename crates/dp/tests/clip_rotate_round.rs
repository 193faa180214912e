//! Clipping, rotation and rounding.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use common::test_rng;
use privagg_dp::DpError;
use privagg_dp::clip::{clip_l2, clip_l2_f32, l2_norm};
use privagg_dp::quantize::{
    DEFAULT_BETA, centered_lift, conditional_round, inflated_l2_bound, randomized_round, reduce_mod, squared_norm,
};
use privagg_dp::rotation::RandomizedHadamard;
use proptest::prelude::*;
use rand::RngExt;

fn random_vec(tag: u8, len: usize, scale: f64) -> Vec<f64> {
    let mut rng = test_rng(tag);
    (0..len).map(|_| (rng.random::<f64>() - 0.5) * scale).collect()
}

#[test]
fn clip_bounds_norm_for_random_huge_tiny_and_subnormal_inputs() {
    let cases: Vec<(Vec<f64>, f64)> = vec![
        (random_vec(1, 1000, 10.0), 1.0),
        (vec![f64::MAX / 2.0, -f64::MAX / 2.0, f64::MAX / 3.0], 1.0),
        (vec![1e300; 100], 0.5),
        (vec![1e-300, -3e-300, 2e-300], 1e-301),
        (vec![5e-324, -5e-324, 1e-320, 4e-322], 1e-323),
        (vec![3.0, 4.0], 1e-310),
    ];
    for (mut x, c) in cases {
        let orig = x.clone();
        let before = clip_l2(&mut x, c).unwrap();
        assert!(before > c, "test case should need clipping");
        let after = l2_norm(&x);
        assert!(after <= c, "norm {after} > clip {c}");
        assert!(after > 0.0);
        // Direction preserved: x = λ·orig with λ > 0, coordinate signs unchanged and
        // ratios equal (checked on the largest coordinate, which is not subnormal).
        let i = (0..orig.len()).max_by(|&a, &b| orig[a].abs().total_cmp(&orig[b].abs())).unwrap();
        let lambda = x[i] / orig[i];
        assert!(lambda > 0.0);
        for (a, o) in x.iter().zip(&orig) {
            assert!(a.signum() == o.signum() || *a == 0.0);
            if o.abs() > 1e-290 && a.abs() > 1e-290 {
                assert!((a / o / lambda - 1.0).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn clip_terminates_when_subnormal_results_round_up() {
    // Each coordinate becomes ≈ 0.58 ulp of the smallest subnormal and rounds up to 1 ulp,
    // so the first attempt exceeds the bound; the growing shrink step must still finish.
    let mut x = vec![1.0; 3];
    clip_l2(&mut x, 5e-324).unwrap();
    assert!(l2_norm(&x) <= 5e-324);
}

#[test]
fn clip_is_identity_below_the_bound() {
    let mut x = random_vec(2, 100, 0.01);
    let orig = x.clone();
    let n = clip_l2(&mut x, 10.0).unwrap();
    assert_eq!(x, orig);
    assert!((n - l2_norm(&orig)).abs() < 1e-15);
    let (y, n32) = clip_l2_f32(&[0.5f32, -0.25], 2.0).unwrap();
    assert_eq!(y, vec![0.5, -0.25]);
    assert!((n32 - 0.3125f64.sqrt()).abs() < 1e-15);
}

#[test]
fn clip_rejects_nan_inf_and_bad_clip() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut x = vec![1.0, bad, 2.0];
        assert_eq!(clip_l2(&mut x, 1.0), Err(DpError::NonFinite { index: 1 }));
        assert!(x[0] == 1.0 && x[2] == 2.0, "input untouched on error");
    }
    for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(clip_l2(&mut [1.0], c), Err(DpError::InvalidParameter { .. })));
    }
    assert!(clip_l2_f32(&[f32::NAN], 1.0).is_err());
}

proptest! {
    #[test]
    fn clip_never_exceeds_bound(xs in prop::collection::vec(-1e200f64..1e200, 1..64), c in 1e-200f64..1e200) {
        let mut x = xs;
        clip_l2(&mut x, c).unwrap();
        prop_assert!(l2_norm(&x) <= c);
    }
}

#[test]
fn rotation_round_trips_and_preserves_norms() {
    for (tag, dim) in [(1u8, 1usize), (2, 2), (3, 8), (4, 1024), (5, 3), (6, 1000), (7, 1025), (8, 4097)] {
        let rot = RandomizedHadamard::new([tag; 32], dim).unwrap();
        assert_eq!(rot.padded_dim(), dim.next_power_of_two());
        let x = random_vec(tag, dim, 2.0);
        let y = rot.forward(&x).unwrap();
        assert_eq!(y.len(), rot.padded_dim());
        assert!((l2_norm(&y) - l2_norm(&x)).abs() <= 1e-12 * l2_norm(&x).max(1.0));
        let back = rot.inverse(&y).unwrap();
        assert_eq!(back.len(), dim);
        for (a, b) in back.iter().zip(&x) {
            assert!((a - b).abs() <= 1e-12, "dim {dim}: {a} vs {b}");
        }
    }
}

#[test]
fn rotation_is_deterministic_from_the_seed_and_spreads_mass() {
    let a = RandomizedHadamard::new([9; 32], 300).unwrap();
    let b = RandomizedHadamard::new([9; 32], 300).unwrap();
    let c = RandomizedHadamard::new([10; 32], 300).unwrap();
    let mut x = vec![0.0; 300];
    x[7] = 1.0;
    let (ya, yb, yc) = (a.forward(&x).unwrap(), b.forward(&x).unwrap(), c.forward(&x).unwrap());
    assert_eq!(ya, yb);
    assert_ne!(ya, yc);
    // A basis vector becomes a flat ±1/√m vector.
    let m = a.padded_dim() as f64;
    assert!(ya.iter().all(|v| (v.abs() - 1.0 / m.sqrt()).abs() < 1e-15));
}

#[test]
fn rotation_rejects_wrong_lengths() {
    let rot = RandomizedHadamard::new([1; 32], 5).unwrap();
    assert_eq!(rot.forward(&[1.0; 4]), Err(DpError::LengthMismatch { expected: 5, actual: 4 }));
    assert_eq!(rot.inverse(&[1.0; 5]), Err(DpError::LengthMismatch { expected: 8, actual: 5 }));
    assert!(RandomizedHadamard::new([1; 32], 0).is_err());
}

#[test]
fn randomized_rounding_outputs_floor_or_ceil_and_is_unbiased() {
    let x = [0.3, -1.7, 2.0, -0.5, 1e6 + 0.25];
    let n = 100_000;
    let mut rng = test_rng(20);
    let mut sums = [0.0f64; 5];
    for _ in 0..n {
        let v = randomized_round(&x, &mut rng).unwrap();
        for (i, (&vi, &xi)) in v.iter().zip(&x).enumerate() {
            assert!(vi as f64 == xi.floor() || vi as f64 == xi.ceil(), "{vi} from {xi}");
            sums[i] += vi as f64;
        }
    }
    for (s, xi) in sums.iter().zip(&x) {
        // Bernoulli(frac) per draw: SE of the mean ≤ 0.5/√n.
        assert!((s / n as f64 - xi).abs() <= 4.0 * 0.5 / (n as f64).sqrt(), "{xi}: {}", s / n as f64);
    }
    assert!(randomized_round(&[f64::NAN], &mut rng).is_err());
    assert!(randomized_round(&[1e19], &mut rng).is_err());
}

#[test]
fn conditional_rounding_respects_its_bound() {
    let mut rng = test_rng(21);
    let dim = 256;
    let c = 10.0;
    let mut x = random_vec(22, dim, 1.0);
    clip_l2(&mut x, c).unwrap();
    let delta_2 = inflated_l2_bound(c, dim, DEFAULT_BETA).unwrap();
    assert!(delta_2 < c + (dim as f64).sqrt());
    let bound = (delta_2 * delta_2).floor() as u128;
    for _ in 0..2000 {
        let v = conditional_round(&x, bound, 1000, &mut rng).unwrap();
        assert!(squared_norm(&v) <= bound);
    }
}

#[test]
fn conditional_rounding_fails_closed_when_retries_run_out() {
    let mut rng = test_rng(23);
    // 0.5 in every coordinate: a squared norm of 0 needs all 64 to round down.
    let x = vec![0.5; 64];
    assert_eq!(conditional_round(&x, 0, 50, &mut rng), Err(DpError::RoundingRetriesExhausted { attempts: 50 }));
    assert!(conditional_round(&x, 0, 0, &mut rng).is_err());
}

#[test]
fn inflated_bound_matches_the_paper_formula() {
    // β = 0: c + √d.
    assert_eq!(inflated_l2_bound(3.0, 16, 0.0).unwrap(), 7.0);
    // β = e^{-1/2}: √(2 ln(1/β)) = 1: Δ² = c² + d/4 + (c + √d/2).
    let d2 = inflated_l2_bound(100.0, 64, DEFAULT_BETA).unwrap();
    assert!((d2 * d2 - (10000.0 + 16.0 + 104.0)).abs() < 1e-9);
    assert!(inflated_l2_bound(1.0, 4, 1.0).is_err());
    assert!(inflated_l2_bound(-1.0, 4, 0.5).is_err());
}

#[test]
fn modular_reduction_and_centered_lift() {
    for bits in [1u32, 2, 8, 16, 32, 63, 64] {
        let half = 1i128 << (bits - 1);
        let lo = -half;
        let hi = half - 1;
        for v in [lo, lo + 1, -1, 0, 1, hi - 1, hi] {
            if v < lo || v > hi {
                continue;
            }
            let w = reduce_mod(&[v as i64], bits).unwrap()[0];
            assert!(bits == 64 || w < 1u64 << bits);
            assert_eq!(i128::from(centered_lift(w, bits).unwrap()), v, "bits {bits} v {v}");
        }
        // +2^{b−1} is the same residue as −2^{b−1} and lifts to it.
        if bits < 64 {
            let w = reduce_mod(&[half as i64], bits).unwrap()[0];
            assert_eq!(i128::from(centered_lift(w, bits).unwrap()), -half);
            assert_eq!(centered_lift(1u64 << bits, bits), Err(DpError::OutOfRange { index: 0 }));
        }
    }
    assert!(reduce_mod(&[1], 0).is_err());
    assert!(reduce_mod(&[1], 65).is_err());
    assert!(centered_lift(0, 0).is_err());
}

#[test]
fn os_seeded_noise_rng_works_and_is_not_repeatable() {
    use rand_core::Rng;
    let mut a = privagg_dp::NoiseRng::from_os().unwrap();
    let mut b = privagg_dp::NoiseRng::from_os().unwrap();
    let (xa, xb): (Vec<u64>, Vec<u64>) = (0..4).map(|_| (a.next_u64(), b.next_u64())).unzip();
    assert_ne!(xa, xb);
    assert_eq!(format!("{a:?}"), "NoiseRng { .. }");
}

/// RNG hygiene (research/dp.md §7.10): the library never uses a thread-local, standard
/// or integer-seeded generator, and seeded noise exists only behind the test switch.
#[test]
fn library_sources_use_no_insecure_rng() {
    fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut files = Vec::new();
    walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() > 10);
    for (path, text) in files {
        for banned in ["thread_rng", "rand::rng()", "StdRng", "seed_from_u64", "SmallRng"] {
            assert!(!text.contains(banned), "{path} uses {banned}");
        }
        if text.contains("insecure_from_seed") {
            assert!(text.contains("#[cfg(any(test, feature = \"insecure-seeded-rng\"))]"), "{path}");
        }
    }
}

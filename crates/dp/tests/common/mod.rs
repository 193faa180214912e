//! Shared statistics helpers for the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;

use rand_core::SeedableRng;

/// A deterministic CSPRNG for tests (the samplers accept any `CryptoRng`).
pub fn test_rng(tag: u8) -> chacha20::ChaCha20Rng {
    chacha20::ChaCha20Rng::from_seed([tag; 32])
}

/// A seeded noise RNG for the encoder tests.
pub fn noise_rng(tag: u8) -> privagg_dp::NoiseRng {
    privagg_dp::NoiseRng::insecure_from_seed([tag; 32])
}

/// Upper `p`-quantile of χ²(df) by the Wilson–Hilferty approximation, with
/// `z` the matching standard normal quantile (3.719 for p = 1e-4). Accurate to a few
/// percent for df ≥ 2, which is ample for a 1e-4 rejection threshold.
pub fn chi2_critical(df: usize, z: f64) -> f64 {
    let k = df as f64;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Pearson χ² goodness of fit of integer `samples` against the pmf `pmf` given on
/// `lo..=hi` (mass outside is pooled into the end bins). Bins are formed left to right
/// until each holds an expected count ≥ 5 (tails pooled). Returns (statistic, df).
pub fn chi_square(samples: &[i64], pmf: &[f64], lo: i64) -> (f64, usize) {
    let n = samples.len() as f64;
    let hi = lo + pmf.len() as i64 - 1;
    let mut counts: HashMap<i64, u64> = HashMap::new();
    for &s in samples {
        *counts.entry(s.clamp(lo, hi)).or_default() += 1;
    }
    let total: f64 = pmf.iter().sum();
    // (expected, observed) per bin
    let mut bins: Vec<(f64, f64)> = Vec::new();
    let mut cur = (0.0, 0.0);
    for (i, p) in pmf.iter().enumerate() {
        let k = lo + i as i64;
        let mut e = p / total * n;
        if k == lo || k == hi {
            // Pool the (negligible) mass beyond the table into the end bins.
            e += (1.0 - total).max(0.0) * n / 2.0;
        }
        cur.0 += e;
        cur.1 += *counts.get(&k).unwrap_or(&0) as f64;
        if cur.0 >= 5.0 {
            bins.push(cur);
            cur = (0.0, 0.0);
        }
    }
    if let Some(last) = bins.last_mut() {
        last.0 += cur.0;
        last.1 += cur.1;
    }
    let stat = bins.iter().map(|(e, o)| (o - e).powi(2) / e).sum();
    (stat, bins.len() - 1)
}

/// Mean, variance and fourth central moment of a pmf on `lo..`.
pub fn pmf_moments(pmf: &[f64], lo: i64) -> (f64, f64, f64) {
    let total: f64 = pmf.iter().sum();
    let mean: f64 = pmf.iter().enumerate().map(|(i, p)| (lo + i as i64) as f64 * p).sum::<f64>() / total;
    let m =
        |r: i32| pmf.iter().enumerate().map(|(i, p)| ((lo + i as i64) as f64 - mean).powi(r) * p).sum::<f64>() / total;
    (mean, m(2), m(4))
}

/// Sample mean and (unbiased) variance.
pub fn sample_moments(samples: &[i64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = samples.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// Asserts the sample mean and variance are within 4 standard errors of the exact ones.
/// SE(mean) = √(σ²/N); SE(variance) ≈ √((μ₄ − σ⁴)/N). Under a correct sampler each check
/// fails with probability ≈ 6e-5.
pub fn assert_moments(samples: &[i64], mean: f64, var: f64, mu4: f64, what: &str) {
    let n = samples.len() as f64;
    let (m, v) = sample_moments(samples);
    let se_m = (var / n).sqrt();
    let se_v = ((mu4 - var * var) / n).sqrt();
    assert!((m - mean).abs() <= 4.0 * se_m, "{what}: mean {m} vs {mean} (se {se_m})");
    assert!((v - var).abs() <= 4.0 * se_v, "{what}: variance {v} vs {var} (se {se_v})");
}

/// Asserts the numbers of positive and negative samples differ by at most 4 binomial
/// standard errors (symmetry about 0).
pub fn assert_symmetric(samples: &[i64], what: &str) {
    let pos = samples.iter().filter(|&&x| x > 0).count() as f64;
    let neg = samples.iter().filter(|&&x| x < 0).count() as f64;
    assert!((pos - neg).abs() <= 4.0 * (pos + neg).sqrt(), "{what}: {pos} positive vs {neg} negative");
}

/// Discrete Gaussian pmf (unnormalized weights are normalized) on `-k..=k`.
pub fn discrete_gaussian_pmf(sigma2: f64, k: i64) -> Vec<f64> {
    let w: Vec<f64> = (-k..=k).map(|x| (-(x * x) as f64 / (2.0 * sigma2)).exp()).collect();
    let s: f64 = w.iter().sum();
    w.into_iter().map(|x| x / s).collect()
}

/// Symmetric Skellam pmf with variance `v` on `-k..=k`: `e^{−v} I_x(v)`, computed by
/// Miller's backward recurrence `I_{x−1}(z) = (2x/z) I_x(z) + I_{x+1}(z)` normalized with
/// `I_0 + 2 Σ_{x≥1} I_x = e^z` (so no Bessel function library is needed).
pub fn skellam_pmf(v: f64, k: i64) -> Vec<f64> {
    let z = v; // two Poisson(v/2): argument 2·(v/2) = v
    let start = (k as f64 + 20.0 * z.sqrt() + 60.0) as usize;
    let mut vals = vec![0.0f64; start + 2];
    vals[start] = 1e-300;
    for x in (1..=start).rev() {
        vals[x - 1] = (2.0 * x as f64 / z) * vals[x] + vals[x + 1];
        if vals[x - 1] > 1e250 {
            for v in vals.iter_mut() {
                *v *= 1e-250;
            }
        }
    }
    let norm = vals[0] + 2.0 * vals[1..].iter().sum::<f64>();
    (-k..=k).map(|x| vals[x.unsigned_abs() as usize] / norm).collect()
}

/// Poisson pmf on `0..=k`.
pub fn poisson_pmf(lambda: f64, k: i64) -> Vec<f64> {
    (0..=k).map(|x| (-lambda + x as f64 * lambda.ln() - libm::lgamma(x as f64 + 1.0)).exp()).collect()
}

/// z for p = 1e-4 (upper tail).
pub const Z_1E4: f64 = 3.719;

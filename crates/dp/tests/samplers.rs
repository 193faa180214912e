//! Statistical tests of the exact samplers against their exact pmfs.
//!
//! Fixed seeds make every test deterministic. Tolerances: χ² at p = 1e-4 with tails
//! pooled to expected counts ≥ 5; means and variances within 4 standard errors (a
//! correct sampler fails each with probability ≈ 6e-5). 10^5 draws per σ.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use privagg_dp::noise::{
    BinnedGaussian, BinnedTuning, DiscreteGaussian, IntegerNoise, NoiseSpec, Poisson, Ratio, Skellam, bernoulli_exp,
    bernoulli_exp_minus_one, bernoulli_ratio, sample_discrete_laplace, uniform_below, uniform_below_u128,
};

const SIGMAS: [f64; 6] = [0.5, 1.0, 2.0, 5.0, 10.0, 1000.0];
const DRAWS: usize = 100_000;

fn check_against_pmf(samples: &[i64], pmf: &[f64], lo: i64, what: &str) {
    let (stat, df) = chi_square(samples, pmf, lo);
    let crit = chi2_critical(df, Z_1E4);
    assert!(stat <= crit, "{what}: chi2 {stat:.1} > {crit:.1} (df {df})");
    let (mean, var, mu4) = pmf_moments(pmf, lo);
    assert_moments(samples, mean, var, mu4, what);
}

#[test]
fn discrete_gaussian_matches_pmf() {
    for (i, &sigma) in SIGMAS.iter().enumerate() {
        let s2 = sigma * sigma;
        let dg = DiscreteGaussian::new(Ratio::from_f64_ceil(s2).unwrap()).unwrap();
        let mut rng = test_rng(10 + i as u8);
        let samples: Vec<i64> = (0..DRAWS).map(|_| dg.sample(&mut rng).unwrap()).collect();
        let k = (12.0 * sigma).ceil() as i64 + 5;
        let what = format!("discrete Gaussian sigma={sigma}");
        check_against_pmf(&samples, &discrete_gaussian_pmf(s2, k), -k, &what);
        assert_symmetric(&samples, &what);
    }
}

#[test]
fn discrete_gaussian_reference_algorithm_matches_pmf() {
    // The Canonne–Kamath–Steinke path, which `sample` no longer takes for these σ.
    for (i, &sigma) in SIGMAS.iter().enumerate() {
        let s2 = sigma * sigma;
        let dg = DiscreteGaussian::new(Ratio::from_f64_ceil(s2).unwrap()).unwrap();
        assert!(dg.has_table(), "sigma {sigma} uses the table");
        let mut rng = test_rng(110 + i as u8);
        let samples: Vec<i64> = (0..DRAWS).map(|_| dg.sample_reference(&mut rng).unwrap()).collect();
        let k = (12.0 * sigma).ceil() as i64 + 5;
        let what = format!("discrete Gaussian (reference) sigma={sigma}");
        check_against_pmf(&samples, &discrete_gaussian_pmf(s2, k), -k, &what);
    }
}

#[test]
fn binned_table_slow_paths_match_pmf() {
    // A tail from 1σ (a third of the mass), two bins per σ and 3-bit fast verdicts: the
    // geometric tail, the big-integer threshold comparison and the in-bin exponent
    // Bernoulli all run on a large share of the draws, and must still give the exact pmf.
    let tuning = BinnedTuning { tail_sigmas: 1, fast_bits: 3, bins_per_sigma: 2 };
    for (i, &sigma) in [0.5f64, 3.0, 40.0, 700.0].iter().enumerate() {
        let s2 = sigma * sigma;
        let r = Ratio::from_f64_ceil(s2).unwrap();
        let table = BinnedGaussian::with_tuning(r.num, r.den, tuning).unwrap();
        let mut rng = test_rng(120 + i as u8);
        let mut samples = vec![0i64; DRAWS];
        table.fill(&mut rng, &mut samples).unwrap();
        let k = (12.0 * sigma).ceil() as i64 + 5;
        let what = format!("binned table, slow paths, sigma={sigma}");
        check_against_pmf(&samples, &discrete_gaussian_pmf(s2, k), -k, &what);
        assert_symmetric(&samples, &what);
    }
}

#[test]
fn binned_table_matches_pmf_at_the_benchmark_sigma() {
    // σ² = 170 336 716 (σ ≈ 13 051): each client's share in the m = 10⁶ benchmark plan.
    let s2: f64 = 170_336_716.0;
    let dg = DiscreteGaussian::new(Ratio::new(170_336_716, 1).unwrap()).unwrap();
    assert!(dg.has_table());
    let mut rng = test_rng(130);
    let mut samples = vec![0i64; DRAWS];
    dg.fill(&mut rng, &mut samples).unwrap();
    let k = (12.0 * s2.sqrt()).ceil() as i64;
    let what = "binned table, benchmark sigma";
    check_against_pmf(&samples, &discrete_gaussian_pmf(s2, k), -k, what);
    assert_symmetric(&samples, what);
}

#[test]
fn binned_table_rejects_bad_parameters() {
    assert!(BinnedGaussian::new(0, 1).is_err());
    assert!(BinnedGaussian::new(1, 0).is_err());
    assert!(BinnedGaussian::with_tuning(4, 1, BinnedTuning { fast_bits: 0, ..BinnedTuning::default() }).is_err());
    assert!(BinnedGaussian::with_tuning(4, 1, BinnedTuning { tail_sigmas: 0, ..BinnedTuning::default() }).is_err());
    // The planner's whole range (σ² up to 2^59) has a table.
    assert!(DiscreteGaussian::new(Ratio::from_f64_ceil((1u64 << 59) as f64).unwrap()).unwrap().has_table());
    assert!(DiscreteGaussian::new(Ratio::from_f64_ceil(1e-9).unwrap()).unwrap().has_table());
}

#[test]
fn discrete_gaussian_variance_matches_reference_table() {
    // research/dp.md §5.4: Var N_Z(0, σ²) is below σ² for small σ.
    for (sigma, var) in [(0.5, 0.2150126751), (1.0, 0.9999997888), (2.0, 4.0)] {
        let (_, v, _) = pmf_moments(&discrete_gaussian_pmf(sigma * sigma, 60), -60);
        assert!((v - var).abs() < 1e-9, "sigma {sigma}: {v}");
    }
}

#[test]
fn skellam_matches_pmf() {
    for (i, &sigma) in SIGMAS.iter().enumerate() {
        let v = sigma * sigma;
        let sk = Skellam::new(Ratio::from_f64_ceil(v).unwrap()).unwrap();
        let mut rng = test_rng(20 + i as u8);
        let samples: Vec<i64> = (0..DRAWS).map(|_| sk.sample(&mut rng).unwrap()).collect();
        let k = (15.0 * sigma).ceil() as i64 + 10;
        let what = format!("Skellam sigma={sigma}");
        let pmf = skellam_pmf(v, k);
        check_against_pmf(&samples, &pmf, -k, &what);
        // The exact variance is the parameter itself.
        let (_, var, _) = pmf_moments(&pmf, -k);
        assert!((var - v).abs() < 1e-6 * v.max(1.0), "{what}: pmf variance {var}");
        assert_symmetric(&samples, &what);
    }
}

#[test]
fn skellam_reference_p0() {
    // research/dp.md §5.4: P_Sk(0) for variance σ².
    for (sigma, p0) in [(0.5, 0.7910171621), (1.0, 0.4657596076), (2.0, 0.2070019212), (10.0, 0.0399443793)] {
        let pmf = skellam_pmf(sigma * sigma, 5);
        assert!((pmf[5] - p0).abs() < 1e-9, "sigma {sigma}: {}", pmf[5]);
    }
}

#[test]
fn poisson_matches_pmf() {
    for (i, (a, b)) in [(3u64, 10u64), (9, 2), (50, 1), (20001, 10)].into_iter().enumerate() {
        let lambda = a as f64 / b as f64;
        let p = Poisson::new(a, b).unwrap();
        let mut rng = test_rng(30 + i as u8);
        let samples: Vec<i64> = (0..DRAWS).map(|_| p.sample(&mut rng) as i64).collect();
        let k = (lambda + 15.0 * lambda.sqrt() + 15.0) as i64;
        check_against_pmf(&samples, &poisson_pmf(lambda, k), 0, &format!("Poisson({lambda})"));
    }
}

#[test]
fn discrete_laplace_matches_pmf() {
    for (i, t) in [1u64, 3, 20].into_iter().enumerate() {
        let mut rng = test_rng(40 + i as u8);
        let samples: Vec<i64> = (0..DRAWS).map(|_| sample_discrete_laplace(&mut rng, t).unwrap()).collect();
        let k = 40 * t as i64;
        let w: Vec<f64> = (-k..=k).map(|x| (-(x.abs() as f64) / t as f64).exp()).collect();
        let s: f64 = w.iter().sum();
        let pmf: Vec<f64> = w.into_iter().map(|x| x / s).collect();
        check_against_pmf(&samples, &pmf, -k, &format!("discrete Laplace t={t}"));
    }
    assert!(sample_discrete_laplace(&mut test_rng(0), 0).is_err());
}

#[test]
fn sum_of_shares_has_n_times_the_variance() {
    // Skellam shares sum to an exact Skellam; discrete Gaussian shares with σ ≥ 1 have
    // variance σ² (to 2e-7), so n shares have variance n·σ² either way.
    let n = 10usize;
    let sums = 20_000usize;
    for (tag, noise) in [
        (50u8, NoiseSpec::DiscreteGaussian { variance: Ratio::new(4, 1).unwrap() }),
        (51u8, NoiseSpec::Skellam { variance: Ratio::new(4, 1).unwrap() }),
        (52u8, NoiseSpec::Skellam { variance: Ratio::new(1, 4).unwrap() }),
    ] {
        let sampler = IntegerNoise::new(noise).unwrap();
        let mut rng = test_rng(tag);
        let samples: Vec<i64> = (0..sums).map(|_| sampler.sample_vec(&mut rng, n).unwrap().iter().sum()).collect();
        let share_var = match noise {
            NoiseSpec::DiscreteGaussian { .. } => pmf_moments(&discrete_gaussian_pmf(4.0, 60), -60).1,
            NoiseSpec::Skellam { variance } => variance.to_f64(),
            NoiseSpec::None => 0.0,
        };
        let var = n as f64 * share_var;
        // The sum is close to Gaussian: μ₄ ≈ 3σ⁴ (+ a small excess kurtosis term).
        assert_moments(&samples, 0.0, var, 3.2 * var * var, &format!("{noise:?}"));
    }
}

#[test]
fn bernoulli_exp_is_unbiased() {
    let n = 200_000;
    for (i, (num, den)) in [(0u128, 1u128), (3, 10), (1, 1), (10, 10), (27, 10)].into_iter().enumerate() {
        let mut rng = test_rng(60 + i as u8);
        let hits = (0..n).filter(|_| bernoulli_exp(&mut rng, num, den)).count() as f64;
        let p = (-(num as f64) / den as f64).exp();
        let se = (p * (1.0 - p) / n as f64).sqrt();
        assert!((hits / n as f64 - p).abs() <= 4.0 * se + 1e-12, "exp(-{num}/{den}): {}", hits / n as f64);
    }
    let mut rng = test_rng(64);
    let hits = (0..n).filter(|_| bernoulli_exp_minus_one(&mut rng)).count() as f64 / n as f64;
    let p = (-1.0f64).exp();
    assert!((hits - p).abs() <= 4.0 * (p * (1.0 - p) / n as f64).sqrt());
}

#[test]
fn bernoulli_ratio_is_unbiased() {
    let n = 200_000;
    let mut rng = test_rng(65);
    let hits = (0..n).filter(|_| bernoulli_ratio(&mut rng, 2, 7)).count() as f64 / n as f64;
    let p = 2.0 / 7.0;
    assert!((hits - p).abs() <= 4.0 * (p * (1.0 - p) / n as f64).sqrt());
}

#[test]
fn certain_outcomes_are_exact() {
    let mut rng = test_rng(66);
    for _ in 0..1000 {
        assert!(!bernoulli_ratio(&mut rng, 0, 7));
        assert!(bernoulli_ratio(&mut rng, 7, 7));
        assert!(bernoulli_ratio(&mut rng, 9, 7));
        assert_eq!(uniform_below(&mut rng, 1), 0);
        assert_eq!(uniform_below_u128(&mut rng, 1), 0);
        assert!(bernoulli_exp(&mut rng, 0, 5));
    }
}

#[test]
fn uniform_integers_have_no_bias() {
    let n = 140_000usize;
    // Small range: χ² over the 7 values.
    let mut rng = test_rng(70);
    let samples: Vec<i64> = (0..n).map(|_| uniform_below(&mut rng, 7) as i64).collect();
    let (stat, df) = chi_square(&samples, &[1.0 / 7.0; 7], 0);
    assert!(stat <= chi2_critical(df, Z_1E4), "uniform 7: {stat}");
    // Ranges where a modulo reduction would be visibly biased: n = 3·2^62 (u64) and
    // 3·2^100 (u128). With `x mod n` the lowest third would get twice the mass.
    let big = 3u64 << 62;
    let samples: Vec<i64> = (0..n).map(|_| (uniform_below(&mut rng, big) / (1u64 << 62)) as i64).collect();
    let (stat, df) = chi_square(&samples, &[1.0 / 3.0; 3], 0);
    assert!(stat <= chi2_critical(df, Z_1E4), "uniform 3*2^62: {stat}");
    let big = 3u128 << 100;
    let samples: Vec<i64> = (0..n).map(|_| (uniform_below_u128(&mut rng, big) >> 100) as i64).collect();
    let (stat, df) = chi_square(&samples, &[1.0 / 3.0; 3], 0);
    assert!(stat <= chi2_critical(df, Z_1E4), "uniform 3*2^100: {stat}");
    assert!(samples.iter().all(|&s| s < 3));
}

#[test]
fn samplers_reject_bad_parameters() {
    assert!(Ratio::new(0, 1).is_err());
    assert!(Ratio::new(1, 0).is_err());
    assert!(Ratio::from_f64_ceil(f64::NAN).is_err());
    assert!(Ratio::from_f64_ceil(-1.0).is_err());
    assert!(Ratio::from_f64_ceil(1e30).is_err());
    assert!(Poisson::new(0, 1).is_err());
    assert!(DiscreteGaussian::new(Ratio { num: 0, den: 1 }).is_err());
    assert!(DiscreteGaussian::new(Ratio { num: u64::MAX, den: u64::MAX / 2 }).is_err());
    assert!(Skellam::new(Ratio { num: 1, den: u64::MAX }).is_err());
}

#[test]
fn ratio_rounds_up_and_extremes_are_accepted() {
    for x in [1e-9, 0.25, 1.0 / 3.0, 2.0, 12345.678, 1e12, (1u64 << 59) as f64] {
        let r = Ratio::from_f64_ceil(x).unwrap();
        assert!(r.to_f64() >= x && r.to_f64() <= x * (1.0 + 1e-4) + 1.0 / 65536.0, "{x}: {r:?}");
        DiscreteGaussian::new(r).unwrap();
        Skellam::new(r).unwrap();
    }
}

#[test]
fn large_variances_sample() {
    let mut rng = test_rng(80);
    let r = Ratio::from_f64_ceil(1e16).unwrap();
    let dg = DiscreteGaussian::new(r).unwrap();
    let xs: Vec<i64> = (0..2000).map(|_| dg.sample(&mut rng).unwrap()).collect();
    // Mean within 4 SE (σ = 1e8).
    let (m, v) = sample_moments(&xs);
    assert!(m.abs() < 4.0 * 1e8 / (2000f64).sqrt(), "{m}");
    assert!((v / 1e16 - 1.0).abs() < 0.2, "{v}");
}

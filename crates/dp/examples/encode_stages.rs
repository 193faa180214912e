//! Where the client's DP encoding spends its time: each stage of
//! [`privagg_dp::ClientEncoder::encode`] timed on its own (median of 9 runs), for the
//! benchmark plan of `privagg-benches` (discrete Gaussian, z = 1, C = 1, 100 clients,
//! n_min = 90, 20 bits), then the whole `encode`.
//!
//! `cargo run --release -p privagg-dp --example encode_stages [-- <dim> [encode]]`
//! (with `encode`, only the whole encode: for `perf stat`).

use std::time::Instant;

use privagg_dp::clip::clip_l2;
use privagg_dp::encoding::Rounding;
use privagg_dp::noise::IntegerNoise;
use privagg_dp::planner::{Mechanism, NoiseTarget, PlanInput, plan};
use privagg_dp::quantize::{conditional_round, reduce_mod, scale};
use privagg_dp::rotation::RandomizedHadamard;
use privagg_dp::{ClientEncoder, DpError, NoiseRng};

/// Median wall-clock milliseconds of 9 runs after one warm-up.
fn median_ms(mut f: impl FnMut() -> Result<(), DpError>) -> Result<f64, DpError> {
    f()?;
    let mut times = Vec::new();
    for _ in 0..9 {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> Result<(), DpError> {
    let dim: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let input = PlanInput::new(
        Mechanism::DiscreteGaussian,
        NoiseTarget::Multiplier(1.0),
        1e-5,
        100,
        1.0,
        100,
        90,
        dim,
        1.0,
        20,
    );
    let params = plan(&input)?.encoding_params([3; 32]);
    let Rounding::Conditional { norm_bound_sq, max_attempts, .. } = params.rounding else {
        return Err(DpError::InvalidParameter { name: "rounding", reason: "expected conditional".into() });
    };
    let noise = IntegerNoise::new(params.noise)?;
    println!("dim {dim}, padded {}, gamma {:.3e}, noise {:?}", params.padded_dim, params.gamma, params.noise);
    let rotation = RandomizedHadamard::new([3; 32], dim)?;
    let update: Vec<f32> = (0..dim).map(|i| if i % 3 == 0 { 2e-3 } else { -1.4e-3 }).collect();
    let mut rng = NoiseRng::insecure_from_seed([1; 32]);
    if std::env::args().nth(2).as_deref() == Some("encode") {
        let encoder = ClientEncoder::new(params)?;
        let t_encode = median_ms(|| encoder.encode(&update, &mut rng).map(|_| ()))?;
        println!("whole encode     {t_encode:8.2} ms (median of 9, after a warm-up)");
        return Ok(());
    }

    let mut x = vec![0.0f64; params.padded_dim];
    let t_clip = median_ms(|| {
        x.iter_mut().zip(&update).for_each(|(d, &s)| *d = f64::from(s));
        clip_l2(&mut x[..dim], 1.0).map(|_| ())
    })?;
    let t_rotate = median_ms(|| rotation.forward_in_place(&mut x))?;
    let mut scaled = Vec::new();
    let t_scale = median_ms(|| {
        scaled = scale(&x, params.gamma)?;
        Ok(())
    })?;
    let mut rounded = Vec::new();
    let t_round = median_ms(|| {
        rounded = conditional_round(&scaled, norm_bound_sq, max_attempts, &mut rng)?;
        Ok(())
    })?;
    let t_noise = median_ms(|| noise.sample_vec(&mut rng, params.padded_dim).map(|_| ()))?;
    let t_reduce = median_ms(|| reduce_mod(&rounded, params.bits).map(|_| ()))?;
    let encoder = ClientEncoder::new(params)?;
    let t_encode = median_ms(|| encoder.encode(&update, &mut rng).map(|_| ()))?;
    println!("convert + clip   {t_clip:8.2} ms");
    println!("rotate           {t_rotate:8.2} ms");
    println!("scale            {t_scale:8.2} ms");
    println!("conditional round{t_round:8.2} ms");
    println!("noise (parallel) {t_noise:8.2} ms");
    println!("reduce           {t_reduce:8.2} ms");
    println!("whole encode     {t_encode:8.2} ms");
    Ok(())
}

//! Throughput of the exact noise samplers on the OS-seeded ChaCha20 noise RNG.
//!
//! `cargo run --release -p privagg-dp --example sampler_speed`

use std::hint::black_box;
use std::time::Instant;

use privagg_dp::noise::{DiscreteGaussian, Ratio, Skellam};
use privagg_dp::{DpError, NoiseRng};

fn rate(mut f: impl FnMut() -> Result<i64, DpError>, n: u64) -> Result<f64, DpError> {
    let start = Instant::now();
    for _ in 0..n {
        black_box(f()?);
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<(), DpError> {
    let mut rng = NoiseRng::from_os()?;
    println!("{:>10} {:>22} {:>22}", "sigma", "discrete Gaussian /s", "Skellam /s");
    for sigma in [0.5f64, 1.0, 2.0, 5.0, 10.0, 100.0, 1000.0, 10_000.0] {
        let variance = Ratio::from_f64_ceil(sigma * sigma)?;
        let dg = DiscreteGaussian::new(variance)?;
        let sk = Skellam::new(variance)?;
        // Skellam costs O(σ) uniform draws per sample: fewer iterations for large σ.
        let n_sk = (2_000_000.0 / sigma.max(1.0)).max(20_000.0) as u64;
        let dg_rate = rate(|| dg.sample(&mut rng), 2_000_000)?;
        let sk_rate = rate(|| sk.sample(&mut rng), n_sk)?;
        println!("{sigma:>10} {dg_rate:>22.3e} {sk_rate:>22.3e}");
    }
    Ok(())
}

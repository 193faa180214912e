//! Throughput of the exact noise samplers on the OS-seeded ChaCha20 noise RNG: the
//! discrete Gaussian from its table, one at a time ([`DiscreteGaussian::sample`]) and in
//! blocks of 2^14 as the encoder draws it ([`DiscreteGaussian::fill`]), by the reference
//! rejection from the discrete Laplace ([`DiscreteGaussian::sample_reference`]), and the
//! Skellam; one core, samples per second.
//!
//! `cargo run --release -p privagg-dp --example sampler_speed`

use std::hint::black_box;
use std::time::Instant;

use privagg_dp::noise::{DiscreteGaussian, Ratio, Skellam};
use privagg_dp::{DpError, NoiseRng};
use rand_core::Rng;

fn rate(mut f: impl FnMut() -> Result<i64, DpError>, n: u64) -> Result<f64, DpError> {
    let start = Instant::now();
    for _ in 0..n {
        black_box(f()?);
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<(), DpError> {
    let mut rng = NoiseRng::from_os()?;
    let words = rate(|| Ok(rng.next_u64() as i64), 20_000_000)?;
    println!("ChaCha20 NoiseRng: {words:.3e} u64/s");
    println!(
        "{:>10} {:>18} {:>18} {:>18} {:>18}",
        "sigma", "DG table fill /s", "DG table /s", "DG reference /s", "Skellam /s"
    );
    for sigma in [0.5f64, 1.0, 2.0, 5.0, 10.0, 100.0, 1000.0, 13_051.0, 1e6] {
        let variance = Ratio::from_f64_ceil(sigma * sigma)?;
        let dg = DiscreteGaussian::new(variance)?;
        let sk = Skellam::new(variance)?;
        // Skellam costs O(σ) uniform draws per sample: fewer iterations for large σ.
        let n_sk = (2_000_000.0 / sigma.max(1.0)).max(20_000.0) as u64;
        let mut block = vec![0i64; 1 << 14];
        let blocks = 256;
        let start = Instant::now();
        for _ in 0..blocks {
            dg.fill(&mut rng, &mut block)?;
            black_box(&block);
        }
        let fill_rate = (blocks * block.len()) as f64 / start.elapsed().as_secs_f64();
        let table_rate = rate(|| dg.sample(&mut rng), 2_000_000)?;
        let reference_rate = rate(|| dg.sample_reference(&mut rng), 1_000_000)?;
        let sk_rate = rate(|| sk.sample(&mut rng), n_sk)?;
        println!("{sigma:>10} {fill_rate:>18.3e} {table_rate:>18.3e} {reference_rate:>18.3e} {sk_rate:>18.3e}");
    }
    Ok(())
}

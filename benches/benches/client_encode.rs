//! A client's DP encoding of an f32 update of m coordinates: clip to L2 norm C, pad and
//! rotate (randomized Hadamard), scale, conditional randomized rounding, exact discrete
//! Gaussian noise, reduce mod 2^20 — as `privagg-dp` plans it for a cohort of 100.
//! `no_noise` runs the same pipeline without the noise and with plain unbiased rounding,
//! to separate the sampler's share.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use privagg_benches::workload::{dp_encoder, encode, noiseless_encoder, update};

fn client_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_encode");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(4));
    for m in [100_000, 1_000_000] {
        let input = update(m);
        group.throughput(Throughput::Elements(m as u64));
        for (name, encoder) in [("dp", dp_encoder(m, 100)), ("no_noise", noiseless_encoder(m, 100))] {
            let encoder = encoder.expect("a feasible plan");
            group.bench_function(BenchmarkId::new(name, format!("m={m}")), |b| {
                b.iter(|| encode(&encoder, black_box(&input), 7).expect("encodes"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, client_encode);
criterion_main!(benches);

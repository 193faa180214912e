//! The server's unmasking work at m = 10^6 words (20 bits):
//!
//! * `dropped_client`: one client that dropped after ShareKeys with k neighbours in the
//!   sum — Shamir reconstruction of its mask key from t = ⌊(k+1)/2⌋+1 shares, k key
//!   agreements + HKDF, k mask expansions subtracted from the sum. Over rayon's pool as
//!   the server runs it (`_1core`: on one thread, the per-core cost).
//! * `survivor_self_masks`: the self masks of k clients in the sum — k reconstructions
//!   of b_u, k HKDF, k expansions (per survivor: divide by k).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use privagg_benches::workload::{DroppedClient, SurvivorSelfMasks, WORD_BYTES, bench_rng, input_words};
use privagg_crypto::PrgKind;

const M: usize = 1_000_000;

fn server_unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("server_unmask");
    group.sampling_mode(SamplingMode::Flat).sample_size(15).measurement_time(Duration::from_secs(3));
    let mut sum = input_words(M);
    for k in [10, 50] {
        let mut rng = bench_rng(k as u64);
        let dropped = DroppedClient::new(k, &mut rng);
        let survivors = SurvivorSelfMasks::new(k, k, &mut rng);
        let point = format!("m={M},k={k}");
        group.throughput(Throughput::Bytes((k * M * WORD_BYTES) as u64));
        group.bench_function(BenchmarkId::new("dropped_client", &point), |b| {
            b.iter(|| dropped.remove(PrgKind::Aes128Ctr, black_box(&mut sum), true).expect("unmasks"))
        });
        group.bench_function(BenchmarkId::new("dropped_client_1core", &point), |b| {
            b.iter(|| dropped.remove(PrgKind::Aes128Ctr, black_box(&mut sum), false).expect("unmasks"))
        });
        group.bench_function(BenchmarkId::new("survivor_self_masks", &point), |b| {
            b.iter(|| survivors.remove(PrgKind::Aes128Ctr, black_box(&mut sum), true).expect("unmasks"))
        });
    }
    group.finish();
}

criterion_group!(benches, server_unmask);
criterion_main!(benches);

//! One client building its masked vector: the self mask and k pairwise masks fused into
//! one buffer (`apply_masks`, one core), for m words at 20 bits (4-byte mask words).
//!
//! Each point is measured next to `raw_keystream`, the same (k + 1)·m·4 bytes of bare
//! keystream from the same seeds, generated the way `apply_masks` generates it (in L1,
//! `stream_keystream`) but not added, so `bench_report` can give the masking rate as a
//! fraction of the raw rate measured in the same run. The seeds are given (their key
//! agreements are in `key_agreement`). At m = 10^6, k = 50 it also runs the ChaCha20
//! variant and the two-core `masking::apply_all` the client actually calls.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use privagg_benches::workload::{MASK_BITS, WORD_BYTES, input_words, mask_list, raw_keystream, seeds};
use privagg_crypto::{PrgKind, apply_masks};

fn pair(group: &mut BenchmarkGroup<'_, WallTime>, kind: PrgKind, suffix: &str, m: usize, k: usize) {
    let seeds = seeds(k + 1);
    let masks = mask_list(&seeds);
    let mut words = input_words(m);
    let point = format!("m={m},k={k}");
    group.throughput(Throughput::Bytes(((k + 1) * m * WORD_BYTES) as u64));
    group.bench_function(BenchmarkId::new(format!("fused{suffix}"), &point), |b| {
        b.iter(|| apply_masks(kind, black_box(&mut words), 0, MASK_BITS, &masks).expect("valid width"))
    });
    group.bench_function(BenchmarkId::new(format!("raw_keystream{suffix}"), &point), |b| {
        b.iter(|| raw_keystream(kind, black_box(&seeds), m))
    });
}

fn client_mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_mask");
    group.sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(500));
    for m in [10_000, 100_000, 1_000_000, 10_000_000] {
        for k in [10, 50, 99] {
            let big = m >= 10_000_000;
            group.sample_size(if big { 10 } else { 20 }).measurement_time(Duration::from_secs(if big { 8 } else { 2 }));
            pair(&mut group, PrgKind::Aes128Ctr, "", m, k);
        }
    }
    group.sample_size(20).measurement_time(Duration::from_secs(2));
    pair(&mut group, PrgKind::ChaCha20, "_chacha20", 1_000_000, 50);
    let seeds = seeds(51);
    let owned: Vec<_> = mask_list(&seeds).into_iter().map(|(s, sign)| (s.clone(), sign)).collect();
    let mut words = input_words(1_000_000);
    group.throughput(Throughput::Bytes((51 * 1_000_000 * WORD_BYTES) as u64));
    group.bench_function(BenchmarkId::new("apply_all_2cores", "m=1000000,k=50"), |b| {
        b.iter(|| {
            privagg_protocol::masking::apply_all(PrgKind::Aes128Ctr, black_box(&mut words), MASK_BITS as u8, &owned)
                .expect("valid width")
        })
    });
    group.finish();
}

criterion_group!(benches, client_mask);
criterion_main!(benches);

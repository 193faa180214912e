//! The no-privacy baseline: adding one client's f32 vector of length m into the running
//! sum (`f32_add`), next to what the secure server does per client instead — adding a
//! bit-packed 20-bit masked vector into its u64 running sum (`packed20_add_into`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use privagg_benches::workload::{MASK_BITS, input_words, update};
use privagg_protocol::PackedVector;

fn plain_sum(c: &mut Criterion) {
    let mut group = c.benchmark_group("plain_sum");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2)).sample_size(20);
    for m in [10_000, 100_000, 1_000_000, 10_000_000] {
        let x = update(m);
        let mut acc = vec![0f32; m];
        let packed = PackedVector::pack(&input_words(m), MASK_BITS as u8);
        let mut sum = vec![0u64; m];
        group.throughput(Throughput::Elements(m as u64));
        group.bench_function(BenchmarkId::new("f32_add", format!("m={m}")), |b| {
            b.iter(|| {
                for (a, v) in acc.iter_mut().zip(black_box(&x)) {
                    *a += v;
                }
            })
        });
        group.bench_function(BenchmarkId::new("packed20_add_into", format!("m={m}")), |b| {
            b.iter(|| black_box(&packed).add_into(black_box(&mut sum)))
        });
    }
    group.finish();
}

criterion_group!(benches, plain_sum);
criterion_main!(benches);

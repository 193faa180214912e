//! Shamir sharing of one 32-byte scalar (a mask key or self-mask secret) over the
//! ristretto255 scalar field, n holders, threshold t = ⌊n/2⌋ + 1: `split` (n shares),
//! `reconstruct` (from exactly t shares), and `lagrange_at_zero` (the coefficients the
//! server computes once per holder set and reuses for every secret).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use privagg_benches::workload::bench_rng;
use privagg_crypto::{Scalar, shamir};

fn shamir_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("shamir");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2)).sample_size(20);
    let secret = Scalar::from(0xdead_beefu64);
    for n in [10u32, 100, 1000] {
        let t = n as usize / 2 + 1;
        let holders: Vec<u32> = (1..=n).collect();
        let mut rng = bench_rng(u64::from(n));
        let shares = shamir::split(&secret, t, &holders, &mut rng).expect("valid");
        let point = format!("n={n},t={t}");
        group.bench_function(BenchmarkId::new("split", &point), |b| {
            b.iter(|| shamir::split(black_box(&secret), t, &holders, &mut rng).expect("valid"))
        });
        group.bench_function(BenchmarkId::new("reconstruct", &point), |b| {
            b.iter(|| shamir::reconstruct(black_box(&shares[..t]), t).expect("valid"))
        });
        group.bench_function(BenchmarkId::new("lagrange_at_zero", &point), |b| {
            b.iter(|| shamir::lagrange_coefficients_at_zero(black_box(&holders[..t])).expect("valid"))
        });
    }
    group.finish();
}

criterion_group!(benches, shamir_bench);
criterion_main!(benches);

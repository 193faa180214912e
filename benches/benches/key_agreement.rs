//! One ristretto255 key agreement: generating a key pair, one Diffie-Hellman, and one
//! Diffie-Hellman followed by the HKDF that turns it into a pairwise mask seed (what a
//! client does per neighbour, and the server per dropped-client edge).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use privagg_benches::workload::{bench_context, bench_rng};
use privagg_crypto::{SecretKey, derive_pairwise_mask_seed};

fn key_agreement(c: &mut Criterion) {
    let mut group = c.benchmark_group("key_agreement");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2)).sample_size(30);
    let mut rng = bench_rng(9);
    let own = SecretKey::generate(&mut rng);
    let peer = SecretKey::generate(&mut rng).public_key();
    let ctx = bench_context();
    group.bench_function("generate", |b| b.iter(|| SecretKey::generate(&mut rng).public_key()));
    group.bench_function("diffie_hellman", |b| b.iter(|| own.diffie_hellman(black_box(&peer)).expect("valid key")));
    group.bench_function("dh_hkdf_seed", |b| {
        b.iter(|| {
            let shared = own.diffie_hellman(black_box(&peer)).expect("valid key");
            derive_pairwise_mask_seed(&shared, &ctx, 1, 2)
        })
    });
    group.finish();
}

criterion_group!(benches, key_agreement);
criterion_main!(benches);

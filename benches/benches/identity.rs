//! What authenticating peers costs a client, per operation: signing its advertisement,
//! verifying a neighbour's certificate against the enrollment authority's root and its
//! signature under it (the first time a root meets the certificate, and again), and
//! verifying a signature under an already verified certificate. A client in a round of k neighbours
//! signs twice (advertisement, survivor set), verifies k certificates, k advertisements
//! and t survivor-set signatures. The server checks the k envelope signatures of each
//! client that shares keys: one by one (ring, as before) against one cofactored batch.

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use privagg_ca::Authority;
use privagg_crypto::identity::{IdentityKey, TrustRoot, certificate_key, verify_signed_by};

fn identity(c: &mut Criterion) {
    let mut group = c.benchmark_group("identity");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2)).sample_size(30);
    let authority = Authority::create("bench authority", 1).expect("authority");
    let issued = authority.issue("client", 1).expect("certificate");
    let key = IdentityKey::from_pkcs8(&issued.key).expect("key");
    let root = TrustRoot::from_der(authority.root_der()).expect("root");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // An advertisement is 4 + 32 + 32 + 32 bytes after a 52-byte prefix and the cohort hash.
    let message = [7u8; 180];
    let signature = key.sign(&message);
    group.bench_function("sign", |b| b.iter(|| key.sign(black_box(&message))));
    // First sight: the chain at now and at now + the horizon (two webpki checks), then the
    // signature; a root meeting the certificate again only checks the signature.
    group.bench_function("verify_certificate_first_sight", |b| {
        b.iter_batched(
            || TrustRoot::from_der(authority.root_der()).expect("root"),
            |fresh| fresh.verify(black_box(&issued.cert), now).expect("valid").verify_signature(&message, &signature),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("verify_certificate_remembered", |b| {
        b.iter(|| root.verify(black_box(&issued.cert), now).expect("valid").verify_signature(&message, &signature))
    });
    group.bench_function("verify_signature", |b| {
        b.iter(|| verify_signed_by(black_box(&issued.cert), &message, &signature).expect("valid"))
    });
    group.finish();

    // One client's envelopes at n = 1,000 (k = 314): ring one by one, each parsing the
    // certificate (what the server did), against the cofactored batch.
    let mut group = c.benchmark_group("envelope_signatures_k314");
    group.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(3)).sample_size(20);
    let messages: Vec<[u8; 180]> = (0..314u32)
        .map(|i| {
            let mut m = [7u8; 180];
            m[..4].copy_from_slice(&i.to_be_bytes());
            m
        })
        .collect();
    let signatures: Vec<[u8; 64]> = messages.iter().map(|m| key.sign(m)).collect();
    group.bench_function("one_by_one_ring", |b| {
        b.iter(|| {
            for (m, s) in messages.iter().zip(&signatures) {
                verify_signed_by(black_box(&issued.cert), m, s).expect("valid");
            }
        })
    });
    group.bench_function("cofactored_batch", |b| {
        b.iter(|| {
            let items: Vec<(&[u8], &[u8; 64])> = messages.iter().map(|m| m.as_slice()).zip(&signatures).collect();
            assert!(certificate_key(black_box(&issued.cert)).expect("key").verify_all(&items));
        })
    });
    group.finish();
}

criterion_group!(benches, identity);
criterion_main!(benches);

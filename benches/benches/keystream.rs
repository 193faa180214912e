//! Raw keystream throughput of each mask PRG: the limit for masking and unmasking.
//!
//! `streamed`: 1 MiB generated in 1 KiB pieces in L1 and only looked at
//! (`stream_keystream`, the way the masking loop draws it). `16KiB` and `1MiB`: written
//! out to a buffer of that size (`fill_keystream`; 16 KiB like the column of `openssl
//! speed -evp aes-128-ctr` quoted next to it).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use privagg_benches::workload::seeds;
use privagg_crypto::{PrgKind, fill_keystream, stream_keystream};

fn keystream(c: &mut Criterion) {
    let seed = &seeds(1)[0];
    let mut group = c.benchmark_group("keystream");
    for kind in [PrgKind::Aes128Ctr, PrgKind::ChaCha20] {
        let blocks = (1 << 20) / kind.block_len();
        group.throughput(Throughput::Bytes(1 << 20));
        group.bench_function(BenchmarkId::new(format!("{kind:?}"), "streamed"), |b| {
            b.iter(|| {
                stream_keystream(kind, seed, 0, blocks, |piece| {
                    black_box(piece);
                })
            })
        });
        for (label, bytes) in [("16KiB", 16 << 10), ("1MiB", 1 << 20)] {
            let mut out = vec![0u8; bytes];
            let blocks = (bytes / kind.block_len()) as u64;
            group.throughput(Throughput::Bytes(bytes as u64));
            group.bench_function(BenchmarkId::new(format!("{kind:?}"), label), |b| {
                let mut first = 0u64;
                b.iter(|| {
                    fill_keystream(kind, seed, first, black_box(&mut out));
                    first = first.wrapping_add(blocks);
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = keystream
}
criterion_main!(benches);

//! Measures the mask PRG: the raw keystream rate of each [`PrgKind`] and the fused
//! `apply_masks` rate, as a fraction of the raw AES-CTR rate measured in the same round.
//!
//! ```text
//! cargo run --release -p privagg-crypto --example prg_speed [rounds]
//! openssl speed -evp aes-128-ctr -seconds 2      # reference, 16384-byte column
//! ```
//!
//! The machine is shared and noisy, so rates use this thread's CPU time (not wall time) where
//! available, the workloads are interleaved round by round, and every figure is the median
//! over the rounds (default 11); ratios are taken within a round.

use std::hint::black_box;
use std::time::Instant;

use aes::Aes128Enc;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use privagg_crypto::{MaskSeed, MaskSign, PrgKind, apply_masks, fill_keystream, stream_keystream};

/// CPU time of this thread in seconds, from `/proc/thread-self/schedstat` (Linux; 4 ms
/// granularity at HZ = 250), or `None` elsewhere. On a shared machine, time spent descheduled
/// is not counted, which makes rates far less noisy than wall-clock ones.
fn thread_cpu_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 * 1e-9)
}

/// Runs `f` (which processes `bytes` bytes) repeatedly for at least 0.25 s of wall time and
/// returns its throughput in GB/s, by thread CPU time where available.
fn rate(bytes: usize, mut f: impl FnMut()) -> f64 {
    let (wall, cpu) = (Instant::now(), thread_cpu_time());
    let mut reps = 0;
    while reps == 0 || wall.elapsed().as_secs_f64() < 0.25 {
        f();
        reps += 1;
    }
    let secs = match (cpu, thread_cpu_time()) {
        (Some(start), Some(end)) => end - start,
        _ => wall.elapsed().as_secs_f64(),
    };
    (reps * bytes) as f64 / secs / 1e9
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Raw keystream in 16 KiB calls (cache-resident, like openssl's 16 KiB column), 16 MiB per call of `f`.
fn raw_rate(kind: PrgKind, seed: &MaskSeed, out: &mut [u8]) -> f64 {
    let calls = (16 << 20) / out.len();
    let blocks_per_call = (out.len() / kind.block_len()) as u64;
    rate(calls * out.len(), || {
        for i in 0..calls as u64 {
            fill_keystream(kind, seed, i * blocks_per_call, black_box(&mut *out));
        }
    })
}

/// Raw keystream generated in L1 and handed to a sink that only looks at it (the rate
/// `apply_masks` draws from), 16 MiB per call of `f`.
fn streamed_rate(kind: PrgKind, seed: &MaskSeed) -> f64 {
    let bytes = 16 << 20;
    rate(bytes, || {
        stream_keystream(kind, seed, 0, bytes / kind.block_len(), |chunk| {
            black_box(chunk);
        })
    })
}

/// Counter blocks built in place in 256-block batches, then `encrypt_blocks`: the simple way.
/// With `counters = false`, only `encrypt_blocks` (an upper bound for any CTR on this backend).
fn naive_rate(cipher: &Aes128Enc, blocks: &mut [aes::Block], counters: bool) -> f64 {
    let batches = (16 << 20) / (blocks.len() * 16);
    rate(batches * blocks.len() * 16, || {
        let mut counter = 0u128;
        for _ in 0..batches {
            if counters {
                for block in blocks.iter_mut() {
                    *block = counter.to_be_bytes().into();
                    counter += 1;
                }
            }
            cipher.encrypt_blocks(black_box(&mut *blocks));
        }
    })
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(11);
    println!(
        "AES hardware: {}; VAES enabled at compile time: {}",
        aes::hardware_accelerated(),
        cfg!(target_feature = "vaes")
    );

    let seeds: Vec<MaskSeed> =
        (0..51u8).map(|i| MaskSeed::from_bytes([i.wrapping_mul(37).wrapping_add(1); 32])).collect();
    // 1 self mask + 50 pairwise masks, half added and half subtracted.
    let masks: Vec<(&MaskSeed, MaskSign)> = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| (s, if i % 2 == 0 { MaskSign::Add } else { MaskSign::Subtract }))
        .collect();
    let workloads = [
        (PrgKind::Aes128Ctr, 32u32),
        (PrgKind::Aes128Ctr, 16),
        (PrgKind::Aes128Ctr, 8),
        (PrgKind::Aes128Ctr, 64),
        (PrgKind::ChaCha20, 32),
    ];

    let cipher = Aes128Enc::new(&[7u8; 16].into());
    let mut blocks = vec![aes::Block::default(); 256];
    let mut out = vec![0u8; 16 * 1024];
    let mut buf = vec![0u64; 1_000_000];
    let (mut aes, mut chacha, mut naive, mut ecb, mut filled) = (vec![], vec![], vec![], vec![], vec![]);
    let mut masked: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); workloads.len()];

    for round in 0..=rounds {
        let raw_aes = streamed_rate(PrgKind::Aes128Ctr, &seeds[0]);
        let raw_chacha = streamed_rate(PrgKind::ChaCha20, &seeds[0]);
        let fill_aes = raw_rate(PrgKind::Aes128Ctr, &seeds[0], &mut out);
        let raw_naive = naive_rate(&cipher, &mut blocks, true);
        let raw_ecb = naive_rate(&cipher, &mut blocks, false);
        let mut rates = vec![];
        for (kind, bits) in workloads {
            let word_bytes = (bits as usize).div_ceil(8).next_power_of_two();
            let bytes = masks.len() * buf.len() * word_bytes;
            let r = rate(bytes, || apply_masks(kind, black_box(&mut buf), 0, bits, &masks).expect("valid width"));
            rates.push((r, bytes as f64 / r / 1e6));
        }
        if round == 0 {
            continue; // warm-up
        }
        aes.push(raw_aes);
        filled.push(fill_aes);
        chacha.push(raw_chacha);
        naive.push(raw_naive);
        ecb.push(raw_ecb);
        for ((kind, _), ((rate, ms), (r, t, ratio))) in workloads.iter().zip(rates.into_iter().zip(masked.iter_mut())) {
            let raw = if *kind == PrgKind::Aes128Ctr { raw_aes } else { raw_chacha };
            r.push(rate);
            t.push(ms);
            ratio.push(rate / raw);
        }
    }

    println!("medians over {rounds} rounds:");
    println!("raw keystream AES-128-CTR (generated in L1):  {:6.2} GB/s", median(aes));
    println!("raw keystream ChaCha20    (generated in L1):  {:6.2} GB/s", median(chacha));
    println!("AES-128-CTR written to 16 KiB buffers:        {:6.2} GB/s", median(filled));
    println!("naive AES-CTR (in-place 256-block batches):   {:6.2} GB/s", median(naive));
    println!("encrypt_blocks alone (no counters, bound):    {:6.2} GB/s", median(ecb));
    for ((kind, bits), (r, t, ratio)) in workloads.iter().zip(masked) {
        println!(
            "apply_masks {kind:?}, 51 seeds x 1e6 words, bits = {bits:2}: {:6.2} GB/s of keystream, \
             {:6.1} ms, {:4.0} % of the same round's raw {kind:?} rate",
            median(r),
            median(t),
            100.0 * median(ratio)
        );
    }
}

//! The server's view of one client's masked vector carries no signal: whatever the
//! input, the words it receives are uniform mod 2^b.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Harness, id, params};
use privagg_protocol::ClientMessage;

/// Pearson's chi-square of `words` against the uniform distribution over 256 buckets,
/// bucketed by `bucket`.
fn chi_square(words: &[u64], bucket: impl Fn(u64) -> usize) -> f64 {
    let mut counts = [0u64; 256];
    for &w in words {
        counts[bucket(w)] += 1;
    }
    let expected = words.len() as f64 / 256.0;
    counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum()
}

/// The 1 − 10⁻⁴ quantile of chi-square with 255 degrees of freedom (Wilson–Hilferty:
/// 255·(1 − 2/2295 + 3.719·√(2/2295))³ ≈ 347.7). A uniform vector exceeds it with
/// probability 10⁻⁴; the seeds are fixed, so the test is deterministic.
const CRITICAL: f64 = 347.7;

/// The masked vector client 1 sends, for a chosen input.
fn masked_vector_of(input: Vec<u64>, seed: u64) -> Vec<u64> {
    let bits = 16;
    let p = params(5, 4, 3, input.len() as u32, bits);
    let mut h = Harness::with_clients(p, seed, |_| (common::any_threshold(), None), &[id(1)]);
    h.clients[0].0.set_input(input.clone()).unwrap();
    h.inputs[0] = input;
    let mut seen = None;
    h.run(|_, from, msg| {
        if let (true, ClientMessage::MaskedInput(v)) = (from == id(1), &msg) {
            seen = Some(v.unpack());
        }
        Some(msg)
    });
    h.assert_exact();
    seen.unwrap()
}

#[test]
fn a_masked_vector_is_uniform_whatever_the_input() {
    let dim = 1 << 16;
    let zeros = vec![0u64; dim];
    let ramp: Vec<u64> = (0..dim as u64).map(|i| i & 0xffff).collect();
    let constant = vec![0xbeef; dim];
    let high = |w: u64| (w >> 8) as usize & 0xff;
    let low = |w: u64| w as usize & 0xff;
    // (name, input, whether the input itself fails the test; a ramp is uniform bytewise)
    for (name, input, skewed) in [("zeros", zeros, true), ("ramp", ramp, false), ("constant", constant, true)] {
        if skewed {
            assert!(chi_square(&input, high) > CRITICAL && chi_square(&input, low) > CRITICAL);
        }
        // …but what the server sees is uniform in both.
        let masked = masked_vector_of(input, 21);
        let (h, l) = (chi_square(&masked, high), chi_square(&masked, low));
        assert!(h < CRITICAL && l < CRITICAL, "{name}: chi-square {h:.1} (high byte), {l:.1} (low byte)");
    }
}

#[test]
fn the_check_has_power() {
    // Sanity check of the test itself: a vector concentrated on a few values fails it.
    let skewed: Vec<u64> = (0..1u64 << 16).map(|i| (i % 200) << 8).collect();
    assert!(chi_square(&skewed, |w| (w >> 8) as usize & 0xff) > CRITICAL);
}

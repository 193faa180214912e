//! Mask PRG behaviour: determinism, independence, inverse, chunking, ranges, error paths.

use privagg_crypto::prg::CHUNK_BYTES;
use privagg_crypto::{CryptoError, MaskSeed, MaskSign, PrgKind, apply_mask, apply_masks};
use proptest::prelude::*;

const KINDS: [PrgKind; 2] = [PrgKind::Aes128Ctr, PrgKind::ChaCha20];

fn seed(i: u8) -> MaskSeed {
    MaskSeed::from_bytes(core::array::from_fn(|j| i.wrapping_mul(31).wrapping_add(j as u8)))
}

fn masked(kind: PrgKind, seed: &MaskSeed, n: usize, first: u64, bits: u32) -> Vec<u64> {
    let mut buf = vec![0u64; n];
    apply_mask(kind, &mut buf, first, bits, seed, MaskSign::Add).expect("valid width");
    buf
}

/// A deterministic pseudo-random input below 2^bits.
fn input(n: usize, bits: u32) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x & (u64::MAX >> (64 - bits))
        })
        .collect()
}

#[test]
fn default_kind_is_aes_ctr() {
    assert_eq!(PrgKind::default(), PrgKind::Aes128Ctr);
    assert_eq!(PrgKind::Aes128Ctr.block_len(), 16);
    assert_eq!(PrgKind::ChaCha20.block_len(), 64);
}

#[test]
fn same_seed_gives_same_mask() {
    for kind in KINDS {
        assert_eq!(masked(kind, &seed(1), 5000, 0, 32), masked(kind, &seed(1), 5000, 0, 32));
    }
}

#[test]
fn different_seeds_and_kinds_give_different_masks() {
    for kind in KINDS {
        let a = masked(kind, &seed(1), 256, 0, 32);
        let b = masked(kind, &seed(2), 256, 0, 32);
        let equal = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        // Independent uniform 32-bit words collide with probability 2^-32 each.
        assert!(equal <= 1, "{kind:?}: {equal} equal words");
    }
    let aes = masked(PrgKind::Aes128Ctr, &seed(1), 256, 0, 32);
    let chacha = masked(PrgKind::ChaCha20, &seed(1), 256, 0, 32);
    assert_ne!(aes, chacha);
}

#[test]
fn add_then_subtract_restores_every_width() {
    for kind in KINDS {
        for bits in 1..=64 {
            let original = input(3001, bits);
            let mut buf = original.clone();
            apply_mask(kind, &mut buf, 17, bits, &seed(3), MaskSign::Add).expect("valid");
            assert_ne!(buf, original, "{kind:?} bits {bits}: mask had no effect");
            apply_mask(kind, &mut buf, 17, bits, &seed(3), MaskSign::Subtract).expect("valid");
            assert_eq!(buf, original, "{kind:?} bits {bits}");
        }
    }
}

#[test]
fn outputs_are_reduced_mod_2_to_the_bits() {
    for kind in KINDS {
        for bits in 1..=63 {
            let mut buf = input(2000, bits);
            apply_masks(kind, &mut buf, 0, bits, &[(&seed(4), MaskSign::Add), (&seed(5), MaskSign::Subtract)])
                .expect("valid");
            assert!(buf.iter().all(|&w| w >> bits == 0), "{kind:?} bits {bits}");
        }
    }
    // Inputs at or above 2^bits are reduced too, even with no masks at all.
    let mut buf = vec![u64::MAX; 10];
    apply_masks(PrgKind::default(), &mut buf, 0, 12, &[]).expect("valid");
    assert!(buf.iter().all(|&w| w == 0xfff));
}

#[test]
fn small_widths_use_every_value() {
    // Words mod 2^bits are uniform: with 4096 draws every residue of a small modulus appears.
    for kind in KINDS {
        for bits in [1u32, 2, 3, 8] {
            let words = masked(kind, &seed(6), 4096, 0, bits);
            let mut seen = vec![false; 1 << bits];
            for w in words {
                seen[w as usize] = true;
            }
            assert!(seen.iter().all(|&s| s), "{kind:?} bits {bits}");
        }
    }
}

#[test]
fn rejects_widths_outside_1_to_64() {
    for bits in [0u32, 65, 128, u32::MAX] {
        let mut buf = vec![1u64; 4];
        assert_eq!(
            apply_mask(PrgKind::default(), &mut buf, 0, bits, &seed(0), MaskSign::Add),
            Err(CryptoError::InvalidMaskWidth { bits })
        );
        assert_eq!(apply_masks(PrgKind::ChaCha20, &mut buf, 0, bits, &[]), Err(CryptoError::InvalidMaskWidth { bits }));
        assert_eq!(buf, vec![1u64; 4], "buffer untouched on error");
    }
}

#[test]
fn empty_buffer_is_fine() {
    let mut buf: Vec<u64> = Vec::new();
    apply_mask(PrgKind::default(), &mut buf, u64::MAX, 64, &seed(0), MaskSign::Add).expect("valid");
}

#[test]
fn huge_word_offsets_are_supported() {
    // Word indices near 2^64 (byte positions beyond u64) still work and stay consistent.
    for kind in KINDS {
        let first = u64::MAX - 100;
        let whole = masked(kind, &seed(7), 300, first, 64);
        let tail = masked(kind, &seed(7), 200, first + 100, 64);
        assert_eq!(whole[100..], tail[..]);
    }
}

#[test]
fn many_seeds_equal_sequential_single_seeds() {
    let seeds: Vec<MaskSeed> = (0..7).map(seed).collect();
    let masks: Vec<(&MaskSeed, MaskSign)> = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| (s, if i % 3 == 0 { MaskSign::Subtract } else { MaskSign::Add }))
        .collect();
    for kind in KINDS {
        for bits in [7u32, 16, 20, 33, 64] {
            let n = 3 * CHUNK_BYTES / 4 + 123;
            let mut fused = input(n, bits);
            let mut sequential = fused.clone();
            apply_masks(kind, &mut fused, 5, bits, &masks).expect("valid");
            for (s, sign) in &masks {
                apply_mask(kind, &mut sequential, 5, bits, s, *sign).expect("valid");
            }
            assert_eq!(fused, sequential, "{kind:?} bits {bits}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Cutting a vector anywhere and masking the pieces with matching offsets equals one call.
    #[test]
    fn chunked_application_equals_one_shot(
        kind_aes in any::<bool>(),
        bits in 1u32..=64,
        first in 0u64..100_000,
        cuts in prop::collection::vec(0usize..12_000, 0..4),
        n in 1usize..12_000,
    ) {
        let kind = if kind_aes { PrgKind::Aes128Ctr } else { PrgKind::ChaCha20 };
        let masks = [(&seed(8), MaskSign::Add), (&seed(9), MaskSign::Subtract)];
        let mut whole = input(n, bits);
        let mut pieces = whole.clone();
        apply_masks(kind, &mut whole, first, bits, &masks).expect("valid");

        let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c % n).collect();
        bounds.push(0);
        bounds.push(n);
        bounds.sort_unstable();
        for w in bounds.windows(2) {
            apply_masks(kind, &mut pieces[w[0]..w[1]], first + w[0] as u64, bits, &masks)
                .expect("valid");
        }
        prop_assert_eq!(whole, pieces);
    }
}

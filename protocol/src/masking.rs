//! Applying many masks to one vector, split across cores.
//!
//! Each chunk of the vector takes every mask in turn while it is in cache (the PRG's
//! `apply_masks` is itself chunk-major), and chunks run in parallel on rayon's pool: mask
//! word i is keystream word i of its seed, wherever the chunk starts.

use privagg_crypto::{CryptoError, MaskSeed, MaskSign, PrgKind, apply_masks};
use rayon::prelude::*;

/// Words per parallel task: large enough to amortise per-task key expansion, small
/// enough to spread a 10^5-word vector over a few cores.
const TASK_WORDS: usize = 1 << 15;

/// Adds or subtracts the mask of each seed into `buf` mod 2^bits; rejects bits outside
/// 1..=64.
pub fn apply_all(kind: PrgKind, buf: &mut [u64], bits: u8, masks: &[(MaskSeed, MaskSign)]) -> Result<(), CryptoError> {
    let refs: Vec<(&MaskSeed, MaskSign)> = masks.iter().map(|(s, sign)| (s, *sign)).collect();
    buf.par_chunks_mut(TASK_WORDS)
        .enumerate()
        .try_for_each(|(i, chunk)| apply_masks(kind, chunk, (i * TASK_WORDS) as u64, u32::from(bits), &refs))
}

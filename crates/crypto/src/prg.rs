//! The mask PRG: expands a 32-byte seed into a stream of mask words and adds (or subtracts)
//! them into a vector modulo 2^bits, in place.
//!
//! # Definition (wire-level contract)
//!
//! **Keystream.** For [`PrgKind::Aes128Ctr`] the keystream of a seed is AES-128 in counter mode
//! exactly as in NIST SP 800-38A §6.5: key = `seed[0..16]`, initial counter block
//! T₀ = `seed[16..32]` read as a 128-bit big-endian integer, T_i = T₀ + i mod 2^128, and
//! keystream block i (bytes `16·i .. 16·i + 16`) is AES-128(key, T_i encoded big-endian).
//! For [`PrgKind::ChaCha20`] it is the ChaCha20 block function of RFC 8439 §2.3 with 20
//! rounds, key = `seed`, nonce = zero and a 64-bit block counter (state words 12 and 13,
//! little-endian, i.e. Bernstein's original layout), starting at 0; keystream block i
//! (bytes `64·i .. 64·i + 64`) is the block at counter i mod 2^64. For counters below 2^32
//! this equals RFC 8439 ChaCha20 with an all-zero 96-bit nonce.
//!
//! **Words.** For a width of `bits` ∈ 1..=64 the word size is L = 1, 2, 4 or 8 bytes for
//! bits ≤ 8, ≤ 16, ≤ 32, ≤ 64. Word j is the little-endian integer in keystream bytes
//! `[j·L, (j+1)·L)`, reduced mod 2^bits (its low `bits` bits). The modulus is a power of two
//! that divides 2^(8L), so every word is exactly uniform: no rejection sampling, no bias.
//! A `bits`-bit vector burns 8L bits of keystream per coordinate (e.g. 32 for bits = 20).
//!
//! **Masking.** `apply_masks(kind, buf, first_word, bits, masks)` sets, for every i,
//! `buf[i] ← (buf[i] + Σ_add word_{first_word+i}(seed) − Σ_sub word_{first_word+i}(seed)) mod 2^bits`.
//! Because `buf[i]` is word `first_word + i` of every stream, a caller may cut a vector into
//! pieces and mask them independently (e.g. on several threads); the result is the same.
//!
//! # Security
//!
//! Each seed is a fresh 32-byte HKDF output ([`crate::kdf`]), unique per session, round and
//! client pair, so each AES key is used for one stream only and counters never repeat
//! within a stream (a vector needs far fewer than 2^128 blocks). A seed has 256 bits of
//! entropy but AES-128-CTR uses 128 of them as key: distinguishing the stream from random
//! costs about 2^128 work, and the birthday bound on a single key (a permutation, not a
//! function) is negligible for ≤ 2^40 blocks per stream.
//!
//! # Performance
//!
//! [`apply_masks`] is fused and chunk-major: for each chunk of `CHUNK_BYTES / L` words
//! ([`CHUNK_BYTES`]) it generates every seed's keystream for that chunk, 1 KiB at a time, and
//! adds it into a chunk accumulator that stays in L1 across all seeds; the vector itself is
//! read and written once. The accumulator has the word width (u8/u16/u32/u64 lanes: sums
//! mod 2^(8L) reduce correctly mod 2^bits because 2^bits divides 2^(8L)), so a u32 word costs
//! one 32-bit SIMD lane, and it is widened into `buf` once per chunk, not once per seed. Key
//! schedules are expanded once per call.
//!
//! AES-CTR is hand-rolled on the `aes` crate's block backend (AES-NI, VAES256 or VAES512,
//! chosen at run time) instead of the `ctr` crate, whose `apply_keystream` ran at about half
//! the speed of bare `encrypt_blocks` here. Counter blocks are written one backend batch at a
//! time, and the keystream is consumed inside the backend call, so the adding loop is compiled
//! with the backend's target features (SSE2 under AES-NI, AVX2 under VAES).
//!
//! `cpufeatures` 0.3.1 (used by `aes`) asks for AVX-512 register state before reporting VAES,
//! so on AVX2-only VAES CPUs (AMD Zen 3) its run-time dispatch picked AES-NI; privagg carries
//! a one-line patch (`vendor/cpufeatures/PRIVAGG-PATCH.md`) so that the VAES256 backend is
//! chosen wherever the CPU has it.
//!
//! Measured with `examples/prg_speed.rs` on the 2-vCPU AMD EPYC reference VM (AES-NI, VAES,
//! AVX2, no AVX-512; shared, so medians of CPU-time rates over interleaved rounds): raw
//! AES-128-CTR keystream generated in L1 10.0–10.8 GB/s (7.2–7.4 GB/s when written out to
//! 16 KiB buffers; OpenSSL `speed -evp aes-128-ctr`, 16 KiB: 7.4–8.4 GB/s), ChaCha20
//! 2.1 GB/s; `apply_masks` with 51 seeds over 10⁶ words at bits = 32: 8.2–8.9 GB/s of
//! keystream (23–25 ms), 82–87 % of the raw rate. With AES-NI only (no VAES, 4 KiB pieces):
//! raw 7.6 GB/s, masking 5.9 GB/s (34.5 ms).

use core::fmt;

use aes::Aes128Enc;
use aes::cipher::array::Array;
use aes::cipher::consts::{U16, U64};
use aes::cipher::typenum::Unsigned;
use aes::cipher::{
    BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt, BlockSizeUser, KeyInit, KeyIvInit, ParBlocks,
    StreamCipherBackend, StreamCipherClosure, StreamCipherCore,
};
use chacha20::ChaCha20LegacyCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::CryptoError;

/// Keystream bytes per seed per chunk of [`apply_masks`] (the chunk has
/// `CHUNK_BYTES / L` words). 15 KiB = 960 AES blocks = 240 ChaCha blocks, a multiple of every
/// backend's parallel width (8, 30 and 64 AES blocks; 4 ChaCha blocks), so no keystream is
/// wasted at chunk ends; the accumulator (15 KiB) stays in L1 while all seeds are added.
pub const CHUNK_BYTES: usize = 15 * 1024;

/// A 32-byte PRG seed. Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MaskSeed([u8; 32]);

impl MaskSeed {
    /// Wraps 32 seed bytes. Protocol seeds come from [`crate::kdf`].
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The seed bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }
}

impl fmt::Debug for MaskSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskSeed(<redacted>)")
    }
}

/// Whether a mask is added to or subtracted from the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskSign {
    /// `buf += mask`.
    Add,
    /// `buf -= mask`.
    Subtract,
}

impl MaskSign {
    /// The sign that removes a mask applied with this one.
    pub fn opposite(self) -> Self {
        match self {
            Self::Add => Self::Subtract,
            Self::Subtract => Self::Add,
        }
    }
}

/// The keystream generator behind the masks (see the module docs for the exact definitions).
///
/// The default is AES-128-CTR, chosen by measurement: with AES-NI its keystream ran ≈ 3.5×
/// faster than ChaCha20 on the reference machine (7.2 vs 2.0 GB/s, `prg_speed` example), and
/// ≈ 4× with VAES; x86-64 servers and ARMv8 devices have AES instructions. ChaCha20 is the
/// choice for clients without them (fast and constant-time in plain software, where the
/// `aes` crate falls back to a bitsliced implementation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PrgKind {
    /// AES-128-CTR, NIST SP 800-38A (16-byte blocks).
    #[default]
    Aes128Ctr,
    /// ChaCha20 (RFC 8439 block function, 64-bit counter, zero nonce; 64-byte blocks).
    ChaCha20,
}

impl PrgKind {
    /// The keystream block size in bytes (16 for AES, 64 for ChaCha20): the unit of
    /// `first_block` in [`fill_keystream`].
    pub const fn block_len(self) -> usize {
        match self {
            PrgKind::Aes128Ctr => 16,
            PrgKind::ChaCha20 => 64,
        }
    }
}

/// Adds (or subtracts) the mask words of each seed into `buf`, mod 2^bits, in place, with no
/// temporary vector of `buf`'s size (the working set is a 15 KiB accumulator, a 1 KiB
/// keystream buffer and one expanded key per seed).
///
/// `buf[i]` is combined with word index `first_word + i` of every seed's stream, so a caller
/// can split a vector into chunks and process them separately (or on several threads) with the
/// matching offsets. Inputs are expected to be < 2^bits; every output is reduced mod 2^bits
/// (also when `masks` is empty). Rejects `bits` outside `1..=64` with
/// [`CryptoError::InvalidMaskWidth`].
pub fn apply_masks(
    kind: PrgKind,
    buf: &mut [u64],
    first_word: u64,
    bits: u32,
    masks: &[(&MaskSeed, MaskSign)],
) -> Result<(), CryptoError> {
    let width = word_bytes(bits)?;
    let mask = low_bits_mask(bits);
    let mut streams: Vec<(Keystream, MaskSign)> =
        masks.iter().map(|(seed, sign)| (Keystream::new(kind, seed), *sign)).collect();
    match width {
        1 => mask_chunks::<u8>(&mut streams, buf, first_word, mask),
        2 => mask_chunks::<u16>(&mut streams, buf, first_word, mask),
        4 => mask_chunks::<u32>(&mut streams, buf, first_word, mask),
        _ => mask_chunks::<u64>(&mut streams, buf, first_word, mask),
    }
    Ok(())
}

/// [`apply_masks`] with a single seed.
pub fn apply_mask(
    kind: PrgKind,
    buf: &mut [u64],
    first_word: u64,
    bits: u32,
    seed: &MaskSeed,
    sign: MaskSign,
) -> Result<(), CryptoError> {
    apply_masks(kind, buf, first_word, bits, &[(seed, sign)])
}

/// Hands the keystream of `seed` from block `first_block` on, `nblocks` blocks in all, to
/// `sink` in pieces of at most 1 KiB generated into a buffer that stays in L1 — the way
/// [`apply_masks`] consumes it. Measures the raw generation rate without a copy to memory.
pub fn stream_keystream(kind: PrgKind, seed: &MaskSeed, first_block: u64, nblocks: usize, sink: impl FnMut(&[u8])) {
    Keystream::new(kind, seed).stream(u128::from(first_block), nblocks, sink);
}

/// Writes raw keystream bytes of `seed` into `out`, starting at the first byte of keystream
/// block `first_block` (blocks of [`PrgKind::block_len`] bytes; the AES counter is
/// T₀ + `first_block` mod 2^128, the ChaCha20 counter `first_block`, mod 2^64 as the stream
/// continues). For benchmarks and known-answer tests.
pub fn fill_keystream(kind: PrgKind, seed: &MaskSeed, first_block: u64, out: &mut [u8]) {
    let block_len = kind.block_len();
    let whole = out.len() / block_len * block_len;
    let (head, tail) = out.split_at_mut(whole);
    let mut stream = Keystream::new(kind, seed);
    stream.fill_blocks(u128::from(first_block), head);
    if !tail.is_empty() {
        let mut last = [0u8; 64];
        let next = u128::from(first_block) + (whole / block_len) as u128;
        stream.fill_blocks(next, &mut last[..block_len]);
        tail.copy_from_slice(&last[..tail.len()]);
        last.zeroize();
    }
}

/// Word size in keystream bytes for a mask width.
fn word_bytes(bits: u32) -> Result<usize, CryptoError> {
    match bits {
        1..=8 => Ok(1),
        9..=16 => Ok(2),
        17..=32 => Ok(4),
        33..=64 => Ok(8),
        _ => Err(CryptoError::InvalidMaskWidth { bits }),
    }
}

/// 2^bits − 1 for bits in 1..=64.
fn low_bits_mask(bits: u32) -> u64 {
    u64::MAX >> (64 - bits)
}

/// One seed's keystream with its key schedule expanded. Both ciphers zeroize their state on
/// drop (`zeroize` features of `aes` and `chacha20`).
enum Keystream {
    Aes { cipher: Aes128Enc, counter0: u128 },
    ChaCha(ChaCha20LegacyCore),
}

impl Drop for Keystream {
    fn drop(&mut self) {
        if let Keystream::Aes { counter0, .. } = self {
            counter0.zeroize();
        }
    }
}

impl Keystream {
    fn new(kind: PrgKind, seed: &MaskSeed) -> Self {
        match kind {
            PrgKind::Aes128Ctr => {
                let key: &[u8; 16] = seed.0.first_chunk().expect("seed is 32 bytes");
                let iv: &[u8; 16] = seed.0.last_chunk().expect("seed is 32 bytes");
                Keystream::Aes {
                    cipher: Aes128Enc::new(Array::cast_from_core(key)),
                    counter0: u128::from_be_bytes(*iv),
                }
            }
            PrgKind::ChaCha20 => {
                Keystream::ChaCha(ChaCha20LegacyCore::new(Array::cast_from_core(&seed.0), &Array::default()))
            }
        }
    }

    fn block_len(&self) -> usize {
        match self {
            Keystream::Aes { .. } => 16,
            Keystream::ChaCha(_) => 64,
        }
    }

    /// Writes keystream blocks `first_block, first_block + 1, …` into `out`, a whole number of
    /// blocks.
    fn fill_blocks(&mut self, first_block: u128, out: &mut [u8]) {
        match self {
            Keystream::Aes { .. } => {
                // Through the L1 buffer of `stream`: under run-time VAES dispatch this ran
                // 1.3× faster than encrypting counter blocks in place in `out`.
                let mut rest = &mut out[..];
                self.stream(first_block, rest.len() / 16, |chunk| {
                    let (head, tail) = std::mem::take(&mut rest).split_at_mut(chunk.len());
                    head.copy_from_slice(chunk);
                    rest = tail;
                });
            }
            Keystream::ChaCha(core) => {
                let (blocks, rest) = out.as_chunks_mut::<64>();
                debug_assert!(rest.is_empty());
                // The counter is 64 bits; the block index is reduced mod 2^64 by definition.
                core.set_block_pos(first_block as u64);
                core.write_keystream_blocks(Array::cast_slice_from_core_mut(blocks));
            }
        }
    }

    /// Generates keystream blocks `first_block .. first_block + nblocks` and hands them to
    /// `sink` in order, about [`STREAM_BYTES`] at a time from a buffer that stays in L1. The
    /// sink runs inside the backend call; where it is inlined there (VAES, AVX2 ChaCha20) its
    /// loops are compiled with the backend's target features.
    fn stream(&mut self, first_block: u128, nblocks: usize, sink: impl FnMut(&[u8])) {
        match self {
            Keystream::Aes { cipher, counter0 } => {
                cipher.encrypt_with_backend(CtrStream { counter: counter0.wrapping_add(first_block), nblocks, sink })
            }
            Keystream::ChaCha(core) => {
                core.set_block_pos(first_block as u64); // mod 2^64, as in `fill_blocks`
                core.process_with_backend(ChaChaStream { nblocks, sink });
            }
        }
    }
}

/// Keystream bytes handed to a sink per call (1 KiB: 64 AES or 16 ChaCha blocks). Measured
/// with `prg_speed` (51 seeds × 10⁶ words): 4 KiB pieces 28 ms, 2 KiB 24–27 ms, 1 KiB
/// 23–25 ms, 512 B 43–47 ms (a VAES batch is 30 blocks: 32-block pieces waste a batch).
const STREAM_BYTES: usize = 1024;

/// AES-CTR into a small buffer handed to a sink (see [`Keystream::stream`]).
struct CtrStream<F> {
    counter: u128,
    nblocks: usize,
    sink: F,
}

impl<F> BlockSizeUser for CtrStream<F> {
    type BlockSize = U16;
}

impl<F: FnMut(&[u8])> BlockCipherEncClosure for CtrStream<F> {
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(mut self, backend: &B) {
        let mut counter = self.counter;
        let mut buffer = [aes::Block::default(); STREAM_BYTES / 16];
        let par = B::ParBlocksSize::USIZE;
        let mut remaining = self.nblocks;
        while remaining > 0 {
            // Whole batches only: as many as fit in the buffer, or as needed.
            let n = remaining.min(buffer.len() / par * par);
            let (batches, _) = ParBlocks::<B>::slice_as_chunks_mut(&mut buffer[..n.div_ceil(par) * par]);
            for batch in batches {
                write_counters(batch, &mut counter);
                backend.encrypt_par_blocks(batch.into());
            }
            (self.sink)(Array::slice_as_flattened(&buffer[..n]));
            remaining -= n;
        }
        Array::slice_as_flattened_mut(&mut buffer).zeroize();
    }
}

/// Writes big-endian counter blocks `next, next + 1, …` (mod 2^128) into `batch` and advances
/// `next` past them. (A vectorised variant for the wide VAES batches measured no faster.)
#[inline(always)]
fn write_counters(batch: &mut [aes::Block], next: &mut u128) {
    for (j, block) in batch.iter_mut().enumerate() {
        *block = next.wrapping_add(j as u128).to_be_bytes().into();
    }
    *next = next.wrapping_add(batch.len() as u128);
}

/// ChaCha20 into a small buffer handed to a sink, in batches of the backend's parallel width
/// (4 blocks for AVX2).
struct ChaChaStream<F> {
    nblocks: usize,
    sink: F,
}

impl<F> BlockSizeUser for ChaChaStream<F> {
    type BlockSize = U64;
}

impl<F: FnMut(&[u8])> StreamCipherClosure for ChaChaStream<F> {
    #[inline(always)]
    fn call<B: StreamCipherBackend<BlockSize = U64>>(mut self, backend: &mut B) {
        let mut buffer = [Array::<u8, U64>::default(); STREAM_BYTES / 64];
        let par = B::ParBlocksSize::USIZE;
        let mut remaining = self.nblocks;
        while remaining > 0 {
            let n = remaining.min(buffer.len() / par * par);
            let (batches, _) = ParBlocks::<B>::slice_as_chunks_mut(&mut buffer[..n.div_ceil(par) * par]);
            for batch in batches {
                backend.gen_par_ks_blocks(batch);
            }
            (self.sink)(Array::slice_as_flattened(&buffer[..n]));
            remaining -= n;
        }
        Array::slice_as_flattened_mut(&mut buffer).zeroize();
    }
}

/// An accumulator lane: an unsigned integer of the word width.
trait Lane: Copy + Default + Zeroize {
    /// Word size L in bytes.
    const BYTES: usize;
    /// `acc[i] ±= word i of ks` (wrapping), for `ks.len() == acc.len() · L`.
    fn accumulate(acc: &mut [Self], ks: &[u8], sign: MaskSign);
    /// Zero-extends to u64.
    fn widen(self) -> u64;
}

macro_rules! impl_lane {
    ($t:ty, $n:literal) => {
        impl Lane for $t {
            const BYTES: usize = $n;

            #[inline(always)]
            fn accumulate(acc: &mut [Self], ks: &[u8], sign: MaskSign) {
                let (words, _) = ks.as_chunks::<$n>();
                match sign {
                    MaskSign::Add => {
                        for (a, w) in acc.iter_mut().zip(words) {
                            *a = a.wrapping_add(<$t>::from_le_bytes(*w));
                        }
                    }
                    MaskSign::Subtract => {
                        for (a, w) in acc.iter_mut().zip(words) {
                            *a = a.wrapping_sub(<$t>::from_le_bytes(*w));
                        }
                    }
                }
            }

            #[inline(always)]
            fn widen(self) -> u64 {
                u64::from(self)
            }
        }
    };
}

impl_lane!(u8, 1);
impl_lane!(u16, 2);
impl_lane!(u32, 4);
impl_lane!(u64, 8);

/// The fused, chunk-major masking loop for word type `T`.
fn mask_chunks<T: Lane>(streams: &mut [(Keystream, MaskSign)], buf: &mut [u64], first_word: u64, mask: u64) {
    let chunk_words = CHUNK_BYTES / T::BYTES;
    let mut acc = vec![T::default(); chunk_words];
    let mut word = u128::from(first_word);
    let mut rest = buf;
    while !rest.is_empty() {
        // Chunks end on multiples of `chunk_words`, so that every chunk after the first starts
        // block-aligned and spans a whole number of parallel batches.
        let to_boundary = chunk_words - (word % chunk_words as u128) as usize;
        let (chunk, tail) = rest.split_at_mut(to_boundary.min(rest.len()));
        let acc = &mut acc[..chunk.len()];
        let start = word * T::BYTES as u128;
        for (stream, sign) in streams.iter_mut() {
            let block_len = stream.block_len();
            let mut skip = (start % block_len as u128) as usize;
            let nblocks = (skip + acc.len() * T::BYTES).div_ceil(block_len);
            let mut pending = &mut acc[..];
            stream.stream(start / block_len as u128, nblocks, |ks| {
                let ks = &ks[skip..];
                skip = 0;
                let n = (ks.len() / T::BYTES).min(pending.len());
                let (now, later) = core::mem::take(&mut pending).split_at_mut(n);
                T::accumulate(now, &ks[..n * T::BYTES], *sign);
                pending = later;
            });
        }
        // Widen into the vector and clear the accumulator for the next chunk in one pass.
        for (b, a) in chunk.iter_mut().zip(acc.iter_mut()) {
            *b = b.wrapping_add(core::mem::take(a).widen()) & mask;
        }
        word += chunk.len() as u128;
        rest = tail;
    }
}

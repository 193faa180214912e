//! Randomized Hadamard rotation (Kairouz, Liu, Steinke, ICML 2021, §4).
//!
//! The client maps `x ∈ R^d` to `y = H D x / √m`, where `m` is `d` rounded up to a power
//! of two (zero padding), `D` is a diagonal of random signs and `H` the `m × m`
//! Walsh–Hadamard matrix. `H D / √m` is orthogonal, so L2 norms are preserved, and the
//! rotation spreads an update's mass evenly over the coordinates, so each coordinate of
//! the rotated vector is roughly sub-Gaussian with variance `‖x‖²/m` and modular
//! wrap-around stays rare. The server inverts with `x = D H y / √m` (`H` is symmetric and
//! `H H = m I`), then drops the padding. Both directions run in place in `O(m log m)`.
//!
//! The signs are public and shared: sign `i` is bit `i mod 64` of the `⌊i/64⌋`-th 64-bit
//! word (little-endian) of the ChaCha20 keystream keyed with the seed, 64-bit block
//! counter from 0 and stream id 0 (`chacha20::ChaCha20Rng::from_seed(seed)`; for the
//! first 2^32 blocks this equals RFC 8439 ChaCha20 with a zero nonce); bit 1 means −1.

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::error::{DpError, invalid};

/// Largest supported padded dimension (2^32 coordinates).
pub const MAX_PADDED_DIM: usize = 1 << 32;

/// The transform runs its first levels block by block: 2^15 f64 (256 KiB) stay in L2.
const BLOCK: usize = 1 << 15;

/// Coordinates per parallel task in the passes over the whole vector (a multiple of 64,
/// so each task starts on a sign word).
const PIECE: usize = 1 << 13;

/// The public rotation `x ↦ H D x / √m` for one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RandomizedHadamard {
    dim: usize,
    padded_dim: usize,
    /// Sign bits of `D`, one per padded coordinate.
    signs: Vec<u64>,
}

/// The power of two a dimension is padded to (`dim` itself if it is one).
pub fn padded_dim(dim: usize) -> usize {
    dim.next_power_of_two()
}

impl RandomizedHadamard {
    /// Builds the rotation for vectors of length `dim` from the round's public seed.
    /// Rejects `dim = 0` and dimensions whose padding exceeds [`MAX_PADDED_DIM`].
    pub fn new(seed: [u8; 32], dim: usize) -> Result<Self, DpError> {
        if dim == 0 || dim > MAX_PADDED_DIM {
            return Err(invalid("dim", format!("must be in 1..=2^32, got {dim}")));
        }
        let padded_dim = padded_dim(dim);
        let mut rng = ChaCha20Rng::from_seed(seed);
        let signs = (0..padded_dim.div_ceil(64)).map(|_| rng.next_u64()).collect();
        Ok(Self { dim, padded_dim, signs })
    }

    /// Length of the vectors the rotation accepts.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Length of the rotated vectors (next power of two ≥ `dim`).
    pub fn padded_dim(&self) -> usize {
        self.padded_dim
    }

    fn apply_signs(&self, buf: &mut [f64]) {
        buf.par_chunks_mut(PIECE).enumerate().for_each(|(piece, values)| {
            let words = &self.signs[piece * PIECE / 64..];
            for (i, v) in values.iter_mut().enumerate() {
                // Flip the IEEE sign bit where the sign bit of D is 1 (branch-free).
                let flip = (words[i / 64] >> (i % 64)) & 1;
                *v = f64::from_bits(v.to_bits() ^ (flip << 63));
            }
        });
    }

    fn scaled_hadamard(buf: &mut [f64]) {
        fwht(buf);
        let s = Self::normalization(buf.len());
        buf.par_chunks_mut(PIECE).for_each(|piece| piece.iter_mut().for_each(|v| *v *= s));
    }

    /// The factor `1/√m` that makes `H D` orthogonal, for vectors of length `m`.
    pub fn normalization(m: usize) -> f64 {
        1.0 / (m as f64).sqrt()
    }

    /// `H D buf` in place, *without* the factor `1/√m` (length `padded_dim`, padding
    /// already zero): for callers that fold [`normalization`](Self::normalization) into a
    /// later scaling. The result times `1/√m` is [`forward_in_place`](Self::forward_in_place)'s.
    pub fn forward_unnormalized_in_place(&self, buf: &mut [f64]) -> Result<(), DpError> {
        self.check_len(buf.len(), self.padded_dim)?;
        self.apply_signs(buf);
        fwht(buf);
        Ok(())
    }

    /// Rotates `buf` (length `padded_dim`, padding already zero) in place.
    pub fn forward_in_place(&self, buf: &mut [f64]) -> Result<(), DpError> {
        self.check_len(buf.len(), self.padded_dim)?;
        self.apply_signs(buf);
        Self::scaled_hadamard(buf);
        Ok(())
    }

    /// Inverts [`forward_in_place`](Self::forward_in_place) in place (length `padded_dim`).
    pub fn inverse_in_place(&self, buf: &mut [f64]) -> Result<(), DpError> {
        self.check_len(buf.len(), self.padded_dim)?;
        Self::scaled_hadamard(buf);
        self.apply_signs(buf);
        Ok(())
    }

    /// Rotates `x` (length `dim`) and returns a vector of length `padded_dim`.
    pub fn forward(&self, x: &[f64]) -> Result<Vec<f64>, DpError> {
        self.check_len(x.len(), self.dim)?;
        let mut buf = vec![0.0; self.padded_dim];
        buf[..x.len()].copy_from_slice(x);
        self.forward_in_place(&mut buf)?;
        Ok(buf)
    }

    /// Inverts the rotation of `y` (length `padded_dim`) and drops the padding, returning
    /// a vector of length `dim`.
    pub fn inverse(&self, y: &[f64]) -> Result<Vec<f64>, DpError> {
        let mut buf = y.to_vec();
        self.inverse_in_place(&mut buf)?;
        buf.truncate(self.dim);
        Ok(buf)
    }

    fn check_len(&self, actual: usize, expected: usize) -> Result<(), DpError> {
        if actual == expected { Ok(()) } else { Err(DpError::LengthMismatch { expected, actual }) }
    }
}

/// Unnormalized fast Walsh–Hadamard transform in place; `buf.len()` must be a power of
/// two (callers guarantee it). The levels below [`BLOCK`] run block by block (in cache,
/// blocks in parallel); the others two levels per pass (radix 4), split into pieces
/// across threads. The butterflies, and so the result, are the same whatever the thread
/// count.
fn fwht(buf: &mut [f64]) {
    let n = buf.len();
    let block = n.min(BLOCK);
    buf.par_chunks_mut(block).for_each(fwht_levels_below_block);
    let mut h = block;
    while h < n {
        if 4 * h <= n {
            buf.par_chunks_mut(4 * h).for_each(|group| {
                let (left, right) = group.split_at_mut(2 * h);
                let (q0, q1) = left.split_at_mut(h);
                let (q2, q3) = right.split_at_mut(h);
                q0.par_chunks_mut(PIECE)
                    .zip(q1.par_chunks_mut(PIECE))
                    .zip(q2.par_chunks_mut(PIECE).zip(q3.par_chunks_mut(PIECE)))
                    .for_each(|((a, b), (c, d))| radix4(a, b, c, d));
            });
            h *= 4;
        } else {
            buf.par_chunks_mut(2 * h).for_each(|group| {
                let (lo, hi) = group.split_at_mut(h);
                lo.par_chunks_mut(PIECE).zip(hi.par_chunks_mut(PIECE)).for_each(|(a, b)| radix2(a, b));
            });
            h *= 2;
        }
    }
}

/// All levels `h < buf.len()` of the transform of one block.
fn fwht_levels_below_block(buf: &mut [f64]) {
    let n = buf.len();
    let mut h = 1;
    while h < n {
        for block in buf.chunks_exact_mut(2 * h) {
            let (lo, hi) = block.split_at_mut(h);
            radix2(lo, hi);
        }
        h *= 2;
    }
}

/// One level: `(a, b) ← (a + b, a − b)`.
fn radix2(lo: &mut [f64], hi: &mut [f64]) {
    for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
        let (x, y) = (*a, *b);
        *a = x + y;
        *b = x - y;
    }
}

/// Two levels (`h` then `2h`) on the four quarters of a group of `4h`: the same sums, in
/// the same order, as two [`radix2`] passes.
fn radix4(q0: &mut [f64], q1: &mut [f64], q2: &mut [f64], q3: &mut [f64]) {
    for (((a, b), c), d) in q0.iter_mut().zip(q1.iter_mut()).zip(q2.iter_mut()).zip(q3.iter_mut()) {
        let (s0, d0) = (*a + *b, *a - *b);
        let (s1, d1) = (*c + *d, *c - *d);
        *a = s0 + s1;
        *b = d0 + d1;
        *c = s0 - s1;
        *d = d0 - d1;
    }
}

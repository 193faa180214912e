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

use crate::error::{DpError, invalid};

/// Largest supported padded dimension (2^32 coordinates).
pub const MAX_PADDED_DIM: usize = 1 << 32;

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
        for (i, v) in buf.iter_mut().enumerate() {
            if (self.signs[i / 64] >> (i % 64)) & 1 == 1 {
                *v = -*v;
            }
        }
    }

    fn scaled_hadamard(buf: &mut [f64]) {
        fwht(buf);
        let s = 1.0 / (buf.len() as f64).sqrt();
        buf.iter_mut().for_each(|v| *v *= s);
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
/// two (callers guarantee it).
fn fwht(buf: &mut [f64]) {
    let n = buf.len();
    let mut h = 1;
    while h < n {
        for block in buf.chunks_exact_mut(2 * h) {
            let (lo, hi) = block.split_at_mut(h);
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (x, y) = (*a, *b);
                *a = x + y;
                *b = x - y;
            }
        }
        h *= 2;
    }
}

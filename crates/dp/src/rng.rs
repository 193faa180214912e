//! The noise RNG: ChaCha20 seeded from the operating system.
//!
//! DP noise must come from a cryptographically secure generator that nobody can
//! predict or replay: a generator seeded from a timestamp or a fixed value lets an
//! observer subtract the noise (TFF's samplers seed from `tf.timestamp()`; several FL
//! projects seed with `np.random`). [`NoiseRng`] is ChaCha20 (zeroized on drop) keyed
//! with 32 bytes from the OS. A seeded constructor exists only under `cfg(test)` or the
//! `insecure-seeded-rng` feature, for reproducible tests, simulations and benchmarks.
//! Never derive the noise seed from SecAgg mask seeds, and never log it.

/// Whether this build holds [`NoiseRng::insecure_from_seed`] (feature
/// `insecure-seeded-rng`, for tests and benchmarks; shipped binaries must not: `.ci/run`
/// checks it, and the `privagg` binary warns if it finds it on).
pub const INSECURE_SEEDED_RNG: bool = cfg!(feature = "insecure-seeded-rng");

use std::convert::Infallible;

use chacha20::ChaCha20Rng;
use rand::rngs::SysRng;
use rand_core::{CryptoRng, SeedableRng, TryCryptoRng, TryRng};
use zeroize::{Zeroize, Zeroizing};

use crate::error::DpError;

/// Cryptographically secure RNG for noise and rounding on the privacy path.
pub struct NoiseRng(ChaCha20Rng);

impl NoiseRng {
    /// A fresh generator keyed with 32 bytes from the operating system.
    /// Fails with [`DpError::Rng`] if the OS source is unavailable.
    pub fn from_os() -> Result<Self, DpError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        SysRng.try_fill_bytes(seed.as_mut()).map_err(|e| DpError::Rng(e.to_string()))?;
        Ok(Self(ChaCha20Rng::from_seed(*seed)))
    }

    /// An independent generator keyed with 32 bytes of this one's output (for work run
    /// elsewhere, such as encoding on another thread). It is as unpredictable as its
    /// parent.
    pub fn fork(&mut self) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        let Ok(()) = self.0.try_fill_bytes(seed.as_mut());
        Self(ChaCha20Rng::from_seed(*seed))
    }

    /// A deterministic generator from `seed`. **Not private**: anyone who knows the seed
    /// can remove the noise. Only for tests, simulations and benchmarks.
    #[cfg(any(test, feature = "insecure-seeded-rng"))]
    pub fn insecure_from_seed(seed: [u8; 32]) -> Self {
        Self(ChaCha20Rng::from_seed(seed))
    }
}

impl std::fmt::Debug for NoiseRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoiseRng { .. }")
    }
}

impl TryRng for NoiseRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.0.try_next_u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.0.try_next_u64()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.try_fill_bytes(dst)
    }
}

impl TryCryptoRng for NoiseRng {}

/// Random words generated in bulk (64 at a time) from an RNG, and a reservoir for
/// handing out a few bits at a time. Every bit is used once; the buffer is zeroized on
/// drop.
pub(crate) struct BitSource<'a, R: ?Sized> {
    rng: &'a mut R,
    words: [u64; 64],
    next: usize,
    reservoir: u64,
    available: u32,
    /// Whether words come from the 64-word buffer (else straight from `rng`).
    bulk: bool,
}

impl<'a, R: CryptoRng + ?Sized> BitSource<'a, R> {
    pub(crate) fn new(rng: &'a mut R) -> Self {
        Self { rng, words: [0; 64], next: 64, reservoir: 0, available: 0, bulk: true }
    }

    /// A source that asks `rng` for one word at a time: for single draws, where filling
    /// a 512-byte buffer would waste most of it.
    pub(crate) fn unbuffered(rng: &'a mut R) -> Self {
        Self { rng, words: [0; 64], next: 64, reservoir: 0, available: 0, bulk: false }
    }

    /// The next 64 fresh bits.
    pub(crate) fn word(&mut self) -> u64 {
        if !self.bulk {
            return self.rng.next_u64();
        }
        if self.next == self.words.len() {
            let mut bytes = [0u8; 512];
            self.rng.fill_bytes(&mut bytes);
            for (w, chunk) in self.words.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut le = [0u8; 8];
                le.copy_from_slice(chunk);
                *w = u64::from_le_bytes(le);
            }
            bytes.zeroize();
            self.next = 0;
        }
        let w = self.words[self.next];
        self.next += 1;
        w
    }

    /// `count ≤ 32` fresh bits as an integer in `[0, 2^count)`.
    pub(crate) fn take(&mut self, count: u32) -> u64 {
        if count == 0 {
            return 0;
        }
        if self.available < count {
            self.reservoir = self.word();
            self.available = 64;
        }
        let v = self.reservoir & ((1u64 << count) - 1);
        self.reservoir >>= count;
        self.available -= count;
        v
    }
}

impl<R: ?Sized> Drop for BitSource<'_, R> {
    fn drop(&mut self) {
        self.words.zeroize();
        self.reservoir.zeroize();
    }
}

impl<R: CryptoRng + ?Sized> TryRng for BitSource<'_, R> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.take(32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.word())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let w = self.word().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
        Ok(())
    }
}

impl<R: CryptoRng + ?Sized> TryCryptoRng for BitSource<'_, R> {}

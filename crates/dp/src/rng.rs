//! The noise RNG: ChaCha20 seeded from the operating system.
//!
//! DP noise must come from a cryptographically secure generator that nobody can
//! predict or replay: a generator seeded from a timestamp or a fixed value lets an
//! observer subtract the noise (TFF's samplers seed from `tf.timestamp()`; several FL
//! projects seed with `np.random`). [`NoiseRng`] is ChaCha20 (zeroized on drop) keyed
//! with 32 bytes from the OS. A seeded constructor exists only under `cfg(test)` or the
//! `insecure-seeded-rng` feature, for reproducible tests, simulations and benchmarks.
//! Never derive the noise seed from SecAgg mask seeds, and never log it.

use std::convert::Infallible;

use chacha20::ChaCha20Rng;
use rand::rngs::SysRng;
use rand_core::{SeedableRng, TryCryptoRng, TryRng};
use zeroize::Zeroizing;

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

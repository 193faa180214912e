//! Integer noise for distributed DP, from exact samplers.
//!
//! Each client adds an integer noise share to its quantized update; the shares of the
//! survivors sum to the noise that protects everyone (Kairouz et al. 2021; Agarwal et
//! al. 2021). Two mechanisms: the discrete Gaussian (Canonne, Kamath, Steinke 2020) and
//! the symmetric Skellam. Both samplers use only uniform random integers and integer
//! arithmetic, on a CSPRNG ([`crate::rng::NoiseRng`]). The discrete Gaussian is drawn
//! from a table ([`BinnedGaussian`]: rejection from a binned envelope through an alias
//! table of integer weights, with transcendental thresholds compared exactly, in
//! big-integer arithmetic when 64 bits do not settle them); the Canonne–Kamath–Steinke
//! algorithm remains as [`DiscreteGaussian::sample_reference`] and for parameters the
//! table cannot hold. Same distribution, several times faster.
//!
//! **Why no floating point.** Mironov (CCS 2012) showed that textbook Laplace sampling
//! in floating point leaves holes in the set of reachable outputs that depend on the
//! true value, so a few releases identify it; Jin et al. (IEEE S&P 2022) repeated the
//! attack on Gaussian samplers (Box–Muller, polar) used in DP-SGD. Here nothing on the
//! privacy path after clipping is a float: the noise is an exact integer, added to an
//! integer vector whose norm bound is checked in integer arithmetic, and summed in
//! `Z_{2^b}`. The noise variance is a [`Ratio`], rounded *up* from the planner's f64.
//!
//! **Timing.** Rejection samplers take a data-independent but random amount of time.
//! [`crate::encoding::ClientEncoder`] draws the noise before it reads the update, but
//! with conditional rounding each failed rounding attempt (whose number depends on the
//! update) draws the same noise again: the encoding time can depend on the update. It
//! stays on the client; the server sees only the masked result.
//!
//! The continuous Gaussian in [`simulation`] is **not private** and exists only for
//! simulations that measure utility.

mod binned;
mod discrete_gaussian;
mod exact;
mod interval;
mod ratio;
pub mod simulation;
mod skellam;

use rand_core::{CryptoRng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use binned::{BinnedGaussian, BinnedTuning};
pub use discrete_gaussian::{DiscreteGaussian, sample_discrete_laplace};
pub use exact::{bernoulli_exp, bernoulli_exp_minus_one, bernoulli_ratio, uniform_below, uniform_below_u128};
pub use ratio::{MAX_DEN_BITS, Ratio};
pub use skellam::{Poisson, Skellam};

use crate::error::DpError;

/// Which integer noise the clients add, with each client's share parameter in the
/// integer domain. Serialized inside [`crate::encoding::EncodingParams`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mechanism", rename_all = "snake_case")]
pub enum NoiseSpec {
    /// No noise (DP off).
    None,
    /// Discrete Gaussian share `N_Z(0, variance)` per coordinate.
    DiscreteGaussian {
        /// The share's σ² parameter (integer domain).
        variance: Ratio,
    },
    /// Symmetric Skellam share with this variance per coordinate.
    Skellam {
        /// The share's variance (integer domain).
        variance: Ratio,
    },
}

/// Samples per independently keyed block in [`IntegerNoise::sample_vec`].
pub const PARALLEL_BLOCK: usize = 1 << 14;

/// A ready-to-use sampler for a [`NoiseSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntegerNoise {
    /// Always 0.
    None,
    /// Discrete Gaussian.
    DiscreteGaussian(DiscreteGaussian),
    /// Skellam.
    Skellam(Skellam),
}

impl IntegerNoise {
    /// Builds the sampler; rejects parameters the samplers cannot handle exactly.
    pub fn new(spec: NoiseSpec) -> Result<Self, DpError> {
        Ok(match spec {
            NoiseSpec::None => Self::None,
            NoiseSpec::DiscreteGaussian { variance } => Self::DiscreteGaussian(DiscreteGaussian::new(variance)?),
            NoiseSpec::Skellam { variance } => Self::Skellam(Skellam::new(variance)?),
        })
    }

    /// One sample.
    pub fn sample<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> Result<i64, DpError> {
        match self {
            Self::None => Ok(0),
            Self::DiscreteGaussian(s) => s.sample(rng),
            Self::Skellam(s) => s.sample(rng),
        }
    }

    /// Fills `out` with independent samples from `rng`, on this thread.
    pub fn fill<R: CryptoRng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) -> Result<(), DpError> {
        match self {
            Self::None => {
                out.fill(0);
                Ok(())
            }
            Self::DiscreteGaussian(s) => s.fill(rng, out),
            Self::Skellam(s) => out.iter_mut().try_for_each(|x| {
                *x = s.sample(rng)?;
                Ok(())
            }),
        }
    }

    /// `len` independent samples, drawn in parallel: each block of
    /// [`PARALLEL_BLOCK`] samples comes from its own ChaCha20 generator keyed with 32 fresh
    /// bytes of `rng`, so the blocks are independent and the result is a deterministic
    /// function of `rng`'s stream (whatever the thread count).
    pub fn sample_vec<R: CryptoRng + ?Sized>(&self, rng: &mut R, len: usize) -> Result<Vec<i64>, DpError> {
        let mut out = vec![0i64; len];
        if *self == Self::None {
            return Ok(out);
        }
        let seeds = Self::block_seeds(rng, len);
        self.fill_from_seeds(&seeds, &mut out)?;
        Ok(out)
    }

    /// The 32-byte keys, drawn in order from `rng`, of the [`PARALLEL_BLOCK`]-sample
    /// blocks of a `len`-sample vector (zeroized on drop).
    pub fn block_seeds<R: CryptoRng + ?Sized>(rng: &mut R, len: usize) -> Zeroizing<Vec<[u8; 32]>> {
        let mut seeds = Zeroizing::new(vec![[0u8; 32]; len.div_ceil(PARALLEL_BLOCK)]);
        seeds.iter_mut().for_each(|seed| rng.fill_bytes(seed));
        seeds
    }

    /// Fills `out` in parallel, block `i` of [`PARALLEL_BLOCK`] samples from ChaCha20 keyed
    /// with `seeds[i]` (see [`block_seeds`](Self::block_seeds)): the same seeds give the
    /// same samples, whatever the thread count. `seeds` must have a key per block.
    pub fn fill_from_seeds(&self, seeds: &[[u8; 32]], out: &mut [i64]) -> Result<(), DpError> {
        if seeds.len() < out.len().div_ceil(PARALLEL_BLOCK) {
            return Err(DpError::LengthMismatch { expected: out.len().div_ceil(PARALLEL_BLOCK), actual: seeds.len() });
        }
        out.par_chunks_mut(PARALLEL_BLOCK).zip(seeds).try_for_each(|(block, seed)| {
            let mut block_rng = chacha20::ChaCha20Rng::from_seed(*seed);
            self.fill(&mut block_rng, block)
        })
    }
}

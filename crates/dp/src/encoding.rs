//! The client encoding pipeline and its server-side inverse.
//!
//! Client ([`ClientEncoder::encode`]): draw the noise share, clip to L2 norm `C` (f64),
//! pad and rotate ([`crate::rotation`]), scale by `1/γ`, round (conditionally, with the
//! exact norm check), add the integer noise, reduce mod `2^b`. The output has
//! `padded_dim` words in `[0, 2^b)`, ready for SecAgg masking.
//!
//! Server ([`decode_sum`]): take the unmasked sum mod `2^b`, lift each word to
//! `[−2^{b−1}, 2^{b−1})`, multiply by `γ`, invert the rotation, drop the padding. The
//! result is the sum of the clients' clipped updates plus noise plus rounding error
//! (less than `γ·√d` in L2 per client), in model units; divide by the public
//! denominator of [`crate::fedavg`].
//!
//! With DP off ([`EncodingParams::without_dp`]) the same quantizer runs without noise
//! and with plain unbiased rounding; [`plan_without_dp`] picks `γ` so that `n` clients'
//! values cannot wrap.

use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{DpError, invalid};
use crate::noise::{IntegerNoise, NoiseSpec};
use crate::quantize::{MAX_SCALED, centered_lift, check_bits, modulus_mask};
use crate::rng::{BitSource, NoiseRng};
use crate::rotation::{RandomizedHadamard, padded_dim};

/// How the client bounds its update before quantizing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clipping {
    /// No clipping (DP off only); NaN/Inf are still rejected.
    None,
    /// Flat L2 clipping to this norm (model units, finite, > 0).
    L2(f64),
}

/// How scaled coordinates are rounded to integers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Unbiased randomized rounding, no norm check (DP off only).
    Unbiased,
    /// Conditional randomized rounding with the exact check `‖v‖₂² ≤ norm_bound_sq`.
    Conditional {
        /// The β the bound was computed with (recorded for accounting).
        beta: f64,
        /// `⌊Δ₂²⌋` in integer units.
        norm_bound_sq: u128,
        /// Retry cap before failing closed.
        max_attempts: u32,
    },
}

/// Everything a client needs to encode its update; the server sends it in the round
/// configuration and uses the same value to decode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncodingParams {
    /// Model dimension `d` (length of an update).
    pub dim: usize,
    /// Length of encoded vectors: `dim` rounded up to a power of two with rotation,
    /// `dim` without.
    pub padded_dim: usize,
    /// Public per-round rotation seed; `None` disables rotation (DP off only).
    pub rotation_seed: Option<[u8; 32]>,
    /// Lattice step `γ` (model units per integer unit), finite and > 0.
    pub gamma: f64,
    /// Bit width `b ∈ 1..=64` of the modular sum.
    pub bits: u32,
    /// Clipping rule.
    pub clipping: Clipping,
    /// Rounding rule.
    pub rounding: Rounding,
    /// Noise each client adds.
    pub noise: NoiseSpec,
}

impl EncodingParams {
    /// Parameters for the DP-off mode: unbiased rounding to the grid `γ`, no noise,
    /// optional rotation and clipping. Validated.
    pub fn without_dp(
        dim: usize,
        gamma: f64,
        bits: u32,
        clipping: Clipping,
        rotation_seed: Option<[u8; 32]>,
    ) -> Result<Self, DpError> {
        let params = Self {
            dim,
            padded_dim: if rotation_seed.is_some() { padded_dim(dim) } else { dim },
            rotation_seed,
            gamma,
            bits,
            clipping,
            rounding: Rounding::Unbiased,
            noise: NoiseSpec::None,
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks the invariants: `dim ≥ 1`; `padded_dim` matches the rotation choice;
    /// `γ` finite and positive; `b ∈ 1..=64`; a positive finite clip; `β ∈ [0, 1)` and
    /// at least one attempt; and, whenever noise is on, L2 clipping and conditional
    /// rounding (the norm check is what bounds the sensitivity) and a sampler-compatible
    /// variance.
    pub fn validate(&self) -> Result<(), DpError> {
        if self.dim == 0 {
            return Err(invalid("dim", "must be ≥ 1"));
        }
        let expected = if self.rotation_seed.is_some() { padded_dim(self.dim) } else { self.dim };
        if self.padded_dim != expected {
            return Err(invalid("padded_dim", format!("must be {expected} for dim {}", self.dim)));
        }
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            return Err(invalid("gamma", format!("must be finite and > 0, got {}", self.gamma)));
        }
        check_bits(self.bits)?;
        if let Clipping::L2(c) = self.clipping
            && !(c.is_finite() && c > 0.0)
        {
            return Err(invalid("clip", format!("must be finite and > 0, got {c}")));
        }
        if let Rounding::Conditional { beta, max_attempts, .. } = self.rounding {
            if !(0.0..1.0).contains(&beta) {
                return Err(invalid("beta", format!("must be in [0, 1), got {beta}")));
            }
            if max_attempts == 0 {
                return Err(invalid("max_attempts", "must be ≥ 1"));
            }
        }
        if self.noise != NoiseSpec::None {
            if !matches!(self.clipping, Clipping::L2(_)) {
                return Err(invalid("clipping", "noise requires L2 clipping"));
            }
            if !matches!(self.rounding, Rounding::Conditional { .. }) {
                return Err(invalid("rounding", "noise requires the conditional norm check"));
            }
            IntegerNoise::new(self.noise)?;
        }
        Ok(())
    }

    fn rotation(&self) -> Result<Option<RandomizedHadamard>, DpError> {
        self.rotation_seed.map(|seed| RandomizedHadamard::new(seed, self.dim)).transpose()
    }
}

/// One client's encoded vector: `padded_dim` words in `[0, 2^b)`. Zeroized on drop; its
/// `Debug` output shows only the length.
#[derive(Clone, PartialEq, Zeroize, ZeroizeOnDrop)]
pub struct EncodedUpdate {
    /// The words to mask and send.
    pub words: Vec<u64>,
    /// L2 norm of the update before clipping (model units).
    pub pre_clip_norm: f64,
}

impl std::fmt::Debug for EncodedUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedUpdate")
            .field("words", &format_args!("[{} words redacted]", self.words.len()))
            .finish_non_exhaustive()
    }
}

/// Encodes updates for one round's [`EncodingParams`].
#[derive(Clone, Debug)]
pub struct ClientEncoder {
    params: EncodingParams,
    rotation: Option<RandomizedHadamard>,
    noise: IntegerNoise,
}

impl ClientEncoder {
    /// Validates `params` and prepares the rotation and the noise sampler.
    pub fn new(params: EncodingParams) -> Result<Self, DpError> {
        params.validate()?;
        Ok(Self { rotation: params.rotation()?, noise: IntegerNoise::new(params.noise)?, params })
    }

    /// The parameters this encoder uses.
    pub fn params(&self) -> &EncodingParams {
        &self.params
    }

    /// Encodes `update` (length `dim`): noise share first (so the time spent sampling
    /// does not depend on the update), then clip → rotate → scale → round → add noise →
    /// mod `2^b`. Errors: wrong length, NaN/Inf, scaled values beyond ±2^62,
    /// conditional-rounding exhaustion, sampler overflow.
    ///
    /// Runs on rayon's pool. The randomness of each parallel piece (noise blocks,
    /// rounding chunks) comes from its own ChaCha20 generator keyed with 32 bytes drawn
    /// in order from `rng`, so the output is a function of `rng`'s stream alone, not of
    /// the thread count or the scheduling.
    pub fn encode(&self, update: &[f32], rng: &mut NoiseRng) -> Result<EncodedUpdate, DpError> {
        let p = &self.params;
        if update.len() != p.dim {
            return Err(DpError::LengthMismatch { expected: p.dim, actual: update.len() });
        }
        // The noise goes into the buffer that becomes the output: each rounding attempt
        // turns noise into words in place, and a failed attempt (rare) draws the same
        // noise again from the same block keys.
        let noise_seeds = IntegerNoise::block_seeds(rng, p.padded_dim);
        let mut words = Zeroizing::new(vec![0i64; p.padded_dim]);
        self.noise.fill_from_seeds(&noise_seeds, &mut words)?;

        // One pass: the first non-finite index (per chunk, the lowest wins) and Σ x².
        // f32 squares cannot overflow or underflow in f64, so the plain sum is safe. The
        // chunk sums are added in order, so the norm (and the clip) does not depend on
        // how rayon split the work.
        let chunks: Vec<(Option<usize>, f64)> = update
            .par_chunks(CHUNK)
            .enumerate()
            .map(|(chunk, values)| {
                let bad = values.iter().position(|v| !v.is_finite()).map(|i| chunk * CHUNK + i);
                (bad, sum_of_squares(values))
            })
            .collect();
        let first_bad = chunks.iter().find_map(|c| c.0);
        let sum_sq: f64 = chunks.iter().map(|c| c.1).sum();
        if let Some(index) = first_bad {
            return Err(DpError::NonFinite { index });
        }
        let pre_clip_norm = sum_sq.sqrt();
        // The float clip is approximate; the exact bound is the integer norm check below.
        let clip_factor = match p.clipping {
            Clipping::L2(c) if pre_clip_norm > c => c / pre_clip_norm,
            _ => 1.0,
        };
        let mut x = Zeroizing::new(vec![0.0f64; p.padded_dim]);
        x[..p.dim].par_chunks_mut(CHUNK).zip(update.par_chunks(CHUNK)).for_each(|(dst, src)| {
            dst.iter_mut().zip(src).for_each(|(d, &s)| *d = f64::from(s) * clip_factor);
        });
        // Rotate without the 1/√m, which joins 1/γ in the rounding pass.
        let to_lattice = match &self.rotation {
            Some(rotation) => {
                rotation.forward_unnormalized_in_place(&mut x)?;
                RandomizedHadamard::normalization(p.padded_dim) / p.gamma
            }
            None => 1.0 / p.gamma,
        };
        match p.rounding {
            Rounding::Unbiased => {
                round_add_reduce(&x, to_lattice, &mut words, p.bits, rng)?;
            }
            Rounding::Conditional { norm_bound_sq, max_attempts, .. } => {
                let mut attempt = 0;
                while round_add_reduce(&x, to_lattice, &mut words, p.bits, rng)? > norm_bound_sq {
                    attempt += 1;
                    if attempt >= max_attempts {
                        return Err(DpError::RoundingRetriesExhausted { attempts: max_attempts });
                    }
                    self.noise.fill_from_seeds(&noise_seeds, &mut words)?;
                }
            }
        }
        // Same size and alignment: the allocation is reused, not copied.
        let words = std::mem::take(&mut *words).into_iter().map(|w| w as u64).collect();
        Ok(EncodedUpdate { words, pre_clip_norm })
    }
}

/// Coordinates per parallel piece of the encoder (one rounding generator each).
const CHUNK: usize = 1 << 14;

/// Whether `u < frac` for a 53-bit uniform `u` in `[0, 1)` (what `rand`'s `f64` draw is),
/// reading its top 8 bits first: with `t = ⌊256·frac⌋`, they settle it unless they equal
/// `t` (once in 256); then the other 45 bits `r` decide `r < (256·frac − t)·2^45`. All
/// of it is exact in f64 (power-of-two scalings of a 53-bit value), so this is the same
/// distribution as a full draw, with ≈ 8 bits.
fn round_up<R: rand_core::CryptoRng + ?Sized>(bits: &mut BitSource<'_, R>, frac: f64) -> bool {
    let scaled = frac * 256.0;
    // scaled ∈ [0, 256): truncation is the floor (through i64: one instruction).
    let t = scaled as i64 as u64;
    let top = bits.take(8);
    // The tie first: the common case is one predictable branch and a branch-free compare.
    if top == t {
        return ((bits.word() >> 19) as f64) < (scaled - t as f64) * 35_184_372_088_832.0;
    }
    top < t
}

fn sum_of_squares(values: &[f32]) -> f64 {
    values.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}

/// One rounding attempt, fused with the rest of the encoding: each coordinate is scaled
/// (`x·to_lattice`, checked within ±[`MAX_SCALED`]), rounded up with probability equal
/// to its fractional part (53-bit uniform, as [`crate::quantize::randomized_round`]),
/// added to the noise held in `words`, and the sum reduced mod `2^bits` in place.
/// Returns the exact squared norm `Σ vᵢ²` of the rounded vector (before noise,
/// saturating). Errors name the lowest bad index.
fn round_add_reduce(
    x: &[f64],
    to_lattice: f64,
    words: &mut [i64],
    bits: u32,
    rng: &mut NoiseRng,
) -> Result<u128, DpError> {
    check_bits(bits)?;
    let mask = modulus_mask(bits);
    let mut seeds = Zeroizing::new(vec![[0u8; 32]; x.len().div_ceil(CHUNK)]);
    seeds.iter_mut().for_each(|seed| rng.fill_bytes(seed));
    let norms = words
        .par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .zip(seeds.par_iter())
        .enumerate()
        .map(|(chunk, ((out, xs), seed))| {
            let mut chunk_rng = ChaCha20Rng::from_seed(*seed);
            let mut bits = BitSource::new(&mut chunk_rng);
            let mut norm_sq = 0u128;
            for (i, (w, &xi)) in out.iter_mut().zip(xs).enumerate() {
                let s = xi * to_lattice;
                if !(s.is_finite() && s.abs() <= MAX_SCALED) {
                    return Err(DpError::OutOfRange { index: chunk * CHUNK + i });
                }
                // |s| ≤ 2^62: truncation is exact, and one step down makes it the floor.
                let truncated = s as i64;
                let floor = truncated - i64::from((truncated as f64) > s);
                let v = floor + i64::from(round_up(&mut bits, s - floor as f64));
                let a = u128::from(v.unsigned_abs());
                norm_sq = norm_sq.saturating_add(a * a);
                let Some(sum) = v.checked_add(*w) else {
                    return Err(DpError::OutOfRange { index: chunk * CHUNK + i });
                };
                *w = ((sum as u64) & mask) as i64;
            }
            Ok(norm_sq)
        })
        .collect::<Vec<Result<u128, DpError>>>();
    let mut total = 0u128;
    for norm in norms {
        total = total.saturating_add(norm?);
    }
    Ok(total)
}

/// Decodes the modular sum of the clients' words (length `padded_dim`, each `< 2^b`)
/// into the sum of their updates in model units (length `dim`). Rejects invalid
/// parameters, a wrong length and out-of-range words.
pub fn decode_sum(sum_words: &[u64], params: &EncodingParams) -> Result<Vec<f64>, DpError> {
    params.validate()?;
    if sum_words.len() != params.padded_dim {
        return Err(DpError::LengthMismatch { expected: params.padded_dim, actual: sum_words.len() });
    }
    let mut y = sum_words
        .iter()
        .enumerate()
        .map(|(index, &w)| {
            centered_lift(w, params.bits).map(|v| v as f64 * params.gamma).map_err(|_| DpError::OutOfRange { index })
        })
        .collect::<Result<Vec<f64>, DpError>>()?;
    if let Some(rotation) = params.rotation()? {
        rotation.inverse_in_place(&mut y)?;
    }
    y.truncate(params.dim);
    Ok(y)
}

/// The server's release gate: with DP on, a sum of fewer than `n_min` clients carries
/// less noise than calibrated and must not be decoded or released
/// ([`DpError::TooFewSurvivors`]).
pub fn ensure_enough_survivors(survivors: usize, n_min: usize) -> Result<(), DpError> {
    if survivors < n_min {
        return Err(DpError::TooFewSurvivors { survivors, n_min });
    }
    Ok(())
}

/// Chooses `γ` for the DP-off mode so that the sum of `clients` rounded vectors whose
/// coordinates lie in `[−max_abs, max_abs]` (model units) always lifts back exactly from
/// `b` bits: each rounded coordinate is at most `max_abs/γ + 1` in magnitude, so
/// `γ = n·max_abs / (2^{b−1} − 2 − n)` keeps the sum inside `[−2^{b−1}, 2^{b−1})` with one
/// unit of slack for floating-point rounding. With L2 clipping to `C` (rotated or not)
/// every coordinate is at most `C`, so pass `max_abs = C`. Rejects `clients = 0`, a
/// `max_abs` that is not finite and positive, invalid `bits`, and widths with
/// `2^{b−1} ≤ n + 2` ([`DpError::TooFewBits`]).
pub fn plan_without_dp(clients: usize, max_abs: f64, bits: u32) -> Result<f64, DpError> {
    check_bits(bits)?;
    if clients == 0 {
        return Err(invalid("clients", "must be ≥ 1"));
    }
    if !(max_abs.is_finite() && max_abs > 0.0) {
        return Err(invalid("max_abs", format!("must be finite and > 0, got {max_abs}")));
    }
    let half = (1u128 << (bits - 1)) as f64;
    let capacity = half - 2.0 - clients as f64;
    if capacity < 1.0 {
        return Err(DpError::TooFewBits { bits, clients, k_stddevs: 0.0 });
    }
    Ok(clients as f64 * max_abs / capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_up_has_the_probability_of_its_fraction() {
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let mut bits = BitSource::new(&mut rng);
        let n = 200_000;
        // 0.3, a fraction on an 8-bit boundary (the tie path every time), and 1 − 2^−53.
        for frac in [0.3, 77.0 / 256.0 + 1e-9, 1.0 - f64::EPSILON / 2.0] {
            let ups = (0..n).filter(|_| round_up(&mut bits, frac)).count() as f64;
            let se = (frac * (1.0 - frac) / n as f64).sqrt().max(1.0 / n as f64);
            assert!((ups / n as f64 - frac).abs() <= 4.0 * se + 1.0 / n as f64, "{frac}: {ups}");
        }
        assert!((0..1000).all(|_| !round_up(&mut bits, 0.0)), "an integer never rounds up");
    }
}

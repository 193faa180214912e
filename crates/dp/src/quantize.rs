//! Scaling, randomized rounding, conditional rounding and modular reduction
//! (Kairouz, Liu, Steinke, ICML 2021, §4).
//!
//! A rotated, clipped vector `x` (model units) is mapped to the integer lattice by
//! `v = R(x/γ)`, where `R` rounds each coordinate up with probability equal to its
//! fractional part (unbiased: `E[v] = x/γ`, error `< 1` per coordinate).
//!
//! Rounding can grow the norm: with `c = C/γ` (the clip in integer units) and padded
//! dimension `d`, `‖v‖ ≤ c + √d` always. *Conditional* rounding resamples the whole
//! vector until `‖v‖₂ ≤ Δ₂` with (Kairouz et al., Thm. 1 / Prop. 22)
//!
//! `Δ₂² = min{ (c + √d)², c² + d/4 + √(2 ln(1/β)) · (c + √d/2) }`,
//!
//! and each attempt succeeds with probability at least `1 − β`. The default
//! `β = e^{−1/2}` gives a success probability ≥ 0.39 per attempt; the retry cap
//! [`DEFAULT_MAX_ATTEMPTS`] = 1000 fails with probability below `0.61^1000 < 10^−214`,
//! and then the client fails closed with an error instead of sending an unchecked vector.
//! The check is exact: `Σ vᵢ² ≤ ⌊Δ₂²⌋` in 128-bit integers. The accountant uses `Δ₂` as
//! the L2 sensitivity and `Δ₁ = ⌈Δ₂ · min(√d, Δ₂)⌉` as the L1 sensitivity.
//!
//! Integers are reduced mod `2^b` into words in `[0, 2^b)`; the server lifts a sum back
//! to `[−2^{b−1}, 2^{b−1})` ([`centered_lift`]).

use rand::{Rng, RngExt};

use crate::error::{DpError, invalid};

/// Default conditional-rounding parameter `β = e^{−1/2}` (Kairouz et al. 2021).
pub const DEFAULT_BETA: f64 = 0.606_530_659_712_633_4;

/// Default retry cap for conditional rounding.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 1000;

/// Largest magnitude a scaled coordinate may have (2^62), so rounding and noise stay
/// within `i64`.
pub const MAX_SCALED: f64 = 4_611_686_018_427_387_904.0;

/// The inflated L2 bound `Δ₂` (integer units) after rounding a vector of L2 norm at most
/// `c` (integer units) in dimension `dim`, for `beta ∈ [0, 1)` (`0` = unconditional).
pub fn inflated_l2_bound(c: f64, dim: usize, beta: f64) -> Result<f64, DpError> {
    if !(c.is_finite() && c >= 0.0) {
        return Err(invalid("c", format!("must be finite and ≥ 0, got {c}")));
    }
    if !(0.0..1.0).contains(&beta) {
        return Err(invalid("beta", format!("must be in [0, 1), got {beta}")));
    }
    let sqrt_d = (dim as f64).sqrt();
    let bound_1 = c + sqrt_d;
    if beta == 0.0 {
        return Ok(bound_1);
    }
    let squared_2 = c * c + 0.25 * dim as f64 + (2.0 * (1.0 / beta).ln()).sqrt() * (c + 0.5 * sqrt_d);
    Ok(bound_1.min(squared_2.sqrt()))
}

/// The L1 bound `⌈Δ₂ · min(√d, Δ₂)⌉` implied by an L2 bound on an integer vector.
pub fn l1_bound_from_l2(delta_2: f64, dim: usize) -> f64 {
    (delta_2 * (dim as f64).sqrt().min(delta_2)).ceil()
}

/// The exact integer threshold `⌊Δ₂²⌋` for the squared-norm check.
pub fn norm_bound_sq(delta_2: f64) -> Result<u128, DpError> {
    let sq = delta_2 * delta_2;
    if !(0.0..1.0e38).contains(&sq) {
        return Err(invalid("delta_2", format!("{delta_2} out of range")));
    }
    Ok(sq.floor() as u128)
}

/// Multiplies by `1/γ`, checking that every result is within ±[`MAX_SCALED`].
pub fn scale(x: &[f64], gamma: f64) -> Result<Vec<f64>, DpError> {
    if !(gamma.is_finite() && gamma > 0.0) {
        return Err(invalid("gamma", format!("must be finite and > 0, got {gamma}")));
    }
    x.iter()
        .enumerate()
        .map(|(index, v)| {
            let s = v / gamma;
            if s.is_finite() && s.abs() <= MAX_SCALED { Ok(s) } else { Err(DpError::OutOfRange { index }) }
        })
        .collect()
}

/// Unbiased randomized rounding: each `xᵢ` becomes `⌊xᵢ⌋ + 1` with probability
/// `xᵢ − ⌊xᵢ⌋`, else `⌊xᵢ⌋`. Rejects values that are not finite or beyond ±2^62.
pub fn randomized_round<R: Rng + ?Sized>(x: &[f64], rng: &mut R) -> Result<Vec<i64>, DpError> {
    x.iter()
        .enumerate()
        .map(|(index, &v)| {
            if !(v.is_finite() && v.abs() <= MAX_SCALED) {
                return Err(DpError::OutOfRange { index });
            }
            let floor = v.floor();
            let up = rng.random::<f64>() < v - floor;
            Ok(floor as i64 + i64::from(up))
        })
        .collect()
}

/// Squared L2 norm in exact 128-bit arithmetic (saturating at `u128::MAX`).
pub fn squared_norm(v: &[i64]) -> u128 {
    v.iter().fold(0u128, |acc, &x| {
        let a = u128::from(x.unsigned_abs());
        acc.saturating_add(a * a)
    })
}

/// Conditional randomized rounding: repeats [`randomized_round`] until the squared norm
/// is at most `bound_sq`, at most `max_attempts` times; then fails with
/// [`DpError::RoundingRetriesExhausted`]. Rejects `max_attempts = 0`.
pub fn conditional_round<R: Rng + ?Sized>(
    x: &[f64],
    bound_sq: u128,
    max_attempts: u32,
    rng: &mut R,
) -> Result<Vec<i64>, DpError> {
    if max_attempts == 0 {
        return Err(invalid("max_attempts", "must be ≥ 1"));
    }
    for _ in 0..max_attempts {
        let v = randomized_round(x, rng)?;
        if squared_norm(&v) <= bound_sq {
            return Ok(v);
        }
    }
    Err(DpError::RoundingRetriesExhausted { attempts: max_attempts })
}

/// Checks a bit width `b ∈ 1..=64`.
pub fn check_bits(bits: u32) -> Result<(), DpError> {
    if (1..=64).contains(&bits) { Ok(()) } else { Err(invalid("bits", format!("must be in 1..=64, got {bits}"))) }
}

/// The mask `2^b − 1`.
pub fn modulus_mask(bits: u32) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

/// Reduces each integer mod `2^b` into `[0, 2^b)` (two's complement wrap, then mask).
pub fn reduce_mod(v: &[i64], bits: u32) -> Result<Vec<u64>, DpError> {
    check_bits(bits)?;
    let mask = modulus_mask(bits);
    Ok(v.iter().map(|&x| (x as u64) & mask).collect())
}

/// Adds `words` into `acc` coordinate-wise mod `2^b`. Both must have the same length and
/// hold words below `2^b`.
pub fn add_mod(acc: &mut [u64], words: &[u64], bits: u32) -> Result<(), DpError> {
    check_bits(bits)?;
    if acc.len() != words.len() {
        return Err(DpError::LengthMismatch { expected: acc.len(), actual: words.len() });
    }
    let mask = modulus_mask(bits);
    if let Some(index) = words.iter().position(|&w| w & !mask != 0) {
        return Err(DpError::OutOfRange { index });
    }
    for (a, &w) in acc.iter_mut().zip(words) {
        *a = a.wrapping_add(w) & mask;
    }
    Ok(())
}

/// Centered lift of a word `w ∈ [0, 2^b)` to the representative in
/// `[−2^{b−1}, 2^{b−1})`. Rejects words `≥ 2^b`.
pub fn centered_lift(w: u64, bits: u32) -> Result<i64, DpError> {
    check_bits(bits)?;
    if w & !modulus_mask(bits) != 0 {
        return Err(DpError::OutOfRange { index: 0 });
    }
    // Shift the b-bit value to the top of the word and arithmetic-shift back: sign
    // extension from bit b−1.
    let shift = 64 - bits;
    Ok(((w << shift) as i64) >> shift)
}

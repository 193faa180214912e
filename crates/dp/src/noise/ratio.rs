//! Exact non-negative rationals for noise parameters.

use serde::{Deserialize, Serialize};

use crate::error::{DpError, invalid};

/// A positive rational `num/den`, used for the integer-domain noise variance so the
/// samplers never see a float. Serialized as `{"num": .., "den": ..}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ratio {
    /// Numerator, ≥ 1.
    pub num: u64,
    /// Denominator, ≥ 1.
    pub den: u64,
}

/// Largest denominator [`Ratio::from_f64_ceil`] uses (2^16).
pub const MAX_DEN_BITS: u32 = 16;

impl Ratio {
    /// `num/den`; rejects a zero numerator or denominator.
    pub fn new(num: u64, den: u64) -> Result<Self, DpError> {
        if num == 0 || den == 0 {
            return Err(invalid("ratio", format!("{num}/{den} must be positive")));
        }
        Ok(Self { num, den })
    }

    /// The smallest `k/2^j ≥ x` with `2^j = 2^16` for `x < 1` and `2^j ≈ 2^16/x` above,
    /// so the value is rounded *up* (a variance is never made smaller) by less than
    /// `2^−16` relative for `x ≥ 1`, and values of 2^17 and more become integers (which
    /// keeps the samplers' integers small and fast). Rejects values that are not finite
    /// and positive, or above `2^59`.
    pub fn from_f64_ceil(x: f64) -> Result<Self, DpError> {
        if !(x.is_finite() && x > 0.0 && x <= (1u64 << 59) as f64) {
            return Err(invalid("variance", format!("must be in (0, 2^59], got {x}")));
        }
        let mut bits = MAX_DEN_BITS;
        while bits > 0 && x * ((1u64 << bits) as f64) >= 65536.0 * 2.0 {
            bits -= 1;
        }
        let den = 1u64 << bits;
        // x·2^bits is exact (power-of-two scaling) and at most 2^59, so ceil is exact.
        let num = (x * den as f64).ceil() as u64;
        Self::new(num.max(1), den)
    }

    /// The value as f64 (for reporting and accounting, never for sampling).
    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// This value times `k`, rejecting overflow.
    pub fn times(self, k: u64) -> Result<Self, DpError> {
        let num = self.num.checked_mul(k).ok_or_else(|| invalid("ratio", "overflow"))?;
        Self::new(num, self.den)
    }
}

//! **Non-private** continuous Gaussian noise, for simulations only.
//!
//! Floating-point Gaussian samplers are vulnerable to the attacks of Mironov (2012) and
//! Jin et al. (2022), and a seeded generator makes noise removable. Use this only to
//! estimate the utility of a noise level in offline simulations, never on data that
//! must stay private. Nothing in the encoding pipeline calls it.

use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{DpError, invalid};

/// Adds i.i.d. `N(0, std²)` (f64, any RNG) to `values`. **Not differentially private.**
/// Rejects a `std` that is negative or not finite.
pub fn add_continuous_gaussian<R: Rng + ?Sized>(values: &mut [f64], std: f64, rng: &mut R) -> Result<(), DpError> {
    let normal = Normal::new(0.0, std).map_err(|e| invalid("std", format!("{std}: {e}")))?;
    if !std.is_finite() {
        return Err(invalid("std", "must be finite"));
    }
    for v in values {
        *v += normal.sample(rng);
    }
    Ok(())
}

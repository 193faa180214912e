//! Shamir secret sharing (Shamir 1979) over the ristretto255 scalar field GF(ℓ),
//! ℓ = 2^252 + 27742317777372353535851937790883648493.
//!
//! To share a secret `s` with threshold t, draw a polynomial
//! `p(X) = s + a₁X + … + a_{t−1}X^{t−1}` with uniform coefficients and give holder `x` the
//! share `(x, p(x))`. Any t shares determine p, hence `s = p(0)`, by Lagrange interpolation:
//!
//! ```text
//! p(z) = Σ_i y_i · λ_i(z),   λ_i(z) = Π_{j≠i} (z − x_j) / (x_i − x_j)
//! ```
//!
//! while any t − 1 shares are independent of `s` (for every candidate secret there is exactly
//! one polynomial through them), so they reveal nothing about it. Holder ids are the protocol's
//! non-zero u32 client ids; id 0 is forbidden because p(0) is the secret.
//!
//! Sharing over the scalar field lets a ristretto255 secret key or a self-mask secret (both
//! scalars) be shared directly, with no encoding step, for any number of holders below 2^32.
//!
//! Reconstruction with more than t shares checks the extra shares against the polynomial
//! through the first t, so a corrupted or malicious share is detected
//! ([`ShamirError::InconsistentShares`]) instead of silently yielding a wrong secret — unlike
//! Google's production SecAgg, which notices only when the rebuilt key fails to load.
//!
//! Costs: splitting is n·t field multiplications (Horner); the Lagrange coefficients of a
//! holder set cost O(t²) multiplications and one batched inversion, and
//! [`lagrange_coefficients_at_zero`] lets a server reuse them for every secret shared among
//! the same holders; each extra share checked costs O(t).

use core::fmt;

use curve25519_dalek::scalar::Scalar;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{CryptoError, ShamirError};

/// One share: the polynomial evaluated at the holder's id. Zeroized on drop; `Debug` redacts `y`.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Share {
    /// The holder's id, the evaluation point; never 0.
    pub x: u32,
    /// p(x).
    pub y: Scalar,
}

impl Share {
    /// Length of the encoding: x (4 bytes) ‖ y (32 bytes).
    pub const LEN: usize = 36;

    /// `x` as u32 big-endian ‖ `y` as its canonical 32-byte little-endian encoding.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..4].copy_from_slice(&self.x.to_be_bytes());
        out[4..].copy_from_slice(self.y.as_bytes());
        out
    }

    /// Decodes [`Share::to_bytes`]. Rejects x = 0 with [`CryptoError::ZeroShareId`] and a
    /// non-canonical y (≥ ℓ) with [`CryptoError::InvalidScalar`].
    pub fn from_bytes(bytes: &[u8; Self::LEN]) -> Result<Self, CryptoError> {
        let x = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if x == 0 {
            return Err(CryptoError::ZeroShareId);
        }
        let mut y_bytes = Zeroizing::new([0u8; 32]);
        y_bytes.copy_from_slice(&bytes[4..]);
        let y: Option<Scalar> = Scalar::from_canonical_bytes(*y_bytes).into();
        let y = y.ok_or(CryptoError::InvalidScalar)?;
        Ok(Self { x, y })
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share").field("x", &self.x).field("y", &format_args!("<redacted>")).finish()
    }
}

/// Splits `secret` into one share per holder (in `holders` order) with a uniformly random
/// polynomial of degree `threshold − 1`, so that any `threshold` shares reconstruct it and
/// fewer reveal nothing.
///
/// Rejects a threshold of 0 or above `holders.len()` ([`ShamirError::InvalidThreshold`]),
/// holder id 0 ([`ShamirError::ZeroId`]) and repeated ids ([`ShamirError::DuplicateId`]).
pub fn split<R: rand_core::CryptoRng + ?Sized>(
    secret: &Scalar,
    threshold: usize,
    holders: &[u32],
    rng: &mut R,
) -> Result<Vec<Share>, ShamirError> {
    split_with_coefficients(secret, threshold, holders, rng).map(|(shares, _)| shares)
}

/// [`split`], also returning the polynomial's coefficients (the secret first), e.g. for
/// committing to them ([`crate::vss`]). Zeroized on drop.
pub(crate) fn split_with_coefficients<R: rand_core::CryptoRng + ?Sized>(
    secret: &Scalar,
    threshold: usize,
    holders: &[u32],
    rng: &mut R,
) -> Result<(Vec<Share>, Zeroizing<Vec<Scalar>>), ShamirError> {
    if threshold == 0 || threshold > holders.len() {
        return Err(ShamirError::InvalidThreshold { threshold, shares: holders.len() });
    }
    check_ids(holders.iter().copied())?;
    let mut coefficients = Zeroizing::new(Vec::with_capacity(threshold));
    coefficients.push(*secret);
    coefficients.extend((1..threshold).map(|_| Scalar::random(rng)));
    let shares = holders
        .iter()
        .map(|&x| {
            let at = Scalar::from(x);
            let y = coefficients.iter().rev().fold(Scalar::ZERO, |acc, c| acc * at + c);
            Share { x, y }
        })
        .collect();
    Ok((shares, coefficients))
}

/// Rebuilds the secret p(0) from the first `threshold` shares by Lagrange interpolation.
///
/// If more than `threshold` shares are given, every further share must lie on the same
/// polynomial, else [`ShamirError::InconsistentShares`]. Rejects a threshold of 0
/// ([`ShamirError::InvalidThreshold`]), fewer than `threshold` shares
/// ([`ShamirError::NotEnoughShares`]), id 0 ([`ShamirError::ZeroId`]) and repeated ids
/// ([`ShamirError::DuplicateId`]) among all the shares.
///
/// With exactly `threshold` shares nothing can be checked: a wrong share gives a wrong secret.
pub fn reconstruct(shares: &[Share], threshold: usize) -> Result<Scalar, ShamirError> {
    if threshold == 0 {
        return Err(ShamirError::InvalidThreshold { threshold, shares: shares.len() });
    }
    if shares.len() < threshold {
        return Err(ShamirError::NotEnoughShares { needed: threshold, got: shares.len() });
    }
    check_ids(shares.iter().map(|s| s.x))?;
    let (base, extra) = shares.split_at(threshold);
    let basis = LagrangeBasis::new(base.iter().map(|s| s.x));
    let ys: Zeroizing<Vec<Scalar>> = Zeroizing::new(base.iter().map(|s| s.y).collect());
    for share in extra {
        if basis.evaluate(&ys, Scalar::from(share.x)) != share.y {
            return Err(ShamirError::InconsistentShares);
        }
    }
    Ok(basis.evaluate(&ys, Scalar::ZERO))
}

/// The Lagrange coefficients λ_i(0) for holder ids `xs`, so that the secret is
/// `Σ_i λ_i · y_i` for shares `(xs[i], y_i)` of any secret shared among these holders.
/// Compute once, reuse for every secret with the same holder set.
///
/// Rejects an empty set ([`ShamirError::NotEnoughShares`]), id 0 ([`ShamirError::ZeroId`])
/// and repeated ids ([`ShamirError::DuplicateId`]).
pub fn lagrange_coefficients_at_zero(xs: &[u32]) -> Result<Vec<Scalar>, ShamirError> {
    if xs.is_empty() {
        return Err(ShamirError::NotEnoughShares { needed: 1, got: 0 });
    }
    check_ids(xs.iter().copied())?;
    Ok(LagrangeBasis::new(xs.iter().copied()).coefficients_at(Scalar::ZERO))
}

/// Rejects id 0 and duplicates.
fn check_ids(ids: impl Iterator<Item = u32>) -> Result<(), ShamirError> {
    let mut sorted: Vec<u32> = ids.collect();
    if sorted.contains(&0) {
        return Err(ShamirError::ZeroId);
    }
    sorted.sort_unstable();
    match sorted.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(ShamirError::DuplicateId(w[0])),
        None => Ok(()),
    }
}

/// The interpolation nodes x_i and the inverted denominators 1 / Π_{j≠i} (x_i − x_j).
/// Nodes must be distinct (checked by the callers).
struct LagrangeBasis {
    xs: Vec<Scalar>,
    inv_denominators: Vec<Scalar>,
}

impl LagrangeBasis {
    fn new(ids: impl Iterator<Item = u32>) -> Self {
        let xs: Vec<Scalar> = ids.map(Scalar::from).collect();
        let mut inv_denominators: Vec<Scalar> = xs
            .iter()
            .enumerate()
            .map(|(i, xi)| {
                xs.iter().enumerate().filter(|&(j, _)| j != i).fold(Scalar::ONE, |acc, (_, xj)| acc * (xi - xj))
            })
            .collect();
        // Non-zero because the nodes are distinct and below ℓ.
        Scalar::invert_batch_alloc(&mut inv_denominators);
        Self { xs, inv_denominators }
    }

    /// λ_i(z) = Π_{j≠i} (z − x_j) · inv_denominators[i], numerators by prefix and suffix
    /// products (so z may equal a node).
    fn coefficients_at(&self, z: Scalar) -> Vec<Scalar> {
        let n = self.xs.len();
        let mut coefficients = vec![Scalar::ONE; n];
        let mut prefix = Scalar::ONE;
        for (c, x) in coefficients.iter_mut().zip(&self.xs) {
            *c = prefix;
            prefix *= z - x;
        }
        let mut suffix = Scalar::ONE;
        for i in (0..n).rev() {
            coefficients[i] *= suffix * self.inv_denominators[i];
            suffix *= z - self.xs[i];
        }
        coefficients
    }

    /// p(z) for the polynomial through (x_i, ys[i]).
    fn evaluate(&self, ys: &[Scalar], z: Scalar) -> Scalar {
        self.coefficients_at(z).iter().zip(ys).map(|(l, y)| l * y).sum()
    }
}

//! Feldman verifiable secret sharing (Feldman, FOCS 1987) over ristretto255.
//!
//! The dealer shares a scalar `s` with the Shamir polynomial `p(X) = a₀ + a₁X + … + a_{t−1}X^{t−1}`,
//! `a₀ = s` ([`crate::shamir`]), and publishes the commitment `C_j = a_j·G` for every coefficient.
//! A share `(x, y)` is valid iff
//!
//! ```text
//! y·G = Σ_j x^j · C_j
//! ```
//!
//! so anyone holding the commitment can check any share without learning anything but
//! `C₀ = s·G` (which for a secret key is its public key anyway, and for a uniformly random
//! self-mask secret reveals nothing usable: hiding is computational, under the discrete
//! logarithm assumption, where plain Shamir is information-theoretic). Because every valid
//! share lies on the one committed polynomial, any `t` valid shares rebuild the same secret,
//! and `C₀` lets the result be checked too.
//!
//! # Batch verification
//!
//! Checking shares one by one costs one t-point multiscalar multiplication each. Many shares
//! are checked at once with a random linear combination: with weights `r_i`,
//!
//! ```text
//! (Σ_i r_i·y_i)·G = Σ_i r_i Σ_j x_i^j · C_{i,j}
//! ```
//!
//! which holds for wrong shares only with probability about 1/ℓ. Shares of one secret
//! share the points `C_j`, so their batch is a single (t + 1)-point multiscalar
//! multiplication ([`Commitment::verify_batch`]); shares under different commitments cost
//! one multiscalar multiplication over all their points ([`verify_many`]). The weights are
//! derived by hashing the commitments and the shares (SHA-512, domain-separated), so they
//! are fixed only after the shares are: a liar cannot choose shares that cancel. When a
//! batch fails, [`Commitment::invalid_shares`] names the wrong ones.
//!
//! The multiscalar multiplications run in variable time over public points; the only
//! secret-dependent product, `(Σ r_i·y_i)·G`, uses the constant-time fixed-base path.

use std::borrow::Cow;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::VartimeMultiscalarMul;
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::error::{CryptoError, ShamirError};
use crate::shamir::Share;

/// Domain-separation label of the batch-verification weights.
const WEIGHTS_LABEL: &[u8] = b"privagg/v1 feldman-batch-weights";

/// A Feldman commitment to a sharing polynomial of degree `t − 1`: the points `a_j·G`, as
/// their canonical encodings and, unless [`Commitment::without_points`] dropped them,
/// decoded. [`Commitment::threshold`] is `t`. Two commitments are equal iff their
/// encodings are.
#[derive(Clone)]
pub struct Commitment {
    /// Every one decodes: each constructor checks it (or made the points), and the checks
    /// rely on it, since a commitment that did not decode would fail every share.
    encodings: Vec<[u8; 32]>,
    /// `None` once dropped: every check then decodes the points again.
    points: Option<Vec<RistrettoPoint>>,
}

impl PartialEq for Commitment {
    fn eq(&self, other: &Self) -> bool {
        self.encodings == other.encodings
    }
}

impl Eq for Commitment {}

impl core::fmt::Debug for Commitment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Commitment(t = {})", self.encodings.len())
    }
}

impl Commitment {
    /// Length of one encoded point.
    pub const POINT_LEN: usize = 32;

    /// Decodes the commitment from its points' encodings (`C₀` first). Rejects an empty list
    /// ([`CryptoError::InvalidCommitment`]) and any encoding that is not a canonical
    /// ristretto255 point ([`CryptoError::InvalidPublicKey`]).
    pub fn from_encodings(encodings: Vec<[u8; 32]>) -> Result<Self, CryptoError> {
        if encodings.is_empty() {
            return Err(CryptoError::InvalidCommitment);
        }
        let points = decode(&encodings).ok_or(CryptoError::InvalidPublicKey)?;
        Ok(Self { encodings, points: Some(points) })
    }

    /// The same commitment keeping only the encodings: 32 bytes a point instead of 192,
    /// for a holder that keeps many commitments and checks few shares against them (the
    /// server). Each check then decodes the points again (a few µs a point).
    pub fn without_points(self) -> Self {
        Self { encodings: self.encodings, points: None }
    }

    /// The points' canonical encodings, `C₀` first.
    pub fn encodings(&self) -> &[[u8; 32]] {
        &self.encodings
    }

    /// The threshold t of the sharing: the number of coefficients committed to.
    pub fn threshold(&self) -> usize {
        self.encodings.len()
    }

    /// The encoding of `C₀ = s·G`, the commitment to the secret itself.
    pub fn secret_commitment(&self) -> [u8; 32] {
        self.encodings[0]
    }

    /// Whether `secret·G = C₀`: checks a rebuilt secret.
    pub fn opens_to(&self, secret: &Scalar) -> bool {
        RistrettoPoint::mul_base(secret).compress().to_bytes() == self.encodings[0]
    }

    /// Checks one share: `y·G = Σ_j x^j·C_j`.
    pub fn verify(&self, share: &Share) -> bool {
        self.points().is_some_and(|points| verify_one(&points, share))
    }

    /// Checks all `shares` of this one secret at once (one (t + 1)-point multiscalar
    /// multiplication and O(t) scalar operations per share). `true` for an empty list.
    pub fn verify_batch(&self, shares: &[Share]) -> bool {
        shares.is_empty() || self.points().is_some_and(|points| self.verify_batch_with(&points, shares))
    }

    fn verify_batch_with(&self, points: &[RistrettoPoint], shares: &[Share]) -> bool {
        let weights = batch_weights(std::iter::once(self), shares);
        let mut coefficients = vec![Scalar::ZERO; points.len()];
        let mut weighted_y = Zeroizing::new(Scalar::ZERO);
        for (share, r) in shares.iter().zip(&weights) {
            *weighted_y += r * share.y;
            let x = Scalar::from(share.x);
            let mut power = *r;
            for c in coefficients.iter_mut() {
                *c += power;
                power *= x;
            }
        }
        (&*weighted_y * RISTRETTO_BASEPOINT_TABLE) == RistrettoPoint::vartime_multiscalar_mul(&coefficients, points)
    }

    /// The holder ids (share x-coordinates) of the shares that do not verify, in order.
    /// Cheap when all are valid (one batch check); otherwise checks each share.
    pub fn invalid_shares(&self, shares: &[Share]) -> Vec<u32> {
        let Some(points) = self.points() else {
            return shares.iter().map(|s| s.x).collect();
        };
        if shares.is_empty() || self.verify_batch_with(&points, shares) {
            return Vec::new();
        }
        shares.iter().filter(|s| !verify_one(&points, s)).map(|s| s.x).collect()
    }

    /// The decoded points, kept or decoded again. `None` only if an encoding does not
    /// decode, which [`Commitment::from_encodings`] and [`split`] rule out.
    fn points(&self) -> Option<Cow<'_, [RistrettoPoint]>> {
        match &self.points {
            Some(points) => Some(Cow::Borrowed(points)),
            None => decode(&self.encodings).map(Cow::Owned),
        }
    }
}

fn verify_one(points: &[RistrettoPoint], share: &Share) -> bool {
    let powers = powers(Scalar::from(share.x), points.len());
    RistrettoPoint::mul_base(&share.y) == RistrettoPoint::vartime_multiscalar_mul(&powers, points)
}

/// The points of canonical `encodings`, or `None` if one is not.
fn decode(encodings: &[[u8; 32]]) -> Option<Vec<RistrettoPoint>> {
    encodings.iter().map(|e| CompressedRistretto(*e).decompress()).collect()
}

/// Splits `secret` like [`crate::shamir::split`] and returns the Feldman commitment to the
/// polynomial with the shares. Same errors.
pub fn split<R: rand_core::CryptoRng + ?Sized>(
    secret: &Scalar,
    threshold: usize,
    holders: &[u32],
    rng: &mut R,
) -> Result<(Vec<Share>, Commitment), ShamirError> {
    let (shares, coefficients) = crate::shamir::split_with_coefficients(secret, threshold, holders, rng)?;
    let points: Vec<RistrettoPoint> = coefficients.iter().map(RistrettoPoint::mul_base).collect();
    let encodings = points.iter().map(|p| p.compress().to_bytes()).collect();
    Ok((shares, Commitment { encodings, points: Some(points) }))
}

/// Checks many shares, each against its own commitment, with one multiscalar multiplication
/// over all the commitments' points. `true` for an empty list. To find the wrong ones after
/// a failure, check each with [`Commitment::verify`].
pub fn verify_many(items: &[(&Commitment, &Share)]) -> bool {
    if items.is_empty() {
        return true;
    }
    let shares: Vec<&Share> = items.iter().map(|(_, s)| *s).collect();
    let weights = batch_weights_refs(items.iter().map(|(c, _)| *c), &shares);
    let total: usize = items.iter().map(|(c, _)| c.threshold()).sum();
    let mut scalars = Vec::with_capacity(total);
    let mut points = Vec::with_capacity(total);
    let mut weighted_y = Zeroizing::new(Scalar::ZERO);
    for ((commitment, share), r) in items.iter().zip(&weights) {
        let Some(commitment_points) = commitment.points() else { return false };
        *weighted_y += r * share.y;
        let x = Scalar::from(share.x);
        let mut power = *r;
        for p in commitment_points.iter() {
            scalars.push(power);
            points.push(*p);
            power *= x;
        }
    }
    (&*weighted_y * RISTRETTO_BASEPOINT_TABLE) == RistrettoPoint::vartime_multiscalar_mul(&scalars, &points)
}

/// 1, x, x², …, x^{n−1}.
fn powers(x: Scalar, n: usize) -> Vec<Scalar> {
    let mut out = Vec::with_capacity(n);
    let mut p = Scalar::ONE;
    for _ in 0..n {
        out.push(p);
        p *= x;
    }
    out
}

fn batch_weights<'a>(commitments: impl Iterator<Item = &'a Commitment>, shares: &[Share]) -> Vec<Scalar> {
    let refs: Vec<&Share> = shares.iter().collect();
    batch_weights_refs(commitments, &refs)
}

/// Weights r_i = SHA-512(seed ‖ i) mod ℓ, with seed = SHA-512(label ‖ commitments ‖ shares):
/// fixed only once every share and commitment is.
fn batch_weights_refs<'a>(commitments: impl Iterator<Item = &'a Commitment>, shares: &[&Share]) -> Vec<Scalar> {
    let mut h = Sha512::new();
    h.update(WEIGHTS_LABEL);
    for c in commitments {
        h.update((c.encodings.len() as u64).to_be_bytes());
        for e in &c.encodings {
            h.update(e);
        }
    }
    h.update((shares.len() as u64).to_be_bytes());
    for s in shares {
        h.update(Zeroizing::new(s.to_bytes()).as_slice());
    }
    let seed = h.finalize();
    (0..shares.len() as u64)
        .map(|i| {
            let mut h = Sha512::new();
            h.update(seed);
            h.update(i.to_be_bytes());
            let wide: [u8; 64] = h.finalize().into();
            Scalar::from_bytes_mod_order_wide(&wide)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::shamir;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(7)
    }

    #[test]
    fn valid_shares_verify_alone_and_in_batches() {
        let mut rng = rng();
        let secret = Scalar::random(&mut rng);
        let holders: Vec<u32> = (1..=9).collect();
        let (shares, c) = split(&secret, 4, &holders, &mut rng).unwrap();
        assert_eq!(c.threshold(), 4);
        assert!(c.opens_to(&secret));
        assert_eq!(c.secret_commitment(), RistrettoPoint::mul_base(&secret).compress().to_bytes());
        assert!(shares.iter().all(|s| c.verify(s)));
        assert!(c.verify_batch(&shares));
        assert!(c.invalid_shares(&shares).is_empty());
        assert_eq!(shamir::reconstruct(&shares[2..6], 4).unwrap(), secret);
        let items: Vec<(&Commitment, &Share)> = shares.iter().map(|s| (&c, s)).collect();
        assert!(verify_many(&items));
        assert!(verify_many(&[]) && c.verify_batch(&[]));
    }

    #[test]
    fn a_wrong_share_is_rejected_and_named() {
        let mut rng = rng();
        let secret = Scalar::random(&mut rng);
        let holders: Vec<u32> = (1..=7).collect();
        let (mut shares, c) = split(&secret, 3, &holders, &mut rng).unwrap();
        shares[4].y += Scalar::ONE;
        assert!(!c.verify(&shares[4]));
        assert!(!c.verify_batch(&shares));
        assert_eq!(c.invalid_shares(&shares), vec![5]);
        // A share moved to another holder's point is wrong there.
        let moved = Share { x: 2, y: shares[0].y };
        assert!(!c.verify(&moved));
        // Two liars whose errors cancel in an unweighted sum are still caught.
        let (mut shares, c) = split(&secret, 3, &holders, &mut rng).unwrap();
        shares[1].y += Scalar::ONE;
        shares[2].y -= Scalar::ONE;
        assert_eq!(c.invalid_shares(&shares), vec![2, 3]);
    }

    #[test]
    fn without_its_points_a_commitment_checks_shares_the_same() {
        let mut rng = rng();
        let secret = Scalar::random(&mut rng);
        let holders: Vec<u32> = (1..=6).collect();
        let (mut shares, full) = split(&secret, 3, &holders, &mut rng).unwrap();
        let compact = full.clone().without_points();
        assert!(compact.points.is_none());
        assert!(compact.opens_to(&secret) && !compact.opens_to(&Scalar::ONE));
        assert!(compact.verify_batch(&shares) && compact.verify(&shares[0]));
        assert!(verify_many(&[(&compact, &shares[0]), (&full, &shares[1])]));
        shares[3].y += Scalar::ONE;
        assert!(!compact.verify(&shares[3]) && !compact.verify_batch(&shares));
        assert!(!verify_many(&[(&compact, &shares[3])]));
        assert_eq!(compact.invalid_shares(&shares), full.invalid_shares(&shares));
        assert_eq!(compact.invalid_shares(&shares), vec![4]);
    }

    #[test]
    fn a_share_of_another_polynomial_is_rejected() {
        let mut rng = rng();
        let holders: Vec<u32> = (1..=5).collect();
        let (shares_a, a) = split(&Scalar::from(5u8), 3, &holders, &mut rng).unwrap();
        let (shares_b, b) = split(&Scalar::from(5u8), 3, &holders, &mut rng).unwrap();
        assert!(!a.verify(&shares_b[0]));
        assert!(!verify_many(&[(&a, &shares_a[0]), (&b, &shares_a[1])]));
        assert!(verify_many(&[(&a, &shares_a[0]), (&b, &shares_b[1])]));
        assert!(!a.opens_to(&Scalar::from(6u8)));
    }

    #[test]
    fn encodings_round_trip_and_bad_points_are_refused() {
        let mut rng = rng();
        let (_, c) = split(&Scalar::ONE, 3, &[1, 2, 3], &mut rng).unwrap();
        let back = Commitment::from_encodings(c.encodings().to_vec()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.clone().without_points(), c);
        assert_eq!(Commitment::from_encodings(vec![]), Err(CryptoError::InvalidCommitment));
        assert_eq!(Commitment::from_encodings(vec![[0xff; 32]]), Err(CryptoError::InvalidPublicKey));
    }
}

//! Diffie-Hellman key agreement over the prime-order group ristretto255 (RFC 9496).
//!
//! A secret key is a uniformly random non-zero scalar `s` modulo the group order
//! ℓ = 2^252 + 27742317777372353535851937790883648493; its public key is `S = s·G` in its
//! 32-byte canonical encoding. Two parties with keys `(a, A)` and `(b, B)` compute the same
//! point `a·B = b·A = ab·G`; its canonical encoding is the [`SharedSecret`]. The shared secret
//! is input key material only: every key used by the protocol is derived from it with HKDF
//! ([`crate::kdf`]).
//!
//! Ristretto255 has prime order and canonical encodings, so there are no small-subgroup or
//! malleability issues: [`PublicKey::from_bytes`] accepts exactly the canonical encodings of
//! non-identity elements (RFC 9496 §4.3.1 decoding, plus an identity check), and every other
//! point then has order ℓ. The only way to obtain the identity as a DH result is a zero secret
//! key (possible only through [`SecretKey::from_scalar`]), which
//! [`SecretKey::diffie_hellman`] rejects as non-contributory.
//!
//! Secret keys are scalars rather than byte strings so that they can be Shamir-shared directly
//! over the scalar field ([`crate::shamir`]) and rebuilt with [`SecretKey::from_scalar`] when a
//! client drops out.

use core::fmt;
use core::hash::{Hash, Hasher};

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::CryptoError;

/// A ristretto255 secret key: a scalar modulo the group order. Zeroized on drop; `Debug` is
/// redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(Scalar);

impl SecretKey {
    /// Draws a uniformly random non-zero scalar from `rng` (rejection of the zero scalar, which
    /// happens with probability 2^-252).
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        loop {
            let s = Scalar::random(rng);
            if s != Scalar::ZERO {
                return Self(s);
            }
        }
    }

    /// Wraps a scalar, e.g. one rebuilt by Shamir reconstruction. A zero scalar is accepted
    /// here but yields an identity public key and makes [`SecretKey::diffie_hellman`] fail.
    pub fn from_scalar(s: Scalar) -> Self {
        Self(s)
    }

    /// Decodes a canonical little-endian scalar; rejects non-canonical encodings (≥ ℓ) and zero
    /// with [`CryptoError::InvalidScalar`].
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, CryptoError> {
        let s: Option<Scalar> = Scalar::from_canonical_bytes(*bytes).into();
        match s {
            Some(s) if s != Scalar::ZERO => Ok(Self(s)),
            _ => Err(CryptoError::InvalidScalar),
        }
    }

    /// The secret scalar (for Shamir sharing).
    pub fn as_scalar(&self) -> &Scalar {
        &self.0
    }

    /// The public key `s·G`.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_point(RistrettoPoint::mul_base(&self.0))
    }

    /// Computes `s·peer` and returns its canonical encoding.
    ///
    /// Fails with [`CryptoError::NonContributoryKeyAgreement`] if the result is the identity,
    /// which for a validated peer key happens only when this secret key is zero.
    pub fn diffie_hellman(&self, peer: &PublicKey) -> Result<SharedSecret, CryptoError> {
        let shared = peer.point * self.0;
        if shared.is_identity() {
            return Err(CryptoError::NonContributoryKeyAgreement);
        }
        Ok(SharedSecret(shared.compress().to_bytes()))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A validated ristretto255 public key: a canonical encoding of a non-identity element.
///
/// Holds both the 32-byte encoding (for the wire, equality and hashing) and the decoded point
/// (so that key agreement does not decode again). Equality and hashing use the encoding, which
/// is canonical, so equal keys have equal bytes.
#[derive(Clone, Copy)]
pub struct PublicKey {
    bytes: [u8; 32],
    point: RistrettoPoint,
}

impl PublicKey {
    /// Length of the encoding in bytes.
    pub const LEN: usize = 32;

    /// Decodes a public key. Rejects, with [`CryptoError::InvalidPublicKey`], every byte string
    /// that is not the canonical ristretto255 encoding of a group element (RFC 9496 §4.3.1:
    /// non-canonical or negative field elements, non-square x², negative xy, y = 0) and the
    /// encoding of the identity (all zeros).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, CryptoError> {
        let point = CompressedRistretto(*bytes).decompress().ok_or(CryptoError::InvalidPublicKey)?;
        if point.is_identity() {
            return Err(CryptoError::InvalidPublicKey);
        }
        Ok(Self { bytes: *bytes, point })
    }

    /// The canonical 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    /// The decoded group element.
    pub fn point(&self) -> RistrettoPoint {
        self.point
    }

    fn from_point(point: RistrettoPoint) -> Self {
        Self { bytes: point.compress().to_bytes(), point }
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

impl Hash for PublicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(")?;
        for b in &self.bytes {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// A secret key together with its public key, for the common case of a fresh ephemeral pair.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// The secret half.
    pub secret: SecretKey,
    /// `secret.public_key()`.
    pub public: PublicKey,
}

impl KeyPair {
    /// Generates a fresh key pair (see [`SecretKey::generate`]).
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let secret = SecretKey::generate(rng);
        let public = secret.public_key();
        Self { secret, public }
    }
}

/// The canonical encoding of the Diffie-Hellman point. Input key material for
/// [`crate::kdf`] only — never use it as a key directly. Zeroized on drop; `Debug` is redacted.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SharedSecret([u8; 32]);

impl SharedSecret {
    /// The 32 bytes of the shared point's encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps a Diffie-Hellman value that one party revealed, so that a verifier can derive
    /// the same keys from it. Only meaningful once the value is proven
    /// ([`crate::dleq::verify`]): unproven bytes are just bytes.
    pub fn from_revealed(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

//! Typed errors of the crate: one enum for the primitives, one for Shamir sharing.

/// Errors of key agreement, key derivation, envelopes and the mask PRG.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The 32 bytes are not a canonical ristretto255 encoding, or they encode the identity.
    #[error("invalid public key: not a canonical ristretto255 encoding of a non-identity element")]
    InvalidPublicKey,
    /// The Diffie-Hellman result is the identity, so it carries no secret (a zero secret key).
    #[error("non-contributory key agreement: the shared point is the identity")]
    NonContributoryKeyAgreement,
    /// The 32 bytes are not the canonical little-endian encoding of a scalar below the group order
    /// (or encode zero where a non-zero scalar is required).
    #[error("invalid scalar encoding")]
    InvalidScalar,
    /// An envelope is shorter than nonce plus tag ([`crate::envelope::ENVELOPE_OVERHEAD`] bytes).
    #[error("envelope too short")]
    EnvelopeTooShort,
    /// Authentication failed: wrong key, wrong context (session, round, sender, recipient) or a
    /// modified envelope.
    #[error("envelope failed to open")]
    EnvelopeOpenFailed,
    /// The mask width is outside `1..=64` bits.
    #[error("invalid mask width: {bits} bits (must be 1..=64)")]
    InvalidMaskWidth {
        /// The rejected width.
        bits: u32,
    },
    /// A Shamir share encoding has holder id 0 (the secret's evaluation point).
    #[error("share holder id 0 is reserved for the secret")]
    ZeroShareId,
    /// A Feldman commitment with no points (a polynomial needs at least its constant term).
    #[error("empty share commitment")]
    InvalidCommitment,
    /// A DLEQ proof does not verify.
    #[error("invalid discrete-log equality proof")]
    InvalidProof,
    /// HKDF-SHA256 can produce at most 255 · 32 = 8160 bytes.
    #[error("HKDF output of {len} bytes is longer than 8160")]
    KdfOutputTooLong {
        /// The requested output length in bytes.
        len: usize,
    },
}

/// Errors of Shamir secret sharing.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShamirError {
    /// The threshold is 0, or larger than the number of share holders.
    #[error("invalid threshold {threshold} for {shares} share holders")]
    InvalidThreshold {
        /// The requested threshold.
        threshold: usize,
        /// The number of share holders (or shares) available.
        shares: usize,
    },
    /// A holder id (share x-coordinate) is 0; the secret lives at x = 0.
    #[error("share holder id 0 is reserved for the secret")]
    ZeroId,
    /// The same holder id appears twice.
    #[error("duplicate share holder id {0}")]
    DuplicateId(u32),
    /// Fewer shares than the threshold.
    #[error("not enough shares: need {needed}, got {got}")]
    NotEnoughShares {
        /// The threshold.
        needed: usize,
        /// The number of shares given.
        got: usize,
    },
    /// Shares beyond the threshold do not lie on the polynomial through the first `threshold` ones.
    #[error("shares are inconsistent: they do not lie on one polynomial of the threshold's degree")]
    InconsistentShares,
}

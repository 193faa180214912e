//! Cryptographic primitives of privagg, a secure-aggregation service (SecAgg, Bonawitz et al.,
//! CCS 2017; SecAgg+, Bell et al., CCS 2020).
//!
//! | module | primitive | used for |
//! |---|---|---|
//! | [`key_agreement`] | Diffie-Hellman over ristretto255 (RFC 9496, curve25519-dalek) | the channel key pair `c` and the mask key pair `s` of every client |
//! | [`kdf`] | HKDF-SHA256 (RFC 5869) with labelled `info` | every symmetric key and seed |
//! | [`envelope`] | AES-256-GCM (SP 800-38D), random 96-bit nonces, context-bound AAD | relaying Shamir shares through the server |
//! | [`prg`] | AES-128-CTR (SP 800-38A) or ChaCha20 (RFC 8439) keystream → words mod 2^bits | self and pairwise masks, added in place |
//! | [`shamir`] | Shamir sharing over the ristretto255 scalar field | dropout recovery of `s_u` and `b_u` |
//! | [`vss`] | Feldman commitments to the sharing polynomials, batch share verification | checking every share a client receives and the server is revealed |
//! | [`dleq`] | Chaum–Pedersen proofs of discrete-log equality (Fiat–Shamir, SHA-512) | proving a revealed Diffie-Hellman value (blame for a bad envelope) |
//! | [`identity`] | Ed25519 signatures (RFC 8032, ring) under X.509 client certificates (rustls-webpki) | binding each round's keys and survivor sets to a certified client |
//! | [`ed25519_cofactored`] | Ed25519 verification with the cofactored equation (RFC 8032 §5.1.7), one signature or a batch under one key, which agree | envelope signatures: the server's batch and each recipient's check |
//!
//! # How they fit together
//!
//! For a session `sid`, round `r` and clients `u`, `v` (non-zero u32 ids):
//!
//! ```text
//! channel key   k_uv = HKDF(salt = sid, IKM = DH(c_u, C_v), info = "privagg/v1 channel-key"   ‖ r ‖ min(u,v) ‖ max(u,v))
//! pairwise seed s_uv = HKDF(salt = sid, IKM = DH(s_u, S_v), info = "privagg/v1 pairwise-mask" ‖ r ‖ min(u,v) ‖ max(u,v))
//! self seed     b'_u = HKDF(salt = sid, IKM = b_u (scalar),  info = "privagg/v1 self-mask"     ‖ r ‖ u ‖ u)
//! envelope      AES-256-GCM(k_uv, nonce, AAD = "privagg/v1 envelope" ‖ sid ‖ r ‖ sender ‖ recipient)
//! masked input  y_u = x_u + PRG(b'_u) + Σ_{v<u} PRG(s_uv) − Σ_{v>u} PRG(s_uv)   mod 2^bits
//! ```
//!
//! (r is u64 big-endian, ids are u32 big-endian.) The secrets that are Shamir-shared are the
//! scalars `s_u` (mask secret key) and `b_u` (self-mask secret), so the server can rebuild a
//! dropped client's pairwise masks or a survivor's self mask from t shares.
//!
//! # Domain separation labels
//!
//! All labels start with [`kdf::PROTOCOL_LABEL`] = `privagg/v1`:
//! `privagg/v1 channel-key`, `privagg/v1 pairwise-mask`, `privagg/v1 self-mask` (HKDF `info`
//! prefixes, [`kdf::KeyPurpose::label`]) and `privagg/v1 envelope` (AAD prefix,
//! [`envelope::ENVELOPE_LABEL`]). A new wire-incompatible version changes the prefix.
//!
//! # Guarantees
//!
//! * Public keys are validated on decoding: canonical encodings of non-identity group
//!   elements only; a DH result equal to the identity is rejected.
//! * Raw DH outputs and secret scalars are only ever HKDF input; keys are bound to session,
//!   round, purpose and the (unordered) client pair, so no key or mask repeats across rounds,
//!   sessions or pairs.
//! * Envelopes authenticate their context: moving one to another sender, recipient, round or
//!   session, or flipping any bit, makes [`envelope::open`] fail without releasing plaintext.
//! * The PRG is a fixed, versioned function of the seed (pinned by known-answer tests against
//!   NIST SP 800-38A and RFC 8439); mask words are exactly uniform mod 2^bits.
//! * Shamir: any t shares rebuild the secret, t − 1 reveal nothing; extra shares are checked.
//!   With Feldman commitments ([`vss`]) every single share is checked, so a wrong one is named.
//! * Secrets ([`SecretKey`], [`SharedSecret`], [`ChannelKey`], [`MaskSeed`], [`Share`]) are
//!   zeroized on drop and their `Debug` output is redacted. Arithmetic on secrets is constant
//!   time (curve25519-dalek, AES-NI/VAES or bitsliced AES, ChaCha20); the keystream's position
//!   and length are public.
//! * Decoders never panic on untrusted input; every rejection is a typed error
//!   ([`CryptoError`], [`ShamirError`]).

pub mod dleq;
pub mod ed25519_cofactored;
pub mod envelope;
pub mod error;
pub mod identity;
pub mod kdf;
pub mod key_agreement;
pub mod prg;
pub mod shamir;
pub mod vss;

pub use curve25519_dalek::scalar::Scalar;
pub use envelope::{ChannelKey, ENVELOPE_OVERHEAD, EnvelopeContext, open, seal};
pub use error::{CryptoError, ShamirError};
pub use kdf::{
    KeyContext, KeyPurpose, PROTOCOL_LABEL, derive_channel_key, derive_key, derive_pairwise_mask_seed,
    derive_self_mask_seed, hkdf_sha256,
};
pub use key_agreement::{KeyPair, PublicKey, SecretKey, SharedSecret};
pub use prg::{MaskSeed, MaskSign, PrgKind, apply_mask, apply_masks, fill_keystream, stream_keystream};
pub use shamir::{Share, lagrange_coefficients_at_zero, reconstruct, split};

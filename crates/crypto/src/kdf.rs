//! The key schedule: every key of the protocol comes out of HKDF-SHA256 (RFC 5869), never
//! straight from a Diffie-Hellman output or a secret scalar.
//!
//! ```text
//! key = HKDF-SHA256(salt = session_id,
//!                   IKM  = input key material,
//!                   info = label(purpose) ‖ round (u64 BE) ‖ min(a, b) (u32 BE) ‖ max(a, b) (u32 BE),
//!                   L    = 32)
//! ```
//!
//! | purpose                   | label (ASCII, no terminator) | IKM                                   |
//! |---------------------------|------------------------------|---------------------------------------|
//! | [`KeyPurpose::ChannelKey`]   | `privagg/v1 channel-key`   | DH(c_u, c_v) encoding                 |
//! | [`KeyPurpose::PairwiseMask`] | `privagg/v1 pairwise-mask` | DH(s_u, s_v) encoding                 |
//! | [`KeyPurpose::SelfMask`]     | `privagg/v1 self-mask`     | self-mask scalar b_u (32 bytes LE), pair (u, u) |
//!
//! Domain separation: the salt binds the session, the info binds the protocol version,
//! the purpose, the round and the unordered pair of client ids. Labels are distinct and the
//! rest of `info` has a fixed length (16 bytes), so `info` parses uniquely and two different
//! (purpose, round, pair) tuples never share an `info` string. Sorting the pair makes the key
//! symmetric: both ends of an edge derive the same key. Because the round is part of `info`,
//! masks never repeat across rounds even if a client reused a key pair (it should not).

use curve25519_dalek::scalar::Scalar;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::envelope::ChannelKey;
use crate::error::CryptoError;
use crate::key_agreement::SharedSecret;
use crate::prg::MaskSeed;

/// The protocol version prefix of every label.
pub const PROTOCOL_LABEL: &[u8] = b"privagg/v1";

/// Largest HKDF-SHA256 output: 255 blocks of 32 bytes.
pub const HKDF_SHA256_MAX_OUTPUT: usize = 255 * 32;

/// What a derived key is for; each purpose has its own label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPurpose {
    /// AES-256-GCM key of the envelope channel between two clients (`privagg/v1 channel-key`).
    ChannelKey,
    /// Seed of the pairwise mask between two clients (`privagg/v1 pairwise-mask`).
    PairwiseMask,
    /// Seed of a client's self mask (`privagg/v1 self-mask`).
    SelfMask,
}

impl KeyPurpose {
    /// The ASCII label that starts HKDF `info` for this purpose.
    pub const fn label(self) -> &'static [u8] {
        match self {
            KeyPurpose::ChannelKey => b"privagg/v1 channel-key",
            KeyPurpose::PairwiseMask => b"privagg/v1 pairwise-mask",
            KeyPurpose::SelfMask => b"privagg/v1 self-mask",
        }
    }
}

/// The public context every key is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyContext {
    /// Session identifier (the HKDF salt); unique per aggregation session.
    pub session_id: [u8; 32],
    /// Round number within the session.
    pub round: u64,
}

/// Longest label plus round and pair.
const MAX_INFO_LEN: usize = 24 + 8 + 4 + 4;

/// HKDF-SHA256(salt = ctx.session_id, ikm, info = label(purpose) ‖ round (u64 BE) ‖ min(a,b)
/// (u32 BE) ‖ max(a,b) (u32 BE)) → 32 bytes. Symmetric in `a` and `b`.
pub fn derive_key(ikm: &[u8], purpose: KeyPurpose, ctx: &KeyContext, a: u32, b: u32) -> Zeroizing<[u8; 32]> {
    let mut okm = Zeroizing::new([0u8; 32]);
    derive_into(ikm, purpose, ctx, a, b, &mut okm);
    okm
}

/// [`derive_key`] writing straight into the destination, so no stray copy of the key is left.
fn derive_into(ikm: &[u8], purpose: KeyPurpose, ctx: &KeyContext, a: u32, b: u32, okm: &mut [u8; 32]) {
    let label = purpose.label();
    let len = label.len() + 16;
    let mut info = [0u8; MAX_INFO_LEN];
    info[..label.len()].copy_from_slice(label);
    info[label.len()..label.len() + 8].copy_from_slice(&ctx.round.to_be_bytes());
    info[label.len() + 8..label.len() + 12].copy_from_slice(&a.min(b).to_be_bytes());
    info[label.len() + 12..len].copy_from_slice(&a.max(b).to_be_bytes());
    Hkdf::<Sha256>::new(Some(&ctx.session_id), ikm)
        .expand(&info[..len], okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
}

/// The envelope key of the channel between clients `a` and `b` (from DH of their channel keys).
pub fn derive_channel_key(shared: &SharedSecret, ctx: &KeyContext, a: u32, b: u32) -> ChannelKey {
    let mut key = ChannelKey::from_bytes([0; 32]);
    derive_into(shared.as_bytes(), KeyPurpose::ChannelKey, ctx, a, b, key.bytes_mut());
    key
}

/// The pairwise mask seed s_ab of clients `a` and `b` (from DH of their mask keys).
pub fn derive_pairwise_mask_seed(shared: &SharedSecret, ctx: &KeyContext, a: u32, b: u32) -> MaskSeed {
    let mut seed = MaskSeed::from_bytes([0; 32]);
    derive_into(shared.as_bytes(), KeyPurpose::PairwiseMask, ctx, a, b, seed.bytes_mut());
    seed
}

/// The self mask seed of client `owner`: IKM = the canonical 32-byte encoding of the
/// self-mask secret b_u (a scalar, so that it can be Shamir-shared directly), pair (owner, owner).
pub fn derive_self_mask_seed(self_secret: &Scalar, ctx: &KeyContext, owner: u32) -> MaskSeed {
    let mut seed = MaskSeed::from_bytes([0; 32]);
    derive_into(self_secret.as_bytes(), KeyPurpose::SelfMask, ctx, owner, owner, seed.bytes_mut());
    seed
}

/// HKDF-SHA256 (RFC 5869): extract with `salt` (an empty salt is the RFC's default of 32 zero
/// bytes), then expand `info` into `okm`. Fails with [`CryptoError::KdfOutputTooLong`] if
/// `okm` is longer than [`HKDF_SHA256_MAX_OUTPUT`] bytes.
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8], okm: &mut [u8]) -> Result<(), CryptoError> {
    Hkdf::<Sha256>::new(Some(salt), ikm).expand(info, okm).map_err(|_| CryptoError::KdfOutputTooLong { len: okm.len() })
}

//! AES-256-GCM envelopes (NIST SP 800-38D) for relaying Shamir shares through the server.
//!
//! ```text
//! envelope = nonce (12 bytes, random) ‖ ciphertext (|plaintext| bytes) ‖ tag (16 bytes)
//! AAD      = "privagg/v1 envelope" (19 bytes) ‖ session_id (32) ‖ round (u64 BE)
//!            ‖ sender (u32 BE) ‖ recipient (u32 BE)                        = 67 bytes
//! ```
//!
//! The key comes from [`crate::kdf::derive_channel_key`] and is the same for both directions of
//! a channel; the AAD binds the direction, so an envelope replayed to another recipient, as
//! coming from another sender, or into another round or session fails to open.
//!
//! Nonces are 96 random bits. A channel key is fresh per round and seals a handful of
//! envelopes, far below the 2^32 messages per key that SP 800-38D §8.3 allows for random
//! nonces.

use core::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::CryptoError;

/// Domain-separation prefix of the associated data.
pub const ENVELOPE_LABEL: &[u8] = b"privagg/v1 envelope";

/// Length of [`EnvelopeContext::associated_data`].
pub const ASSOCIATED_DATA_LEN: usize = ENVELOPE_LABEL.len() + 32 + 8 + 4 + 4;

/// Nonce length in bytes.
pub const NONCE_LEN: usize = 12;

/// Tag length in bytes.
pub const TAG_LEN: usize = 16;

type GcmNonce = aes_gcm::aead::Nonce<Aes256Gcm>;
type GcmTag = aes_gcm::aead::Tag<Aes256Gcm>;

/// Bytes an envelope adds to its plaintext: nonce ‖ ciphertext ‖ tag.
pub const ENVELOPE_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A 256-bit AES-GCM key of a client-to-client channel. Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChannelKey([u8; 32]);

impl ChannelKey {
    /// Wraps raw key bytes. Protocol keys come from [`crate::kdf::derive_channel_key`]; this is
    /// for tests and known-answer vectors.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelKey(<redacted>)")
    }
}

/// The public facts an envelope is bound to (its associated data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeContext {
    /// Session identifier.
    pub session_id: [u8; 32],
    /// Round number.
    pub round: u64,
    /// Client id of the sender.
    pub sender: u32,
    /// Client id of the recipient.
    pub recipient: u32,
}

impl EnvelopeContext {
    /// `"privagg/v1 envelope" ‖ session_id ‖ round (u64 BE) ‖ sender (u32 BE) ‖ recipient (u32 BE)`.
    pub fn associated_data(&self) -> [u8; ASSOCIATED_DATA_LEN] {
        let mut ad = [0u8; ASSOCIATED_DATA_LEN];
        let (label, rest) = ad.split_at_mut(ENVELOPE_LABEL.len());
        label.copy_from_slice(ENVELOPE_LABEL);
        let (session, rest) = rest.split_at_mut(32);
        session.copy_from_slice(&self.session_id);
        let (round, rest) = rest.split_at_mut(8);
        round.copy_from_slice(&self.round.to_be_bytes());
        let (sender, recipient) = rest.split_at_mut(4);
        sender.copy_from_slice(&self.sender.to_be_bytes());
        recipient.copy_from_slice(&self.recipient.to_be_bytes());
        ad
    }
}

/// Encrypts `plaintext` under `key`, bound to `ctx`, with a fresh random 96-bit nonce from
/// `rng`. Returns `nonce ‖ ciphertext ‖ tag` ([`ENVELOPE_OVERHEAD`] bytes longer than the
/// plaintext).
///
/// # Panics
/// If `plaintext` is 64 GiB or longer (the GCM message limit, SP 800-38D §5.2.1.1).
pub fn seal<R: rand_core::CryptoRng + ?Sized>(
    key: &ChannelKey,
    ctx: &EnvelopeContext,
    plaintext: &[u8],
    rng: &mut R,
) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    seal_with_nonce(key, &nonce, &ctx.associated_data(), plaintext)
}

/// Opens an envelope made by [`seal`] with the same key and context.
///
/// Fails with [`CryptoError::EnvelopeTooShort`] if it is shorter than [`ENVELOPE_OVERHEAD`],
/// and with [`CryptoError::EnvelopeOpenFailed`] if authentication fails (wrong key or context,
/// or any modified bit); no plaintext is released in that case.
pub fn open(key: &ChannelKey, ctx: &EnvelopeContext, envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    open_with_aad(key, &ctx.associated_data(), envelope)
}

/// The GCM encryption both [`seal`] and the known-answer tests go through: explicit nonce and
/// AAD, output `nonce ‖ ciphertext ‖ tag`.
pub(crate) fn seal_with_nonce(key: &ChannelKey, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + ENVELOPE_OVERHEAD);
    out.extend_from_slice(nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .cipher()
        .encrypt_inout_detached(&GcmNonce::from(*nonce), aad, (&mut out[NONCE_LEN..]).into())
        .expect("GCM accepts messages and AAD shorter than 2^36 bytes");
    out.extend_from_slice(&tag);
    out
}

/// The GCM decryption of [`open`], with explicit AAD.
pub(crate) fn open_with_aad(key: &ChannelKey, aad: &[u8], envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if envelope.len() < ENVELOPE_OVERHEAD {
        return Err(CryptoError::EnvelopeTooShort);
    }
    let (nonce, rest) = envelope.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce = GcmNonce::try_from(nonce).map_err(|_| CryptoError::EnvelopeTooShort)?;
    let tag = GcmTag::try_from(tag).map_err(|_| CryptoError::EnvelopeTooShort)?;
    let mut plaintext = Zeroizing::new(ciphertext.to_vec());
    key.cipher()
        .decrypt_inout_detached(&nonce, aad, plaintext.as_mut_slice().into(), &tag)
        .map_err(|_| CryptoError::EnvelopeOpenFailed)?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("valid hex in test vector")
    }

    /// AES-256-GCM known answers, run through the envelope's own seal/open path.
    /// Test cases 13–16: McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", 2005,
    /// Appendix B. The last two: NIST CAVP `gcmEncryptExtIV256.rsp` (96-bit IV, 128-bit tag).
    /// Each entry: key, nonce, plaintext, aad, ciphertext, tag.
    const VECTORS: [[&str; 6]; 6] = [
        [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "",
            "",
            "530f8afbc74536b9a963b4f1c4cb738b",
        ],
        [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "00000000000000000000000000000000",
            "",
            "cea7403d4d606b6e074ec5d3baf39d18",
            "d0d1c8a799996bf0265b98b5d48ab919",
        ],
        [
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
            "",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
            "b094dac5d93471bdec1a502270e3cc6c",
        ],
        [
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ],
        [
            "92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b",
            "ac93a1a6145299bde902f21a",
            "2d71bcfa914e4ac045b2aa60955fad24",
            "1e0889016f67601c8ebea4943bc23ad6",
            "8995ae2e6df3dbf96fac7b7137bae67f",
            "eca5aa77d51d4a0a14d9c51e1da474ab",
        ],
        [
            "78dc4e0aaf52d935c3c01eea57428f00ca1fd475f5da86a49c8dd73d68c8e223",
            "d79cf22d504cc793c3fb6c8a",
            "",
            "b96baa8c1c75a671bfb2d08d06be5f36",
            "",
            "3e5d486aa2e30b22e040b85723a06e76",
        ],
    ];

    #[test]
    fn aes256_gcm_known_answers() {
        for [key, nonce, plaintext, aad, ciphertext, tag] in VECTORS {
            let key = ChannelKey::from_bytes(h(key).try_into().expect("32-byte key"));
            let nonce: [u8; NONCE_LEN] = h(nonce).try_into().expect("12-byte nonce");
            let (plaintext, aad) = (h(plaintext), h(aad));
            let expected = [nonce.to_vec(), h(ciphertext), h(tag)].concat();

            let envelope = seal_with_nonce(&key, &nonce, &aad, &plaintext);
            assert_eq!(envelope, expected);
            let opened = open_with_aad(&key, &aad, &envelope).expect("authentic");
            assert_eq!(opened.as_slice(), plaintext.as_slice());

            let mut forged = envelope.clone();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            assert_eq!(open_with_aad(&key, &aad, &forged), Err(CryptoError::EnvelopeOpenFailed));
        }
    }
}

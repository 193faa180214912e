//! Envelopes and complaints about them: the one check of an envelope's contents, which
//! the recipient runs on what it is forwarded and the server runs again, with the key a
//! complaint reveals, on what it relayed.
//!
//! A recipient v that cannot use the envelope of sender u (it does not open, its
//! plaintext is malformed, it is bound to other commitments than those relayed with it,
//! or its shares do not verify against them) reveals Z = c_v·C_u, the Diffie-Hellman value
//! of their channel keys, with a DLEQ proof ([`privagg_crypto::dleq`]) bound to
//! [`complaint_context`], and sends back the envelope. The server checks that it is the
//! envelope it relayed (it keeps only a digest of each), checks the proof (X = C_v,
//! P = C_u), derives the envelope key from Z as both clients do, and runs
//! [`RelayedEnvelope::check`]: a fault blames u, none (or a bad proof, or another
//! envelope) blames v.
//!
//! Revealing Z lets whoever holds the envelope open it, so a recipient must know that
//! the sender made exactly the bytes it complains about: otherwise a server could alter
//! an honest envelope, collect the complaint and open the original. A certified sender
//! therefore signs every envelope over [`envelope_message`]; the server checks the
//! signature when the envelope arrives and relays it, the recipient checks it before it
//! opens anything and refuses the round, revealing nothing, if it fails. A complaint is
//! then only ever about bytes the sender signed, and Z opens only what the sender itself
//! made bad.

use privagg_crypto::identity::{SIGNATURE_LEN, certificate_key};
use privagg_crypto::shamir::Share;
use privagg_crypto::{ChannelKey, EnvelopeContext, KeyContext, PublicKey, Scalar, open};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::message::{ENVELOPE_LEN, ENVELOPE_PLAINTEXT_LEN, ShareCommitments};
use crate::round_params::ClientId;

/// Domain-separation label that starts every complaint's proof context.
pub const COMPLAINT_LABEL: &[u8] = b"privagg/v1 envelope-complaint";

/// Length of [`complaint_context`].
const CONTEXT_LEN: usize = COMPLAINT_LABEL.len() + 32 + 8 + 4 + 4;

/// The context a complaint's DLEQ proof is bound to: label ‖ session id ‖ round (u64 BE) ‖
/// sender (u32 BE) ‖ recipient (u32 BE), so that a proof cannot be replayed for another
/// session, round or pair.
pub fn complaint_context(ctx: &KeyContext, sender: ClientId, recipient: ClientId) -> [u8; CONTEXT_LEN] {
    let mut out = [0u8; CONTEXT_LEN];
    let mut at = 0;
    for part in [
        COMPLAINT_LABEL,
        &ctx.session_id[..],
        &ctx.round.to_be_bytes(),
        &sender.get().to_be_bytes(),
        &recipient.get().to_be_bytes(),
    ] {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    out
}

/// What the server keeps of an envelope it relays to judge a complaint about it:
/// SHA-256 of the sealed bytes (sender and recipient are the key it is kept under).
pub(crate) fn relayed_digest(sealed: &[u8; ENVELOPE_LEN]) -> [u8; 32] {
    Sha256::digest(sealed).into()
}

/// Domain-separation label that starts every envelope signature's message.
pub const ENVELOPE_SIGNATURE_LABEL: &[u8] = b"privagg/v1 envelope-signature";

/// Length of [`envelope_message`].
pub const ENVELOPE_MESSAGE_LEN: usize = ENVELOPE_SIGNATURE_LABEL.len() + 32 + 8 + 4 + 4 + 32 + ENVELOPE_LEN;

/// What a certified sender signs for each envelope, the one definition the sender (to
/// sign), the server (to check at receipt and when judging a complaint) and the
/// recipient (to check before opening) all use: label ‖ session id ‖ round (u64 BE) ‖
/// sender (u32 BE) ‖ recipient (u32 BE) ‖ `commitments_digest` ([`ShareCommitments::digest`]
/// of the sender's commitments) ‖ the sealed envelope. The signature is thus worth
/// nothing for another session, round, pair, set of commitments or ciphertext.
pub fn envelope_message(
    ctx: &KeyContext,
    sender: ClientId,
    recipient: ClientId,
    commitments_digest: &[u8; 32],
    sealed: &[u8; ENVELOPE_LEN],
) -> [u8; ENVELOPE_MESSAGE_LEN] {
    let mut out = [0u8; ENVELOPE_MESSAGE_LEN];
    let mut at = 0;
    for part in [
        ENVELOPE_SIGNATURE_LABEL,
        &ctx.session_id[..],
        &ctx.round.to_be_bytes(),
        &sender.get().to_be_bytes(),
        &recipient.get().to_be_bytes(),
        &commitments_digest[..],
        &sealed[..],
    ] {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    out
}

/// Why an envelope's signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SignatureFault {
    /// The sender is certified but the envelope carries no signature.
    Missing,
    /// The signature does not verify under the sender's certificate.
    Invalid,
    /// The sender has no certificate, yet the envelope carries a signature.
    Unexpected,
}

/// Checks an envelope's signature against its sender's certificate (DER; `None` for a
/// sender without one, whose envelopes must be unsigned), over [`envelope_message`].
/// Envelope signatures are checked with the cofactored equation
/// ([`privagg_crypto::ed25519_cofactored`]), so that the server's batch over all of a
/// sender's envelopes ([`envelope_signatures_all_valid`]) and each recipient's check of its
/// own reach the same verdict.
pub(crate) fn check_envelope_signature(
    certificate: Option<&[u8]>,
    message: &[u8; ENVELOPE_MESSAGE_LEN],
    signature: Option<&[u8; SIGNATURE_LEN]>,
) -> Result<(), SignatureFault> {
    match (certificate, signature) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(SignatureFault::Unexpected),
        (Some(_), None) => Err(SignatureFault::Missing),
        (Some(certificate), Some(signature)) => match certificate_key(certificate) {
            Ok(key) if key.verify(message, signature) => Ok(()),
            _ => Err(SignatureFault::Invalid),
        },
    }
}

/// Whether every one of a sender's envelopes passes the check its recipient runs, given
/// as `(message, signature)` pairs ([`envelope_message`]) and the sender's certificate
/// (DER; `None`: every signature must be absent): batches of 64 instead of one check each,
/// with the same verdict (but for a chance below 2⁻¹²⁷ of passing a bad one).
pub fn envelope_signatures_all_valid(
    certificate: Option<&[u8]>,
    signed: &[(&[u8; ENVELOPE_MESSAGE_LEN], Option<&[u8; SIGNATURE_LEN]>)],
) -> bool {
    let Some(certificate) = certificate else {
        return signed.iter().all(|(_, signature)| signature.is_none());
    };
    let (Some(items), Ok(key)) = (
        signed
            .iter()
            .map(|(message, signature)| signature.map(|s| (message.as_slice(), s)))
            .collect::<Option<Vec<_>>>(),
        certificate_key(certificate),
    ) else {
        return false;
    };
    // Batches of 64 on every core: each agrees with the checks one by one, so any split does.
    items.par_chunks(64).all(|batch| key.verify_all(batch))
}

/// The associated data of the envelope from `sender` to `recipient`.
pub(crate) fn envelope_context(ctx: &KeyContext, sender: ClientId, recipient: ClientId) -> EnvelopeContext {
    EnvelopeContext { session_id: ctx.session_id, round: ctx.round, sender: sender.get(), recipient: recipient.get() }
}

/// What is wrong with an envelope; names no byte of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EnvelopeFault {
    /// Authentication failed under the channel key.
    DoesNotOpen,
    /// The plaintext is not two canonical scalars and a digest.
    Malformed,
    /// The digest sealed in it is not that of the commitments relayed with it, or those
    /// have the wrong degree or do not commit to the sender's advertised mask key.
    CommitmentMismatch,
    /// A share does not verify against the sender's commitments.
    InvalidShares,
}

/// The two shares an envelope carried, opened and bound to the relayed commitments.
pub(crate) struct OpenedShares {
    /// The share of the sender's mask secret key s_u.
    pub mask_key: Share,
    /// The share of the sender's self-mask secret b_u.
    pub self_mask: Share,
}

/// An envelope as it was relayed, with what it must agree with.
pub(crate) struct RelayedEnvelope<'a> {
    /// The round's session and number.
    pub ctx: &'a KeyContext,
    /// Who sealed it.
    pub sender: ClientId,
    /// For whom.
    pub recipient: ClientId,
    /// The sealed bytes.
    pub sealed: &'a [u8; ENVELOPE_LEN],
    /// The sender's commitments, as relayed with it.
    pub commitments: &'a ShareCommitments,
    /// The sender's advertised mask key (the mask-key commitment's constant term).
    pub sender_mask: &'a PublicKey,
    /// The round's threshold t (both commitments have t points).
    pub threshold: usize,
}

impl RelayedEnvelope<'_> {
    /// The message its sender signed, if it is certified ([`envelope_message`], with the
    /// digest of the relayed commitments).
    pub fn signed_message(&self) -> [u8; ENVELOPE_MESSAGE_LEN] {
        let digest = self.commitments.digest(&self.ctx.session_id, self.ctx.round, self.sender);
        envelope_message(self.ctx, self.sender, self.recipient, &digest, self.sealed)
    }

    /// Opens the envelope with `key` and checks its plaintext's form and its binding to
    /// the relayed commitments, but not the shares against them (see
    /// [`OpenedShares::verify`]; a recipient batches that).
    pub fn open(&self, key: &ChannelKey) -> Result<OpenedShares, EnvelopeFault> {
        let context = envelope_context(self.ctx, self.sender, self.recipient);
        let plaintext = Zeroizing::new(open(key, &context, self.sealed).map_err(|_| EnvelopeFault::DoesNotOpen)?);
        let scalar = |bytes: &[u8]| -> Option<Scalar> {
            let array: [u8; 32] = bytes.try_into().ok()?;
            Option::from(Scalar::from_canonical_bytes(array))
        };
        let (true, Some(mask_key), Some(self_mask), Some(digest)) = (
            plaintext.len() == ENVELOPE_PLAINTEXT_LEN,
            plaintext.get(..32).and_then(scalar),
            plaintext.get(32..64).and_then(scalar),
            plaintext.get(64..ENVELOPE_PLAINTEXT_LEN),
        ) else {
            return Err(EnvelopeFault::Malformed);
        };
        let c = self.commitments;
        if digest != c.digest(&self.ctx.session_id, self.ctx.round, self.sender)
            || c.mask_key.threshold() != self.threshold
            || c.self_mask.threshold() != self.threshold
            || c.mask_key.secret_commitment() != self.sender_mask.to_bytes()
        {
            return Err(EnvelopeFault::CommitmentMismatch);
        }
        let x = self.recipient.get();
        Ok(OpenedShares { mask_key: Share { x, y: mask_key }, self_mask: Share { x, y: self_mask } })
    }

    /// [`RelayedEnvelope::open`], then the shares verified against the commitments: the
    /// whole check an envelope must pass.
    pub fn check(&self, key: &ChannelKey) -> Result<OpenedShares, EnvelopeFault> {
        let shares = self.open(key)?;
        if !shares.verify(self.commitments) {
            return Err(EnvelopeFault::InvalidShares);
        }
        Ok(shares)
    }
}

impl OpenedShares {
    /// Whether both shares verify against `commitments` (Feldman).
    pub fn verify(&self, commitments: &ShareCommitments) -> bool {
        commitments.mask_key.verify(&self.mask_key) && commitments.self_mask.verify(&self.self_mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_message_binds_every_field_after_its_label() {
        let ctx = KeyContext { session_id: [1; 32], round: 7 };
        let (u, v) = (ClientId::from_index(1), ClientId::from_index(2));
        let sealed = [4u8; ENVELOPE_LEN];
        let message = envelope_message(&ctx, u, v, &[3; 32], &sealed);
        assert!(message.starts_with(ENVELOPE_SIGNATURE_LABEL));
        assert!(message.ends_with(&sealed));
        let mut other_sealed = sealed;
        other_sealed[0] ^= 1;
        let variants = [
            envelope_message(&KeyContext { session_id: [9; 32], ..ctx }, u, v, &[3; 32], &sealed),
            envelope_message(&KeyContext { round: 8, ..ctx }, u, v, &[3; 32], &sealed),
            envelope_message(&ctx, v, u, &[3; 32], &sealed),
            envelope_message(&ctx, u, v, &[5; 32], &sealed),
            envelope_message(&ctx, u, v, &[3; 32], &other_sealed),
        ];
        for (i, variant) in variants.iter().enumerate() {
            assert_ne!(variant, &message, "field {i} is not bound");
        }
    }
}

//! Who takes part in a round, and the randomness that labels its neighbour graph.
//!
//! In SecAgg+ a client shares its secrets with its k neighbours only, so whoever chooses
//! the graph's labelling chooses who can rebuild them. The server must not: were it to
//! pick the seed after seeing the cohort, it could seat its colluders around a target.
//! The labelling therefore comes from nonces the clients commit to before the cohort is
//! fixed and reveal only after:
//!
//! 1. A client asking for a round (`Ready`) sends `commitment = SHA-256("privagg/v1
//!    nonce" ‖ nonce)` for a fresh 32-byte nonce.
//! 2. The server seats the cohort and sends every client, in its `Config`, the cohort hash
//!    `C = SHA-256("privagg/v1 cohort" ‖ u32 len ‖ params ‖ u32 n ‖ n × (fingerprint ‖
//!    commitment))`, seat 1 first, where a seat's fingerprint is SHA-256 of the client's
//!    certificate (32 zero bytes without one).
//! 3. Each client reveals its nonce in `AdvertiseKeys`, signed with its keys under `C`
//!    ([`advertisement_message`]).
//! 4. Once every seat has revealed, `D = SHA-256("privagg/v1 nonces" ‖ C ‖ n × nonce)`;
//!    the labelling seed is `SHA-256("privagg/v1 labelling" ‖ D)` and the session id
//!    `SHA-256("privagg/v1 session" ‖ D)`. `KeyList` carries every seat's fingerprint and
//!    nonce, so each client recomputes `C`, the seed and the session id itself.
//!
//! Before revealing any share, each client signs the survivor set (U3) it is shown
//! ([`survivors_message`]); it answers the unmask request only if it agrees with that set
//! and at least t of its holders (itself included) signed the same set — the consistency
//! check of Bonawitz et al. (CCS 2017, §6).
//!
//! The server fixes `C` before any honest nonce is known, and cannot leave out a nonce it
//! has seen: a seat that does not reveal aborts the attempt (the next attempt starts
//! from fresh commitments). Given everything the server chose, the labelling is thus
//! uniformly random to it as long as one client is honest; its only lever is to abort
//! and re-run, drawing a fresh labelling each time, which every client allows a bounded
//! number of times per round (the service's attempt limit, 3 by default). Which
//! certified clients it seats remains its choice: that is what the corrupt fraction
//! bounds. Different cohort hashes sent to different clients do not help it either: a
//! peer's signature is over the hash the peer was sent, so neighbours with different
//! views refuse each other.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::message::{AdvertisedKeys, encode_params_bytes};
use crate::round_params::{ClientId, RoundParams};

/// The fingerprint of a seat whose client holds no certificate (token or open
/// admission, which authenticates no one to its peers).
pub const ANONYMOUS: [u8; 32] = [0; 32];

/// A seated client as the server knows it when the round starts: the commitment from its
/// `Ready` and the certificate it presented in the TLS handshake, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// `SHA-256("privagg/v1 nonce" ‖ nonce)`.
    pub commitment: [u8; 32],
    /// Its certificate (DER), if it was admitted by one.
    pub certificate: Option<Arc<[u8]>>,
}

/// One seat as `KeyList` shows it: who holds it and the nonce it revealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevealedSeat {
    /// SHA-256 of the holder's certificate ([`ANONYMOUS`] without one).
    pub fingerprint: [u8; 32],
    /// The nonce the holder committed to before the cohort was fixed.
    pub nonce: [u8; 32],
}

/// What the revealed nonces determine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Labelling {
    /// Seed of the neighbour graph's permutation.
    pub graph_seed: [u8; 32],
    /// The session id: the salt of every derived key.
    pub session_id: [u8; 32],
}

/// The commitment to `nonce` a client sends before the round.
pub fn commitment(nonce: &[u8; 32]) -> [u8; 32] {
    Sha256::new().chain_update(b"privagg/v1 nonce").chain_update(nonce).finalize().into()
}

/// The fingerprint of a seat: SHA-256 of the certificate, or [`ANONYMOUS`].
pub fn fingerprint(certificate: Option<&[u8]>) -> [u8; 32] {
    certificate.map_or(ANONYMOUS, |der| Sha256::digest(der).into())
}

/// The cohort hash `C` of a round whose seats hold `(fingerprint, commitment)`, seat 1
/// first.
pub fn cohort_hash(params: &RoundParams, seats: impl ExactSizeIterator<Item = ([u8; 32], [u8; 32])>) -> [u8; 32] {
    let params = encode_params_bytes(params);
    let mut h = Sha256::new();
    h.update(b"privagg/v1 cohort");
    h.update((params.len() as u32).to_le_bytes());
    h.update(&params);
    h.update((seats.len() as u32).to_le_bytes());
    for (fingerprint, commitment) in seats {
        h.update(fingerprint);
        h.update(commitment);
    }
    h.finalize().into()
}

/// The labelling and session id of the cohort `cohort` once every seat revealed its
/// nonce (`nonces`, seat 1 first).
pub fn labelling<'a>(cohort: &[u8; 32], nonces: impl Iterator<Item = &'a [u8; 32]>) -> Labelling {
    let mut h = Sha256::new();
    h.update(b"privagg/v1 nonces");
    h.update(cohort);
    for nonce in nonces {
        h.update(nonce);
    }
    let digest = h.finalize();
    let derive =
        |label: &[u8]| -> [u8; 32] { Sha256::new().chain_update(label).chain_update(digest).finalize().into() };
    Labelling { graph_seed: derive(b"privagg/v1 labelling"), session_id: derive(b"privagg/v1 session") }
}

/// What a client signs when it advertises: `"privagg/v1 advertise" ‖ C ‖ u32 id ‖ channel
/// key ‖ mask key ‖ nonce`. `C` binds the round's parameters (so the round number) and
/// the whole cohort, so the signature is worth nothing in any other round or seat.
pub fn advertisement_message(cohort: &[u8; 32], id: ClientId, keys: &AdvertisedKeys, nonce: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(20 + 32 + 4 + 64 + 32);
    m.extend_from_slice(b"privagg/v1 advertise");
    m.extend_from_slice(cohort);
    m.extend_from_slice(&id.get().to_le_bytes());
    m.extend_from_slice(&keys.channel.to_bytes());
    m.extend_from_slice(&keys.mask.to_bytes());
    m.extend_from_slice(nonce);
    m
}

/// The context of a client's proofs of possession of its advertised keys:
/// `"privagg/v1 key-possession" ‖ purpose ‖ C ‖ u32 id`, so that a proof holds for one key
/// purpose of one seat in one attempt only (a client cannot pass another's key off as its
/// own with the other's proof).
pub fn possession_context(cohort: &[u8; 32], id: ClientId, purpose: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(25 + purpose.len() + 32 + 4);
    m.extend_from_slice(b"privagg/v1 key-possession");
    m.extend_from_slice(purpose);
    m.extend_from_slice(cohort);
    m.extend_from_slice(&id.get().to_le_bytes());
    m
}

/// What a client signs in the consistency check: `"privagg/v1 survivors" ‖ session id ‖
/// u64 round ‖ u32 count ‖ ids ascending`. The session id binds the cohort and the
/// nonces, so the signature holds for this attempt of this round only.
pub fn survivors_message(session_id: &[u8; 32], round: u64, survivors: &[ClientId]) -> Vec<u8> {
    let mut m = Vec::with_capacity(20 + 32 + 8 + 4 + 4 * survivors.len());
    m.extend_from_slice(b"privagg/v1 survivors");
    m.extend_from_slice(session_id);
    m.extend_from_slice(&round.to_le_bytes());
    m.extend_from_slice(&(survivors.len() as u32).to_le_bytes());
    for id in survivors {
        m.extend_from_slice(&id.get().to_le_bytes());
    }
    m
}

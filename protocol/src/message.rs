//! Protocol messages and their versioned binary encoding (format in `PROTOCOL.md`).
//!
//! Every message is one frame: `version: u8 = 1`, `type: u8`, then the body; integers
//! are little-endian, lists carry a u32 count, vectors are bit-packed. The transport
//! delimits frames (in privagg, a u32 length prefix on one QUIC stream; see
//! `privagg-service`), so a frame's length is known before decoding starts and decoding
//! must consume it exactly.
//!
//! Decoding is total: any byte string decodes or returns a [`DecodeError`]; counts are
//! checked against [`Limits`] and against the bytes left before anything is allocated.
//! The type bytes [`SERVICE_TYPES`] belong to the application protocol above this one;
//! these decoders refuse them with [`DecodeError::ReservedType`].

use std::ops::RangeInclusive;
use std::sync::Arc;

use curve25519_dalek::Scalar;
use privagg_crypto::dleq::{self, DleqProof};
use privagg_crypto::identity::SIGNATURE_LEN;
use privagg_crypto::vss::Commitment;
use privagg_crypto::{PrgKind, PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer, truncate_utf8};
use crate::cohort::{self, RevealedSeat};
use crate::error::DecodeError;
use crate::packing::PackedVector;
use crate::round_params::{ClientId, MAX_CLIENTS, MAX_DIM, RoundParams};

/// Version byte that starts every frame.
pub const PROTOCOL_VERSION: u8 = 1;

/// Type bytes reserved for the service messages of the application protocol above
/// SecAgg (admission, upload flow control, end of session). The protocol's own types are
/// `0x01..=0x07` (server → client) and `0x11..=0x17` (client → server).
pub const SERVICE_TYPES: RangeInclusive<u8> = 0x30..=0x3f;

/// Longest abort detail an honest sender writes, in bytes (well within the decoder's
/// [`Limits::max_detail`]).
pub const MAX_ABORT_DETAIL: usize = 512;

/// Length of the encrypted share pair one client sends another: nonce (12) ‖
/// AES-GCM(share of the mask key ‖ share of the self-mask secret ‖ digest of the sender's
/// share commitments) (96) ‖ tag (16).
pub const ENVELOPE_LEN: usize = privagg_crypto::ENVELOPE_OVERHEAD + ENVELOPE_PLAINTEXT_LEN;

/// Plaintext length of an envelope: two 32-byte scalars and the 32-byte
/// [`ShareCommitments::digest`].
pub(crate) const ENVELOPE_PLAINTEXT_LEN: usize = 96;

/// Domain-separation label of [`ShareCommitments::digest`].
pub const COMMITMENTS_LABEL: &[u8] = b"privagg/v1 share-commitments";

/// The Feldman commitments ([`privagg_crypto::vss`]) to a client's two sharing
/// polynomials, both of degree t − 1: the mask key's (whose constant term is the advertised
/// mask public key) and the self-mask secret's (whose constant term is `b_u·G`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareCommitments {
    /// Commitment to the polynomial sharing the mask secret key s_u.
    pub mask_key: Commitment,
    /// Commitment to the polynomial sharing the self-mask secret b_u.
    pub self_mask: Commitment,
}

impl ShareCommitments {
    /// Both commitments keeping only their encodings ([`Commitment::without_points`]): how
    /// the server holds every client's, checking shares against them only when judging a
    /// complaint or rebuilding secrets (at n = 1,000, 57 MB of points otherwise).
    pub fn without_points(self) -> Self {
        Self { mask_key: self.mask_key.without_points(), self_mask: self.self_mask.without_points() }
    }

    /// SHA-256(label ‖ session id ‖ round (u64 BE) ‖ sender (u32 BE) ‖ t (u32 BE) ‖ the
    /// mask key's points ‖ t (u32 BE) ‖ the self mask's points): what the sender seals into each of its
    /// envelopes, so that every recipient checks it was relayed the same commitments.
    pub fn digest(&self, session_id: &[u8; 32], round: u64, sender: ClientId) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(COMMITMENTS_LABEL);
        h.update(session_id);
        h.update(round.to_be_bytes());
        h.update(sender.get().to_be_bytes());
        for commitment in [&self.mask_key, &self.self_mask] {
            h.update((commitment.threshold() as u32).to_be_bytes());
            for point in commitment.encodings() {
                h.update(point);
            }
        }
        h.finalize().into()
    }
}

/// Phase 2, client → server: the commitments to the client's sharing polynomials and one
/// envelope per advertising neighbour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareKeys {
    /// The sender's Feldman commitments (relayed with every one of its envelopes).
    pub commitments: Arc<ShareCommitments>,
    /// The envelopes, one per neighbour in the key list.
    pub envelopes: Vec<Envelope>,
}

/// Phase 2→3, server → client: an envelope and its sender's commitments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedShare {
    /// The envelope (`peer` = its sender).
    pub envelope: Envelope,
    /// The sender's commitments, as the sender gave them to the server.
    pub commitments: Arc<ShareCommitments>,
}

/// Phase 3, client → server: the recipient of an envelope it could not open, or whose
/// shares are malformed or do not verify against the sender's commitments, reveals the
/// Diffie-Hellman value of its channel with the sender and proves it, so that the server
/// can open the envelope it relayed and see who lied (see `PROTOCOL.md`, "Complaints").
#[derive(Clone, PartialEq, Eq)]
pub struct EnvelopeComplaint {
    /// The sender of the envelope complained about.
    pub sender: ClientId,
    /// The envelope complained about, as it was forwarded: the server keeps only a digest
    /// of each envelope it relays, and judges these bytes if they match it.
    pub sealed: Box<[u8; ENVELOPE_LEN]>,
    /// Z = c_v·C_u, the canonical encoding of the channel's Diffie-Hellman value (v the
    /// complainer, u the sender). Secret until sent; zeroized on drop.
    pub shared: Zeroizing<[u8; 32]>,
    /// The proof that `shared` is the complainer's channel secret times the sender's
    /// channel key ([`privagg_crypto::dleq`]), bound to the complaint's context.
    pub proof: DleqProof,
    /// M = m_v·M_u, the Diffie-Hellman value of the pair's mask keys, which both derive
    /// their pairwise mask seed from. The complainer holds none of the sender's shares and
    /// does not mask with it, so revealing M costs it nothing; the server removes the
    /// sender's half of the pair's mask with it if the sender's masked input is in the
    /// sum. Zeroized on drop.
    pub mask_shared: Zeroizing<[u8; 32]>,
    /// The proof that `mask_shared` is the complainer's mask secret times the sender's
    /// mask key, bound to the same context.
    pub mask_proof: DleqProof,
}

impl std::fmt::Debug for EnvelopeComplaint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvelopeComplaint({:?})", self.sender)
    }
}

/// Upper bounds the decoder enforces before allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest list of client entries (keys, envelopes, ids, shares).
    pub max_clients: u32,
    /// Longest vector, in words.
    pub max_dim: u32,
    /// Largest application payload in a `Config`, in bytes.
    pub max_app_data: u64,
    /// Longest abort detail text, in bytes.
    pub max_detail: u32,
    /// Longest client certificate, in bytes.
    pub max_certificate: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_clients: MAX_CLIENTS,
            max_dim: MAX_DIM,
            max_app_data: 1 << 30,
            max_detail: 1024,
            max_certificate: 16 * 1024,
        }
    }
}

/// The two public keys a client advertises: `channel` (for the envelopes) and `mask`
/// (for the pairwise masks), with proofs that it knows their secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvertisedKeys {
    /// Public key of the channel key pair c_u.
    pub channel: PublicKey,
    /// Public key of the mask key pair s_u.
    pub mask: PublicKey,
    /// Proofs of possession of both secrets, bound to the seat
    /// ([`cohort::possession_context`]). Without them a client colluding with the server
    /// could advertise a key related to an honest client's (X_w + a·G) and have its
    /// neighbours' complaints reveal values about the honest client's keys.
    pub possession: KeyPossession,
}

/// Schnorr proofs ([`privagg_crypto::dleq::prove_possession`]) that a client knows the
/// secrets of the two keys it advertises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyPossession {
    /// For the channel key.
    pub channel: DleqProof,
    /// For the mask key.
    pub mask: DleqProof,
}

impl AdvertisedKeys {
    /// The public keys of `channel` and `mask`, with proofs of possession for seat `id`
    /// of the round whose cohort hash is `cohort`.
    pub fn prove<R: rand_core::CryptoRng + ?Sized>(
        channel: &SecretKey,
        mask: &SecretKey,
        cohort: &[u8; 32],
        id: ClientId,
        rng: &mut R,
    ) -> Self {
        let possession = KeyPossession {
            channel: dleq::prove_possession(channel, &cohort::possession_context(cohort, id, b"channel"), rng),
            mask: dleq::prove_possession(mask, &cohort::possession_context(cohort, id, b"mask"), rng),
        };
        Self { channel: channel.public_key(), mask: mask.public_key(), possession }
    }

    /// Whether both proofs of possession verify for seat `id` of the round whose cohort
    /// hash is `cohort`.
    pub fn possession_proven(&self, cohort: &[u8; 32], id: ClientId) -> bool {
        let proven = |key: &PublicKey, proof: &DleqProof, purpose: &[u8]| {
            dleq::verify_possession(key, proof, &cohort::possession_context(cohort, id, purpose)).is_ok()
        };
        proven(&self.channel, &self.possession.channel, b"channel")
            && proven(&self.mask, &self.possession.mask, b"mask")
    }
}

/// Phase 1, client → server: the client's keys and the nonce it committed to, signed
/// with its certificate's key when it has one (see [`crate::cohort`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advertisement {
    /// The two public keys.
    pub keys: AdvertisedKeys,
    /// The nonce whose commitment the cohort hash holds.
    pub nonce: [u8; 32],
    /// Ed25519 signature over [`crate::cohort::advertisement_message`]; `None` for a
    /// client without a certificate.
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

/// A certificate and the signature its key made over a client's advertisement.
#[derive(Clone, PartialEq, Eq)]
pub struct Certified {
    /// The client's certificate (DER), shared by every key list that carries it.
    pub certificate: Arc<[u8]>,
    /// Its signature over the advertisement.
    pub signature: [u8; SIGNATURE_LEN],
}

impl std::fmt::Debug for Certified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certified({} bytes)", self.certificate.len())
    }
}

/// One client's entry in a key list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    /// Its seat.
    pub id: ClientId,
    /// Its keys.
    pub keys: AdvertisedKeys,
    /// Its certificate and signature, if it has a certificate.
    pub certified: Option<Certified>,
}

/// Phase 0, server → client: the round's parameters, the recipient's id, the cohort hash
/// and an opaque application payload (for privagg: the model and the DP parameters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Round parameters.
    pub params: RoundParams,
    /// The recipient's seat.
    pub client_id: ClientId,
    /// The cohort hash `C`: parameters, and every seat's fingerprint and commitment.
    pub cohort: [u8; 32],
    /// Application payload for this recipient alone (for privagg: the round log's proof
    /// for this client); opaque to the protocol, empty unless the application fills it.
    pub client_data: Vec<u8>,
    /// Application payload, shared by all recipients (hence the `Arc`).
    pub app_data: Arc<[u8]>,
}

/// Phase 1, server → client: every seat's fingerprint and revealed nonce, from which the
/// recipient derives the graph and the session id, and the entries of the recipient and
/// of its neighbours, ascending by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyList {
    /// Every seat, seat 1 first (the same list for every recipient).
    pub cohort: Arc<[RevealedSeat]>,
    /// The recipient's entry and its neighbours' (each shared, on the server, by every
    /// list that carries it: n·k entries of ≈ 600 B would otherwise be held at once).
    pub entries: Vec<Arc<PeerEntry>>,
}

/// An encrypted pair of Shamir shares, the peer it is for (in `ShareKeys`) or from (in
/// `ForwardedShares`), and its sender's signature.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Recipient (client → server) or sender (server → client).
    pub peer: ClientId,
    /// `ENVELOPE_LEN` bytes of AES-GCM envelope.
    pub sealed: Box<[u8; ENVELOPE_LEN]>,
    /// The sender's Ed25519 signature, under its certificate, over
    /// [`crate::complaint::envelope_message`] (session, round, sender, recipient, digest
    /// of the sender's commitments, `sealed`); `None` for a sender without a certificate.
    /// The server relays it unchanged, so that the recipient can check that the sender
    /// made exactly these bytes before it complains about them.
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let signed = if self.signature.is_some() { "signed" } else { "unsigned" };
        write!(f, "Envelope({:?}, {signed})", self.peer)
    }
}

/// A Shamir share of some client's secret, as revealed in `UnmaskResponse`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RevealedShare {
    /// The client whose secret this share is of.
    pub owner: ClientId,
    /// The share's value (its x-coordinate is the sender's id).
    pub value: Scalar,
}

impl std::fmt::Debug for RevealedShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RevealedShare({:?})", self.owner)
    }
}

/// Phase 5, server → client: which of the recipient's neighbours (itself included)
/// survived to the sum, and which dropped after sharing their keys, with the survivor-set
/// signatures of its neighbours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// Owners whose self-mask share is requested (their input is in the sum).
    pub survivors: Vec<ClientId>,
    /// Owners whose mask-key share is requested (they dropped after ShareKeys).
    pub dropped: Vec<ClientId>,
    /// Signatures of the recipient's neighbours over the survivor set of the consistency
    /// check, ascending by signer (empty without certificates).
    pub signatures: Vec<SurvivorSignature>,
}

/// A client's signature over the survivor set it was shown
/// ([`crate::cohort::survivors_message`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SurvivorSignature {
    /// Who signed.
    pub signer: ClientId,
    /// Ed25519 signature under the signer's certificate.
    pub signature: [u8; SIGNATURE_LEN],
}

impl std::fmt::Debug for SurvivorSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SurvivorSignature({:?})", self.signer)
    }
}

/// Phase 5, client → server: the requested shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskResponse {
    /// Shares of the self-mask secrets b_v of the survivors.
    pub self_mask_shares: Vec<RevealedShare>,
    /// Shares of the mask keys s_v of the dropped.
    pub mask_key_shares: Vec<RevealedShare>,
}

/// Why a round (or a client's part in it) ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbortCode {
    /// Fewer clients than the round's minimum remained.
    TooFewClients,
    /// A peer broke the protocol.
    ProtocolViolation,
    /// The server could not reconstruct a needed secret.
    ReconstructionFailed,
    /// The client leaves the round of its own accord (e.g. wrong dimension, policy).
    Leaving,
    /// The server is shutting down.
    Shutdown,
    /// The server dropped this client from the round (it missed a deadline or broke the
    /// protocol); the round may go on without it.
    Dropped,
}

impl AbortCode {
    fn to_byte(self) -> u8 {
        match self {
            Self::TooFewClients => 1,
            Self::ProtocolViolation => 2,
            Self::ReconstructionFailed => 3,
            Self::Leaving => 4,
            Self::Shutdown => 5,
            Self::Dropped => 6,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::TooFewClients,
            2 => Self::ProtocolViolation,
            3 => Self::ReconstructionFailed,
            4 => Self::Leaving,
            5 => Self::Shutdown,
            6 => Self::Dropped,
            _ => return None,
        })
    }
}

/// An abort, from either side: a code and a human-readable detail (at most
/// `Limits::max_detail` bytes of UTF-8; never secrets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abort {
    /// Machine-readable reason.
    pub code: AbortCode,
    /// Human-readable detail.
    pub detail: String,
}

impl Abort {
    /// An abort whose detail is cut to [`MAX_ABORT_DETAIL`] bytes at a character
    /// boundary.
    pub fn new(code: AbortCode, detail: &str) -> Self {
        Self { code, detail: truncate_utf8(detail, MAX_ABORT_DETAIL).to_owned() }
    }
}

/// Messages the server sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// Phase 0: round parameters.
    Config(Config),
    /// Phase 1: advertised keys of the neighbourhood.
    KeyList(KeyList),
    /// Phase 2→3: envelopes addressed to the recipient, from neighbours that shared keys,
    /// with their senders' commitments.
    ForwardedShares(Vec<ForwardedShare>),
    /// Phase 4: the clients whose masked input is in the sum (U3), for every client of
    /// it to sign (the consistency check of Bonawitz et al., §6).
    ConsistencyCheck(Vec<ClientId>),
    /// Phase 5: the unmasking request.
    UnmaskRequest(UnmaskRequest),
    /// The sum is recovered; `inputs` clients' inputs are in it.
    RoundComplete {
        /// Number of inputs in the released sum.
        inputs: u32,
    },
    /// The round ended without a result.
    Abort(Abort),
}

/// Messages a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Phase 1: the client's two public keys and its nonce (boxed: a decoded key carries
    /// its point, which would make every message hundreds of bytes).
    AdvertiseKeys(Box<Advertisement>),
    /// Phase 2: the share commitments and one envelope per advertising neighbour.
    ShareKeys(ShareKeys),
    /// Phase 3: the masked input.
    MaskedInput(PackedVector),
    /// Phase 3, before the masked input and at most once: proofs that envelopes from
    /// these senders were bad, ascending by sender.
    Complaints(Vec<EnvelopeComplaint>),
    /// Phase 4: the client's signature over the survivor set (`None` without a
    /// certificate).
    SurvivorsSigned(Option<[u8; SIGNATURE_LEN]>),
    /// Phase 5: the requested shares.
    UnmaskResponse(UnmaskResponse),
    /// The client leaves the round.
    Leave(Leave),
}

/// A client leaving the round: why, and the nonce it committed to, so that a client that
/// declines a round it was seated for still lets the graph be labelled without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leave {
    /// The nonce whose commitment the cohort hash holds.
    pub nonce: [u8; 32],
    /// Why, in human-readable form (at most [`MAX_ABORT_DETAIL`] bytes; never secrets).
    pub detail: String,
}

impl Leave {
    /// A leave message whose detail is cut to [`MAX_ABORT_DETAIL`] bytes at a character
    /// boundary.
    pub fn new(nonce: [u8; 32], detail: &str) -> Self {
        Self { nonce, detail: truncate_utf8(detail, MAX_ABORT_DETAIL).to_owned() }
    }
}

mod tag {
    pub const CONFIG: u8 = 0x01;
    pub const KEY_LIST: u8 = 0x02;
    pub const FORWARDED_SHARES: u8 = 0x03;
    pub const UNMASK_REQUEST: u8 = 0x04;
    pub const ROUND_COMPLETE: u8 = 0x05;
    pub const SERVER_ABORT: u8 = 0x06;
    pub const CONSISTENCY_CHECK: u8 = 0x07;
    pub const ADVERTISE_KEYS: u8 = 0x11;
    pub const SHARE_KEYS: u8 = 0x12;
    pub const MASKED_INPUT: u8 = 0x13;
    pub const UNMASK_RESPONSE: u8 = 0x14;
    pub const LEAVE: u8 = 0x15;
    pub const SURVIVORS_SIGNED: u8 = 0x16;
    pub const COMPLAINTS: u8 = 0x17;
}

const KEYS_LEN: usize = 2 * (PublicKey::LEN + DleqProof::LEN);
/// A signer's id and its signature.
const SIGNED_LEN: usize = ID_LEN + SIGNATURE_LEN;
const ID_LEN: usize = 4;
const SEAT_LEN: usize = 64;
/// Shortest key-list entry: id, keys and the flag of an unsigned entry.
const ENTRY_MIN_LEN: usize = ID_LEN + KEYS_LEN + 1;
const SHARE_LEN: usize = ID_LEN + 32;
/// A complaint: sender, the envelope, two revealed values with their proofs.
const COMPLAINT_LEN: usize = ID_LEN + ENVELOPE_LEN + 2 * (32 + DleqProof::LEN);
/// Shortest envelope entry: id, envelope and the flag of an unsigned envelope.
const ENVELOPE_ENTRY_MIN_LEN: usize = ID_LEN + ENVELOPE_LEN + 1;
/// Shortest forwarded envelope: an unsigned envelope entry, and commitments of degree 0
/// (t = 1).
const FORWARDED_MIN_LEN: usize = ENVELOPE_ENTRY_MIN_LEN + 8 + 64;

impl Config {
    /// The encoded message split before the application payload: `head ‖ app_data`
    /// is exactly `ServerMessage::Config(self).encode()`. A server sending one payload to
    /// many clients writes the shared bytes without copying them per client.
    pub fn encode_split(&self) -> (Vec<u8>, Arc<[u8]>) {
        let mut w = Writer::message(tag::CONFIG, 72 + self.client_data.len());
        encode_params(&mut w, &self.params);
        w.u32(self.client_id.get());
        w.bytes(&self.cohort);
        w.len_prefixed(&self.client_data);
        w.u32(u32::try_from(self.app_data.len()).unwrap_or(u32::MAX));
        (w.into_bytes(), self.app_data.clone())
    }
}

impl ShareCommitments {
    /// The commitments as they appear in a `ForwardedShares` entry after the envelope.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(commitments_len(self));
        encode_commitments(&mut w, self);
        w.into_bytes()
    }
}

/// `ForwardedShares(forwarded)` encoded as pairs `(own, commitments)` whose concatenation
/// is exactly [`ServerMessage::encode`]'s: `own` is the message header (in the first pair)
/// and one envelope entry, and `commitments(c)` gives the entry's commitments encoded by
/// [`ShareCommitments::encode`]. A server relaying every sender's commitments to each of
/// its k neighbours encodes them once and shares them, instead of holding n·k copies of
/// t points (at n = 1,000 and k = 314, 3.6 GB instead of 11 MB).
pub fn encode_forwarded_split(
    forwarded: &[ForwardedShare],
    mut commitments: impl FnMut(&Arc<ShareCommitments>) -> Arc<[u8]>,
) -> Vec<(Vec<u8>, Arc<[u8]>)> {
    let mut header = Writer::message(tag::FORWARDED_SHARES, 4);
    header.u32(forwarded.len() as u32);
    let mut own = header.into_bytes();
    let mut parts = Vec::with_capacity(forwarded.len());
    for f in forwarded {
        let mut w = Writer::with_capacity(envelope_entry_len(&f.envelope));
        encode_envelope(&mut w, &f.envelope);
        own.extend_from_slice(&w.into_bytes());
        parts.push((std::mem::take(&mut own), commitments(&f.commitments)));
    }
    if parts.is_empty() {
        parts.push((own, Arc::from([])));
    }
    parts
}

/// The seats of a key list's cohort, encoded (the part every recipient's key list shares).
pub fn encode_cohort(cohort: &[RevealedSeat]) -> Vec<u8> {
    let mut w = Writer::with_capacity(cohort.len() * SEAT_LEN);
    for seat in cohort {
        w.bytes(&seat.fingerprint);
        w.bytes(&seat.nonce);
    }
    w.into_bytes()
}

/// One client's key list entry, encoded: id, keys with their proofs, and its certificate
/// and signature if it has them (the part every key list that lists the client shares).
pub fn encode_entry(entry: &PeerEntry) -> Vec<u8> {
    let certified = entry.certified.as_ref().map_or(0, |c| 4 + c.certificate.len() + SIGNATURE_LEN);
    let mut w = Writer::with_capacity(ENTRY_MIN_LEN + certified);
    w.u32(entry.id.get());
    encode_keys(&mut w, &entry.keys);
    match &entry.certified {
        None => w.u8(0),
        Some(c) => {
            w.u8(1);
            w.len_prefixed(&c.certificate);
            w.bytes(&c.signature);
        }
    }
    w.into_bytes()
}

/// [`ServerMessage::KeyList`] split into (own, shared) parts whose concatenation is exactly
/// [`ServerMessage::encode`]'s: `cohort` is [`encode_cohort`] of the list's cohort, and
/// `entry(e)` gives [`encode_entry`] of each entry. A server sending n key lists encodes
/// the cohort once and each client's entry once and shares them, instead of holding n
/// copies of the cohort and n·k entries (26 MB at n = 300, k = 156).
pub fn encode_key_list_split(
    list: &KeyList,
    cohort: Arc<[u8]>,
    mut entry: impl FnMut(&PeerEntry) -> Arc<[u8]>,
) -> Vec<(Vec<u8>, Arc<[u8]>)> {
    let mut header = Writer::message(tag::KEY_LIST, 4);
    header.u32(list.cohort.len() as u32);
    let mut count = Writer::with_capacity(4);
    count.u32(list.entries.len() as u32);
    let mut parts = vec![(header.into_bytes(), cohort), (count.into_bytes(), Arc::from([]))];
    parts.extend(list.entries.iter().map(|e| (Vec::new(), entry(e))));
    parts
}

impl ServerMessage {
    /// Short name of the message type, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Config(_) => "Config",
            Self::KeyList(_) => "KeyList",
            Self::ForwardedShares(_) => "ForwardedShares",
            Self::ConsistencyCheck(_) => "ConsistencyCheck",
            Self::UnmaskRequest(_) => "UnmaskRequest",
            Self::RoundComplete { .. } => "RoundComplete",
            Self::Abort(_) => "Abort",
        }
    }

    /// Encodes the message as one frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Config(c) => {
                let (mut head, app_data) = c.encode_split();
                head.extend_from_slice(&app_data);
                head
            }
            Self::KeyList(k) => {
                let parts =
                    encode_key_list_split(k, Arc::from(encode_cohort(&k.cohort)), |e| Arc::from(encode_entry(e)));
                parts.iter().flat_map(|(own, shared)| own.iter().chain(shared.iter())).copied().collect()
            }
            Self::ForwardedShares(forwarded) => {
                let len: usize =
                    forwarded.iter().map(|f| envelope_entry_len(&f.envelope) + commitments_len(&f.commitments)).sum();
                let mut w = Writer::message(tag::FORWARDED_SHARES, 4 + len);
                w.u32(forwarded.len() as u32);
                for f in forwarded {
                    encode_envelope(&mut w, &f.envelope);
                    encode_commitments(&mut w, &f.commitments);
                }
                w.into_bytes()
            }
            Self::ConsistencyCheck(survivors) => {
                let mut w = Writer::message(tag::CONSISTENCY_CHECK, 4 + 4 * survivors.len());
                encode_ids(&mut w, survivors);
                w.into_bytes()
            }
            Self::UnmaskRequest(r) => {
                let len = 12 + 4 * (r.survivors.len() + r.dropped.len()) + SIGNED_LEN * r.signatures.len();
                let mut w = Writer::message(tag::UNMASK_REQUEST, len);
                encode_ids(&mut w, &r.survivors);
                encode_ids(&mut w, &r.dropped);
                w.u32(r.signatures.len() as u32);
                for s in &r.signatures {
                    w.u32(s.signer.get());
                    w.bytes(&s.signature);
                }
                w.into_bytes()
            }
            Self::RoundComplete { inputs } => {
                let mut w = Writer::message(tag::ROUND_COMPLETE, 4);
                w.u32(*inputs);
                w.into_bytes()
            }
            Self::Abort(a) => encode_abort(tag::SERVER_ABORT, a),
        }
    }

    /// Decodes one frame; never panics, never allocates beyond `limits`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let (ty, mut r) = Reader::message(bytes)?;
        let msg = match ty {
            tag::CONFIG => {
                let params = decode_params(&mut r)?;
                let client_id = decode_id(&mut r)?;
                let cohort = r.array()?;
                let client_data = r.len_prefixed("client data", limits.max_app_data)?.to_vec();
                let app_data = r.len_prefixed("application data", limits.max_app_data)?;
                Self::Config(Config { params, client_id, cohort, client_data, app_data: Arc::from(app_data) })
            }
            tag::KEY_LIST => {
                let seats = r.count("cohort seats", limits.max_clients.into(), SEAT_LEN)?;
                let mut cohort = Vec::with_capacity(seats);
                for _ in 0..seats {
                    cohort.push(RevealedSeat { fingerprint: r.array()?, nonce: r.array()? });
                }
                let count = r.count("key list entries", limits.max_clients.into(), ENTRY_MIN_LEN)?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let (id, keys) = (decode_id(&mut r)?, decode_keys(&mut r)?);
                    let certified = match r.u8()? {
                        0 => None,
                        1 => Some(Certified {
                            certificate: Arc::from(r.len_prefixed("certificate", limits.max_certificate.into())?),
                            signature: r.array()?,
                        }),
                        _ => return Err(DecodeError::InvalidField("signature flag")),
                    };
                    entries.push(Arc::new(PeerEntry { id, keys, certified }));
                }
                Self::KeyList(KeyList { cohort: cohort.into(), entries })
            }
            tag::FORWARDED_SHARES => {
                let count = r.count("forwarded envelopes", limits.max_clients.into(), FORWARDED_MIN_LEN)?;
                let mut out = Vec::with_capacity(count);
                for _ in 0..count {
                    let envelope = decode_envelope(&mut r)?;
                    out.push(ForwardedShare { envelope, commitments: Arc::new(decode_commitments(&mut r, limits)?) });
                }
                Self::ForwardedShares(out)
            }
            tag::CONSISTENCY_CHECK => Self::ConsistencyCheck(decode_ids(&mut r, limits)?),
            tag::UNMASK_REQUEST => {
                let (survivors, dropped) = (decode_ids(&mut r, limits)?, decode_ids(&mut r, limits)?);
                let count = r.count("survivor signatures", limits.max_clients.into(), SIGNED_LEN)?;
                let mut signatures = Vec::with_capacity(count);
                for _ in 0..count {
                    signatures.push(SurvivorSignature { signer: decode_id(&mut r)?, signature: r.array()? });
                }
                Self::UnmaskRequest(UnmaskRequest { survivors, dropped, signatures })
            }
            tag::ROUND_COMPLETE => Self::RoundComplete { inputs: r.u32()? },
            tag::SERVER_ABORT => Self::Abort(decode_abort(&mut r, limits)?),
            other => return Err(unknown_type(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

impl ClientMessage {
    /// Short name of the message type, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AdvertiseKeys(_) => "AdvertiseKeys",
            Self::ShareKeys(_) => "ShareKeys",
            Self::MaskedInput(_) => "MaskedInput",
            Self::Complaints(_) => "Complaints",
            Self::SurvivorsSigned(_) => "SurvivorsSigned",
            Self::UnmaskResponse(_) => "UnmaskResponse",
            Self::Leave(_) => "Leave",
        }
    }

    /// The phase in which a client sends this message (`None` for a leave).
    pub fn phase(&self) -> Option<crate::Phase> {
        use crate::Phase;
        match self {
            Self::AdvertiseKeys(_) => Some(Phase::AdvertiseKeys),
            Self::ShareKeys(_) => Some(Phase::ShareKeys),
            Self::MaskedInput(_) | Self::Complaints(_) => Some(Phase::MaskedInput),
            Self::SurvivorsSigned(_) => Some(Phase::Consistency),
            Self::UnmaskResponse(_) => Some(Phase::Unmask),
            Self::Leave(_) => None,
        }
    }

    /// Encodes the message as one frame.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::AdvertiseKeys(a) => {
                let mut w = Writer::message(tag::ADVERTISE_KEYS, KEYS_LEN + 33 + SIGNATURE_LEN);
                encode_keys(&mut w, &a.keys);
                w.bytes(&a.nonce);
                encode_signature(&mut w, a.signature.as_ref());
                w.into_bytes()
            }
            Self::ShareKeys(share_keys) => {
                let len = commitments_len(&share_keys.commitments)
                    + 4
                    + share_keys.envelopes.iter().map(envelope_entry_len).sum::<usize>();
                let mut w = Writer::message(tag::SHARE_KEYS, len);
                encode_commitments(&mut w, &share_keys.commitments);
                encode_envelopes(&mut w, &share_keys.envelopes);
                w.into_bytes()
            }
            Self::MaskedInput(v) => {
                let mut w = Writer::message(tag::MASKED_INPUT, 5 + v.as_bytes().len());
                w.u32(v.dim());
                w.u8(v.bits());
                w.bytes(v.as_bytes());
                w.into_bytes()
            }
            Self::Complaints(complaints) => {
                let mut w = Writer::message(tag::COMPLAINTS, 4 + COMPLAINT_LEN * complaints.len());
                w.u32(complaints.len() as u32);
                for c in complaints {
                    w.u32(c.sender.get());
                    w.bytes(c.sealed.as_ref());
                    w.bytes(c.shared.as_ref());
                    w.bytes(&c.proof.to_bytes());
                    w.bytes(c.mask_shared.as_ref());
                    w.bytes(&c.mask_proof.to_bytes());
                }
                w.into_bytes()
            }
            Self::SurvivorsSigned(signature) => {
                let mut w = Writer::message(tag::SURVIVORS_SIGNED, 1 + SIGNATURE_LEN);
                encode_signature(&mut w, signature.as_ref());
                w.into_bytes()
            }
            Self::UnmaskResponse(r) => {
                let len = 8 + SHARE_LEN * (r.self_mask_shares.len() + r.mask_key_shares.len());
                let mut w = Writer::message(tag::UNMASK_RESPONSE, len);
                encode_shares(&mut w, &r.self_mask_shares);
                encode_shares(&mut w, &r.mask_key_shares);
                w.into_bytes()
            }
            Self::Leave(leave) => {
                let mut w = Writer::message(tag::LEAVE, 36 + leave.detail.len());
                w.bytes(&leave.nonce);
                w.len_prefixed(leave.detail.as_bytes());
                w.into_bytes()
            }
        }
    }

    /// Decodes one frame; never panics, never allocates beyond `limits`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let (ty, mut r) = Reader::message(bytes)?;
        let msg = match ty {
            tag::ADVERTISE_KEYS => {
                let (keys, nonce) = (decode_keys(&mut r)?, r.array()?);
                let signature = decode_signature(&mut r)?;
                Self::AdvertiseKeys(Box::new(Advertisement { keys, nonce, signature }))
            }
            tag::SHARE_KEYS => {
                let commitments = Arc::new(decode_commitments(&mut r, limits)?);
                Self::ShareKeys(ShareKeys { commitments, envelopes: decode_envelopes(&mut r, limits)? })
            }
            tag::MASKED_INPUT => {
                let dim = r.u32()?;
                if dim > limits.max_dim {
                    return Err(DecodeError::LimitExceeded {
                        what: "vector length",
                        value: dim.into(),
                        limit: limits.max_dim.into(),
                    });
                }
                let bits = r.u8()?;
                let rest = r.take(r.remaining())?;
                Self::MaskedInput(PackedVector::from_bytes(dim, bits, rest.to_vec())?)
            }
            tag::COMPLAINTS => {
                let count = r.count("complaints", limits.max_clients.into(), COMPLAINT_LEN)?;
                let mut complaints = Vec::with_capacity(count);
                for _ in 0..count {
                    let sender = decode_id(&mut r)?;
                    let sealed = Box::new(r.array()?);
                    let shared = Zeroizing::new(r.array()?);
                    let proof = DleqProof::from_bytes(&r.array()?).map_err(|_| DecodeError::InvalidScalar)?;
                    let mask_shared = Zeroizing::new(r.array()?);
                    let mask_proof = DleqProof::from_bytes(&r.array()?).map_err(|_| DecodeError::InvalidScalar)?;
                    complaints.push(EnvelopeComplaint { sender, sealed, shared, proof, mask_shared, mask_proof });
                }
                Self::Complaints(complaints)
            }
            tag::SURVIVORS_SIGNED => Self::SurvivorsSigned(decode_signature(&mut r)?),
            tag::UNMASK_RESPONSE => Self::UnmaskResponse(UnmaskResponse {
                self_mask_shares: decode_shares(&mut r, limits)?,
                mask_key_shares: decode_shares(&mut r, limits)?,
            }),
            tag::LEAVE => {
                Self::Leave(Leave { nonce: r.array()?, detail: r.text("leave detail", limits.max_detail.into())? })
            }
            other => return Err(unknown_type(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// The canonical encoding of round parameters (also hashed into the session id).
pub(crate) fn encode_params_bytes(p: &RoundParams) -> Vec<u8> {
    let mut w = Writer::with_capacity(64);
    encode_params(&mut w, p);
    w.into_bytes()
}

fn encode_params(w: &mut Writer, p: &RoundParams) {
    w.u64(p.round);
    w.u32(p.num_clients);
    w.u32(p.neighbours);
    w.u32(p.threshold);
    w.u32(p.min_clients);
    w.u32(p.dim);
    w.u8(p.bits);
    w.u8(match p.prg {
        PrgKind::Aes128Ctr => 1,
        PrgKind::ChaCha20 => 2,
    });
}

fn decode_params(r: &mut Reader<'_>) -> Result<RoundParams, DecodeError> {
    Ok(RoundParams {
        round: r.u64()?,
        num_clients: r.u32()?,
        neighbours: r.u32()?,
        threshold: r.u32()?,
        min_clients: r.u32()?,
        dim: r.u32()?,
        bits: r.u8()?,
        prg: match r.u8()? {
            1 => PrgKind::Aes128Ctr,
            2 => PrgKind::ChaCha20,
            _ => return Err(DecodeError::InvalidField("prg")),
        },
    })
}

fn decode_id(r: &mut Reader<'_>) -> Result<ClientId, DecodeError> {
    ClientId::new(r.u32()?).ok_or(DecodeError::InvalidField("client id"))
}

fn encode_ids(w: &mut Writer, ids: &[ClientId]) {
    w.u32(ids.len() as u32);
    for id in ids {
        w.u32(id.get());
    }
}

fn decode_ids(r: &mut Reader<'_>, limits: &Limits) -> Result<Vec<ClientId>, DecodeError> {
    let count = r.count("id list", limits.max_clients.into(), ID_LEN)?;
    (0..count).map(|_| decode_id(r)).collect()
}

fn encode_keys(w: &mut Writer, keys: &AdvertisedKeys) {
    w.bytes(&keys.channel.to_bytes());
    w.bytes(&keys.mask.to_bytes());
    w.bytes(&keys.possession.channel.to_bytes());
    w.bytes(&keys.possession.mask.to_bytes());
}

fn decode_keys(r: &mut Reader<'_>) -> Result<AdvertisedKeys, DecodeError> {
    let channel = PublicKey::from_bytes(&r.array()?).map_err(|_| DecodeError::InvalidPublicKey)?;
    let mask = PublicKey::from_bytes(&r.array()?).map_err(|_| DecodeError::InvalidPublicKey)?;
    let mut proof = || DleqProof::from_bytes(&r.array()?).map_err(|_| DecodeError::InvalidScalar);
    let possession = KeyPossession { channel: proof()?, mask: proof()? };
    Ok(AdvertisedKeys { channel, mask, possession })
}

/// A u8 flag (0 none, 1 present) and, if present, the signature.
fn encode_signature(w: &mut Writer, signature: Option<&[u8; SIGNATURE_LEN]>) {
    match signature {
        None => w.u8(0),
        Some(signature) => {
            w.u8(1);
            w.bytes(signature);
        }
    }
}

fn decode_signature(r: &mut Reader<'_>) -> Result<Option<[u8; SIGNATURE_LEN]>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.array()?)),
        _ => Err(DecodeError::InvalidField("signature flag")),
    }
}

fn encode_envelopes(w: &mut Writer, envelopes: &[Envelope]) {
    w.u32(envelopes.len() as u32);
    for e in envelopes {
        encode_envelope(w, e);
    }
}

/// Encoded length of one envelope entry: id, sealed bytes, flag and signature if any.
fn envelope_entry_len(e: &Envelope) -> usize {
    ENVELOPE_ENTRY_MIN_LEN + e.signature.map_or(0, |_| SIGNATURE_LEN)
}

/// An envelope entry: id `peer`, the sealed bytes, then a u8 flag (0 unsigned, 1 signed)
/// and, if signed, the sender's signature [64].
fn encode_envelope(w: &mut Writer, e: &Envelope) {
    w.u32(e.peer.get());
    w.bytes(e.sealed.as_ref());
    encode_signature(w, e.signature.as_ref());
}

fn decode_envelope(r: &mut Reader<'_>) -> Result<Envelope, DecodeError> {
    let peer = decode_id(r)?;
    let sealed = Box::new(r.array()?);
    let signature = match r.u8()? {
        0 => None,
        1 => Some(r.array()?),
        _ => return Err(DecodeError::InvalidField("envelope signature flag")),
    };
    Ok(Envelope { peer, sealed, signature })
}

fn commitments_len(c: &ShareCommitments) -> usize {
    8 + 32 * (c.mask_key.threshold() + c.self_mask.threshold())
}

/// Each commitment as a u32 count t then its t points: the mask key's, then the self mask's.
fn encode_commitments(w: &mut Writer, c: &ShareCommitments) {
    for commitment in [&c.mask_key, &c.self_mask] {
        w.u32(commitment.threshold() as u32);
        for point in commitment.encodings() {
            w.bytes(point);
        }
    }
}

fn decode_commitments(r: &mut Reader<'_>, limits: &Limits) -> Result<ShareCommitments, DecodeError> {
    let points = |r: &mut Reader<'_>| -> Result<Commitment, DecodeError> {
        let t = r.count("commitment degree", limits.max_clients.into(), 32)?;
        if t == 0 {
            return Err(DecodeError::InvalidField("commitment degree"));
        }
        let mut encodings = Vec::with_capacity(t);
        for _ in 0..t {
            encodings.push(r.array()?);
        }
        Commitment::from_encodings(encodings).map_err(|_| DecodeError::InvalidPublicKey)
    };
    let mask_key = points(r)?;
    Ok(ShareCommitments { mask_key, self_mask: points(r)? })
}

fn decode_envelopes(r: &mut Reader<'_>, limits: &Limits) -> Result<Vec<Envelope>, DecodeError> {
    let count = r.count("envelopes", limits.max_clients.into(), ENVELOPE_ENTRY_MIN_LEN)?;
    (0..count).map(|_| decode_envelope(r)).collect()
}

fn encode_shares(w: &mut Writer, shares: &[RevealedShare]) {
    w.u32(shares.len() as u32);
    for s in shares {
        w.u32(s.owner.get());
        w.bytes(s.value.as_bytes());
    }
}

fn decode_shares(r: &mut Reader<'_>, limits: &Limits) -> Result<Vec<RevealedShare>, DecodeError> {
    let count = r.count("shares", limits.max_clients.into(), SHARE_LEN)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let owner = decode_id(r)?;
        out.push(RevealedShare { owner, value: decode_scalar(r)? });
    }
    Ok(out)
}

/// A canonical 32-byte scalar; non-canonical encodings are rejected.
pub(crate) fn decode_scalar(r: &mut Reader<'_>) -> Result<Scalar, DecodeError> {
    Option::from(Scalar::from_canonical_bytes(r.array()?)).ok_or(DecodeError::InvalidScalar)
}

fn encode_abort(ty: u8, a: &Abort) -> Vec<u8> {
    let mut w = Writer::message(ty, 5 + a.detail.len());
    w.u8(a.code.to_byte());
    w.len_prefixed(a.detail.as_bytes());
    w.into_bytes()
}

fn decode_abort(r: &mut Reader<'_>, limits: &Limits) -> Result<Abort, DecodeError> {
    let code = AbortCode::from_byte(r.u8()?).ok_or(DecodeError::InvalidField("abort code"))?;
    let detail = r.text("abort detail", limits.max_detail.into())?;
    Ok(Abort { code, detail })
}

/// The error for a type byte this direction does not know: reserved for the service
/// layer, or unknown.
fn unknown_type(ty: u8) -> DecodeError {
    if SERVICE_TYPES.contains(&ty) { DecodeError::ReservedType(ty) } else { DecodeError::UnknownMessageType(ty) }
}

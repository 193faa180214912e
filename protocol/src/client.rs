//! The client side of one round, as a state machine that takes server messages and
//! returns the message to send back. It reads no clock and opens no socket.
//!
//! ```text
//! AwaitingConfig ──Config──▶ AwaitingKeyList ──KeyList──▶ AwaitingShares
//!   ──ForwardedShares──▶ (AwaitingInput ──set_input──▶) AwaitingConsistency
//!   (a bad, validly signed envelope: ──ForwardedShares──▶ Complaints, AwaitingInput ──follow_up/set_input──▶ …)
//!   ──ConsistencyCheck──▶ AwaitingUnmask ──UnmaskRequest──▶ AwaitingResult
//!   ──RoundComplete──▶ Completed
//! any state ──Abort or a refused message──▶ Failed
//! ```
//!
//! The input may be set at any time before the masked input is due, so key exchange can
//! overlap local training. The protections of an honest client live here: it checks
//! every list against its own view of the neighbourhood, and it answers one unmask
//! request only, never with both shares of the same peer.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use curve25519_dalek::Scalar;
use privagg_crypto::identity::{IdentityError, IdentityKey, TrustRoot, verify_signed_by};
use privagg_crypto::{
    ChannelKey, KeyContext, MaskSeed, MaskSign, SecretKey, derive_channel_key, derive_pairwise_mask_seed,
    derive_self_mask_seed, dleq, seal, shamir, vss,
};
use rand_core::CryptoRng;
use zeroize::{Zeroize, Zeroizing};

use crate::cohort::{self, ANONYMOUS, RevealedSeat};
use crate::complaint::{
    OpenedShares, RelayedEnvelope, SignatureFault, check_envelope_signature, complaint_context, envelope_context,
    envelope_message,
};
use crate::error::ClientError;
use crate::graph::NeighbourGraph;
use crate::graph_params::{AdversaryClass, lowest_safe_threshold};
use crate::masking;
use crate::message::{
    AdvertisedKeys, Advertisement, ClientMessage, Config, ENVELOPE_LEN, ENVELOPE_PLAINTEXT_LEN, Envelope,
    EnvelopeComplaint, ForwardedShare, KeyList, Leave, PeerEntry, RevealedShare, ServerMessage, ShareCommitments,
    ShareKeys, SurvivorSignature, UnmaskRequest, UnmaskResponse,
};
use crate::packing::PackedVector;
use crate::round_params::{ClientId, RoundParams};

/// What a client accepts from a server, beyond the protocol's own invariants.
///
/// The server chooses the neighbour count k and the threshold t of every round, so the
/// client checks them itself: it accepts a round only if t is high enough that the
/// server, even helped by the corrupt neighbours the policy assumes, cannot rebuild both
/// of the client's secrets. Against a server that may lie about who dropped (the default,
/// [`AdversaryClass::SemiMaliciousServer`]) that is 2t ≥ k + 2 + c, with c the corrupt
/// neighbours a fraction `corrupt_fraction` of all clients gives
/// ([`crate::graph_params::corrupt_neighbour_bound`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ClientPolicy {
    /// Smallest Shamir threshold the client accepts (at least 2), whatever the rule.
    pub min_threshold: u32,
    /// Largest vector the client is willing to mask, in words.
    pub max_dim: u32,
    /// What the client assumes the server may do. A curious server only needs t above
    /// the corrupt neighbours; one that lies about dropouts needs 2t ≥ k + 2 + c.
    pub server: AdversaryClass,
    /// Fraction of all clients assumed corrupt and colluding with the server, in [0, 1).
    pub corrupt_fraction: f64,
    /// Fraction of its graph neighbours whose shares a client must receive before it
    /// masks its input, in [0, 1]: a server that withholds honest neighbours' envelopes
    /// cannot leave the client masking with its colluders alone. The client also always
    /// requires one more neighbour than the corrupt neighbours its policy assumes.
    pub min_neighbour_fraction: f64,
}

impl Default for ClientPolicy {
    /// A server that may lie about who dropped, 5 % of clients corrupt (the server's own
    /// default assumption).
    fn default() -> Self {
        Self {
            min_threshold: 2,
            max_dim: crate::MAX_DIM,
            server: AdversaryClass::SemiMaliciousServer,
            corrupt_fraction: 0.05,
            min_neighbour_fraction: 0.5,
        }
    }
}

impl ClientPolicy {
    /// The smallest threshold this policy accepts for `params`, and the corrupt
    /// neighbours it was computed for.
    pub fn required_threshold(&self, params: &RoundParams) -> Result<(u32, u32), ClientError> {
        let (n, k) = (params.num_clients, params.neighbours);
        let (lowest, corrupt) = lowest_safe_threshold(n, k, self.corrupt_fraction, self.server)
            .map_err(|e| ClientError::PolicyRefused(format!("cannot assess the threshold: {e}")))?;
        Ok((lowest.max(self.min_threshold), corrupt))
    }

    /// Checks that `present` of `degree` neighbours (`corrupt` assumed corrupt) are
    /// enough to mask with: the policy's fraction, and one more than the corrupt ones.
    fn check_present(&self, present: usize, degree: u32, corrupt: u32) -> Result<(), ClientError> {
        let fraction = (self.min_neighbour_fraction.clamp(0.0, 1.0) * f64::from(degree)).ceil() as usize;
        let required = fraction.max(corrupt as usize + 1).min(degree as usize);
        if present < required {
            return Err(ClientError::NeighbourhoodShrunk { present, degree, required });
        }
        Ok(())
    }
}

/// A client's certified identity, and the root that certifies its peers. With it the
/// client signs what it advertises, each envelope it sends and the survivor set it is
/// shown, and accepts only neighbours (and their envelopes) signed the same way under a
/// certificate from the same enrollment authority.
#[derive(Clone)]
pub struct Identity {
    /// This client's certificate (DER).
    pub certificate: Arc<[u8]>,
    /// The private key `certificate` certifies.
    pub key: Arc<IdentityKey>,
    /// The enrollment authority's root.
    pub root: Arc<TrustRoot>,
    /// The time (seconds since the Unix epoch) at which peers' certificates must be
    /// valid: the shell's clock when the round starts.
    pub now: u64,
}

impl Identity {
    /// An identity from a certificate (DER), its PKCS#8 Ed25519 key and the authority's
    /// root (DER), checking peers at `now` (seconds since the Unix epoch). Refuses a key
    /// that is not the certificate's and a certificate the root does not vouch for now.
    pub fn from_der(certificate: &[u8], key: &[u8], root: &[u8], now: u64) -> Result<Self, IdentityError> {
        let root = TrustRoot::from_der(root)?;
        let key = IdentityKey::from_pkcs8(key)?;
        let probe = b"privagg/v1 key check";
        root.verify(certificate, now)?.verify_signature(probe, &key.sign(probe)).map_err(|_| IdentityError::Key)?;
        Ok(Self { certificate: certificate.into(), key: Arc::new(key), root: Arc::new(root), now })
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("certificate_len", &self.certificate.len()).field("now", &self.now).finish()
    }
}

/// Where the client is in the round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Waiting for the round's parameters.
    AwaitingConfig,
    /// Keys advertised; waiting for the neighbourhood's keys.
    AwaitingKeyList,
    /// Shares sent; waiting for the neighbours' envelopes.
    AwaitingShares,
    /// Envelopes received; waiting for [`ClientRound::set_input`].
    AwaitingInput,
    /// Masked input sent; waiting for the survivor set to sign.
    AwaitingConsistency,
    /// Survivor set signed; waiting for the unmask request.
    AwaitingUnmask,
    /// Shares revealed; waiting for the server to report the result.
    AwaitingResult,
    /// The round completed with this client's input in the sum.
    Completed,
    /// The round ended for this client without completing.
    Failed,
}

impl ClientState {
    fn describe(self) -> &'static str {
        match self {
            Self::AwaitingConfig => "awaiting the config",
            Self::AwaitingKeyList => "awaiting the key list",
            Self::AwaitingShares => "awaiting forwarded shares",
            Self::AwaitingInput => "awaiting the input",
            Self::AwaitingConsistency => "awaiting the survivor set",
            Self::AwaitingUnmask => "awaiting the unmask request",
            Self::AwaitingResult => "awaiting the result",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// This client's shares of a neighbour's two secrets (or of its own).
struct HeldShares {
    mask_key: Zeroizing<Scalar>,
    self_mask: Zeroizing<Scalar>,
}

/// What the client knows once the round's parameters arrive.
struct Seat {
    params: RoundParams,
    id: ClientId,
    /// The cohort hash the config committed to.
    cohort: [u8; 32],
    /// Corrupt neighbours the policy assumes.
    corrupt_neighbours: u32,
    channel_key: SecretKey,
    mask_key: SecretKey,
    /// What it advertised: the public keys with their proofs of possession.
    keys: AdvertisedKeys,
}

/// What the client knows once the neighbourhood's keys arrive.
struct Session {
    ctx: KeyContext,
    /// Neighbours in the graph.
    degree: u32,
    peers: BTreeMap<ClientId, AdvertisedKeys>,
    /// AEAD keys shared with each peer; the same key serves both directions.
    channel_keys: BTreeMap<ClientId, ChannelKey>,
    self_mask_secret: Zeroizing<Scalar>,
    /// Shares held, by owner: this client's own, then those of neighbours whose envelopes
    /// arrived (the client's view of who shared keys).
    held: BTreeMap<ClientId, HeldShares>,
    /// Neighbours' certificates (verified against the root), for their survivor-set
    /// signatures.
    certificates: BTreeMap<ClientId, Arc<[u8]>>,
    /// The survivor set this client signed, once it has.
    survivors: Option<Vec<ClientId>>,
}

/// One client's part in one round.
pub struct ClientRound {
    policy: ClientPolicy,
    identity: Option<Identity>,
    /// The nonce committed to before the round; revealed in `AdvertiseKeys`.
    nonce: [u8; 32],
    state: ClientState,
    seat: Option<Seat>,
    session: Option<Session>,
    /// The attempt's session id, kept after the secrets of `session` are dropped.
    session_id: Option<[u8; 32]>,
    input: Option<Vec<u64>>,
    app_data: Option<std::sync::Arc<[u8]>>,
}

impl ClientRound {
    /// A client waiting for a round's `Config`, with a fresh nonce whose
    /// [`commitment`](Self::commitment) it sends when it asks for the round. With an
    /// `identity` it signs its advertisement and accepts only certified neighbours; a
    /// policy that assumes a malicious server refuses every round without one.
    pub fn new<R: CryptoRng + ?Sized>(policy: ClientPolicy, identity: Option<Identity>, rng: &mut R) -> Self {
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        Self {
            policy,
            identity,
            nonce,
            state: ClientState::AwaitingConfig,
            seat: None,
            session: None,
            session_id: None,
            input: None,
            app_data: None,
        }
    }

    /// Moves the clock at which peers' certificates must be valid to `unix_now` (seconds
    /// since the Unix epoch): the shell calls it as messages arrive, so that a server
    /// that keeps the client waiting cannot have it accept certificates that expired
    /// meanwhile.
    pub fn set_clock(&mut self, unix_now: u64) {
        if let Some(identity) = &mut self.identity {
            identity.now = unix_now;
        }
    }

    /// The commitment to this round's nonce, sent before the cohort is fixed.
    pub fn commitment(&self) -> [u8; 32] {
        cohort::commitment(&self.nonce)
    }

    /// Where the client is.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The round's parameters, once the config has arrived.
    pub fn params(&self) -> Option<&RoundParams> {
        self.seat.as_ref().map(|s| &s.params)
    }

    /// The client's id in this round, once the config has arrived.
    pub fn id(&self) -> Option<ClientId> {
        self.seat.as_ref().map(|s| s.id)
    }

    /// The application payload of the config, once it has arrived.
    pub fn app_data(&self) -> Option<&std::sync::Arc<[u8]>> {
        self.app_data.as_ref()
    }

    /// The attempt's session id (the transcript hash of its cohort and every seat's
    /// nonce: unique to this attempt of this round), once the key list has arrived. The
    /// server knows the same id; a round log names the attempts it unmasked by it.
    pub fn session_id(&self) -> Option<[u8; 32]> {
        self.session_id
    }

    /// Handles one server message; returns the reply to send, if any. Any error ends the
    /// client's round (state [`ClientState::Failed`]); the caller should then tell the
    /// server with [`ClientRound::leave`].
    pub fn receive<R: CryptoRng + ?Sized>(
        &mut self,
        msg: ServerMessage,
        rng: &mut R,
    ) -> Result<Option<ClientMessage>, ClientError> {
        let result = self.dispatch(msg, rng);
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// Sets the input: `dim` words, each below 2^bits. Returns the masked input if the
    /// neighbours' envelopes are already in; otherwise it is sent when they arrive.
    /// Before the config arrives the input is kept unchecked and checked then.
    pub fn set_input(&mut self, words: Vec<u64>) -> Result<Option<ClientMessage>, ClientError> {
        if self.input.is_some() {
            return Err(ClientError::InputAlreadySet);
        }
        if let Some(seat) = &self.seat {
            check_input(&seat.params, &words)?;
        }
        self.input = Some(words);
        if self.state == ClientState::AwaitingInput {
            let result = self.masked_input();
            if result.is_err() {
                self.fail();
            }
            return result.map(Some);
        }
        Ok(None)
    }

    /// The message that tells the server this client leaves the round, with its nonce
    /// (revealing it costs nothing and lets the round go on without it, even before the
    /// config arrived); ends the round for this client.
    pub fn leave(&mut self, detail: &str) -> ClientMessage {
        self.fail();
        ClientMessage::Leave(Leave::new(self.nonce, detail))
    }

    fn fail(&mut self) {
        self.state = ClientState::Failed;
        self.session = None;
        self.seat = None;
        if let Some(input) = &mut self.input {
            input.zeroize();
        }
    }

    fn dispatch<R: CryptoRng + ?Sized>(
        &mut self,
        msg: ServerMessage,
        rng: &mut R,
    ) -> Result<Option<ClientMessage>, ClientError> {
        match (self.state, msg) {
            (_, ServerMessage::Abort(a)) => Err(ClientError::Aborted { code: a.code, detail: a.detail }),
            (ClientState::AwaitingConfig, ServerMessage::Config(c)) => self.on_config(c, rng).map(Some),
            (ClientState::AwaitingKeyList, ServerMessage::KeyList(k)) => self.on_key_list(k, rng).map(Some),
            (ClientState::AwaitingShares, ServerMessage::ForwardedShares(e)) => self.on_forwarded_shares(e, rng),
            (ClientState::AwaitingConsistency, ServerMessage::ConsistencyCheck(u3)) => {
                self.on_consistency_check(u3).map(Some)
            }
            (ClientState::AwaitingUnmask, ServerMessage::UnmaskRequest(r)) => self.on_unmask_request(r).map(Some),
            // An anonymous cohort has no consistency round: nobody's signature would count.
            (ClientState::AwaitingConsistency, ServerMessage::UnmaskRequest(r)) if self.identity.is_none() => {
                self.on_unmask_request(r).map(Some)
            }
            (
                ClientState::AwaitingConsistency | ClientState::AwaitingUnmask | ClientState::AwaitingResult,
                ServerMessage::RoundComplete { .. },
            ) => {
                // Early success: the server may finish without this client's shares.
                self.state = ClientState::Completed;
                self.session = None;
                self.seat = None;
                Ok(None)
            }
            (state, msg) => Err(ClientError::UnexpectedMessage { state: state.describe(), message: msg.name() }),
        }
    }

    fn on_config<R: CryptoRng + ?Sized>(&mut self, config: Config, rng: &mut R) -> Result<ClientMessage, ClientError> {
        let params = config.params;
        params.validate()?;
        let (required, corrupt_neighbours) = self.policy.required_threshold(&params)?;
        if params.threshold < required {
            return Err(ClientError::UnsafeThreshold { threshold: params.threshold, required, corrupt_neighbours });
        }
        if params.dim > self.policy.max_dim {
            return Err(ClientError::PolicyRefused(format!(
                "dimension {} exceeds the allowed {}",
                params.dim, self.policy.max_dim
            )));
        }
        if self.policy.server == AdversaryClass::SemiMaliciousServer && self.identity.is_none() {
            return Err(ClientError::IdentityRequired);
        }
        let id = params.client(config.client_id.get()).ok_or(ClientError::InvalidClientId(config.client_id.get()))?;
        if let Some(input) = &self.input {
            check_input(&params, input)?;
        }
        let channel_key = SecretKey::generate(rng);
        let mask_key = SecretKey::generate(rng);
        let keys = AdvertisedKeys::prove(&channel_key, &mask_key, &config.cohort, id, rng);
        let signature = self
            .identity
            .as_ref()
            .map(|identity| identity.key.sign(&cohort::advertisement_message(&config.cohort, id, &keys, &self.nonce)));
        self.seat = Some(Seat { params, id, cohort: config.cohort, corrupt_neighbours, channel_key, mask_key, keys });
        self.app_data = Some(config.app_data);
        self.state = ClientState::AwaitingKeyList;
        Ok(ClientMessage::AdvertiseKeys(Box::new(Advertisement { keys, nonce: self.nonce, signature })))
    }

    /// Checks the revealed cohort against the hash the config committed to, derives the
    /// graph and the session id from it, and accepts entries of this client's neighbours
    /// only — each, with an identity, certified and signed, and enough of them — then
    /// shares its secrets with them.
    fn on_key_list<R: CryptoRng + ?Sized>(&mut self, list: KeyList, rng: &mut R) -> Result<ClientMessage, ClientError> {
        let seat = self.seat.as_ref().ok_or(ClientError::OwnKeysMissing)?;
        check_cohort(seat, &list.cohort, self.identity.as_ref(), &self.nonce)?;
        let labelling = cohort::labelling(&seat.cohort, list.cohort.iter().map(|s| &s.nonce));
        let graph = NeighbourGraph::new(seat.params.num_clients, seat.params.neighbours, &labelling.graph_seed);
        let neighbours = graph.neighbours(seat.id);
        let mut certificates = BTreeMap::new();
        let mut saw_own = false;
        let mut peers = BTreeMap::new();
        let mut seen_keys = HashSet::new();
        let mut previous: Option<ClientId> = None;
        for entry in list.entries {
            let id = entry.id;
            if previous.is_some_and(|p| p >= id) {
                return Err(if previous == Some(id) {
                    ClientError::DuplicatePeer(id)
                } else {
                    ClientError::UnexpectedPeer(id)
                });
            }
            previous = Some(id);
            if id != seat.id && neighbours.binary_search(&id).is_err() {
                return Err(ClientError::UnexpectedPeer(id));
            }
            if !seen_keys.insert(entry.keys.channel.to_bytes()) || !seen_keys.insert(entry.keys.mask.to_bytes()) {
                return Err(ClientError::ReusedKey(id));
            }
            if id == seat.id {
                if entry.keys != seat.keys {
                    return Err(ClientError::OwnKeysMissing);
                }
                saw_own = true;
            } else {
                if !entry.keys.possession_proven(&seat.cohort, id) {
                    return Err(ClientError::UnprovenKeys(id));
                }
                if let Some(identity) = &self.identity {
                    authenticate(identity, &seat.cohort, &entry, &list.cohort[id.index()])?;
                }
                if let Some(certified) = &entry.certified {
                    certificates.insert(id, certified.certificate.clone());
                }
                peers.insert(id, entry.keys);
            }
        }
        if !saw_own {
            return Err(ClientError::OwnKeysMissing);
        }
        check_alive(peers.len() + 1, seat.params.threshold)?;
        // A neighbour without an entry was refused by the server; a server that refuses
        // honest ones to isolate this client meets the policy's floor.
        self.policy.check_present(peers.len(), graph.degree(), seat.corrupt_neighbours)?;

        let ctx = KeyContext { session_id: labelling.session_id, round: seat.params.round };
        let self_mask_secret = Zeroizing::new(Scalar::random(rng));
        let holders: Vec<u32> = std::iter::once(seat.id).chain(peers.keys().copied()).map(ClientId::get).collect();
        let threshold = seat.params.threshold as usize;
        let (key_shares, mask_key) = vss::split(seat.mask_key.as_scalar(), threshold, &holders, rng)?;
        let (self_mask_shares, self_mask) = vss::split(&self_mask_secret, threshold, &holders, rng)?;
        let commitments = Arc::new(ShareCommitments { mask_key, self_mask });
        let digest = commitments.digest(&ctx.session_id, ctx.round, seat.id);

        let mut held = BTreeMap::new();
        let mut channel_keys = BTreeMap::new();
        let mut envelopes = Vec::with_capacity(peers.len());
        for (k, b) in key_shares.iter().zip(&self_mask_shares) {
            let holder = ClientId::new(k.x).ok_or(ClientError::InvalidClientId(0))?;
            if holder == seat.id {
                held.insert(holder, HeldShares { mask_key: Zeroizing::new(k.y), self_mask: Zeroizing::new(b.y) });
                continue;
            }
            let peer_keys = peers.get(&holder).ok_or(ClientError::UnexpectedPeer(holder))?;
            let key = channel_key(seat, &ctx, holder, peer_keys)?;
            let mut plaintext = Zeroizing::new([0u8; ENVELOPE_PLAINTEXT_LEN]);
            plaintext[..32].copy_from_slice(k.y.as_bytes());
            plaintext[32..64].copy_from_slice(b.y.as_bytes());
            plaintext[64..].copy_from_slice(&digest);
            let sealed = seal(&key, &envelope_context(&ctx, seat.id, holder), plaintext.as_slice(), rng);
            let sealed: Box<[u8; ENVELOPE_LEN]> =
                sealed.into_boxed_slice().try_into().map_err(|_| ClientError::EnvelopeRejected(holder))?;
            // Signed, so that the recipient can prove the server relayed what this client
            // sent and complain safely if this client sent something bad.
            let signature = self
                .identity
                .as_ref()
                .map(|identity| identity.key.sign(&envelope_message(&ctx, seat.id, holder, &digest, &sealed)));
            envelopes.push(Envelope { peer: holder, sealed, signature });
            channel_keys.insert(holder, key);
        }
        self.session_id = Some(ctx.session_id);
        self.session = Some(Session {
            ctx,
            degree: graph.degree(),
            peers,
            channel_keys,
            self_mask_secret,
            held,
            certificates,
            survivors: None,
        });
        self.state = ClientState::AwaitingShares;
        Ok(ClientMessage::ShareKeys(ShareKeys { commitments, envelopes }))
    }

    /// Checks, before anything else, that each envelope comes from a neighbour (once)
    /// and, with an identity, carries its sender's valid signature over exactly the
    /// relayed bytes and commitments; a failure means the server tampered with what it
    /// relays, and the client refuses the round revealing nothing
    /// ([`ClientError::UnsignedEnvelope`], [`ClientError::BadEnvelopeSignature`]).
    ///
    /// Then it opens each envelope, checks that the commitments relayed with it are the
    /// ones the neighbour sealed into it (their digest), of degree t − 1 and committing
    /// to its advertised mask key, and that the shares it dealt verify against them. A
    /// neighbour whose envelope fails is treated as if it had not sent one (no share of
    /// it held, no mask with it) and complained about: the reply is then a
    /// [`ClientMessage::Complaints`], and the masked input follows from
    /// [`ClientRound::follow_up`] (or [`ClientRound::set_input`]). Complaining is safe
    /// because the sender provably made the bytes complained about (or, without an
    /// identity, because the policy trusts the server to relay faithfully).
    fn on_forwarded_shares<R: CryptoRng + ?Sized>(
        &mut self,
        forwarded: Vec<ForwardedShare>,
        rng: &mut R,
    ) -> Result<Option<ClientMessage>, ClientError> {
        let (Some(seat), Some(session)) = (self.seat.as_ref(), self.session.as_mut()) else {
            return Err(ClientError::OwnKeysMissing);
        };
        let threshold = seat.params.threshold as usize;
        let mut seen = HashSet::with_capacity(forwarded.len());
        for share in &forwarded {
            let sender = share.envelope.peer;
            let relayed = relayed_envelope(session, seat.id, threshold, share)?;
            if session.held.contains_key(&sender) || !seen.insert(sender) {
                return Err(ClientError::DuplicatePeer(sender));
            }
            if self.identity.is_some() {
                let certificate = session.certificates.get(&sender).ok_or(ClientError::UnsignedPeer(sender))?;
                check_envelope_signature(
                    Some(certificate),
                    &relayed.signed_message(),
                    share.envelope.signature.as_ref(),
                )
                .map_err(|fault| match fault {
                    SignatureFault::Missing => ClientError::UnsignedEnvelope(sender),
                    SignatureFault::Invalid | SignatureFault::Unexpected => ClientError::BadEnvelopeSignature(sender),
                })?;
            }
        }
        let mut received: Vec<(ClientId, Arc<ShareCommitments>, OpenedShares)> = Vec::with_capacity(forwarded.len());
        let mut faulty: Vec<ClientId> = Vec::new();
        for share in &forwarded {
            let sender = share.envelope.peer;
            let key = session.channel_keys.get(&sender).ok_or(ClientError::UnexpectedPeer(sender))?;
            match relayed_envelope(session, seat.id, threshold, share)?.open(key) {
                Ok(shares) => received.push((sender, share.commitments.clone(), shares)),
                Err(_) => faulty.push(sender),
            }
        }
        // One multiscalar multiplication for every share received; one by one only to
        // name the culprits.
        let items: Vec<(&vss::Commitment, &shamir::Share)> =
            received.iter().flat_map(|(_, c, s)| [(&c.mask_key, &s.mask_key), (&c.self_mask, &s.self_mask)]).collect();
        if !vss::verify_many(&items) {
            faulty.extend(received.iter().filter(|(_, c, s)| !s.verify(c)).map(|r| r.0));
            received.retain(|r| !faulty.contains(&r.0));
        }
        for (sender, _, shares) in received {
            let (k, b) = (&shares.mask_key, &shares.self_mask);
            session.held.insert(sender, HeldShares { mask_key: Zeroizing::new(k.y), self_mask: Zeroizing::new(b.y) });
        }
        // Revealing a channel value lets the server open what it relayed: safe only if it
        // relayed what the sender sent. With an identity, every envelope was checked above
        // as signed by its sender, so a complaint opens only what the sender itself made
        // bad. Without one, only a client that trusts its server to relay faithfully
        // complains (a policy against a deviating server requires an identity anyway).
        if let Some(&sender) = faulty.first()
            && self.identity.is_none()
            && self.policy.server != AdversaryClass::CuriousServer
        {
            return Err(ClientError::EnvelopeRejected(sender));
        }
        check_alive(session.held.len(), seat.params.threshold)?;
        self.policy.check_present(session.held.len() - 1, session.degree, seat.corrupt_neighbours)?;
        self.state = ClientState::AwaitingInput;
        if !faulty.is_empty() {
            faulty.sort_unstable();
            let mut complaints = Vec::with_capacity(faulty.len());
            for sender in faulty {
                let keys = session.peers.get(&sender).ok_or(ClientError::UnexpectedPeer(sender))?;
                let context = complaint_context(&session.ctx, sender, seat.id);
                let (shared, proof) = dleq::prove(&seat.channel_key, &keys.channel, &context, rng);
                let (mask_shared, mask_proof) = dleq::prove(&seat.mask_key, &keys.mask, &context, rng);
                let sealed = forwarded
                    .iter()
                    .find(|f| f.envelope.peer == sender)
                    .map(|f| f.envelope.sealed.clone())
                    .ok_or(ClientError::UnexpectedPeer(sender))?;
                complaints.push(EnvelopeComplaint { sender, sealed, shared, proof, mask_shared, mask_proof });
            }
            return Ok(Some(ClientMessage::Complaints(complaints)));
        }
        self.follow_up()
    }

    /// The message due without a server message to prompt it: the masked input, once the
    /// complaints that preceded it are sent and the input is set (`None` otherwise). A
    /// driver calls it after sending a [`ClientMessage::Complaints`]. An error ends the
    /// client's round, as in [`ClientRound::receive`].
    pub fn follow_up(&mut self) -> Result<Option<ClientMessage>, ClientError> {
        if self.state != ClientState::AwaitingInput || self.input.is_none() {
            return Ok(None);
        }
        let result = self.masked_input();
        if result.is_err() {
            self.fail();
        }
        result.map(Some)
    }

    /// y = x + PRG(b_u) + Σ_{v<u} PRG(s_uv) − Σ_{v>u} PRG(s_uv) mod 2^bits, over the
    /// neighbours v whose envelopes arrived.
    fn masked_input(&mut self) -> Result<ClientMessage, ClientError> {
        let (Some(seat), Some(session), Some(mut words)) =
            (self.seat.as_ref(), self.session.as_ref(), self.input.take())
        else {
            return Err(ClientError::OwnKeysMissing);
        };
        let mut masks = Vec::with_capacity(session.held.len());
        masks.push((derive_self_mask_seed(&session.self_mask_secret, &session.ctx, seat.id.get()), MaskSign::Add));
        for &peer in session.held.keys().filter(|&&p| p != seat.id) {
            let keys = session.peers.get(&peer).ok_or(ClientError::UnexpectedPeer(peer))?;
            masks.push((
                pairwise_seed(&seat.mask_key, &session.ctx, seat.id, peer, &keys.mask)?,
                sign_for(seat.id, peer),
            ));
        }
        masking::apply_all(seat.params.prg, &mut words, seat.params.bits, &masks)?;
        let packed = PackedVector::pack(&words, seat.params.bits);
        self.state = ClientState::AwaitingConsistency;
        Ok(ClientMessage::MaskedInput(packed))
    }

    /// Signs the survivor set U3 it is shown, after checking it: well formed, with this
    /// client in it and at least the round's minimum of inputs.
    fn on_consistency_check(&mut self, survivors: Vec<ClientId>) -> Result<ClientMessage, ClientError> {
        let (Some(seat), Some(session)) = (self.seat.as_ref(), self.session.as_mut()) else {
            return Err(ClientError::OwnKeysMissing);
        };
        let refused = |why: String| Err(ClientError::SurvivorSetRefused(why));
        if survivors.windows(2).any(|w| w[0] >= w[1]) || survivors.iter().any(|c| seat.params.client(c.get()).is_none())
        {
            return refused("ids out of order, repeated or outside the round".into());
        }
        if survivors.binary_search(&seat.id).is_err() {
            return refused("this client, whose masked input was sent, is not in it".into());
        }
        if survivors.len() < seat.params.min_clients as usize {
            let min = seat.params.min_clients;
            return refused(format!("{} inputs, below the round's minimum of {min}", survivors.len()));
        }
        let message = cohort::survivors_message(&session.ctx.session_id, seat.params.round, &survivors);
        let signature = self.identity.as_ref().map(|identity| identity.key.sign(&message));
        session.survivors = Some(survivors);
        self.state = ClientState::AwaitingUnmask;
        Ok(ClientMessage::SurvivorsSigned(signature))
    }

    fn on_unmask_request(&mut self, request: UnmaskRequest) -> Result<ClientMessage, ClientError> {
        let (Some(seat), Some(session)) = (self.seat.as_ref(), self.session.as_ref()) else {
            return Err(ClientError::OwnKeysMissing);
        };
        let mut requested: BTreeMap<ClientId, bool> = BTreeMap::new(); // owner → is survivor
        for (&id, survivor) in
            request.survivors.iter().map(|id| (id, true)).chain(request.dropped.iter().map(|id| (id, false)))
        {
            if let Some(&earlier) = requested.get(&id) {
                return Err(if earlier != survivor {
                    ClientError::BothSharesRequested(id)
                } else {
                    ClientError::DuplicatePeer(id)
                });
            }
            if !session.held.contains_key(&id) {
                return Err(ClientError::InconsistentUnmaskRequest(format!("{id} never shared keys with this client")));
            }
            requested.insert(id, survivor);
        }
        if requested.get(&seat.id) != Some(&true) {
            return Err(ClientError::InconsistentUnmaskRequest(
                "this client, whose masked input was sent, is not listed as a survivor".into(),
            ));
        }
        if let Some(missing) = session.held.keys().find(|id| !requested.contains_key(id)) {
            return Err(ClientError::InconsistentUnmaskRequest(format!(
                "{missing} shared keys but is listed neither as survivor nor as dropped"
            )));
        }
        if request.survivors.len() < seat.params.threshold as usize {
            return Err(ClientError::InconsistentUnmaskRequest(format!(
                "{} survivors in the neighbourhood, below the threshold {}",
                request.survivors.len(),
                seat.params.threshold
            )));
        }
        // A certified client reached this state only by signing a survivor set; an
        // anonymous one may have skipped the check, which would have proven nothing.
        if let Some(signed) = session.survivors.as_deref() {
            let contradicted = requested.iter().find(|&(id, &survivor)| survivor != signed.binary_search(id).is_ok());
            if let Some((&id, _)) = contradicted {
                return Err(ClientError::InconsistentUnmaskRequest(format!(
                    "{id}'s status contradicts the survivor set this client signed"
                )));
            }
        }
        if let Some(identity) = &self.identity {
            let signed = session.survivors.as_deref().ok_or(ClientError::UnexpectedMessage {
                state: ClientState::AwaitingConsistency.describe(),
                message: "UnmaskRequest",
            })?;
            check_survivor_signatures(identity, seat, session, signed, &request.signatures)?;
        }
        let mut response = UnmaskResponse { self_mask_shares: Vec::new(), mask_key_shares: Vec::new() };
        for (&owner, &survivor) in &requested {
            let held = &session.held[&owner];
            if survivor {
                response.self_mask_shares.push(RevealedShare { owner, value: *held.self_mask });
            } else {
                response.mask_key_shares.push(RevealedShare { owner, value: *held.mask_key });
            }
        }
        // Nothing secret is needed any more; a second request finds nothing to reveal.
        self.session = None;
        self.state = ClientState::AwaitingResult;
        Ok(ClientMessage::UnmaskResponse(response))
    }
}

fn check_input(params: &RoundParams, words: &[u64]) -> Result<(), ClientError> {
    if words.len() != params.dim as usize {
        return Err(ClientError::WrongInputLength { expected: params.dim, got: words.len() });
    }
    let mask = params.word_mask();
    if let Some(index) = words.iter().position(|&w| w & !mask != 0) {
        return Err(ClientError::InputOutOfRange { index, bits: params.bits });
    }
    Ok(())
}

/// Checks the cohort a key list reveals: it opens the commitments the config's cohort
/// hash binds, seats this client with its own nonce and certificate and, with an
/// identity, seats a distinct certified client everywhere else.
fn check_cohort(
    seat: &Seat,
    revealed: &[RevealedSeat],
    identity: Option<&Identity>,
    nonce: &[u8; 32],
) -> Result<(), ClientError> {
    let mismatch = |what: &str| Err(ClientError::CohortMismatch(what.to_owned()));
    if revealed.len() != seat.params.num_clients as usize {
        return mismatch(&format!("{} seats in a round of {}", revealed.len(), seat.params.num_clients));
    }
    let hash =
        cohort::cohort_hash(&seat.params, revealed.iter().map(|s| (s.fingerprint, cohort::commitment(&s.nonce))));
    if hash != seat.cohort {
        return mismatch("the revealed nonces or certificates differ from those committed to");
    }
    let own = RevealedSeat { fingerprint: cohort::fingerprint(identity.map(|i| &*i.certificate)), nonce: *nonce };
    if revealed.get(seat.id.index()) != Some(&own) {
        return mismatch("this client's seat shows another nonce or certificate");
    }
    if identity.is_some() {
        let mut seen = HashSet::with_capacity(revealed.len());
        for s in revealed {
            if s.fingerprint == ANONYMOUS {
                return mismatch("a seat is held by a client without a certificate");
            }
            if !seen.insert(s.fingerprint) {
                return mismatch("two seats are held under one certificate");
            }
        }
    }
    Ok(())
}

/// Checks the survivor-set signatures forwarded with an unmask request: each from a
/// distinct holder of this client's shares (itself included), valid under the certificate
/// the key list showed; and at least t of them. Only the first t are verified: more
/// prove nothing more.
fn check_survivor_signatures(
    identity: &Identity,
    seat: &Seat,
    session: &Session,
    survivors: &[ClientId],
    signatures: &[SurvivorSignature],
) -> Result<(), ClientError> {
    let message = cohort::survivors_message(&session.ctx.session_id, seat.params.round, survivors);
    let mut previous: Option<ClientId> = None;
    let threshold = seat.params.threshold as usize;
    for (i, s) in signatures.iter().enumerate() {
        if previous.is_some_and(|p| p >= s.signer) {
            return Err(ClientError::DuplicatePeer(s.signer));
        }
        previous = Some(s.signer);
        if i >= threshold {
            continue;
        }
        let certificate = match s.signer == seat.id {
            true => Some(&identity.certificate),
            false => session.certificates.get(&s.signer).filter(|_| session.held.contains_key(&s.signer)),
        };
        let certificate = certificate.ok_or(ClientError::UnexpectedPeer(s.signer))?;
        verify_signed_by(certificate, &message, &s.signature)
            .map_err(|_| ClientError::BadSurvivorSignature(s.signer))?;
    }
    if signatures.len() < threshold {
        return Err(ClientError::TooFewSurvivorSignatures {
            signed: signatures.len(),
            threshold: seat.params.threshold,
        });
    }
    Ok(())
}

/// Checks that a neighbour's entry is signed, under a certificate from the enrollment
/// authority that is valid now and is the one its seat was taken with, over the keys it
/// lists and the nonce its seat revealed.
fn authenticate(
    identity: &Identity,
    cohort_hash: &[u8; 32],
    entry: &PeerEntry,
    seat: &RevealedSeat,
) -> Result<(), ClientError> {
    let peer = entry.id;
    let certified = entry.certified.as_ref().ok_or(ClientError::UnsignedPeer(peer))?;
    if cohort::fingerprint(Some(&certified.certificate)) != seat.fingerprint {
        let reason = "not the certificate its seat was taken with".to_owned();
        return Err(ClientError::PeerCertificate { peer, reason });
    }
    let key = identity
        .root
        .verify(&certified.certificate, identity.now)
        .map_err(|e| ClientError::PeerCertificate { peer, reason: e.to_string() })?;
    let message = cohort::advertisement_message(cohort_hash, peer, &entry.keys, &seat.nonce);
    key.verify_signature(&message, &certified.signature).map_err(|_| ClientError::BadPeerSignature(peer))
}

/// A forwarded envelope, with what it must agree with: its sender's advertised keys
/// (refused if the sender is not a neighbour with keys) and the round's threshold.
fn relayed_envelope<'a>(
    session: &'a Session,
    recipient: ClientId,
    threshold: usize,
    share: &'a ForwardedShare,
) -> Result<RelayedEnvelope<'a>, ClientError> {
    let sender = share.envelope.peer;
    let advertised = session.peers.get(&sender).ok_or(ClientError::UnexpectedPeer(sender))?;
    Ok(RelayedEnvelope {
        ctx: &session.ctx,
        sender,
        recipient,
        sealed: &share.envelope.sealed,
        commitments: &share.commitments,
        sender_mask: &advertised.mask,
        threshold,
    })
}

fn check_alive(alive: usize, threshold: u32) -> Result<(), ClientError> {
    if alive < threshold as usize {
        return Err(ClientError::TooFewNeighbours { alive, threshold });
    }
    Ok(())
}

fn channel_key(
    seat: &Seat,
    ctx: &KeyContext,
    peer: ClientId,
    keys: &AdvertisedKeys,
) -> Result<ChannelKey, ClientError> {
    let shared = seat.channel_key.diffie_hellman(&keys.channel)?;
    Ok(derive_channel_key(&shared, ctx, seat.id.get(), peer.get()))
}

/// The seed of the pairwise mask between `own` and `peer`; both ends derive the same.
pub(crate) fn pairwise_seed(
    own_secret: &SecretKey,
    ctx: &KeyContext,
    own: ClientId,
    peer: ClientId,
    peer_key: &privagg_crypto::PublicKey,
) -> Result<MaskSeed, privagg_crypto::CryptoError> {
    let shared = own_secret.diffie_hellman(peer_key)?;
    Ok(derive_pairwise_mask_seed(&shared, ctx, own.get(), peer.get()))
}

/// How client `own` applies the pairwise mask it shares with `peer`: added when the
/// peer's id is lower, subtracted when higher, so each pair cancels in the sum.
pub(crate) fn sign_for(own: ClientId, peer: ClientId) -> MaskSign {
    if peer < own { MaskSign::Add } else { MaskSign::Subtract }
}

//! The server side of one round, as a state machine. It takes client messages, the
//! driver's decisions (a client's connection died, a phase's deadline passed) and
//! returns messages to send; it reads no clock and opens no socket.
//!
//! ```text
//! AdvertiseKeys ─▶ ShareKeys ─▶ MaskedInput ─▶ Consistency ─▶ Unmask ─▶ Reconstruct
//!        │              │            │              │            │   ─finalize()─▶ Completed
//!        └──────────────┴────────────┴──────────────┴────────────┴──▶ Aborted
//!   (a seat that never revealed its nonce, fewer than min_clients, a secret without t shares,
//!    a bad envelope proven after its sender's masked input was summed)
//! ```
//!
//! A phase ends when every client still in the round has answered, or when the driver
//! calls [`ServerRound::close_phase`] at its deadline; clients that have not answered
//! are then dropped. Masked inputs are added into one running sum as they arrive, so
//! the server holds O(m) words of vector state however many clients take part; the rest
//! is O(n·k) keys, envelopes and shares.
//!
//! A client that breaks the protocol is dropped and the error says why; the others are
//! unaffected. A client whose masked input is in the sum stays in the sum whatever it
//! does later: its self mask is then rebuilt from its neighbours' shares.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use curve25519_dalek::Scalar;
use privagg_crypto::identity::{SIGNATURE_LEN, verify_signed_by};
use privagg_crypto::shamir::Share;
use privagg_crypto::{
    KeyContext, MaskSeed, MaskSign, PublicKey, SecretKey, SharedSecret, derive_channel_key, derive_pairwise_mask_seed,
    derive_self_mask_seed, dleq, shamir,
};
use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::client::{pairwise_seed, sign_for};
use crate::cohort::{self, Member, RevealedSeat};
use crate::complaint::{
    RelayedEnvelope, SignatureFault, check_envelope_signature, complaint_context, envelope_message,
    envelope_signatures_all_valid, relayed_digest,
};
use crate::error::{ParamsError, RoundAbort, ServerError, Violation};
use crate::graph::NeighbourGraph;
use crate::masking;
use crate::message::{
    Abort, AbortCode, AdvertisedKeys, Advertisement, Certified, ClientMessage, Config, Envelope, EnvelopeComplaint,
    ForwardedShare, KeyList, PeerEntry, RevealedShare, ServerMessage, ShareCommitments, ShareKeys, SurvivorSignature,
    UnmaskRequest, UnmaskResponse,
};
use crate::packing::PackedVector;
use crate::round_params::{ClientId, RoundParams};

/// The phases of a round, as the server sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Collecting public keys (U1).
    AdvertiseKeys,
    /// Collecting share envelopes (U2).
    ShareKeys,
    /// Collecting masked inputs into the running sum (U3).
    MaskedInput,
    /// Collecting the survivors' signatures over U3 (U4).
    Consistency,
    /// Collecting shares for unmasking.
    Unmask,
    /// Enough shares are in; [`ServerRound::finalize`] removes the masks.
    Reconstruct,
    /// The sum is recovered.
    Completed,
    /// The round ended without a sum.
    Aborted,
}

impl Phase {
    /// The phase's snake-case name, as round records and logs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdvertiseKeys => "advertise_keys",
            Self::ShareKeys => "share_keys",
            Self::MaskedInput => "masked_input",
            Self::Consistency => "consistency",
            Self::Unmask => "unmask",
            Self::Reconstruct => "reconstruct",
            Self::Completed => "completed",
            Self::Aborted => "aborted",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a client left the round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// It did not answer before the phase's deadline.
    MissedDeadline,
    /// The driver lost its connection.
    ConnectionLost,
    /// It said it was leaving.
    Left(String),
    /// It broke the protocol.
    Violation(Violation),
}

/// A client that left the round, when and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedClient {
    /// The client.
    pub client: ClientId,
    /// The phase during which it left.
    pub phase: Phase,
    /// Why.
    pub reason: DropReason,
    /// Whether its masked input was already in the sum (it stays there).
    pub in_sum: bool,
}

/// A message for one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Recipient.
    pub to: ClientId,
    /// Message.
    pub message: ServerMessage,
}

/// The result of a completed round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundOutput {
    /// Σ x_u mod 2^bits over the clients in `included`.
    pub sum: Vec<u64>,
    /// The clients whose inputs are in the sum (U3), ascending.
    pub included: Vec<ClientId>,
}

#[derive(Default)]
struct Slot {
    member: Member,
    dropped: Option<DroppedClient>,
    answered: bool,
    /// Its keys, once it advertised them validly (U1).
    keys: Option<AdvertisedKeys>,
    /// Its nonce, once revealed (even in an advertisement refused for another reason).
    nonce: Option<[u8; 32]>,
    /// Its certificate and signature, if certified.
    certified: Option<Certified>,
    /// Sent its ShareKeys (U2).
    shared: bool,
    /// Its Feldman commitments, once it sent its ShareKeys.
    commitments: Option<Arc<ShareCommitments>>,
    /// Sent its complaints (at most once, before its masked input).
    complained: bool,
    /// Its masked input is in the sum (U3).
    in_sum: bool,
    /// Its signature over the survivor set (U4), if it has a certificate and signed.
    survivor_signature: Option<[u8; SIGNATURE_LEN]>,
    /// Owners whose shares this client was asked for: owner → is survivor.
    requested: BTreeMap<ClientId, bool>,
}

/// The server's part in one round.
pub struct ServerRound {
    params: RoundParams,
    /// The cohort hash every client was sent.
    cohort: [u8; 32],
    /// Known once every seat revealed its nonce.
    graph: Option<NeighbourGraph>,
    /// What the survivors sign in the consistency check (empty before it).
    survivors_message: Vec<u8>,
    phase: Phase,
    slots: Vec<Slot>,
    outgoing: Vec<Outgoing>,
    ctx: Option<KeyContext>,
    used_keys: HashSet<[u8; 32]>,
    /// Envelopes waiting for the ShareKeys phase to end, by recipient (peer = sender).
    inbox: HashMap<ClientId, Vec<Envelope>>,
    /// The digest ([`relayed_digest`]) of every envelope forwarded, its signature checked on
    /// receipt, by (sender, recipient): a complaint carries the envelope it is about, and
    /// is judged only if it matches. A digest rather than the envelope, because at n = 300
    /// the envelopes would take ~10 MB through the masked-input phase, the server's peak.
    /// The digest covers the sealed bytes only: the key is what binds them to the pair.
    relayed: HashMap<(ClientId, ClientId), [u8; 32]>,
    /// Pairs (sender, recipient) that did not mask with each other: the recipient proved
    /// the sender's envelope bad and held none of its shares. Each with the pairwise mask
    /// seed the complaint revealed, which removes the sender's half of the pair's mask if
    /// the sender's masked input is in the sum (it may have arrived before the complaint).
    unmasked: HashMap<(ClientId, ClientId), MaskSeed>,
    sum: Vec<u64>,
    /// Revealed shares by owner (x = the holder's id); zeroized on drop.
    shares: BTreeMap<ClientId, Vec<Share>>,
    abort: Option<RoundAbort>,
    output: Option<RoundOutput>,
}

impl ServerRound {
    /// Starts a round for `members` (seat 1 first): checks the parameters and queues a
    /// `Config` for every client. `app_data` travels to every client unchanged (for
    /// privagg: model and DP settings).
    pub fn new(params: RoundParams, members: Vec<Member>, app_data: Arc<[u8]>) -> Result<Self, ParamsError> {
        params.validate()?;
        if members.len() != params.num_clients as usize {
            return Err(ParamsError::CohortSize { members: members.len(), num_clients: params.num_clients });
        }
        let cohort = cohort::cohort_hash(
            &params,
            members.iter().map(|m| (cohort::fingerprint(m.certificate.as_deref()), m.commitment)),
        );
        let outgoing = params
            .client_ids()
            .map(|to| Outgoing {
                to,
                message: ServerMessage::Config(Config {
                    params: params.clone(),
                    client_id: to,
                    cohort,
                    client_data: Vec::new(),
                    app_data: app_data.clone(),
                }),
            })
            .collect();
        let slots = members.into_iter().map(|member| Slot { member, ..Slot::default() }).collect();
        Ok(Self {
            params,
            cohort,
            graph: None,
            survivors_message: Vec::new(),
            phase: Phase::AdvertiseKeys,
            slots,
            outgoing,
            ctx: None,
            used_keys: HashSet::new(),
            inbox: HashMap::new(),
            relayed: HashMap::new(),
            unmasked: HashMap::new(),
            sum: Vec::new(),
            shares: BTreeMap::new(),
            abort: None,
            output: None,
        })
    }

    /// The round's parameters.
    pub fn params(&self) -> &RoundParams {
        &self.params
    }

    /// The attempt's session id (the transcript hash of its cohort and every seat's
    /// nonce, as each client derives it), once every seat revealed its nonce.
    pub fn session_id(&self) -> Option<[u8; 32]> {
        self.ctx.map(|c| c.session_id)
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Takes the messages queued for sending.
    pub fn drain_outgoing(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outgoing)
    }

    /// The clients that left the round so far, ascending by id.
    pub fn dropped(&self) -> Vec<DroppedClient> {
        self.slots.iter().filter_map(|s| s.dropped.clone()).collect()
    }

    /// Why the round aborted, if it did.
    pub fn abort_reason(&self) -> Option<&RoundAbort> {
        self.abort.as_ref()
    }

    /// The recovered sum, once the round completed.
    pub fn output(&self) -> Option<&RoundOutput> {
        self.output.as_ref()
    }

    /// How many masked inputs are in the running sum (U3 once the masked-input phase
    /// closed): the clients a release of the sum would include.
    pub fn inputs(&self) -> usize {
        self.members(|s| s.in_sum).count()
    }

    /// Takes the recovered sum out of a completed round.
    pub fn take_output(&mut self) -> Option<RoundOutput> {
        self.output.take()
    }

    /// Whether `client` is still taking part (not dropped).
    pub fn is_active(&self, client: ClientId) -> bool {
        self.slot(client).is_some_and(|s| s.dropped.is_none())
    }

    /// Whether `client` already sent what `phase` asks of it: its message of an earlier
    /// phase (it would have been dropped otherwise), or of the current one. A driver uses
    /// this to recognise a message resent after a reconnection.
    pub fn has_answered(&self, client: ClientId, phase: Phase) -> bool {
        self.slot(client).is_some_and(|s| phase < self.phase || (phase == self.phase && s.answered))
    }

    /// Handles one message from `client`. On [`ServerError::Violation`] the sender has
    /// been dropped; the other errors change nothing. Either way, other clients are
    /// unaffected (though the drop may end the phase or the round).
    pub fn receive(&mut self, client: ClientId, msg: ClientMessage) -> Result<(), ServerError> {
        let client = self.params.client(client.get()).ok_or(ServerError::UnknownClient(client.get()))?;
        if self.slots[client.index()].dropped.is_some() {
            return Err(ServerError::AlreadyDropped(client));
        }
        if !matches!(
            self.phase,
            Phase::AdvertiseKeys | Phase::ShareKeys | Phase::MaskedInput | Phase::Consistency | Phase::Unmask
        ) {
            return Err(ServerError::RoundOver);
        }
        if let ClientMessage::Leave(leave) = msg {
            let slot = &mut self.slots[client.index()];
            if slot.nonce.is_none() && cohort::commitment(&leave.nonce) == slot.member.commitment {
                slot.nonce = Some(leave.nonce);
            }
            self.drop_client(client, DropReason::Left(leave.detail));
            return Ok(());
        }
        // Complaints precede the phase's answer, the masked input.
        let answers = !matches!(msg, ClientMessage::Complaints(_));
        if let Err(violation) = self.accept(client, msg) {
            self.drop_client(client, DropReason::Violation(violation.clone()));
            return Err(ServerError::Violation { client, violation });
        }
        self.slots[client.index()].answered |= answers;
        self.advance_if_everyone_answered();
        Ok(())
    }

    /// Drops `client` from the round (its connection died, or the driver decided so).
    /// Dropping an unknown or already dropped client does nothing.
    pub fn drop_client(&mut self, client: ClientId, reason: DropReason) {
        let phase = self.phase;
        let Some(slot) = self.slot_mut(client) else { return };
        if slot.dropped.is_some() || matches!(phase, Phase::Completed | Phase::Aborted) {
            return;
        }
        self.record_drop(client, reason);
        self.check_enough_remain();
        self.advance_if_everyone_answered();
    }

    /// Marks `client` dropped in the current phase. A client dropped for missing the
    /// deadline or breaking the protocol is told, so that it does not wait for a round
    /// that goes on without it; one whose connection is gone or that left is not.
    fn record_drop(&mut self, client: ClientId, reason: DropReason) {
        let phase = self.phase;
        let Some(slot) = self.slots.get_mut(client.index()) else { return };
        let notice = match &reason {
            DropReason::MissedDeadline => Some(format!("dropped: missed the {phase} deadline")),
            DropReason::Violation(v) => Some(format!("dropped: {v}")),
            DropReason::ConnectionLost | DropReason::Left(_) => None,
        };
        slot.dropped = Some(DroppedClient { client, phase, reason, in_sum: slot.in_sum });
        if let Some(detail) = notice {
            let message = ServerMessage::Abort(Abort::new(AbortCode::Dropped, &detail));
            self.outgoing.push(Outgoing { to: client, message });
        }
    }

    /// The current phase's deadline passed: drops every client still in the round that
    /// has not answered, then moves on (or aborts).
    pub fn close_phase(&mut self) {
        if !matches!(
            self.phase,
            Phase::AdvertiseKeys | Phase::ShareKeys | Phase::MaskedInput | Phase::Consistency | Phase::Unmask
        ) {
            return;
        }
        let phase = self.phase;
        let silent: Vec<ClientId> =
            self.members(|slot| slot.dropped.is_none() && !slot.answered && owes_message(phase, slot)).collect();
        for client in silent {
            self.record_drop(client, DropReason::MissedDeadline);
        }
        if self.phase == Phase::Unmask {
            self.finish_unmask_phase();
        } else {
            self.check_enough_remain();
            self.advance_if_everyone_answered();
        }
    }

    /// Aborts the round (e.g. on shutdown) and tells the remaining clients.
    pub fn cancel(&mut self, detail: &str) {
        self.abort_round(RoundAbort::Cancelled(detail.to_owned()));
    }

    /// Rebuilds the needed secrets and removes every mask from the running sum. Runs in
    /// the `Reconstruct` phase, spreading the mask expansion over rayon's pool; ends in
    /// `Completed` (and queues `RoundComplete` messages) or `Aborted`.
    pub fn finalize(&mut self) -> Result<&RoundOutput, RoundAbort> {
        if self.phase != Phase::Reconstruct {
            return Err(self
                .abort
                .clone()
                .unwrap_or_else(|| RoundAbort::Cancelled(format!("finalize called in the {:?} phase", self.phase))));
        }
        match self.remove_masks() {
            Ok(()) => {
                let included: Vec<ClientId> = self.members(|s| s.in_sum).collect();
                let inputs = included.len() as u32;
                for to in self.members(|s| s.dropped.is_none()).collect::<Vec<_>>() {
                    self.outgoing.push(Outgoing { to, message: ServerMessage::RoundComplete { inputs } });
                }
                self.phase = Phase::Completed;
                self.shares.clear(); // shares zeroize on drop
                self.output = Some(RoundOutput { sum: std::mem::take(&mut self.sum), included });
                self.output.as_ref().ok_or(RoundAbort::Cancelled("no output".into()))
            }
            Err(abort) => {
                self.abort_round(abort.clone());
                Err(abort)
            }
        }
    }

    fn slot(&self, client: ClientId) -> Option<&Slot> {
        self.slots.get(client.index())
    }

    fn slot_mut(&mut self, client: ClientId) -> Option<&mut Slot> {
        self.slots.get_mut(client.index())
    }

    fn members(&self, pred: impl Fn(&Slot) -> bool) -> impl Iterator<Item = ClientId> {
        self.slots.iter().enumerate().filter(move |(_, s)| pred(s)).map(|(i, _)| ClientId::from_index(i))
    }

    /// Whether a client in the round owes a message in the current phase.
    fn phase_concerns(&self, slot: &Slot) -> bool {
        owes_message(self.phase, slot)
    }

    fn accept(&mut self, client: ClientId, msg: ClientMessage) -> Result<(), Violation> {
        let slot = &self.slots[client.index()];
        if msg.phase() != Some(self.phase) || !self.phase_concerns(slot) {
            return Err(Violation::UnexpectedMessage { phase: self.phase, message: msg.name() });
        }
        if slot.answered {
            return Err(Violation::DuplicateMessage(msg.name()));
        }
        match msg {
            ClientMessage::AdvertiseKeys(advertisement) => self.accept_keys(client, *advertisement),
            ClientMessage::ShareKeys(share_keys) => self.accept_envelopes(client, share_keys),
            ClientMessage::MaskedInput(vector) => self.accept_masked_input(client, &vector),
            ClientMessage::Complaints(complaints) => self.accept_complaints(client, &complaints),
            ClientMessage::SurvivorsSigned(signature) => self.accept_survivor_signature(client, signature),
            ClientMessage::UnmaskResponse(response) => self.accept_shares(client, response),
            ClientMessage::Leave(_) => Ok(()),
        }
    }

    /// Takes a client's keys and nonce: the nonce must open its commitment, and a
    /// certified client's signature must verify under its certificate, so that a client
    /// cannot pass off another's keys and its peers can trust what they are forwarded.
    fn accept_keys(&mut self, client: ClientId, advertisement: Advertisement) -> Result<(), Violation> {
        let Advertisement { keys, nonce, signature } = advertisement;
        let slot = &mut self.slots[client.index()];
        if cohort::commitment(&nonce) != slot.member.commitment {
            return Err(Violation::WrongNonce);
        }
        // The nonce is in: the graph can be labelled whatever else is wrong here.
        slot.nonce = Some(nonce);
        let slot = &self.slots[client.index()];
        let certified = match (&slot.member.certificate, signature) {
            (None, _) => None,
            (Some(_), None) => return Err(Violation::BadSignature),
            (Some(certificate), Some(signature)) => {
                let message = cohort::advertisement_message(&self.cohort, client, &keys, &nonce);
                verify_signed_by(certificate, &message, &signature).map_err(|_| Violation::BadSignature)?;
                Some(Certified { certificate: certificate.clone(), signature })
            }
        };
        if !keys.possession_proven(&self.cohort, client) {
            return Err(Violation::UnprovenKeys);
        }
        let (channel, mask) = (keys.channel.to_bytes(), keys.mask.to_bytes());
        if channel == mask || self.used_keys.contains(&channel) || self.used_keys.contains(&mask) {
            return Err(Violation::ReusedKey);
        }
        self.used_keys.extend([channel, mask]);
        let slot = &mut self.slots[client.index()];
        (slot.keys, slot.certified) = (Some(keys), certified);
        Ok(())
    }

    /// The neighbours of `client` (none before the graph is known).
    fn neighbours(&self, client: ClientId) -> Vec<ClientId> {
        self.graph.as_ref().map(|g| g.neighbours(client)).unwrap_or_default()
    }

    /// Takes a client's commitments (of degree t − 1, the mask key's committing to its
    /// advertised mask key) and its envelopes (exactly one per advertising neighbour,
    /// each signed under its certificate if it has one, unsigned otherwise).
    fn accept_envelopes(&mut self, client: ClientId, share_keys: ShareKeys) -> Result<(), Violation> {
        let ShareKeys { commitments, envelopes } = share_keys;
        let t = self.params.threshold as usize;
        if commitments.mask_key.threshold() != t || commitments.self_mask.threshold() != t {
            return Err(Violation::WrongCommitments(format!(
                "degree {} and {}, expected {}",
                commitments.mask_key.threshold().saturating_sub(1),
                commitments.self_mask.threshold().saturating_sub(1),
                t.saturating_sub(1)
            )));
        }
        let advertised = self.slots[client.index()].keys.map(|k| k.mask.to_bytes());
        if advertised != Some(commitments.mask_key.secret_commitment()) {
            return Err(Violation::WrongCommitments("the mask key's commitment is not the advertised key".into()));
        }
        let expected: Vec<ClientId> =
            self.neighbours(client).into_iter().filter(|&v| self.slots[v.index()].keys.is_some()).collect();
        let mut got: Vec<ClientId> = envelopes.iter().map(|e| e.peer).collect();
        got.sort_unstable();
        if got != expected {
            return Err(Violation::WrongEnvelopes(format!("addressed to {got:?}, expected {expected:?}")));
        }
        self.check_envelope_signatures(client, &commitments, &envelopes)?;
        for mut envelope in envelopes {
            let recipient = std::mem::replace(&mut envelope.peer, client);
            self.inbox.entry(recipient).or_default().push(envelope);
        }
        let slot = &mut self.slots[client.index()];
        slot.shared = true;
        slot.commitments = Some(Arc::new(Arc::unwrap_or_clone(commitments).without_points()));
        Ok(())
    }

    /// Checks the signature of each of `sender`'s envelopes (in batches; one by one,
    /// in parallel, only if the batch fails, to report the first fault by recipient): so
    /// that only envelopes their sender provably made are relayed, and a recipient's
    /// complaint can blame the sender for certain. The batch and a recipient's own check
    /// agree ([`envelope_signatures_all_valid`]), so nothing relayed is refused on arrival.
    fn check_envelope_signatures(
        &self,
        sender: ClientId,
        commitments: &ShareCommitments,
        envelopes: &[Envelope],
    ) -> Result<(), Violation> {
        let Some(ctx) = self.ctx.as_ref() else {
            return Err(Violation::UnexpectedMessage { phase: self.phase, message: "ShareKeys" });
        };
        let certificate = self.slots[sender.index()].member.certificate.as_deref();
        let digest = commitments.digest(&ctx.session_id, ctx.round, sender);
        let messages: Vec<_> =
            envelopes.iter().map(|e| envelope_message(ctx, sender, e.peer, &digest, &e.sealed)).collect();
        let signed: Vec<_> = messages.iter().zip(envelopes).map(|(m, e)| (m, e.signature.as_ref())).collect();
        if envelope_signatures_all_valid(certificate, &signed) {
            return Ok(());
        }
        // One by one only to name the culprit.
        let faults: Vec<(ClientId, SignatureFault)> = signed
            .par_iter()
            .zip(envelopes)
            .filter_map(|((message, signature), e)| {
                check_envelope_signature(certificate, message, *signature).err().map(|f| (e.peer, f))
            })
            .collect();
        debug_assert!(!faults.is_empty(), "the batch and the checks one by one disagree");
        match faults.into_iter().min_by_key(|(recipient, _)| *recipient) {
            None => Ok(()),
            Some((recipient, SignatureFault::Missing)) => Err(Violation::UnsignedEnvelope { recipient }),
            Some((recipient, SignatureFault::Invalid)) => Err(Violation::BadEnvelopeSignature { recipient }),
            Some((recipient, SignatureFault::Unexpected)) => Err(Violation::UnexpectedEnvelopeSignature { recipient }),
        }
    }

    fn accept_masked_input(&mut self, client: ClientId, vector: &PackedVector) -> Result<(), Violation> {
        if vector.dim() != self.params.dim || vector.bits() != self.params.bits {
            return Err(Violation::WrongVectorShape {
                dim: vector.dim(),
                bits: vector.bits(),
                expected_dim: self.params.dim,
                expected_bits: self.params.bits,
            });
        }
        vector.add_into(&mut self.sum);
        self.slots[client.index()].in_sum = true;
        Ok(())
    }

    /// Judges a client's complaints, all before acting on any: each must name, in
    /// ascending order, a sender whose envelope was relayed to it, and prove the envelope
    /// bad. Then each sender is dropped and blamed ([`Violation::BadEnvelope`]) and the
    /// pair is recorded as unmasked, with its revealed mask seed; otherwise the
    /// complainer is the liar. A sender whose masked input is already in the sum stays in
    /// it, its self mask rebuilt from the other holders' shares and its mask with the
    /// complainer removed with the revealed seed: the round goes on, rather than abort
    /// and waste the inputs the honest clients spent privacy budget on.
    fn accept_complaints(&mut self, client: ClientId, complaints: &[EnvelopeComplaint]) -> Result<(), Violation> {
        if std::mem::replace(&mut self.slots[client.index()].complained, true) {
            return Err(Violation::DuplicateMessage("Complaints"));
        }
        let mut previous: Option<ClientId> = None;
        for complaint in complaints {
            let sender = complaint.sender;
            if previous.is_some_and(|p| p >= sender) || !self.envelope_is_bad(client, complaint) {
                return Err(Violation::UnfoundedComplaint { sender });
            }
            previous = Some(sender);
        }
        let ctx = self.ctx.ok_or(Violation::UnexpectedMessage { phase: self.phase, message: "Complaints" })?;
        for complaint in complaints {
            let sender = complaint.sender;
            let shared = SharedSecret::from_revealed(*complaint.mask_shared);
            self.unmasked
                .insert((sender, client), derive_pairwise_mask_seed(&shared, &ctx, sender.get(), client.get()));
            if self.slots[sender.index()].dropped.is_none() {
                self.record_drop(sender, DropReason::Violation(Violation::BadEnvelope { recipient: client }));
            }
        }
        self.check_enough_remain();
        Ok(())
    }

    /// Whether `complaint` proves that the envelope its sender sealed for `recipient`, as
    /// relayed, fails the check the recipient runs: the envelope it carries is the one
    /// relayed (its digest; the signature its sender's certificate requires was checked
    /// on receipt, so a sender cannot deny it), the proofs verify for the recipient's and
    /// the sender's advertised channel and mask keys, and the key derived from the
    /// revealed value (as both clients derive it) does not yield valid shares.
    fn envelope_is_bad(&self, recipient: ClientId, complaint: &EnvelopeComplaint) -> bool {
        let sender = complaint.sender;
        let (Some(ctx), Some(digest)) = (self.ctx.as_ref(), self.relayed.get(&(sender, recipient))) else {
            return false;
        };
        if relayed_digest(&complaint.sealed) != *digest {
            return false;
        }
        let (Some(own), Some(theirs)) = (self.slot(recipient), self.slot(sender)) else { return false };
        let (Some(own_keys), Some(keys), Some(commitments)) = (own.keys, theirs.keys, theirs.commitments.as_ref())
        else {
            return false;
        };
        let context = complaint_context(ctx, sender, recipient);
        let proven = |own: &PublicKey, theirs: &PublicKey, shared: &[u8; 32], proof: &dleq::DleqProof| {
            dleq::verify(own, theirs, shared, proof, &context).is_ok()
        };
        if !proven(&own_keys.channel, &keys.channel, &complaint.shared, &complaint.proof)
            || !proven(&own_keys.mask, &keys.mask, &complaint.mask_shared, &complaint.mask_proof)
        {
            return false;
        }
        let shared = SharedSecret::from_revealed(*complaint.shared);
        let key = derive_channel_key(&shared, ctx, recipient.get(), sender.get());
        let relayed = RelayedEnvelope {
            ctx,
            sender,
            recipient,
            sealed: &complaint.sealed,
            commitments,
            sender_mask: &keys.mask,
            threshold: self.params.threshold as usize,
        };
        relayed.check(&key).is_err()
    }

    /// Takes a survivor's signature over U3: a certified client's must verify under its
    /// certificate, so that its neighbours can count it.
    fn accept_survivor_signature(
        &mut self,
        client: ClientId,
        signature: Option<[u8; SIGNATURE_LEN]>,
    ) -> Result<(), Violation> {
        let slot = &self.slots[client.index()];
        if let Some(certificate) = &slot.member.certificate {
            let signature = signature.ok_or(Violation::BadSignature)?;
            verify_signed_by(certificate, &self.survivors_message, &signature).map_err(|_| Violation::BadSignature)?;
            self.slots[client.index()].survivor_signature = Some(signature);
        }
        Ok(())
    }

    fn accept_shares(&mut self, client: ClientId, response: UnmaskResponse) -> Result<(), Violation> {
        let slot = &self.slots[client.index()];
        let mut answered: BTreeMap<ClientId, bool> = BTreeMap::new();
        let pairs = response
            .self_mask_shares
            .iter()
            .map(|s| (s, true))
            .chain(response.mask_key_shares.iter().map(|s| (s, false)));
        for (share, survivor) in pairs {
            if answered.insert(share.owner, survivor).is_some() {
                return Err(Violation::WrongShares(format!("two shares of {}", share.owner)));
            }
        }
        if answered != slot.requested {
            return Err(Violation::WrongShares("the owners or kinds differ from the request".into()));
        }
        let holder = client.get();
        for RevealedShare { owner, value } in response.self_mask_shares.into_iter().chain(response.mask_key_shares) {
            self.shares.entry(owner).or_default().push(Share { x: holder, y: value });
        }
        Ok(())
    }

    /// Aborts if fewer than `min_clients` can still end up in the sum, or if a seat
    /// dropped before revealing its nonce (the graph could not be labelled).
    fn check_enough_remain(&mut self) {
        if self.phase == Phase::AdvertiseKeys {
            let missing = self.slots.iter().filter(|s| s.dropped.is_some() && s.nonce.is_none()).count();
            if missing > 0 {
                return self.abort_round(RoundAbort::CohortIncomplete { missing });
            }
        }
        let remaining = match self.phase {
            Phase::AdvertiseKeys | Phase::ShareKeys | Phase::MaskedInput => {
                self.slots.iter().filter(|s| s.dropped.is_none() || s.in_sum).count()
            }
            _ => return,
        };
        if remaining < self.params.min_clients as usize {
            self.abort_round(RoundAbort::TooFewClients {
                phase: self.phase,
                remaining,
                required: self.params.min_clients,
            });
        }
    }

    fn advance_if_everyone_answered(&mut self) {
        let waiting = self.slots.iter().any(|s| s.dropped.is_none() && !s.answered && self.phase_concerns(s));
        if waiting {
            return;
        }
        match self.phase {
            Phase::AdvertiseKeys => self.start_share_keys(),
            Phase::ShareKeys => self.start_masked_input(),
            Phase::MaskedInput => self.start_consistency(),
            Phase::Consistency => self.start_unmask(),
            Phase::Unmask => self.finish_unmask_phase(),
            _ => {}
        }
    }

    fn next_phase(&mut self, phase: Phase, responders: usize) -> bool {
        if responders < self.params.min_clients as usize {
            self.abort_round(RoundAbort::TooFewClients {
                phase: self.phase,
                remaining: responders,
                required: self.params.min_clients,
            });
            return false;
        }
        self.phase = phase;
        for s in &mut self.slots {
            s.answered = false;
        }
        true
    }

    /// Every seat revealed its nonce: labels the graph and sends each client in U1 (those
    /// whose advertisement was valid, still in the round) the cohort and the entries of
    /// its neighbourhood in U1.
    fn start_share_keys(&mut self) {
        let u1: Vec<ClientId> = self.members(|s| s.keys.is_some() && s.dropped.is_none()).collect();
        if !self.next_phase(Phase::ShareKeys, u1.len()) {
            return;
        }
        let revealed: Arc<[RevealedSeat]> = self
            .slots
            .iter()
            .map(|s| RevealedSeat {
                fingerprint: cohort::fingerprint(s.member.certificate.as_deref()),
                nonce: s.nonce.unwrap_or_default(),
            })
            .collect();
        let labelling = cohort::labelling(&self.cohort, revealed.iter().map(|s| &s.nonce));
        self.ctx = Some(KeyContext { session_id: labelling.session_id, round: self.params.round });
        let graph = NeighbourGraph::new(self.params.num_clients, self.params.neighbours, &labelling.graph_seed);
        let entries: Vec<Option<Arc<PeerEntry>>> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let id = ClientId::from_index(i);
                slot.keys.map(|keys| Arc::new(PeerEntry { id, keys, certified: slot.certified.clone() }))
            })
            .collect();
        for &to in &u1 {
            let mut ids = graph.neighbours(to);
            ids.push(to);
            ids.sort_unstable();
            let entries = ids.into_iter().filter_map(|id| entries[id.index()].clone()).collect();
            let list = KeyList { cohort: revealed.clone(), entries };
            self.outgoing.push(Outgoing { to, message: ServerMessage::KeyList(list) });
        }
        self.graph = Some(graph);
    }

    fn start_masked_input(&mut self) {
        // From here on, `shared` means "in U2".
        for slot in self.slots.iter_mut().filter(|s| s.dropped.is_some()) {
            slot.shared = false;
        }
        let u2: Vec<ClientId> = self.members(|s| s.shared).collect();
        if !self.next_phase(Phase::MaskedInput, u2.len()) {
            return;
        }
        let mut inbox = std::mem::take(&mut self.inbox);
        for &to in &u2 {
            let mut envelopes = inbox.remove(&to).unwrap_or_default();
            envelopes.sort_unstable_by_key(|e| e.peer);
            let forwarded = envelopes
                .into_iter()
                .filter_map(|envelope| {
                    let sender = &self.slots[envelope.peer.index()];
                    let commitments = sender.commitments.clone().filter(|_| sender.shared)?;
                    self.relayed.insert((envelope.peer, to), relayed_digest(&envelope.sealed));
                    Some(ForwardedShare { envelope, commitments })
                })
                .collect();
            self.outgoing.push(Outgoing { to, message: ServerMessage::ForwardedShares(forwarded) });
        }
        self.sum = vec![0; self.params.dim as usize];
    }

    /// U3 is known: asks every survivor still in the round to sign it. An anonymous
    /// cohort skips the round: unsigned votes prove nothing to anyone.
    fn start_consistency(&mut self) {
        // Complaints are over with the masked-input phase: the relayed envelopes can go.
        self.relayed = HashMap::new();
        if self.slots.iter().all(|s| s.member.certificate.is_none()) {
            return self.start_unmask();
        }
        let u3: Vec<ClientId> = self.members(|s| s.in_sum).collect();
        if !self.next_phase(Phase::Consistency, u3.len()) {
            return;
        }
        let session_id = self.ctx.map(|c| c.session_id).unwrap_or_default();
        self.survivors_message = cohort::survivors_message(&session_id, self.params.round, &u3);
        for to in self.members(|s| s.in_sum && s.dropped.is_none()).collect::<Vec<_>>() {
            self.outgoing.push(Outgoing { to, message: ServerMessage::ConsistencyCheck(u3.clone()) });
        }
        self.advance_if_everyone_answered();
    }

    /// Asks each survivor for its shares, with its holders' signatures over U3.
    fn start_unmask(&mut self) {
        let u3: Vec<ClientId> = self.members(|s| s.in_sum).collect();
        if !self.next_phase(Phase::Unmask, u3.len()) {
            return;
        }
        for &to in &u3 {
            let mut requested = BTreeMap::from([(to, true)]);
            for v in self.neighbours(to) {
                let s = &self.slots[v.index()];
                if s.shared && self.masked_with(v, to) {
                    requested.insert(v, s.in_sum);
                }
            }
            let slot = &mut self.slots[to.index()];
            slot.requested = requested;
            if slot.dropped.is_some() {
                continue;
            }
            let (survivors, dropped) = slot.requested.iter().partition::<Vec<_>, _>(|(_, s)| **s);
            let (survivors, dropped): (Vec<ClientId>, Vec<ClientId>) =
                (survivors.into_iter().map(|(c, _)| *c).collect(), dropped.into_iter().map(|(c, _)| *c).collect());
            let mut signers = self.neighbours(to);
            signers.push(to);
            signers.sort_unstable();
            let signatures = signers
                .into_iter()
                .filter_map(|signer| {
                    let signature = self.slots[signer.index()].survivor_signature?;
                    Some(SurvivorSignature { signer, signature })
                })
                .collect();
            let request = UnmaskRequest { survivors, dropped, signatures };
            self.outgoing.push(Outgoing { to, message: ServerMessage::UnmaskRequest(request) });
        }
        self.advance_if_everyone_answered();
    }

    fn finish_unmask_phase(&mut self) {
        match self.missing_shares() {
            None => self.phase = Phase::Reconstruct,
            Some(abort) => self.abort_round(abort),
        }
    }

    /// The secrets still lacking `t` shares: the self-mask secret of every client in the
    /// sum, the mask key of every client that shared keys but is not in the sum and masked
    /// with a neighbour in it.
    fn missing_shares(&self) -> Option<RoundAbort> {
        let threshold = self.params.threshold;
        let needed = |&owner: &ClientId| {
            self.slots[owner.index()].in_sum
                || self
                    .neighbours(owner)
                    .into_iter()
                    .any(|u| self.slots[u.index()].in_sum && self.masked_with(owner, u))
        };
        self.members(|s| s.shared).filter(needed).find_map(|owner| {
            let available = self.shares.get(&owner).map_or(0, Vec::len);
            (available < threshold as usize).then_some(RoundAbort::TooFewShares { owner, available, threshold })
        })
    }

    fn abort_round(&mut self, abort: RoundAbort) {
        if matches!(self.phase, Phase::Completed | Phase::Aborted) {
            return;
        }
        // An abort supersedes every queued request to go on (an unmask request the shell
        // held back must not go out with it); notices to dropped clients stay.
        self.outgoing.retain(|o| matches!(o.message, ServerMessage::Abort(_)));
        let message = ServerMessage::Abort(Abort::new(abort.code(), &abort.to_string()));
        for to in self.members(|s| s.dropped.is_none()).collect::<Vec<_>>() {
            self.outgoing.push(Outgoing { to, message: message.clone() });
        }
        self.phase = Phase::Aborted;
        self.abort = Some(abort);
        self.sum = Vec::new();
        self.shares.clear(); // shares zeroize on drop
        self.inbox.clear();
        self.relayed.clear();
    }

    /// Whether `a` and `b` (neighbours in U2) masked with each other: unless one proved
    /// the other's envelope bad.
    fn masked_with(&self, a: ClientId, b: ClientId) -> bool {
        !self.unmasked.contains_key(&(a, b)) && !self.unmasked.contains_key(&(b, a))
    }

    /// Checks every revealed share against its owner's commitments (one batch per owner,
    /// in parallel), drops each holder that revealed a wrong one (a violation naming the
    /// owner), and rebuilds every secret from t valid shares. Aborts, naming the liars,
    /// if some secret is left with fewer than t valid shares: never a corrupted sum.
    fn verified_secrets(&mut self) -> Result<Vec<(ClientId, Zeroizing<Scalar>)>, RoundAbort> {
        let threshold = self.params.threshold as usize;
        let checks: Vec<(ClientId, Vec<u32>)> = self
            .shares
            .par_iter()
            .map(|(&owner, shares)| {
                let slot = &self.slots[owner.index()];
                let invalid = match &slot.commitments {
                    Some(c) if slot.in_sum => c.self_mask.invalid_shares(shares),
                    Some(c) => c.mask_key.invalid_shares(shares),
                    None => shares.iter().map(|s| s.x).collect(),
                };
                (owner, invalid)
            })
            .collect();
        let mut blamed: BTreeMap<ClientId, ClientId> = BTreeMap::new(); // liar → first owner
        for (owner, invalid) in &checks {
            for &x in invalid {
                if let Some(liar) = ClientId::new(x) {
                    blamed.entry(liar).or_insert(*owner);
                }
            }
        }
        for (&liar, &owner) in &blamed {
            if self.slots[liar.index()].dropped.is_none() {
                self.record_drop(liar, DropReason::Violation(Violation::InvalidShare { owner }));
            }
        }
        let mut lagrange = LagrangeCache::default();
        let mut secrets = Vec::with_capacity(checks.len());
        for (owner, invalid) in checks {
            let shares = self.shares.get(&owner).map(Vec::as_slice).unwrap_or_default();
            let valid: Vec<&Share> = shares.iter().filter(|s| !invalid.contains(&s.x)).collect();
            if valid.len() < threshold {
                let liars = invalid.iter().filter_map(|&x| ClientId::new(x)).collect();
                return Err(RoundAbort::InvalidShares {
                    owner,
                    valid: valid.len(),
                    threshold: self.params.threshold,
                    liars,
                });
            }
            let secret = lagrange.reconstruct(&valid, threshold).ok_or(RoundAbort::ReconstructionFailed(owner))?;
            secrets.push((owner, secret));
        }
        Ok(secrets)
    }

    fn remove_masks(&mut self) -> Result<(), RoundAbort> {
        let ctx = self.ctx.ok_or_else(|| RoundAbort::Cancelled("no session".into()))?;
        let secrets = self.verified_secrets()?;
        let mut masks: Vec<(MaskSeed, MaskSign)> = Vec::new();
        let mut dropped_keys: Vec<(ClientId, SecretKey)> = Vec::new();
        for (owner, mut secret) in secrets {
            let slot = &self.slots[owner.index()];
            if slot.in_sum {
                masks.push((derive_self_mask_seed(&secret, &ctx, owner.get()), MaskSign::Subtract));
                // The rebuilt b_u: wiped once its seed is derived.
                zeroize::Zeroize::zeroize(&mut secret);
            } else {
                let key = SecretKey::from_scalar(*secret);
                let public = slot.keys.map(|k| k.mask);
                if public != Some(key.public_key()) {
                    return Err(RoundAbort::ReconstructionFailed(owner));
                }
                dropped_keys.push((owner, key));
            }
        }
        // Each dropped client's pairwise masks with its neighbours in the sum: the
        // survivor u applied sign_for(u, v); remove it with the opposite sign.
        let pairs: Vec<(ClientId, ClientId)> = dropped_keys
            .iter()
            .flat_map(|(v, _)| {
                self.neighbours(*v)
                    .into_iter()
                    .filter(|&u| self.slots[u.index()].in_sum && self.masked_with(*v, u))
                    .map(move |u| (*v, u))
            })
            .collect();
        let key_of: HashMap<ClientId, &SecretKey> = dropped_keys.iter().map(|(v, k)| (*v, k)).collect();
        let pairwise: Vec<Result<(MaskSeed, MaskSign), RoundAbort>> = pairs
            .par_iter()
            .map(|&(v, u)| {
                let public = self.slots[u.index()].keys.map(|k| k.mask).ok_or(RoundAbort::ReconstructionFailed(u))?;
                let key = key_of.get(&v).ok_or(RoundAbort::ReconstructionFailed(v))?;
                let seed = pairwise_seed(key, &ctx, v, u, &public).map_err(|_| RoundAbort::ReconstructionFailed(v))?;
                Ok((seed, sign_for(u, v).opposite()))
            })
            .collect();
        for p in pairwise {
            masks.push(p?);
        }
        // A sender in the sum whose envelope a neighbour proved bad masked with that
        // neighbour alone: its half comes out with the seed the complaint revealed.
        for (&(sender, complainer), seed) in &self.unmasked {
            if self.slots[sender.index()].in_sum {
                masks.push((seed.clone(), sign_for(sender, complainer).opposite()));
            }
        }
        masking::apply_all(self.params.prg, &mut self.sum, self.params.bits, &masks)
            .map_err(|e| RoundAbort::Cancelled(e.to_string()))
    }
}

/// Whether a client in the round owes a message in `phase`.
fn owes_message(phase: Phase, slot: &Slot) -> bool {
    match phase {
        Phase::AdvertiseKeys => true,
        Phase::ShareKeys => slot.keys.is_some(),
        Phase::MaskedInput => slot.shared,
        Phase::Consistency | Phase::Unmask => slot.in_sum,
        _ => false,
    }
}

/// Lagrange coefficients at 0, cached per holder set: in the complete graph every secret
/// has the same holders, so they are computed once per round.
#[derive(Default)]
struct LagrangeCache {
    coefficients: HashMap<Vec<u32>, Vec<Scalar>>,
}

impl LagrangeCache {
    /// The secret behind `shares` (all verified against the owner's commitments, so any
    /// t of them agree), interpolated from the t with the lowest holder ids. `None` if
    /// fewer than t.
    fn reconstruct(&mut self, shares: &[&Share], t: usize) -> Option<Zeroizing<Scalar>> {
        if shares.len() < t || t == 0 {
            return None;
        }
        let mut sorted: Vec<&Share> = shares.to_vec();
        sorted.sort_unstable_by_key(|s| s.x);
        self.interpolate(&sorted[..t])
    }

    fn interpolate(&mut self, shares: &[&Share]) -> Option<Zeroizing<Scalar>> {
        let xs: Vec<u32> = shares.iter().map(|s| s.x).collect();
        if !self.coefficients.contains_key(&xs) {
            let c = shamir::lagrange_coefficients_at_zero(&xs).ok()?;
            self.coefficients.insert(xs.clone(), c);
        }
        let coefficients = self.coefficients.get(&xs)?;
        let mut secret = Zeroizing::new(Scalar::ZERO);
        for (c, s) in coefficients.iter().zip(shares) {
            *secret += c * s.y;
        }
        Some(secret)
    }
}

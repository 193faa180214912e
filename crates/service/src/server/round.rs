//! The round in progress: its seats (which connection holds each, what was sent to it
//! and what it sent, for the resend rule), its upload grants and its phase timings.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use privagg_protocol::cohort::{Member, RevealedSeat};
use privagg_protocol::{
    ClientId, DropReason, Outgoing, Phase, ServerMessage, ServerRound, ShareCommitments, Violation, encode_cohort,
    encode_entry, encode_forwarded_split, encode_key_list_split,
};

use super::lobby::Seated;
use super::{ConnId, Outbox};
use crate::admission::ClientIdentity;
use crate::frame::{FRAME_HEADER_LEN, Frame, MAX_CONTROL_FRAME};
use crate::message::{IDENTITY_LEN, ServerServiceMessage};
use crate::round_log::{LogProof, LogRequest, LogState};

/// One seat of the round.
pub(super) struct Seat {
    /// The connection that holds it now (stale while its client reconnects).
    pub conn: ConnId,
    /// Who holds it, so that a client that reconnects gets it back.
    pub identity: ClientIdentity,
    /// The random client identity of the `Hello` that took the seat: only a connection
    /// presenting it again (or proving the identity otherwise) gets the seat back.
    pub instance: [u8; IDENTITY_LEN],
    /// The certificate it presented, if it has one.
    pub certificate: Option<Arc<[u8]>>,
    /// Frames sent to the seat this round.
    pub sent: u32,
    /// Frames received from the seat this round.
    pub received: u32,
    /// The last frame sent, for the resend rule.
    last_sent: Option<Frame>,
    /// Bytes received from the seat's connections this round, frame headers included.
    pub bytes_in: u64,
    /// Bytes sent to them.
    pub bytes_out: u64,
    /// What its client asked of the round log.
    log_request: LogRequest,
}

/// Where the round is, from the session's point of view.
pub(super) enum Stage {
    /// The cohort is seated; the shell prepares the parameters (`Action::StartRound`).
    Preparing {
        /// The seated clients' commitments and certificates, seat 1 first.
        members: Vec<Member>,
        /// Seats whose clients left before the round started: dropped once it starts.
        early_drops: Vec<(ClientId, DropReason)>,
    },
    /// The protocol runs.
    Running(ServerRound),
    /// The shell removes the masks (`Action::Finalize`).
    Finalizing,
    /// The shell commits the sum (`Action::Commit`); the `RoundComplete` messages wait in
    /// the state machine until it has.
    Committing(ServerRound),
}

/// Whether the shell has charged the round's release: the survivors may be asked for
/// their unmasking shares (after which the server can compute the sum) only once it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReleaseCharge {
    /// The round has not reached the unmask phase.
    NotYet,
    /// The shell is charging it (`Action::ChargeRelease`); the unmask requests wait.
    Charging,
    /// Charged: the unmask requests may go out.
    Charged,
}

/// The round in progress.
pub(super) struct ActiveRound {
    pub number: u64,
    pub attempt: u32,
    pub stage: Stage,
    pub seats: Vec<Seat>,
    /// The phase the seats were last told about.
    phase: Phase,
    pub started: Instant,
    phase_started: Instant,
    pub deadline: Instant,
    pub timings: Vec<(Phase, Duration)>,
    /// Seats whose masked input is ready, waiting for an upload slot.
    ready: VecDeque<ClientId>,
    /// Seats allowed to upload now, each until its deadline (`None`: no deadline).
    granted: HashMap<ClientId, Option<Instant>>,
    /// How long a grant lasts before its seat is dropped as stalled.
    upload_timeout: Option<Duration>,
    /// The frame limit of a seat holding a grant.
    upload_limit: usize,
    /// Seats whose client reconnected during the round.
    pub reconnected: BTreeSet<ClientId>,
    /// Where the charge for releasing the sum stands.
    pub release: ReleaseCharge,
    /// The round log each seat's `Config` proves (`None`: the server keeps none).
    log: Option<Arc<LogState>>,
    /// Seats whose drop the session has already judged: those it dropped itself, and
    /// those the protocol blamed that were counted (see [`Self::take_protocol_blame`]).
    judged: BTreeSet<ClientId>,
}

impl ActiveRound {
    /// A round whose cohort is `seated` (seat 1 first), waiting for its parameters.
    pub fn preparing(number: u64, attempt: u32, seated: Vec<Seated>, now: Instant) -> Self {
        let (seats, members) = seated
            .into_iter()
            .map(|Seated { conn, identity, instance, member, log_request }| {
                let certificate = member.certificate.clone();
                let seat = Seat {
                    conn,
                    identity,
                    instance,
                    certificate,
                    sent: 0,
                    received: 0,
                    last_sent: None,
                    bytes_in: 0,
                    bytes_out: 0,
                    log_request,
                };
                (seat, member)
            })
            .unzip();
        Self {
            number,
            attempt,
            stage: Stage::Preparing { members, early_drops: Vec::new() },
            seats,
            phase: Phase::AdvertiseKeys,
            started: now,
            phase_started: now,
            deadline: now,
            timings: Vec::new(),
            ready: VecDeque::new(),
            granted: HashMap::new(),
            upload_timeout: None,
            upload_limit: MAX_CONTROL_FRAME,
            reconnected: BTreeSet::new(),
            release: ReleaseCharge::NotYet,
            log: None,
            judged: BTreeSet::new(),
        }
    }

    /// The seated clients' commitments and certificates, seat 1 first, while the round is
    /// being prepared.
    pub fn members(&self) -> Option<Vec<Member>> {
        match &self.stage {
            Stage::Preparing { members, .. } => Some(members.clone()),
            _ => None,
        }
    }

    /// Starts the protocol at `now`; each seat's `Config` proves `log` to it.
    pub fn start(
        &mut self,
        mut protocol: ServerRound,
        upload_limit: usize,
        now: Instant,
        phase_timeout: Duration,
        upload_timeout: Option<Duration>,
        log: Option<Arc<LogState>>,
    ) {
        self.upload_timeout = upload_timeout;
        self.log = log;
        if let Stage::Preparing { early_drops, .. } = &mut self.stage {
            for (seat, reason) in early_drops.drain(..) {
                protocol.drop_client(seat, reason);
            }
        }
        self.stage = Stage::Running(protocol);
        self.upload_limit = upload_limit;
        self.started = now;
        self.phase_started = now;
        self.deadline = now + phase_timeout;
    }

    pub fn seat(&self, seat: ClientId) -> Option<&Seat> {
        self.seats.get(seat.get() as usize - 1)
    }

    pub fn seat_mut(&mut self, seat: ClientId) -> Option<&mut Seat> {
        self.seats.get_mut(seat.get() as usize - 1)
    }

    /// The seat `identity` holds, if any.
    pub fn seat_of(&self, identity: &ClientIdentity) -> Option<ClientId> {
        let index = self.seats.iter().position(|s| s.identity == *identity)?;
        ClientId::new(index as u32 + 1)
    }

    /// The protocol state machine, while it runs.
    pub fn protocol(&mut self) -> Option<&mut ServerRound> {
        match &mut self.stage {
            Stage::Running(p) => Some(p),
            _ => None,
        }
    }

    /// Whether `seat` is still in the round.
    pub fn is_active(&self, seat: ClientId) -> bool {
        match &self.stage {
            Stage::Running(p) => p.is_active(seat),
            _ => false,
        }
    }

    /// Drops `seat` from the round for `reason` (and frees its upload slot).
    pub fn drop_seat(&mut self, seat: ClientId, reason: DropReason, slots: usize, now: Instant, out: &mut Outbox) {
        self.judged.insert(seat);
        match &mut self.stage {
            Stage::Running(p) => p.drop_client(seat, reason),
            Stage::Preparing { early_drops, .. } => early_drops.push((seat, reason)),
            Stage::Finalizing | Stage::Committing(_) => return,
        }
        self.release_slot(seat, slots, now, out);
    }

    /// Seats the protocol dropped for a violation it found itself (an unfounded
    /// complaint, an envelope proven bad, a wrong unmasking share), each once, with its
    /// identity and the violation: the session counts them as offences, as it does the
    /// violations it catches itself.
    pub fn take_protocol_blame(&mut self) -> Vec<(ClientId, ClientIdentity, String)> {
        let Stage::Running(protocol) = &self.stage else { return Vec::new() };
        let blamed: Vec<(ClientId, String)> = protocol
            .dropped()
            .into_iter()
            .filter(|d| !self.judged.contains(&d.client))
            .filter_map(|d| match d.reason {
                DropReason::Violation(v) => Some((d.client, v.to_string())),
                _ => None,
            })
            .collect();
        blamed
            .into_iter()
            .filter_map(|(seat, violation)| {
                self.judged.insert(seat);
                Some((seat, self.seat(seat)?.identity, violation))
            })
            .collect()
    }

    /// Sends `frame` to `seat` and remembers it for the resend rule.
    pub fn send(&mut self, seat: ClientId, frame: Frame, out: &mut Outbox) {
        let Some(s) = self.seat_mut(seat) else { return };
        s.sent += 1;
        s.last_sent = Some(frame.clone());
        s.bytes_out += (FRAME_HEADER_LEN + frame.len()) as u64;
        out.send(s.conn, frame);
    }

    /// Sends `seat` its last frame again (the same frame: it is not counted twice).
    fn resend_last(&mut self, seat: ClientId, out: &mut Outbox) {
        let Some(s) = self.seat_mut(seat) else { return };
        let Some(frame) = s.last_sent.clone() else { return };
        s.bytes_out += (FRAME_HEADER_LEN + frame.len()) as u64;
        out.send(s.conn, frame);
    }

    /// Counts a frame of `len` bytes received from `seat`.
    pub fn received(&mut self, seat: ClientId, len: usize) {
        if let Some(s) = self.seat_mut(seat) {
            s.received += 1;
            s.bytes_in += (FRAME_HEADER_LEN + len) as u64;
        }
    }

    /// Moves `seat` to connection `conn` after a reconnect: `client_received` is the
    /// number of this round's frames the client says it handled. Returns whether the
    /// client lacks the last frame (see [`ActiveRound::resend_after_rebind`]); `Err` if
    /// the number is impossible (neither all frames sent nor all but the last).
    pub fn rebind(&mut self, seat: ClientId, conn: ConnId, client_received: u32) -> Result<bool, ()> {
        let Some(s) = self.seat_mut(seat) else { return Err(()) };
        let behind = match s.sent.checked_sub(client_received) {
            Some(0) => false,
            Some(1) => true,
            _ => return Err(()),
        };
        s.conn = conn;
        self.reconnected.insert(seat);
        Ok(behind)
    }

    /// After the `Welcome` of a rebound seat: its last frame again, if it lacks it.
    pub fn resend_after_rebind(&mut self, seat: ClientId, behind: bool, out: &mut Outbox) {
        if behind {
            self.resend_last(seat, out);
        }
    }

    /// The frame limit `seat` needs now.
    pub fn frame_limit(&self, seat: ClientId) -> usize {
        if self.granted.contains_key(&seat) { self.upload_limit } else { MAX_CONTROL_FRAME }
    }

    /// Sends what the state machine queued (unless the round is committing: its
    /// `RoundComplete` messages wait for the commit).
    pub fn flush(&mut self, out: &mut Outbox) {
        if let Stage::Running(p) = &mut self.stage {
            let outgoing = p.drain_outgoing();
            self.send_all(outgoing, out);
        }
    }

    /// Sends the messages a committed round held back.
    pub fn release_completion(&mut self, out: &mut Outbox) {
        if let Stage::Committing(p) = &mut self.stage {
            let outgoing = p.drain_outgoing();
            self.send_all(outgoing, out);
        }
    }

    fn send_all(&mut self, outgoing: Vec<Outgoing>, out: &mut Outbox) {
        // Most clients ask the same (the checkpoint of the last round, and that round):
        // each distinct request is proven once.
        let mut proofs: HashMap<LogRequest, Vec<u8>> = HashMap::new();
        // Each sender's commitments, the cohort and each client's key list entry: encoded
        // once for every frame that carries them.
        let mut commitments: HashMap<*const ShareCommitments, Arc<[u8]>> = HashMap::new();
        let mut cohorts: HashMap<*const [RevealedSeat], Arc<[u8]>> = HashMap::new();
        let mut entries: HashMap<ClientId, Arc<[u8]>> = HashMap::new();
        for mut o in outgoing {
            if let (ServerMessage::Config(config), Some(log)) = (&mut o.message, &self.log)
                && let Some(seat) = self.seat(o.to)
            {
                config.client_data = proofs
                    .entry(seat.log_request.clone())
                    .or_insert_with(|| LogProof::encode(Some(&log.prove(&seat.log_request))))
                    .clone();
            }
            let frame = match &o.message {
                ServerMessage::KeyList(list) => {
                    let cohort = cohorts
                        .entry(Arc::as_ptr(&list.cohort))
                        .or_insert_with(|| Arc::from(encode_cohort(&list.cohort)))
                        .clone();
                    Frame::interleaved(encode_key_list_split(list, cohort, |e| {
                        entries.entry(e.id).or_insert_with(|| Arc::from(encode_entry(e))).clone()
                    }))
                }
                ServerMessage::ForwardedShares(forwarded) => {
                    Frame::interleaved(encode_forwarded_split(forwarded, |c| {
                        commitments.entry(Arc::as_ptr(c)).or_insert_with(|| Arc::from(c.encode())).clone()
                    }))
                }
                message => encode(message),
            };
            self.send(o.to, frame, out);
        }
    }

    /// The state machine's phase, if it is here.
    pub fn protocol_phase(&self) -> Option<Phase> {
        match &self.stage {
            Stage::Running(p) | Stage::Committing(p) => Some(p.phase()),
            _ => None,
        }
    }

    /// Notes a phase change: times the phase that ended, re-arms the deadline, revokes
    /// every upload grant. Returns the new phase if it changed.
    pub fn sync_phase(&mut self, now: Instant, phase_timeout: Duration, out: &mut Outbox) -> Option<Phase> {
        let phase = self.protocol_phase()?;
        if phase == self.phase {
            return None;
        }
        self.timings.push((self.phase, now - self.phase_started));
        self.phase = phase;
        self.phase_started = now;
        self.deadline = now + phase_timeout;
        for seat in std::mem::take(&mut self.granted).into_keys() {
            if let Some(s) = self.seat(seat) {
                out.set_frame_limit(s.conn, MAX_CONTROL_FRAME);
            }
        }
        self.ready.clear();
        Some(phase)
    }

    /// A seat announced its masked input: queue it for a slot, if the phase allows.
    /// Returns whether the announcement was in order.
    pub fn upload_ready(&mut self, seat: ClientId, slots: usize, now: Instant, out: &mut Outbox) -> bool {
        let uploaded = match &self.stage {
            Stage::Running(p) => p.has_answered(seat, Phase::MaskedInput),
            _ => true,
        };
        let in_phase = self.protocol_phase() == Some(Phase::MaskedInput) && self.is_active(seat);
        if !in_phase || uploaded || self.ready.contains(&seat) || self.granted.contains_key(&seat) {
            return false;
        }
        self.ready.push_back(seat);
        self.grant_slots(slots, now, out);
        true
    }

    /// Whether `seat` may upload now.
    pub fn is_granted(&self, seat: ClientId) -> bool {
        self.granted.contains_key(&seat)
    }

    /// The earliest deadline of an upload grant, if any grant has one.
    pub fn next_grant_deadline(&self) -> Option<Instant> {
        self.granted.values().flatten().min().copied()
    }

    /// Seats whose upload grant expired at `now` (their uploads did not arrive in time),
    /// seat order.
    pub fn expired_grants(&self, now: Instant) -> Vec<ClientId> {
        let mut expired: Vec<ClientId> =
            self.granted.iter().filter(|(_, d)| d.is_some_and(|d| d <= now)).map(|(s, _)| *s).collect();
        expired.sort_unstable();
        expired
    }

    /// Grants upload slots to waiting seats while slots are free.
    fn grant_slots(&mut self, slots: usize, now: Instant, out: &mut Outbox) {
        while self.granted.len() < slots {
            let Some(seat) = self.ready.pop_front() else { return };
            let Some(conn) = self.seat(seat).map(|s| s.conn) else { continue };
            out.set_frame_limit(conn, self.upload_limit);
            self.send(seat, Frame::new(ServerServiceMessage::UploadGrant.encode()), out);
            self.granted.insert(seat, self.upload_timeout.map(|t| now + t));
        }
    }

    /// Frees `seat`'s upload slot, if it held one, and grants free slots to waiting seats.
    pub fn release_slot(&mut self, seat: ClientId, slots: usize, now: Instant, out: &mut Outbox) {
        self.ready.retain(|&s| s != seat);
        if self.granted.remove(&seat).is_some() {
            if let Some(s) = self.seat(seat) {
                out.set_frame_limit(s.conn, MAX_CONTROL_FRAME);
            }
            self.grant_slots(slots, now, out);
        }
    }

    /// Bytes received from and sent to the seats this round.
    pub fn bytes(&self) -> (u64, u64) {
        self.seats.iter().fold((0, 0), |(i, o), s| (i + s.bytes_in, o + s.bytes_out))
    }
}

/// A protocol message as a frame; a `Config`'s application payload is shared, not copied.
fn encode(message: &ServerMessage) -> Frame {
    match message {
        ServerMessage::Config(config) => {
            let (head, tail) = config.encode_split();
            Frame::shared(head, tail)
        }
        message => Frame::new(message.encode()),
    }
}

/// The violation of a client that held its upload grant past the deadline.
pub(super) fn upload_stalled() -> DropReason {
    DropReason::Violation(Violation::Transport("held an upload grant past its deadline".into()))
}

/// The violation of a client whose upload came without a grant.
pub(super) fn upload_without_grant() -> DropReason {
    DropReason::Violation(Violation::Transport("masked input sent without an upload grant".into()))
}

//! The server's side of the service, as a state machine in quinn-proto's style: time
//! and inputs in, actions out. It owns admission, the lobby and identities, seats,
//! reconnection and the resend rule, upload grants and per-connection frame limits,
//! the phase and lobby deadlines, and the round's [`ServerRound`]. It opens no socket,
//! reads no clock and spawns nothing; the shell (`privagg-server`) moves frames, timers
//! and actions between it and QUIC, and carries out what only the shell can: planning a
//! round, removing the masks off the async runtime, and committing the result.
//!
//! # Call order
//!
//! 1. Feed every input with the current time: [`ServerSession::handle_connected`],
//!    [`ServerSession::handle_frame`], [`ServerSession::handle_oversized`],
//!    [`ServerSession::handle_closed`], [`ServerSession::handle_stalled`] (a transfer
//!    missed the shell's deadline), and [`ServerSession::handle_timeout`] once the
//!    instant of [`ServerSession::poll_timeout`] has passed.
//! 2. After each input, drain [`ServerSession::poll_action`] until it returns `None`, and
//!    carry out each action in order. Four actions expect an answer before any other
//!    input is fed:
//!    * [`Action::StartRound`]: plan the round, then [`ServerSession::start_round`]
//!      (or [`ServerSession::close`] if it cannot start);
//!    * [`Action::ChargeRelease`]: charge the release durably (the privacy ledger), then
//!      [`ServerSession::handle_release_charged`] (or [`ServerSession::close`] if that
//!      failed: the unmask requests are held back until the answer);
//!    * [`Action::Finalize`]: run the job (CPU-heavy), then
//!      [`ServerSession::handle_finalized`];
//!    * [`Action::Commit`]: apply and store the round's sum, then
//!      [`ServerSession::handle_committed`] (or [`ServerSession::close`] if that failed).
//! 3. Re-arm the timer with [`ServerSession::poll_timeout`].
//!
//! [`Action::Finished`] says the session ended on its own (every round done, or a round
//! failed too often); [`ServerSession::close`] ends it for the shell (shutdown, or an
//! error of the shell's). Either way the session queues a `SessionEnd` and a close for
//! every connection, and ignores later inputs.

mod check_in;
mod lobby;
mod round;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use privagg_protocol::{
    ClientId, ClientMessage, DropReason, DroppedClient, Limits, ParamsError, Phase, RoundAbort, RoundOutput,
    RoundParams, ServerRound, Violation,
};

use self::check_in::CheckInWindow;
use self::lobby::{ConnState, Lobby};
use self::round::{ActiveRound, ReleaseCharge, Stage, upload_stalled, upload_without_grant};
use crate::admission::{Admission, ClientIdentity, Refusal};
use crate::frame::{Frame, MAX_CONTROL_FRAME, upload_frame_limit};
use crate::message::{ClientServiceMessage, EndReason, FromClient, IDENTITY_LEN, Resume, ServerServiceMessage};
use crate::round_log::LogState;

/// A connection's number, unique for the session's lifetime; the shell assigns it.
pub type ConnId = u64;

/// What the session needs to know from the server's configuration.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Clients seated per round (the full cohort). With check-ins: the population — the
    /// waiting clients the server asks before each round.
    pub clients: u32,
    /// Fewest clients a round may start with after the lobby timeout (with check-ins:
    /// fewest that must join; fewer and the check-in is tried again, as an attempt).
    pub min_clients: u32,
    /// Rounds in the session.
    pub rounds: u64,
    /// Rounds completed before this session started (resuming from a checkpoint).
    pub completed_rounds: u64,
    /// How long each protocol phase may take.
    pub phase_timeout: Duration,
    /// How long a seated client may train before the first phase's deadline starts: the
    /// first phase (AdvertiseKeys) may take this plus `phase_timeout`.
    pub train_timeout: Duration,
    /// How long to wait for a full cohort before starting with at least `min_clients`.
    pub lobby_timeout: Duration,
    /// How long a new connection may take to send its `Hello`.
    pub hello_timeout: Duration,
    /// Masked inputs received at once (at least 1): bounds the memory uploads take.
    pub upload_slots: usize,
    /// How long a client may hold an upload grant before its masked input has arrived;
    /// past it the client is dropped as stalled, its connection closed and the slot
    /// given to the next client. `None`: until the phase deadline.
    pub upload_timeout: Option<Duration>,
    /// Offences (protocol violations, stalled transfers) after which an identity is
    /// banned: its connection is closed and its `Hello`s are refused. 0: never banned.
    pub ban_after: u32,
    /// How long a ban lasts; `None`: the rest of the session. Once it has passed the
    /// identity is admitted again, but its offences still count: one more bans it again.
    pub ban_duration: Option<Duration>,
    /// Attempts at one round before it counts as failed (at least 1).
    pub max_round_attempts: u32,
    /// End the session when a round fails (`max_round_attempts` aborted attempts in a
    /// row). Otherwise the server keeps trying the round, backing off: one bad client
    /// never ends a session. With check-ins the session always ends, since the sampling
    /// argument counts on at most `max_round_attempts` check-ins per round.
    pub stop_after_failed_round: bool,
    /// The wait after an aborted attempt before the next cohort is seated: this for the
    /// first abort of a round, doubling with each further one up to 64 times this.
    pub retry_backoff: Duration,
    /// Who is admitted.
    pub admission: Admission,
    /// Decoder limits for client frames.
    pub limits: Limits,
    /// Random check-ins instead of seating the first `clients` waiting.
    pub check_ins: Option<CheckInConfig>,
}

/// Random check-ins: once `clients` (the population) wait, the first `clients` of them are
/// asked to take part, each with probability `rate_ppb` / 10⁹ by its own coin, and only
/// those whose coin says yes are seated. The lobby timeout bounds the wait for answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckInConfig {
    /// The probability of taking part, in parts per billion (1 ..= 10⁹).
    pub rate_ppb: u32,
    /// The largest cohort the round may have: the application plans its neighbour graph
    /// and encoding for it. A check-in that collects more is a failed attempt — seating a
    /// subset would be the server choosing, which the sampling argument forbids.
    pub max_cohort: u32,
}

/// Why the session closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client was not admitted.
    #[error("refused")]
    Refused,
    /// No `Hello` arrived in time.
    #[error("no hello in time")]
    HelloTimeout,
    /// A newer connection with the same identity took over.
    #[error("replaced by a newer connection")]
    Replaced,
    /// A client without a seat sent a message.
    #[error("unexpected message")]
    UnexpectedMessage,
    /// A frame did not decode or was too large.
    #[error("malformed or oversized frame")]
    BadFrame,
    /// The client stalled a transfer: it did not read what was sent, did not finish a
    /// frame it began, or held an upload grant too long.
    #[error("stalled a transfer")]
    Stalled,
    /// The client's identity is banned (for the ban's duration, or the session).
    #[error("banned")]
    Banned,
    /// The session ended.
    #[error("session ended")]
    SessionEnded,
}

/// What the shell should do next.
#[derive(Debug)]
pub enum Action {
    /// Write `frame` to `conn`, after what was queued before.
    Send {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Frame,
    },
    /// Accept frames of at most `limit` bytes from `conn` from now on.
    SetFrameLimit {
        /// The connection.
        conn: ConnId,
        /// The largest frame (message bytes, without the header).
        limit: usize,
    },
    /// `conn` was admitted: it may now be given the resources of an admitted client
    /// (larger transport windows; it no longer counts against the cap on connections
    /// awaiting admission).
    Admitted {
        /// The connection.
        conn: ConnId,
    },
    /// Close `conn` once what was queued for it is written.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// A cohort is seated: plan round `round` (attempt `attempt`) for `clients` clients
    /// and answer with [`ServerSession::start_round`].
    StartRound {
        /// The round number.
        round: u64,
        /// The attempt (1 for the first).
        attempt: u32,
        /// Clients seated.
        clients: u32,
    },
    /// The survivors are about to be asked for their unmasking shares, after which the
    /// server can compute the sum of `inputs` masked inputs: charge this release of
    /// round `round` (attempt `attempt`) durably — it counts whether or not the round
    /// commits — then [`ServerSession::handle_release_charged`]. Nothing is sent to the
    /// round's clients until then.
    ChargeRelease {
        /// The round number.
        round: u64,
        /// The attempt (1 for the first).
        attempt: u32,
        /// Masked inputs in the sum.
        inputs: usize,
        /// The attempt's instance: its SecAgg session id (the transcript hash every
        /// client of the attempt derives), which the round's log leaf lists among the
        /// attempts unmasked, so that a client that reveals its shares in it can check
        /// the log names it.
        instance: [u8; 32],
    },
    /// Remove the masks (CPU-heavy: off the async runtime), then hand the job back with
    /// [`ServerSession::handle_finalized`].
    Finalize(Box<FinalizeJob>),
    /// The round's sum is recovered: apply and store it, then
    /// [`ServerSession::handle_committed`]. Its clients hear `RoundComplete` only then.
    Commit(Box<RoundCommit>),
    /// Send the global model after round `round` (just committed) to `conns`, clients of
    /// the round that asked to follow the model, before anything queued after this.
    SendModel {
        /// The round the model includes.
        round: u64,
        /// The connections.
        conns: Vec<ConnId>,
    },
    /// Something observers may want to know.
    Event(SessionEvent),
    /// The session ended on its own.
    Finished(SessionEnd),
}

/// Progress, for logs and displays.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    /// A round started.
    RoundStarted {
        /// The round.
        round: u64,
        /// The attempt (1 for the first).
        attempt: u32,
        /// Clients seated.
        participants: u32,
    },
    /// The round moved to a new phase.
    PhaseChanged {
        /// The round.
        round: u64,
        /// The new phase.
        phase: Phase,
    },
    /// An identity was banned.
    Banned(Ban),
    /// A round attempt aborted; it will be retried unless it was the last attempt.
    RoundAborted {
        /// The round.
        round: u64,
        /// The attempt.
        attempt: u32,
        /// Why.
        reason: RoundAbort,
        /// Whether it counts against `max_round_attempts`: not when every client it lost
        /// closed its connection before advertising its keys (each identity once per round),
        /// since those were leaving anyway and the retry goes on without them.
        counted: bool,
    },
    /// With random check-ins: too few or too many clients checked in; nobody was seated
    /// and the attempt failed.
    CheckInFailed {
        /// The round.
        round: u64,
        /// The attempt.
        attempt: u32,
        /// Why.
        reason: RoundAbort,
    },
}

/// How a session ended on its own.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEnd {
    /// Every round completed.
    Complete {
        /// Rounds completed, earlier runs included.
        completed_rounds: u64,
    },
    /// A round aborted `attempts` times in a row.
    RoundFailed {
        /// The round.
        round: u64,
        /// Attempts made.
        attempts: u32,
        /// The last abort.
        reason: RoundAbort,
    },
}

/// What a client did to be held responsible: the typed reason of a ban.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Offence {
    /// It broke the protocol; its seat was dropped with this violation.
    #[error("protocol violation: {0}")]
    Violation(String),
    /// It did not read a frame the server wrote within the write deadline (a model
    /// download, typically).
    #[error("did not read a frame within the write deadline")]
    StalledDownload,
    /// It held an upload grant past the upload deadline.
    #[error("held an upload grant past the upload deadline")]
    StalledUpload,
    /// It began a frame and did not finish it within the read deadline.
    #[error("did not finish a frame within the read deadline")]
    StalledFrame,
}

/// A transfer the shell saw stall, reported with [`ServerSession::handle_stalled`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stall {
    /// A write to the client did not complete within the write deadline.
    Write,
    /// A frame from the client did not complete within the read deadline.
    Read,
}

/// An identity banned (for [`SessionConfig::ban_duration`], or the session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    /// Who.
    pub identity: ClientIdentity,
    /// Its seat in the round in progress when it was banned, if it held one.
    pub seat: Option<ClientId>,
    /// The round (next round, between rounds) and attempt when it was banned.
    pub round: u64,
    /// Offences counted against it.
    pub offences: u32,
    /// The offence that tipped the count.
    pub reason: Offence,
    /// How long it lasts (`None`: the rest of the session).
    pub duration: Option<Duration>,
}

/// The masks of a round to remove: [`FinalizeJob::run`] rebuilds the secrets and
/// expands the masks (rayon, all cores).
pub struct FinalizeJob {
    round: ServerRound,
}

impl std::fmt::Debug for FinalizeJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinalizeJob").field("round", &self.round.params().round).finish()
    }
}

impl FinalizeJob {
    /// Removes the masks; a failure is recorded in the round (it aborts).
    pub fn run(&mut self) {
        if let Err(abort) = self.round.finalize() {
            tracing::warn!(%abort, "unmasking failed");
        }
    }
}

/// Everything the shell needs to apply and record a completed round.
#[derive(Clone, Debug)]
pub struct RoundCommit {
    /// The round.
    pub round: u64,
    /// Which attempt completed.
    pub attempt: u32,
    /// Its instance (SecAgg session id), as its [`Action::ChargeRelease`] named it.
    pub instance: [u8; 32],
    /// Its parameters.
    pub params: RoundParams,
    /// The unmasked sum and who is in it.
    pub output: RoundOutput,
    /// Who left, when and why.
    pub dropped: Vec<DroppedClient>,
    /// Seats whose client reconnected during the round.
    pub reconnected: Vec<ClientId>,
    /// Time spent in each phase, in order.
    pub timings: Vec<(Phase, Duration)>,
    /// From the start of the round to the recovered sum.
    pub total: Duration,
    /// Bytes received from the round's clients, frame headers included.
    pub bytes_in: u64,
    /// Bytes sent to them.
    pub bytes_out: u64,
    /// Identities banned since the previous commit (during this round's attempts, or
    /// between rounds).
    pub banned: Vec<Ban>,
    /// Who held each seat (seat 1 first): the round's client ids mapped to identities.
    pub holders: Vec<SeatHolder>,
}

/// Who held a seat of a committed round.
#[derive(Clone, Debug)]
pub struct SeatHolder {
    /// The seat (the client's id in the round).
    pub seat: ClientId,
    /// The identity admitted to it.
    pub identity: ClientIdentity,
    /// The certificate it presented, if it has one (its subject names the client).
    pub certificate: Option<Arc<[u8]>>,
}

/// Why [`ServerSession::start_round`] refused the parameters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// No round is waiting for its parameters, or they are for another round or cohort.
    #[error("the parameters are not for the seated cohort (round {round}, {seated} clients)")]
    NotSeated {
        /// The round waiting, if any.
        round: u64,
        /// Clients seated.
        seated: usize,
    },
    /// The parameters are invalid.
    #[error(transparent)]
    Params(#[from] ParamsError),
}

/// The actions queued for the shell, and the frames they carry.
#[derive(Default)]
pub(crate) struct Outbox(VecDeque<Action>);

impl Outbox {
    pub(crate) fn send(&mut self, conn: ConnId, frame: Frame) {
        self.0.push_back(Action::Send { conn, frame });
    }

    pub(crate) fn set_frame_limit(&mut self, conn: ConnId, limit: usize) {
        self.0.push_back(Action::SetFrameLimit { conn, limit });
    }

    pub(crate) fn close(&mut self, conn: ConnId, reason: CloseReason) {
        self.0.push_back(Action::Close { conn, reason });
    }

    pub(crate) fn admitted(&mut self, conn: ConnId) {
        self.0.push_back(Action::Admitted { conn });
    }

    fn push(&mut self, action: Action) {
        self.0.push_back(action);
    }
}

/// The server's side of a session of rounds.
pub struct ServerSession {
    config: SessionConfig,
    lobby: Lobby,
    round: Option<ActiveRound>,
    /// The check-in for the next round, while clients answer.
    check_in: Option<CheckInWindow>,
    next_round: u64,
    /// The last attempt at `next_round` (numbers every attempt, counted or not).
    attempt: u32,
    /// Aborted attempts at `next_round` that count against `max_round_attempts`.
    counted_aborts: u32,
    /// Identities that cost `next_round` an attempt that did not count: each is forgiven
    /// once per round, so a client cannot stall a round by leaving again and again.
    forgiven: HashSet<ClientIdentity>,
    out: Outbox,
    closed: bool,
    /// The time of the input being handled.
    now: Option<Instant>,
    /// Offences per identity, for the session.
    offences: HashMap<ClientIdentity, u32>,
    /// Banned identities: the offence that banned each, and until when (`None`: the
    /// session).
    banned: HashMap<ClientIdentity, (Offence, Option<Instant>)>,
    /// Bans not yet reported in a commit.
    unreported_bans: Vec<Ban>,
    /// No cohort is seated before this (backing off after an aborted attempt).
    retry_at: Option<Instant>,
    /// The round log, as the shell last gave it: each client's `Config` proves it.
    log: Option<Arc<LogState>>,
}

impl ServerSession {
    /// A session that carries on after `config.completed_rounds` rounds. If every round
    /// is already complete, it finishes at once.
    pub fn new(config: SessionConfig) -> Self {
        let next_round = config.completed_rounds + 1;
        let mut session = Self {
            config,
            lobby: Lobby::default(),
            round: None,
            check_in: None,
            next_round,
            attempt: 0,
            counted_aborts: 0,
            forgiven: HashSet::new(),
            out: Outbox::default(),
            closed: false,
            now: None,
            offences: HashMap::new(),
            banned: HashMap::new(),
            unreported_bans: Vec::new(),
            retry_at: None,
            log: None,
        };
        if next_round > session.config.rounds {
            session.closed = true;
            session.out.push(Action::Finished(SessionEnd::Complete { completed_rounds: next_round - 1 }));
        }
        session
    }

    /// The round log as it stands: the shell gives it before the first round and after
    /// every round it commits (before [`ServerSession::handle_committed`]), so that each
    /// round's `Config` proves every round before it. Each client's `Config` carries the
    /// proof of the log it asked for in its `Ready`; without a log, none (and clients
    /// that require one leave).
    pub fn set_log(&mut self, log: Arc<LogState>) {
        self.log = Some(log);
    }

    /// Rounds completed so far, earlier runs included.
    pub fn completed_rounds(&self) -> u64 {
        self.next_round - 1
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.0.pop_front()
    }

    /// When [`ServerSession::handle_timeout`] is due next: the earliest of a pending
    /// `Hello`, the current phase's deadline, and the start of a partial cohort.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let round = match &self.round {
            Some(r) if matches!(r.stage, Stage::Running(_)) => {
                Some(r.next_grant_deadline().map_or(r.deadline, |g| g.min(r.deadline)))
            }
            Some(_) => None,
            None => match &self.check_in {
                Some(window) => Some(window.deadline),
                None if self.config.check_ins.is_some() => None,
                None => {
                    let partial =
                        self.lobby.partial_cohort_deadline(self.config.min_clients as usize, self.config.lobby_timeout);
                    // Backing off: a full cohort is seated when the retry is due, a partial
                    // one when both the retry and its lobby timeout are.
                    let waiting = self.lobby.waiting();
                    let retry = self.retry_at.filter(|_| waiting >= self.config.min_clients as usize);
                    match (partial, retry) {
                        (_, Some(r)) if waiting >= self.config.clients as usize => Some(r),
                        (Some(p), Some(r)) => Some(p.max(r)),
                        (p, r) => p.or(r),
                    }
                }
            },
        };
        [self.lobby.next_hello_deadline(), round].into_iter().flatten().min()
    }

    /// A client connected as `conn`, presenting `certificate` (DER) in the TLS handshake
    /// if the server asks for one; its `Hello` is due within the hello timeout. A
    /// connection number already in use is ignored (the shell assigns each once).
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId, certificate: Option<Arc<[u8]>>) {
        self.now = Some(now);
        if self.closed {
            self.out.close(conn, CloseReason::SessionEnded);
            return;
        }
        if self.lobby.state(conn).is_some() {
            tracing::warn!(conn, "connection number reused; ignored");
            return;
        }
        self.lobby.connected(conn, now + self.config.hello_timeout, certificate);
    }

    /// A whole frame (the message bytes) arrived from `conn`.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, frame: &[u8]) {
        self.now = Some(now);
        if self.closed {
            return;
        }
        match self.lobby.state(conn) {
            Some(ConnState::AwaitingHello) => self.on_hello(conn, frame),
            Some(ConnState::Admitted { seat: Some(seat), .. }) => self.on_seated_frame(conn, seat, frame),
            Some(ConnState::Admitted { seat: None, returning, .. }) => self.on_lobby_frame(now, conn, returning, frame),
            Some(ConnState::Closing) | None => {}
        }
        self.after_input(now);
    }

    /// The shell refused a frame of `len` bytes from `conn` as larger than its current
    /// limit (`limit`); the connection is closed.
    pub fn handle_oversized(&mut self, now: Instant, conn: ConnId, len: usize, limit: usize) {
        self.now = Some(now);
        if let Some(ConnState::Admitted { seat: Some(seat), .. }) = self.lobby.state(conn) {
            let violation = Violation::Transport(format!("frame of {len} bytes exceeds the current limit of {limit}"));
            tracing::warn!(client = seat.get(), %violation, "client dropped");
            self.drop_seat(seat, DropReason::Violation(violation));
        }
        self.close_conn(conn, CloseReason::BadFrame);
        self.after_input(now);
    }

    /// `conn` closed. A seated client whose connection was lost (`transient`: timed out
    /// or reset, not closed by the client) keeps its seat until the phase deadline, in
    /// case it reconnects; one that closed its connection leaves the round at once.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId, transient: bool) {
        self.now = Some(now);
        if let Some(window) = &mut self.check_in {
            window.forget(conn);
        }
        let Some(ConnState::Admitted { seat: Some(seat), .. }) = self.lobby.remove(conn) else {
            return self.after_input(now);
        };
        let holds_seat = self.round.as_ref().and_then(|r| r.seat(seat)).is_some_and(|s| s.conn == conn);
        if !holds_seat || self.closed {
            return;
        }
        if transient {
            tracing::info!(
                client = seat.get(),
                "connection lost; the seat waits for a reconnection until the phase deadline"
            );
            return;
        }
        tracing::info!(client = seat.get(), "client disconnected");
        self.drop_seat(seat, DropReason::ConnectionLost);
        self.after_input(now);
    }

    /// The shell saw a transfer on `conn` stall: a write not read by the client within
    /// the write deadline, or a frame not finished within the read deadline. The client
    /// loses its seat (if it holds one), its connection is closed, and the offence counts
    /// towards a ban. Slow clients hurt only themselves.
    pub fn handle_stalled(&mut self, now: Instant, conn: ConnId, stall: Stall) {
        self.now = Some(now);
        if self.closed {
            return;
        }
        let offence = match stall {
            Stall::Write => Offence::StalledDownload,
            Stall::Read => Offence::StalledFrame,
        };
        match self.lobby.state(conn) {
            Some(ConnState::Admitted { seat: Some(seat), .. }) => {
                tracing::warn!(client = seat.get(), %offence, "client dropped");
                let reason = DropReason::Violation(Violation::Transport(offence.to_string()));
                self.drop_seat_for(seat, reason, Some(offence));
            }
            Some(ConnState::Admitted { identity, seat: None, .. }) => {
                tracing::info!(conn, %offence, "closing a stalled client in the lobby");
                self.record_offence(identity, None, offence);
            }
            _ => {}
        }
        if self.lobby.state(conn).is_some_and(|s| s != ConnState::Closing) {
            self.close_conn(conn, CloseReason::Stalled);
        }
        self.after_input(now);
    }

    /// Whether `identity` is banned at `now`.
    pub fn is_banned(&self, identity: &ClientIdentity, now: Instant) -> bool {
        self.banned.get(identity).is_some_and(|(_, until)| until.is_none_or(|until| now < until))
    }

    /// Bans `identity` for `remaining` from `now` (`None`: the rest of the session), as a
    /// ban from before a restart that the shell kept; its offences count as `ban_after`,
    /// so that one more bans it again once this ban has passed.
    pub fn restore_ban(
        &mut self,
        identity: ClientIdentity,
        offence: Offence,
        remaining: Option<Duration>,
        now: Instant,
    ) {
        self.offences.insert(identity, self.config.ban_after.max(1));
        self.banned.insert(identity, (offence, remaining.map(|r| now + r)));
    }

    /// Connections that have not been admitted yet (their `Hello` is due).
    pub fn unadmitted(&self) -> usize {
        self.lobby.unadmitted()
    }

    /// Time passed: overdue hellos are closed, an overdue phase is closed (its silent
    /// clients dropped), and a partial cohort starts once the lobby timeout passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        if self.closed {
            return;
        }
        for conn in self.lobby.overdue_hellos(now) {
            self.close_conn(conn, CloseReason::HelloTimeout);
        }
        let expired = self.round.as_ref().map(|r| r.expired_grants(now)).unwrap_or_default();
        for seat in expired {
            let conn = self.round.as_ref().and_then(|r| r.seat(seat)).map(|s| s.conn);
            tracing::warn!(client = seat.get(), "upload grant expired; client dropped");
            self.drop_seat_for(seat, upload_stalled(), Some(Offence::StalledUpload));
            if let Some(conn) = conn.filter(|&c| self.lobby.state(c).is_some()) {
                self.close_conn(conn, CloseReason::Stalled);
            }
        }
        if let Some(round) = &mut self.round
            && round.deadline <= now
            && let Some(protocol) = round.protocol()
        {
            tracing::info!(phase = %protocol.phase(), "phase deadline passed");
            protocol.close_phase();
        }
        if self.round.is_none()
            && self.config.check_ins.is_none()
            && let Some(deadline) =
                self.lobby.partial_cohort_deadline(self.config.min_clients as usize, self.config.lobby_timeout)
            && deadline <= now
        {
            self.seat_cohort(now, self.lobby.waiting().min(self.config.clients as usize));
        }
        self.after_input(now);
    }

    /// The answer to [`Action::StartRound`]: the round's parameters and the application
    /// payload every client gets in its `Config`.
    pub fn start_round(&mut self, now: Instant, params: RoundParams, app_data: Arc<[u8]>) -> Result<(), StartError> {
        self.now = Some(now);
        let preparing = self.round.as_mut().filter(|r| matches!(r.stage, Stage::Preparing { .. }));
        let Some(round) = preparing.filter(|_| !self.closed) else {
            return Err(StartError::NotSeated { round: self.next_round, seated: 0 });
        };
        if params.round != round.number || params.num_clients as usize != round.seats.len() {
            return Err(StartError::NotSeated { round: round.number, seated: round.seats.len() });
        }
        let upload_limit = upload_frame_limit(params.dim, params.bits);
        let members = round.members().unwrap_or_default();
        let protocol = ServerRound::new(params.clone(), members, app_data)?;
        let first_phase = self.config.train_timeout + self.config.phase_timeout;
        round.start(protocol, upload_limit, now, first_phase, self.config.upload_timeout, self.log.clone());
        tracing::info!(
            round = round.number,
            attempt = round.attempt,
            participants = params.num_clients,
            neighbours = params.neighbours,
            threshold = params.threshold,
            bits = params.bits,
            "round started"
        );
        self.out.push(Action::Event(SessionEvent::RoundStarted {
            round: round.number,
            attempt: round.attempt,
            participants: params.num_clients,
        }));
        self.after_input(now);
        Ok(())
    }

    /// The answer to [`Action::Finalize`]: the job, run.
    pub fn handle_finalized(&mut self, now: Instant, job: Box<FinalizeJob>) {
        self.now = Some(now);
        if let Some(round) = self.round.as_mut().filter(|r| matches!(r.stage, Stage::Finalizing)) {
            round.stage = Stage::Running(job.round);
        }
        self.after_input(now);
    }

    /// The answer to [`Action::ChargeRelease`]: the release is charged; the unmask
    /// requests go out.
    pub fn handle_release_charged(&mut self, now: Instant) {
        self.now = Some(now);
        if let Some(round) = self.round.as_mut().filter(|r| r.release == ReleaseCharge::Charging) {
            round.release = ReleaseCharge::Charged;
        }
        self.after_input(now);
    }

    /// The answer to [`Action::Commit`]: the round is applied and stored. Its clients
    /// hear `RoundComplete`, return to the lobby, and the next round may start.
    pub fn handle_committed(&mut self, now: Instant) {
        self.now = Some(now);
        let Some(mut round) = self.round.take_if(|r| matches!(r.stage, Stage::Committing(_))) else { return };
        let followers: Vec<ConnId> = round.seats.iter().map(|s| s.conn).filter(|&c| self.lobby.follows(c)).collect();
        if !followers.is_empty() {
            self.out.push(Action::SendModel { round: round.number, conns: followers });
        }
        round.release_completion(&mut self.out);
        self.lobby.unseat(round.seats.iter().map(|s| s.conn));
        self.next_round += 1;
        self.attempt = 0;
        self.counted_aborts = 0;
        self.forgiven.clear();
        if self.next_round > self.config.rounds {
            self.close(EndReason::Complete, "the session is complete");
            self.out.push(Action::Finished(SessionEnd::Complete { completed_rounds: self.completed_rounds() }));
            return;
        }
        self.after_input(now);
    }

    /// Ends the session: the current round is cancelled (its clients hear why), every
    /// client gets `SessionEnd` with `end` and `reason`, and every connection is closed.
    pub fn close(&mut self, end: EndReason, reason: &str) {
        if self.closed {
            return;
        }
        if let Some(mut round) = self.round.take() {
            if let Some(protocol) = round.protocol() {
                protocol.cancel(reason);
            }
            round.flush(&mut self.out);
            self.lobby.unseat(round.seats.iter().map(|s| s.conn));
        }
        self.closed = true;
        self.check_in = None;
        let end =
            ServerServiceMessage::SessionEnd { completed_rounds: self.completed_rounds(), end, reason: reason.into() };
        let end = Frame::new(end.encode());
        let conns: Vec<(ConnId, ConnState)> = self.lobby.conns().collect();
        for (conn, state) in conns {
            if matches!(state, ConnState::Admitted { .. }) {
                self.out.send(conn, end.clone());
            }
            if state != ConnState::Closing {
                self.out.close(conn, CloseReason::SessionEnded);
            }
        }
    }

    fn on_hello(&mut self, conn: ConnId, frame: &[u8]) {
        let admitted = match FromClient::decode(frame, &self.config.limits) {
            Ok(FromClient::Service(ClientServiceMessage::Hello { token, identity: instance, resume })) => {
                let certificate = self.lobby.certificate(conn);
                self.config.admission.admit(&token, &instance, certificate.as_deref()).map(|id| (id, instance, resume))
            }
            Ok(other) => Err(Refusal::NotAHello(other.name().into())),
            Err(e) => Err(Refusal::NotAHello(format!("a malformed frame ({e})"))),
        };
        let admitted = admitted.and_then(|(identity, instance, resume)| self.admit(conn, identity, instance, resume));
        match admitted {
            Ok(()) => {}
            Err(refusal) => {
                tracing::info!(conn, %refusal, "refused a client");
                self.out.send(conn, Frame::new(ServerServiceMessage::Refused { reason: refusal.to_string() }.encode()));
                self.close_conn(conn, CloseReason::Refused);
            }
        }
    }

    /// In the lobby a client may only ask for a seat. Other frames close its connection,
    /// except those of the round it just left, sent before it heard that the round ended.
    fn on_lobby_frame(&mut self, now: Instant, conn: ConnId, returning: bool, frame: &[u8]) {
        match FromClient::decode(frame, &self.config.limits) {
            Ok(FromClient::Service(ClientServiceMessage::Ready { commitment, log })) => {
                self.lobby.ready(now, conn, commitment, log);
            }
            Ok(FromClient::Service(ClientServiceMessage::FollowModel)) => self.lobby.follow(conn),
            Ok(FromClient::Service(ClientServiceMessage::CheckInReply { round, attempt, join })) => {
                // A late answer (after its window closed) is harmless: ignored.
                if !self.check_in.as_mut().is_some_and(|w| w.reply(conn, (round, attempt), join)) {
                    tracing::debug!(conn, round, attempt, "ignoring a check-in answer nobody waits for");
                }
            }
            _ if returning => tracing::debug!(conn, "ignoring a late message of the last round"),
            _ => {
                tracing::warn!(conn, "message from a client outside any round; closing it");
                self.close_conn(conn, CloseReason::UnexpectedMessage);
            }
        }
    }

    /// Admits `conn` as `identity` (its `Hello` carried the random `instance`), or says
    /// why not: a banned identity, or one held by another client (see
    /// [`crate::admission`]).
    fn admit(
        &mut self,
        conn: ConnId,
        identity: ClientIdentity,
        instance: [u8; IDENTITY_LEN],
        resume: Option<Resume>,
    ) -> Result<(), Refusal> {
        if let Some((offence, _)) = self.banned.get(&identity) {
            if self.now.is_none_or(|now| self.is_banned(&identity, now)) {
                return Err(Refusal::Banned(offence.to_string()));
            }
            self.banned.remove(&identity);
        }
        if !self.config.admission.proves_possession() {
            // A seat held (or waiting for its client to come back) by another instance.
            let seat_instance = self.round.as_ref().and_then(|round| {
                let seat = round.seat_of(&identity).filter(|&s| round.is_active(s))?;
                round.seat(seat).map(|s| s.instance)
            });
            let holder_instance = self.lobby.holder(&identity).and_then(|old| match self.lobby.state(old) {
                Some(ConnState::Admitted { instance, .. }) => Some(instance),
                _ => None,
            });
            if seat_instance.is_some_and(|i| i != instance) || holder_instance.is_some_and(|i| i != instance) {
                return Err(Refusal::IdentityInUse);
            }
        }
        self.out.admitted(conn);
        if self.rebind(conn, identity, instance, resume) {
            return Ok(());
        }
        if let Some(old) = self.lobby.holder(&identity) {
            // The same client (same instance, or a proven identity): the newer connection
            // replaces the older.
            tracing::info!(conn = old, "replaced by a new connection of the same client");
            if let Some(ConnState::Admitted { seat: Some(seat), .. }) = self.lobby.state(old) {
                self.drop_seat(seat, DropReason::ConnectionLost);
            }
            self.close_conn(old, CloseReason::Replaced);
        }
        self.lobby.admit(conn, identity, instance, None);
        self.out.set_frame_limit(conn, MAX_CONTROL_FRAME);
        self.out.send(conn, Frame::new(ServerServiceMessage::Welcome { resumed: None }.encode()));
        Ok(())
    }

    /// Gives a reconnecting client its seat back, tells it how many of its frames the
    /// server has, and resends the last frame it lacks (the resend rule). Returns false
    /// if `identity` holds no active seat, or its claim is impossible (then it loses the
    /// seat).
    fn rebind(
        &mut self,
        conn: ConnId,
        identity: ClientIdentity,
        instance: [u8; IDENTITY_LEN],
        resume: Option<Resume>,
    ) -> bool {
        let Some(round) = &mut self.round else { return false };
        let Some(seat) = round.seat_of(&identity).filter(|&s| round.is_active(s)) else { return false };
        let claimed = resume.filter(|r| r.round == round.number).map_or(0, |r| r.received);
        let old = round.seat(seat).map(|s| s.conn);
        let Ok(behind) = round.rebind(seat, conn, claimed) else {
            let violation = Violation::Transport(format!("resumed claiming {claimed} frames received"));
            self.drop_seat(seat, DropReason::Violation(violation));
            return false;
        };
        tracing::info!(client = seat.get(), conn, "client reconnected to its seat");
        if let Some(old) = old.filter(|&old| old != conn && self.lobby.state(old).is_some()) {
            self.lobby.closing(old);
            self.out.close(old, CloseReason::Replaced);
        }
        if let Some(s) = round.seat_mut(seat) {
            s.instance = instance;
        }
        self.lobby.admit(conn, identity, instance, Some(seat));
        let received = round.seat(seat).map_or(0, |s| s.received);
        let welcome = ServerServiceMessage::Welcome { resumed: Some(Resume { round: round.number, received }) };
        self.out.set_frame_limit(conn, round.frame_limit(seat));
        self.out.send(conn, Frame::new(welcome.encode()));
        round.resend_after_rebind(seat, behind, &mut self.out);
        true
    }

    fn on_seated_frame(&mut self, conn: ConnId, seat: ClientId, frame: &[u8]) {
        let slots = self.config.upload_slots;
        let Some(now) = self.now else { return };
        let Some(round) = &mut self.round else { return };
        round.received(seat, frame.len());
        let msg = match FromClient::decode(frame, &self.config.limits) {
            Ok(msg) => msg,
            Err(e) => {
                let violation = Violation::Malformed(e);
                tracing::warn!(client = seat.get(), %violation, "client dropped");
                self.drop_seat(seat, DropReason::Violation(violation));
                self.close_conn(conn, CloseReason::BadFrame);
                return;
            }
        };
        // A client whose seat is gone (it left — a refusal is its right — or was dropped
        // without a violation) may ask for the next round before this one ends, as
        // `Client::run` does at once: back to the lobby, where its request counts. A
        // violator's early request is not honoured, so that it cannot queue ahead of the
        // honest clients still in the round.
        let violated = |round: &mut ActiveRound| {
            round.protocol().is_some_and(|p| {
                p.dropped().iter().any(|d| d.client == seat && matches!(d.reason, DropReason::Violation(_)))
            })
        };
        if matches!(msg, FromClient::Service(ClientServiceMessage::Ready { .. }))
            && !matches!(round.stage, Stage::Preparing { .. })
            && !round.is_active(seat)
            && !violated(round)
        {
            self.lobby.unseat(std::iter::once(conn));
            return self.on_lobby_frame(now, conn, true, frame);
        }
        if matches!(round.stage, Stage::Finalizing | Stage::Committing(_)) {
            return; // the round no longer takes messages
        }
        match msg {
            FromClient::Protocol(msg @ ClientMessage::MaskedInput(_)) => {
                if !round.is_granted(seat) {
                    self.drop_seat(seat, upload_without_grant());
                    return;
                }
                if let Some(Err(e)) = round.protocol().map(|p| p.receive(seat, msg)) {
                    tracing::warn!(client = seat.get(), error = %e, "message refused");
                }
                round.release_slot(seat, slots, now, &mut self.out);
            }
            FromClient::Protocol(msg) => match round.protocol() {
                Some(protocol) => {
                    if let Err(e) = protocol.receive(seat, msg) {
                        tracing::warn!(client = seat.get(), error = %e, "message refused");
                    }
                }
                None => self.drop_seat(seat, unexpected(&FromClient::Protocol(msg))),
            },
            FromClient::Service(ClientServiceMessage::UploadReady)
                if round.upload_ready(seat, slots, now, &mut self.out) => {}
            other => {
                tracing::warn!(client = seat.get(), message = other.name(), "unexpected message; client dropped");
                self.drop_seat(seat, unexpected(&other));
            }
        }
    }

    /// Drops `seat` for `reason`; a violation counts as an offence of its identity.
    fn drop_seat(&mut self, seat: ClientId, reason: DropReason) {
        let offence = match &reason {
            DropReason::Violation(v) => Some(Offence::Violation(v.to_string())),
            _ => None,
        };
        self.drop_seat_for(seat, reason, offence);
    }

    /// Drops `seat` for `reason`, counting `offence` against its identity.
    fn drop_seat_for(&mut self, seat: ClientId, reason: DropReason, offence: Option<Offence>) {
        let Some(now) = self.now else { return };
        let Some(round) = &mut self.round else { return };
        let identity = round.seat(seat).map(|s| s.identity);
        let was_active = round.is_active(seat) || matches!(round.stage, Stage::Preparing { .. });
        round.drop_seat(seat, reason, self.config.upload_slots, now, &mut self.out);
        if let (Some(identity), Some(offence), true) = (identity, offence, was_active) {
            self.record_offence(identity, Some(seat), offence);
        }
    }

    /// Counts `offence` against `identity`; bans it once it has offended `ban_after`
    /// times (its connection is closed, its `Hello`s refused while the ban lasts).
    fn record_offence(&mut self, identity: ClientIdentity, seat: Option<ClientId>, offence: Offence) {
        let count = self.offences.entry(identity).or_insert(0);
        *count += 1;
        let offences = *count;
        if self.config.ban_after == 0 || offences < self.config.ban_after || self.banned.contains_key(&identity) {
            return;
        }
        let duration = self.config.ban_duration;
        tracing::warn!(?identity, offences, %offence, ?duration, "identity banned");
        let ban = Ban { identity, seat, round: self.next_round, offences, reason: offence.clone(), duration };
        // Without a time (no input has been handled yet) the ban lasts the session.
        let until = duration.and_then(|d| Some(self.now? + d));
        self.banned.insert(identity, (offence, until));
        self.unreported_bans.push(ban.clone());
        self.out.push(Action::Event(SessionEvent::Banned(ban)));
        if let Some(conn) = self.lobby.holder(&identity) {
            self.close_conn(conn, CloseReason::Banned);
        }
    }

    /// Offences counted against the identity `conn` is admitted as.
    fn offences_of(&self, conn: ConnId) -> u32 {
        match self.lobby.state(conn) {
            Some(ConnState::Admitted { identity, .. }) => self.offences.get(&identity).copied().unwrap_or(0),
            _ => 0,
        }
    }

    fn close_conn(&mut self, conn: ConnId, reason: CloseReason) {
        if let Some(window) = &mut self.check_in {
            window.forget(conn);
        }
        self.lobby.closing(conn);
        self.out.close(conn, reason);
    }

    /// Carries out the consequences of an input: queued messages go out, a phase change
    /// is noted, a round ready to finalize or commit is handed to the shell, an aborted
    /// one is retried, and a new cohort is seated when enough clients wait.
    fn after_input(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let blamed = self.round.as_mut().map(ActiveRound::take_protocol_blame).unwrap_or_default();
        for (seat, identity, violation) in blamed {
            self.record_offence(identity, Some(seat), Offence::Violation(violation));
        }
        if let Some(round) = &mut self.round {
            if let Some(phase) = round.sync_phase(now, self.config.phase_timeout, &mut self.out) {
                tracing::debug!(%phase, "phase changed");
                self.out.push(Action::Event(SessionEvent::PhaseChanged { round: round.number, phase }));
            }
            // A completed round's messages wait for its commit, and unmask requests for
            // the release to be charged; any other's go out now.
            match round.protocol_phase() {
                Some(Phase::Completed) => self.hand_over_commit(now),
                Some(Phase::Unmask) if round.release != ReleaseCharge::Charged => {
                    if round.release == ReleaseCharge::NotYet {
                        round.release = ReleaseCharge::Charging;
                        let inputs = round.protocol().map_or(0, |p| p.inputs());
                        let instance = round.protocol().and_then(|p| p.session_id()).unwrap_or_default();
                        let (round, attempt) = (round.number, round.attempt);
                        self.out.push(Action::ChargeRelease { round, attempt, inputs, instance });
                    }
                }
                phase => {
                    round.flush(&mut self.out);
                    match phase {
                        Some(Phase::Reconstruct) => self.hand_over_finalize(),
                        Some(Phase::Aborted) => self.end_attempt(),
                        _ => {}
                    }
                }
            }
        }
        if self.round.is_some() {
            return;
        }
        match self.config.check_ins {
            Some(check_ins) => self.check_ins(now, check_ins),
            None if self.lobby.waiting() >= self.config.clients as usize => {
                self.seat_cohort(now, self.config.clients as usize);
            }
            None => {}
        }
    }

    /// Opens a check-in once the population waits, asking the first `clients` of it;
    /// when every client asked answered (or the lobby timeout passed), seats those that
    /// joined, or counts a failed attempt if too few or too many did.
    fn check_ins(&mut self, now: Instant, check_ins: CheckInConfig) {
        let population = self.config.clients as usize;
        match &self.check_in {
            None if self.lobby.waiting() >= population => {
                let asked: Vec<ConnId> = self.lobby.queued().into_iter().take(population).collect();
                let (round, attempt) = (self.next_round, self.attempt + 1);
                let ask = ServerServiceMessage::CheckIn { round, attempt, rate_ppb: check_ins.rate_ppb };
                let ask = Frame::new(ask.encode());
                for &conn in &asked {
                    self.out.send(conn, ask.clone());
                }
                self.check_in = Some(CheckInWindow::open((round, attempt), asked, now + self.config.lobby_timeout));
            }
            Some(window) if window.is_over(now) => {
                let waiting: HashSet<ConnId> = self.lobby.queued().into_iter().collect();
                let joined: Vec<ConnId> = (self.check_in.take().map(CheckInWindow::into_joined).unwrap_or_default())
                    .into_iter()
                    .filter(|c| waiting.contains(c))
                    .collect();
                let reason = if joined.len() < self.config.min_clients as usize {
                    RoundAbort::TooFewClients {
                        phase: Phase::AdvertiseKeys,
                        remaining: joined.len(),
                        required: self.config.min_clients,
                    }
                } else if joined.len() > check_ins.max_cohort as usize {
                    RoundAbort::Cancelled(format!(
                        "{} clients checked in, more than the largest cohort planned for ({})",
                        joined.len(),
                        check_ins.max_cohort
                    ))
                } else {
                    return self.seat_clients(now, &joined);
                };
                // Nobody is seated, nothing is released; the next attempt asks again.
                self.attempt += 1;
                self.counted_aborts += 1;
                tracing::info!(round = self.next_round, joined = joined.len(), %reason, "check-in failed");
                self.out.push(Action::Event(SessionEvent::CheckInFailed {
                    round: self.next_round,
                    attempt: self.attempt,
                    reason: reason.clone(),
                }));
                if self.counted_aborts >= self.config.max_round_attempts {
                    self.fail_round(self.next_round, self.counted_aborts, reason);
                } else {
                    self.check_ins(now, check_ins);
                }
            }
            _ => {}
        }
    }

    fn hand_over_finalize(&mut self) {
        let Some(round) = self.round.as_mut().filter(|r| matches!(r.stage, Stage::Running(_))) else { return };
        if let Stage::Running(protocol) = std::mem::replace(&mut round.stage, Stage::Finalizing) {
            self.out.push(Action::Finalize(Box::new(FinalizeJob { round: protocol })));
        }
    }

    fn hand_over_commit(&mut self, now: Instant) {
        let Some(round) = self.round.as_mut().filter(|r| matches!(r.stage, Stage::Running(_))) else { return };
        let Stage::Running(mut protocol) = std::mem::replace(&mut round.stage, Stage::Finalizing) else { return };
        let Some(output) = protocol.take_output() else {
            round.stage = Stage::Running(protocol);
            return;
        };
        let (bytes_in, bytes_out) = round.bytes();
        let banned = std::mem::take(&mut self.unreported_bans);
        let commit = RoundCommit {
            round: round.number,
            attempt: round.attempt,
            instance: protocol.session_id().unwrap_or_default(),
            params: protocol.params().clone(),
            output,
            dropped: protocol.dropped(),
            reconnected: round.reconnected.iter().copied().collect(),
            timings: round.timings.clone(),
            total: now - round.started,
            bytes_in,
            bytes_out,
            banned,
            holders: round
                .seats
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let seat = ClientId::new(u32::try_from(i + 1).ok()?)?;
                    Some(SeatHolder { seat, identity: s.identity, certificate: s.certificate.clone() })
                })
                .collect(),
        };
        round.stage = Stage::Committing(protocol);
        self.out.push(Action::Commit(Box::new(commit)));
    }

    /// An attempt aborted: its clients return to the lobby and the next attempt waits
    /// out a back-off. An attempt lost only to clients that closed their connection
    /// before advertising their keys (a Ctrl-C, a process exiting) is not counted against
    /// the round, once per identity and round — unlike one lost to a silent client, to
    /// one that refuses the round but stays, or to one that leaves later, when others'
    /// inputs may be out; with `stop_after_failed_round` (or check-ins), the session
    /// fails after the last counted attempt.
    fn end_attempt(&mut self) {
        let Some(mut round) = self.round.take() else { return };
        let (reason, dropped) = match round.protocol() {
            Some(p) => (p.abort_reason().cloned(), p.dropped()),
            None => (None, Vec::new()),
        };
        let reason = reason.unwrap_or_else(|| RoundAbort::Cancelled("unknown".into()));
        // Check-in sessions count every attempt: their sampling argument bounds the
        // check-ins per round by `max_round_attempts`.
        let leaver = |d: &DroppedClient| {
            // A client that says it leaves but stays (refusing the round's parameters,
            // say) would be seated again: only a closed connection is a client leaving.
            let left = d.reason == DropReason::ConnectionLost;
            let identity = round.seat(d.client).map(|s| s.identity);
            identity.filter(|id| left && d.phase == Phase::AdvertiseKeys && !self.forgiven.contains(id))
        };
        let leavers: Option<Vec<ClientIdentity>> = dropped.iter().map(leaver).collect();
        let counted = match leavers {
            Some(leavers) if !leavers.is_empty() && self.config.check_ins.is_none() => {
                self.forgiven.extend(leavers);
                false
            }
            _ => true,
        };
        tracing::warn!(round = round.number, attempt = round.attempt, %reason, counted, "round aborted");
        self.out.push(Action::Event(SessionEvent::RoundAborted {
            round: round.number,
            attempt: round.attempt,
            reason: reason.clone(),
            counted,
        }));
        self.lobby.unseat(round.seats.iter().map(|s| s.conn));
        if counted {
            self.counted_aborts += 1;
        }
        let stops = self.config.stop_after_failed_round || self.config.check_ins.is_some();
        let failed = self.counted_aborts >= self.config.max_round_attempts;
        if failed && stops {
            return self.fail_round(round.number, self.counted_aborts, reason);
        }
        let backoff = self.config.retry_backoff * (1u32 << self.counted_aborts.saturating_sub(1).min(6));
        if failed {
            tracing::warn!(
                round = round.number,
                attempts = self.counted_aborts,
                retry_in = ?backoff,
                "round failed; the server keeps serving and tries it again"
            );
        }
        self.retry_at = self.now.map(|now| now + backoff);
    }

    /// Ends the session after the last allowed attempt at `round` failed.
    fn fail_round(&mut self, round: u64, attempts: u32, reason: RoundAbort) {
        let text = format!("round {round} aborted {attempts} times; last reason: {reason}");
        self.close(EndReason::RoundFailed, &text);
        self.out.push(Action::Finished(SessionEnd::RoundFailed { round, attempts, reason }));
    }

    fn seat_cohort(&mut self, now: Instant, size: usize) {
        let enough = size >= self.config.min_clients as usize && size <= self.lobby.waiting();
        let backing_off = self.retry_at.is_some_and(|at| now < at);
        if self.closed || self.round.is_some() || !enough || backing_off {
            return;
        }
        self.retry_at = None;
        // Clients that offended wait behind the others: a violator is never seated first.
        let mut queued = self.lobby.queued();
        queued.sort_by_key(|&c| self.offences_of(c));
        let first: Vec<ConnId> = queued.into_iter().take(size).collect();
        self.seat_clients(now, &first);
    }

    /// Seats the waiting clients among `conns` (in that order) for the next attempt at
    /// the next round.
    fn seat_clients(&mut self, now: Instant, conns: &[ConnId]) {
        let seated = self.lobby.seat_these(now, conns);
        self.attempt += 1;
        let clients = seated.len() as u32;
        self.round = Some(ActiveRound::preparing(self.next_round, self.attempt, seated, now));
        self.out.push(Action::StartRound { round: self.next_round, attempt: self.attempt, clients });
    }
}

/// The violation of a client that sent a message it had no reason to send.
fn unexpected(msg: &FromClient) -> DropReason {
    DropReason::Violation(Violation::Transport(format!("unexpected {}", msg.name())))
}

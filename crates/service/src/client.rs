//! The client's side of the service, as a state machine: frames in, actions out. It
//! holds what the SDK's round logic needs — admission, the round's settings and local
//! policy, the protocol's [`ClientRound`], the upload announced and granted, and the
//! resend rule after a reconnect — and leaves I/O, the user's training, and the two
//! CPU-heavy steps (encoding the update, masking it) to the shell.
//!
//! # Call order
//!
//! 1. When a connection is up, [`ClientSession::handle_connected`] (it queues the
//!    `Hello`); when it is lost, [`ClientSession::handle_connection_lost`], then
//!    reconnect and call `handle_connected` again.
//! 2. When the client wants to take part in a round, [`ClientSession::request_round`]:
//!    the server seats only clients that asked, once per round.
//! 3. Feed every frame from the server to [`ClientSession::handle_frame`].
//! 4. After each input, drain [`ClientSession::poll_action`] and carry out each action
//!    in order:
//!    * [`ClientAction::Send`]: write the frame;
//!    * [`ClientAction::Train`]: compute the update for the round's model, then
//!      [`ClientSession::provide_update`] (or [`ClientSession::abandon_round`]);
//!    * [`ClientAction::Encode`]: run the job off the async runtime — it may overlap the
//!      key exchange, so keep feeding frames — then [`ClientSession::handle_encoded`];
//!    * [`ClientAction::Mask`]: run the job off the async runtime, then
//!      [`ClientSession::handle_masked`] (frames fed meanwhile wait for it);
//!    * [`ClientAction::Remember`]: store the client's [`RoundMemory`] durably before
//!      carrying out the actions after it;
//!    * [`ClientAction::Event`]: a round ended, the client was admitted or refused, or
//!      the session ended.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use privagg_dp::NoiseRng;
use privagg_dp::accountant::DpEvent;
#[cfg(feature = "testing")]
use privagg_protocol::DropPoint;
use privagg_protocol::{
    AbortCode, ClientError, ClientMessage, ClientPolicy, ClientRound, ClientState, Config, DecodeError, Identity,
    Limits, ServerMessage,
};
use rand::RngExt;

use serde::{Deserialize, Serialize};

use crate::frame::{FRAME_HEADER_LEN, Frame};
use crate::message::{
    CHECK_IN_RATE_UNIT, ClientServiceMessage, EndReason, FromServer, IDENTITY_LEN, Resume, ServerServiceMessage,
};
use crate::privacy::{PrivacyPolicy, PrivacySpent};
use crate::round_log::{
    self, LogCheck, LogMemory, LogProof, LogRefusal, LogRequest, LogTrust, MAX_REFUSED, RefusedCheckpoint,
};
use crate::settings::{EncodedInput, RoundSettings, UpdateError};

/// What a client remembers of a server's training sessions, so that the server cannot
/// make it take part in a round twice, or in one round over and over: every attempt
/// releases a freshly noised copy of the same update, and enough of them average the
/// noise away. The shell stores it durably (per server and client identity) and hands it
/// back when the client starts again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundMemory {
    /// Per training session (its id in hexadecimal).
    sessions: BTreeMap<String, SessionMemory>,
    /// The session whose round log the client checked last (hex): its `Ready` says what
    /// it holds of that log.
    #[serde(default)]
    log_session: Option<String>,
    /// Round-log checkpoints the client refused, as evidence, the latest last (at most
    /// [`MAX_REFUSED`]).
    #[serde(default)]
    refused: Vec<RefusedCheckpoint>,
}

/// What a client did in one training session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionMemory {
    /// The highest round in which it revealed its unmasking shares (0: none): it takes
    /// part in no round below it, and in this one only with DP, in further attempts within
    /// `max_attempts` (a server that crashed after the reveal redoes the round; each
    /// attempt is charged, and the cap bounds the noised copies as it does for aborts).
    /// Without DP, two sums of one round over survivor sets that differ by one client give
    /// that client's update, so a finished round is never redone.
    pub finished: u64,
    /// Attempts it took part in (revealed its nonce and keys, perhaps sent a masked
    /// input), per round from `finished` on.
    pub attempts: BTreeMap<u64, u32>,
    /// The privacy this session has cost the client: every masked input it sent, each
    /// attempt of a round included, whether or not a sum was released.
    #[serde(default)]
    pub spent: PrivacySpent,
    /// What the client accepted of the session's round log, and the rounds it still
    /// wants proven.
    #[serde(default)]
    pub log: LogMemory,
}

impl RoundMemory {
    /// What the client did in `session`.
    pub fn session(&self, session: &[u8; 16]) -> SessionMemory {
        self.sessions.get(&hex(session)).cloned().unwrap_or_default()
    }

    /// What all of this server's sessions have cost the client together.
    pub fn spent(&self) -> PrivacySpent {
        self.sessions.values().fold(PrivacySpent::default(), |total, s| total.and(&s.spent))
    }

    /// What the client did in training session `session`, to change (a new, empty entry
    /// if none).
    pub fn session_mut(&mut self, session: &[u8; 16]) -> &mut SessionMemory {
        self.sessions.entry(hex(session)).or_default()
    }

    /// What the client asks of the round log in its `Ready`: about the session whose log
    /// it checked last (nothing if none).
    pub fn log_request(&self) -> LogRequest {
        match self.log_session() {
            Some(session) => self.session(&session).log.request(session),
            None => LogRequest::default(),
        }
    }

    fn log_session(&self) -> Option<[u8; 16]> {
        self.log_session.as_deref().and_then(|s| <[u8; 16]>::try_from(::hex::decode(s).ok()?).ok())
    }

    /// The round-log checkpoints this client refused (the latest last, at most
    /// [`MAX_REFUSED`]), each with the one it held then and why: evidence for an auditor.
    pub fn refused(&self) -> &[RefusedCheckpoint] {
        &self.refused
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An update whose norm is more than this many times the clip draws a warning: most of it
/// is lost to clipping.
const HEAVY_CLIPPING: f64 = 4.0;

/// What a client tells the server when it leaves a round, whatever the reason: why it
/// could not encode its update may depend on the update (a bit the accounting does not
/// cover), so the reason stays with the client.
pub const LEAVE_REASON: &str = "the client left the round";

/// What a client presents and what it accepts.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Admission token, if the server uses a token list.
    pub token: Option<String>,
    /// This client's random identity: the server recognises it by it when it reconnects.
    pub identity: [u8; IDENTITY_LEN],
    /// What the protocol state machine accepts (thresholds, dimensions).
    pub policy: ClientPolicy,
    /// What the client requires of a round's differential privacy.
    pub privacy: PrivacyPolicy,
    /// Decoder limits for server frames.
    pub limits: Limits,
    /// What the client did in earlier rounds of this server's sessions.
    pub memory: RoundMemory,
    /// Most attempts of one round the client takes part in (at least 1). Each could
    /// release a freshly noised copy of its update, and each draws a fresh labelling of
    /// the neighbour graph for a server that aborts until one suits it.
    pub max_attempts: u32,
    /// The client's certificate, key and the root that certifies its peers; required
    /// when `policy` assumes a malicious server.
    pub credentials: Option<Identity>,
    /// Ask for the global model after each round this client completes: it comes with
    /// the round's [`RoundSummary::model`].
    pub follow_model: bool,
    /// How the client trusts the round log's key: pinned, or on first use. The client
    /// checks the log before every round ([`crate::round_log::verify`]).
    pub log: LogTrust,
}

/// Why a round ended for this client without its input in a released sum, or why the
/// session cannot go on.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RoundError {
    /// The round's configuration is invalid or inconsistent.
    #[error("invalid round configuration: {0}")]
    InvalidConfig(String),
    /// The round breaks this client's own privacy policy; it did not take part.
    #[error("round refused by local policy: {0}")]
    PolicyRefused(String),
    /// The update's length differs from the model's; nothing of it was sent.
    #[error("update has {got} values, the server's model has {expected}")]
    DimensionMismatch {
        /// The model dimension.
        expected: usize,
        /// The update's length.
        got: usize,
    },
    /// The update cannot be encoded, or the training step failed.
    #[error("update rejected: {0}")]
    InvalidUpdate(String),
    /// The server aborted the round.
    #[error("round aborted by the server ({code:?}): {detail}")]
    Aborted {
        /// The server's code.
        code: AbortCode,
        /// The server's explanation.
        detail: String,
    },
    /// The server sent something the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(#[from] ClientError),
    /// A service message came out of place.
    #[error("unexpected {0} from the server")]
    UnexpectedMessage(&'static str),
    /// A frame from the server did not decode.
    #[error("malformed message from the server: {0}")]
    Malformed(#[from] DecodeError),
    /// The server asked for a round this client finished (revealed its shares for), or
    /// one below it: a replay, refused. (With DP, the round it finished may be redone
    /// within [`ClientConfig::max_attempts`], see [`SessionMemory::finished`].)
    #[error("round {round} is at or below round {finished}, which this client already finished")]
    ReplayedRound {
        /// The round asked for.
        round: u64,
        /// The highest round the client finished in this session.
        finished: u64,
    },
    /// The server tried this round more often than the client allows: each attempt would
    /// release a freshly noised copy of the same update.
    #[error("round {round} was tried {attempts} times already; this client allows no more")]
    TooManyAttempts {
        /// The round.
        round: u64,
        /// Masked inputs the client already sent for it.
        attempts: u32,
    },
    /// The server went on without this client: after a reconnect it no longer held the
    /// seat (or the two sides disagree about what was delivered), or it sent the
    /// configuration of a new round (it had dropped this client, say at a deadline).
    #[error("the server did not keep this client's seat in round {round}")]
    SeatLost {
        /// The round.
        round: u64,
    },
    /// Training took longer than the server allows before the first phase's deadline
    /// (`train_timeout_secs` of the round's settings, plus the phase timeout): the round
    /// went on without this client, which had revealed nothing but its nonce.
    #[error(
        "training for round {round} overran the server's deadline ({allowed_secs} s for training, plus the phase timeout); the round went on without this client"
    )]
    TrainingOverran {
        /// The round.
        round: u64,
        /// The seconds the round's settings allowed for training.
        allowed_secs: u32,
    },
    /// The server's round log failed the client's check before the round (a checkpoint
    /// not signed by the trusted key, a truncated or forked log, a round this client took
    /// part in not proven, a logged ε beyond its budget): it left before revealing
    /// anything but its nonce, and takes part in no more rounds of this server.
    #[error("round log refused: {0}")]
    LogRefused(#[from] LogRefusal),
    /// In a session with random check-ins, the server seated this client in a round its
    /// own coin did not choose it for: refused, since the sampling the second ε figure
    /// relies on would not hold.
    #[error("seated in round {round}, for which this client did not check in")]
    NotCheckedIn {
        /// The round.
        round: u64,
    },
}

impl RoundError {
    /// Whether only the current round is lost: the client can take part in the next one.
    pub fn is_round_local(&self) -> bool {
        matches!(
            self,
            Self::Aborted { .. }
                | Self::TrainingOverran { .. }
                | Self::SeatLost { .. }
                | Self::ReplayedRound { .. }
                | Self::TooManyAttempts { .. }
                | Self::NotCheckedIn { .. }
        )
    }
}

/// What one completed round did for this client.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundSummary {
    /// The round number.
    pub round: u64,
    /// How many clients' inputs the released sum covers.
    pub inputs: u32,
    /// L2 norm of the update before clipping (DP on).
    pub pre_clip_norm: f64,
    /// Bytes this client sent during the round, frame headers included.
    pub bytes_sent: u64,
    /// Bytes it received.
    pub bytes_received: u64,
    /// The ε this client accounts for everything it sent this server (every session,
    /// every attempt), at its policy's budget δ, by its own accounting; `None` if no
    /// round with DP was charged.
    pub epsilon: Option<f64>,
    /// The global model after the round, if the client follows the model
    /// ([`ClientConfig::follow_model`]) and the server sent it.
    pub model: Option<Arc<Vec<f32>>>,
}

/// What happened, for the shell.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// The server admitted the client (again, after a reconnect).
    Admitted,
    /// The server refused the client; the session is over.
    Refused(String),
    /// A round completed with this client's input in the sum.
    RoundCompleted(RoundSummary),
    /// A round ended for this client without that (see [`RoundError::is_round_local`]).
    RoundFailed(RoundError),
    /// The server ended the session; no more rounds.
    SessionEnded {
        /// Rounds the server completed.
        completed_rounds: u64,
        /// Why.
        end: EndReason,
        /// What happened, in the server's words.
        reason: String,
    },
}

/// What the shell should do next.
#[derive(Debug)]
pub enum ClientAction {
    /// Write the frame.
    Send(Frame),
    /// Compute this round's update from the settings' model; answer with
    /// [`ClientSession::provide_update`] or [`ClientSession::abandon_round`].
    Train(Arc<RoundSettings>),
    /// Encode the update (CPU-heavy); answer with [`ClientSession::handle_encoded`].
    Encode(Box<EncodeJob>),
    /// Mask the input (CPU-heavy); answer with [`ClientSession::handle_masked`].
    Mask(Box<MaskJob>),
    /// Store this memory durably before carrying out the actions after it.
    Remember(RoundMemory),
    /// Testing only: vanish — close the connection without a goodbye.
    #[cfg(feature = "testing")]
    Vanish,
    /// Something happened.
    Event(ClientEvent),
}

/// Encoding an update: clip, rotate, round and noise it (DP on), or clamp and weight it.
pub struct EncodeJob {
    serial: u64,
    settings: Arc<RoundSettings>,
    update: Vec<f32>,
    weight: f32,
    rng: NoiseRng,
}

impl std::fmt::Debug for EncodeJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodeJob").field("round", &self.settings.round).finish_non_exhaustive()
    }
}

/// A finished [`EncodeJob`].
#[derive(Debug)]
pub struct Encoded {
    serial: u64,
    result: Result<EncodedInput, UpdateError>,
}

impl EncodeJob {
    /// Encodes the update.
    pub fn run(mut self: Box<Self>) -> Encoded {
        let result = self.settings.encode_update(&self.update, self.weight, &mut self.rng);
        Encoded { serial: self.serial, result }
    }

    /// Testing only: the round the update is encoded for.
    #[cfg(feature = "testing")]
    pub fn round(&self) -> u64 {
        self.settings.round
    }
}

impl Encoded {
    /// Testing only: the encoded words (what the masked input will hide), unless encoding
    /// failed; a test sums them to check a released sum word for word.
    #[cfg(feature = "testing")]
    pub fn words(&self) -> Option<&[u64]> {
        self.result.as_ref().ok().map(|e| e.words.as_slice())
    }
}

/// Masking the input: the protocol step that expands k + 1 PRG streams over the vector.
pub struct MaskJob {
    serial: u64,
    protocol: ClientRound,
    shares: ServerMessage,
    rng: NoiseRng,
}

impl std::fmt::Debug for MaskJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskJob").finish_non_exhaustive()
    }
}

/// A finished [`MaskJob`].
pub struct Masked {
    serial: u64,
    protocol: ClientRound,
    reply: Result<Option<ClientMessage>, ClientError>,
    /// The masked input, when the reply was a complaint about an envelope.
    follow_up: Result<Option<ClientMessage>, ClientError>,
}

impl std::fmt::Debug for Masked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masked").finish_non_exhaustive()
    }
}

impl MaskJob {
    /// Masks the input against the forwarded shares.
    pub fn run(mut self: Box<Self>) -> Masked {
        let reply = self.protocol.receive(self.shares, &mut self.rng);
        let follow_up = match &reply {
            Ok(Some(ClientMessage::Complaints(_))) => self.protocol.follow_up(),
            _ => Ok(None),
        };
        Masked { serial: self.serial, protocol: self.protocol, reply, follow_up }
    }
}

/// Where the update of the round stands.
enum Input {
    /// Waiting for the shell's training step.
    AwaitingUpdate,
    /// Being encoded.
    Encoding,
    /// Encoded and handed to the protocol.
    Ready,
}

/// One round in progress.
struct Round {
    serial: u64,
    number: u64,
    /// The training session the round belongs to.
    session: [u8; 16],
    /// `None` while a mask job holds it.
    protocol: Option<ClientRound>,
    settings: Arc<RoundSettings>,
    input: Input,
    /// The round's `Config`, held back while the client trains: the protocol sees it,
    /// and the client advertises its keys, once the update is there.
    config: Option<Config>,
    /// The shell's clock (Unix seconds) when the `Config` arrived.
    configured_at: u64,
    /// Forwarded shares waiting for the input to be encoded.
    pending_shares: Option<ServerMessage>,
    /// The masked input, sent when the server grants an upload slot.
    upload: Option<Frame>,
    /// Frames sent and received this round, and the last one sent (the resend rule).
    sent: u32,
    received: u32,
    last_sent: Option<Frame>,
    pre_clip_norm: f64,
    /// Inputs in the released sum, once the server reports it.
    inputs: u32,
    bytes_sent: u64,
    bytes_received: u64,
    /// What this round costs the client if its masked input goes out (`None`: DP off).
    accounted: Option<DpEvent>,
}

/// The client's side of a session.
pub struct ClientSession {
    config: ClientConfig,
    rng: NoiseRng,
    awaiting_welcome: bool,
    /// Admitted on the current connection: round frames may go out.
    link_up: bool,
    /// The round the client asked for, not started yet: its nonce is committed to.
    next: Option<ClientRound>,
    round: Option<Round>,
    /// Rounds seen, so that results of jobs of an earlier round are told apart.
    serial: u64,
    /// Frames that arrived while a mask job was out.
    deferred: VecDeque<Vec<u8>>,
    /// The server runs random check-ins: a seat is taken only in the round whose coin
    /// said yes (`checked_in`).
    check_ins: bool,
    checked_in: Option<u64>,
    /// The last check-in answered (round, attempt) and the rate of the first: a coin is
    /// flipped once per attempt, for at most `max_attempts` attempts a round, at one rate
    /// for the whole connection — a server cannot ask again until a coin comes up.
    last_check_in: Option<(u64, u32)>,
    check_in_rate: Option<u32>,
    ended: bool,
    /// The shell's clock, in Unix seconds ([`ClientSession::set_clock`]).
    clock: u64,
    /// The model after a round, as the server sent it before the round's end.
    model_after: Option<(u64, Arc<Vec<f32>>)>,
    actions: VecDeque<ClientAction>,
    #[cfg(feature = "testing")]
    drop_point: Option<DropPoint>,
}

impl ClientSession {
    /// A session that draws its keys and noise from `rng` (seeded from the OS in
    /// production).
    pub fn new(config: ClientConfig, rng: NoiseRng) -> Self {
        Self {
            config,
            rng,
            awaiting_welcome: false,
            link_up: false,
            next: None,
            round: None,
            serial: 0,
            deferred: VecDeque::new(),
            check_ins: false,
            checked_in: None,
            last_check_in: None,
            check_in_rate: None,
            ended: false,
            clock: 0,
            model_after: None,
            actions: VecDeque::new(),
            #[cfg(feature = "testing")]
            drop_point: None,
        }
    }

    /// The configuration the session was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Testing only: vanish at `point` in later rounds (`None`: stay).
    #[cfg(feature = "testing")]
    pub fn set_drop_point(&mut self, point: Option<DropPoint>) {
        self.drop_point = point;
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<ClientAction> {
        self.actions.pop_front()
    }

    /// Whether the session is over (refused, ended by the server).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Whether a round is in progress.
    pub fn in_round(&self) -> bool {
        self.round.is_some()
    }

    /// The client wants to take part in the next round: tells the server, unless it is
    /// in a round or has asked already. Asking again after each round is what keeps a
    /// client in the session; one that stops asking is not seated again. `unix_now`
    /// (seconds since the Unix epoch) is when peers' certificates must be valid.
    pub fn request_round(&mut self, unix_now: u64) {
        if self.round.is_some() || self.next.is_some() || self.ended {
            return;
        }
        let credentials = self.config.credentials.clone().map(|c| Identity { now: unix_now, ..c });
        self.next = Some(ClientRound::new(self.config.policy.clone(), credentials, &mut self.rng));
        if self.link_up {
            self.send_ready();
        }
    }

    /// The shell's clock, in seconds since the Unix epoch: peers' certificates are checked
    /// against it. Call it before feeding each frame.
    pub fn set_clock(&mut self, unix_now: u64) {
        self.clock = unix_now;
        let current = self.round.as_mut().and_then(|r| r.protocol.as_mut());
        for protocol in self.next.iter_mut().chain(current) {
            protocol.set_clock(unix_now);
        }
    }

    /// Tells the server this client waits for a seat, committed to its next nonce (and,
    /// if it wants the model after each round, says so first).
    fn send_ready(&mut self) {
        let Some(next) = &self.next else { return };
        if self.config.follow_model {
            self.actions.push_back(ClientAction::Send(Frame::new(ClientServiceMessage::FollowModel.encode())));
        }
        let ready =
            ClientServiceMessage::Ready { commitment: next.commitment(), log: self.config.memory.log_request() };
        self.actions.push_back(ClientAction::Send(Frame::new(ready.encode())));
    }

    /// A connection is up: queues the `Hello`, which says where this client stands in a
    /// round it is taking part in.
    pub fn handle_connected(&mut self) {
        self.awaiting_welcome = true;
        self.link_up = false;
        let hello = ClientServiceMessage::Hello {
            token: self.config.token.clone().unwrap_or_default(),
            identity: self.config.identity,
            resume: self.round.as_ref().map(|r| Resume { round: r.number, received: r.received }),
        };
        self.actions.push_back(ClientAction::Send(Frame::new(hello.encode())));
    }

    /// The connection is gone; the shell reconnects and calls
    /// [`ClientSession::handle_connected`].
    pub fn handle_connection_lost(&mut self) {
        self.awaiting_welcome = false;
        self.link_up = false;
    }

    /// A frame arrived from the server.
    pub fn handle_frame(&mut self, frame: Vec<u8>) {
        if self.ended {
            return;
        }
        if self.round.as_ref().is_some_and(|r| r.protocol.is_none()) {
            self.deferred.push_back(frame);
            return;
        }
        let msg = FromServer::decode(&frame, &self.config.limits);
        // Frames of the round count for the resend rule; admission and the end of the
        // session do not.
        let of_round =
            matches!(msg, Ok(FromServer::Protocol(_) | FromServer::Service(ServerServiceMessage::UploadGrant)));
        if let Some(round) = self.round.as_mut().filter(|_| of_round) {
            round.received += 1;
            round.bytes_received += (FRAME_HEADER_LEN + frame.len()) as u64;
        }
        match msg {
            Ok(FromServer::Service(msg)) => self.on_service(msg),
            Ok(FromServer::Protocol(msg)) => self.on_protocol(msg),
            Err(e) => self.leave(RoundError::Malformed(e)),
        }
    }

    /// The answer to [`ClientAction::Train`]: the update (the model's length) and its
    /// weight (used without DP).
    /// The client now advertises its keys: training happens before it joins the key
    /// phases, within the time the round's settings allow for it.
    pub fn provide_update(&mut self, update: Vec<f32>, weight: f32) {
        let Some(round) = &mut self.round else { return };
        let Input::AwaitingUpdate = round.input else { return };
        round.input = Input::Encoding;
        let expected = round.settings.model_dim();
        if update.len() != expected {
            self.leave(RoundError::DimensionMismatch { expected, got: update.len() });
            return;
        }
        let (serial, settings, config) = (round.serial, round.settings.clone(), round.config.take());
        if let Some(config) = config {
            self.receive(ServerMessage::Config(config));
        }
        if self.round.is_some() {
            let job = EncodeJob { serial, settings, update, weight, rng: self.rng.fork() };
            self.actions.push_back(ClientAction::Encode(Box::new(job)));
        }
    }

    /// The answer to [`ClientAction::Train`] when no update can be given.
    pub fn abandon_round(&mut self, detail: &str) {
        if self.round.is_some() {
            self.leave(RoundError::InvalidUpdate(detail.to_owned()));
        }
    }

    /// The answer to [`ClientAction::Encode`].
    pub fn handle_encoded(&mut self, encoded: Encoded) {
        let Some(round) = self.round.as_mut().filter(|r| r.serial == encoded.serial) else { return };
        let input = match encoded.result {
            Ok(input) => input,
            Err(e) => return self.leave(RoundError::InvalidUpdate(e.to_string())),
        };
        round.pre_clip_norm = input.pre_clip_norm;
        if let privagg_dp::encoding::Clipping::L2(clip) = round.settings.encoding.clipping
            && input.pre_clip_norm > HEAVY_CLIPPING * clip
        {
            tracing::warn!(
                round = round.number,
                norm = input.pre_clip_norm,
                clip,
                "the update's norm is {:.1}x the clip: it was scaled down that much before noising; a smaller local learning rate (or a larger clip on the server) keeps more of it",
                input.pre_clip_norm / clip
            );
        }
        round.input = Input::Ready;
        let set = round.protocol.as_mut().map(|p| p.set_input(input.words));
        if let Some(Err(e)) = set {
            return self.leave(RoundError::Protocol(e));
        }
        if let Some(shares) = round.pending_shares.take() {
            self.start_masking(shares);
        }
    }

    /// The answer to [`ClientAction::Mask`].
    pub fn handle_masked(&mut self, masked: Masked) {
        let Some(round) = self.round.as_mut().filter(|r| r.serial == masked.serial) else { return };
        round.protocol = Some(masked.protocol);
        self.on_reply(masked.reply);
        if !matches!(masked.follow_up, Ok(None)) && self.round.is_some() {
            self.on_reply(masked.follow_up);
        }
        for frame in std::mem::take(&mut self.deferred) {
            self.handle_frame(frame);
        }
    }

    fn on_service(&mut self, msg: ServerServiceMessage) {
        match msg {
            ServerServiceMessage::Welcome { resumed } if self.awaiting_welcome => self.on_welcome(resumed),
            ServerServiceMessage::Refused { reason } if self.awaiting_welcome => {
                self.ended = true;
                self.round = None;
                self.event(ClientEvent::Refused(reason));
            }
            ServerServiceMessage::SessionEnd { completed_rounds, end, reason } => {
                self.ended = true;
                self.round = None;
                self.event(ClientEvent::SessionEnded { completed_rounds, end, reason });
            }
            ServerServiceMessage::Model { round, values } if self.config.follow_model => {
                self.model_after = Some((round, Arc::new(values)));
            }
            ServerServiceMessage::CheckIn { round, attempt, rate_ppb } if self.round.is_none() => {
                self.check_in(round, attempt, rate_ppb);
            }
            // The masked input goes out once; the resend rule covers a lost upload.
            ServerServiceMessage::UploadGrant => match self.round.as_mut().and_then(|r| r.upload.take()) {
                Some(upload) => self.send(upload),
                None => self.leave(RoundError::UnexpectedMessage("UploadGrant")),
            },
            other => self.leave(RoundError::UnexpectedMessage(other.name())),
        }
    }

    /// Random check-in: a client that wants a round flips its own coin (from its CSPRNG,
    /// never the server's) with probability `rate_ppb` / 10⁹, and says what it came up.
    /// It declines without a coin when the server asks out of turn: an attempt not after
    /// the last one answered, beyond `max_attempts`, or at another rate than before.
    fn check_in(&mut self, round: u64, attempt: u32, rate_ppb: u32) {
        let in_turn = self.last_check_in.is_none_or(|last| (round, attempt) > last)
            && (1..=self.config.max_attempts).contains(&attempt)
            && *self.check_in_rate.get_or_insert(rate_ppb) == rate_ppb;
        if !in_turn {
            tracing::warn!(round, attempt, rate_ppb, "check-in out of turn; declined");
        }
        let join = in_turn && self.next.is_some() && self.rng.random_range(0..CHECK_IN_RATE_UNIT) < rate_ppb;
        if in_turn {
            self.last_check_in = Some((round, attempt));
        }
        self.check_ins = true;
        self.checked_in = join.then_some(round);
        self.send(Frame::new(ClientServiceMessage::CheckInReply { round, attempt, join }.encode()));
    }

    /// Admitted. If this client was in a round, the server says whether it kept the
    /// seat and how many of the client's frames it has: the client resends the last
    /// one if the server lacks it (the resend rule).
    fn on_welcome(&mut self, resumed: Option<Resume>) {
        self.awaiting_welcome = false;
        self.link_up = true;
        self.event(ClientEvent::Admitted);
        if resumed.is_none() {
            // A new connection: the server does not know this client waits.
            self.send_ready();
        }
        let Some(round) = &self.round else { return };
        let behind = resumed.filter(|r| r.round == round.number).and_then(|r| round.sent.checked_sub(r.received));
        match behind {
            Some(0) => {}
            Some(1) => self.resend_last(),
            _ => {
                let number = round.number;
                self.round = None;
                self.event(ClientEvent::RoundFailed(RoundError::SeatLost { round: number }));
            }
        }
    }

    fn on_protocol(&mut self, msg: ServerMessage) {
        #[cfg(feature = "testing")]
        if self.drop_point.is_some() && self.drop_point == drop_point_of(&msg) {
            return self.vanish();
        }
        match msg {
            ServerMessage::Config(config) => {
                if let Some(round) = self.round.take() {
                    self.event(ClientEvent::RoundFailed(RoundError::SeatLost { round: round.number }));
                }
                self.start_round(config);
            }
            // The server went on while this client trained: dropped at the deadline.
            ServerMessage::Abort(abort) if abort.code == AbortCode::Dropped && self.overran_training() => {
                if let Some(round) = self.round.take() {
                    let allowed_secs = round.settings.train_timeout_secs;
                    self.event(ClientEvent::RoundFailed(RoundError::TrainingOverran {
                        round: round.number,
                        allowed_secs,
                    }));
                }
            }
            ServerMessage::Abort(abort) if self.round.as_ref().is_some_and(|r| r.config.is_some()) => {
                self.round = None;
                self.event(ClientEvent::RoundFailed(RoundError::Aborted { code: abort.code, detail: abort.detail }));
            }
            msg if self.round.as_ref().is_some_and(|r| r.config.is_some()) => {
                self.leave(RoundError::UnexpectedMessage(msg.name()));
            }
            ServerMessage::ForwardedShares(_) if self.round.is_some() => match &mut self.round {
                Some(round) if !matches!(round.input, Input::Ready) => round.pending_shares = Some(msg),
                _ => self.start_masking(msg),
            },
            msg => self.receive(msg),
        }
    }

    /// Whether a drop from the current round is due to training: it came while the
    /// client trained, or in the first phase after training took the time allowed for it
    /// (a shell that trains in place of its task reads the drop only afterwards).
    fn overran_training(&self) -> bool {
        let Some(round) = &self.round else { return false };
        let first_phase = round.protocol.as_ref().is_some_and(|p| p.state() == ClientState::AwaitingKeyList);
        let allowed = u64::from(round.settings.train_timeout_secs);
        round.config.is_some()
            || (first_phase && allowed > 0 && self.clock.saturating_sub(round.configured_at) >= allowed)
    }

    /// Checks a round's settings against the local policy and asks the shell for the
    /// update; the `Config` goes to the protocol once the update is there.
    fn start_round(&mut self, config: Config) {
        self.serial += 1;
        let Some(mut protocol) = self.next.take() else {
            let error = RoundError::UnexpectedMessage("Config before this client asked for a round");
            return self.event(ClientEvent::RoundFailed(error));
        };
        let settings = match RoundSettings::decode(&config.app_data) {
            Ok(settings) => Arc::new(settings),
            Err(e) => return self.refuse_round(&mut protocol, RoundError::InvalidConfig(e.to_string())),
        };
        if settings.protocol_dim() != config.params.dim as usize {
            let e = format!(
                "the protocol carries {} words but the encoding makes {}",
                config.params.dim,
                settings.protocol_dim()
            );
            return self.refuse_round(&mut protocol, RoundError::InvalidConfig(e));
        }
        let (round, memory) = (config.params.round, self.config.memory.session(&settings.session));
        if self.check_ins && self.checked_in.take() != Some(round) {
            return self.refuse_round(&mut protocol, RoundError::NotCheckedIn { round });
        }
        let accounted = match self.config.privacy.check(&settings, &config.params, self.config.policy.corrupt_fraction)
        {
            Ok(event) => event,
            Err(e) => return self.refuse_round(&mut protocol, RoundError::PolicyRefused(e.to_string())),
        };
        let proof = LogProof::decode(&config.client_data);
        let log = match &proof {
            Ok(proof) => round_log::check(&LogCheck {
                proof: proof.as_ref(),
                session: settings.session,
                round,
                trust: &self.config.log,
                memory: &memory.log,
                asked: self.config.memory.log_session(),
                policy: &self.config.privacy,
                event: accounted.as_ref(),
            }),
            Err(e) => Err(LogRefusal::Malformed(e.to_string())),
        };
        let log = match log {
            Ok(log) => log,
            Err(e) => {
                let proof = proof.ok().flatten();
                self.log_refused(settings.session, round, proof.as_ref(), &memory.log, &e);
                return self.refuse_round(&mut protocol, RoundError::LogRefused(e));
            }
        };
        if let Err(e) = self.config.privacy.check_budget(&self.config.memory.spent(), accounted.as_ref()) {
            return self.refuse_round(&mut protocol, RoundError::PolicyRefused(e.to_string()));
        }
        let attempts = memory.attempts.get(&round).copied().unwrap_or(0);
        // Without DP, a redo of a finished round over one client fewer would give the server
        // that client's update exactly (the difference of the two sums): refused. With DP,
        // each attempt is charged, and the cap below bounds them.
        if round < memory.finished || (round == memory.finished && accounted.is_none()) {
            return self.refuse_round(&mut protocol, RoundError::ReplayedRound { round, finished: memory.finished });
        }
        if attempts >= self.config.max_attempts {
            return self.refuse_round(&mut protocol, RoundError::TooManyAttempts { round, attempts });
        }
        self.config.memory.session_mut(&settings.session).log = log;
        self.config.memory.log_session = Some(hex(&settings.session));
        self.round = Some(Round {
            serial: self.serial,
            number: config.params.round,
            session: settings.session,
            protocol: Some(protocol),
            settings: settings.clone(),
            input: Input::AwaitingUpdate,
            config: Some(config),
            configured_at: self.clock,
            pending_shares: None,
            upload: None,
            sent: 0,
            received: 1,
            last_sent: None,
            pre_clip_norm: 0.0,
            inputs: 0,
            bytes_sent: 0,
            bytes_received: 0,
            accounted,
        });
        // The attempt counts from the moment the nonce is revealed, before anything goes out.
        self.remember(|m, round| *m.attempts.entry(round).or_default() += 1);
        self.actions.push_back(ClientAction::Train(settings));
    }

    /// After refusing the log of `session` before `round`: keeps the refused proof's
    /// checkpoint as evidence (the oldest beyond [`MAX_REFUSED`] go), and asks about this
    /// session's log from now on (a client back in an earlier session resumes its memory
    /// of it); has the shell store both before the client leaves the round.
    fn log_refused(
        &mut self,
        session: [u8; 16],
        round: u64,
        proof: Option<&LogProof>,
        held: &LogMemory,
        why: &LogRefusal,
    ) {
        let memory = &mut self.config.memory;
        memory.log_session = Some(hex(&session));
        if let Some(proof) = proof {
            let excess = (memory.refused.len() + 1).saturating_sub(MAX_REFUSED);
            memory.refused.drain(..excess);
            memory.refused.push(RefusedCheckpoint::new(session, round, proof, held, why));
        }
        self.actions.push_back(ClientAction::Remember(memory.clone()));
    }

    /// Refuses a round before taking part in it: tells the server it leaves (revealing
    /// the nonce, so that the others' round goes on), and reports `error`.
    fn refuse_round(&mut self, protocol: &mut ClientRound, error: RoundError) {
        let bye = protocol.leave(LEAVE_REASON);
        self.actions.push_back(ClientAction::Send(Frame::new(bye.encode())));
        self.event(ClientEvent::RoundFailed(error));
    }

    fn start_masking(&mut self, shares: ServerMessage) {
        let Some(round) = &mut self.round else { return };
        let Some(protocol) = round.protocol.take() else { return };
        let job = MaskJob { serial: round.serial, protocol, shares, rng: self.rng.fork() };
        self.actions.push_back(ClientAction::Mask(Box::new(job)));
    }

    /// Hands a server message to the protocol and acts on its reply.
    fn receive(&mut self, msg: ServerMessage) {
        if self.round.as_ref().is_none_or(|r| r.protocol.is_none()) {
            // Outside a round, only a Config is expected.
            let error = match msg {
                ServerMessage::Abort(a) => RoundError::Aborted { code: a.code, detail: a.detail },
                _ => RoundError::UnexpectedMessage("message outside a round"),
            };
            return self.event(ClientEvent::RoundFailed(error));
        }
        if let (Some(round), ServerMessage::RoundComplete { inputs }) = (&mut self.round, &msg) {
            round.inputs = *inputs;
        }
        let Some(protocol) = self.round.as_mut().and_then(|r| r.protocol.as_mut()) else { return };
        let reply = protocol.receive(msg, &mut self.rng);
        self.on_reply(reply);
    }

    fn on_reply(&mut self, reply: Result<Option<ClientMessage>, ClientError>) {
        let reply = match reply {
            Ok(reply) => reply,
            Err(ClientError::Aborted { code, detail }) => {
                self.round = None;
                return self.event(ClientEvent::RoundFailed(RoundError::Aborted { code, detail }));
            }
            Err(e) => return self.leave(RoundError::Protocol(e)),
        };
        match reply {
            Some(ClientMessage::MaskedInput(vector)) => {
                // Charged, durably, before the server can know the input is ready.
                let accounted = self.round.as_ref().and_then(|r| r.accounted);
                self.remember(|m, _| m.spent.charge(accounted.as_ref()));
                if let Some(round) = &mut self.round {
                    round.upload = Some(Frame::new(ClientMessage::MaskedInput(vector).encode()));
                }
                self.send(Frame::new(ClientServiceMessage::UploadReady.encode()));
            }
            Some(reply) => {
                let unmasked = matches!(reply, ClientMessage::UnmaskResponse(_));
                if unmasked {
                    // The attempt's instance: the log must name this very attempt.
                    let instance = self.round.as_ref().and_then(|r| r.protocol.as_ref()?.session_id());
                    let instance = ::hex::encode(instance.unwrap_or_default());
                    self.remember(|m, round| {
                        m.finished = m.finished.max(round);
                        m.attempts.retain(|&r, _| r >= round);
                        m.log.unproven.entry(round).or_default().push(instance);
                    });
                }
                self.send(Frame::new(reply.encode()));
                #[cfg(feature = "testing")]
                if unmasked && self.drop_point == Some(DropPoint::AfterUnmaskResponse) {
                    self.vanish();
                }
                let _ = unmasked;
            }
            None => self.finish_if_complete(),
        }
    }

    fn finish_if_complete(&mut self) {
        let Some(round) =
            self.round.take_if(|r| r.protocol.as_ref().is_some_and(|p| p.state() == ClientState::Completed))
        else {
            return;
        };
        let model = self.model_after.take().filter(|(r, _)| *r == round.number).map(|(_, m)| m);
        self.event(ClientEvent::RoundCompleted(RoundSummary {
            round: round.number,
            inputs: round.inputs,
            pre_clip_norm: round.pre_clip_norm,
            bytes_sent: round.bytes_sent,
            bytes_received: round.bytes_received,
            epsilon: self.config.memory.spent().epsilon(self.config.privacy.budget_delta),
            model,
        }));
    }

    /// Sends a frame of the current round, remembering it for the resend rule. While the
    /// connection is being re-established the frame is only counted: the resend rule
    /// sends it once the server says it lacks it.
    fn send(&mut self, frame: Frame) {
        if let Some(round) = &mut self.round {
            round.sent += 1;
            round.last_sent = Some(frame.clone());
            if !self.link_up {
                return;
            }
            round.bytes_sent += (FRAME_HEADER_LEN + frame.len()) as u64;
        }
        self.actions.push_back(ClientAction::Send(frame));
    }

    /// Updates what the client remembers of the current round's session, and has the
    /// shell store it before anything after it goes out.
    fn remember(&mut self, change: impl FnOnce(&mut SessionMemory, u64)) {
        let Some(round) = &self.round else { return };
        change(self.config.memory.session_mut(&round.session), round.number);
        self.actions.push_back(ClientAction::Remember(self.config.memory.clone()));
    }

    /// Sends the round's last frame again; the same frame is not counted twice.
    fn resend_last(&mut self) {
        let Some(round) = &mut self.round else { return };
        let Some(last) = round.last_sent.clone() else { return };
        round.bytes_sent += (FRAME_HEADER_LEN + last.len()) as u64;
        self.actions.push_back(ClientAction::Send(last));
    }

    /// Leaves the current round, if any (telling the server it leaves), and reports
    /// `error`.
    fn leave(&mut self, error: RoundError) {
        if let Some(protocol) = self.round.as_mut().and_then(|r| r.protocol.as_mut()) {
            let bye = protocol.leave(LEAVE_REASON);
            self.send(Frame::new(bye.encode()));
        }
        self.round = None;
        self.event(ClientEvent::RoundFailed(error));
    }

    fn event(&mut self, event: ClientEvent) {
        self.actions.push_back(ClientAction::Event(event));
    }

    #[cfg(feature = "testing")]
    fn vanish(&mut self) {
        self.round = None;
        self.deferred.clear();
        self.actions.push_back(ClientAction::Vanish);
    }
}

/// The point at which a client vanishes on receiving `msg`.
#[cfg(feature = "testing")]
fn drop_point_of(msg: &ServerMessage) -> Option<DropPoint> {
    match msg {
        ServerMessage::Config(_) => Some(DropPoint::BeforeAdvertiseKeys),
        ServerMessage::KeyList(_) => Some(DropPoint::BeforeShareKeys),
        ServerMessage::ForwardedShares(_) => Some(DropPoint::BeforeMaskedInput),
        ServerMessage::ConsistencyCheck(_) => Some(DropPoint::BeforeSignature),
        ServerMessage::UnmaskRequest(_) => Some(DropPoint::BeforeUnmaskResponse),
        _ => None,
    }
}

//! A deterministic in-memory harness for the service layer, in the manner of
//! quinn-proto's `tests/util.rs` `Pair`: one [`ServerSession`], N [`ClientSession`]s,
//! a simulated clock, and links that can be delayed, reordered or cut. The harness plays
//! both shells: it carries out every action (training, encoding, masking, finalizing
//! and committing inline) and delivers frames in simulated time. No sockets, no threads:
//! a whole session runs in milliseconds, and the same seed gives the same run.
//!
//! As in a deployment that assumes a malicious server, every client holds a certificate
//! from the harness's enrollment authority and the server admits by certificate; a test
//! of token or open admission sets the admission and the clients' policy itself.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // test support

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use privagg_dp::NoiseRng;
use privagg_dp::encoding::{Clipping, EncodingParams};
use privagg_dp::planner::{Mechanism, NoiseTarget, PlanInput, plan};
use privagg_log::LogKey;
use privagg_protocol::graph_params::{ThreatModel, find_graph_parameters};
use privagg_protocol::{ClientPolicy, DropPoint, Identity, Limits, PrgKind, RoundParams, ServerMessage};
use privagg_service::client::{EncodeJob, RoundMemory};
use privagg_service::message::{ClientServiceMessage, EndReason, ServerServiceMessage};
use privagg_service::privacy::assumed_colluders;
use privagg_service::round_log::{LEAF_FORMAT, LeafPrivacy, LogState, LogTrust, RoundLeaf, origin};
use privagg_service::server::{CloseReason, RoundCommit};
use privagg_service::settings::DecodedSum;
use privagg_service::{
    Action, Admission, AggregationMode, ClientAction, ClientConfig, ClientEvent, ClientSession, ConnId, Frame,
    FromServer, PrivacyPolicy, RoundSettings, ServerSession, SessionConfig, SessionEnd, SessionEvent,
};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The training session of the harness's server.
pub const SESSION: [u8; 16] = [0x5e; 16];

/// Value range and largest weight of the harness's weighted (DP-off) rounds.
pub const VALUE_RANGE: f64 = 4.0;
/// Largest client weight.
pub const MAX_WEIGHT: f64 = 100.0;

/// How a session is set up.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Clients the harness creates (they join in order).
    pub peers: usize,
    /// The server's session settings.
    pub session: SessionConfig,
    /// Model dimension.
    pub dim: usize,
    /// With DP: the noise multiplier; without: weighted FedAvg.
    pub noise_multiplier: Option<f64>,
    /// How long a lost connection goes unnoticed (QUIC's idle timeout).
    pub idle_timeout: Duration,
    /// One-way delay of every frame.
    pub latency: Duration,
    /// Shuffle the delivery of frames due at the same instant with this seed.
    pub reorder_seed: Option<u64>,
    /// Plan each round's neighbour graph and threshold for its cohort with the parameter
    /// finder under this threat model (SecAgg+, as `privagg serve` does); `None`: the
    /// complete graph with the threshold `min_clients`.
    pub graph: Option<ThreatModel>,
    /// How long after a frame a peer does not read the shell's write deadline fires (see
    /// [`Harness::slow_readers`]).
    pub write_deadline: Duration,
}

impl Setup {
    /// `peers` clients, rounds of `clients` (at least `min_clients`) and `dim`
    /// coordinates, DP off, one round, 10 s phases, 1 s of latency-free links.
    pub fn new(peers: usize, clients: u32, min_clients: u32, dim: usize) -> Self {
        Self {
            peers,
            session: SessionConfig {
                clients,
                min_clients,
                rounds: 1,
                completed_rounds: 0,
                phase_timeout: Duration::from_secs(10),
                train_timeout: Duration::from_secs(10),
                lobby_timeout: Duration::from_secs(30),
                hello_timeout: Duration::from_secs(5),
                upload_slots: 2,
                upload_timeout: None,
                ban_after: 0,
                ban_duration: None,
                max_round_attempts: 3,
                stop_after_failed_round: true,
                retry_backoff: Duration::from_secs(1),
                admission: Admission::certificates(),
                limits: Limits { max_app_data: 0, ..Limits::default() },
                check_ins: None,
            },
            dim,
            noise_multiplier: None,
            idle_timeout: Duration::from_secs(1),
            latency: Duration::from_millis(5),
            reorder_seed: None,
            graph: None,
            write_deadline: Duration::from_secs(2),
        }
    }

    /// The harness, with every client connected (each sent its `Hello`).
    pub fn start(self) -> Harness {
        let mut h = self.build();
        h.join_all();
        h
    }

    /// The harness, nobody connected yet.
    pub fn build(self) -> Harness {
        Harness::new(self)
    }
}

/// Rewrites a leaf before the harness logs it.
pub type TamperLeaf = Box<dyn FnMut(&mut RoundLeaf)>;

/// One simulated client.
pub struct Peer {
    /// Its session.
    pub session: ClientSession,
    /// The update it submits every round.
    pub update: Vec<f32>,
    /// Its weight (DP off).
    pub weight: f32,
    /// Its connection, while it has one.
    pub conn: Option<ConnId>,
    /// What its session reported.
    pub events: Vec<ClientEvent>,
    /// Its seat in each round it was configured for.
    pub seats: BTreeMap<u64, u32>,
    /// Vanished at its drop point.
    pub vanished: bool,
    /// On vanishing, go silent instead of closing the connection.
    pub silent: bool,
    /// Refuse to train (the training step fails).
    pub fail_training: bool,
    /// How long its next training takes (simulated time; `None`: no time at all).
    pub train_for: Option<Duration>,
    /// Ask for a round after being admitted and after each round, as the SDK's `run`
    /// does; a one-shot client stops asking after its first round.
    pub asks_for_rounds: bool,
    /// Its certificate (DER), presented when it connects to a server that admits by
    /// certificate.
    pub certificate: Arc<[u8]>,
    /// What its session last asked to be stored (its memory of rounds).
    pub remembered: Option<RoundMemory>,
    /// Masked inputs it sent.
    pub uploads: u32,
    /// Unmask responses it sent (shares revealed).
    pub unmask_responses: u32,
    /// Its answers to check-ins: (round, joined), in order.
    pub check_ins: Vec<(u64, bool)>,
    /// The words of its encoded input, per round (the last attempt's): what its masked
    /// input hides, so that a test can check a released sum word for word.
    pub encoded: BTreeMap<u64, Vec<u64>>,
}

impl Peer {
    /// Whether a round completed for this client.
    pub fn completed(&self, round: u64) -> bool {
        self.events.iter().any(|e| matches!(e, ClientEvent::RoundCompleted(s) if s.round == round))
    }

    /// The errors of rounds that failed for it.
    pub fn failures(&self) -> Vec<&privagg_service::RoundError> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::RoundFailed(err) => Some(err),
                _ => None,
            })
            .collect()
    }
}

struct Link {
    /// The peer at the other end (`None`: a raw connection driven by the test).
    peer: Option<usize>,
    to_server: VecDeque<(Instant, Vec<u8>)>,
    to_client: VecDeque<(Instant, Vec<u8>)>,
    /// The server's current frame limit for this connection.
    limit: usize,
    /// The server asked to close once what it queued is delivered.
    server_closing: bool,
    /// The client closed; its queued frames still arrive first.
    client_closing: bool,
    /// Cut: nothing gets through.
    dead: bool,
    /// The peer stopped reading (a slow reader): frames to it are never delivered.
    stalled: bool,
}

enum Scheduled {
    ServerNotices {
        conn: ConnId,
        transient: bool,
    },
    ClientNotices {
        peer: usize,
    },
    Reconnect {
        peer: usize,
    },
    /// Peer `peer` finishes training.
    Trained {
        peer: usize,
    },
    /// The shell's write deadline fired on `conn` (a peer that does not read).
    WriteDeadline {
        conn: ConnId,
    },
}

/// A committed round: what the session handed the shell, and the sum decoded.
pub struct Committed {
    /// The commit.
    pub commit: RoundCommit,
    /// The decoded sum.
    pub sum: DecodedSum,
    /// The peers in the sum.
    pub peers: Vec<usize>,
    /// Peers that had already heard `RoundComplete` when the commit was asked for.
    pub told_before_commit: Vec<usize>,
}

/// Rewrites (or swallows, returning false) a frame peer `i` sends, before it leaves:
/// the harness's way of playing a misbehaving client.
pub type Tamper = Box<dyn FnMut(usize, &mut Vec<u8>) -> bool>;

/// The planner of the harness's server: given a round and a cohort size, the settings,
/// or why the round cannot start.
pub type Planner = Box<dyn FnMut(u64, u32) -> Result<RoundSettings, String>>;

/// The whole simulated deployment.
pub struct Harness {
    /// Simulated time.
    pub now: Instant,
    /// The server's session.
    pub server: ServerSession,
    /// The clients.
    pub peers: Vec<Peer>,
    links: BTreeMap<ConnId, Link>,
    agenda: Vec<(Instant, Scheduled)>,
    next_conn: ConnId,
    /// Decides each round's settings.
    pub planner: Planner,
    settings: HashMap<u64, RoundSettings>,
    /// Rounds committed.
    pub commits: Vec<Committed>,
    /// The server's events.
    pub events: Vec<SessionEvent>,
    /// How the session ended on its own.
    pub finished: Option<SessionEnd>,
    /// Why a round could not start (the harness then closed the session).
    pub plan_errors: Vec<String>,
    /// Connections the server closed, and why.
    pub closes: Vec<(ConnId, CloseReason)>,
    /// Every frame-limit change, per connection.
    pub limits: Vec<(ConnId, usize)>,
    /// Rewrites peers' frames.
    pub tamper: Option<Tamper>,
    /// Connections the server admitted, in order.
    pub admitted: Vec<ConnId>,
    /// Rewrites (or swallows) the server's frames to peer `i`: a server deviating from
    /// the protocol, played against the real client sessions.
    pub tamper_to_client: Option<Tamper>,
    /// Frames raw connections received.
    raw_received: HashMap<ConnId, Vec<Vec<u8>>>,
    /// Peers whose encode jobs wait for [`Harness::release_encode`].
    pub hold_encode: Vec<usize>,
    held_encodes: Vec<(usize, Box<EncodeJob>)>,
    /// Releases charged: (round, attempt, masked inputs in the sum, unmask responses
    /// clients had sent by then).
    pub charges: Vec<(u64, u32, usize, u32)>,
    /// Fail the next charge (the shell could not write its ledger): close the session.
    pub fail_charge: bool,
    /// The enrollment authority that certified the peers.
    pub authority: privagg_ca::Authority,
    /// The server's round log: a leaf per committed round, signed with `log_key`, given
    /// to the session before the first round and after each commit.
    pub log: LogState,
    /// The key the log is signed with.
    pub log_key: LogKey,
    /// What each committed round's leaf logs of privacy (`None`: nothing, as without DP).
    pub leaf_privacy: Option<LeafPrivacy>,
    /// The instance of every attempt charged (asked to unmask), with its round: what the
    /// leaf of the round lists as unmasked.
    pub unmasked: Vec<(u64, [u8; 32])>,
    /// Rewrites each leaf before it is logged: a server that logs other facts than it
    /// ran.
    pub tamper_leaf: Option<TamperLeaf>,
    /// Peers that stop reading once they are seated: from the first `Config` on, frames
    /// to them are never delivered, and the shell's write deadline fires
    /// ([`Setup::write_deadline`] later, as [`Harness::stall`]) — a slow reader that holds
    /// a download.
    pub slow_readers: HashSet<usize>,
    /// The peer that opened each connection (raw connections are not listed), kept after
    /// the connection closed.
    pub owners: HashMap<ConnId, usize>,
    setup: Setup,
    rng: ChaCha8Rng,
}

impl Harness {
    fn new(setup: Setup) -> Self {
        let authority = privagg_ca::Authority::create("harness authority", 30).unwrap();
        let peers = (0..setup.peers).map(|i| new_peer(i, setup.dim, &authority)).collect();
        let planner = planner_for(&setup);
        let log_key = LogKey::generate(&origin(&hex::encode(SESSION))).unwrap();
        let log = LogState::new(SESSION, &log_key);
        let mut server = ServerSession::new(setup.session.clone());
        server.set_log(Arc::new(log.clone()));
        Self {
            now: Instant::now(),
            server,
            peers,
            links: BTreeMap::new(),
            agenda: Vec::new(),
            next_conn: 0,
            planner,
            settings: HashMap::new(),
            commits: Vec::new(),
            events: Vec::new(),
            finished: None,
            plan_errors: Vec::new(),
            closes: Vec::new(),
            limits: Vec::new(),
            tamper: None,
            admitted: Vec::new(),
            tamper_to_client: None,
            raw_received: HashMap::new(),
            hold_encode: Vec::new(),
            held_encodes: Vec::new(),
            charges: Vec::new(),
            fail_charge: false,
            authority,
            log,
            log_key,
            // As the real server: a session with DP logs its figures (here none spent).
            leaf_privacy: setup.noise_multiplier.map(|_| LeafPrivacy {
                delta: privagg_service::privacy::DEFAULT_BUDGET_DELTA,
                releases: Vec::new(),
                epsilon_round: 0.0,
                epsilon_total: 0.0,
            }),
            unmasked: Vec::new(),
            tamper_leaf: None,
            slow_readers: HashSet::new(),
            owners: HashMap::new(),
            rng: ChaCha8Rng::seed_from_u64(setup.reorder_seed.unwrap_or(0)),
            setup,
        }
    }

    /// Every peer connects.
    pub fn join_all(&mut self) {
        for i in 0..self.peers.len() {
            self.join(i);
        }
    }

    /// Replaces peer `i`'s session with one whose configuration `change` adjusted
    /// (before it connects).
    pub fn configure(&mut self, i: usize, change: impl FnOnce(&mut ClientConfig)) {
        let mut config = self.peers[i].session.config().clone();
        change(&mut config);
        self.peers[i].session = ClientSession::new(config, NoiseRng::insecure_from_seed(peer_seed(i)));
    }

    /// Finishes peer `i`'s held encode job (see [`Harness::hold_encode`]).
    pub fn release_encode(&mut self, i: usize) {
        let index = self.held_encodes.iter().position(|(p, _)| *p == i).expect("a held encode job");
        let (_, job) = self.held_encodes.remove(index);
        let round = job.round();
        let encoded = job.run();
        if let Some(words) = encoded.words() {
            self.peers[i].encoded.insert(round, words.to_vec());
        }
        self.peers[i].session.handle_encoded(encoded);
    }

    /// Peer `i` opens a new connection and says hello.
    pub fn join(&mut self, i: usize) -> ConnId {
        let conn = self.connect(Some(i), Some(self.peers[i].certificate.clone()));
        self.peers[i].conn = Some(conn);
        self.peers[i].session.handle_connected();
        conn
    }

    /// A connection the test drives by hand with [`Harness::send_raw`], with a
    /// certificate of its own from the harness's authority.
    pub fn connect_raw(&mut self) -> ConnId {
        let (certificate, _) = certify(&self.authority, usize::MAX);
        self.connect_raw_as(certificate)
    }

    /// A raw connection presenting `certificate`: an impostor holding a peer's key.
    pub fn connect_raw_as(&mut self, certificate: Arc<[u8]>) -> ConnId {
        self.connect(None, Some(certificate))
    }

    fn connect(&mut self, peer: Option<usize>, certificate: Option<Arc<[u8]>>) -> ConnId {
        self.next_conn += 1;
        let conn = self.next_conn;
        if let Some(i) = peer {
            self.owners.insert(conn, i);
        }
        let limit = privagg_service::frame::MAX_HELLO_FRAME;
        self.links.insert(
            conn,
            Link {
                peer,
                to_server: VecDeque::new(),
                to_client: VecDeque::new(),
                limit,
                server_closing: false,
                client_closing: false,
                dead: false,
                stalled: false,
            },
        );
        let certificate = certificate.filter(|_| self.setup.session.admission.by_certificate());
        self.server.handle_connected(self.now, conn, certificate);
        self.drain_server();
        conn
    }

    /// Sends `bytes` as one frame on a raw connection.
    pub fn send_raw(&mut self, conn: ConnId, bytes: Vec<u8>) {
        let at = self.now + self.setup.latency;
        if let Some(link) = self.links.get_mut(&conn) {
            link.to_server.push_back((at, bytes));
        }
    }

    /// What a raw connection received, decoded.
    pub fn raw_received(&self, conn: ConnId) -> Vec<FromServer> {
        let limits = Limits::default();
        self.raw_received
            .get(&conn)
            .map(|frames| frames.iter().filter_map(|f| FromServer::decode(f, &limits).ok()).collect())
            .unwrap_or_default()
    }

    /// Reports to the server that a transfer on `conn` stalled (what the shell's write or
    /// read deadline does), then carries out the server's actions.
    pub fn stall(&mut self, conn: ConnId, stall: privagg_service::Stall) {
        self.server.handle_stalled(self.now, conn, stall);
        while self.drain_server() {}
    }

    /// Whether the connection is still open.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.links.contains_key(&conn)
    }

    /// Cuts peer `i`'s connection for `outage`: frames in flight are lost, both ends
    /// notice after the idle timeout, and the client reconnects once the outage is over.
    pub fn outage(&mut self, i: usize, outage: Duration) {
        let Some(conn) = self.peers[i].conn else { return };
        if let Some(link) = self.links.get_mut(&conn) {
            link.dead = true;
            link.to_server.clear();
            link.to_client.clear();
        }
        let noticed = self.now + self.setup.idle_timeout;
        self.agenda.push((noticed, Scheduled::ServerNotices { conn, transient: true }));
        self.agenda.push((noticed, Scheduled::ClientNotices { peer: i }));
        self.agenda.push((noticed.max(self.now + outage), Scheduled::Reconnect { peer: i }));
    }

    /// Message types (the byte after the version) in flight to peer `i`.
    pub fn in_flight_to(&self, i: usize) -> Vec<u8> {
        self.link_of(i).map(|l| l.to_client.iter().filter_map(|(_, f)| f.get(1).copied()).collect()).unwrap_or_default()
    }

    /// Message types in flight from peer `i`.
    pub fn in_flight_from(&self, i: usize) -> Vec<u8> {
        self.link_of(i).map(|l| l.to_server.iter().filter_map(|(_, f)| f.get(1).copied()).collect()).unwrap_or_default()
    }

    fn link_of(&self, i: usize) -> Option<&Link> {
        self.peers[i].conn.and_then(|c| self.links.get(&c))
    }

    /// Runs until nothing is left to do; panics if that takes implausibly long.
    pub fn run(&mut self) {
        for _ in 0..1_000_000 {
            if !self.step() {
                return;
            }
        }
        panic!("the session did not settle");
    }

    /// Runs until `done` holds (checked between steps); panics if it never does.
    pub fn run_until(&mut self, mut done: impl FnMut(&Self) -> bool) {
        for _ in 0..1_000_000 {
            if done(self) {
                return;
            }
            assert!(self.step(), "the session settled before the condition held");
        }
        panic!("the condition never held");
    }

    /// One step: carry out pending actions, else deliver one due frame or event, else
    /// advance the clock to the next due instant. Returns false when idle.
    pub fn step(&mut self) -> bool {
        if self.drain_server() | self.drain_clients() {
            return true;
        }
        if self.deliver_one() || self.run_agenda() {
            return true;
        }
        if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
            self.server.handle_timeout(self.now);
            return true;
        }
        let next = [self.next_delivery(), self.agenda.iter().map(|(t, _)| *t).min(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) => {
                self.now = self.now.max(t);
                true
            }
            None => false,
        }
    }

    fn drain_server(&mut self) -> bool {
        let mut any = false;
        while let Some(action) = self.server.poll_action() {
            any = true;
            self.server_action(action);
        }
        any
    }

    fn server_action(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::Send { conn, frame } => {
                let at = now + self.setup.latency;
                let deadline = now + self.setup.write_deadline;
                let Some(link) = self.links.get_mut(&conn).filter(|l| !l.dead) else { return };
                let slow = link.peer.is_some_and(|i| self.slow_readers.contains(&i));
                if slow && (link.stalled || frame.to_vec().get(1) == Some(&ty::CONFIG)) {
                    // The peer reads nothing from its `Config` on: the write never
                    // completes, and the shell's deadline reports it (once).
                    if !std::mem::replace(&mut link.stalled, true) {
                        self.agenda.push((deadline, Scheduled::WriteDeadline { conn }));
                    }
                    return;
                }
                link.to_client.push_back((at, frame.to_vec()));
            }
            Action::SetFrameLimit { conn, limit } => {
                self.limits.push((conn, limit));
                if let Some(link) = self.links.get_mut(&conn) {
                    link.limit = limit;
                }
            }
            Action::Close { conn, reason } => {
                self.closes.push((conn, reason));
                if let Some(link) = self.links.get_mut(&conn) {
                    link.server_closing = true;
                }
            }
            Action::StartRound { round, clients, .. } => match (self.planner)(round, clients) {
                Ok(settings) => {
                    // Seats of an earlier attempt at this round no longer count.
                    for p in &mut self.peers {
                        p.seats.remove(&round);
                    }
                    let params = params_for(
                        &settings,
                        round,
                        clients,
                        self.setup.session.min_clients,
                        self.setup.graph.as_ref(),
                    );
                    let app_data: Arc<[u8]> = Arc::from(settings.encode().unwrap().into_boxed_slice());
                    self.settings.insert(round, settings);
                    self.server.start_round(now, params, app_data).unwrap();
                }
                Err(e) => {
                    self.plan_errors.push(e.clone());
                    self.server.close(EndReason::ServerError, &e);
                }
            },
            Action::ChargeRelease { round, attempt, inputs, instance } => {
                let revealed = self.peers.iter().map(|p| p.unmask_responses).sum();
                self.charges.push((round, attempt, inputs, revealed));
                self.unmasked.push((round, instance));
                if std::mem::take(&mut self.fail_charge) {
                    self.server.close(EndReason::ServerError, "the privacy ledger could not be written");
                } else {
                    self.server.handle_release_charged(now);
                }
            }
            Action::Finalize(mut job) => {
                job.run();
                self.server.handle_finalized(now, job);
            }
            Action::Commit(commit) => {
                let settings = &self.settings[&commit.round];
                let sum = settings.decode_sum(&commit.output.sum).unwrap();
                let seat_of = |p: &Peer| p.seats.get(&commit.round).copied();
                let peers = (0..self.peers.len())
                    .filter(|&i| {
                        seat_of(&self.peers[i]).is_some_and(|s| commit.output.included.iter().any(|c| c.get() == s))
                    })
                    .collect();
                let told_before_commit =
                    (0..self.peers.len()).filter(|&i| self.peers[i].completed(commit.round)).collect();
                let mut leaf = self.leaf_of(&commit);
                if let Some(tamper) = &mut self.tamper_leaf {
                    tamper(&mut leaf);
                }
                self.log.append(leaf.encode().unwrap(), &self.log_key);
                self.server.set_log(Arc::new(self.log.clone()));
                self.commits.push(Committed { commit: *commit, sum, peers, told_before_commit });
                self.server.handle_committed(now);
            }
            Action::SendModel { round, conns } => {
                // The harness's model after a round: the decoded mean of the sum.
                let sum = &self.commits.last().expect("a commit").sum;
                let total = sum.total_weight.unwrap_or(1.0).max(f64::MIN_POSITIVE);
                let values = sum.values.iter().map(|v| (v / total) as f32).collect();
                let frame = Frame::new(ServerServiceMessage::Model { round, values }.encode());
                for conn in conns {
                    self.server_action(Action::Send { conn, frame: frame.clone() });
                }
            }
            Action::Admitted { conn } => self.admitted.push(conn),
            Action::Event(e) => self.events.push(e),
            Action::Finished(end) => self.finished = Some(end),
        }
    }

    /// Starts the log afresh (empty) under `key`: a server that rolled its state back to
    /// before its first round, keeping its log key.
    pub fn restart_log(&mut self, key: LogKey) {
        self.log = LogState::new(SESSION, &key);
        self.log_key = key;
        self.server.set_log(Arc::new(self.log.clone()));
    }

    /// Gives the session the harness's log as it stands, signed afresh under `key`: a
    /// server that resumes a session's log.
    pub fn restart_log_state(&mut self, key: LogKey) {
        let leaves = (0..self.log.hashes().len()).map(|i| self.log.leaf(i).unwrap_or_default().to_vec()).collect();
        self.log = LogState::with_leaves(SESSION, &key, leaves);
        self.log_key = key;
        self.server.set_log(Arc::new(self.log.clone()));
    }

    /// The harness's log key, copied (for a harness that plays the same server again).
    pub fn log_key_copy(&self) -> LogKey {
        LogKey::from_pkcs8(&origin(&hex::encode(SESSION)), self.log_key.pkcs8()).unwrap()
    }

    /// The leaf the harness logs for a committed round.
    pub fn leaf_of(&self, commit: &RoundCommit) -> RoundLeaf {
        use sha2::Digest;
        let mut included: Vec<u32> = commit.output.included.iter().map(|c| c.get()).collect();
        included.sort_unstable();
        let ids: Vec<u8> = included.iter().flat_map(|id| id.to_be_bytes()).collect();
        RoundLeaf {
            format: LEAF_FORMAT.into(),
            software: "privagg harness".into(),
            session: hex::encode(SESSION),
            round: commit.round,
            attempt: commit.attempt,
            instance: hex::encode(commit.instance),
            unmasked: self.unmasked.iter().filter(|(r, _)| *r == commit.round).map(|(_, i)| hex::encode(i)).collect(),
            participants: commit.params.num_clients,
            neighbours: commit.params.neighbours,
            threshold: commit.params.threshold,
            bits: commit.params.bits,
            survivors: hex::encode(sha2::Sha256::digest(&ids)),
            survivor_count: included.len(),
            denominator: 1.0,
            model_sha256: hex::encode([0u8; 32]),
            privacy: self.leaf_privacy.clone(),
        }
    }

    fn drain_clients(&mut self) -> bool {
        let mut any = false;
        for i in 0..self.peers.len() {
            while let Some(action) = self.peers[i].session.poll_action() {
                any = true;
                self.client_action(i, action);
            }
        }
        any
    }

    fn client_action(&mut self, i: usize, action: ClientAction) {
        let peer = &mut self.peers[i];
        match action {
            ClientAction::Send(frame) => {
                let at = self.now + self.setup.latency;
                let mut bytes = frame.to_vec();
                match bytes.get(1) {
                    Some(&ty::MASKED_INPUT) => peer.uploads += 1,
                    Some(&ty::UNMASK_RESPONSE) => peer.unmask_responses += 1,
                    Some(&ty::CHECK_IN_REPLY) => {
                        if let Ok(ClientServiceMessage::CheckInReply { round, join, .. }) =
                            ClientServiceMessage::decode(&bytes)
                        {
                            peer.check_ins.push((round, join));
                        }
                    }
                    _ => {}
                }
                if let Some(tamper) = &mut self.tamper
                    && !tamper(i, &mut bytes)
                {
                    return;
                }
                if let Some(link) = peer.conn.and_then(|c| self.links.get_mut(&c)).filter(|l| !l.dead) {
                    link.to_server.push_back((at, bytes));
                }
            }
            ClientAction::Train(_) if peer.fail_training => peer.session.abandon_round("training failed"),
            ClientAction::Train(_) => match peer.train_for.take() {
                Some(time) => self.agenda.push((self.now + time, Scheduled::Trained { peer: i })),
                None => peer.session.provide_update(peer.update.clone(), peer.weight),
            },
            ClientAction::Remember(memory) => peer.remembered = Some(memory),
            ClientAction::Encode(job) if self.hold_encode.contains(&i) => self.held_encodes.push((i, job)),
            ClientAction::Encode(job) => {
                let round = job.round();
                let encoded = job.run();
                if let Some(words) = encoded.words() {
                    peer.encoded.insert(round, words.to_vec());
                }
                peer.session.handle_encoded(encoded);
            }
            ClientAction::Mask(job) => peer.session.handle_masked(job.run()),
            ClientAction::Vanish => {
                peer.vanished = true;
                if !peer.silent {
                    self.client_closes(i);
                }
            }
            ClientAction::Event(e) => {
                let over = matches!(e, ClientEvent::Refused(_) | ClientEvent::SessionEnded { .. });
                // Asking again is idempotent: like the SDK's `run`, ask whenever a round
                // could start.
                let may_ask =
                    matches!(e, ClientEvent::Admitted | ClientEvent::RoundCompleted(_) | ClientEvent::RoundFailed(_));
                peer.events.push(e);
                let completed_one = peer.events.iter().any(|e| matches!(e, ClientEvent::RoundCompleted(_)));
                if over {
                    self.client_closes(i);
                } else if may_ask && !peer.vanished && (peer.asks_for_rounds || !completed_one) {
                    peer.session.request_round(unix_now());
                }
            }
        }
    }

    /// Peer `i` closes its connection (its queued frames still arrive first).
    fn client_closes(&mut self, i: usize) {
        if let Some(link) = self.peers[i].conn.take().and_then(|c| self.links.get_mut(&c)) {
            link.client_closing = true;
        }
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.links
            .values()
            .filter(|l| !l.dead)
            .flat_map(|l| [l.to_server.front().map(|f| f.0), l.to_client.front().map(|f| f.0)])
            .flatten()
            .min()
    }

    /// Delivers one due frame (or tears down one link whose close is due).
    fn deliver_one(&mut self) -> bool {
        let now = self.now;
        let mut due: Vec<(ConnId, bool)> = Vec::new();
        for (&conn, link) in &self.links {
            if link.dead {
                continue;
            }
            if link.to_server.front().is_some_and(|f| f.0 <= now) {
                due.push((conn, true));
            }
            if link.to_client.front().is_some_and(|f| f.0 <= now) {
                due.push((conn, false));
            }
        }
        if self.setup.reorder_seed.is_some() {
            due.shuffle(&mut self.rng);
        }
        if let Some(&(conn, upward)) = due.first() {
            if upward {
                self.deliver_to_server(conn)
            } else {
                self.deliver_to_client(conn)
            }
            return true;
        }
        self.tear_down_closed_link()
    }

    fn deliver_to_server(&mut self, conn: ConnId) {
        let Some(link) = self.links.get_mut(&conn) else { return };
        let Some((_, frame)) = link.to_server.pop_front() else { return };
        if frame.len() > link.limit {
            let limit = link.limit;
            link.dead = true;
            self.links.remove(&conn);
            self.server.handle_oversized(self.now, conn, frame.len(), limit);
            self.server.handle_closed(self.now, conn, false);
            return;
        }
        self.server.handle_frame(self.now, conn, &frame);
    }

    fn deliver_to_client(&mut self, conn: ConnId) {
        let Some(link) = self.links.get_mut(&conn) else { return };
        let Some((_, frame)) = link.to_client.pop_front() else { return };
        let Some(i) = link.peer else {
            self.raw_received.entry(conn).or_default().push(frame);
            return;
        };
        let mut frame = frame;
        if let Some(tamper) = &mut self.tamper_to_client
            && !tamper(i, &mut frame)
        {
            return;
        }
        let peer = &mut self.peers[i];
        if peer.vanished || peer.conn != Some(conn) {
            return;
        }
        if let Ok(FromServer::Protocol(ServerMessage::Config(c))) = FromServer::decode(&frame, &Limits::default()) {
            peer.seats.insert(c.params.round, c.client_id.get());
        }
        peer.session.handle_frame(frame);
    }

    /// Closes a link whose closing side has nothing left in flight: the server hears of
    /// it, and so does a client whose connection the server closed.
    fn tear_down_closed_link(&mut self) -> bool {
        let closed = self.links.iter().find(|(_, l)| {
            (l.server_closing && l.to_client.is_empty()) || (l.client_closing && l.to_server.is_empty())
        });
        let Some((&conn, _)) = closed else { return false };
        let link = self.links.remove(&conn).expect("just found");
        if let Some(i) = link.peer
            && self.peers[i].conn == Some(conn)
        {
            self.peers[i].conn = None;
            self.peers[i].session.handle_connection_lost();
        }
        self.server.handle_closed(self.now, conn, false);
        true
    }

    fn run_agenda(&mut self) -> bool {
        let Some(index) = self.agenda.iter().position(|(t, _)| *t <= self.now) else { return false };
        let (_, item) = self.agenda.remove(index);
        match item {
            Scheduled::ServerNotices { conn, transient } => {
                self.links.remove(&conn);
                self.server.handle_closed(self.now, conn, transient);
            }
            Scheduled::ClientNotices { peer } => {
                self.peers[peer].conn = None;
                self.peers[peer].session.handle_connection_lost();
            }
            Scheduled::Trained { peer } => {
                let peer = &mut self.peers[peer];
                peer.session.provide_update(peer.update.clone(), peer.weight);
            }
            Scheduled::WriteDeadline { conn } => {
                if self.links.contains_key(&conn) {
                    self.server.handle_stalled(self.now, conn, privagg_service::Stall::Write);
                }
            }
            Scheduled::Reconnect { peer } => {
                if !self.peers[peer].session.is_ended() && !self.peers[peer].vanished {
                    self.join(peer);
                }
            }
        }
        true
    }

    /// Σ over `peers` of weight × clamped update, and Σ of their weights: what a
    /// weighted round over exactly those peers must release.
    pub fn expected(&self, peers: &[usize]) -> (Vec<f64>, f64) {
        let mut values = vec![0.0; self.setup.dim];
        let mut weight = 0.0;
        for &i in peers {
            let p = &self.peers[i];
            let w = f64::from(p.weight.min(MAX_WEIGHT as f32));
            weight += w;
            for (v, u) in values.iter_mut().zip(&p.update) {
                *v += w * f64::from(u.clamp(-VALUE_RANGE as f32, VALUE_RANGE as f32));
            }
        }
        (values, weight)
    }

    /// Asserts that committed round `index` released exactly the weighted sum of the
    /// peers in it, and returns them.
    pub fn assert_exact(&self, index: usize) -> Vec<usize> {
        self.assert_exact_words(index);
        let c = &self.commits[index];
        let (values, weight) = self.expected(&c.peers);
        let total = c.sum.total_weight.expect("a weighted round");
        assert!((total - weight).abs() < 1e-6, "total weight {total}, expected {weight}");
        // The words are exact (above); decoded, each client's value may differ from this
        // f64 arithmetic by its f32 weighting (half an f32 ulp) and its rounding to the
        // grid γ: with hundreds of clients that exceeds a fixed 10⁻⁶.
        let gamma = self.settings[&c.commit.round].encoding.gamma;
        let clamp = |u: f32| f64::from(u.clamp(-VALUE_RANGE as f32, VALUE_RANGE as f32));
        for (j, (got, want)) in c.sum.values.iter().zip(&values).enumerate() {
            let bound: f64 = c
                .peers
                .iter()
                .map(|&i| {
                    let w = f64::from(self.peers[i].weight.min(MAX_WEIGHT as f32));
                    gamma + (w * clamp(self.peers[i].update[j])).abs() * f64::from(f32::EPSILON)
                })
                .sum();
            assert!((got - want).abs() < bound.max(1e-6), "sum {got}, expected {want}");
        }
        c.peers.clone()
    }

    /// Asserts that committed round `index` released, word for word (mod 2^bits), the sum
    /// of the encoded inputs of the peers in it: no input missing, none extra, none
    /// altered. Peers whose encoded words the harness did not see are skipped only if no
    /// peer's were seen (a test that feeds encodings itself).
    pub fn assert_exact_words(&self, index: usize) {
        let c = &self.commits[index];
        let round = c.commit.round;
        if c.peers.iter().all(|&i| !self.peers[i].encoded.contains_key(&round)) {
            return;
        }
        let mask = c.commit.params.word_mask();
        let mut want = vec![0u64; c.commit.output.sum.len()];
        for &i in &c.peers {
            let words = self.peers[i].encoded.get(&round).unwrap_or_else(|| panic!("peer {i}'s encoded input"));
            for (w, x) in want.iter_mut().zip(words) {
                *w = w.wrapping_add(*x) & mask;
            }
        }
        assert!(
            c.commit.output.sum == want,
            "round {round}: the released words are not the sum of the included inputs"
        );
    }

    /// Dropped clients of committed round `index`: (peer, phase, reason text, in sum).
    pub fn dropped(&self, index: usize) -> Vec<(usize, String, String, bool)> {
        let c = &self.commits[index];
        c.commit
            .dropped
            .iter()
            .map(|d| {
                let peer = (0..self.peers.len())
                    .find(|&i| self.peers[i].seats.get(&c.commit.round) == Some(&d.client.get()))
                    .expect("a seated peer");
                (peer, d.phase.as_str().to_owned(), format!("{:?}", d.reason), d.in_sum)
            })
            .collect()
    }
}

/// The current time in seconds since the Unix epoch: when peers' certificates must be
/// valid (the harness's clock is simulated; certificates are real).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A certificate for peer `i` from `authority`, and the identity it gives the peer.
pub fn certify(authority: &privagg_ca::Authority, i: usize) -> (Arc<[u8]>, Identity) {
    let credential = authority.issue(&format!("peer-{i}"), 1).unwrap();
    let identity = Identity::from_der(&credential.cert, &credential.key, authority.root_der(), unix_now()).unwrap();
    (identity.certificate.clone(), identity)
}

fn new_peer(i: usize, dim: usize, authority: &privagg_ca::Authority) -> Peer {
    let mut rng = ChaCha8Rng::seed_from_u64(1000 + i as u64);
    let update = (0..dim).map(|_| rng.random_range(-1.0f32..=1.0)).collect();
    let rng = NoiseRng::insecure_from_seed(peer_seed(i));
    let (certificate, identity) = certify(authority, i);
    let config = ClientConfig {
        token: None,
        identity: peer_seed(i)[..16].try_into().unwrap(),
        policy: ClientPolicy::default(),
        // Most sessions here run without DP: a client must opt in to those.
        privacy: PrivacyPolicy { allow_no_dp: true, ..PrivacyPolicy::default() },
        limits: Limits::default(),
        memory: RoundMemory::default(),
        max_attempts: 3,
        credentials: Some(identity),
        follow_model: false,
        log: LogTrust::default(),
    };
    Peer {
        certificate,
        session: ClientSession::new(config, rng),
        update,
        weight: 1.0 + i as f32,
        conn: None,
        events: Vec::new(),
        seats: BTreeMap::new(),
        vanished: false,
        silent: false,
        fail_training: false,
        train_for: None,
        asks_for_rounds: true,
        remembered: None,
        uploads: 0,
        unmask_responses: 0,
        check_ins: Vec::new(),
        encoded: BTreeMap::new(),
    }
}

/// Peer `i`'s seed (its noise and protocol randomness, and its random client identity):
/// `[i + 1; 32]` below 255, as every test was written with, then made unique by the high
/// bits of `i` so that hundreds of peers never share keys.
fn peer_seed(i: usize) -> [u8; 32] {
    let mut seed = [(i as u8).wrapping_add(1); 32];
    let high = (i as u64 >> 8).to_le_bytes();
    for (s, h) in seed.iter_mut().zip(high) {
        *s ^= h;
    }
    seed
}

/// The harness's default planner: weighted FedAvg (48-bit words), or DP with the
/// setup's noise multiplier.
fn planner_for(setup: &Setup) -> Planner {
    let dim = setup.dim;
    let cohort = setup.session.clients;
    let min_clients = setup.session.min_clients;
    let rounds = setup.session.rounds;
    match setup.noise_multiplier {
        None => Box::new(move |round, _| {
            let gamma = privagg_dp::plan_without_dp(cohort as usize, VALUE_RANGE * MAX_WEIGHT, 48).unwrap();
            Ok(RoundSettings {
                session: SESSION,
                round,
                total_rounds: rounds,
                mode: AggregationMode::Weighted { value_range: VALUE_RANGE, max_weight: MAX_WEIGHT },
                encoding: EncodingParams::without_dp(dim + 1, gamma, 48, Clipping::None, None).unwrap(),
                model: vec![0.0; dim],
                train_timeout_secs: 0,
            })
        }),
        Some(z) => Box::new(move |round, _| {
            // As many colluders as the clients' default policy assumes.
            let colluders = assumed_colluders(ClientPolicy::default().corrupt_fraction, min_clients);
            let mut input = PlanInput::new(
                Mechanism::DiscreteGaussian,
                NoiseTarget::Multiplier(z),
                1e-5,
                rounds,
                1.0,
                cohort as usize,
                min_clients as usize,
                dim,
                1.0,
                20,
            );
            input.colluders = colluders as usize;
            let p = plan(&input).map_err(|e| e.to_string())?;
            Ok(RoundSettings {
                session: SESSION,
                round,
                total_rounds: rounds,
                mode: AggregationMode::Dp {
                    mechanism: Mechanism::DiscreteGaussian,
                    n_min: min_clients,
                    colluders,
                    delta: 1e-5,
                    epsilon_spent: 0.0,
                    clip_indicator: None,
                },
                encoding: p.encoding_params([7; 32]),
                model: vec![0.0; dim],
                train_timeout_secs: 0,
            })
        }),
    }
}

/// Parameters for a cohort of `n`: the graph and threshold the finder plans under
/// `graph` (at least `min_clients` inputs, or the threshold if higher), or the complete
/// graph with threshold `min_clients`.
fn params_for(
    settings: &RoundSettings,
    round: u64,
    n: u32,
    min_clients: u32,
    graph: Option<&ThreatModel>,
) -> RoundParams {
    let (neighbours, threshold) = match graph {
        Some(threat) => {
            let p = find_graph_parameters(n, threat).expect("a feasible graph for the cohort");
            (p.neighbours, p.threshold)
        }
        None => (n - 1, min_clients),
    };
    RoundParams {
        round,
        num_clients: n,
        neighbours,
        threshold,
        min_clients: min_clients.max(threshold),
        dim: settings.protocol_dim() as u32,
        bits: settings.encoding.bits as u8,
        prg: PrgKind::default(),
    }
}

/// Message type bytes, to recognise frames in flight.
pub mod ty {
    /// Server → client: `Config`.
    pub const CONFIG: u8 = 0x01;
    /// `KeyList`.
    pub const KEY_LIST: u8 = 0x02;
    /// `ForwardedShares`.
    pub const FORWARDED_SHARES: u8 = 0x03;
    /// `UnmaskRequest`.
    pub const UNMASK_REQUEST: u8 = 0x04;
    /// `RoundComplete`.
    pub const ROUND_COMPLETE: u8 = 0x05;
    /// Client → server: `AdvertiseKeys`.
    pub const ADVERTISE_KEYS: u8 = 0x11;
    /// `ShareKeys`.
    pub const SHARE_KEYS: u8 = 0x12;
    /// `MaskedInput`.
    pub const MASKED_INPUT: u8 = 0x13;
    /// `CheckInReply`.
    pub const CHECK_IN_REPLY: u8 = 0x39;
    /// `UnmaskResponse`.
    pub const UNMASK_RESPONSE: u8 = 0x14;
    /// `Complaints`.
    pub const COMPLAINTS: u8 = 0x17;
    /// `UploadReady`.
    pub const UPLOAD_READY: u8 = 0x34;
    /// `UploadGrant`.
    pub const UPLOAD_GRANT: u8 = 0x35;
}

/// Whether `point` is one at which a client's input is already in the sum.
pub fn in_sum_at(point: DropPoint) -> bool {
    matches!(point, DropPoint::BeforeSignature | DropPoint::BeforeUnmaskResponse | DropPoint::AfterUnmaskResponse)
}

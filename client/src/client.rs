//! A client's connection to the aggregation server and its part in rounds: the async
//! shell of `privagg-service`'s [`ClientSession`], which decides everything; this file
//! moves frames, runs the training closure, and runs encoding and masking on the
//! blocking pool.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ndarray::{Array1, ArrayView1};
use privagg_dp::NoiseRng;
use privagg_log::VerifierKey;
use privagg_protocol::{AbortCode, AdversaryClass, ClientPolicy, Identity, Limits, ServerMessage};
use privagg_service::client::{ClientEvent, Encoded, RoundSummary};
use privagg_service::message::IDENTITY_LEN;
use privagg_service::quic::{self, WireError};
use privagg_service::round_log::LogTrust;
use privagg_service::{
    ClientAction, ClientConfig, ClientSession, EndReason, Frame, FromServer, PrivacyPolicy, RoundError, RoundSettings,
};
use rand::RngExt;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::error::SdkError;
use crate::link::{Link, round_frame_limit};
use crate::memory::MemoryFile;

/// How to reach the server and what to accept from it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The server's UDP address.
    pub server: SocketAddr,
    /// The name in the server's certificate (privagg's generated certificate says
    /// `localhost`).
    pub server_name: String,
    /// The server's certificate (DER), trusted exactly (pinned).
    pub server_cert: Vec<u8>,
    /// Admission token, if the server uses a token file.
    pub token: Option<String>,
    /// This client's certificate (DER), issued by the deployment's enrollment authority:
    /// its identity, proven in mutual TLS.
    pub cert: Option<Vec<u8>>,
    /// The private key of `cert`.
    pub key: Option<PrivateKey>,
    /// The enrollment authority's root certificate (DER), which certifies the peers this
    /// client masks with and shares its secrets to.
    pub client_ca: Option<Vec<u8>>,
    /// What the client requires of each round's differential privacy: by default DP on,
    /// with noise at least that of a Gaussian with multiplier 0.5, accounted by the client
    /// itself from what it received. A client may demand more privacy than the server
    /// offers, never accept less than its policy.
    pub privacy: PrivacyPolicy,
    /// Which rounds' thresholds this client accepts: by default only those that keep its
    /// secrets from a server that lies about dropouts, with 5 % of clients corrupt.
    pub policy: ClientPolicy,
    /// Where the client remembers the rounds it took part in, so that a server cannot
    /// replay a round or try one over and over across restarts (one file per server and
    /// token). `None`: only for the life of the [`Client`]. Default:
    /// [`default_state_dir`](crate::default_state_dir).
    pub state_dir: Option<PathBuf>,
    /// Most masked inputs the client sends for one round over the server's attempts at it.
    pub max_attempts_per_round: u32,
    /// How long to keep retrying an unreachable server (connect and reconnect).
    pub connect_deadline: Duration,
    /// Largest frame accepted from the server before its first `Config` (which carries
    /// the model); a longer announced frame is refused before any of it is read or
    /// allocated. Once a `Config` arrived, frames are capped by what that round can
    /// need: about the `Config`'s size, or an entry per client. Default: 1 GiB.
    pub max_server_frame: usize,
    /// QUIC idle timeout; keep-alives go out at a quarter of it.
    pub idle_timeout: Duration,
    /// Ask the server for the global model after each round this client completes
    /// ([`RoundReport::model`]); it costs one model download per round. Default: off.
    pub follow_model: bool,
    /// The round log's verifier key (the server's `log.pub`, obtained out of band). The
    /// client checks the server's signed log before every round — that it only grew
    /// since the checkpoint the client accepted last, that the rounds it took part in
    /// are in it, and that the logged ε leaves room in its budget — and leaves with
    /// [`RoundError::LogRefused`] otherwise. `None` (the default): the key the session's
    /// log first presents is trusted, and kept in the client's memory (trust on first
    /// use).
    pub log_key: Option<VerifierKey>,
    /// Testing only: vanish at this point of every round.
    #[cfg(feature = "testing")]
    pub drop_point: Option<privagg_protocol::DropPoint>,
    /// Testing only: at `drop_point`, go silent instead of leaving, as a client whose
    /// process froze: the connection stays open (QUIC keeps it alive) and nothing more
    /// is sent, so the server waits for this client until the phase deadline. Once the
    /// connection is lost the call returns [`SdkError::ConnectionLost`] and the drop
    /// point is cleared (a one-shot stall), so [`Client::run`] reconnects and goes on.
    /// Crash tests use it to hold the server in a chosen phase.
    #[cfg(feature = "testing")]
    pub stall: bool,
}

impl ClientOptions {
    /// Options with defaults: server name `localhost`, no token, the default
    /// [`PrivacyPolicy`] and [`ClientPolicy`], the default state directory, 3 attempts per round, 10 s
    /// to connect, 60 s idle timeout.
    pub fn new(server: SocketAddr, server_cert: Vec<u8>) -> Self {
        Self {
            server,
            server_name: "localhost".into(),
            server_cert,
            token: None,
            cert: None,
            key: None,
            client_ca: None,
            privacy: PrivacyPolicy::default(),
            policy: ClientPolicy::default(),
            state_dir: crate::memory::default_state_dir(),
            max_attempts_per_round: 3,
            connect_deadline: Duration::from_secs(10),
            max_server_frame: 1 << 30,
            idle_timeout: Duration::from_secs(60),
            follow_model: false,
            log_key: None,
            #[cfg(feature = "testing")]
            drop_point: None,
            #[cfg(feature = "testing")]
            stall: false,
        }
    }

    /// Refuses options no client can mean, before anything is sent ([`SdkError::Options`]):
    /// a privacy policy [`PrivacyPolicy::validate`] refuses, or a corrupt fraction outside
    /// [0, 1).
    pub fn validate(&self) -> Result<(), SdkError> {
        self.privacy.validate().map_err(|e| SdkError::Options(e.to_string()))?;
        let fraction = self.policy.corrupt_fraction;
        if !(0.0..1.0).contains(&fraction) {
            return Err(SdkError::Options(format!("corrupt_fraction must be in [0, 1), got {fraction}")));
        }
        Ok(())
    }
}

/// A private key (PKCS#8 DER), wiped from memory when dropped and never printed.
#[derive(Clone)]
pub struct PrivateKey(Zeroizing<Vec<u8>>);

impl PrivateKey {
    /// A key from its PKCS#8 DER encoding (what `privagg ca issue` writes).
    pub fn from_pkcs8_der(der: Vec<u8>) -> Self {
        Self(Zeroizing::new(der))
    }

    /// The DER encoding.
    pub fn as_der(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// What one round did for this client.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundReport {
    /// The round number.
    pub round: u64,
    /// How many clients' inputs the released sum covers.
    pub inputs: u32,
    /// L2 norm of the update before clipping (DP on), for adaptive-clipping studies.
    pub pre_clip_norm: f64,
    /// Bytes this client sent during the round (frames included).
    pub bytes_sent: u64,
    /// Bytes it received.
    pub bytes_received: u64,
    /// The ε this client accounts for everything it sent this server (every session and
    /// attempt), at its policy's budget δ ([`PrivacyPolicy::budget_delta`]), by its own
    /// accounting; `None` if no round with DP was charged.
    pub epsilon: Option<f64>,
    /// The global model after the round, with [`ClientOptions::follow_model`].
    pub model: Option<Array1<f32>>,
}

impl From<RoundSummary> for RoundReport {
    fn from(s: RoundSummary) -> Self {
        Self {
            round: s.round,
            inputs: s.inputs,
            pre_clip_norm: s.pre_clip_norm,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            epsilon: s.epsilon,
            model: s.model.map(|m| Array1::from(Arc::unwrap_or_clone(m))),
        }
    }
}

/// What a training closure sees of the round it trains for.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RoundContext<'a> {
    /// The round number (1-based).
    pub round: u64,
    /// Rounds in the session.
    pub total_rounds: u64,
    /// The current global model.
    pub model: ArrayView1<'a, f32>,
    /// Whether the round runs with differential privacy (the update is clipped and
    /// noised; the weight is ignored).
    pub dp: bool,
    /// How long the server allows for training, from the round's start (0: not stated);
    /// past it the round goes on without this client ([`RoundError::TrainingOverran`]).
    pub train_timeout: Duration,
    /// Everything the server sent about the round.
    pub settings: &'a RoundSettings,
}

impl<'a> RoundContext<'a> {
    fn of(settings: &'a RoundSettings) -> Self {
        Self {
            round: settings.round,
            total_rounds: settings.total_rounds,
            model: ArrayView1::from(&settings.model),
            dp: !settings.is_weighted(),
            train_timeout: Duration::from_secs(settings.train_timeout_secs.into()),
            settings,
        }
    }
}

/// A connected client.
pub struct Client {
    options: ClientOptions,
    endpoint: quinn::Endpoint,
    link: Link,
    session: ClientSession,
    memory: MemoryFile,
    /// Actions of the session that arrived while the client waited for admission.
    pending: VecDeque<ClientAction>,
    /// The largest frame the reader accepts now.
    frame_limit: Arc<AtomicUsize>,
    /// The last update training gave, and the round and model it is for: a retry of the
    /// round on the same model reuses it instead of training again (and overrunning the
    /// training deadline again).
    trained: Option<(TrainedFor, (Vec<f32>, f32))>,
    /// Set through an [`Interrupt`]: the client leaves once training returns.
    interrupted: Arc<AtomicBool>,
}

/// Interrupts a client from another thread or task while its training closure runs
/// (Ctrl-C in a program that trains): once the closure returns, whatever it returned,
/// the client closes its connection at once, sends nothing more, and the call returns
/// [`SdkError::Interrupted`]. The server sees a client that left, not one that broke a
/// round, and does not count the attempt it cost against the round. Outside training,
/// cancel the call (drop its future) and [`Client::close`] instead.
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Asks the client to leave as soon as its training closure returns.
    pub fn interrupt(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What an update was trained for: a round of a session, on a model (its digest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TrainedFor {
    session: [u8; 16],
    round: u64,
    model: [u8; 32],
}

impl TrainedFor {
    fn of(settings: &RoundSettings) -> Self {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        for v in &settings.model {
            digest.update(v.to_le_bytes());
        }
        Self { session: settings.session, round: settings.round, model: digest.finalize().into() }
    }
}

impl Client {
    /// Connects and gets admitted. Retries an unreachable server, and a connection lost
    /// before the server answered the hello, until `connect_deadline`; a refusal is final.
    pub async fn connect(options: ClientOptions) -> Result<Self, SdkError> {
        options.validate()?;
        let credential = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => Some(quic::ClientCredential { cert, key: key.as_der() }),
            (None, None) => None,
            _ => return Err(SdkError::Tls("a client certificate and its key go together".into())),
        };
        let config = quic::client_config(&options.server_cert, credential, options.idle_timeout)
            .map_err(|e| SdkError::Tls(Box::new(e)))?;
        let any: std::net::IpAddr = if options.server.is_ipv6() {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        let bind = SocketAddr::new(any, 0);
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| SdkError::Local(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let credentials = credentials(&options)?;
        let identity: [u8; IDENTITY_LEN] = rand::rng().random();
        let memory = MemoryFile::new(options.state_dir.as_deref(), &options.server_cert, stable_identity(&options));
        let session_config = ClientConfig {
            token: options.token.clone(),
            identity,
            policy: options.policy.clone(),
            privacy: options.privacy.clone(),
            limits: Limits::default(),
            memory: memory.load()?,
            max_attempts: options.max_attempts_per_round.max(1),
            credentials,
            follow_model: options.follow_model,
            log: options.log_key.clone().map_or(LogTrust::TrustOnFirstUse, LogTrust::Pinned),
        };
        let rng = NoiseRng::from_os().map_err(|e| SdkError::Local(e.to_string()))?;
        #[allow(unused_mut)] // mutated with the `testing` feature
        let mut session = ClientSession::new(session_config, rng);
        #[cfg(feature = "testing")]
        session.set_drop_point(options.drop_point);
        let frame_limit = Arc::new(AtomicUsize::new(options.max_server_frame));
        let link = Link::open(&endpoint, &options, &frame_limit).await?;
        let mut client = Self {
            options,
            endpoint,
            link,
            session,
            memory,
            pending: VecDeque::new(),
            frame_limit,
            trained: None,
            interrupted: Arc::default(),
        };
        client.admit_or_reconnect().await?;
        Ok(client)
    }

    /// After a `Config`, caps the frames the reader accepts by what its round can need
    /// (never above `max_server_frame`).
    fn cap_frames_after(&self, frame: &[u8]) {
        // The type byte of a `Config` (protocol/PROTOCOL.md, pinned by the golden vectors).
        const CONFIG: u8 = 0x01;
        if frame.get(1) != Some(&CONFIG) {
            return;
        }
        let limits = Limits::default();
        if let Ok(FromServer::Protocol(ServerMessage::Config(config))) = FromServer::decode(frame, &limits) {
            let cap = round_frame_limit(frame.len(), &config.params, &limits);
            self.frame_limit.store(cap.min(self.options.max_server_frame), Ordering::Release);
        }
    }

    /// Reconnects after a lost connection, with the same identity, retrying until
    /// `connect_deadline`.
    pub async fn reconnect(&mut self) -> Result<(), SdkError> {
        self.session.handle_connection_lost();
        self.link = Link::open(&self.endpoint, &self.options, &self.frame_limit).await?;
        self.admit_or_reconnect().await
    }

    /// [`Client::admit`], connecting again while the connection is lost before the answer,
    /// until `connect_deadline`: a client slow to say hello (a busy device) has its
    /// connection closed "no hello in time", and a restarting server drops it.
    async fn admit_or_reconnect(&mut self) -> Result<(), SdkError> {
        let deadline = tokio::time::Instant::now() + self.options.connect_deadline;
        loop {
            match self.admit().await {
                Err(e @ SdkError::Unreachable(_)) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(error = %e, "connection lost before admission; connecting again");
                    self.session.handle_connection_lost();
                    self.link = Link::open(&self.endpoint, &self.options, &self.frame_limit).await?;
                }
                other => return other,
            }
        }
    }

    /// Says hello and waits for the server's answer; other actions wait for the round.
    async fn admit(&mut self) -> Result<(), SdkError> {
        self.session.handle_connected();
        loop {
            while let Some(action) = self.session.poll_action() {
                match action {
                    ClientAction::Send(frame) => self.send(&frame).await,
                    ClientAction::Event(ClientEvent::Admitted) => return Ok(()),
                    ClientAction::Event(ClientEvent::Refused(reason)) => return Err(SdkError::Refused(reason)),
                    other => self.pending.push_back(other),
                }
            }
            match self.link.frames.recv().await {
                Some(Ok(frame)) => {
                    self.cap_frames_after(&frame);
                    self.session.set_clock(unix_now());
                    self.session.handle_frame(frame)
                }
                Some(Err(WireError::Frame(e))) => return Err(SdkError::Frame(e)),
                Some(Err(e)) => return Err(Link::failure(&e)),
                None => return Err(SdkError::Refused("the server closed the connection".into())),
            }
        }
    }

    /// Takes part in the next round with `update` (the model delta, the model's length)
    /// and `weight` (used only when the server runs without DP; e.g. the number of
    /// local examples). Returns when a round completed with this client's input in the
    /// sum; an attempt the server aborts is followed into its retry (up to
    /// [`ClientOptions::max_attempts_per_round`]).
    pub async fn submit(&mut self, update: ArrayView1<'_, f32>, weight: f32) -> Result<RoundReport, SdkError> {
        let update = update.to_vec();
        self.take_part(|_| Ok::<_, String>((update.clone(), weight))).await
    }

    /// Takes part in the next round: `train` gets the current global model and returns
    /// the update (the change to the model, same length).
    pub async fn round_with<F, E>(&mut self, mut train: F) -> Result<RoundReport, SdkError>
    where
        F: FnMut(ArrayView1<'_, f32>) -> Result<Array1<f32>, E>,
        E: std::fmt::Display,
    {
        self.take_part(|settings| train(ArrayView1::from(&settings.model)).map(|u| (u.to_vec(), 1.0))).await
    }

    /// Testing only: vanish at `point` in later rounds (`None`: stay).
    #[cfg(feature = "testing")]
    pub fn set_drop_point(&mut self, point: Option<privagg_protocol::DropPoint>) {
        self.options.drop_point = point;
        self.session.set_drop_point(point);
    }

    /// Takes part in every round until the session ends: `train` gets the current
    /// global model and returns the update. Rounds that abort, or that this client loses
    /// its connection in, are skipped (after reconnecting); other errors end the loop.
    /// Returns each round's report once every round of the session completed; a session
    /// that ended otherwise (the server's budget, a failed round, a shutdown) is
    /// [`SdkError::SessionEnded`], with the reports.
    ///
    /// Training runs before the client joins the round's key phases, within the
    /// round's training time ([`RoundContext::train_timeout`]). On a multi-threaded
    /// runtime it runs in place of the async task (`block_in_place`), so a long closure
    /// stalls no other task; on a current-thread runtime it blocks the runtime.
    pub async fn run<F, E>(&mut self, mut train: F) -> Result<Vec<RoundReport>, SdkError>
    where
        F: FnMut(ArrayView1<'_, f32>) -> Result<Array1<f32>, E>,
        E: std::fmt::Display,
    {
        self.run_with(|round| train(round.model).map(|u| (u, 1.0))).await
    }

    /// Like [`Client::run`], with `train` also returning the update's weight (used when
    /// the server runs without DP).
    pub async fn run_weighted<F, E>(&mut self, mut train: F) -> Result<Vec<RoundReport>, SdkError>
    where
        F: FnMut(ArrayView1<'_, f32>) -> Result<(Array1<f32>, f32), E>,
        E: std::fmt::Display,
    {
        self.run_with(|round| train(round.model)).await
    }

    /// Like [`Client::run_weighted`], with `train` seeing the whole [`RoundContext`]
    /// (round number, DP or not, the training deadline, the settings).
    pub async fn run_with<F, E>(&mut self, mut train: F) -> Result<Vec<RoundReport>, SdkError>
    where
        F: FnMut(RoundContext<'_>) -> Result<(Array1<f32>, f32), E>,
        E: std::fmt::Display,
    {
        let mut reports = Vec::new();
        loop {
            let result =
                self.take_part(|settings| train(RoundContext::of(settings)).map(|(u, w)| (u.to_vec(), w))).await;
            match result {
                Ok(report) => reports.push(report),
                Err(SdkError::SessionEnded { end: EndReason::Complete, .. }) => return Ok(reports),
                Err(SdkError::SessionEnded { completed_rounds, end, reason, .. }) => {
                    return Err(SdkError::SessionEnded { completed_rounds, end, reason, reports });
                }
                Err(e) if e.is_round_local() => {
                    tracing::warn!(error = %e, "round lost; waiting for the next one");
                    if e.lost_connection() {
                        self.reconnect().await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A handle that interrupts this client while it trains (see [`Interrupt`]).
    pub fn interrupt_handle(&self) -> Interrupt {
        Interrupt(Arc::clone(&self.interrupted))
    }

    /// Closes the connection politely: what was sent is delivered first.
    pub async fn close(mut self) {
        self.link.close(0, "bye").await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    /// Runs one round. `provide` turns the round's settings into (update, weight), or
    /// says why it cannot. An attempt the server aborted (too few clients, a peer that
    /// broke the protocol, shares that did not rebuild a secret) is one the server runs
    /// again: the client takes part in the next attempt, within its own limit of attempts.
    async fn take_part<F, E>(&mut self, mut provide: F) -> Result<RoundReport, SdkError>
    where
        F: FnMut(&RoundSettings) -> Result<(Vec<f32>, f32), E>,
        E: std::fmt::Display,
    {
        let mut encoding: Option<JoinHandle<Encoded>> = None;
        self.session.request_round(unix_now());
        loop {
            match self.perform_actions(&mut provide, &mut encoding).await {
                Some(Err(SdkError::Round(RoundError::Aborted { code, detail }))) if code != AbortCode::Shutdown => {
                    tracing::info!(?code, %detail, "attempt aborted; waiting for the retry");
                    self.session.request_round(unix_now());
                }
                Some(end) => return end,
                None => self.next_input(&mut encoding).await?,
            }
        }
    }

    /// Carries out the session's actions; returns the round's end once it ended.
    async fn perform_actions<F, E>(
        &mut self,
        provide: &mut F,
        encoding: &mut Option<JoinHandle<Encoded>>,
    ) -> Option<Result<RoundReport, SdkError>>
    where
        F: FnMut(&RoundSettings) -> Result<(Vec<f32>, f32), E>,
        E: std::fmt::Display,
    {
        while let Some(action) = self.pending.pop_front().or_else(|| self.session.poll_action()) {
            match action {
                ClientAction::Send(frame) => self.send(&frame).await,
                ClientAction::Train(settings) => {
                    let key = TrainedFor::of(&settings);
                    let cached = self.trained.take().filter(|(k, _)| *k == key);
                    let result = match cached {
                        // A retry of the round, on the same model: what training gave last time.
                        Some((_, result)) => Ok(result),
                        None => off_the_runtime(|| provide(&settings)).map_err(|e| e.to_string()),
                    };
                    if self.interrupted.load(Ordering::Acquire) {
                        self.link.connection.close(quinn::VarInt::from_u32(0), b"interrupted");
                        return Some(Err(SdkError::Interrupted));
                    }
                    match result {
                        Ok((update, weight)) => {
                            self.trained = Some((key, (update.clone(), weight)));
                            self.session.provide_update(update, weight)
                        }
                        Err(e) => self.session.abandon_round(&e),
                    }
                }
                // Encoding overlaps the key exchange; masking is needed before anything else.
                ClientAction::Remember(memory) => {
                    if let Err(e) = self.memory.store(&memory) {
                        return Some(Err(e));
                    }
                }
                ClientAction::Encode(job) => *encoding = Some(tokio::task::spawn_blocking(move || job.run())),
                ClientAction::Mask(job) => match tokio::task::spawn_blocking(move || job.run()).await {
                    Ok(masked) => self.session.handle_masked(masked),
                    Err(e) => return Some(Err(SdkError::Local(e.to_string()))),
                },
                #[cfg(feature = "testing")]
                ClientAction::Vanish if self.options.stall => {
                    self.set_drop_point(None);
                    // Read and ignore whatever comes until the connection is gone.
                    while let Some(Ok(_)) = self.link.frames.recv().await {}
                    self.session.handle_connection_lost();
                    return Some(Err(SdkError::ConnectionLost(
                        "stalled on purpose (testing) until the connection was lost".into(),
                    )));
                }
                #[cfg(feature = "testing")]
                ClientAction::Vanish => {
                    self.link.close(1, "testing dropout").await;
                    return Some(Err(SdkError::TestingDropout));
                }
                ClientAction::Event(event) => match event {
                    ClientEvent::Admitted => {}
                    ClientEvent::Refused(reason) => return Some(Err(SdkError::Refused(reason))),
                    ClientEvent::RoundCompleted(summary) => return Some(Ok(summary.into())),
                    ClientEvent::RoundFailed(e) => return Some(Err(e.into())),
                    ClientEvent::SessionEnded { completed_rounds, end, reason } => {
                        return Some(Err(SdkError::SessionEnded {
                            completed_rounds,
                            end,
                            reason,
                            reports: Vec::new(),
                        }));
                    }
                },
            }
        }
        None
    }

    /// Waits for the next frame or the end of the encoding job. A lost connection is
    /// re-established with the same identity, and the session resends what the server
    /// lacks (the resend rule).
    async fn next_input(&mut self, encoding: &mut Option<JoinHandle<Encoded>>) -> Result<(), SdkError> {
        let encoded = async {
            match encoding.as_mut() {
                Some(job) => job.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = self.link.frames.recv() => match frame {
                Some(Ok(frame)) => {
                    self.cap_frames_after(&frame);
                    self.session.set_clock(unix_now());
                    // Small frames (a grant, an abort, a small round's messages) are cheap
                    // to handle and must not queue behind other clients' protocol steps.
                    if frame.len() < COSTLY_FRAME {
                        self.session.handle_frame(frame)
                    } else {
                        let session = &mut self.session;
                        protocol_work(|| session.handle_frame(frame)).await
                    }
                }
                Some(Err(WireError::Frame(e))) => return Err(SdkError::Frame(e)),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "connection lost; reconnecting");
                    self.reconnect_mid_round().await?;
                }
                None => {
                    self.session.handle_connection_lost();
                    return Err(SdkError::ConnectionLost("the server closed the connection".into()));
                }
            },
            encoded = encoded => {
                *encoding = None;
                self.session.handle_encoded(encoded.map_err(|e| SdkError::Local(e.to_string()))?);
            }
        }
        Ok(())
    }

    async fn reconnect_mid_round(&mut self) -> Result<(), SdkError> {
        self.session.handle_connection_lost();
        self.link = Link::open(&self.endpoint, &self.options, &self.frame_limit).await?;
        self.session.handle_connected();
        Ok(())
    }

    /// Writes a frame; a failure shows up as a lost connection on the reader's side.
    async fn send(&mut self, frame: &Frame) {
        if let Err(e) = quic::write_frame(&mut self.link.send, frame).await {
            tracing::debug!(error = %e, "write failed");
        }
    }
}

/// Frames from this size on (a key list or relayed shares of a large round: work in
/// proportion to their size) are handled through [`protocol_work`].
const COSTLY_FRAME: usize = 64 << 10;

/// Runs a round's protocol step (key agreement with every neighbour, sealing and opening
/// envelopes, checking shares against their commitments: up to a second of CPU at
/// k = 300) off the async workers, and at most one step per core at a time across every
/// client of this process.
///
/// Why both: a step run on a worker stalls the connections' own tasks (acknowledgements,
/// keep-alives) queued behind it, and many clients in one process (a simulation, the
/// benchmark harness) computing at once starved them past the idle timeout, so the
/// server saw connections lost in mid-round. Unbounded `block_in_place` would instead
/// start a thread per computing client and share the cores among hundreds of them.
async fn protocol_work<T>(work: impl FnOnce() -> T) -> T {
    static CORES: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let cores = CORES.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    });
    // The semaphore is never closed, so the permit is always granted.
    let _permit = cores.acquire().await.ok();
    off_the_runtime(work)
}

/// Runs long synchronous work (a training step, a protocol step) where it cannot stall
/// the async runtime: in place of the current task on a multi-threaded runtime (its other
/// tasks move to other workers), inline on a current-thread runtime (which
/// `block_in_place` does not allow).
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// What identifies this client to the server across restarts: its certificate, or its
/// token; `None` if it has neither (a random identity per connection).
fn stable_identity(options: &ClientOptions) -> Option<Vec<u8>> {
    match (&options.cert, &options.token) {
        (Some(cert), _) => Some([b"certificate:".as_slice(), cert].concat()),
        (None, Some(token)) => Some([b"token:".as_slice(), token.as_bytes()].concat()),
        (None, None) => None,
    }
}

impl Drop for Client {
    /// A client dropped without [`Client::close`] still closes its connection, so the
    /// server drops it from a round at once instead of waiting for the idle timeout.
    fn drop(&mut self) {
        self.link.connection.close(quinn::VarInt::from_u32(0), b"client dropped");
    }
}

/// The seconds since the Unix epoch (0 if the clock is before it, which no certificate
/// is valid at).
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The protocol identity the options describe: the certificate, its key and the root
/// that certifies peers, all three or none. A policy that assumes a malicious server
/// needs them; only a client that trusts its server may go without.
fn credentials(options: &ClientOptions) -> Result<Option<Identity>, SdkError> {
    let (cert, key, root) = match (&options.cert, &options.key, &options.client_ca) {
        (Some(cert), Some(key), Some(root)) => (cert, key, root),
        (None, None, None) if options.policy.server == AdversaryClass::CuriousServer => return Ok(None),
        (None, None, None) => {
            return Err(SdkError::Identity(
                "a client that assumes a malicious server needs a certificate, its key and the enrollment authority's root (or the curious-server policy, which trusts the server)".into(),
            ));
        }
        _ => return Err(SdkError::Identity("the certificate, its key and the authority's root go together".into())),
    };
    Identity::from_der(cert, key.as_der(), root, unix_now()).map(Some).map_err(|e| SdkError::Identity(e.to_string()))
}

//! # privagg-server
//!
//! The aggregation server: it listens on QUIC (ALPN `privagg/1`), runs a session of
//! secure-aggregation rounds, turns each round's sum into a FedAvg step on the global
//! model, and commits the model and a record of the round after each one.
//!
//! It is the async shell of `privagg-service`'s [`ServerSession`], which makes every
//! decision (admission, seats, reconnection, upload grants, deadlines, the protocol):
//!
//! ```text
//!   connection tasks ──frames, closes──▶ driver ──▶ ServerSession (privagg-service)
//!   (one per client)  ◀──frames, limits── (one task)     │ actions
//!                                            │           ▼
//!                                            └──▶ Training: plan a round, remove the
//!                                                 masks (blocking pool), FedAvg, commit
//! ```
//!
//! * Connection tasks read and write frames; they hold no protocol state. One driver
//!   task owns the session and the model, so nothing needs a lock.
//! * Every phase has a deadline; a client that misses it, disconnects, or sends a
//!   malformed, oversized, out-of-phase or wrongly sized message is dropped from the
//!   round with a recorded reason, and the others finish.
//! * Memory stays O(m + n·k): masked inputs are added to the running sum as they
//!   arrive, clients upload only when granted an upload slot (as many as the upload
//!   memory budget holds), and the model goes to every client from one shared buffer
//!   through a pool of download slots.
//! * No client can hold what others need: every write, frame read and upload grant has
//!   a deadline, a client that stalls one is dropped and its connection closed, repeat
//!   offenders are banned for the session, and connections awaiting admission are
//!   capped (overall and per address) with small receive windows and a short hello
//!   deadline (RELIABILITY.md).
//! * After round r the model (`model-<r>.npy`) and record (`round-<r>.json`) are written
//!   atomically, and only then do the round's clients hear that it completed; a restart
//!   resumes after the last committed round.
//!
//! With DP on, each round's FedAvg divides by the configured cohort size (a public
//! constant, as DP-FedAvg requires), and the privacy ledger in each record gives ε so far.
//!
//! [`ServerSession`]: privagg_service::ServerSession

pub mod aggregation;
pub mod bans;
pub mod config;
mod connection;
mod driver;
mod error;
pub mod record;
pub mod round_log;
pub mod storage;
pub mod tls;
mod training;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use privagg_protocol::Limits;
use privagg_service::frame::upload_frame_limit;
use privagg_service::server::CheckInConfig;
use privagg_service::{Admission, ConnId, ServerSession, SessionConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

pub use config::{ServeConfig, Threat};
pub use driver::{Deviation, ServerEvent};
pub use error::ServeError;
pub use privagg_service::SessionEvent;
pub use record::RoundRecord;
pub use training::{Resume, SessionSummary};

use crate::aggregation::{Aggregation, session_graph};
use crate::connection::{ConnEvent, serve_connection};
use crate::driver::Driver;
use crate::storage::{StateDir, read_vector};
use crate::tls::ServerCertificate;
use crate::training::Training;

/// How long the server waits, after its session, for clients to receive their goodbye:
/// as long as one connection's graceful close may take (the client's acknowledgement of
/// what was sent, then its own close). The 3 s it used to be cut those closes short on a
/// lossy path: at n = 300, 100 ms RTT and 2 % loss (RELIABILITY.md, "Network
/// impairment") the server exited 3 s after its last commit with a connection still open,
/// and a client whose input was in the sum failed with `server unreachable`. The wait
/// ends as soon as every connection is closed, well under a second on a healthy path.
const GOODBYE_GRACE: Duration =
    privagg_service::quic::CLOSE_GRACE.saturating_add(privagg_service::quic::PEER_CLOSE_GRACE);

/// A session ε above this draws a warning when the server starts.
const LARGE_EPSILON: f64 = 10.0;

/// A bound server, ready to run its session.
pub struct Server {
    /// The largest upload frame.
    upload: usize,
    config: Arc<ServeConfig>,
    endpoint: quinn::Endpoint,
    cert: Vec<u8>,
    admission: Admission,
    aggregation: Aggregation,
    storage: StateDir,
    /// Held until the server is dropped: one server per state directory.
    _lock: storage::StateLock,
    resume: Resume,
    observer: Option<mpsc::UnboundedSender<ServerEvent>>,
    shutdown: (watch::Sender<bool>, watch::Receiver<bool>),
    deviation: Option<Deviation>,
}

/// Stops a running server: the current round aborts and clients are told.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Asks the server to stop.
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

impl Server {
    /// Checks the configuration, plans the session, loads or creates the certificate
    /// and the last checkpoint, and binds the UDP socket. Must run inside a tokio
    /// runtime.
    pub async fn bind(config: ServeConfig) -> Result<Self, ServeError> {
        config.validate()?;
        // Plan before touching the state directory: a refused configuration leaves nothing.
        let aggregation = Aggregation::new(&config)?;
        // Refuse now a cohort whose neighbour graph cannot be made safe.
        session_graph(&config)?;
        let storage = StateDir::open(&config.state)?;
        let lock = storage.lock()?;
        let certificate = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => {
                let certificate = ServerCertificate::load(cert, key)?;
                storage::write_atomically(&tls::cert_path(storage.path()), &certificate.cert)?;
                certificate
            }
            _ => ServerCertificate::load_or_generate(storage.path())?,
        };
        let client_root = match &config.client_ca {
            Some(path) => Some(std::fs::read(path).map_err(|e| ServeError::io(path, e))?),
            None => None,
        };
        let admission = match (&config.tokens, &client_root) {
            (_, Some(_)) => Admission::certificates(),
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|e| ServeError::io(path, e))?;
                Admission::from_token_file(&text)
                    .ok_or_else(|| ServeError::Config(format!("{} holds no tokens", path.display())))?
            }
            // `validate` refused this without the opt-in.
            (None, None) => {
                tracing::warn!(
                    "--insecure-open-admission: admitting any client with any number of identities (local trials only)"
                );
                Admission::open()
            }
        };
        if let Some(summary) = aggregation.summary() {
            let s = summary?;
            tracing::info!(
                epsilon = s.epsilon,
                delta = s.delta,
                rounds = s.rounds,
                zcdp_rho = s.zcdp_rho,
                gamma = s.gamma,
                bits = s.bits,
                noise_multiplier = s.noise_multiplier,
                effective_noise_multiplier = s.effective_noise_multiplier,
                colluders = s.colluders,
                sensitivity_inflation = s.sensitivity_inflation,
                tau_dim = s.tau_dim,
                "DP plan for the session (ε against the server; `privagg plan` prints it all)"
            );
            if s.epsilon > LARGE_EPSILON {
                tracing::warn!(
                    epsilon = s.epsilon,
                    "ε over the session is above {LARGE_EPSILON}: a weak guarantee against the server; a larger --noise-multiplier, fewer --rounds or more --min-clients lower it"
                );
            }
            if let Some(c) = &s.check_ins {
                tracing::info!(
                    rate = c.rate,
                    epsilon = c.epsilon,
                    delta = c.delta,
                    "random check-ins: ε against those who see only the released models"
                );
            }
        }
        let resume = resume(&config, &storage)?;
        let upload = upload_frame_limit(aggregation.protocol_dim() as u32, aggregation.bits());
        let mut server_config = certificate.server_config(upload, config.idle_timeout(), client_root.as_deref())?;
        // Connection attempts quinn holds before the accept loop takes them.
        server_config.max_incoming(config.max_unadmitted.saturating_mul(2).max(64));
        let endpoint = quinn::Endpoint::server(server_config, config.listen)
            .map_err(|source| ServeError::Bind { addr: config.listen, source })?;
        Ok(Self {
            upload,
            config: Arc::new(config),
            endpoint,
            cert: certificate.cert,
            admission,
            aggregation,
            storage,
            _lock: lock,
            resume,
            observer: None,
            shutdown: watch::channel(false),
            deviation: None,
        })
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.endpoint.local_addr().map_err(|source| ServeError::Bind { addr: self.config.listen, source })
    }

    /// The server's certificate (DER), which clients pin.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert
    }

    /// Round and phase events, for progress displays.
    pub fn subscribe(&mut self) -> mpsc::UnboundedReceiver<ServerEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.observer = Some(tx);
        rx
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.0.clone())
    }

    /// Makes this server deviate from the protocol as `deviation` says (see
    /// [`Deviation`]): for tests that play a malicious server against real clients.
    pub fn deviate(&mut self, deviation: Deviation) {
        self.deviation = Some(deviation);
    }

    /// Runs the session to its end: every configured round completed (or the budget,
    /// a failing round or a shutdown ended it).
    pub async fn run(self) -> Result<SessionSummary, ServeError> {
        let c = &self.config;
        let mut session = ServerSession::new(SessionConfig {
            clients: c.clients,
            min_clients: c.min_clients,
            rounds: c.rounds,
            completed_rounds: self.resume.completed,
            phase_timeout: c.phase_timeout(),
            train_timeout: c.train_timeout(),
            lobby_timeout: c.lobby_timeout(),
            hello_timeout: c.hello_timeout(),
            upload_slots: c.effective_upload_slots(self.upload),
            upload_timeout: Some(c.transfer_deadline(self.upload)),
            ban_after: c.ban_after,
            ban_duration: c.ban_duration.map(Duration::from_secs_f64),
            max_round_attempts: c.max_round_attempts,
            stop_after_failed_round: c.stop_after_failed_round,
            retry_backoff: Duration::from_secs_f64(c.retry_backoff),
            admission: self.admission,
            // Clients never send a Config, so they may send no application payload.
            limits: Limits { max_app_data: 0, ..Limits::default() },
            check_ins: c.check_in_rate_ppb().map(|rate_ppb| CheckInConfig { rate_ppb, max_cohort: c.largest_cohort() }),
        });
        // Bans from before a restart, for what is left of them.
        let now = SystemTime::now();
        for ban in bans::load(self.storage.path(), now)? {
            let Some(identity) = ban.client() else {
                tracing::warn!(identity = %ban.identity, "{}: not an identity's digest; ignored", bans::BANS_FILE);
                continue;
            };
            if let Some(remaining) = ban.remaining(now) {
                session.restore_ban(identity, ban.offence(), remaining, Instant::now());
            }
        }
        let (events_tx, events) = mpsc::channel(256);
        let shell = Arc::new(Shell {
            config: self.config.clone(),
            download_slots: Semaphore::new(c.download_slots),
            unadmitted: Arc::new(Semaphore::new(c.max_unadmitted)),
            per_address: Mutex::new(HashMap::new()),
        });
        let accept = tokio::spawn(accept_loop(self.endpoint.clone(), events_tx, shell));
        let training = Training::new(self.config.clone(), self.aggregation, self.storage, self.resume)?;
        session.set_log(training.log_state());
        let driver = Driver {
            session,
            training,
            conns: HashMap::new(),
            events,
            observer: self.observer,
            shutdown: self.shutdown.1,
            deviation: self.deviation,
        };
        let result = driver.run().await;
        accept.abort();
        // Connections close once their goodbye is delivered; then the endpoint goes.
        let _ = tokio::time::timeout(GOODBYE_GRACE, self.endpoint.wait_idle()).await;
        self.endpoint.close(quinn::VarInt::from_u32(0), b"session over");
        result
    }
}

/// Where the state directory says the session stands.
fn resume(config: &ServeConfig, storage: &StateDir) -> Result<Resume, ServeError> {
    let momentum_on = config.server_momentum > 0.0;
    let uncommitted = storage.remove_uncommitted()?;
    if !uncommitted.is_empty() {
        tracing::warn!(
            ?uncommitted,
            "removed the model files of rounds that never committed (their releases stay charged)"
        );
    }
    let ledger = storage.load_ledger()?;
    let completed = storage.last_completed_round()?.unwrap_or(0);
    storage.check_plan(&config.plan(), completed, config.force_resume)?;
    let mut resume = match storage.load_latest(config.dim, momentum_on)? {
        Some(checkpoint) => {
            tracing::info!(
                round = checkpoint.round,
                releases = ledger.releases.len(),
                "resuming after the last committed round"
            );
            // The ledger only grows, and each round's record says how many releases it
            // held then: fewer now means it was rolled back (or lost).
            let recorded = checkpoint.record.as_ref().and_then(|r| r.privacy.as_ref()).map(|p| p.releases);
            if let Some(recorded) = recorded.filter(|&n| n > ledger.releases.len()) {
                return Err(ServeError::Model(format!(
                    "{} holds DP rounds that had charged {recorded} releases, but {} lists {}: what they spent is unknown",
                    storage.path().display(),
                    storage::LEDGER_FILE,
                    ledger.releases.len()
                )));
            }
            let clip = checkpoint.record.as_ref().and_then(|r| r.clip).map(|c| c.next_clip);
            Resume { completed: checkpoint.round, model: checkpoint.model, momentum: checkpoint.momentum, ledger, clip }
        }
        None => Resume { model: initial_model(config)?, ledger, ..Resume::default() },
    };
    if momentum_on && resume.momentum.is_none() {
        resume.momentum = Some(vec![0.0; config.dim]);
    }
    Ok(resume)
}

fn initial_model(config: &ServeConfig) -> Result<Vec<f32>, ServeError> {
    match &config.model_init {
        None => Ok(vec![0.0; config.dim]),
        Some(path) => {
            let model = read_vector(path)?;
            if model.len() != config.dim {
                return Err(ServeError::Model(format!(
                    "{} has {} values, but --dim is {}",
                    path.display(),
                    model.len(),
                    config.dim
                )));
            }
            if model.iter().any(|v| !v.is_finite()) {
                return Err(ServeError::Model(format!("{} holds NaN or infinity", path.display())));
            }
            Ok(model)
        }
    }
}

/// What the connection tasks share: the configuration, the download slots, and the
/// bounds on connections not yet admitted.
pub(crate) struct Shell {
    pub config: Arc<ServeConfig>,
    /// Model downloads written at once.
    pub download_slots: Semaphore,
    /// Connections not yet admitted.
    pub unadmitted: Arc<Semaphore>,
    /// Connections not yet admitted, per IP address.
    pub per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's claim on the pre-admission budget: one of `max_unadmitted` permits and
/// one of its address's `max_unadmitted_per_address`. Dropped on admission or close.
pub(crate) struct Unadmitted {
    _permit: OwnedSemaphorePermit,
    addr: IpAddr,
    shell: Arc<Shell>,
}

impl Drop for Unadmitted {
    fn drop(&mut self) {
        Self::forget(self.addr, &self.shell);
    }
}

/// Takes the next connection attempts: over the per-address bound they are refused;
/// when half the pre-admission budget is in use, unvalidated addresses must first
/// answer a QUIC Retry (proving they receive at their source address); then each waits
/// (at most the hello timeout) for a pre-admission permit.
async fn accept_loop(endpoint: quinn::Endpoint, events: mpsc::Sender<ConnEvent>, shell: Arc<Shell>) {
    let mut next: ConnId = 0;
    while let Some(incoming) = endpoint.accept().await {
        let addr = incoming.remote_address().ip();
        let busy = shell.unadmitted.available_permits() < shell.config.max_unadmitted / 2;
        if busy && !incoming.remote_address_validated() && incoming.may_retry() {
            if let Err(e) = incoming.retry() {
                tracing::debug!(error = %e, "retry failed");
            }
            continue;
        }
        {
            let mut counts = shell.per_address.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = counts.entry(addr).or_insert(0);
            if *n >= shell.config.max_unadmitted_per_address {
                drop(counts);
                tracing::debug!(%addr, "too many connections awaiting admission from this address; refused");
                incoming.refuse();
                continue;
            }
            *n += 1;
        }
        next += 1;
        let (conn, events, shell) = (next, events.clone(), shell.clone());
        tokio::spawn(async move {
            let permit = match shell.unadmitted.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => tokio::time::timeout(shell.config.hello_timeout(), shell.unadmitted.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok),
            };
            let Some(permit) = permit else {
                // Count the attempt out of the address's budget, then refuse it.
                Unadmitted::forget(addr, &shell);
                tracing::debug!(%addr, "too many connections awaiting admission; refused");
                incoming.refuse();
                return;
            };
            let claim = Unadmitted { _permit: permit, addr, shell: shell.clone() };
            serve_connection(incoming, conn, events, shell, claim).await;
        });
    }
}

impl Unadmitted {
    /// Gives back the per-address count of an attempt that got no permit.
    fn forget(addr: IpAddr, shell: &Shell) {
        let mut counts = shell.per_address.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&addr);
            }
        }
    }
}

//! # privagg-server
//!
//! The aggregation server: it listens on QUIC (ALPN `privagg/1`), admits clients, runs a
//! session of secure-aggregation rounds with the `privagg-protocol` state machine, turns
//! each round's sum into a FedAvg step on the global model, and commits the model and a
//! record of the round after each one.
//!
//! ```text
//!   connection tasks ──decoded frames──▶ driver (owns lobby, ServerRound, model)
//!         ▲                                   │
//!         └───────────── frames ◀─────────────┘
//! ```
//!
//! * One task per connection reads frames, decodes them and forwards them; it holds no
//!   protocol state. One driver task owns the round's [`privagg_protocol::ServerRound`],
//!   so nothing needs a lock around it.
//! * Every phase has a deadline; a client that misses it, disconnects, or sends a
//!   malformed, oversized, out-of-phase or wrongly sized message is dropped from the
//!   round with a recorded reason, and the others finish.
//! * Memory stays O(m + n·k): masked inputs are added to the running sum as they
//!   arrive, and clients upload only when granted one of a few upload slots, so at most
//!   that many vectors are in flight however many clients there are.
//! * After round r the model (`model-<r>.npy`) and record (`round-<r>.json`) are written
//!   atomically; a restart resumes after the last committed round.
//!
//! With DP on, each round's FedAvg divides by the configured cohort size (a public
//! constant, as DP-FedAvg requires), and the privacy ledger in each record gives ε so far.

pub mod admission;
pub mod aggregation;
pub mod config;
mod connection;
pub mod demo;
mod driver;
mod error;
pub mod record;
pub mod storage;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use privagg_protocol::Limits;
use tokio::sync::{Semaphore, mpsc, watch};

pub use config::ServeConfig;
pub use driver::{ServerEvent, SessionSummary, phase_name};
pub use error::ServeError;
pub use record::RoundRecord;

use crate::admission::Admission;
use crate::aggregation::{Aggregation, graph_for};
use crate::connection::{ConnId, Shared, serve_connection};
use crate::driver::{Driver, Resume};
use crate::storage::{StateDir, read_vector};
use crate::tls::Identity;

/// A bound server, ready to run its session.
pub struct Server {
    config: Arc<ServeConfig>,
    endpoint: quinn::Endpoint,
    cert: Vec<u8>,
    admission: Arc<Admission>,
    aggregation: Aggregation,
    storage: StateDir,
    resume: Resume,
    observer: Option<mpsc::UnboundedSender<ServerEvent>>,
    shutdown: (watch::Sender<bool>, watch::Receiver<bool>),
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
        let storage = StateDir::open(&config.state)?;
        let identity = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => {
                let identity = Identity::load(cert, key)?;
                storage::write_atomically(&tls::cert_path(storage.path()), &identity.cert)?;
                identity
            }
            _ => Identity::load_or_generate(storage.path())?,
        };
        let admission = match &config.tokens {
            Some(path) => Admission::from_file(path)?,
            None => {
                tracing::warn!("no token file: admitting any client (for local trials only)");
                Admission::open()
            }
        };
        let aggregation = Aggregation::new(&config)?;
        // Refuse now a cohort whose neighbour graph cannot be made safe.
        graph_for(config.clients, config.min_clients, config.neighbors, config.corrupt_fraction)?;
        if let Some(plan) = aggregation.plan() {
            tracing::info!(
                gamma = plan.gamma,
                bits = plan.input.bits,
                noise_multiplier = plan.noise_multiplier,
                effective_noise_multiplier = plan.effective_noise_multiplier,
                sensitivity_inflation = plan.sensitivity_inflation,
                epsilon = plan.epsilon,
                delta = plan.input.delta,
                "DP plan for the session"
            );
        }
        let momentum_on = config.server_momentum > 0.0;
        let mut resume = match storage.load_latest(config.dim, momentum_on)? {
            Some(checkpoint) => {
                tracing::info!(round = checkpoint.round, "resuming after the last committed round");
                Resume {
                    completed: checkpoint.round,
                    model: checkpoint.model,
                    momentum: checkpoint.momentum,
                    ledger: checkpoint.record.and_then(|r| r.privacy).map(|p| p.ledger).unwrap_or_default(),
                }
            }
            None => Resume { model: initial_model(&config)?, ..Resume::default() },
        };
        if momentum_on && resume.momentum.is_none() {
            resume.momentum = Some(vec![0.0; config.dim]);
        }
        let upload = 4 + 5 + privagg_protocol::packed_len(aggregation.protocol_dim() as u32, aggregation.bits()) + 16;
        let server_config =
            identity.server_config(upload.max(privagg_client::wire::MAX_CONTROL_FRAME), config.idle_timeout())?;
        let endpoint = quinn::Endpoint::server(server_config, config.listen)
            .map_err(|source| ServeError::Bind { addr: config.listen, source })?;
        Ok(Self {
            config: Arc::new(config),
            endpoint,
            cert: identity.cert,
            admission: Arc::new(admission),
            aggregation,
            storage,
            resume,
            observer: None,
            shutdown: watch::channel(false),
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

    /// Runs the session to its end: every configured round completed (or the budget,
    /// a failing round or a shutdown ended it).
    pub async fn run(self) -> Result<SessionSummary, ServeError> {
        let (events_tx, events_rx) = mpsc::channel(256);
        let shared = Shared {
            admission: self.admission,
            events: events_tx,
            download_slots: Arc::new(Semaphore::new(self.config.upload_slots)),
            limits: Limits { max_app_data: 0, ..Limits::default() },
            hello_timeout: self.config.phase_timeout(),
        };
        let accept = tokio::spawn(accept_loop(self.endpoint.clone(), shared));
        let driver = Driver::new(
            self.config,
            self.aggregation,
            self.storage,
            events_rx,
            self.observer,
            self.shutdown.1,
            self.resume,
        );
        let result = driver.run().await;
        accept.abort();
        self.endpoint.close(quinn::VarInt::from_u32(0), b"session over");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        result
    }
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

async fn accept_loop(endpoint: quinn::Endpoint, shared: Shared) {
    let mut next: ConnId = 0;
    while let Some(incoming) = endpoint.accept().await {
        next += 1;
        tokio::spawn(serve_connection(incoming, next, shared.clone()));
    }
}

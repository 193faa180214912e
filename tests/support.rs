//! Shared helpers of the end-to-end tests: a server on an ephemeral loopback port with
//! its own state directory, and clients that connect to it. As in a deployment that
//! assumes a malicious server, clients hold certificates from an enrollment authority of
//! the test's, unless the test runs the server as `Threat::Curious` or brings its own.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use privagg_ca::Authority;
use privagg_client::{Client, ClientOptions, PrivateKey};
use privagg_protocol::AdversaryClass;
use privagg_server::{Deviation, ServeConfig, ServeError, Server, ServerEvent, SessionSummary, Threat};
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Upper bound on any test's wait, so a bug fails the test instead of hanging CI.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A fresh state directory under the system temp dir.
pub fn state_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("privagg-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Leaves `state` as a crash between finalize and commit of `round` (its last, ≥ 2)
/// would have: the model file written, but not the record, nor the round's log leaf and
/// checkpoint (the log is written after the record).
pub fn uncommit(state: &std::path::Path, round: u64) {
    let log = state.join("log");
    std::fs::remove_file(state.join(format!("round-{round}.json"))).unwrap();
    std::fs::remove_file(log.join(format!("leaf-{}.json", round - 1))).unwrap();
    std::fs::remove_file(log.join(format!("checkpoint-{round}"))).unwrap();
    std::fs::copy(log.join(format!("checkpoint-{}", round - 1)), log.join("checkpoint")).unwrap();
}

/// A configuration for tests: ephemeral port, short deadlines, DP off unless changed.
pub fn config(name: &str, dim: usize, clients: u32, min_clients: u32) -> ServeConfig {
    let mut c = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        state: state_dir(name),
        dim,
        clients,
        min_clients,
        rounds: 1,
        phase_timeout: 10.0,
        train_timeout: 10.0,
        lobby_timeout: 10.0,
        ..ServeConfig::default()
    };
    c.dp.enabled = false;
    c
}

/// A running server.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate.
    pub cert: Vec<u8>,
    /// Its events.
    pub events: mpsc::UnboundedReceiver<ServerEvent>,
    /// Stops it.
    pub shutdown: privagg_server::ShutdownHandle,
    /// Its task.
    pub task: JoinHandle<Result<SessionSummary, ServeError>>,
    /// What the server assumes of itself; its clients assume the same.
    pub threat: Threat,
    /// The authority that certifies the clients, unless the test brought its own.
    pub authority: Option<Arc<Authority>>,
    /// Whether the server runs with DP; without, its clients opt out of requiring it.
    pub dp: bool,
}

impl Running {
    /// Options for a client of this server (remembering rounds in a directory of the
    /// test's, never the user's).
    /// With the test's authority, each call issues the client a certificate of its own;
    /// against a curious server the client assumes a curious server.
    pub fn options(&self) -> ClientOptions {
        static ISSUED: AtomicUsize = AtomicUsize::new(0);
        let mut o = ClientOptions::new(self.addr, self.cert.clone());
        o.connect_deadline = Duration::from_secs(10);
        o.state_dir = Some(std::env::temp_dir().join(format!("privagg-e2e-client-state-{}", std::process::id())));
        if self.threat == Threat::Curious {
            o.policy.server = AdversaryClass::CuriousServer;
        }
        o.privacy.allow_no_dp = !self.dp;
        if let Some(authority) = &self.authority {
            let name = format!("client-{}", ISSUED.fetch_add(1, Ordering::Relaxed));
            let issued = authority.issue(&name, 1).unwrap();
            o.cert = Some(issued.cert);
            o.key = Some(PrivateKey::from_pkcs8_der(issued.key.to_vec()));
            o.client_ca = Some(authority.root_der().to_vec());
        }
        o
    }

    /// Waits for the session to end.
    pub async fn finish(self) -> SessionSummary {
        tokio::time::timeout(PATIENCE, self.task).await.expect("server timed out").unwrap().unwrap()
    }

    /// Waits for the next completed round.
    pub async fn next_record(&mut self) -> privagg_server::RoundRecord {
        loop {
            let event =
                tokio::time::timeout(PATIENCE, self.events.recv()).await.expect("no event").expect("server gone");
            if let ServerEvent::RoundCompleted(record) = event {
                return *record;
            }
        }
    }
}

/// Binds and starts a server; one that assumes a malicious server and has no client
/// root yet gets the test's own enrollment authority.
pub async fn start(config: ServeConfig) -> Running {
    start_deviating(config, None).await
}

/// [`start`], with a server that deviates from the protocol as `deviation` says.
pub async fn start_deviating(mut config: ServeConfig, deviation: Option<Deviation>) -> Running {
    let authority = (config.threat == Threat::Malicious && config.client_ca.is_none()).then(|| {
        let authority = Authority::create("privagg e2e authority", 1).unwrap();
        let root = config.state.with_extension("client-ca.der");
        std::fs::write(&root, authority.root_der()).unwrap();
        config.client_ca = Some(root);
        Arc::new(authority)
    });
    // A curious-server test with neither tokens nor certificates runs open admission,
    // which must be asked for.
    if config.tokens.is_none() && config.client_ca.is_none() {
        config.insecure_open_admission = true;
    }
    let (threat, dp) = (config.threat, config.dp.enabled);
    let mut server = Server::bind(config).await.unwrap();
    if let Some(deviation) = deviation {
        server.deviate(deviation);
    }
    let events = server.subscribe();
    Running {
        addr: server.local_addr().unwrap(),
        cert: server.cert_der().to_vec(),
        events,
        shutdown: server.shutdown_handle(),
        task: tokio::spawn(server.run()),
        threat,
        authority,
        dp,
    }
}

/// `n` random updates of length `dim` in [−1, 1], from a fixed seed.
pub fn updates(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| (0..dim).map(|_| rng.random_range(-1.0f32..=1.0)).collect()).collect()
}

/// Spawns a client that submits one update, with its options adjusted by `tweak`.
pub fn submit(
    running: &Running,
    update: Vec<f32>,
    weight: f32,
    tweak: impl FnOnce(&mut ClientOptions),
) -> JoinHandle<Result<privagg_client::RoundReport, privagg_client::SdkError>> {
    let mut options = running.options();
    tweak(&mut options);
    tokio::spawn(async move {
        let mut client = Client::connect(options).await?;
        let report = client.submit(ndarray::ArrayView1::from(&update), weight).await;
        client.close().await;
        report
    })
}

/// The mean of the given updates, coordinate by coordinate.
pub fn mean<'a>(updates: impl IntoIterator<Item = &'a Vec<f32>>) -> Vec<f64> {
    let mut sum: Vec<f64> = Vec::new();
    let mut count = 0.0;
    for u in updates {
        if sum.is_empty() {
            sum = vec![0.0; u.len()];
        }
        for (s, x) in sum.iter_mut().zip(u) {
            *s += f64::from(*x);
        }
        count += 1.0;
    }
    sum.iter().map(|s| s / count).collect()
}

/// Largest absolute difference between `model` and `expected`.
pub fn max_error(model: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(model.len(), expected.len());
    model.iter().zip(expected).map(|(m, e)| (f64::from(*m) - e).abs()).fold(0.0, f64::max)
}

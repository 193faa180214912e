//! `privagg demo`: a server and simulated clients in one process, over real QUIC on
//! loopback, training a linear model on synthetic non-IID data with DP on; one client
//! drops out in the middle of round 2 (after sharing its keys and before uploading, the
//! case that makes the server rebuild its masks) and rejoins for the next round.
//!
//! The data: features whose variance decays with the index (like real features of
//! decreasing importance), a shared true model on the leading features, and per-client
//! feature shifts and model drift, so no two clients see the same distribution. Each
//! client runs a few steps of gradient descent from the global model and submits the
//! difference; the server averages the clipped, noised updates.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array1, Array2, ArrayView1, Axis};
use privagg_client::{Client, ClientOptions, DropPoint, PrivateKey, SdkError};
use privagg_server::{RoundRecord, ServeConfig, Server, ServerEvent, SessionEvent};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use tokio::sync::mpsc::UnboundedReceiver;

/// What `privagg demo` runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Simulated clients.
    pub clients: u32,
    /// Rounds.
    pub rounds: u64,
    /// Model dimension.
    pub dim: usize,
    /// Examples per client.
    pub examples: usize,
    /// Seed of the synthetic data.
    pub seed: u64,
    /// Show progress bars.
    pub progress: bool,
    /// Adapt the clip to the median update norm (Andrew et al. 2021), starting from 1.
    pub adaptive_clip: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self { clients: 20, rounds: 5, dim: 10_000, examples: 40, seed: 7, progress: true, adaptive_clip: false }
    }
}

/// One line of the demo's output.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoRound {
    /// Round number.
    pub round: u64,
    /// Test loss of the model after the round.
    pub loss: f64,
    /// Inputs in the round's sum.
    pub survivors: usize,
    /// Clients seated.
    pub participants: u32,
    /// ε spent so far.
    pub epsilon: f64,
    /// With adaptive clipping: the round's clip and the noisy fraction of updates under it
    /// (`None` if the count was out of range and ignored).
    pub clip: Option<(f64, Option<f64>)>,
    /// Wall time of the round.
    pub seconds: f64,
}

/// Synthetic regression data for one client (or the test set).
struct Dataset {
    x: Array2<f32>,
    y: Array1<f32>,
}

impl Dataset {
    fn loss(&self, w: ArrayView1<'_, f32>) -> f64 {
        let r = self.x.dot(&w) - &self.y;
        0.5 * f64::from(r.dot(&r)) / self.y.len() as f64
    }

    /// A few steps of gradient descent from `w`; returns the change.
    fn local_update(&self, w: ArrayView1<'_, f32>) -> Array1<f32> {
        let mut local = w.to_owned();
        let m = self.y.len() as f32;
        for _ in 0..5 {
            let residual = self.x.dot(&local) - &self.y;
            let grad = self.x.t().dot(&residual) / m;
            local.scaled_add(-0.5, &grad);
        }
        local - w
    }
}

struct World {
    clients: Vec<Dataset>,
    test: Dataset,
}

/// Builds non-IID data: feature j has scale 1/(1 + j/10); the true model lives on the
/// first 20 features; client c shifts its features and its model by its own offsets.
fn world(options: &DemoOptions) -> World {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(options.seed);
    let d = options.dim;
    let scale: Vec<f32> = (0..d).map(|j| 1.0 / (1.0 + j as f32 / 10.0)).collect();
    let support = d.min(20);
    let truth: Vec<f32> = (0..d).map(|j| if j < support { normal(&mut rng) * 0.4 } else { 0.0 }).collect();
    let make = |n: usize, shift: &[f32], drift: &[f32], rng: &mut rand_chacha::ChaCha8Rng| {
        let mut x = Array2::<f32>::zeros((n, d));
        for mut row in x.axis_iter_mut(Axis(0)) {
            for j in 0..d {
                row[j] = (normal(rng) + shift[j]) * scale[j];
            }
        }
        let w: Array1<f32> = truth.iter().zip(drift).map(|(t, dr)| t + dr).collect();
        let y = x.dot(&w) + Array1::from_shape_fn(n, |_| normal(rng) * 0.05);
        Dataset { x, y }
    };
    let zero = vec![0.0f32; d];
    let clients = (0..options.clients)
        .map(|_| {
            let shift: Vec<f32> = (0..d).map(|j| if j < support { normal(&mut rng) * 0.8 } else { 0.0 }).collect();
            let drift: Vec<f32> = (0..d).map(|j| if j < support { normal(&mut rng) * 0.05 } else { 0.0 }).collect();
            make(options.examples, &shift, &drift, &mut rng)
        })
        .collect();
    let test = make(400, &zero, &zero, &mut rng);
    World { clients, test }
}

/// A standard normal draw (synthetic data, not a privacy mechanism).
fn normal(rng: &mut rand_chacha::ChaCha8Rng) -> f32 {
    StandardNormal.sample(rng)
}

/// Runs the demo; returns one line per round.
pub async fn run_demo(options: DemoOptions) -> Result<Vec<DemoRound>> {
    let state = std::env::temp_dir().join(format!("privagg-demo-{}-{}", std::process::id(), options.seed));
    let _ = std::fs::remove_dir_all(&state);
    // The demo is its own enrollment authority: every simulated client gets a certificate,
    // as a deployment's clients would from an authority apart from the server.
    let authority = privagg_ca::Authority::create("privagg demo authority", 1)?;
    let root = state.with_extension("client-ca.der");
    std::fs::write(&root, authority.root_der()).with_context(|| format!("cannot write {}", root.display()))?;
    let mut config = ServeConfig {
        listen: "127.0.0.1:0".parse().context("loopback address")?,
        state: state.clone(),
        dim: options.dim,
        clients: options.clients,
        min_clients: (options.clients * 3).div_ceil(4).max(2),
        rounds: options.rounds,
        phase_timeout: 20.0,
        lobby_timeout: 5.0,
        client_ca: Some(root.clone()),
        ..ServeConfig::default()
    };
    if options.adaptive_clip {
        config.dp.adaptive_clip = Some(privagg_dp::adaptive_clip::AdaptiveClipping::default());
    }
    let mut server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    let cert = server.cert_der().to_vec();
    let events = server.subscribe();
    let server_task = tokio::spawn(server.run());

    let world = std::sync::Arc::new(world(&options));
    let clients: Vec<_> = (0..options.clients as usize)
        .map(|index| {
            let world = world.clone();
            let credential = authority.issue(&format!("demo-client-{index}"), 1)?;
            let mut opts = ClientOptions::new(addr, cert.clone());
            opts.cert = Some(credential.cert);
            opts.key = Some(PrivateKey::from_pkcs8_der(credential.key.to_vec()));
            opts.client_ca = Some(authority.root_der().to_vec());
            opts.connect_deadline = Duration::from_secs(20);
            Ok(tokio::spawn(async move { run_client(index, world, opts).await }))
        })
        .collect::<Result<_>>()?;

    let started = Instant::now();
    let lines = Display::new(&options, &state, &world).follow(events).await;
    let summary = server_task.await.context("the server task failed")??;
    for client in clients {
        let _ = client.await;
    }
    let initial = world.test.loss(Array1::zeros(options.dim).view());
    println!(
        "done in {:.1} s: {} rounds, test loss {:.4} → {:.4}, ε = {:.2} at δ = 1e-5",
        started.elapsed().as_secs_f64(),
        summary.completed_rounds,
        initial,
        lines.last().map_or(initial, |l| l.loss),
        summary.epsilon.unwrap_or(0.0)
    );
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_file(&root);
    Ok(lines)
}

/// What the demo shows while the server runs: a progress bar per round, then a line
/// with the test loss of the round's model.
struct Display<'a> {
    options: &'a DemoOptions,
    state: &'a std::path::Path,
    world: &'a World,
    bar: Option<ProgressBar>,
    participants: u32,
}

impl<'a> Display<'a> {
    fn new(options: &'a DemoOptions, state: &'a std::path::Path, world: &'a World) -> Self {
        Self { options, state, world, bar: None, participants: 0 }
    }

    /// Shows every event until the server's session ends; returns the round lines.
    async fn follow(mut self, mut events: UnboundedReceiver<ServerEvent>) -> Vec<DemoRound> {
        let mut lines = Vec::new();
        while let Some(event) = events.recv().await {
            match event {
                ServerEvent::Session(SessionEvent::RoundStarted { round, participants, .. }) => {
                    self.round_started(round, participants);
                }
                ServerEvent::Session(SessionEvent::PhaseChanged { phase, .. }) => {
                    if let Some(b) = &self.bar {
                        b.inc(1);
                        b.set_message(phase.as_str().to_owned());
                    }
                }
                ServerEvent::RoundCompleted(record) => {
                    self.clear_bar();
                    lines.push(self.round_line(&record));
                }
                ServerEvent::Session(
                    SessionEvent::RoundAborted { round, attempt, reason, .. }
                    | SessionEvent::CheckInFailed { round, attempt, reason },
                ) => {
                    self.clear_bar();
                    println!("round {round} attempt {attempt} aborted: {reason}");
                }
                ServerEvent::Session(SessionEvent::Banned(ban)) => {
                    println!("client {} banned for the session: {}", ban.identity.fingerprint(), ban.reason);
                }
            }
        }
        lines
    }

    fn round_started(&mut self, round: u64, participants: u32) {
        self.participants = participants;
        if self.options.progress {
            let b = ProgressBar::new(5);
            b.set_style(
                ProgressStyle::with_template("round {msg:>12} [{bar:30}] {pos}/{len} phases")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_message(format!("{round}/{}", self.options.rounds));
            self.bar = Some(b);
        }
    }

    fn clear_bar(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    /// Prints and returns the line of a committed round, with the test loss of the model
    /// the server saved.
    fn round_line(&self, record: &RoundRecord) -> DemoRound {
        let model = std::fs::read(self.state.join(format!("model-{}.npy", record.round)))
            .ok()
            .and_then(|bytes| <Array1<f32> as ndarray_npy::ReadNpyExt>::read_npy(bytes.as_slice()).ok());
        let line = DemoRound {
            round: record.round,
            loss: model.map_or(f64::NAN, |m| self.world.test.loss(m.view())),
            survivors: record.included.len(),
            participants: self.participants,
            epsilon: record.privacy.as_ref().map_or(0.0, |p| p.epsilon),
            clip: record.clip.map(|c| (c.clip, c.unclipped_fraction)),
            seconds: record.timings.get("total").copied().unwrap_or_default(),
        };
        let clip = match line.clip {
            Some((c, Some(f))) => format!(", clip {c:.3} ({:.0} % under it)", 100.0 * f),
            Some((c, None)) => format!(", clip {c:.3} (count ignored: out of range)"),
            None => String::new(),
        };
        println!(
            "round {}/{}: test loss {:.4}, {}/{} inputs in the sum, ε = {:.2} (δ = 1e-5){clip}, {:.2} s",
            line.round, self.options.rounds, line.loss, line.survivors, line.participants, line.epsilon, line.seconds
        );
        line
    }
}

/// One simulated client: trains on its own data every round. Client 0 vanishes in
/// round 2 once it has shared its keys (on receiving its neighbours' shares), then
/// reconnects for the rounds after.
async fn run_client(index: usize, world: std::sync::Arc<World>, options: ClientOptions) -> Result<(), SdkError> {
    let data = &world.clients[index];
    let train = |model: ArrayView1<'_, f32>| Ok::<_, String>(data.local_update(model));
    let mut client = Client::connect(options).await?;
    if index == 0 {
        client.round_with(&train).await?;
        client.set_drop_point(Some(DropPoint::BeforeMaskedInput));
        match client.round_with(&train).await {
            Err(SdkError::TestingDropout) => {}
            Err(SdkError::SessionEnded { .. }) => return Ok(()),
            other => tracing::warn!(?other, "the demo's dropout did not happen"),
        }
        client.set_drop_point(None);
        client.reconnect().await?;
    }
    client.run(&train).await?;
    Ok(())
}

//! `privagg demo`: a server and simulated clients in one process, over real QUIC on
//! loopback, training a model with FedAvg through secure aggregation, DP on by default.
//!
//! Two tasks share the harness here (enrollment authority, server, clients, the
//! per-round display): `linear`, a linear model on synthetic non-IID data in which one
//! client drops out in the middle of round 2 (after sharing its keys and before
//! uploading, the case that makes the server rebuild its masks) and rejoins for the next
//! round ([`linear`]); and `shakespeare`, a character-level GRU on Tiny Shakespeare split
//! by speaking role ([`shakespeare`]).
//!
//! Local training is CPU-heavy: the SDK runs it outside the async workers
//! (`block_in_place`), here at most `trainers` clients at once, and the demo's training
//! deadline (`--train-timeout` of the server) leaves room for a whole cohort's training.

pub mod linear;
pub mod shakespeare;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array1, ArrayView1};
use privagg_client::{Client, ClientOptions, DropPoint, PrivacyPolicy, PrivateKey, SdkError};
use privagg_server::{RoundRecord, ServeConfig, Server, ServerEvent, SessionEvent};
use tokio::sync::mpsc::UnboundedReceiver;

pub use shakespeare::ShakespeareOptions;

/// A demo task: the data of every client, local training and the test figures.
pub trait Task: Send + Sync + 'static {
    /// Model dimension.
    fn dim(&self) -> usize;
    /// The model the server starts from (`None`: zeros).
    fn initial_model(&self) -> Option<Array1<f32>>;
    /// Client `client`'s update (new − global) from the global `model` in its `round`-th
    /// round (counted from 0 by the client); CPU-bound.
    fn train(&self, client: usize, round: u64, model: ArrayView1<'_, f32>) -> Result<Array1<f32>, String>;
    /// The model's test figures; CPU-bound.
    fn evaluate(&self, model: ArrayView1<'_, f32>) -> Metrics;
    /// Whether client 0 drops out in round 2 (and rejoins in round 3).
    fn drops_out(&self) -> bool;
}

/// Test figures of a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// Test loss (mean squared error / 2, or cross-entropy in nats per character).
    pub loss: f64,
    /// Perplexity per character (language models).
    pub perplexity: Option<f64>,
    /// Next-character accuracy (language models).
    pub accuracy: Option<f64>,
}

/// Which task the demo trains.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskOptions {
    /// A linear model on synthetic data of `dim` features, `examples` per client.
    Linear {
        /// Model dimension.
        dim: usize,
        /// Examples per client.
        examples: usize,
    },
    /// A character GRU on Tiny Shakespeare.
    Shakespeare(ShakespeareOptions),
}

/// What `privagg demo` runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Simulated clients.
    pub clients: u32,
    /// Rounds.
    pub rounds: u64,
    /// The task.
    pub task: TaskOptions,
    /// Seed of the data (and the initial model).
    pub seed: u64,
    /// Show progress bars.
    pub progress: bool,
    /// Adapt the clip to the median update norm (Andrew et al. 2021), starting from the clip.
    pub adaptive_clip: bool,
    /// Differential privacy on (the default).
    pub dp: bool,
    /// Noise multiplier z with DP (`None`: the server's default).
    pub noise_multiplier: Option<f64>,
    /// L2 clip C of each update with DP (`None`: the server's default).
    pub clip: Option<f64>,
    /// Server learning rate η.
    pub server_lr: f64,
    /// Seconds each protocol phase may take (training happens in the first).
    pub phase_timeout: f64,
    /// Clients that train at once.
    pub trainers: usize,
    /// Write every round's line to this file as JSON lines.
    pub report: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            clients: 20,
            rounds: 5,
            task: TaskOptions::Linear { dim: 10_000, examples: 40 },
            seed: 7,
            progress: true,
            adaptive_clip: false,
            dp: true,
            noise_multiplier: None,
            clip: None,
            server_lr: 1.0,
            phase_timeout: 20.0,
            trainers: 2,
            report: None,
        }
    }
}

/// One line of the demo's output.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoRound {
    /// Round number.
    pub round: u64,
    /// Test figures of the model after the round.
    pub metrics: Metrics,
    /// Inputs in the round's sum.
    pub survivors: usize,
    /// Clients seated.
    pub participants: u32,
    /// ε spent so far (0 without DP).
    pub epsilon: f64,
    /// With adaptive clipping: the round's clip and the noisy fraction of updates under it
    /// (`None` if the count was out of range and ignored).
    pub clip: Option<(f64, Option<f64>)>,
    /// Wall time of the round (server side).
    pub seconds: f64,
    /// Wall time since the demo started.
    pub elapsed: f64,
}

impl DemoRound {
    /// The line as one JSON object.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "round": self.round,
            "loss": self.metrics.loss,
            "perplexity": self.metrics.perplexity,
            "accuracy": self.metrics.accuracy,
            "inputs": self.survivors,
            "participants": self.participants,
            "epsilon": self.epsilon,
            "seconds": self.seconds,
            "elapsed": self.elapsed,
        })
    }
}

/// Runs the demo; returns one line per round.
pub async fn run_demo(options: DemoOptions) -> Result<Vec<DemoRound>> {
    let task: Arc<dyn Task> = match &options.task {
        TaskOptions::Linear { dim, examples } => {
            Arc::new(linear::Linear::new(options.clients, *dim, *examples, options.seed))
        }
        TaskOptions::Shakespeare(lm) => {
            let task = shakespeare::Shakespeare::new(options.clients, lm.clone(), options.seed)?;
            println!(
                "Tiny Shakespeare: {} roles ({} …; {} training characters), {} sampled per round; a GRU of {} parameters",
                task.roles().len(),
                task.roles().iter().take(3).copied().collect::<Vec<_>>().join(", "),
                task.train_chars(),
                options.clients,
                task.dim()
            );
            Arc::new(task)
        }
    };
    let state = std::env::temp_dir().join(format!("privagg-demo-{}-{}", std::process::id(), options.seed));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).with_context(|| format!("cannot create {}", state.display()))?;
    // The demo is its own enrollment authority: every simulated client gets a certificate,
    // as a deployment's clients would from an authority apart from the server.
    let authority = privagg_ca::Authority::create("privagg demo authority", 1)?;
    let root = state.with_extension("client-ca.der");
    std::fs::write(&root, authority.root_der()).with_context(|| format!("cannot write {}", root.display()))?;
    let model_init = match task.initial_model() {
        Some(model) => {
            let path = state.with_extension("init.npy");
            let file = std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
            ndarray_npy::WriteNpyExt::write_npy(&model, file)?;
            Some(path)
        }
        None => None,
    };
    let mut config = ServeConfig {
        listen: "127.0.0.1:0".parse().context("loopback address")?,
        state: state.clone(),
        dim: task.dim(),
        clients: options.clients,
        min_clients: (options.clients * 3).div_ceil(4).max(2),
        rounds: options.rounds,
        phase_timeout: options.phase_timeout,
        train_timeout: options.phase_timeout,
        lobby_timeout: 5.0,
        client_ca: Some(root.clone()),
        model_init: model_init.clone(),
        server_lr: options.server_lr,
        ..ServeConfig::default()
    };
    config.dp.enabled = options.dp;
    if let Some(z) = options.noise_multiplier {
        config.dp.noise_multiplier = z;
    }
    if let Some(c) = options.clip {
        config.dp.clip = c;
    }
    if options.adaptive_clip {
        config.dp.adaptive_clip = Some(privagg_dp::adaptive_clip::AdaptiveClipping::default());
    }
    let privacy = PrivacyPolicy {
        allow_no_dp: !options.dp,
        min_noise_multiplier: options.noise_multiplier.map_or(privagg_client::DEFAULT_MIN_NOISE_MULTIPLIER, |z| {
            z.min(privagg_client::DEFAULT_MIN_NOISE_MULTIPLIER)
        }),
        ..PrivacyPolicy::default()
    };
    let mut server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    let cert = server.cert_der().to_vec();
    let events = server.subscribe();
    let server_task = tokio::spawn(server.run());

    let gate = Arc::new(Gate::new(options.trainers.max(1)));
    let clients: Vec<_> = (0..options.clients as usize)
        .map(|index| {
            let credential = authority.issue(&format!("demo-client-{index}"), 1)?;
            let mut opts = ClientOptions::new(addr, cert.clone());
            opts.cert = Some(credential.cert);
            opts.key = Some(PrivateKey::from_pkcs8_der(credential.key.to_vec()));
            opts.client_ca = Some(authority.root_der().to_vec());
            opts.connect_deadline = Duration::from_secs(20);
            opts.privacy = privacy.clone();
            let (task, gate) = (task.clone(), gate.clone());
            Ok(tokio::spawn(async move { run_client(index, task, gate, opts).await }))
        })
        .collect::<Result<_>>()?;

    let started = Instant::now();
    let initial = task.evaluate(Array1::from_elem(task.dim(), 0.0f32).view());
    let initial = match task.initial_model() {
        Some(model) => task.evaluate(model.view()),
        None => initial,
    };
    let display = Display::new(&options, &state, task.clone(), started)?;
    let lines = display.follow(events).await;
    // A session that the privacy budget ends is a normal end of the demo: its rounds are
    // reported like any other's.
    let (completed, epsilon) = match server_task.await.context("the server task failed")? {
        Ok(summary) => (summary.completed_rounds, summary.epsilon),
        Err(privagg_server::ServeError::Budget(why)) => {
            println!("the session ended on its privacy budget: {why}");
            (lines.len() as u64, lines.last().map(|l| l.epsilon))
        }
        Err(e) => return Err(e.into()),
    };
    for client in clients {
        let _ = client.await;
    }
    let last = lines.last().map_or(initial, |l| l.metrics);
    let accuracy = match (initial.accuracy, last.accuracy) {
        (Some(a), Some(b)) => format!(", accuracy {:.1} % → {:.1} %", 100.0 * a, 100.0 * b),
        _ => String::new(),
    };
    let epsilon = match epsilon {
        Some(e) if options.dp => format!("ε = {e:.2} at δ = 1e-5"),
        _ => "no DP".to_owned(),
    };
    println!(
        "done in {:.1} s: {} rounds, test loss {:.4} → {:.4}{accuracy}, {epsilon}",
        started.elapsed().as_secs_f64(),
        completed,
        initial.loss,
        last.loss,
    );
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_file(&root);
    if let Some(path) = model_init {
        let _ = std::fs::remove_file(path);
    }
    Ok(lines)
}

/// A counting semaphore for blocking code: at most `n` holders at once.
struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Gate {
    fn new(n: usize) -> Self {
        Self { free: Mutex::new(n), freed: Condvar::new() }
    }

    /// Runs `f` once a slot is free (blocking the calling thread until then).
    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            while *free == 0 {
                free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
            }
            *free -= 1;
        }
        let out = f();
        *self.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.freed.notify_one();
        out
    }
}

/// What the demo shows while the server runs: a progress bar per round, then a line
/// with the test figures of the round's model.
struct Display<'a> {
    options: &'a DemoOptions,
    state: &'a std::path::Path,
    task: Arc<dyn Task>,
    started: Instant,
    bar: Option<ProgressBar>,
    participants: u32,
    report: Option<std::fs::File>,
}

impl<'a> Display<'a> {
    fn new(
        options: &'a DemoOptions,
        state: &'a std::path::Path,
        task: Arc<dyn Task>,
        started: Instant,
    ) -> Result<Self> {
        let report = match &options.report {
            Some(path) => {
                Some(std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?)
            }
            None => None,
        };
        Ok(Self { options, state, task, started, bar: None, participants: 0, report })
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
                    lines.push(self.round_line(&record).await);
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

    /// Prints and returns the line of a committed round, with the test figures of the
    /// model the server saved (scored on a blocking thread).
    async fn round_line(&mut self, record: &RoundRecord) -> DemoRound {
        let model = std::fs::read(self.state.join(format!("model-{}.npy", record.round)))
            .ok()
            .and_then(|bytes| <Array1<f32> as ndarray_npy::ReadNpyExt>::read_npy(bytes.as_slice()).ok());
        let task = self.task.clone();
        let metrics = match model {
            Some(m) => tokio::task::spawn_blocking(move || task.evaluate(m.view())).await.ok(),
            None => None,
        };
        let line = DemoRound {
            round: record.round,
            metrics: metrics.unwrap_or(Metrics { loss: f64::NAN, perplexity: None, accuracy: None }),
            survivors: record.included.len(),
            participants: self.participants,
            epsilon: record.privacy.as_ref().map_or(0.0, |p| p.epsilon),
            clip: record.clip.map(|c| (c.clip, c.unclipped_fraction)),
            seconds: record.timings.get("total").copied().unwrap_or_default(),
            elapsed: self.started.elapsed().as_secs_f64(),
        };
        let clip = match line.clip {
            Some((c, Some(f))) => format!(", clip {c:.3} ({:.0} % under it)", 100.0 * f),
            Some((c, None)) => format!(", clip {c:.3} (count ignored: out of range)"),
            None => String::new(),
        };
        let lm = match (line.metrics.perplexity, line.metrics.accuracy) {
            (Some(p), Some(a)) => format!(", perplexity {p:.2}, accuracy {:.1} %", 100.0 * a),
            _ => String::new(),
        };
        let epsilon =
            if self.options.dp { format!("ε = {:.2} (δ = 1e-5)", line.epsilon) } else { "no DP".to_owned() };
        println!(
            "round {}/{}: test loss {:.4}{lm}, {}/{} inputs in the sum, {epsilon}{clip}, {:.2} s",
            line.round, self.options.rounds, line.metrics.loss, line.survivors, line.participants, line.seconds
        );
        if let Some(file) = self.report.as_mut()
            && let Err(e) = writeln!(file, "{}", line.json())
        {
            tracing::warn!(error = %e, "cannot write the report");
        }
        line
    }
}

/// One simulated client: trains on its own data every round, on a blocking thread once
/// `gate` has a free slot. With a task that drops out, client 0 vanishes in round 2 once
/// it has shared its keys (on receiving its neighbours' shares), then reconnects for the
/// rounds after.
async fn run_client(
    index: usize,
    task: Arc<dyn Task>,
    gate: Arc<Gate>,
    options: ClientOptions,
) -> Result<(), SdkError> {
    let mut round = 0u64;
    let mut train = |model: ArrayView1<'_, f32>| {
        let r = round;
        round += 1;
        gate.run(|| task.train(index, r, model))
    };
    let mut client = Client::connect(options).await?;
    if index == 0 && task.drops_out() {
        client.round_with(&mut train).await?;
        client.set_drop_point(Some(DropPoint::BeforeMaskedInput));
        match client.round_with(&mut train).await {
            Err(SdkError::TestingDropout) => {}
            Err(SdkError::SessionEnded { .. }) => return Ok(()),
            other => tracing::warn!(?other, "the demo's dropout did not happen"),
        }
        client.set_drop_point(None);
        client.reconnect().await?;
    }
    match client.run(&mut train).await {
        // The server says why it ended (its privacy budget, say) and the demo reports it.
        Ok(_) | Err(SdkError::SessionEnded { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

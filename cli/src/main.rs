//! `privagg`: run the aggregation server, take part as a client, run the demo, and
//! answer privacy and parameter questions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod demo;
mod trainer;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use privagg_client::{
    Client, ClientOptions, DEFAULT_MAX_EPSILON, DEFAULT_MIN_NOISE_MULTIPLIER, DropPoint, IdentityFiles, PrivacyPolicy,
    SdkError,
};
use privagg_dp::accountant::{DpEvent, epsilon_bounds};
use privagg_dp::planner::Mechanism;
use privagg_server::aggregation::{Aggregation, graph_for, session_graph};
use privagg_server::config::Threat;
use privagg_server::{ServeConfig, Server};

use crate::demo::{DemoOptions, ShakespeareOptions, TaskOptions, run_demo};

#[derive(Parser)]
#[command(name = "privagg", version, about = "Secure aggregation with differential privacy for federated learning")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the aggregation server for a session of FedAvg rounds.
    Serve(Box<ServeArgs>),
    /// Take part in one round with an update from a .npy file, or in every round of the
    /// session with a training command.
    Client(Box<ClientArgs>),
    /// Print the fingerprint round records and logs name a client by (its token's or
    /// certificate's), to tell who held which seat.
    Identity(IdentityArgs),
    /// Run a server and simulated clients on loopback: DP training with a dropout.
    Demo(DemoArgs),
    /// Print ε of the Poisson-subsampled Gaussian mechanism over R rounds.
    Privacy(PrivacyArgs),
    /// Print the neighbour count k and threshold t the parameter finder picks.
    Params(ParamsArgs),
    /// Print the DP plan `serve` would run with the same flags: ε against the server
    /// (the headline), per round, zCDP ρ, γ, s², Δ₂, inflation, τ·m, wrap-arounds.
    Plan(Box<PlanArgs>),
    /// The enrollment authority: make a root, issue client certificates. Keep its
    /// directory off the aggregation server.
    #[command(subcommand)]
    Ca(CaCommand),
    /// The verifiable round log of a state directory.
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Subcommand)]
enum LogCommand {
    /// Check a state directory's round log: every leaf against the record, model and
    /// ledger it describes, the per-round ε against the logged totals, and every
    /// checkpoint's signature and root. Exits non-zero naming the first problem.
    Verify {
        /// The server's state directory.
        #[arg(long)]
        state: PathBuf,
        /// The log's verifier key (the `log.pub` you saved when the session began); the
        /// directory's own `log.pub` otherwise, which proves less.
        #[arg(long)]
        key: Option<PathBuf>,
        /// A checkpoint you saved earlier (a copy of `log/checkpoint`): the log must
        /// extend it. Repeatable.
        #[arg(long)]
        since: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Make a new authority: DIR/ca.der (what servers and clients trust) and DIR/ca.key
    /// (mode 0600; keep it off the aggregation server).
    Init {
        /// The authority's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The authority's name in its certificate.
        #[arg(long, default_value = "privagg enrollment authority")]
        name: String,
        /// Days the root stays valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a client an Ed25519 certificate: OUT/NAME.der and OUT/NAME.key (mode 0600).
    Issue {
        /// The authority's directory (ca.der, ca.key).
        #[arg(long)]
        dir: PathBuf,
        /// The client's name (letters, digits, '-', '_', '.').
        #[arg(long)]
        name: String,
        /// Where to write the certificate and key.
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate stays valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// UDP address to listen on [default: 127.0.0.1:7000].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// State directory: cert.der, model-R.npy, round-R.json [default: privagg-state].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Model dimension M.
    #[arg(long)]
    dim: Option<usize>,
    /// Clients per round N (with DP: the public FedAvg denominator) [default: 10].
    #[arg(long)]
    clients: Option<u32>,
    /// Fewest clients a round may release a sum of (the DP n_min) [default: 80 % of
    /// --clients, rounded up: 8 of 10].
    #[arg(long)]
    min_clients: Option<u32>,
    /// Rounds in the session [default: 1].
    #[arg(long)]
    rounds: Option<u64>,
    /// Neighbours per client K (N−1: complete graph) [default: chosen by the parameter finder].
    #[arg(long)]
    neighbors: Option<u32>,
    /// Fraction of clients assumed corrupt when choosing K and the threshold [default: 0.05].
    #[arg(long)]
    corrupt_fraction: Option<f64>,
    /// What the server is assumed able to do: lie about who dropped out and about who the
    /// clients' peers are (malicious: needs --client-ca) or only watch (curious: tokens
    /// or open admission allowed, lower thresholds; clients must opt in too)
    /// [default: malicious].
    #[arg(long, value_enum)]
    threat: Option<ThreatArg>,
    /// DP noise multiplier Z [default: 1.0].
    #[arg(long, conflicts_with = "no_dp")]
    noise_multiplier: Option<f64>,
    /// DP L2 clip C of each update [default: 1.0].
    #[arg(long, conflicts_with = "no_dp")]
    clip: Option<f64>,
    /// DP noise mechanism [default: discrete-gaussian].
    #[arg(long, value_enum, conflicts_with = "no_dp")]
    mechanism: Option<MechanismArg>,
    /// δ of the privacy accounting [default: 1e-5].
    #[arg(long)]
    delta: Option<f64>,
    /// Rate q at which clients take part [default: 1]. Below 1 only with --check-ins.
    #[arg(long)]
    sampling_rate: Option<f64>,
    /// Random check-ins: before each round, each of the --clients waiting clients flips
    /// its own coin and takes part with probability --sampling-rate. ε against the
    /// server stays at q = 1 (it sees who took part); a second ε, against those who see
    /// only the released models, is reported.
    #[arg(long)]
    check_ins: bool,
    /// Adaptive clipping: --clip is where C starts, and each round the clients' noised
    /// clip indicators move it toward this quantile of update norms (0.5: the median).
    /// The noise is split so that ε stays what --noise-multiplier gives.
    #[arg(long, value_name = "QUANTILE")]
    adaptive_clip: Option<f64>,
    /// Stop before a round that would spend more than this ε [default: 16; "inf": no
    /// budget].
    #[arg(long)]
    max_epsilon: Option<f64>,
    /// Run a DP plan whose accounting is loose (τ·m above 1e-3 or sensitivity inflated
    /// by more than 10 %) instead of refusing it.
    #[arg(long)]
    force_plan: bool,
    /// Resume a state directory whose rounds were committed with other settings (DP,
    /// dimension, cohort, optimizer): the change is recorded in plan-changes.json.
    #[arg(long)]
    force_resume: bool,
    /// Bits per word of the modular sum [default: 20 with DP, 48 without].
    #[arg(long)]
    bits: Option<u32>,
    /// Turn DP off: weighted FedAvg of clamped updates.
    #[arg(long)]
    no_dp: bool,
    /// Without DP: clamp each update coordinate to [−R, R] [default: 8].
    #[arg(long)]
    value_range: Option<f64>,
    /// Without DP: largest client weight [default: 1000].
    #[arg(long)]
    max_weight: Option<f64>,
    /// Server learning rate η [default: 1].
    #[arg(long)]
    server_lr: Option<f64>,
    /// Server momentum β [default: 0].
    #[arg(long)]
    server_momentum: Option<f64>,
    /// Initial model (.npy, 1-D float32/float64) [default: zeros].
    #[arg(long)]
    model_init: Option<PathBuf>,
    /// Seconds each protocol phase may take [default: 30].
    #[arg(long)]
    phase_timeout: Option<f64>,
    /// Attempts at a round before it counts as failed [default: 3].
    #[arg(long)]
    max_round_attempts: Option<u32>,
    /// End the session when a round has failed (--max-round-attempts aborted attempts in
    /// a row). By default the server keeps serving and tries the round again after a
    /// back-off: one bad client never ends a session.
    #[arg(long)]
    stop_after_failed_round: bool,
    /// Seconds to wait after an aborted attempt before the next one, doubling with each
    /// further abort of the round (up to 64 times this) [default: 1].
    #[arg(long)]
    retry_backoff: Option<f64>,
    /// Seconds a seated client may train on the round's model before it must advertise
    /// its keys; the first phase's deadline is this plus --phase-timeout [default: 60].
    #[arg(long)]
    train_timeout: Option<f64>,
    /// Seconds to wait for N clients before starting with at least the minimum [default: 60].
    #[arg(long)]
    lobby_timeout: Option<f64>,
    /// Seconds of silence after which a connection counts as lost [default: 30].
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Token file (one token per line): only holders of a listed token are admitted. One
    /// of --tokens, --client-ca or --insecure-open-admission is required.
    #[arg(long, conflicts_with = "client_ca")]
    tokens: Option<PathBuf>,
    /// Admit anyone, with any number of identities, without tokens or certificates
    /// (local trials only).
    #[arg(long, conflicts_with_all = ["tokens", "client_ca"])]
    insecure_open_admission: bool,
    /// Enrollment authority root (ca.der from `privagg ca init`): admit only clients
    /// holding a certificate it issued (mutual TLS).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Certificate (DER) to use instead of a generated one.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PKCS#8 DER) of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Masked inputs received at once; 0: as many as --upload-memory-mib holds [default: 0].
    #[arg(long)]
    upload_slots: Option<usize>,
    /// Memory for uploads in flight, MiB, when --upload-slots is 0 [default: 256].
    #[arg(long)]
    upload_memory_mib: Option<f64>,
    /// Model downloads and relayed shares written at once [default: 64].
    #[arg(long)]
    download_slots: Option<usize>,
    /// Seconds a new connection may take to send its Hello [default: 5].
    #[arg(long)]
    hello_timeout: Option<f64>,
    /// Seconds each transfer (a frame written or read, a granted upload) may take, plus its
    /// size at --min-transfer-rate; a client that stalls past it is dropped [default: the
    /// phase timeout].
    #[arg(long)]
    transfer_timeout: Option<f64>,
    /// Slowest transfer rate a client may impose, bytes per second [default: 262144].
    #[arg(long)]
    min_transfer_rate: Option<f64>,
    /// Connections awaiting admission at once, at most [default: 1024].
    #[arg(long)]
    max_unadmitted: Option<usize>,
    /// Connections awaiting admission from one IP address, at most [default: 256].
    #[arg(long)]
    max_unadmitted_per_address: Option<usize>,
    /// Offences (violations, stalled transfers) after which a client's identity is banned;
    /// 0: never [default: 2].
    #[arg(long)]
    ban_after: Option<u32>,
    /// Seconds a ban lasts [default: the rest of the session]. Bans outlive a restart
    /// (they are kept in the state directory's bans.json).
    #[arg(long)]
    ban_duration: Option<f64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ThreatArg {
    #[value(alias = "semi-malicious")]
    Malicious,
    Curious,
}

/// The noise mechanism, spelled as in the TOML file too (`discrete_gaussian`).
#[derive(Clone, Copy, ValueEnum)]
enum MechanismArg {
    #[value(alias = "discrete_gaussian")]
    DiscreteGaussian,
    Skellam,
}

#[derive(Args)]
struct IdentityArgs {
    /// A client certificate (DER, as `privagg ca issue` writes it).
    #[arg(long, conflicts_with = "token_file", required_unless_present = "token_file")]
    cert: Option<PathBuf>,
    /// A file holding an admission token.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

fn identity(args: &IdentityArgs) -> Result<()> {
    use privagg_service::ClientIdentity;
    let identity = match (&args.cert, &args.token_file) {
        (Some(cert), _) => ClientIdentity::of_certificate(
            &std::fs::read(cert).with_context(|| format!("--cert {}: cannot read it", cert.display()))?,
        ),
        (None, Some(file)) => ClientIdentity::of_token(
            privagg_client::load_token(Some(file))?
                .as_deref()
                .with_context(|| format!("--token-file {}", file.display()))?,
        ),
        (None, None) => bail!("give --cert or --token-file"),
    };
    println!("{}", identity.fingerprint());
    Ok(())
}

#[derive(Args)]
struct ClientArgs {
    /// The server's address, HOST:PORT (a host name or an IP address).
    #[arg(long)]
    server: String,
    /// The server's certificate (DIR/cert.der), trusted exactly.
    #[arg(long)]
    ca: PathBuf,
    /// Take part in one round with this update: a 1-D float32 or float64 .npy file.
    #[arg(long, required_unless_present = "train", conflicts_with = "train")]
    update: Option<PathBuf>,
    /// Take part in every round of the session, training with this command: before each
    /// round the client writes the round's model to {model} (.npy, float32), runs the
    /// command with `sh -c` ({model}, {update} and {round} replaced by the paths and the
    /// round number), and sends the update the command wrote to {update} (a 1-D .npy
    /// file, the model's length). Training must finish within the server's
    /// --train-timeout. Example: --train 'python3 train.py {model} {update}'.
    #[arg(long, value_name = "COMMAND")]
    train: Option<String>,
    /// Write the global model after each round this client completes to this file (.npy,
    /// float32): at the end it holds the model after the last one. The server sends it
    /// before the round's end (one more model download per round).
    #[arg(long)]
    model_out: Option<PathBuf>,
    /// A file holding the admission token (the token may also come from the
    /// PRIVAGG_TOKEN environment variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Removed: a token on the command line is visible to every user in the process list.
    #[arg(long, hide = true)]
    token: Option<String>,
    /// This client's certificate (NAME.der from `privagg ca issue`).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of --cert (NAME.key).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// The enrollment authority root (ca.der) that certifies the other clients.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Weight of the update (used when the server runs without DP).
    #[arg(long, default_value_t = 1.0)]
    weight: f32,
    /// Refuse rounds less private than a Gaussian mechanism with this noise multiplier,
    /// as the client accounts them itself (τ included, no amplification, colluders as
    /// its corrupt fraction assumes).
    #[arg(long, default_value_t = DEFAULT_MIN_NOISE_MULTIPLIER)]
    min_noise_multiplier: f64,
    /// Take part in rounds without differential privacy (a server run with --no-dp):
    /// then only secure aggregation hides the update.
    #[arg(long)]
    allow_no_dp: bool,
    /// Take part only while this server, over all its training sessions, has cost this
    /// client at most this ε (at δ = 1e-5), every masked input sent counted ("inf": no
    /// budget).
    #[arg(long, default_value_t = DEFAULT_MAX_EPSILON)]
    max_epsilon: f64,
    /// Send this server at most this many masked inputs, over all its training sessions.
    #[arg(long)]
    max_participations: Option<u64>,
    /// Accept only thresholds safe with this fraction of clients corrupt [default: 0.05].
    #[arg(long)]
    corrupt_fraction: Option<f64>,
    /// What this client assumes the server may do: lie about who dropped out and about
    /// its peers (malicious: needs --cert, --key and --client-ca), or only watch
    /// (curious, which accepts lower thresholds and uncertified peers) [default: malicious].
    #[arg(long, value_enum)]
    threat: Option<ThreatArg>,
    /// Name in the server's certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Where the client remembers the rounds it took part in, per server and token, so
    /// that a server cannot replay one [default: ~/.local/state/privagg/client].
    #[arg(long)]
    state: Option<PathBuf>,
    /// The round log's verifier key (the server's `log.pub`): the client checks the
    /// server's signed round log against it before every round. Without it, the key the
    /// log first presents is trusted and remembered in --state (trust on first use).
    #[arg(long, value_name = "FILE")]
    log_key: Option<PathBuf>,
    /// Seconds to keep trying to reach the server.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Testing: vanish on receiving the message this client would answer next.
    #[arg(long, value_enum, hide = true)]
    testing_drop_point: Option<DropPointArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DropPointArg {
    BeforeAdvertiseKeys,
    BeforeShareKeys,
    BeforeMaskedInput,
    BeforeSignature,
    BeforeUnmaskResponse,
    AfterUnmaskResponse,
}

#[derive(Args)]
struct DemoArgs {
    /// What to train: a linear model on synthetic data, or a character-level GRU on Tiny
    /// Shakespeare split by speaking role.
    #[arg(long, value_enum, default_value = "linear")]
    task: DemoTask,
    /// Simulated clients [default: 20 (linear), 8 (shakespeare)].
    #[arg(long)]
    clients: Option<u32>,
    /// Rounds [default: 5 (linear), 110 (shakespeare)].
    #[arg(long)]
    rounds: Option<u64>,
    /// Model dimension (linear).
    #[arg(long, default_value_t = 10_000)]
    dim: usize,
    /// Seed of the data and of the initial model.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Adapt the clip to the median update norm inside secure aggregation (each client
    /// adds its noised clip indicator to the sum).
    #[arg(long)]
    adaptive_clip: bool,
    /// Run without differential privacy: secure aggregation only, weighted FedAvg.
    #[arg(long)]
    no_dp: bool,
    /// Noise multiplier z [default: the server's, 1].
    #[arg(long, conflicts_with = "no_dp")]
    noise_multiplier: Option<f64>,
    /// L2 clip C of each update [default: the server's (linear), 1 (shakespeare)].
    #[arg(long, conflicts_with = "no_dp")]
    clip: Option<f64>,
    /// Server learning rate η [default: 1 (linear), 1.5 (shakespeare)].
    #[arg(long)]
    server_lr: Option<f64>,
    /// GRU hidden width (shakespeare).
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// Adam steps per client per round (shakespeare).
    #[arg(long, default_value_t = 40)]
    local_steps: usize,
    /// Windows per local batch (shakespeare).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Characters per window (shakespeare).
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Local Adam learning rate (shakespeare).
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
    /// The local learning rate is divided by 1 + round / this (shakespeare; 0: constant).
    #[arg(long, default_value_t = 30.0)]
    lr_decay_rounds: f64,
    /// The local learning rate also falls linearly over this fraction of the rounds at the
    /// end (K = ⌊fraction · rounds⌋ rounds), to 1/K of itself in the last round
    /// (shakespeare; 0: no cooldown).
    #[arg(long, default_value_t = 0.35)]
    lr_cooldown: f64,
    /// At most this many passes over a role's text per round (shakespeare; 0: always
    /// --local-steps).
    #[arg(long, default_value_t = 4.0)]
    max_epochs: f64,
    /// Held-out characters scored each round (shakespeare).
    #[arg(long, default_value_t = 50_000)]
    test_chars: usize,
    /// Clients that train at once [default: 2 (linear), all of them (shakespeare: the
    /// operating system shares the cores, so a round is not held up by the largest role
    /// training last)].
    #[arg(long)]
    trainers: Option<usize>,
    /// Seconds each protocol phase may take [default: 20 (linear), 600 (shakespeare)].
    #[arg(long)]
    phase_timeout: Option<f64>,
    /// Write each round's figures to this file as JSON lines.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DemoTask {
    Linear,
    Shakespeare,
}

#[derive(Args)]
struct PrivacyArgs {
    /// Noise multiplier z.
    #[arg(long)]
    noise_multiplier: f64,
    /// Poisson sampling rate q.
    #[arg(long)]
    sampling_rate: f64,
    /// Rounds.
    #[arg(long)]
    rounds: u64,
    /// δ.
    #[arg(long)]
    delta: f64,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PlanArgs {
    /// The same flags as `serve` (and `--config`).
    #[command(flatten)]
    serve: ServeArgs,
    /// Machine-readable output (the headline ε under `epsilon`).
    #[arg(long)]
    json: bool,
}

/// The inputs of `privagg params`, spelled as `privagg serve` spells them.
#[derive(Args)]
struct ParamsArgs {
    /// Clients per round.
    #[arg(long)]
    clients: u32,
    /// Fewest inputs a round may sum (the server's dropout tolerance)
    /// [default: 4/5 of --clients, rounded up, as `serve` uses].
    #[arg(long, conflicts_with = "dropout_fraction")]
    min_clients: Option<u32>,
    /// Fraction of clients that may drop out; sets --min-clients to the clients left.
    #[arg(long)]
    dropout_fraction: Option<f64>,
    /// Fraction of clients that may be corrupt [default: 0.05].
    #[arg(long, default_value_t = 0.05)]
    corrupt_fraction: f64,
    /// What the server is assumed able to do, as for `serve --threat`: lie about who
    /// dropped out (malicious) or only watch (curious).
    #[arg(long, alias = "adversary", value_enum, default_value = "malicious")]
    threat: ThreatArg,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

impl From<ThreatArg> for Threat {
    fn from(arg: ThreatArg) -> Self {
        match arg {
            ThreatArg::Malicious => Self::Malicious,
            ThreatArg::Curious => Self::Curious,
        }
    }
}

/// Lets every option of `command` and its subcommands take a negative number as its
/// value (`--clip -2`), so that the value's own check says what is wrong with it.
fn with_negative_numbers(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let takes_value = arg.get_action().takes_values();
            arg.allow_negative_numbers(takes_value)
        })
        .mut_subcommands(with_negative_numbers)
}

fn main() -> ExitCode {
    let matches = with_negative_numbers(Cli::command()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("privagg: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => runtime()?.block_on(serve(*args)),
        Command::Client(args) => client(*args),
        Command::Demo(args) => {
            runtime()?.block_on(run_demo(demo_options(args)))?;
            Ok(())
        }
        Command::Privacy(args) => privacy(args),
        Command::Params(args) => params(args),
        Command::Plan(args) => plan(*args),
        Command::Ca(command) => ca(command),
        Command::Identity(args) => identity(&args),
        Command::Log(LogCommand::Verify { state, key, since }) => verify_log(&state, key.as_deref(), &since),
    }
}

/// The demo's options from its flags, with each task's defaults.
fn demo_options(args: DemoArgs) -> DemoOptions {
    let shakespeare = args.task == DemoTask::Shakespeare;
    let rounds = args.rounds.unwrap_or(if shakespeare { 110 } else { 5 });
    let task = if shakespeare {
        TaskOptions::Shakespeare(ShakespeareOptions {
            hidden: args.hidden,
            train: privagg_lm::TrainOptions {
                steps: args.local_steps,
                batch: args.batch,
                seq_len: args.seq_len,
                lr: args.lr,
                ..ShakespeareOptions::default().train
            },
            test_chars: args.test_chars,
            decay_rounds: args.lr_decay_rounds,
            cooldown: args.lr_cooldown,
            rounds,
            max_epochs: args.max_epochs,
            ..ShakespeareOptions::default()
        })
    } else {
        TaskOptions::Linear { dim: args.dim, examples: 40 }
    };
    let clients = args.clients.unwrap_or(if shakespeare { 8 } else { 20 });
    DemoOptions {
        clients,
        rounds,
        task,
        seed: args.seed,
        adaptive_clip: args.adaptive_clip,
        dp: !args.no_dp,
        noise_multiplier: args.noise_multiplier,
        clip: args.clip.or(shakespeare.then_some(1.0)),
        server_lr: args.server_lr.unwrap_or(if shakespeare { 1.5 } else { 1.0 }),
        phase_timeout: args.phase_timeout.unwrap_or(if shakespeare { 600.0 } else { 20.0 }),
        trainers: args.trainers.unwrap_or(if shakespeare { clients as usize } else { 2 }),
        report: args.report,
        ..DemoOptions::default()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn serve_config(args: ServeArgs) -> Result<ServeConfig> {
    let mut c = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            ServeConfig::from_toml(&text)?
        }
        None => ServeConfig::default(),
    };
    macro_rules! set {
        ($field:expr, $value:expr) => {
            if let Some(v) = $value {
                $field = v;
            }
        };
    }
    set!(c.listen, args.listen);
    set!(c.state, args.state);
    set!(c.dim, args.dim);
    set!(c.clients, args.clients);
    set!(c.min_clients, args.min_clients);
    if let (None, Some(clients), None) = (&args.config, args.clients, args.min_clients) {
        c.min_clients = (clients * 4).div_ceil(5).max(1);
    }
    set!(c.rounds, args.rounds);
    set!(c.corrupt_fraction, args.corrupt_fraction);
    set!(c.dp.noise_multiplier, args.noise_multiplier);
    set!(c.dp.clip, args.clip);
    set!(c.dp.delta, args.delta);
    set!(c.dp.sampling_rate, args.sampling_rate);
    set!(c.weighting.value_range, args.value_range);
    set!(c.weighting.max_weight, args.max_weight);
    set!(c.server_lr, args.server_lr);
    set!(c.server_momentum, args.server_momentum);
    set!(c.phase_timeout, args.phase_timeout);
    set!(c.train_timeout, args.train_timeout);
    set!(c.max_round_attempts, args.max_round_attempts);
    set!(c.retry_backoff, args.retry_backoff);
    c.stop_after_failed_round |= args.stop_after_failed_round;
    set!(c.lobby_timeout, args.lobby_timeout);
    set!(c.idle_timeout, args.idle_timeout);
    set!(c.upload_slots, args.upload_slots);
    set!(c.download_slots, args.download_slots);
    set!(c.upload_memory_mib, args.upload_memory_mib);
    set!(c.hello_timeout, args.hello_timeout);
    if args.transfer_timeout.is_some() {
        c.transfer_timeout = args.transfer_timeout;
    }
    set!(c.min_transfer_rate, args.min_transfer_rate);
    set!(c.max_unadmitted, args.max_unadmitted);
    set!(c.max_unadmitted_per_address, args.max_unadmitted_per_address);
    set!(c.ban_after, args.ban_after);
    if args.ban_duration.is_some() {
        c.ban_duration = args.ban_duration;
    }
    c.insecure_open_admission |= args.insecure_open_admission;
    if args.neighbors.is_some() {
        c.neighbors = args.neighbors;
    }
    if let Some(budget) = args.max_epsilon {
        c.dp.max_epsilon = no_budget_if_infinite(budget);
    }
    c.dp.force_plan |= args.force_plan;
    c.force_resume |= args.force_resume;
    c.dp.check_ins |= args.check_ins;
    if let Some(target_quantile) = args.adaptive_clip {
        let rule = c.dp.adaptive_clip.unwrap_or_default();
        c.dp.adaptive_clip = Some(privagg_dp::adaptive_clip::AdaptiveClipping { target_quantile, ..rule });
    }
    if let Some(threat) = args.threat {
        c.threat = threat.into();
    }
    if let Some(m) = args.mechanism {
        c.dp.mechanism = match m {
            MechanismArg::DiscreteGaussian => Mechanism::DiscreteGaussian,
            MechanismArg::Skellam => Mechanism::Skellam,
        };
    }
    if args.no_dp {
        c.dp.enabled = false;
    }
    if let Some(bits) = args.bits {
        if c.dp.enabled {
            c.dp.bits = bits;
        } else {
            c.weighting.bits = bits;
        }
    }
    for (field, value) in
        [(&mut c.model_init, args.model_init), (&mut c.tokens, args.tokens), (&mut c.client_ca, args.client_ca)]
    {
        if value.is_some() {
            *field = value;
        }
    }
    if args.cert.is_some() {
        c.cert = args.cert;
        c.key = args.key;
    }
    Ok(c)
}

/// Warns when this binary was built with the seeded RNG (a workspace build that unified
/// the benchmarks' features); release builds (`cargo build -p privagg-cli`) never are.
fn warn_if_insecure_build() {
    if privagg_dp::rng::INSECURE_SEEDED_RNG {
        tracing::warn!(
            "this binary was built with privagg-dp/insecure-seeded-rng (a workspace build); build releases with `cargo build --release -p privagg-cli`"
        );
    }
}

/// A `--max-epsilon` as a budget: "inf" is none; any other value, NaN included, is kept
/// for validation to refuse if it is not a positive number.
fn no_budget_if_infinite(epsilon: f64) -> Option<f64> {
    (epsilon != f64::INFINITY).then_some(epsilon)
}

async fn serve(args: ServeArgs) -> Result<()> {
    warn_if_insecure_build();
    let config = serve_config(args)?;
    config.validate()?;
    let server = Server::bind(config.clone()).await?;
    tracing::info!(
        addr = %server.local_addr()?,
        state = %config.state.display(),
        dim = config.dim,
        clients = config.clients,
        min_clients = config.min_clients,
        rounds = config.rounds,
        dp = config.dp.enabled,
        "listening"
    );
    let shutdown = server.shutdown_handle();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted; stopping");
            shutdown.shutdown();
        }
    });
    let summary = server.run().await?;
    match summary.epsilon {
        Some(eps) => tracing::info!(rounds = summary.completed_rounds, epsilon = eps, "session complete"),
        None => tracing::info!(rounds = summary.completed_rounds, "session complete"),
    }
    Ok(())
}

/// Refuses `--token`: the admission token comes from `--token-file` or `PRIVAGG_TOKEN`
/// (read by the SDK's [`ClientOptions::load_identity`]), never from argv.
fn refuse_argv_token(argv_token: Option<&str>) -> Result<()> {
    if argv_token.is_some() {
        bail!(
            "--token is no longer accepted: a token on the command line is visible in the process list; put it in a file and pass --token-file FILE, or set PRIVAGG_TOKEN"
        );
    }
    Ok(())
}

fn client(args: ClientArgs) -> Result<()> {
    warn_if_insecure_build();
    // Refuse a bad file before touching the network.
    let update = args.update.as_deref().map(read_update).transpose()?;
    let mut options = ClientOptions::new(resolve(&args.server)?, read_certificate(&args.ca)?);
    refuse_argv_token(args.token.as_deref())?;
    let mut files = IdentityFiles::new();
    files.token_file = args.token_file;
    files.cert = args.cert;
    files.key = args.key;
    files.client_ca = args.client_ca;
    options.load_identity(&files)?;
    options.server_name = args.server_name;
    if args.state.is_some() {
        options.state_dir = args.state;
    }
    if let Some(path) = &args.log_key {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        options.log_key = Some(
            privagg_log::VerifierKey::parse(&text)
                .with_context(|| format!("{} is not a round-log key", path.display()))?,
        );
    }
    options.privacy = PrivacyPolicy {
        allow_no_dp: args.allow_no_dp,
        min_noise_multiplier: args.min_noise_multiplier,
        max_epsilon: no_budget_if_infinite(args.max_epsilon),
        max_participations: args.max_participations,
        ..PrivacyPolicy::default()
    };
    if let Some(fraction) = args.corrupt_fraction {
        options.policy.corrupt_fraction = fraction;
    }
    if let Some(threat) = args.threat {
        options.policy.server = Threat::from(threat).adversary();
    }
    options.connect_deadline = std::time::Duration::from_secs_f64(args.connect_timeout.max(0.1));
    options.drop_point = args.testing_drop_point.map(|d| match d {
        DropPointArg::BeforeAdvertiseKeys => DropPoint::BeforeAdvertiseKeys,
        DropPointArg::BeforeShareKeys => DropPoint::BeforeShareKeys,
        DropPointArg::BeforeMaskedInput => DropPoint::BeforeMaskedInput,
        DropPointArg::BeforeSignature => DropPoint::BeforeSignature,
        DropPointArg::BeforeUnmaskResponse => DropPoint::BeforeUnmaskResponse,
        DropPointArg::AfterUnmaskResponse => DropPoint::AfterUnmaskResponse,
    });
    options.follow_model = args.model_out.is_some();
    let trainer = args.train.map(|command| trainer::Trainer::new(command, args.weight)).transpose()?;
    let model_out = args.model_out;
    runtime()?.block_on(async move {
        let mut client = Client::connect(options).await.map_err(|e| explain_handshake(e, &args.ca))?;
        if let Some(stop_command) = trainer.as_ref().map(trainer::Trainer::interrupt_flag) {
            // Training blocks the round's task, so a Ctrl-C then reaches the command and
            // the client through these, not through the `select!` below: the command
            // stops, and the client leaves without a word rather than abandoning a round.
            let leave = client.interrupt_handle();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    leave.interrupt();
                    stop_command.store(true, std::sync::atomic::Ordering::Release);
                }
            });
        }
        let take_part = async {
            match (&update, &trainer) {
                (Some(update), _) => {
                    client.submit(ndarray::ArrayView1::from(update), args.weight).await.map(|r| vec![r])
                }
                (None, Some(trainer)) => client.run_with(|round| trainer.train(round)).await,
                (None, None) => Ok(Vec::new()),
            }
        };
        let result = tokio::select! {
            result = take_part => result.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; left the session")),
        };
        // Close politely either way (Ctrl-C included), so that the server drops this
        // client from its round at once instead of waiting for a deadline.
        client.close().await;
        let reports = result?;
        if let (Some(path), Some(model)) = (&model_out, reports.last().and_then(|r| r.model.as_ref())) {
            let bytes = privagg_server::storage::npy_bytes(&model.to_vec())?;
            privagg_server::storage::write_atomically(path, &bytes)
                .with_context(|| format!("--model-out {}", path.display()))?;
        }
        for report in &reports {
            let epsilon = report.epsilon.map_or(String::new(), |e| format!("; this client's ε = {e:.3}"));
            println!(
                "round {} complete: {} inputs in the sum; sent {} bytes, received {} bytes{epsilon}",
                report.round, report.inputs, report.bytes_sent, report.bytes_received
            );
        }
        if trainer.is_some() {
            println!("the session is complete; this client took part in {} rounds", reports.len());
        }
        Ok(())
    })
}

/// The server's address: `HOST:PORT`, the host a name or an IP address.
fn resolve(server: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = server
        .to_socket_addrs()
        .with_context(|| format!("--server {server}: not HOST:PORT, or the host does not resolve"))?
        .collect();
    // A server listening on 127.0.0.1 is not at ::1: IPv4 first, as `serve` listens.
    let first = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first());
    first.copied().with_context(|| format!("--server {server}: the host has no address"))
}

/// The pinned server certificate of `--ca`: DER, as `privagg serve` writes it.
fn read_certificate(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("--ca {}: cannot read it", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        bail!(
            "--ca {}: this is a PEM file; privagg pins the DER certificate the server writes (STATE/cert.der), or convert it: openssl x509 -in {} -outform der -out cert.der",
            path.display(),
            path.display()
        );
    }
    Ok(bytes)
}

/// Says what to check when the TLS handshake fails: it is about certificates, not the
/// network.
fn explain_handshake(e: SdkError, ca: &Path) -> anyhow::Error {
    match e {
        SdkError::Handshake(detail) => anyhow::anyhow!(
            "TLS handshake failed: {detail}. The server's certificate must be the one pinned by --ca {} (copy the server's current STATE/cert.der) and carry the --server-name; or the server refused this client's certificate",
            ca.display()
        ),
        other => other.into(),
    }
}

/// Reads an update file and refuses NaN or infinity in it.
fn read_update(path: &Path) -> Result<Vec<f32>> {
    let update = privagg_server::storage::read_vector(path)?;
    if update.iter().any(|v| !v.is_finite()) {
        bail!("{} holds NaN or infinity", path.display());
    }
    Ok(update)
}

fn ca(command: CaCommand) -> Result<()> {
    match command {
        CaCommand::Init { dir, name, days } => {
            let authority = privagg_ca::Authority::create(&name, days)?;
            authority.save(&dir)?;
            println!(
                "authority {name:?}: {} (trust this), {} (keep it safe)",
                dir.join("ca.der").display(),
                dir.join("ca.key").display()
            );
        }
        CaCommand::Issue { dir, name, out, days } => {
            let (cert, key) = privagg_ca::Authority::load(&dir)?.issue(&name, days)?.save(&out, &name)?;
            println!("client {name:?}: {} and {}, valid {days} days", cert.display(), key.display());
        }
    }
    Ok(())
}

fn verify_log(state: &Path, key: Option<&Path>, since: &[PathBuf]) -> Result<()> {
    let read = |path: &Path| std::fs::read_to_string(path).with_context(|| format!("{}", path.display()));
    let key = match key {
        Some(path) => {
            Some(privagg_log::VerifierKey::parse(&read(path)?).with_context(|| format!("--key {}", path.display()))?)
        }
        None => None,
    };
    let trusted = since.iter().map(|path| read(path)).collect::<Result<Vec<_>>>()?;
    let verified = privagg_server::round_log::verify(state, key.as_ref(), &trusted)?;
    let epsilon = verified.epsilon.map_or(String::new(), |(e, d)| format!(", ε = {e:.4} at δ = {d}"));
    println!(
        "log OK: {} rounds, root {}, {} checkpoints{epsilon}",
        verified.rounds,
        hex::encode(verified.root),
        verified.checkpoints
    );
    Ok(())
}

fn plan(args: PlanArgs) -> Result<()> {
    let config = serve_config(args.serve)?;
    config.validate_plan()?;
    let (k, t) = session_graph(&config)?;
    let summary = Aggregation::new(&config)?.summary().transpose()?;
    if args.json {
        let mut out = serde_json::json!({ "dp": summary.is_some(), "k": k, "t": t });
        if let Some(s) = &summary {
            out = serde_json::json!({ "dp": true, "k": k, "t": t, "plan": s, "epsilon": s.epsilon });
        }
        println!("{out}");
        return Ok(());
    }
    match config.check_in_rate_ppb() {
        Some(_) => println!(
            "{} clients each check in with probability {}, at least {} in each sum: k = {k} neighbours, t = {t} for up to {} clients",
            config.clients,
            config.dp.sampling_rate,
            config.min_clients,
            config.largest_cohort()
        ),
        None => println!(
            "{} clients per round, at least {} in each sum: k = {k} neighbours, t = {t}",
            config.clients, config.min_clients
        ),
    }
    let Some(s) = summary else {
        println!("DP off: weighted FedAvg, only secure aggregation hides each update");
        return Ok(());
    };
    println!(
        "ε = {:.4} at δ = {} over {} rounds, against the server (no amplification); {:.4} per round; zCDP ρ = {:.4}",
        s.epsilon, s.delta, s.rounds, s.epsilon_per_round, s.zcdp_rho
    );
    if let Some(c) = &s.check_ins {
        println!(
            "random check-ins at q = {}: ε = {:.4} at δ = {:.3e} against those who see only the released models",
            c.rate, c.epsilon, c.delta
        );
    }
    println!(
        "{:?} noise: z = {} (effective {:.4}) over h = {} honest shares ({} colluders assumed), s² = {:.4e} per client",
        s.mechanism, s.noise_multiplier, s.effective_noise_multiplier, s.honest_shares, s.colluders, s.local_variance
    );
    println!(
        "γ = {:.4e}, {} bits, m = {}, Δ₂ = {:.4} (inflation {:.4}), τ·m = {:.3e}, ≈ {:.3} coordinates wrap per round",
        s.gamma,
        s.bits,
        s.padded_dim,
        s.l2_sensitivity,
        s.sensitivity_inflation,
        s.tau_dim,
        s.expected_wrapped_per_round
    );
    Ok(())
}

fn privacy(args: PrivacyArgs) -> Result<()> {
    let z = args.noise_multiplier;
    let event = DpEvent::Gaussian { noise_multiplier: z, sampling_rate: args.sampling_rate };
    let bounds = epsilon_bounds(&event, args.rounds, args.delta)?;
    let (epsilon, analytic) = (bounds.rdp, bounds.analytic_gaussian);
    if args.json {
        let mut out = serde_json::json!({
            "epsilon": epsilon,
            "delta": args.delta,
            "noise_multiplier": z,
            "sampling_rate": args.sampling_rate,
            "rounds": args.rounds,
            "accountant": "rdp",
            "pld_epsilon": bounds.pld,
            "zcdp_rho": bounds.zcdp_rho,
        });
        if let Some(a) = analytic {
            out["analytic_gaussian_epsilon"] = serde_json::json!(a);
        }
        println!("{out}");
    } else {
        println!(
            "ε = {epsilon:.4} at δ = {} after {} rounds of the Poisson-subsampled Gaussian (z = {z}, q = {}), RDP accountant",
            args.delta, args.rounds, args.sampling_rate
        );
        if let Some(pld) = bounds.pld {
            println!("ε = {pld:.4} by the privacy-loss-distribution accountant (tighter)");
        }
        if let Some(a) = analytic {
            println!("ε = {a:.4} by the exact analytic Gaussian (full participation)");
        }
        println!(
            "(a calculator of the continuous Gaussian mechanism, like dp_accounting; `privagg plan` gives what `privagg serve` runs: the discrete noise, ε against the server at q = 1, and with --check-ins a second figure)"
        );
    }
    Ok(())
}

/// Prints the k and t that `privagg serve` would choose for these settings (the
/// server's own [`graph_for`]), and the `serve` flags that reproduce them.
fn params(args: ParamsArgs) -> Result<()> {
    let n = args.clients;
    if n < 2 {
        bail!("--clients must be at least 2, got {n}");
    }
    if !(0.0..1.0).contains(&args.corrupt_fraction) {
        bail!("--corrupt-fraction must be in [0, 1), got {}", args.corrupt_fraction);
    }
    let min_clients = match (args.min_clients, args.dropout_fraction) {
        (Some(m), _) if m == 0 || m > n => bail!("--min-clients must be in 1..={n}, got {m}"),
        (Some(m), _) => m,
        (None, Some(d)) if !(0.0..1.0).contains(&d) => bail!("--dropout-fraction must be in [0, 1), got {d}"),
        // The clients left when a fraction d drops, at least one.
        (None, Some(d)) => ((f64::from(n) * (1.0 - d)).ceil() as u32).clamp(1, n),
        (None, None) => (n * 4).div_ceil(5).max(1),
    };
    let threat = Threat::from(args.threat);
    let (k, t) = graph_for(n, min_clients, None, args.corrupt_fraction, threat.adversary())
        .map_err(|e| anyhow!("{e}"))
        .context("no safe neighbour graph for these settings")?;
    let threat_flag = match args.threat {
        ThreatArg::Malicious => "malicious",
        ThreatArg::Curious => "curious",
    };
    let flags = format!(
        "--clients {n} --min-clients {min_clients} --corrupt-fraction {} --threat {threat_flag}",
        args.corrupt_fraction
    );
    let complete = k + 1 == n;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "k": k,
                "t": t,
                "clients": n,
                "min_clients": min_clients,
                "complete_graph": complete,
                "serve_flags": flags,
            })
        );
    } else {
        let graph = if complete { "complete graph (original SecAgg)" } else { "Harary graph (SecAgg+)" };
        println!("k = {k} neighbours, threshold t = {t} — {graph} for {n} clients, at least {min_clients} per sum");
        println!("privagg serve {flags}   # gives this k and t");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code
    use super::*;

    #[test]
    fn a_token_on_the_command_line_is_refused_and_a_token_file_is_read() {
        let err = refuse_argv_token(Some("secret")).unwrap_err().to_string();
        assert!(err.contains("--token-file"), "{err}");
        assert!(refuse_argv_token(None).is_ok());
        let path = std::env::temp_dir().join(format!("privagg-token-test-{}", std::process::id()));
        std::fs::write(&path, "alpha\n").unwrap();
        assert_eq!(privagg_client::load_token(Some(&path)).unwrap().as_deref(), Some("alpha"));
        std::fs::write(&path, "  \n").unwrap();
        assert!(privagg_client::load_token(Some(&path)).is_err());
        let _ = std::fs::remove_file(&path);
    }
}

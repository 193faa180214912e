//! Running one grid point: start its server, connect n clients, run the rounds, and
//! turn each round's record and the resource counters into a [`RoundRow`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use privagg_client::{AdversaryClass, Client, ClientOptions, DropPoint, PrivateKey, SdkError};
use tokio::task::JoinSet;

use super::server::{RoundJson, ServerProcess, free_udp_addr};
use super::{Mode, Point, RoundRow};
use crate::plain::{PlainClient, PlainReport};
use crate::relay::{ImpairSpec, Relay, RelayStats};
use crate::{procfs, workload};

/// How to run the points.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// Rounds per point (one server session).
    pub rounds: u64,
    /// The `privagg` binary.
    pub privagg: PathBuf,
    /// Run `privagg serve` with `--no-dp` (weighted FedAvg, no noise) instead of DP.
    pub no_dp: bool,
    /// `privagg serve --bits` (default: the server's, 20 with DP and 48 without).
    pub bits: Option<u32>,
    /// Where each point's server state and log go (`<runs>/<label>/`).
    pub runs: PathBuf,
    /// Seconds a phase may take before the server drops the clients that are late.
    pub phase_timeout: f64,
    /// Size rounds for a server that only watches (`privagg serve --threat curious`, and
    /// clients that accept it) instead of one that may lie about dropouts.
    pub curious: bool,
    /// `privagg serve --neighbors` (default: the parameter finder's k for the threat).
    pub neighbors: Option<u32>,
    /// `privagg serve --upload-slots` (default: the server's).
    pub upload_slots: Option<usize>,
    /// Put an impairing UDP relay ([`crate::relay`]) between the clients and the server:
    /// clients dial the relay, which forwards to the server with these impairments.
    pub impair: Option<ImpairSpec>,
}

/// What a client's round ended with.
struct Outcome {
    bytes_sent: u64,
    bytes_received: u64,
}

/// Runs `point` for `settings.rounds` rounds; `progress` advances once per client per
/// round.
pub async fn run_point(point: Point, settings: &RunSettings, progress: &ProgressBar) -> Result<Vec<RoundRow>> {
    let state = settings.runs.join(point.label());
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).with_context(|| format!("cannot create {}", state.display()))?;
    let addr = free_udp_addr()?;
    // Against a malicious server, clients hold certificates from an authority of the run's.
    let authority = (point.mode == Mode::Masked && !settings.curious)
        .then(|| privagg_ca::Authority::create("privagg e2e benchmark authority", 1))
        .transpose()?;
    let mut command = server_command(point, settings, &state, addr)?;
    if let Some(authority) = &authority {
        let root = state.join("client-ca.der");
        std::fs::write(&root, authority.root_der()).with_context(|| format!("cannot write {}", root.display()))?;
        command.arg("--client-ca").arg(root);
    }
    let mut server = ServerProcess::spawn(command, &state, addr)?;
    let cert = server.certificate(Duration::from_secs(60)).await?;
    // The relay, if any, forwards to the server's port; clients dial the relay instead
    // (and keep the server's TLS name).
    let relay = settings.impair.map(|spec| Relay::start(spec.relay_config(addr))).transpose()?;
    let dial = Target { addr: relay.as_ref().map_or(addr, Relay::local_addr), relay: relay.as_ref() };
    let rows = match point.mode {
        Mode::Masked => {
            masked_rounds(point, settings, &mut server, dial, cert, authority.as_ref(), progress).await.map(
                |mut rows| {
                    // Without DP every round's sum must be exact; check it from the models.
                    if settings.no_dp {
                        check_sums(&state, &mut rows, point.m);
                    }
                    rows
                },
            )
        }
        Mode::Plain => plain_rounds(point, settings, &mut server, dial, cert, progress).await,
    };
    let peak = server.peak_rss();
    // The relay stays up until the server has ended its session (its closing frames
    // travel through it).
    server.finish(Duration::from_secs(10)).await;
    drop(relay);
    let mut rows = rows?;
    for row in &mut rows {
        row.server_peak_rss = row.server_peak_rss.max(peak);
    }
    Ok(rows)
}

/// Where clients connect: the server, or the relay in front of it.
#[derive(Clone, Copy)]
struct Target<'a> {
    addr: std::net::SocketAddr,
    relay: Option<&'a Relay>,
}

/// Without DP, a round's new model is the previous one plus the mean of the included
/// updates (server learning rate 1, weights 1). Every client sends the same update, so
/// the mean is that update whoever dropped: sets each row's `sum_error` to the largest
/// coordinate's difference. Mask removal gone wrong would leave pseudo-random words.
fn check_sums(state: &Path, rows: &mut [RoundRow], m: usize) {
    let update = workload::update(m);
    let model = |round: u64| -> Option<Vec<f32>> {
        if round == 0 {
            // The server starts from zeros (no --model).
            return Some(vec![0.0; m]);
        }
        privagg_server::storage::read_vector(&state.join(format!("model-{round}.npy"))).ok()
    };
    for row in rows {
        row.sum_error = match (model(row.round - 1), model(row.round)) {
            (Some(before), Some(after)) if before.len() == m && after.len() == m => Some(
                (0..m)
                    .map(|j| (f64::from(after[j]) - f64::from(before[j]) - f64::from(update[j])).abs())
                    .fold(0.0, f64::max),
            ),
            // A missing or malformed model is an infinite error, not a pass.
            _ => Some(f64::INFINITY),
        };
    }
}

fn server_command(point: Point, settings: &RunSettings, state: &Path, addr: std::net::SocketAddr) -> Result<Command> {
    let mut command;
    match point.mode {
        Mode::Masked => {
            command = Command::new(&settings.privagg);
            command.arg("serve").args(["--min-clients", &point.min_clients().to_string()]);
            command.args(["--phase-timeout", &settings.phase_timeout.to_string(), "--lobby-timeout", "600"]);
            if settings.no_dp {
                command.arg("--no-dp");
            }
            if let Some(bits) = settings.bits {
                command.args(["--bits", &bits.to_string()]);
            }
            if settings.curious {
                command.args(["--threat", "curious", "--insecure-open-admission"]);
            }
            if let Some(k) = settings.neighbors {
                command.args(["--neighbors", &k.to_string()]);
            }
            if let Some(slots) = settings.upload_slots {
                command.args(["--upload-slots", &slots.to_string()]);
            }
            // Quiet by default; `E2E_SERVER_LOG=info` (any RUST_LOG filter) shows why
            // the server dropped whom, in `<runs>/<point>/server.log`.
            command.env("RUST_LOG", std::env::var("E2E_SERVER_LOG").unwrap_or_else(|_| "warn".into()));
        }
        Mode::Plain => {
            command = Command::new(std::env::current_exe()?);
            command.arg("plain-server");
        }
    }
    command.args(["--listen", &addr.to_string(), "--state"]).arg(state);
    command.args(["--dim", &point.m.to_string(), "--clients", &point.n.to_string()]);
    command.args(["--rounds", &settings.rounds.to_string()]);
    Ok(command)
}

/// Counters read at the start of a round.
struct Start {
    at: Instant,
    own_cpu: f64,
    server_cpu: f64,
    relay: Option<RelayStats>,
}

impl Start {
    fn now(server: &ServerProcess, relay: Option<&Relay>) -> Self {
        Self {
            at: Instant::now(),
            own_cpu: procfs::cpu_seconds(std::process::id()).unwrap_or(f64::NAN),
            server_cpu: server.cpu_seconds(),
            relay: relay.map(Relay::stats),
        }
    }

    /// The row of a finished round.
    fn row(
        &self,
        point: Point,
        server: &ServerProcess,
        relay: Option<&Relay>,
        record: &RoundJson,
        outcomes: &[Outcome],
    ) -> RoundRow {
        let relayed = match (relay, self.relay) {
            (Some(relay), Some(before)) => relay.stats() - before,
            _ => RelayStats::default(),
        };
        let wall_s = self.at.elapsed().as_secs_f64();
        let own_cpu = procfs::cpu_seconds(std::process::id()).unwrap_or(f64::NAN) - self.own_cpu;
        let timing = |name: &str| record.timings.get(name).copied().unwrap_or(0.0);
        let median = |f: fn(&Outcome) -> u64| {
            let mut v: Vec<u64> = outcomes.iter().map(f).collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        RoundRow {
            mode: point.mode.name().into(),
            n: point.n,
            m: point.m,
            dropout_pct: point.dropout_pct,
            dropped: point.dropped(),
            dropped_after_share_keys: record.dropped.iter().filter(|d| d.phase == "masked_input").count() as u32,
            round: record.round,
            k: record.neighbours,
            t: record.threshold,
            bits: record.bits,
            inputs: record.included.len() as u32,
            round_s: timing("total"),
            advertise_keys_s: timing("advertise_keys"),
            share_keys_s: timing("share_keys"),
            masked_input_s: timing("masked_input"),
            unmask_s: timing("unmask"),
            reconstruct_s: timing("reconstruct"),
            collect_s: timing("collect"),
            wall_s,
            client_cpu_s: own_cpu / f64::from(point.n),
            server_cpu_s: server.cpu_seconds() - self.server_cpu,
            bytes_sent: median(|o| o.bytes_sent),
            bytes_received: median(|o| o.bytes_received),
            f32_payload: point.f32_payload(),
            server_peak_rss: server.peak_rss(),
            relay_datagrams: relayed.received(),
            relay_lost: relayed.to_server.lost + relayed.to_client.lost,
            relay_queue_dropped: relayed.to_server.queue_dropped + relayed.to_client.queue_dropped,
            relay_reordered: relayed.to_server.reordered + relayed.to_client.reordered,
            sum_error: None,
        }
    }
}

/// A masked-round participant: an SDK client, which may be set to vanish once the
/// server has forwarded its neighbours' envelopes (in U2, not in U3: the expensive
/// dropout, whose pairwise masks the server must rebuild and remove).
struct Participant(Box<Client>);

impl Participant {
    /// One round; `None` for a dropout. Reconnects a dropout unless `last`.
    async fn round(&mut self, update: &[f32], last: bool) -> Result<Option<Outcome>> {
        match self.0.submit(ndarray::ArrayView1::from(update), 1.0).await {
            Ok(report) => Ok(Some(Outcome { bytes_sent: report.bytes_sent, bytes_received: report.bytes_received })),
            Err(SdkError::TestingDropout) => {
                if !last {
                    self.0.reconnect().await?;
                }
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

async fn masked_rounds(
    point: Point,
    settings: &RunSettings,
    server: &mut ServerProcess,
    target: Target<'_>,
    cert: Vec<u8>,
    authority: Option<&privagg_ca::Authority>,
    progress: &ProgressBar,
) -> Result<Vec<RoundRow>> {
    let addr = target.addr;
    let connect = |i: u32| {
        let mut options = ClientOptions::new(addr, cert.clone());
        options.connect_deadline = Duration::from_secs(30);
        options.idle_timeout = Duration::from_secs(600);
        options.drop_point = (i < point.dropped()).then_some(DropPoint::BeforeMaskedInput);
        if settings.curious {
            options.policy.server = AdversaryClass::CuriousServer;
        }
        options.privacy.allow_no_dp = settings.no_dp;
        let credential = authority.map(|a| (a.issue(&format!("client-{i}"), 1), a.root_der().to_vec()));
        async move {
            if let Some((credential, root)) = credential {
                let credential = credential?;
                options.cert = Some(credential.cert);
                options.key = Some(PrivateKey::from_pkcs8_der(credential.key.to_vec()));
                options.client_ca = Some(root);
            }
            Ok(Participant(Box::new(Client::connect(options).await?)))
        }
    };
    let play = |mut client: Participant, _: u32, update: Arc<Vec<f32>>, last: bool| async move {
        let outcome = client.round(&update, last).await?;
        Ok((client, outcome))
    };
    let (rows, clients) = drive_rounds(point, settings, server, target.relay, progress, connect, play).await?;
    // The server ends the session and closes the connections.
    drop(clients);
    Ok(rows)
}

async fn plain_rounds(
    point: Point,
    settings: &RunSettings,
    server: &mut ServerProcess,
    target: Target<'_>,
    cert: Vec<u8>,
    progress: &ProgressBar,
) -> Result<Vec<RoundRow>> {
    let addr = target.addr;
    let connect = |_: u32| {
        let cert = cert.clone();
        async move { Ok(PlainClient::connect(addr, &cert).await?) }
    };
    let play = move |mut client: PlainClient, i: u32, update: Arc<Vec<f32>>, last: bool| async move {
        let report: Option<PlainReport> = client.round(&update, 1.0, i < point.dropped()).await?;
        if report.is_none() && !last {
            client.reconnect().await?;
        }
        Ok((client, report.map(|r| Outcome { bytes_sent: r.bytes_sent, bytes_received: r.bytes_received })))
    };
    let (rows, clients) = drive_rounds(point, settings, server, target.relay, progress, connect, play).await?;
    let mut closing = JoinSet::new();
    for client in clients {
        closing.spawn(client.close());
    }
    while closing.join_next().await.is_some() {}
    if rows.iter().any(|r| r.inputs != point.n - point.dropped()) {
        bail!("{}: a plain round summed the wrong number of inputs", point.label());
    }
    Ok(rows)
}

/// Connects `point.n` clients (`connect(i)` for client i), then plays `settings.rounds`
/// rounds, all clients at once (`play(client, i, update, last)`, `None` for a dropout),
/// and turns each round into a row. Returns the rows and the clients, still connected.
/// How many clients connect and say hello at once.
const CONCURRENT_ARRIVALS: usize = 32;

async fn drive_rounds<C, Connecting, Playing>(
    point: Point,
    settings: &RunSettings,
    server: &mut ServerProcess,
    relay: Option<&Relay>,
    progress: &ProgressBar,
    connect: impl Fn(u32) -> Connecting,
    play: impl Fn(C, u32, Arc<Vec<f32>>, bool) -> Playing,
) -> Result<(Vec<RoundRow>, Vec<C>)>
where
    C: Send + 'static,
    Connecting: Future<Output = Result<C>> + Send + 'static,
    Playing: Future<Output = Result<(C, Option<Outcome>)>> + Send + 'static,
{
    // Clients arrive a few dozen at a time, not all in the same millisecond: with a
    // thousand TLS handshakes at once on this process's share of two cores, some
    // clients could not send their Hello within the server's hello timeout (5 s), which
    // measures this process's scheduling rather than the server.
    let arrivals = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_ARRIVALS));
    let mut connecting = JoinSet::new();
    for i in 0..point.n {
        let (client, arrivals) = (connect(i), arrivals.clone());
        connecting.spawn(async move {
            let _arriving = arrivals.acquire_owned().await?;
            client.await.map(|c| (i, c))
        });
    }
    let mut clients = Vec::with_capacity(point.n as usize);
    while let Some(client) = connecting.join_next().await {
        clients.push(client?.with_context(|| format!("{}: a client could not connect", point.label()))?);
    }
    let update = Arc::new(workload::update(point.m));
    let mut rows = Vec::new();
    for round in 1..=settings.rounds {
        let start = Start::now(server, relay);
        let mut tasks = JoinSet::new();
        for (i, client) in clients.drain(..) {
            let playing = play(client, i, update.clone(), round == settings.rounds);
            tasks.spawn(async move { playing.await.map(|(c, outcome)| ((i, c), outcome)) });
        }
        let mut outcomes = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (client, outcome) =
                done?.with_context(|| format!("{}: a client failed in round {round}", point.label()))?;
            clients.push(client);
            outcomes.extend(outcome);
            progress.inc(1);
        }
        let record = server.record(round, Duration::from_secs(60)).await?;
        rows.push(start.row(point, server, relay, &record, &outcomes));
    }
    Ok((rows, clients.into_iter().map(|(_, c)| c).collect()))
}

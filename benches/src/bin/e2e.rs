//! End-to-end benchmark: secure rounds (`privagg serve` + SDK clients) and plain f32
//! aggregation over the same QUIC transport, for a grid of n, m and dropout rates.
//!
//! ```text
//! cargo build --release -p privagg-cli -p privagg-benches
//! cargo run --release -p privagg-benches --bin e2e              # full grid → benches/results/
//! cargo run --release -p privagg-benches --bin e2e -- --quick   # n = 10, m = 10^4: well under a minute
//! cargo run --release -p privagg-benches --bin e2e -- --plain --n 100 --m 100000
//! ```
//!
//! Writes `e2e.csv` (one row per round), `e2e-summary.md` (medians with min–max) and
//! SVG plots into `--out`, and prints the summary.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use privagg_benches::e2e::run::{RunSettings, run_point};
use privagg_benches::e2e::server::privagg_binary;
use privagg_benches::e2e::{Mode, Point, plot, report};
use privagg_benches::plain::{PlainServerConfig, serve};
use privagg_benches::relay::ImpairSpec;

#[derive(Parser)]
#[command(name = "e2e", about = "End-to-end rounds over QUIC: privagg's secure aggregation versus plain f32 sums")]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// The small corner only: n = 10, m = 10^4, dropouts 0 and 10 %, 2 rounds each.
    #[arg(long)]
    quick: bool,
    /// Plain aggregation only.
    #[arg(long, conflicts_with = "masked")]
    plain: bool,
    /// Secure aggregation only.
    #[arg(long)]
    masked: bool,
    /// Cohort sizes [default: 10,100,300].
    #[arg(long, value_delimiter = ',')]
    n: Vec<u32>,
    /// Model sizes [default: 10000,100000,1000000].
    #[arg(long, value_delimiter = ',')]
    m: Vec<usize>,
    /// Dropout percentages [default: 0,10,30].
    #[arg(long, value_delimiter = ',')]
    dropout: Vec<u32>,
    /// Rounds per grid point [default: 3; 2 with --quick].
    #[arg(long)]
    rounds: Option<u64>,
    /// Output directory [default: benches/results; a temporary directory with --quick].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The privagg binary [default: next to this one, built if missing].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Run privagg without DP (weighted FedAvg, 48 bits unless --bits) instead of DP (20 bits).
    #[arg(long)]
    no_dp: bool,
    /// Bits per word of the modular sum (privagg serve --bits).
    #[arg(long)]
    bits: Option<u32>,
    /// Seconds a protocol phase may take.
    #[arg(long, default_value_t = 120.0)]
    phase_timeout: f64,
    /// Size rounds for a curious server (smaller k and t) instead of one that may lie
    /// about dropouts (privagg serve --threat curious, and clients that accept it).
    #[arg(long)]
    curious: bool,
    /// Neighbours per client (privagg serve --neighbors): with --curious, the k of the
    /// default sizing isolates what authentication costs from what a larger graph costs.
    #[arg(long)]
    neighbors: Option<u32>,
    /// Uploads granted at once (privagg serve --upload-slots; default: the server's, sized
    /// by its upload memory budget). `--upload-slots 4` runs the server as it was before
    /// the budget.
    #[arg(long)]
    upload_slots: Option<usize>,
    /// Put an impairing UDP relay between the clients and the server, e.g.
    /// `rtt=100ms,loss=2%[,jitter=10ms,reorder=1%,reorder-delay=10ms,rate=10mbit,queue=100ms,seed=1]`:
    /// each direction gets half the RTT, the jitter (uniform in [0, jitter]), the loss,
    /// the reordering and the bottleneck (see privagg_benches::relay::ImpairSpec).
    #[arg(long)]
    impair: Option<ImpairSpec>,
}

#[derive(Subcommand)]
enum Sub {
    /// Run the plain aggregation server (started by the harness).
    #[command(hide = true)]
    PlainServer {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        dim: usize,
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        rounds: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Clients encode and mask on tokio's blocking pool; a few threads keep the n
    // clients' working memory bounded without starving 2 cores.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(4).build()?;
    if let Some(Sub::PlainServer { listen, state, dim, clients, rounds }) = cli.command {
        return runtime
            .block_on(serve(PlainServerConfig { listen, state, clients, dim, rounds }))
            .context("plain server");
    }
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let pick = |given: Vec<u64>, quick: &[u64], full: &[u64]| {
        if !given.is_empty() {
            given
        } else if cli.quick {
            quick.to_vec()
        } else {
            full.to_vec()
        }
    };
    let ns = pick(cli.n.iter().map(|&n| u64::from(n)).collect(), &[10], &[10, 100, 300]);
    let ms = pick(cli.m.iter().map(|&m| m as u64).collect(), &[10_000], &[10_000, 100_000, 1_000_000]);
    let drops = pick(cli.dropout.iter().map(|&d| u64::from(d)).collect(), &[0, 10], &[0, 10, 30]);
    let rounds = cli.rounds.unwrap_or(if cli.quick { 2 } else { 3 });
    let modes: Vec<Mode> = match (cli.plain, cli.masked) {
        (true, _) => vec![Mode::Plain],
        (_, true) => vec![Mode::Masked],
        _ => vec![Mode::Masked, Mode::Plain],
    };
    let out = match cli.out {
        Some(out) => out,
        None if cli.quick => std::env::temp_dir().join("privagg-e2e-quick"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let privagg = if modes.contains(&Mode::Masked) { privagg_binary(cli.server_bin)? } else { PathBuf::new() };
    let settings = RunSettings {
        rounds,
        privagg,
        no_dp: cli.no_dp,
        bits: cli.bits,
        runs: std::env::temp_dir().join(format!("privagg-e2e-runs-{}", std::process::id())),
        phase_timeout: cli.phase_timeout,
        curious: cli.curious,
        neighbors: cli.neighbors,
        upload_slots: cli.upload_slots,
        impair: cli.impair,
    };
    if let Some(impair) = &cli.impair {
        eprintln!("clients dial an impairing relay: {impair}");
    }
    // Masked next to plain for each configuration, so that each ratio is measured close in time.
    let mut points = Vec::new();
    for &n in &ns {
        for &m in &ms {
            for &d in &drops {
                for &mode in &modes {
                    points.push(Point { mode, n: n as u32, m: m as usize, dropout_pct: d as u32 });
                }
            }
        }
    }
    let total_clients: u64 = points.iter().map(|p| u64::from(p.n) * rounds).sum();
    let progress = ProgressBar::new(total_clients);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} client-rounds  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    progress.enable_steady_tick(Duration::from_millis(250));
    let started = Instant::now();
    let mut rows = Vec::new();
    for point in &points {
        progress.set_message(point.label());
        let point_rows = run_point(*point, &settings, &progress).await?;
        if let Some(last) = point_rows.last() {
            let line = format!(
                "{:<28} round {:>7.3} s (last), sent {:>10} B/client, server peak {:>6.0} MiB",
                point.label(),
                last.round_s,
                last.bytes_sent,
                last.server_peak_rss as f64 / (1 << 20) as f64
            );
            let line = match settings.impair {
                Some(_) => {
                    let relay =
                        |f: fn(&privagg_benches::e2e::RoundRow) -> u64| -> u64 { point_rows.iter().map(f).sum() };
                    format!(
                        "{line}\n    relay over {} rounds: {} datagrams, {} lost, {} queue-dropped, {} reordered; inputs {:?}{}",
                        point_rows.len(),
                        relay(|r| r.relay_datagrams),
                        relay(|r| r.relay_lost),
                        relay(|r| r.relay_queue_dropped),
                        relay(|r| r.relay_reordered),
                        point_rows.iter().map(|r| r.inputs).collect::<Vec<_>>(),
                        point_rows
                            .iter()
                            .filter_map(|r| r.sum_error)
                            .reduce(f64::max)
                            .map(|e| format!(", largest sum error {e:.1e}"))
                            .unwrap_or_default(),
                    )
                }
                None => line,
            };
            // Without a terminal the bar is hidden, and so is what it prints.
            if progress.is_hidden() { eprintln!("{line}") } else { progress.println(line) }
        }
        rows.extend(point_rows);
        // Keep partial results if a later point fails.
        std::fs::write(out.join("e2e.csv"), report::csv(&rows))?;
    }
    progress.finish_and_clear();
    let summaries = report::summarize(&rows);
    let table = report::markdown(&summaries);
    std::fs::write(out.join("e2e-summary.md"), &table)?;
    let middle = |v: &[u64]| v[v.len() / 2];
    let plots = plot::draw_all(&summaries, &out, middle(&ms) as usize, middle(&ns) as u32)?;
    println!("{table}");
    println!(
        "{} grid points × {rounds} rounds in {:.1} s; wrote e2e.csv, e2e-summary.md, {} in {}",
        points.len(),
        started.elapsed().as_secs_f64(),
        plots.join(", "),
        out.display()
    );
    let _ = std::fs::remove_dir_all(&settings.runs);
    // Without DP the released mean must be the inputs' up to quantization (as the
    // tests' 1e-6 for updates in [−1, 1]); anything else is a wrong sum, not noise.
    if let Some(bad) = rows.iter().find(|r| r.sum_error.is_some_and(|e| e.is_nan() || e >= 1e-6)) {
        anyhow::bail!(
            "round {} of n = {}, m = {}: the model moved by something other than the mean of the inputs (largest error {:?})",
            bad.round,
            bad.n,
            bad.m,
            bad.sum_error
        );
    }
    Ok(())
}

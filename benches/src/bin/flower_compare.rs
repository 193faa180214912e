//! Side by side with Flower's SecAgg+: runs `flower_bench.py` (Flower's own primitives,
//! see its header for installing flwr), then the matching privagg workloads with the
//! same method (one warm-up call, then the median and minimum of the same number of
//! wall-clock repeats), and prints Flower ÷ privagg for each (m, k).
//!
//! ```text
//! cargo run --release -p privagg-benches --bin flower_compare -- \
//!     --python ~/.venvs/flwr/bin/python --script ../shared/peers/flower_bench.py [--quick]
//! ```
//!
//! privagg columns: `mask` = one client's k key agreements + HKDF + k + 1 fused mask
//! expansions on one core (Flower's client column also quantizes, so `encode + mask`
//! adds privagg's clip + rotate + quantize; `DP encode + mask` adds the exact discrete
//! Gaussian noise Flower does not have); `server` = one dropped client at k (Shamir
//! reconstruction, k key agreements, k expansions), on both cores as the server runs it
//! and on one; `setup` = ShareKeys (2 key pairs, 2 Shamir splits, k channel keys and
//! envelopes).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use privagg_benches::stats::Spread;
use privagg_benches::workload::{
    ClientMasking, ClientSetup, DroppedClient, bench_rng, dp_encoder, encode, input_words, noiseless_encoder, update,
};
use privagg_crypto::PrgKind;
use serde::Deserialize;

#[derive(Parser)]
#[command(name = "flower_compare", about = "Flower's SecAgg+ primitives versus privagg's, in one session")]
struct Cli {
    /// Python with flwr 1.42.0 installed.
    #[arg(long)]
    python: PathBuf,
    /// flower_bench.py.
    #[arg(long)]
    script: PathBuf,
    /// Tiny grid, one repeat (smoke run).
    #[arg(long)]
    quick: bool,
    /// Also write the raw numbers of both sides here (JSON).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct FlowerRow {
    m: usize,
    k: usize,
    threshold: usize,
    repeats: usize,
    client_mask_s: f64,
    client_mask_min_s: f64,
    server_dropout_s: f64,
    server_dropout_min_s: f64,
    client_setup_s: f64,
}

#[derive(Debug, Deserialize)]
struct FlowerJson {
    env: serde_json::Value,
    rows: Vec<FlowerRow>,
}

/// Median and minimum of `repeats` calls after one warm-up, wall clock.
fn time(repeats: usize, mut f: impl FnMut()) -> Spread {
    f();
    let samples: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    Spread::of(&samples).unwrap_or(Spread { median: f64::NAN, min: f64::NAN, max: f64::NAN })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let out = std::env::temp_dir().join(format!("flower-bench-{}.json", std::process::id()));
    let mut flower = Command::new(&cli.python);
    flower.arg(&cli.script).arg("--json").arg(&out);
    if cli.quick {
        flower.arg("--quick");
    }
    eprintln!("running {flower:?} (load average {})…", loadavg());
    let status = flower.status().context("cannot run the Flower benchmark")?;
    if !status.success() {
        bail!("the Flower benchmark failed ({status}); is flwr installed for {}?", cli.python.display());
    }
    let flower: FlowerJson = serde_json::from_slice(&std::fs::read(&out)?).context("unreadable Flower results")?;
    let _ = std::fs::remove_file(&out);

    eprintln!("running the matching privagg workloads (load average {})…", loadavg());
    let mut table = String::from(
        "| m | k | t | Flower client (ms) | privagg mask (ms) | ratio | privagg encode + mask (ms) | ratio | privagg DP encode + mask (ms) | ratio | Flower server, 1 dropout (ms) | privagg server, 2 cores (ms) | ratio | privagg server, 1 core (ms) | ratio | Flower setup (ms) | privagg setup (ms) | ratio |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut raw = Vec::new();
    for row in &flower.rows {
        let (m, k, reps) = (row.m, row.k, row.repeats);
        let mut rng = bench_rng(k as u64);
        let client = ClientMasking::new(k, &mut rng);
        let dropped = DroppedClient::new(k, &mut rng);
        let setup = ClientSetup::new(k, &mut rng);
        let input = update(m);
        let plain_encoder = noiseless_encoder(m, 100)?;
        let dp = dp_encoder(m, 100)?;
        let mut words = input_words(m);
        let mask = time(reps, || client.mask(PrgKind::Aes128Ctr, &mut words).expect("masks"));
        let encode_mask = time(reps, || {
            let mut encoded = encode(&plain_encoder, &input, 1).expect("encodes").words.clone();
            client.mask(PrgKind::Aes128Ctr, &mut encoded).expect("masks");
        });
        let dp_encode_mask = time(reps, || {
            let mut encoded = encode(&dp, &input, 1).expect("encodes").words.clone();
            client.mask(PrgKind::Aes128Ctr, &mut encoded).expect("masks");
        });
        let server2 = time(reps, || dropped.remove(PrgKind::Aes128Ctr, &mut words, true).expect("unmasks"));
        let server1 = time(reps, || dropped.remove(PrgKind::Aes128Ctr, &mut words, false).expect("unmasks"));
        let setup_t = time(reps.max(3), || {
            setup.run(&mut rng).expect("sets up");
        });
        let ms = |s: &Spread| format!("{:.2} ({:.2})", s.median * 1e3, s.min * 1e3);
        let ratio = |flower: f64, ours: &Spread| {
            let r = flower / ours.median;
            if r < 10.0 { format!("{r:.1}×") } else { format!("{r:.0}×") }
        };
        table.push_str(&format!(
            "| {m} | {k} | {} | {:.1} ({:.1}) | {} | {} | {} | {} | {} | {} | {:.1} ({:.1}) | {} | {} | {} | {} | {:.1} | {} | {} |\n",
            row.threshold,
            row.client_mask_s * 1e3,
            row.client_mask_min_s * 1e3,
            ms(&mask),
            ratio(row.client_mask_s, &mask),
            ms(&encode_mask),
            ratio(row.client_mask_s, &encode_mask),
            ms(&dp_encode_mask),
            ratio(row.client_mask_s, &dp_encode_mask),
            row.server_dropout_s * 1e3,
            row.server_dropout_min_s * 1e3,
            ms(&server2),
            ratio(row.server_dropout_s, &server2),
            ms(&server1),
            ratio(row.server_dropout_s, &server1),
            row.client_setup_s * 1e3,
            ms(&setup_t),
            ratio(row.client_setup_s, &setup_t),
        ));
        raw.push(serde_json::json!({
            "m": m, "k": k, "flower": row,
            "privagg": {"mask": mask, "encode_mask": encode_mask, "dp_encode_mask": dp_encode_mask,
                        "server_2cores": server2, "server_1core": server1, "setup": setup_t},
        }));
    }
    println!("Flower env: {}", flower.env);
    println!("load average at the end: {}\n", loadavg());
    println!("Median (min) wall time; ratio = Flower median ÷ privagg median.\n");
    println!("{table}");
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&serde_json::json!({"env": flower.env, "rows": raw}))?)?;
    }
    Ok(())
}

//! Prints the micro-benchmark tables of `BENCHMARKS.md` from criterion's saved results:
//! every benchmark's median and min–max, and masking ÷ raw keystream for every
//! `client_mask` point, with `openssl speed -evp aes-128-ctr` measured now as the
//! outside reference.
//!
//! ```text
//! cargo bench -p privagg-benches
//! cargo run --release -p privagg-benches --bin bench_report -- [--criterion DIR] [--no-openssl]
//! ```

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Parser;
use privagg_benches::criterion_results::{load, masking_ratios, openssl_aes_ctr_gbps, table};

#[derive(Parser)]
#[command(name = "bench_report", about = "Tables and ratios from criterion's results")]
struct Cli {
    /// criterion's output directory [default: $CARGO_TARGET_DIR/criterion, else target/criterion].
    #[arg(long)]
    criterion: Option<PathBuf>,
    /// Do not run openssl.
    #[arg(long)]
    no_openssl: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let dir = cli.criterion.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join("criterion")
    });
    let results = load(&dir);
    if results.is_empty() {
        bail!("no criterion results in {}; run `cargo bench -p privagg-benches` first", dir.display());
    }
    let openssl = if cli.no_openssl { None } else { openssl_aes_ctr_gbps(3) };
    println!("## Micro-benchmarks ({})\n", dir.display());
    println!("{}", table(&results));
    match openssl {
        Some(gbps) => println!("openssl speed -evp aes-128-ctr, 16 KiB blocks (median of 3 × 2 s): {gbps:.2} GB/s\n"),
        None => println!("(openssl not measured)\n"),
    }
    println!("## Masking versus raw keystream (same run)\n");
    println!("{}", masking_ratios(&results, openssl));
    Ok(())
}

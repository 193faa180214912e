//! Times one in-memory round of the protocol.
//!
//! `cargo run --release -p privagg-protocol --example simulate -- [n] [m] [k] [dropout%] [bits]`
//! (defaults: 100 clients, 100 000 words, k = 20, 10 % dropping after ShareKeys, 32 bits).

use std::collections::BTreeMap;
use std::time::Instant;

use privagg_protocol::graph_params::{corrupt_neighbour_bound, split_view_threshold};
use privagg_protocol::simulator::{DropKind, DropPoint, Dropout, Simulation, simulate};
use privagg_protocol::{ClientId, ClientPolicy, PrgKind, RoundParams};

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() {
    let n: u32 = arg(1, 100);
    let dim: u32 = arg(2, 100_000);
    let k: u32 = arg(3, 20);
    let dropout_percent: u32 = arg(4, 10);
    let bits: u8 = arg(5, 32);
    let dropped = n * dropout_percent / 100;
    // The threshold clients accept against a server that may lie about dropouts, with 5 %
    // of clients corrupt.
    let policy = ClientPolicy::default();
    let corrupt = corrupt_neighbour_bound(n, k, policy.corrupt_fraction).unwrap_or(0);
    let threshold = split_view_threshold(k, corrupt);
    let params = RoundParams {
        round: 1,
        num_clients: n,
        neighbours: k,
        threshold,
        min_clients: threshold.max(n - dropped),
        dim,
        bits,
        prg: PrgKind::default(),
    };
    let mask = params.word_mask();
    let inputs = (0..n).map(|c| (0..dim).map(|i| (u64::from(c) * 7919 + u64::from(i)) & mask).collect()).collect();
    // Spread the dropouts evenly over the ids; they vanish after sharing keys.
    let dropouts = (0..dropped)
        .filter_map(|i| ClientId::new(1 + i * n / dropped.max(1)))
        .map(|c| (c, Dropout { point: DropPoint::BeforeMaskedInput, kind: DropKind::ConnectionLost }))
        .collect::<BTreeMap<_, _>>();
    let sim = Simulation { params, inputs, dropouts, seed: 1, policy, identities: Vec::new() };
    let start = Instant::now();
    let outcome = match simulate(&sim) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("simulation failed: {e}");
            std::process::exit(1);
        }
    };
    let elapsed = start.elapsed();
    match &outcome.result {
        Ok(output) => {
            let exact = output.sum == outcome.expected_sum;
            println!(
                "n={n} m={dim} k={k} t={threshold} b={bits} dropped={dropped}: {:.3} s for the whole round \
                 ({} inputs in the sum, exact: {exact}); {:.1} KiB/client up, {:.1} KiB/client down",
                elapsed.as_secs_f64(),
                output.included.len(),
                outcome.traffic.to_server as f64 / 1024.0 / f64::from(n),
                outcome.traffic.from_server as f64 / 1024.0 / f64::from(n),
            );
            if !exact {
                std::process::exit(1);
            }
        }
        Err(abort) => {
            eprintln!("round aborted: {abort}");
            std::process::exit(1);
        }
    }
}

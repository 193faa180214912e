//! Times in-memory rounds of the protocol at one (n, m, k, t): anonymous clients (what
//! `--threat curious` runs) against clients certified by an enrollment authority (the
//! default: signed keys, the consistency round, t survivor signatures checked), so that
//! the difference is what authentication costs and nothing else. Clients run one after
//! another on one core; the server's unmasking uses every core.
//!
//! `cargo run --release -p privagg-protocol --example simulate -- [n] [m] [k] [dropout%] [bits] [repeats]`
//! (defaults: 100 clients, 100 000 words, k = 20, 10 % dropping after ShareKeys, 32 bits,
//! 3 repeats). The first certified round verifies every certificate chain; later ones
//! find them remembered, as a client meeting the same peers round after round does.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use privagg_ca::Authority;
use privagg_protocol::graph_params::{corrupt_neighbour_bound, split_view_threshold};
use privagg_protocol::simulator::{DropKind, DropPoint, Dropout, Simulation, simulate};
use privagg_protocol::{AdversaryClass, ClientId, ClientPolicy, Identity, PrgKind, RoundParams};

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("{what}: {e}");
    std::process::exit(1);
}

fn main() {
    let n: u32 = arg(1, 100);
    let dim: u32 = arg(2, 100_000);
    let k: u32 = arg(3, 20);
    let dropout_percent: u32 = arg(4, 10);
    let bits: u8 = arg(5, 32);
    let repeats: usize = arg(6, 3);
    let dropped = n * dropout_percent / 100;
    // The threshold clients accept against a server that may lie about dropouts, with 5 %
    // of clients corrupt; both kinds of client run at it.
    let certified_policy = ClientPolicy::default();
    let corrupt = corrupt_neighbour_bound(n, k, certified_policy.corrupt_fraction).unwrap_or(0);
    let threshold = split_view_threshold(k, corrupt);
    let anonymous_policy = ClientPolicy { server: AdversaryClass::CuriousServer, ..certified_policy.clone() };
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
    let inputs: Vec<Vec<u64>> =
        (0..n).map(|c| (0..dim).map(|i| (u64::from(c) * 7919 + u64::from(i)) & mask).collect()).collect();
    // Spread the dropouts evenly over the ids; they vanish after sharing keys.
    let dropouts = (0..dropped)
        .filter_map(|i| ClientId::new(1 + i * n / dropped.max(1)))
        .map(|c| (c, Dropout { point: DropPoint::BeforeMaskedInput, kind: DropKind::ConnectionLost }))
        .collect::<BTreeMap<_, _>>();
    let authority = Authority::create("simulation authority", 1).unwrap_or_else(|e| fail("authority", e));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let identities: Vec<Identity> = (1..=n)
        .map(|i| {
            let issued = authority.issue(&format!("client-{i}"), 1).unwrap_or_else(|e| fail("certificate", e));
            Identity::from_der(&issued.cert, &issued.key, authority.root_der(), now)
                .unwrap_or_else(|e| fail("identity", e))
        })
        .collect();
    let run = |policy: &ClientPolicy, identities: Vec<Identity>| {
        let sim = Simulation {
            params: params.clone(),
            inputs: inputs.clone(),
            dropouts: dropouts.clone(),
            seed: 1,
            policy: policy.clone(),
            identities,
        };
        let start = Instant::now();
        let outcome = simulate(&sim).unwrap_or_else(|e| fail("simulation failed", e));
        let elapsed = start.elapsed().as_secs_f64();
        let output = outcome.result.as_ref().unwrap_or_else(|e| fail("round aborted", e));
        if output.sum != outcome.expected_sum {
            fail("wrong sum", "the round did not recover the exact sum");
        }
        (elapsed, outcome.traffic)
    };
    println!("n={n} m={dim} k={k} t={threshold} b={bits} dropped={dropped} (after ShareKeys)");
    let (mut anonymous, mut certified) = (Vec::new(), Vec::new());
    for i in 0..repeats {
        let (a, traffic_a) = run(&anonymous_policy, Vec::new());
        let (c, traffic_c) = run(&certified_policy, identities.clone());
        println!(
            "repeat {i}: anonymous {a:.3} s, certified {c:.3} s{} ({:.1} / {:.1} KiB per client down)",
            if i == 0 { " (first sight of every certificate)" } else { "" },
            traffic_a.from_server as f64 / 1024.0 / f64::from(n),
            traffic_c.from_server as f64 / 1024.0 / f64::from(n),
        );
        anonymous.push(a);
        if i > 0 {
            certified.push(c);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (a, c) = (median(&mut anonymous), median(&mut certified));
    println!(
        "median: anonymous {a:.3} s, certified (chains remembered) {c:.3} s: +{:.2} ms per client, ratio {:.3}",
        (c - a) * 1e3 / f64::from(n),
        c / a
    );
}

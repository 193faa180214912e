//! Rounds over an impaired network: a masked round (DP off, malicious-server sizing with
//! certified clients and the consistency round) through the benches' userspace UDP relay
//! at 100 ms round-trip time, 2 % loss each way, jitter and reordering. Every client must
//! finish and the new model must be the exact mean of the inputs (up to quantization, as
//! in `fedavg.rs`): QUIC's retransmissions and the server's deadlines absorb the losses.
//!
//! The relay's decisions come from a fixed seed, but which datagrams it sees depends on
//! timing, so the test asserts only what holds whatever it drops: the round's outcome.
#![allow(clippy::unwrap_used)] // test code

use std::time::Duration;

use privagg_benches::relay::{Impairment, Jitter, Relay, RelayConfig};
use privagg_e2e::{config, max_error, mean, start, submit, updates};

/// 100 ms RTT (50 ms each way) plus up to 10 ms of jitter, 2 % loss and 1 % of datagrams
/// held back 10 ms, in each direction.
fn wan() -> Impairment {
    Impairment {
        delay: Duration::from_millis(50),
        jitter: Jitter::Uniform { max: Duration::from_millis(10) },
        loss: 0.02,
        reorder: 0.01,
        reorder_delay: Duration::from_millis(10),
        rate: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masked_round_through_100_ms_rtt_and_2_percent_loss_releases_the_exact_mean() {
    let (dim, n) = (200, 6);
    let mut cfg = config("impaired", dim, n, n - 1);
    // Generous deadlines: the test asserts the outcome, not how fast it came.
    cfg.phase_timeout = 30.0;
    cfg.lobby_timeout = 30.0;
    let mut running = start(cfg).await;
    let relay = Relay::start(RelayConfig::symmetric(running.addr, wan(), 12)).unwrap();
    let ups = updates(n as usize, dim, 12);
    let clients: Vec<_> = ups
        .iter()
        .map(|u| {
            submit(&running, u.clone(), 1.0, |o| {
                // Dial the relay; the TLS name stays the server's.
                o.server = relay.local_addr();
                o.connect_deadline = Duration::from_secs(30);
            })
        })
        .collect();
    let record = running.next_record().await;
    for c in clients {
        let report = c.await.unwrap().unwrap();
        assert_eq!((report.round, report.inputs), (1, n));
    }
    let stats = relay.stats();
    let summary = running.finish().await;
    assert_eq!(summary.completed_rounds, 1);
    assert!(record.dropped.is_empty(), "{:?}", record.dropped);
    assert_eq!(record.included.len(), n as usize);
    let err = max_error(&summary.model, &mean(&ups));
    assert!(err < 1e-6, "max error {err}");
    // Every client's traffic went through the relay, each on a flow of its own.
    assert!(stats.flows >= u64::from(n), "{stats}");
    eprintln!("relay: {stats}");
}

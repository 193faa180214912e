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

use privagg_benches::relay::{Impairment, Jitter, RateLimit, Relay, RelayConfig};
use privagg_client::{DropPoint, SdkError};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_slow_lossy_link_a_dropout_after_share_keys_leaves_the_exact_mean_of_the_others() {
    let (dim, n) = (2000, 6);
    let mut cfg = config("impaired-dropout", dim, n, n - 2);
    cfg.phase_timeout = 30.0;
    cfg.lobby_timeout = 30.0;
    let mut running = start(cfg).await;
    // The same path with a 4 Mbit/s bottleneck each way and a shallow queue (16 kB,
    // 32 ms of the rate): the clients' simultaneous downloads and uploads overflow it,
    // and QUIC's congestion control has to back off.
    let bottleneck = RateLimit { bytes_per_sec: 500_000, queue_bytes: 16_000 };
    let slow = Impairment { rate: Some(bottleneck), ..wan() };
    let relay = Relay::start(RelayConfig::symmetric(running.addr, slow, 13)).unwrap();
    let ups = updates(n as usize, dim, 13);
    let clients: Vec<_> = ups
        .iter()
        .enumerate()
        .map(|(i, u)| {
            submit(&running, u.clone(), 1.0, |o| {
                o.server = relay.local_addr();
                o.connect_deadline = Duration::from_secs(30);
                o.drop_point = (i == 0).then_some(DropPoint::BeforeMaskedInput);
            })
        })
        .collect();
    let record = running.next_record().await;
    let mut results = Vec::new();
    for c in clients {
        results.push(c.await.unwrap());
    }
    let stats = relay.stats();
    let summary = running.finish().await;
    assert!(matches!(results[0], Err(SdkError::TestingDropout)), "{:?}", results[0]);
    assert!(results[1..].iter().all(Result::is_ok), "{results:?}");
    // In U2, not in U3: the server rebuilt its mask key and removed its pairwise masks.
    assert_eq!(record.dropped.len(), 1, "{:?}", record.dropped);
    assert_eq!(record.dropped[0].phase, "masked_input");
    assert_eq!(record.included.len(), n as usize - 1);
    let err = max_error(&summary.model, &mean(&ups[1..]));
    assert!(err < 1e-6, "max error {err}");
    eprintln!("relay: {stats}");
}

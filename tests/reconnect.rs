//! A client whose network fails in the middle of a round reconnects within the phase
//! deadline, gets its seat back, and the round completes with its input.
#![allow(clippy::unwrap_used)] // test code

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use privagg_e2e::{PATIENCE, config, max_error, mean, start, submit, updates};
use privagg_protocol::Phase;
use privagg_server::{ServerEvent, SessionEvent};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

/// A UDP relay between one client and the server that can stop forwarding (a network
/// outage: no packets, no close, just silence).
struct Outage {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
}

async fn relay(server: SocketAddr) -> Outage {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let down = Arc::new(AtomicBool::new(false));
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let addr = front.local_addr().unwrap();
    {
        let (front, back, down, client) = (front.clone(), back.clone(), down.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().await = Some(from);
                if !down.load(Ordering::SeqCst) {
                    let _ = back.send(&buf[..n]).await;
                }
            }
        });
    }
    {
        let down = down.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = back.recv(&mut buf).await {
                let to = *client.lock().await;
                if let (false, Some(to)) = (down.load(Ordering::SeqCst), to) {
                    let _ = front.send_to(&buf[..n], to).await;
                }
            }
        });
    }
    Outage { addr, down }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_loses_its_network_mid_round_gets_its_seat_back() {
    let dim = 24;
    let mut cfg = config("reconnect", dim, 4, 4);
    cfg.idle_timeout = 1.0;
    cfg.phase_timeout = 30.0;
    let mut running = start(cfg).await;
    let outage = relay(running.addr).await;
    let ups = updates(4, dim, 9);
    let direct: Vec<_> = ups[1..].iter().map(|u| submit(&running, u.clone(), 1.0, |_| {})).collect();
    let down = outage.down.clone();
    let flaky = submit(&running, ups[0].clone(), 1.0, move |o| {
        o.server = outage.addr;
        o.idle_timeout = Duration::from_secs(1);
        o.connect_deadline = Duration::from_secs(20);
    });
    // Once every client has advertised its keys, cut the flaky client's network for
    // three seconds: both ends see the connection time out.
    loop {
        match tokio::time::timeout(PATIENCE, running.events.recv()).await.unwrap().unwrap() {
            ServerEvent::Session(SessionEvent::PhaseChanged { phase: Phase::ShareKeys, .. }) => break,
            ServerEvent::RoundCompleted(_) => panic!("the round ended before the outage"),
            _ => {}
        }
    }
    down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    down.store(false, Ordering::SeqCst);
    let record = running.next_record().await;
    flaky.await.unwrap().unwrap();
    for c in direct {
        c.await.unwrap().unwrap();
    }
    let summary = running.finish().await;
    assert!(record.dropped.is_empty(), "{:?}", record.dropped);
    assert_eq!(record.reconnected.len(), 1, "the flaky client came back once");
    assert_eq!(record.included.len(), 4);
    assert!(max_error(&summary.model, &mean(&ups)) < 1e-6);
}

//! Clients that are not admitted, send garbage, oversized frames or an update of the
//! wrong dimension are refused or dropped with a recorded reason; the others finish.
#![allow(clippy::unwrap_used)] // test code

use std::time::Duration;

use privagg_client::{RoundError, SdkError};
use privagg_e2e::{Running, config, max_error, mean, start, submit, updates};
use privagg_server::Threat;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
use privagg_protocol::{ClientRound, Identity, Limits, ServerMessage};
use privagg_service::Frame;
use privagg_service::message::{ClientServiceMessage, FromServer, ServerServiceMessage};
use privagg_service::quic::{ClientCredential, client_config, read_frame, write_frame};

/// A hand-driven connection: admitted and ready, with a real protocol client behind it
/// for the steps it takes honestly.
struct RawClient {
    _endpoint: quinn::Endpoint,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    round: ClientRound,
}

impl RawClient {
    async fn join(running: &Running, token: &str) -> Result<Self, String> {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let options = running.options();
        let credential = options
            .cert
            .as_deref()
            .zip(options.key.as_ref())
            .map(|(cert, key)| ClientCredential { cert, key: key.as_der() });
        endpoint.set_default_client_config(client_config(&running.cert, credential, Duration::from_secs(30)).unwrap());
        let conn = endpoint.connect(running.addr, "localhost").unwrap().await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let hello = ClientServiceMessage::Hello { token: token.into(), identity: rand::random(), resume: None };
        write_frame(&mut send, &Frame::new(hello.encode())).await.unwrap();
        let reply = read_frame(&mut recv, || 1 << 20).await.unwrap().unwrap();
        match ServerServiceMessage::decode(&reply).unwrap() {
            ServerServiceMessage::Welcome { .. } => {
                let identity = match (&options.cert, &options.key, &options.client_ca) {
                    (Some(cert), Some(key), Some(root)) => Some(Identity::from_der(cert, key.as_der(), root, now())),
                    _ => None,
                };
                let round = ClientRound::new(options.policy.clone(), identity.map(Result::unwrap), &mut rand::rng());
                let ready = ClientServiceMessage::Ready { commitment: round.commitment(), log: Default::default() };
                write_frame(&mut send, &Frame::new(ready.encode())).await.unwrap();
                Ok(Self { _endpoint: endpoint, send, recv, round })
            }
            ServerServiceMessage::Refused { reason } => Err(reason),
            other => panic!("{other:?}"),
        }
    }

    /// Advertises its keys honestly, then reads until its key list arrives.
    async fn await_key_list(&mut self) {
        loop {
            let frame = read_frame(&mut self.recv, || 1 << 30).await.unwrap().unwrap();
            match FromServer::decode(&frame, &Limits::default()) {
                Ok(FromServer::Protocol(config @ ServerMessage::Config(_))) => {
                    let advertise = self.round.receive(config, &mut rand::rng()).unwrap().unwrap();
                    write_frame(&mut self.send, &Frame::new(advertise.encode())).await.unwrap();
                }
                Ok(FromServer::Protocol(ServerMessage::KeyList(_))) => return,
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_drop_only_their_senders() {
    let dim = 32;
    let mut cfg = config("garbage", dim, 6, 4);
    cfg.phase_timeout = 300.0; // far beyond the test's patience: nobody may wait for it
    let mut running = start(cfg).await;
    let ups = updates(4, dim, 5);
    let honest: Vec<_> = ups.iter().map(|u| submit(&running, u.clone(), 1.0, |_| {})).collect();
    let mut garbage = RawClient::join(&running, "").await.unwrap();
    let mut oversized = RawClient::join(&running, "").await.unwrap();
    // Both pass admission with certificates and advertise honestly, then misbehave.
    tokio::join!(garbage.await_key_list(), oversized.await_key_list());
    write_frame(&mut garbage.send, &Frame::new(vec![1, 0x13, 0xde, 0xad, 0xbe, 0xef])).await.unwrap();
    oversized.send.write_all(&(200u32 << 20).to_le_bytes()).await.unwrap();
    let record = running.next_record().await;
    for c in honest {
        c.await.unwrap().unwrap();
    }
    let summary = running.finish().await;
    let reasons: Vec<&str> = record.dropped.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(record.dropped.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("malformed")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("exceeds the current limit")), "{reasons:?}");
    assert!(max_error(&summary.model, &mean(&ups)) < 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_dimension_is_refused_at_the_config_and_dropped_at_once() {
    let dim = 32;
    let mut cfg = config("wrong-dim", dim, 5, 4);
    cfg.phase_timeout = 300.0;
    let mut running = start(cfg).await;
    let ups = updates(4, dim, 6);
    let honest: Vec<_> = ups.iter().map(|u| submit(&running, u.clone(), 1.0, |_| {})).collect();
    let wrong = submit(&running, vec![0.5; dim + 1], 1.0, |_| {});
    let record = running.next_record().await;
    assert!(matches!(
        wrong.await.unwrap(),
        Err(SdkError::Round(RoundError::DimensionMismatch { expected: 32, got: 33 }))
    ));
    for c in honest {
        c.await.unwrap().unwrap();
    }
    let summary = running.finish().await;
    assert_eq!(record.dropped.len(), 1);
    // It advertised its keys at once and found the mismatch once it had its update.
    assert!(["advertise_keys", "share_keys"].contains(&record.dropped[0].phase.as_str()), "{:?}", record.dropped);
    assert!(record.dropped[0].reason.starts_with("left:"), "{}", record.dropped[0].reason);
    assert!(max_error(&summary.model, &mean(&ups)) < 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_token_holders_are_admitted() {
    let dim = 8;
    let mut cfg = config("tokens", dim, 2, 2);
    cfg.threat = Threat::Curious; // tokens authenticate no one to the other clients
    std::fs::create_dir_all(&cfg.state).unwrap();
    let tokens = cfg.state.join("tokens.txt");
    std::fs::write(&tokens, "# two clients\nalpha-token\nbeta-token\n").unwrap();
    cfg.tokens = Some(tokens);
    let running = start(cfg).await;
    assert_eq!(RawClient::join(&running, "gamma").await.err().as_deref(), Some("unknown token"));
    assert_eq!(RawClient::join(&running, "").await.err().as_deref(), Some("a token is required"));
    let stranger = submit(&running, vec![0.0; dim], 1.0, |o| o.token = Some("nope".into()));
    assert!(matches!(stranger.await.unwrap(), Err(SdkError::Refused(r)) if r == "unknown token"));
    let ups = updates(2, dim, 7);
    let a = submit(&running, ups[0].clone(), 1.0, |o| o.token = Some("alpha-token".into()));
    let b = submit(&running, ups[1].clone(), 1.0, |o| o.token = Some("beta-token".into()));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    let summary = running.finish().await;
    assert!(max_error(&summary.model, &mean(&ups)) < 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_demanding_more_noise_than_offered_stays_out() {
    let dim = 16;
    let mut cfg = config("policy", dim, 3, 2);
    cfg.dp.enabled = true;
    cfg.dp.noise_multiplier = 0.5;
    cfg.phase_timeout = 300.0;
    let running = start(cfg).await;
    let ups = updates(2, dim, 8);
    let picky = submit(&running, vec![0.0; dim], 1.0, |o| o.privacy.min_noise_multiplier = 5.0);
    let a = submit(&running, ups[0].clone(), 1.0, |o| o.privacy.min_noise_multiplier = 0.5);
    let b = submit(&running, ups[1].clone(), 1.0, |_| {});
    assert!(matches!(picky.await.unwrap(), Err(SdkError::Round(RoundError::PolicyRefused(_)))));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    running.finish().await;
}

//! The service stays up under clients that hold resources: readers that never read their
//! model, a second connection with a token in use, a flood of connections that never say
//! hello; and the server refuses to start without an admission rule. Real server, real
//! QUIC on loopback. No assertion depends on timing beyond generous margins: deadlines
//! here are seconds, the events they race are milliseconds.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;
use std::time::Duration;

use privagg_client::{Client, ClientOptions, SdkError};
use privagg_e2e::{PATIENCE, Running, config, start, state_dir, submit, updates};
use privagg_server::record::BanReason;
use privagg_server::tls::ServerCertificate;
use privagg_server::{ServeError, Server, Threat};
use privagg_service::Frame;
use privagg_service::frame::FrameError;
use privagg_service::message::{ClientServiceMessage, ServerServiceMessage};
use privagg_service::quic::{client_config, read_frame, transport_config, write_frame};

/// A connection that says hello and asks for a seat, then never reads: its stream and
/// connection windows are 1 KiB, so any larger frame the server writes blocks.
struct Staller {
    _endpoint: quinn::Endpoint,
    _conn: quinn::Connection,
    _send: quinn::SendStream,
    _recv: quinn::RecvStream,
}

fn endpoint(running: &Running, window: Option<u32>) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut config = client_config(&running.cert, None, Duration::from_secs(30)).unwrap();
    if let Some(window) = window {
        let mut transport = transport_config(Duration::from_secs(30));
        transport.stream_receive_window(quinn::VarInt::from_u32(window));
        transport.receive_window(quinn::VarInt::from_u32(window));
        config.transport_config(Arc::new(transport));
    }
    endpoint.set_default_client_config(config);
    endpoint
}

impl Staller {
    async fn join(running: &Running) -> Self {
        let endpoint = endpoint(running, Some(1024));
        let conn = endpoint.connect(running.addr, "localhost").unwrap().await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let hello = ClientServiceMessage::Hello { token: String::new(), identity: rand::random(), resume: None };
        write_frame(&mut send, &Frame::new(hello.encode())).await.unwrap();
        let welcome = read_frame(&mut recv, || 1 << 10).await.unwrap().unwrap();
        assert!(matches!(ServerServiceMessage::decode(&welcome).unwrap(), ServerServiceMessage::Welcome { .. }));
        let ready = ClientServiceMessage::Ready { commitment: rand::random(), log: Default::default() };
        write_frame(&mut send, &Frame::new(ready.encode())).await.unwrap();
        Self { _endpoint: endpoint, _conn: conn, _send: send, _recv: recv }
    }
}

/// A connection, its stream and the server's answer to its hello.
type Hello = (quinn::Endpoint, quinn::Connection, (quinn::SendStream, quinn::RecvStream), ServerServiceMessage);

/// Says hello with `token` and a random client identity; the server's answer.
async fn hello(running: &Running, token: &str) -> Hello {
    let endpoint = endpoint(running, None);
    let conn = endpoint.connect(running.addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = ClientServiceMessage::Hello { token: token.into(), identity: rand::random(), resume: None };
    write_frame(&mut send, &Frame::new(hello.encode())).await.unwrap();
    let reply = read_frame(&mut recv, || 1 << 16).await.unwrap().unwrap();
    (endpoint, conn, (send, recv), ServerServiceMessage::decode(&reply).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_clients_that_never_read_do_not_stop_the_service() {
    // The model (400 KB) cannot pass a 1 KiB window. Four stallers sit first in the
    // lobby, and downloads have as few slots as there are stallers.
    let dim = 100_000;
    let mut c = config("overload-stallers", dim, 8, 4);
    c.threat = Threat::Curious;
    c.download_slots = 4;
    c.transfer_timeout = Some(1.0);
    c.min_transfer_rate = 16.0 * 1024.0 * 1024.0;
    c.lobby_timeout = 1.0;
    c.ban_after = 1;
    let state = c.state.clone();
    let running = start(c).await;
    let mut stallers = Vec::new();
    for _ in 0..4 {
        stallers.push(Staller::join(&running).await);
    }
    let honest = updates(4, dim, 7);
    let handles: Vec<_> = honest.iter().map(|u| submit(&running, u.clone(), 1.0, |_| {})).collect();
    let mut running = running;
    let record = running.next_record().await;
    for h in handles {
        tokio::time::timeout(PATIENCE, h).await.unwrap().unwrap().unwrap();
    }
    assert_eq!(record.round, 1);
    assert_eq!(record.included.len(), 4, "{record:?}");
    assert_eq!(record.banned.len(), 4, "{record:?}");
    assert!(record.banned.iter().all(|b| b.reason == BanReason::StalledDownload), "{:?}", record.banned);
    let summary = running.finish().await;
    assert_eq!(summary.completed_rounds, 1);
    // The bans outlive the process: a restarted server refuses the stallers too.
    let kept = privagg_server::bans::load(&state, std::time::SystemTime::now()).unwrap();
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert!(kept.iter().all(|b| b.reason == BanReason::StalledDownload && b.until_unix.is_none()), "{kept:?}");
    assert!(kept.iter().all(|b| b.client().is_some()), "{kept:?}");
    drop(stallers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_a_token_in_use_is_refused_and_the_holder_stays() {
    let mut c = config("overload-token-in-use", 8, 3, 2);
    c.threat = Threat::Curious;
    let tokens = c.state.with_extension("tokens");
    std::fs::write(&tokens, "alpha\nbeta\n").unwrap();
    c.tokens = Some(tokens);
    let running = start(c).await;
    let (_e1, holder, _s1, first) = hello(&running, "alpha").await;
    assert!(matches!(first, ServerServiceMessage::Welcome { .. }), "{first:?}");
    let (_e2, _thief, _s2, second) = hello(&running, "alpha").await;
    assert!(matches!(&second, ServerServiceMessage::Refused { reason } if reason.contains("in use")), "{second:?}");
    // The holder's connection is untouched.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(holder.close_reason().is_none(), "{:?}", holder.close_reason());
    running.shutdown.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_or_a_client_ca_the_server_refuses_to_start_unless_asked() {
    let mut c = config("overload-open", 8, 3, 2);
    c.threat = Threat::Curious;
    match Server::bind(c.clone()).await {
        Err(ServeError::Config(message)) => assert!(message.contains("--insecure-open-admission"), "{message}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("an open server started without the opt-in"),
    }
    c.insecure_open_admission = true;
    Server::bind(c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_that_never_say_hello_is_bounded_and_honest_clients_finish() {
    let dim = 16;
    let mut c = config("overload-flood", dim, 3, 3);
    c.threat = Threat::Curious;
    c.max_unadmitted = 16;
    c.max_unadmitted_per_address = 8;
    c.hello_timeout = 3.0;
    let running = start(c).await;
    // 40 connections at once from one address, none of which ever opens a stream.
    let flood = endpoint(&running, None);
    let attempts: Vec<_> = (0..40)
        .map(|_| {
            let connecting = flood.connect(running.addr, "localhost").unwrap();
            tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(2), connecting).await })
        })
        .collect();
    let mut established = Vec::new();
    for a in attempts {
        if let Ok(Ok(conn)) = a.await.unwrap() {
            established.push(conn);
        }
    }
    assert!(!established.is_empty());
    assert!(established.len() <= 8, "{} connections awaiting admission from one address", established.len());
    // Honest clients get in once the flood's hello deadline passes.
    let honest = updates(3, dim, 9);
    let handles: Vec<_> = honest
        .iter()
        .map(|u| {
            submit(&running, u.clone(), 1.0, |o| {
                o.connect_deadline = Duration::from_secs(20);
            })
        })
        .collect();
    for h in handles {
        tokio::time::timeout(PATIENCE, h).await.unwrap().unwrap().unwrap();
    }
    // The flood's connections were closed for want of a hello.
    for conn in &established {
        assert!(conn.close_reason().is_some());
    }
    assert_eq!(running.finish().await.completed_rounds, 1);
}

/// A bare QUIC endpoint with privagg's server certificate, for a test to script what a
/// server does; and the options of an SDK client that trusts it.
fn scripted_server(name: &str) -> (quinn::Endpoint, ClientOptions) {
    let dir = state_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let certificate = ServerCertificate::load_or_generate(&dir).unwrap();
    let server_config = certificate.server_config(1 << 20, Duration::from_secs(30), None).unwrap();
    let endpoint = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut options = ClientOptions::new(endpoint.local_addr().unwrap(), certificate.cert.clone());
    options.state_dir = None;
    options.policy.server = privagg_protocol::AdversaryClass::CuriousServer;
    (endpoint, options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_connects_again_when_its_connection_is_closed_before_its_hello_is_answered() {
    // A scripted server closes the first connection as privagg does when a hello comes
    // too late ("no hello in time": the client's device was busy), then admits the second.
    // The SDK used to give up at the first close.
    let (endpoint, mut options) = scripted_server("overload-sdk-hello-retry");
    let server = tokio::spawn(async move {
        // The hello arrives (the client's stream opens with it), too late: closed unanswered.
        let first = endpoint.accept().await.unwrap().await.unwrap();
        let _late = first.accept_bi().await.unwrap();
        first.close(quinn::VarInt::from_u32(0), b"no hello in time");
        let second = endpoint.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = second.accept_bi().await.unwrap();
        let hello = read_frame(&mut recv, || 1 << 16).await.unwrap().unwrap();
        assert!(matches!(ClientServiceMessage::decode(&hello), Ok(ClientServiceMessage::Hello { .. })));
        write_frame(&mut send, &Frame::new(ServerServiceMessage::Welcome { resumed: None }.encode())).await.unwrap();
        tokio::time::sleep(PATIENCE).await;
        drop((first, second, endpoint));
    });
    options.connect_deadline = PATIENCE;
    let client = tokio::time::timeout(PATIENCE, Client::connect(options)).await.expect("the client waited");
    assert!(client.is_ok(), "{:?}", client.err());
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_refuses_an_oversized_announced_frame_before_reading_it() {
    // A hostile server answers the Hello with the header of a 512 MiB frame and nothing
    // else. The SDK, capped at 1 MiB before any Config, refuses the length at once: it
    // neither waits for the bytes nor allocates for them.
    let (endpoint, mut options) = scripted_server("overload-sdk-cap");
    let server = tokio::spawn(async move {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        read_frame(&mut recv, || 1 << 16).await.unwrap().unwrap();
        send.write_all(&(512u32 << 20).to_le_bytes()).await.unwrap();
        // Hold the connection open: the client must not wait for the body.
        tokio::time::sleep(PATIENCE).await;
        drop((conn, endpoint));
    });
    options.max_server_frame = 1 << 20;
    let result = tokio::time::timeout(PATIENCE, Client::connect(options)).await.expect("the client waited");
    match result {
        Err(SdkError::Frame(FrameError::TooLarge { len, limit })) => {
            assert_eq!((len, limit), (512 << 20, 1 << 20));
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("admitted by a hostile server"),
    }
    server.abort();
}

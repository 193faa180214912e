//! Plain (unmasked, unencoded) federated averaging over privagg's transport: the
//! baseline the secure rounds are compared with.
//!
//! Same QUIC and TLS settings (`privagg_service::quic::transport_config`, TLS 1.3, ring,
//! ALPN `privagg/1`, the server's receive windows sized to one upload like
//! `privagg-server`'s), same framing (`privagg_service::quic::{read_frame, write_frame}`:
//! u32 length + payload on one bidirectional stream per client), same round shape as a
//! privagg round stripped of its protocol:
//!
//! ```text
//! client                               server
//!   Hello  ─────────────────────────▶  lobby; a round starts when n clients wait
//!          ◀───────────────────────── Round(r, model: m × f32)
//!   Upload(weight: f32, update: m × f32) ─▶ added into the f32 sum as it arrives
//!          ◀───────────────────────── Done(r, inputs)         (model ← model + sum / weight)
//! ```
//!
//! A client that ends its stream or connection after `Round` counts as a dropout; the round
//! ends when every seated client has uploaded or gone. After each round the server
//! writes `round-<r>.json` with the same fields the harness reads from `privagg
//! serve` (`timings`, `bytes_in`, `bytes_out`, `included`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use privagg_server::tls::ServerCertificate;
use privagg_service::Frame;
use privagg_service::quic::{self, WireError, read_frame};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// First frame of a plain client.
pub const HELLO: &[u8] = b"privagg-plain/1 hello";

const TAG_ROUND: u8 = 1;
const TAG_UPLOAD: u8 = 2;
const TAG_DONE: u8 = 3;
const TAG_END: u8 = 4;

/// Why the plain server or client failed.
#[derive(Debug, thiserror::Error)]
pub enum PlainError {
    /// Reading or writing a frame failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The connection could not be set up.
    #[error("connection failed: {0}")]
    Connect(String),
    /// TLS or QUIC configuration failed.
    #[error("configuration failed: {0}")]
    Config(String),
    /// A frame had the wrong tag or length.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The server ended the session.
    #[error("the session ended")]
    SessionEnded,
    /// Writing a record failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What the plain server writes after each round (the subset of `privagg serve`'s
/// record the harness reads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlainRecord {
    /// Round number, from 1.
    pub round: u64,
    /// Seat numbers (1-based) of the clients whose updates are in the sum.
    pub included: Vec<u32>,
    /// Seconds: `collect` (round start to the last upload or dropout) and `total`.
    pub timings: BTreeMap<String, f64>,
    /// Bytes received from the round's clients (frames, with length prefixes).
    pub bytes_in: u64,
    /// Bytes sent to them.
    pub bytes_out: u64,
}

/// The plain server's settings.
#[derive(Clone, Debug)]
pub struct PlainServerConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Directory for `cert.der` and the round records.
    pub state: PathBuf,
    /// Clients per round.
    pub clients: usize,
    /// Model dimension m.
    pub dim: usize,
    /// Rounds in the session.
    pub rounds: u64,
}

/// Bytes of an upload frame's payload for dimension `dim`.
pub fn upload_len(dim: usize) -> usize {
    1 + 4 + 4 * dim
}

/// Bytes of a round frame's payload for dimension `dim`.
fn round_len(dim: usize) -> usize {
    1 + 8 + 4 * dim
}

struct Conn {
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

enum Event {
    Joined(Conn),
    Uploaded { seat: u32, conn: Conn, payload: Vec<u8> },
    Gone,
}

/// Runs a plain session: binds, writes `cert.der` into the state directory, serves
/// `rounds` rounds of `clients` clients, writes `round-<r>.json` after each, then ends
/// the session.
pub async fn serve(config: PlainServerConfig) -> Result<(), PlainError> {
    // privagg-server's own identity and QUIC settings, so both modes share the transport.
    let config_error = |e: privagg_server::ServeError| PlainError::Config(e.to_string());
    let identity_dir = config.state.join("identity"); // also creates the state directory
    std::fs::create_dir_all(&identity_dir).map_err(|source| io(&identity_dir, source))?;
    let identity = ServerCertificate::load_or_generate(&identity_dir).map_err(config_error)?;
    let quic = identity.server_config(upload_len(config.dim), Duration::from_secs(600), None).map_err(config_error)?;
    let endpoint = quinn::Endpoint::server(quic, config.listen).map_err(|e| PlainError::Connect(e.to_string()))?;
    // Written after binding, so a client that sees the file finds the port open.
    let cert_path = config.state.join("cert.der");
    std::fs::write(&cert_path, &identity.cert).map_err(|source| io(&cert_path, source))?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let accept = tokio::spawn(accept_loop(endpoint.clone(), tx.clone()));
    let mut model = vec![0f32; config.dim];
    let mut lobby: Vec<Conn> = Vec::new();
    for round in 1..=config.rounds {
        while lobby.len() < config.clients {
            match rx.recv().await {
                Some(Event::Joined(conn)) => lobby.push(conn),
                Some(_) => {}
                None => return Err(PlainError::Connect("accept loop ended".into())),
            }
        }
        let seated: Vec<Conn> = lobby.drain(..config.clients).collect();
        let started = Instant::now();
        let mut frame = Vec::with_capacity(round_len(config.dim));
        frame.push(TAG_ROUND);
        frame.extend_from_slice(&round.to_le_bytes());
        for v in &model {
            frame.extend_from_slice(&v.to_le_bytes());
        }
        let frame: Arc<[u8]> = frame.into();
        for (i, conn) in seated.into_iter().enumerate() {
            tokio::spawn(serve_seat(i as u32 + 1, conn, frame.clone(), config.dim, tx.clone()));
        }
        let (mut sum, mut weight) = (vec![0f32; config.dim], 0f32);
        let mut answered = 0;
        let mut done: Vec<(u32, Conn)> = Vec::new();
        while answered < config.clients {
            match rx.recv().await {
                Some(Event::Joined(conn)) => lobby.push(conn),
                Some(Event::Uploaded { seat, conn, payload }) => {
                    answered += 1;
                    match add_upload(&payload, &mut sum) {
                        Ok(w) => {
                            weight += w;
                            done.push((seat, conn));
                        }
                        Err(e) => warn(&format!("seat {seat}: {e}")),
                    }
                }
                Some(Event::Gone) => answered += 1,
                None => return Err(PlainError::Connect("accept loop ended".into())),
            }
        }
        let collect = started.elapsed().as_secs_f64();
        if weight > 0.0 {
            for (w, s) in model.iter_mut().zip(&sum) {
                *w += s / weight;
            }
        }
        let mut record = PlainRecord { round, ..PlainRecord::default() };
        let mut reply = vec![TAG_DONE];
        reply.extend_from_slice(&round.to_le_bytes());
        reply.extend_from_slice(&(done.len() as u32).to_le_bytes());
        done.sort_by_key(|(seat, _)| *seat);
        for (seat, mut conn) in done {
            // A client gone after uploading is still in the sum; it just misses the reply.
            if write_frame(&mut conn.send, &reply).await.is_ok() {
                lobby.push(conn);
            }
            record.included.push(seat);
        }
        let n = record.included.len() as u64;
        record.bytes_in = n * (4 + upload_len(config.dim) as u64);
        record.bytes_out = config.clients as u64 * (4 + round_len(config.dim) as u64) + n * (4 + reply.len() as u64);
        record.timings.insert("collect".into(), collect);
        record.timings.insert("total".into(), started.elapsed().as_secs_f64());
        let path = config.state.join(format!("round-{round}.json"));
        let json = serde_json::to_vec_pretty(&record).map_err(|e| PlainError::Malformed(e.to_string()))?;
        std::fs::write(&path, json).map_err(|source| io(&path, source))?;
    }
    for conn in &mut lobby {
        let _ = write_frame(&mut conn.send, &[TAG_END]).await;
        let _ = conn.send.finish();
    }
    accept.abort();
    // Closing discards what is not yet delivered: let the clients hang up first.
    for conn in &lobby {
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.connection.closed()).await;
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"session over");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    Ok(())
}

/// A seat's failure does not stop the round; it is reported on stderr.
fn warn(message: &str) {
    eprintln!("plain server: {message}");
}

fn io(path: &Path, source: std::io::Error) -> PlainError {
    PlainError::Io { path: path.to_owned(), source }
}

async fn accept_loop(endpoint: quinn::Endpoint, tx: mpsc::UnboundedSender<Event>) {
    while let Some(incoming) = endpoint.accept().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else { return };
            let Ok((send, mut recv)) = connection.accept_bi().await else { return };
            match read_frame(&mut recv, || HELLO.len()).await {
                Ok(Some(hello)) if hello == HELLO => {
                    let _ = tx.send(Event::Joined(Conn { connection, send, recv }));
                }
                _ => connection.close(quinn::VarInt::from_u32(2), b"bad hello"),
            }
        });
    }
}

/// Sends the round's model to one seat and waits for its upload.
async fn serve_seat(seat: u32, mut conn: Conn, frame: Arc<[u8]>, dim: usize, tx: mpsc::UnboundedSender<Event>) {
    let event = async {
        quic::write_frame(&mut conn.send, &Frame::shared(Vec::new(), frame)).await.ok()?;
        read_frame(&mut conn.recv, || upload_len(dim)).await.ok().flatten()
    }
    .await;
    let _ = tx.send(match event {
        Some(payload) => Event::Uploaded { seat, conn, payload },
        None => {
            conn.connection.close(quinn::VarInt::from_u32(0), b"gone");
            Event::Gone
        }
    });
}

/// Adds an upload's update into `sum`, returning its weight.
fn add_upload(payload: &[u8], sum: &mut [f32]) -> Result<f32, PlainError> {
    if payload.len() != upload_len(sum.len()) || payload[0] != TAG_UPLOAD {
        return Err(PlainError::Malformed(format!("upload of {} bytes", payload.len())));
    }
    let weight = f32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
    for (s, b) in sum.iter_mut().zip(payload[5..].chunks_exact(4)) {
        *s += weight * f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(weight)
}

/// What one plain round did for a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlainReport {
    /// Round number.
    pub round: u64,
    /// Updates in the sum.
    pub inputs: u32,
    /// Bytes sent in the round (frames with length prefixes).
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
}

/// A plain client: one QUIC connection and stream to the plain server.
pub struct PlainClient {
    server: SocketAddr,
    endpoint: quinn::Endpoint,
    conn: Conn,
}

impl PlainClient {
    /// Connects (trusting exactly `cert`) and says hello, retrying for up to 10 s.
    pub async fn connect(server: SocketAddr, cert: &[u8]) -> Result<Self, PlainError> {
        let config =
            quic::client_config(cert, None, Duration::from_secs(600)).map_err(|e| PlainError::Config(e.to_string()))?;
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
            .map_err(|e| PlainError::Connect(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let conn = open(&endpoint, server).await?;
        Ok(Self { server, endpoint, conn })
    }

    /// Opens a new connection after a dropout.
    pub async fn reconnect(&mut self) -> Result<(), PlainError> {
        self.conn = open(&self.endpoint, self.server).await?;
        Ok(())
    }

    /// Takes part in the next round with `update` (the model's length) and `weight`;
    /// with `drop`, vanishes on receiving the model instead (returns `Ok(None)`).
    pub async fn round(&mut self, update: &[f32], weight: f32, drop: bool) -> Result<Option<PlainReport>, PlainError> {
        let frame =
            read_frame(&mut self.conn.recv, || round_len(update.len())).await?.ok_or(PlainError::SessionEnded)?;
        let mut received = 4 + frame.len() as u64;
        match frame.first() {
            Some(&TAG_ROUND) if frame.len() == round_len(update.len()) => {}
            Some(&TAG_END) => return Err(PlainError::SessionEnded),
            _ => return Err(PlainError::Malformed(format!("expected a round of {} bytes", round_len(update.len())))),
        }
        let round = u64::from_le_bytes(frame[1..9].try_into().map_err(|_| PlainError::Malformed("round".into()))?);
        if drop {
            quic::close_gracefully(&mut self.conn.send, &self.conn.connection, 1, "testing dropout").await;
            return Ok(None);
        }
        let mut upload = Vec::with_capacity(upload_len(update.len()));
        upload.push(TAG_UPLOAD);
        upload.extend_from_slice(&weight.to_le_bytes());
        for v in update {
            upload.extend_from_slice(&v.to_le_bytes());
        }
        write_frame(&mut self.conn.send, &upload).await?;
        let done = read_frame(&mut self.conn.recv, || 16).await?.ok_or(PlainError::SessionEnded)?;
        received += 4 + done.len() as u64;
        if done.len() != 13 || done[0] != TAG_DONE {
            return Err(PlainError::Malformed("expected Done".into()));
        }
        let inputs = u32::from_le_bytes([done[9], done[10], done[11], done[12]]);
        Ok(Some(PlainReport { round, inputs, bytes_sent: 4 + upload.len() as u64, bytes_received: received }))
    }

    /// Reads the end of the session, then closes the connection.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut self.conn.recv, || 1)).await;
        self.conn.connection.close(quinn::VarInt::from_u32(0), b"bye");
        self.endpoint.wait_idle().await;
    }
}

async fn open(endpoint: &quinn::Endpoint, server: SocketAddr) -> Result<Conn, PlainError> {
    let attempt = || async {
        let connection =
            endpoint.connect(server, "localhost").map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
        let (mut send, recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut send, HELLO).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(Conn { connection, send, recv })
    };
    quic::retry(Duration::from_secs(10), attempt, |_| true).await.map_err(PlainError::Connect)
}

/// Writes one frame of `payload`.
async fn write_frame(send: &mut quinn::SendStream, payload: &[u8]) -> Result<(), WireError> {
    quic::write_frame(send, &Frame::new(payload.to_vec())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_checked_and_weighted() {
        let mut sum = vec![1.0f32; 3];
        let mut upload = vec![TAG_UPLOAD];
        upload.extend_from_slice(&2.0f32.to_le_bytes());
        for v in [1.0f32, -1.0, 0.5] {
            upload.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(add_upload(&upload, &mut sum).unwrap(), 2.0);
        assert_eq!(sum, vec![3.0, -1.0, 2.0]);
        assert!(add_upload(&upload[..upload.len() - 1], &mut sum).is_err(), "short upload");
        upload[0] = TAG_DONE;
        assert!(add_upload(&upload, &mut sum).is_err(), "wrong tag");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plain_round_sums_the_survivors_over_quic() {
        let dir = std::env::temp_dir().join(format!("privagg-plain-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let config = PlainServerConfig { listen, state: dir.clone(), clients: 3, dim: 5, rounds: 2 };
        let server = tokio::spawn(serve(config));
        let cert_path = dir.join("cert.der");
        while !cert_path.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cert = std::fs::read(&cert_path).unwrap();
        let mut tasks = Vec::new();
        for i in 0..3 {
            let cert = cert.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = PlainClient::connect(listen, &cert).await.unwrap();
                let mut reports = Vec::new();
                for round in 1..=2 {
                    let report = client.round(&[1.0; 5], 1.0, i == 0).await.unwrap();
                    if report.is_none() && round < 2 {
                        client.reconnect().await.unwrap();
                    }
                    reports.push(report);
                }
                client.close().await;
                reports
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            let reports = task.await.unwrap();
            for report in reports {
                if i == 0 {
                    assert!(report.is_none());
                } else {
                    let r = report.unwrap();
                    assert_eq!(r.inputs, 2);
                    assert_eq!(r.bytes_sent, 4 + upload_len(5) as u64);
                }
            }
        }
        server.await.unwrap().unwrap();
        let record: PlainRecord = serde_json::from_slice(&std::fs::read(dir.join("round-2.json")).unwrap()).unwrap();
        assert_eq!(record.included.len(), 2);
        assert!(record.timings["total"] >= record.timings["collect"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

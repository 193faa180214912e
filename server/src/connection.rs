//! One task per client connection: admission, then reading frames and forwarding them
//! to the round driver, and writing what the driver sends. Connection tasks hold no
//! protocol state; they decode and forward.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use privagg_client::wire::{FromClient, MAX_CONTROL_FRAME, ServiceMessage, WireError, read_frame_within, write_frame};
use privagg_protocol::{Limits, Violation};
use tokio::sync::{Semaphore, mpsc};

use crate::admission::{Admission, Identity};

/// A connection's number, unique for the server's lifetime.
pub type ConnId = u64;

/// What a connection task tells the driver.
#[derive(Debug)]
pub enum Event {
    /// A client was admitted.
    Joined {
        /// The connection.
        conn: ConnId,
        /// Who it is.
        identity: Identity,
        /// How to reach it.
        handle: ConnHandle,
    },
    /// A frame arrived: a message, or the rule it broke (after which the connection
    /// closes).
    Frame {
        /// The connection.
        conn: ConnId,
        /// The decoded frame.
        frame: Result<FromClient, Violation>,
    },
    /// The connection closed.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: String,
        /// Whether it timed out or was reset rather than closed by the client: the client
        /// may come back.
        transient: bool,
    },
}

/// What the driver sends a connection.
#[derive(Clone, Debug)]
pub enum Outbound {
    /// One encoded message.
    Frame(Vec<u8>),
    /// A message whose tail is shared by every recipient (a `Config` and its model),
    /// written without copying the tail.
    Shared {
        /// The message up to the shared bytes.
        head: Vec<u8>,
        /// The shared bytes.
        tail: Arc<[u8]>,
    },
    /// Close the connection after what was queued.
    Close(String),
}

/// The driver's side of a connection.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// Messages to write, in order. Unbounded so the driver never waits on a slow
    /// client; the protocol queues only a few messages per client per round.
    pub outbox: mpsc::UnboundedSender<Outbound>,
    /// The largest frame the reader accepts now (raised while an upload is granted).
    pub frame_limit: Arc<AtomicUsize>,
    /// Bytes read from this client.
    pub bytes_in: Arc<AtomicU64>,
    /// Bytes written to it.
    pub bytes_out: Arc<AtomicU64>,
    /// The connection itself, to close it.
    pub connection: quinn::Connection,
}

impl ConnHandle {
    /// Queues a frame; a closed connection is reported by its own `Closed` event.
    pub fn send(&self, payload: Vec<u8>) {
        let _ = self.outbox.send(Outbound::Frame(payload));
    }
}

/// What every connection task shares.
#[derive(Clone)]
pub struct Shared {
    /// The admission policy.
    pub admission: Arc<Admission>,
    /// Where events go.
    pub events: mpsc::Sender<Event>,
    /// Limits large shared writes (models) to a few connections at a time, which bounds
    /// the bytes buffered for sending.
    pub download_slots: Arc<Semaphore>,
    /// Decoder limits.
    pub limits: Limits,
    /// How long a new connection may take to say hello.
    pub hello_timeout: Duration,
}

/// Serves one connection until it closes.
pub async fn serve_connection(incoming: quinn::Incoming, conn: ConnId, shared: Shared) {
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(conn, error = %e, "handshake failed");
            return;
        }
    };
    let remote = connection.remote_address();
    let reason = match run(&connection, conn, &shared).await {
        Ok(()) => "closed".to_owned(),
        Err(reason) => reason,
    };
    let transient =
        matches!(connection.close_reason(), Some(quinn::ConnectionError::TimedOut | quinn::ConnectionError::Reset));
    tracing::debug!(conn, %remote, %reason, transient, "connection ended");
    connection.close(quinn::VarInt::from_u32(0), b"");
    let _ = shared.events.send(Event::Closed { conn, reason, transient }).await;
}

async fn run(connection: &quinn::Connection, conn: ConnId, shared: &Shared) -> Result<(), String> {
    let (mut send, mut recv) = tokio::time::timeout(shared.hello_timeout, connection.accept_bi())
        .await
        .map_err(|_| "no stream opened in time".to_owned())?
        .map_err(|e| e.to_string())?;
    let hello = tokio::time::timeout(shared.hello_timeout, privagg_client::wire::read_frame(&mut recv, 4096))
        .await
        .map_err(|_| "no hello in time".to_owned())?
        .map_err(|e| e.to_string())?
        .ok_or("closed before hello")?;
    let identity = match ServiceMessage::decode(&hello) {
        Ok(ServiceMessage::Hello { token, identity }) => shared.admission.admit(&token, &identity),
        Ok(other) => Err(format!("expected Hello, got {other:?}")),
        Err(e) => Err(format!("malformed hello: {e}")),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(reason) => {
            tracing::info!(conn, remote = %connection.remote_address(), %reason, "refused a client");
            let _ = write_frame(&mut send, &ServiceMessage::Refused { reason: reason.clone() }.encode()).await;
            let _ = send.finish();
            // Give the refusal a moment to leave before the connection closes.
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            return Err(format!("refused: {reason}"));
        }
    };
    write_frame(&mut send, &ServiceMessage::Welcome.encode()).await.map_err(|e| e.to_string())?;

    let (outbox, rx) = mpsc::unbounded_channel();
    let handle = ConnHandle {
        outbox,
        frame_limit: Arc::new(AtomicUsize::new(MAX_CONTROL_FRAME)),
        bytes_in: Arc::new(AtomicU64::new(0)),
        bytes_out: Arc::new(AtomicU64::new(0)),
        connection: connection.clone(),
    };
    let writer = tokio::spawn(write_loop(send, rx, handle.clone(), shared.download_slots.clone()));
    shared
        .events
        .send(Event::Joined { conn, identity, handle: handle.clone() })
        .await
        .map_err(|_| "server stopping".to_owned())?;
    let result = read_loop(&mut recv, conn, &handle, shared).await;
    writer.abort();
    result
}

/// Reads frames until the stream ends or breaks a rule.
async fn read_loop(
    recv: &mut quinn::RecvStream,
    conn: ConnId,
    handle: &ConnHandle,
    shared: &Shared,
) -> Result<(), String> {
    loop {
        let frame = match read_frame_within(recv, || handle.frame_limit.load(Ordering::Acquire)).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(WireError::FrameTooLarge { len, limit }) => {
                let violation =
                    Violation::Transport(format!("frame of {len} bytes exceeds the current limit of {limit}"));
                let _ = shared.events.send(Event::Frame { conn, frame: Err(violation) }).await;
                return Err("oversized frame".into());
            }
            Err(e) => return Err(e.to_string()),
        };
        handle.bytes_in.fetch_add(4 + frame.len() as u64, Ordering::Relaxed);
        let decoded = FromClient::decode(&frame, &shared.limits).map_err(Violation::Malformed);
        let malformed = decoded.is_err();
        if shared.events.send(Event::Frame { conn, frame: decoded }).await.is_err() {
            return Err("server stopping".into());
        }
        if malformed {
            return Err("malformed frame".into());
        }
    }
}

async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    handle: ConnHandle,
    download_slots: Arc<Semaphore>,
) {
    let bytes_out = &handle.bytes_out;
    while let Some(out) = rx.recv().await {
        let result = match out {
            Outbound::Frame(payload) => {
                bytes_out.fetch_add(4 + payload.len() as u64, Ordering::Relaxed);
                write_frame(&mut send, &payload).await
            }
            Outbound::Shared { head, tail } => {
                let Ok(_slot) = download_slots.acquire().await else { return };
                let len = (head.len() + tail.len()) as u32;
                bytes_out.fetch_add(4 + u64::from(len), Ordering::Relaxed);
                let mut prefix = Vec::with_capacity(4 + head.len());
                prefix.extend_from_slice(&len.to_le_bytes());
                prefix.extend_from_slice(&head);
                // The shared bytes go to quinn by reference, not copied: until acknowledged they
                // sit in every connection's send buffer, and n copies would make memory O(n·m).
                let mut chunks = [Bytes::from(prefix), Bytes::from_owner(tail)];
                send.write_all_chunks(&mut chunks).await.map_err(WireError::from)
            }
            Outbound::Close(reason) => {
                tracing::debug!(%reason, "closing connection");
                let _ = send.finish();
                let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
                handle.connection.close(quinn::VarInt::from_u32(0), reason.as_bytes());
                return;
            }
        };
        if result.is_err() {
            return;
        }
    }
}

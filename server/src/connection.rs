//! One task per client connection. It moves frames and nothing else: it reads frames
//! (refusing one larger than the limit the session set) and forwards them to the
//! driver, and writes what the driver sends. It holds no protocol state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use privagg_service::frame::{FrameError, MAX_HELLO_FRAME};
use privagg_service::quic::{self, WireError};
use privagg_service::server::CloseReason;
use privagg_service::{ConnId, Frame};
use tokio::sync::{Semaphore, mpsc};

/// What a connection task tells the driver.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    /// A QUIC connection was established; `certificate` is the one the client presented.
    Connected { conn: ConnId, handle: ConnHandle, certificate: Option<Vec<u8>> },
    /// A whole frame arrived.
    Frame { conn: ConnId, frame: Vec<u8> },
    /// A frame larger than the current limit was announced; the reader stopped.
    Oversized { conn: ConnId, len: usize, limit: usize },
    /// The connection closed; `transient` if it timed out or was reset rather than
    /// closed by the client (which may then come back).
    Closed { conn: ConnId, transient: bool },
}

/// What the driver asks a connection's writer to do.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Write a frame.
    Frame(Frame),
    /// Close the connection after what was queued.
    Close(CloseReason),
}

/// The driver's side of a connection.
#[derive(Clone, Debug)]
pub(crate) struct ConnHandle {
    /// Frames to write, in order. Unbounded so the driver never waits on a slow client;
    /// the protocol queues only a few messages per client per round.
    pub outbox: mpsc::UnboundedSender<Outbound>,
    /// The largest frame the reader accepts now.
    pub frame_limit: Arc<AtomicUsize>,
}

/// Serves one connection until it closes.
pub(crate) async fn serve_connection(
    incoming: quinn::Incoming,
    conn: ConnId,
    events: mpsc::Sender<ConnEvent>,
    download_slots: Arc<Semaphore>,
) {
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(conn, error = %e, "handshake failed");
            return;
        }
    };
    let (outbox, rx) = mpsc::unbounded_channel();
    let frame_limit = Arc::new(AtomicUsize::new(MAX_HELLO_FRAME));
    let handle = ConnHandle { outbox, frame_limit: frame_limit.clone() };
    let certificate = quic::peer_certificate(&connection);
    if events.send(ConnEvent::Connected { conn, handle, certificate }).await.is_err() {
        return;
    }
    run(&connection, conn, rx, &frame_limit, &events, download_slots).await;
    let transient =
        matches!(connection.close_reason(), Some(quinn::ConnectionError::TimedOut | quinn::ConnectionError::Reset));
    tracing::debug!(conn, remote = %connection.remote_address(), transient, "connection ended");
    connection.close(quinn::VarInt::from_u32(0), b"");
    let _ = events.send(ConnEvent::Closed { conn, transient }).await;
}

async fn run(
    connection: &quinn::Connection,
    conn: ConnId,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    frame_limit: &AtomicUsize,
    events: &mpsc::Sender<ConnEvent>,
    download_slots: Arc<Semaphore>,
) {
    // The session may close the connection before the client opens its stream (no hello
    // in time); nothing else is sent before the stream exists.
    let (send, mut recv) = tokio::select! {
        stream = connection.accept_bi() => match stream {
            Ok(stream) => stream,
            Err(_) => return,
        },
        Some(Outbound::Close(reason)) = rx.recv() => {
            connection.close(quinn::VarInt::from_u32(0), reason.to_string().as_bytes());
            return;
        }
    };
    let writer = tokio::spawn(write_loop(send, rx, connection.clone(), download_slots));
    read_loop(&mut recv, conn, frame_limit, events).await;
    writer.abort();
}

/// Reads frames until the stream ends, breaks, or announces an oversized frame.
async fn read_loop(
    recv: &mut quinn::RecvStream,
    conn: ConnId,
    frame_limit: &AtomicUsize,
    events: &mpsc::Sender<ConnEvent>,
) {
    loop {
        let event = match quic::read_frame(recv, || frame_limit.load(Ordering::Acquire)).await {
            Ok(Some(frame)) => ConnEvent::Frame { conn, frame },
            Ok(None) => return,
            Err(WireError::Frame(FrameError::TooLarge { len, limit })) => ConnEvent::Oversized { conn, len, limit },
            Err(e) => {
                tracing::debug!(conn, error = %e, "read failed");
                return;
            }
        };
        let last = matches!(event, ConnEvent::Oversized { .. });
        if events.send(event).await.is_err() || last {
            return;
        }
    }
}

async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    connection: quinn::Connection,
    download_slots: Arc<Semaphore>,
) {
    while let Some(out) = rx.recv().await {
        match out {
            Outbound::Frame(frame) => {
                // Model downloads take one of a few slots, which bounds the bytes buffered
                // for sending; until acknowledged, the shared model sits in each send buffer
                // by reference, not copied.
                let _slot = match frame.is_shared() {
                    true => match download_slots.acquire().await {
                        Ok(slot) => Some(slot),
                        Err(_) => return,
                    },
                    false => None,
                };
                if quic::write_frame(&mut send, &frame).await.is_err() {
                    return;
                }
            }
            Outbound::Close(reason) => {
                tracing::debug!(%reason, "closing connection");
                quic::close_gracefully(&mut send, &connection, 0, &reason.to_string()).await;
                return;
            }
        }
    }
}

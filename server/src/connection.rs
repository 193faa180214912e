//! One task per client connection. It moves frames and nothing else: it reads frames
//! (refusing one larger than the limit the session set) and forwards them to the
//! driver, and writes what the driver sends. It holds no protocol state.
//!
//! It keeps the transfer deadlines: a frame written to the client or read from it must
//! complete within the transfer timeout plus its size at the minimum rate
//! ([`ServeConfig::transfer_deadline`](crate::ServeConfig::transfer_deadline)); past it,
//! the driver hears [`ConnEvent::Stalled`] and the session drops the client. Until the
//! session admits the connection it holds a pre-admission claim and a small receive
//! window; on admission the claim is released. The connection's receive window follows
//! the frame limit the session sets (the driver raises it for a granted upload and
//! lowers it after), so an admitted client without a grant buffers at most a control
//! frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use privagg_service::frame::{FrameError, MAX_HELLO_FRAME};
use privagg_service::quic::{self, WireError};
use privagg_service::server::CloseReason;
use privagg_service::{ConnId, Frame, Stall};
use tokio::sync::mpsc;

use crate::{Shell, Unadmitted};

/// What a connection task tells the driver.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    /// A QUIC connection was established; `certificate` is the one the client presented.
    Connected { conn: ConnId, handle: ConnHandle, certificate: Option<Vec<u8>> },
    /// A whole frame arrived.
    Frame { conn: ConnId, frame: Vec<u8> },
    /// A frame larger than the current limit was announced; the reader stopped.
    Oversized { conn: ConnId, len: usize, limit: usize },
    /// A transfer missed its deadline; the reader or writer stopped.
    Stalled { conn: ConnId, stall: Stall },
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
    /// The session admitted the client: release the pre-admission claim.
    Admitted,
}

/// The driver's side of a connection.
#[derive(Clone, Debug)]
pub(crate) struct ConnHandle {
    /// Frames to write, in order. Unbounded so the driver never waits on a slow client;
    /// the protocol queues only a few messages per client per round.
    pub outbox: mpsc::UnboundedSender<Outbound>,
    /// The largest frame the reader accepts now.
    pub frame_limit: Arc<AtomicUsize>,
    /// The connection, whose receive window follows the frame limit.
    pub connection: quinn::Connection,
}

/// Serves one connection until it closes.
pub(crate) async fn serve_connection(
    incoming: quinn::Incoming,
    conn: ConnId,
    events: mpsc::Sender<ConnEvent>,
    shell: Arc<Shell>,
    claim: Unadmitted,
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
    let handle = ConnHandle { outbox, frame_limit: frame_limit.clone(), connection: connection.clone() };
    let certificate = quic::peer_certificate(&connection);
    if events.send(ConnEvent::Connected { conn, handle, certificate }).await.is_err() {
        return;
    }
    run(&connection, conn, rx, &frame_limit, &events, shell, claim).await;
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
    shell: Arc<Shell>,
    claim: Unadmitted,
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
    let writer = Writer { conn, connection: connection.clone(), events: events.clone(), shell: shell.clone() };
    let mut writer = tokio::spawn(writer.run(send, rx, claim));
    if read_loop(&mut recv, conn, frame_limit, events, &shell).await == ReadEnd::DriverGone {
        // The session is over and the driver gone, maybe while the writer still delivers
        // its goodbye (the session's end, then a graceful close): a client that sent a
        // frame just then must still learn that the session ended. The writer ends once
        // its queue is drained, within its own deadlines.
        let _ = tokio::time::timeout(quic::CLOSE_GRACE + quic::PEER_CLOSE_GRACE, &mut writer).await;
    }
    writer.abort();
}

/// Why the reading half of a connection stopped.
#[derive(Debug, PartialEq)]
enum ReadEnd {
    /// The client's stream ended, broke, or misbehaved.
    Peer,
    /// The driver no longer takes events: the session is over.
    DriverGone,
}

/// Reads frames until the stream ends, breaks, or announces an oversized frame, or the
/// driver is gone.
async fn read_loop(
    recv: &mut quinn::RecvStream,
    conn: ConnId,
    frame_limit: &AtomicUsize,
    events: &mpsc::Sender<ConnEvent>,
    shell: &Shell,
) -> ReadEnd {
    loop {
        let limit = || frame_limit.load(Ordering::Acquire);
        let deadline = |len| Some(shell.config.transfer_deadline(len));
        let event = match quic::read_frame_within(recv, limit, deadline).await {
            Ok(Some(frame)) => ConnEvent::Frame { conn, frame },
            Ok(None) => return ReadEnd::Peer,
            Err(WireError::Frame(FrameError::TooLarge { len, limit })) => ConnEvent::Oversized { conn, len, limit },
            Err(WireError::TimedOut { len }) => {
                tracing::info!(conn, len, "a frame did not arrive within its deadline");
                ConnEvent::Stalled { conn, stall: Stall::Read }
            }
            Err(e) => {
                tracing::debug!(conn, error = %e, "read failed");
                return ReadEnd::Peer;
            }
        };
        let last = matches!(event, ConnEvent::Oversized { .. } | ConnEvent::Stalled { .. });
        if events.send(event).await.is_err() {
            return ReadEnd::DriverGone;
        }
        if last {
            return ReadEnd::Peer;
        }
    }
}

/// The writing half of a connection task.
struct Writer {
    conn: ConnId,
    connection: quinn::Connection,
    events: mpsc::Sender<ConnEvent>,
    shell: Arc<Shell>,
}

impl Writer {
    async fn run(self, mut send: quinn::SendStream, mut rx: mpsc::UnboundedReceiver<Outbound>, claim: Unadmitted) {
        let mut claim = Some(claim);
        while let Some(out) = rx.recv().await {
            match out {
                Outbound::Frame(frame) => {
                    // Frames with shared parts (model downloads, relayed shares with their
                    // senders' commitments) take one of the download slots, which bounds the
                    // bytes buffered for sending; until acknowledged, the shared parts sit in
                    // each send buffer by reference, not copied. Each write, and so each slot, is
                    // bounded by the transfer deadline: a client that does not read hurts only
                    // itself.
                    let _slot = match frame.is_shared() {
                        true => match self.shell.download_slots.acquire().await {
                            Ok(slot) => Some(slot),
                            Err(_) => return,
                        },
                        false => None,
                    };
                    let deadline = self.shell.config.transfer_deadline(frame.len());
                    match tokio::time::timeout(deadline, quic::write_frame(&mut send, &frame)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return,
                        Err(_) => {
                            tracing::info!(conn = self.conn, len = frame.len(), "a write missed its deadline");
                            let _ = self.events.send(ConnEvent::Stalled { conn: self.conn, stall: Stall::Write }).await;
                            // Nothing more can be written: close now (the reader then ends).
                            self.connection
                                .close(quinn::VarInt::from_u32(0), CloseReason::Stalled.to_string().as_bytes());
                            return;
                        }
                    }
                }
                Outbound::Admitted => claim = None,
                Outbound::Close(reason) => {
                    tracing::debug!(%reason, "closing connection");
                    drop(claim.take());
                    quic::close_after_peer(&mut send, &self.connection, 0, &reason.to_string()).await;
                    return;
                }
            }
        }
        drop(claim);
    }
}

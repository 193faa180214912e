//! A connection to the server: one QUIC connection, one bidirectional stream, and a
//! reader task that turns the stream into a channel of frames (so that waiting for a
//! frame can be raced against other work without losing bytes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use privagg_service::quic::{self, WireError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ClientOptions;
use crate::error::SdkError;

/// What a round may need per client in one frame: a key-list entry with its
/// certificate (the largest per-client item), with room to spare.
fn per_client_bound(limits: &privagg_protocol::Limits) -> usize {
    limits.max_certificate as usize + 1024
}

/// What the relayed shares need per neighbour beside the sender's commitments: the
/// sender's id, its envelope and signature, and the commitments' two counts, with room to
/// spare.
const RELAYED_ENTRY_BOUND: usize = 1024;

/// The largest frame a round whose `Config` took `config_len` bytes can need: another
/// `Config` of about the same size (the model keeps its dimension), a control message with
/// an entry per client, or the relayed shares (`ForwardedShares`): an envelope and the
/// sender's commitments, 2t points of 32 bytes, per neighbour.
pub(crate) fn round_frame_limit(
    config_len: usize,
    params: &privagg_protocol::RoundParams,
    limits: &privagg_protocol::Limits,
) -> usize {
    let slack = 64 << 10;
    let entries = params.num_clients as usize * per_client_bound(limits);
    let relayed = params.neighbours as usize * (RELAYED_ENTRY_BOUND + 2 * 32 * params.threshold as usize);
    config_len.max(entries).max(relayed) + slack
}

/// An open connection.
pub(crate) struct Link {
    pub connection: quinn::Connection,
    pub send: quinn::SendStream,
    /// Frames from the server; the channel closes when the stream ends.
    pub frames: mpsc::Receiver<Result<Vec<u8>, WireError>>,
    reader: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Link {
    /// Connects, retrying an unreachable server until `options.connect_deadline`. The
    /// reader refuses a frame announced longer than `limit` (read when each frame's
    /// header arrives), before it reads or allocates for its body.
    pub async fn open(
        endpoint: &quinn::Endpoint,
        options: &ClientOptions,
        limit: &Arc<AtomicUsize>,
    ) -> Result<Self, SdkError> {
        quic::retry(
            options.connect_deadline,
            || Self::try_open(endpoint, options.server, &options.server_name, limit.clone(), options),
            |e| matches!(e, SdkError::Unreachable(_)),
        )
        .await
    }

    async fn try_open(
        endpoint: &quinn::Endpoint,
        server: SocketAddr,
        server_name: &str,
        limit: Arc<AtomicUsize>,
        options: &ClientOptions,
    ) -> Result<Self, SdkError> {
        let unreachable = |e: &dyn std::fmt::Display| SdkError::Unreachable(e.to_string());
        let connecting = endpoint.connect(server, server_name).map_err(|e| unreachable(&e))?;
        let connection = tokio::time::timeout(options.connect_deadline, connecting)
            .await
            .map_err(|e| unreachable(&e))?
            .map_err(|e| connection_error(&e))?;
        let (send, mut recv) = connection.open_bi().await.map_err(|e| unreachable(&e))?;
        let (tx, frames) = mpsc::channel(4);
        let reader = tokio::spawn(async move {
            loop {
                let frame = quic::read_frame(&mut recv, || limit.load(Ordering::Acquire)).await.transpose();
                let last = !matches!(frame, Some(Ok(_)));
                if let Some(frame) = frame
                    && tx.send(frame).await.is_err()
                {
                    return;
                }
                if last {
                    return;
                }
            }
        });
        Ok(Self { connection, send, frames, reader })
    }

    /// Why the connection ended, as read from the stream's error.
    pub fn failure(e: &WireError) -> SdkError {
        match e {
            WireError::Read(quinn::ReadError::ConnectionLost(e)) => connection_error(e),
            other => SdkError::ConnectionLost(other.to_string()),
        }
    }

    /// Closes politely (what was sent is delivered first), with `code` and `reason`.
    pub async fn close(&mut self, code: u32, reason: &str) {
        quic::close_gracefully(&mut self.send, &self.connection, code, reason).await;
    }
}

/// A failed TLS handshake (a wrong pinned server certificate, a client certificate the
/// server does not accept) is final; anything else may pass.
fn connection_error(e: &quinn::ConnectionError) -> SdkError {
    let code = match e {
        quinn::ConnectionError::TransportError(t) => t.code,
        quinn::ConnectionError::ConnectionClosed(c) => c.error_code,
        other => return SdkError::Unreachable(other.to_string()),
    };
    // QUIC carries TLS alerts as the crypto error codes 0x100–0x1ff (RFC 9001 §4.8).
    if (0x100..0x200).contains(&u64::from(code)) {
        SdkError::Handshake(e.to_string())
    } else {
        SdkError::Unreachable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(num_clients: u32, neighbours: u32, threshold: u32) -> privagg_protocol::RoundParams {
        privagg_protocol::RoundParams {
            round: 1,
            num_clients,
            neighbours,
            threshold,
            min_clients: threshold,
            dim: 1_000,
            bits: 20,
            prg: privagg_protocol::PrgKind::ChaCha20,
        }
    }

    #[test]
    fn after_a_config_frames_are_capped_by_what_the_round_can_need() {
        let limits = privagg_protocol::Limits::default();
        // A 4 MB model among 10 clients: about the Config's size, far below 1 GiB.
        let cap = round_frame_limit(4_000_000, &params(10, 9, 6), &limits);
        assert!((4_000_000..5_000_000).contains(&cap), "{cap}");
        // A tiny model among 1,000 certified clients: room for a key list.
        let cap = round_frame_limit(1_000, &params(1_000, 314, 179), &limits);
        assert!(cap >= 1_000 * (limits.max_certificate as usize), "{cap}");
    }

    #[test]
    fn the_cap_holds_the_relayed_shares_of_a_complete_graph_with_a_high_threshold() {
        use privagg_protocol::{ENVELOPE_LEN, Envelope, ForwardedShare, ServerMessage, ShareCommitments};
        // 999 neighbours dealing shares of degree 500: 2 × 501 points each, about 32 MB,
        // more than an entry per client of the key list allows (17 MB).
        let (n, k, t) = (1_000, 999, 501);
        let identity = || privagg_crypto::vss::Commitment::from_encodings(vec![[0; 32]; t as usize]).unwrap();
        let commitments = Arc::new(ShareCommitments { mask_key: identity(), self_mask: identity() });
        let entry = |peer: u32| ForwardedShare {
            envelope: Envelope {
                peer: privagg_protocol::ClientId::new(peer).unwrap(),
                sealed: Box::new([0; ENVELOPE_LEN]),
                signature: Some([0; 64]),
            },
            commitments: commitments.clone(),
        };
        let encoded_len =
            |entries: u32| ServerMessage::ForwardedShares((1..=entries).map(entry).collect()).encode().len();
        let (one, two) = (encoded_len(1), encoded_len(2));
        let largest = one + (k as usize - 1) * (two - one);
        let cap = round_frame_limit(1_000, &params(n, k, t), &privagg_protocol::Limits::default());
        assert!(cap >= largest, "cap {cap} < {largest}");
    }
}

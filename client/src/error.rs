//! The SDK's typed errors.

use privagg_protocol::{AbortCode, ClientError};

use crate::tls::TlsError;
use crate::wire::WireError;

/// Why taking part failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// No connection could be made before the deadline.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server did not admit this client.
    #[error("refused by the server: {0}")]
    Refused(String),
    /// The round's configuration is invalid or inconsistent.
    #[error("invalid round configuration: {0}")]
    InvalidConfig(String),
    /// The round breaks this client's own privacy policy; it did not take part.
    #[error("round refused by local policy: {0}")]
    PolicyRefused(String),
    /// The update's length differs from the model's; nothing of it was sent.
    #[error("update has {got} values, the server's model has {expected}")]
    DimensionMismatch {
        /// The model dimension.
        expected: usize,
        /// The update's length.
        got: usize,
    },
    /// The update cannot be encoded (NaN or infinity, or too large to round).
    #[error("update rejected: {0}")]
    InvalidUpdate(String),
    /// The server aborted the round.
    #[error("round aborted by the server ({code:?}): {detail}")]
    Aborted {
        /// The server's code.
        code: AbortCode,
        /// The server's explanation.
        detail: String,
    },
    /// The session ended: no more rounds.
    #[error("the session ended after {completed_rounds} rounds")]
    SessionEnded {
        /// Rounds the server completed.
        completed_rounds: u64,
    },
    /// The connection dropped during the round.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The server sent something the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(#[from] ClientError),
    /// A frame could not be read, written or decoded.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A local resource failed (socket, OS randomness, worker thread).
    #[error("local failure: {0}")]
    Local(String),
    /// The client left on purpose, as a test asked (hidden testing option).
    #[error("left the round as the test asked")]
    TestingDropout,
}

impl SdkError {
    /// Whether the error ends only the current round: the client can take part in the
    /// next one (after reconnecting if the connection was lost).
    pub fn is_round_local(&self) -> bool {
        matches!(
            self,
            Self::Aborted { .. }
                | Self::ConnectionLost(_)
                | Self::Wire(WireError::Read(_) | WireError::Write(_) | WireError::Truncated)
        )
    }

    /// Whether the connection is gone.
    pub fn lost_connection(&self) -> bool {
        matches!(
            self,
            Self::ConnectionLost(_) | Self::Wire(WireError::Read(_) | WireError::Write(_) | WireError::Truncated)
        )
    }
}

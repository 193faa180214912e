//! The SDK's typed errors.

use privagg_protocol::{AbortCode, ClientError, DecodeError};
use privagg_service::{FrameError, RoundError};

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
    /// The update cannot be encoded (NaN or infinity, or too large to round), or the
    /// training step failed.
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
    /// The server went on without this client (after a reconnect, or by starting
    /// another round).
    #[error("the server did not keep this client's seat in round {round}")]
    SeatLost {
        /// The round.
        round: u64,
    },
    /// The session ended: no more rounds.
    #[error("the session ended after {completed_rounds} rounds")]
    SessionEnded {
        /// Rounds the server completed.
        completed_rounds: u64,
    },
    /// The connection dropped and could not be resumed.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The server sent something the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(#[from] ClientError),
    /// The server sent a message that does not decode.
    #[error("malformed message from the server: {0}")]
    Malformed(#[from] DecodeError),
    /// The server sent a frame larger than the client accepts.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The server sent a service message out of place.
    #[error("unexpected {0} from the server")]
    UnexpectedMessage(&'static str),
    /// TLS could not be set up (e.g. the pinned certificate is not a certificate).
    #[error("TLS setup failed: {0}")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A local resource failed (socket, OS randomness, worker thread).
    #[error("local failure: {0}")]
    Local(String),
    /// The client left on purpose, as a test asked (feature `testing`).
    #[cfg(feature = "testing")]
    #[error("left the round as the test asked")]
    TestingDropout,
}

impl SdkError {
    /// Whether the error ends only the current round: the client can take part in the
    /// next one (after reconnecting if the connection was lost).
    pub fn is_round_local(&self) -> bool {
        matches!(self, Self::Aborted { .. } | Self::SeatLost { .. } | Self::ConnectionLost(_))
    }

    /// Whether the connection is gone.
    pub fn lost_connection(&self) -> bool {
        matches!(self, Self::ConnectionLost(_))
    }
}

impl From<RoundError> for SdkError {
    fn from(e: RoundError) -> Self {
        match e {
            RoundError::InvalidConfig(s) => Self::InvalidConfig(s),
            RoundError::PolicyRefused(s) => Self::PolicyRefused(s),
            RoundError::DimensionMismatch { expected, got } => Self::DimensionMismatch { expected, got },
            RoundError::InvalidUpdate(s) => Self::InvalidUpdate(s),
            RoundError::Aborted { code, detail } => Self::Aborted { code, detail },
            RoundError::Protocol(e) => Self::Protocol(e),
            RoundError::UnexpectedMessage(m) => Self::UnexpectedMessage(m),
            RoundError::Malformed(e) => Self::Malformed(e),
            RoundError::SeatLost { round } => Self::SeatLost { round },
            other => Self::Local(other.to_string()),
        }
    }
}

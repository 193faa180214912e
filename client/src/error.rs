//! The SDK's typed errors.

use privagg_service::{EndReason, FrameError, RoundError};

use crate::RoundReport;

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
    /// The TLS handshake failed: the server's certificate is not the pinned one, or the
    /// server does not accept this client's certificate (or wants one).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The round ended for this client without its input in a released sum: refused by
    /// its policy or its update, aborted by the server, or broken by the server.
    #[error(transparent)]
    Round(#[from] RoundError),
    /// The session ended before this client's round (for [`Client::run`](crate::Client::run):
    /// any end but [`EndReason::Complete`]): no more rounds.
    #[error("the session ended after {completed_rounds} rounds: {end} ({reason})")]
    SessionEnded {
        /// Rounds the server completed.
        completed_rounds: u64,
        /// Why, as the server says.
        end: EndReason,
        /// The server's explanation.
        reason: String,
        /// The rounds this call took part in before the end (those of
        /// [`Client::run`](crate::Client::run); empty for a single round).
        reports: Vec<RoundReport>,
    },
    /// The connection dropped and could not be resumed.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The server sent a frame larger than the client accepts.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The client's certificate, key or authority root cannot be used (wrong format, a
    /// key that is not the certificate's, a certificate the root does not vouch for),
    /// or a policy that assumes a malicious server lacks them.
    #[error("identity: {0}")]
    Identity(String),
    /// TLS could not be set up (e.g. the pinned certificate is not a certificate).
    #[error("TLS setup failed: {0}")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The client's memory of rounds could not be read or stored; it takes part in no
    /// round it cannot remember.
    #[error("cannot use the client's memory {}: {source}", path.display())]
    Memory {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The options cannot be meant (the message names the option and the value).
    #[error("invalid options: {0}")]
    Options(String),
    /// A local resource failed (socket, OS randomness, worker thread).
    #[error("local failure: {0}")]
    Local(String),
    /// The client was interrupted while it trained ([`crate::Interrupt`]) and left.
    #[error("interrupted while training; left the session")]
    Interrupted,
    /// The client left on purpose, as a test asked (feature `testing`).
    #[cfg(feature = "testing")]
    #[error("left the round as the test asked")]
    TestingDropout,
}

impl SdkError {
    /// Whether the error ends only the current round: the client can take part in the
    /// next one (after reconnecting if the connection was lost).
    pub fn is_round_local(&self) -> bool {
        match self {
            Self::Round(e) => e.is_round_local(),
            Self::ConnectionLost(_) => true,
            _ => false,
        }
    }

    /// Whether the connection is gone.
    pub fn lost_connection(&self) -> bool {
        matches!(self, Self::ConnectionLost(_))
    }
}

//! The server library's typed errors.

use std::path::{Path, PathBuf};

/// Why the server could not start or continue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A file could not be read or written. The OS error is part of the message and not
    /// a `source`, so that a report of the error chain does not repeat it.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The configuration is inconsistent or infeasible.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// TLS or QUIC could not be set up.
    #[error(transparent)]
    Tls(#[from] privagg_service::quic::TlsError),
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The session refused a round's parameters.
    #[error("cannot start the round: {0}")]
    Start(#[from] privagg_service::server::StartError),
    /// The socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The model or a checkpoint is unusable.
    #[error("model: {0}")]
    Model(String),
    /// A round failed too many times in a row.
    #[error("round {round} aborted {attempts} times; last reason: {reason}")]
    RoundFailed {
        /// The round.
        round: u64,
        /// Attempts made.
        attempts: u32,
        /// The last abort's reason.
        reason: String,
    },
    /// The privacy budget does not allow another round.
    #[error("privacy budget exhausted: {0}")]
    Budget(String),
    /// The server was shut down before the session ended.
    #[error("shut down after {completed_rounds} rounds")]
    Shutdown {
        /// Rounds completed.
        completed_rounds: u64,
    },
}

impl ServeError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), error: source }
    }

    /// What the server tells its clients when this error ends the session.
    pub fn end_reason(&self) -> privagg_service::EndReason {
        use privagg_service::EndReason;
        match self {
            Self::Budget(_) => EndReason::BudgetSpent,
            Self::RoundFailed { .. } => EndReason::RoundFailed,
            Self::Shutdown { .. } => EndReason::Shutdown,
            _ => EndReason::ServerError,
        }
    }
}

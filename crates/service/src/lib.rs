//! # privagg-service
//!
//! privagg's application protocol above SecAgg: everything a client and the server say
//! to each other around the `privagg-protocol` messages, and the two state machines
//! that decide what to say. Like `quinn-proto` and `rustls`, it does no I/O: no sockets,
//! no clock, no tasks. The server (`privagg-server`) and the client SDK
//! (`privagg-client`) are thin shells that move frames, timers and actions between QUIC
//! and these state machines, so every path of the service runs in a deterministic test
//! (`tests/harness`).
//!
//! ```text
//!   privagg-server ─┐                         ┌─ privagg-client
//!     (quinn/tokio) │   frames, time, actions │  (quinn/tokio)
//!                   ▼                         ▼
//!            ServerSession ◀── frames ──▶ ClientSession        privagg-service
//!                   │                         │
//!              ServerRound                ClientRound            privagg-protocol
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`frame`] | the u32 length prefix, frame limits, the size of an upload |
//! | [`message`] | service messages by direction, and the decoders of each direction's frames |
//! | [`settings`] | the round's application payload ([`RoundSettings`]) and both ends of the update encoding |
//! | [`admission`] | tokens and client identities |
//! | [`server`] | [`ServerSession`]: lobby, seats, reconnection and resends, upload grants, deadlines |
//! | [`client`] | [`ClientSession`]: a client's rounds, its local policy and memory, the resend rule |
//! | [`round_log`] | the round log's leaves, the proof a client gets before each round, and its check |
//! | [`durable`] | atomic file writes (the shells' checkpoints and memories) |
//! | `quic` (feature `quic`) | ALPN, TLS and transport configurations, frame I/O on quinn streams |
//!
//! The wire format — framing, type bytes, service messages and the resend rule — is
//! specified in `protocol/PROTOCOL.md` and pinned by `test_vectors/wire.json`.

pub mod admission;
pub mod client;
pub mod durable;
pub mod frame;
pub mod message;
pub mod privacy;
#[cfg(feature = "quic")]
pub mod quic;
pub mod round_log;
pub mod server;
pub mod settings;

pub use admission::{Admission, ClientIdentity, Refusal};
pub use client::{ClientAction, ClientConfig, ClientEvent, ClientSession, RoundError, RoundMemory, RoundSummary};
pub use frame::{Frame, FrameError};
pub use message::{ClientServiceMessage, EndReason, FromClient, FromServer, Resume, ServerServiceMessage};
pub use privacy::{InvalidPolicy, PrivacyPolicy};
pub use server::{
    Action, Ban, ConnId, Offence, RoundCommit, SeatHolder, ServerSession, SessionConfig, SessionEnd, SessionEvent,
    Stall,
};
pub use settings::{AggregationMode, RoundSettings};

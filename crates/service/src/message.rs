//! Service messages: what travels around the SecAgg protocol on the same stream —
//! admission, upload flow control, resumption after a reconnect, and the end of the
//! session — split by direction, so that a decoder for one direction cannot even
//! produce a message of the other.
//!
//! Type bytes (after the version byte; the range [`SERVICE_TYPES`] is reserved for them
//! by `privagg-protocol`):
//!
//! | type | direction | message |
//! |---|---|---|
//! | `0x31` | client → server | [`ClientServiceMessage::Hello`] |
//! | `0x32` | server → client | [`ServerServiceMessage::Welcome`] |
//! | `0x33` | server → client | [`ServerServiceMessage::Refused`] |
//! | `0x34` | client → server | [`ClientServiceMessage::UploadReady`] |
//! | `0x35` | server → client | [`ServerServiceMessage::UploadGrant`] |
//! | `0x36` | server → client | [`ServerServiceMessage::SessionEnd`] |
//! | `0x37` | client → server | [`ClientServiceMessage::Ready`] |
//! | `0x38` | server → client | [`ServerServiceMessage::CheckIn`] |
//! | `0x39` | client → server | [`ClientServiceMessage::CheckInReply`] |
//! | `0x3a` | client → server | [`ClientServiceMessage::FollowModel`] |
//! | `0x3b` | server → client | [`ServerServiceMessage::Model`] |
//!
//! Bodies are encoded with the protocol's bounded codec; `protocol/PROTOCOL.md` gives
//! the byte layout.

use privagg_protocol::codec::{Reader, Writer};
use privagg_protocol::{ClientMessage, DecodeError, Limits, SERVICE_TYPES, ServerMessage};

use crate::round_log::LogRequest;

/// Longest token or reason text, in bytes; longer texts are cut on encoding.
pub const MAX_TEXT: usize = 1024;

/// Length of the random identity a client presents in its `Hello`.
pub const IDENTITY_LEN: usize = 16;

mod tag {
    pub const HELLO: u8 = 0x31;
    pub const WELCOME: u8 = 0x32;
    pub const REFUSED: u8 = 0x33;
    pub const UPLOAD_READY: u8 = 0x34;
    pub const UPLOAD_GRANT: u8 = 0x35;
    pub const SESSION_END: u8 = 0x36;
    pub const READY: u8 = 0x37;
    pub const CHECK_IN: u8 = 0x38;
    pub const CHECK_IN_REPLY: u8 = 0x39;
    pub const FOLLOW_MODEL: u8 = 0x3a;
    pub const MODEL: u8 = 0x3b;
}

/// The unit of check-in rates on the wire: parts per billion.
pub const CHECK_IN_RATE_UNIT: u32 = 1_000_000_000;

/// Where one side stands in a round when a connection is re-established: the round,
/// and how many of the other side's frames it has handled in that round. The resend
/// rule (see `protocol/PROTOCOL.md`) compares it with the frames sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The round number.
    pub round: u64,
    /// Frames received from the other side and handled in that round.
    pub received: u32,
}

/// Service messages a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientServiceMessage {
    /// The first frame of every connection: the admission token (empty without one), a
    /// random identity that lets the server recognise the client when it reconnects, and
    /// where the client stands in a round it is taking part in.
    Hello {
        /// Admission token (at most [`MAX_TEXT`] bytes).
        token: String,
        /// Random per-client identity.
        identity: [u8; IDENTITY_LEN],
        /// The client's round and the server frames it handled in it, when it reconnects
        /// in the middle of a round.
        resume: Option<Resume>,
    },
    /// The masked input is computed and waits for an upload slot.
    UploadReady,
    /// The client wants to take part in the next round. Only clients that said so are
    /// seated; a client says it again after each round it took part in. It carries the
    /// commitment to the nonce the client reveals once seated, from which the round's
    /// graph is labelled (`privagg_protocol::cohort`). It also says what the client
    /// holds of the round log, which the server proves the log against in the client's
    /// next `Config` ([`crate::round_log`]).
    Ready {
        /// SHA-256("privagg/v1 nonce" ‖ nonce).
        commitment: [u8; 32],
        /// The checkpoint the client accepted and the rounds it wants proven.
        log: LogRequest,
    },
    /// The answer to [`ServerServiceMessage::CheckIn`]: whether the client's own coin
    /// says it takes part in `round`, at `attempt`.
    CheckInReply {
        /// The round checked in for.
        round: u64,
        /// The attempt at it (1-based), as the `CheckIn` said.
        attempt: u32,
        /// Takes part.
        join: bool,
    },
    /// Send this client the global model after each round it completes, before the
    /// round's `RoundComplete` (for the connection's lifetime). Sent from the lobby
    /// (before a `Ready`); a seated client that sends it breaks the protocol.
    FollowModel,
}

/// Why a session ended, as the server tells its clients in
/// [`ServerServiceMessage::SessionEnd`] (one byte on the wire, 1 ..= 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EndReason {
    /// Every round of the session completed.
    #[error("every round completed")]
    Complete,
    /// Another round would exceed the server's privacy budget.
    #[error("the server's privacy budget is spent")]
    BudgetSpent,
    /// A round aborted as many times as the server allows.
    #[error("a round aborted too many times")]
    RoundFailed,
    /// The operator stopped the server.
    #[error("the server was shut down")]
    Shutdown,
    /// The server failed (its storage, a round it could not plan).
    #[error("the server failed")]
    ServerError,
}

impl EndReason {
    fn to_byte(self) -> u8 {
        match self {
            Self::Complete => 1,
            Self::BudgetSpent => 2,
            Self::RoundFailed => 3,
            Self::Shutdown => 4,
            Self::ServerError => 5,
        }
    }

    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            1 => Self::Complete,
            2 => Self::BudgetSpent,
            3 => Self::RoundFailed,
            4 => Self::Shutdown,
            5 => Self::ServerError,
            _ => return Err(DecodeError::InvalidField("session end reason")),
        })
    }
}

/// Service messages the server sends.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerServiceMessage {
    /// Admitted. With `resumed`, the client holds a seat in that round and the server has
    /// handled `received` of its frames there.
    Welcome {
        /// The seat the client got back, if any.
        resumed: Option<Resume>,
    },
    /// Not admitted; the connection closes.
    Refused {
        /// Why (at most [`MAX_TEXT`] bytes).
        reason: String,
    },
    /// Send the masked input now.
    UploadGrant,
    /// Random check-ins: every waiting client decides with its own CSPRNG whether it
    /// takes part in `round`, with probability `rate_ppb` / [`CHECK_IN_RATE_UNIT`], and
    /// answers with [`ClientServiceMessage::CheckInReply`].
    CheckIn {
        /// The round.
        round: u64,
        /// The attempt at it (1-based): each attempt is a new check-in with new coins.
        attempt: u32,
        /// The probability of taking part, in parts per billion (1 ..= 10⁹).
        rate_ppb: u32,
    },
    /// The global model after `round` (to a client that asked with
    /// [`ClientServiceMessage::FollowModel`]).
    Model {
        /// The round whose update the model includes.
        round: u64,
        /// The model's values (finite).
        values: Vec<f32>,
    },
    /// No more rounds; the connection closes.
    SessionEnd {
        /// Rounds the session completed.
        completed_rounds: u64,
        /// Why it ended.
        end: EndReason,
        /// What happened, for people (at most [`MAX_TEXT`] bytes).
        reason: String,
    },
}

impl ClientServiceMessage {
    /// Short name of the message, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "Hello",
            Self::UploadReady => "UploadReady",
            Self::Ready { .. } => "Ready",
            Self::CheckInReply { .. } => "CheckInReply",
            Self::FollowModel => "FollowModel",
        }
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Hello { token, identity, resume } => {
                let mut w = Writer::message(tag::HELLO, IDENTITY_LEN + 4 + token.len() + 13);
                w.bytes(identity);
                w.text(token, MAX_TEXT);
                encode_resume(&mut w, resume.as_ref());
                w.into_bytes()
            }
            Self::UploadReady => Writer::message(tag::UPLOAD_READY, 0).into_bytes(),
            Self::FollowModel => Writer::message(tag::FOLLOW_MODEL, 0).into_bytes(),
            Self::Ready { commitment, log } => {
                let mut w = Writer::message(tag::READY, 32 + log.encoded_len());
                w.bytes(commitment);
                log.encode_into(&mut w);
                w.into_bytes()
            }
            Self::CheckInReply { round, attempt, join } => {
                let mut w = Writer::message(tag::CHECK_IN_REPLY, 13);
                w.u64(*round);
                w.u32(*attempt);
                w.u8(u8::from(*join));
                w.into_bytes()
            }
        }
    }

    /// Decodes a message; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (ty, mut r) = Reader::message(bytes)?;
        let msg = match ty {
            tag::HELLO => Self::Hello {
                identity: r.array()?,
                token: r.text("token", MAX_TEXT as u64)?,
                resume: decode_resume(&mut r)?,
            },
            tag::UPLOAD_READY => Self::UploadReady,
            tag::FOLLOW_MODEL => Self::FollowModel,
            tag::READY => Self::Ready { commitment: r.array()?, log: LogRequest::decode_from(&mut r)? },
            tag::CHECK_IN_REPLY => Self::CheckInReply {
                round: r.u64()?,
                attempt: r.u32()?,
                join: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::InvalidField("join flag")),
                },
            },
            other => return Err(DecodeError::UnknownMessageType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

impl ServerServiceMessage {
    /// Short name of the message, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Welcome { .. } => "Welcome",
            Self::Refused { .. } => "Refused",
            Self::UploadGrant => "UploadGrant",
            Self::CheckIn { .. } => "CheckIn",
            Self::Model { .. } => "Model",
            Self::SessionEnd { .. } => "SessionEnd",
        }
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Welcome { resumed } => {
                let mut w = Writer::message(tag::WELCOME, 13);
                encode_resume(&mut w, resumed.as_ref());
                w.into_bytes()
            }
            Self::Refused { reason } => {
                let mut w = Writer::message(tag::REFUSED, 4 + reason.len());
                w.text(reason, MAX_TEXT);
                w.into_bytes()
            }
            Self::UploadGrant => Writer::message(tag::UPLOAD_GRANT, 0).into_bytes(),
            Self::CheckIn { round, attempt, rate_ppb } => {
                let mut w = Writer::message(tag::CHECK_IN, 16);
                w.u64(*round);
                w.u32(*attempt);
                w.u32(*rate_ppb);
                w.into_bytes()
            }
            Self::Model { round, values } => {
                let mut w = Writer::message(tag::MODEL, 12 + 4 * values.len());
                w.u64(*round);
                w.u32(values.len() as u32);
                for v in values {
                    w.bytes(&v.to_le_bytes());
                }
                w.into_bytes()
            }
            Self::SessionEnd { completed_rounds, end, reason } => {
                let mut w = Writer::message(tag::SESSION_END, 13 + reason.len());
                w.u64(*completed_rounds);
                w.u8(end.to_byte());
                w.text(reason, MAX_TEXT);
                w.into_bytes()
            }
        }
    }

    /// Decodes a message; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (ty, mut r) = Reader::message(bytes)?;
        let msg = match ty {
            tag::WELCOME => Self::Welcome { resumed: decode_resume(&mut r)? },
            tag::REFUSED => Self::Refused { reason: r.text("reason", MAX_TEXT as u64)? },
            tag::UPLOAD_GRANT => Self::UploadGrant,
            tag::CHECK_IN => {
                let (round, attempt, rate_ppb) = (r.u64()?, r.u32()?, r.u32()?);
                if rate_ppb == 0 || rate_ppb > CHECK_IN_RATE_UNIT {
                    return Err(DecodeError::InvalidField("check-in rate"));
                }
                Self::CheckIn { round, attempt, rate_ppb }
            }
            tag::MODEL => {
                let round = r.u64()?;
                let len = r.u32()? as usize;
                let bytes = r.take(len.checked_mul(4).ok_or(DecodeError::InvalidField("model length"))?)?;
                let values: Vec<f32> =
                    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(DecodeError::InvalidField("model value"));
                }
                Self::Model { round, values }
            }
            tag::SESSION_END => Self::SessionEnd {
                completed_rounds: r.u64()?,
                end: EndReason::from_byte(r.u8()?)?,
                reason: r.text("reason", MAX_TEXT as u64)?,
            },
            other => return Err(DecodeError::UnknownMessageType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn encode_resume(w: &mut Writer, resume: Option<&Resume>) {
    match resume {
        None => w.u8(0),
        Some(r) => {
            w.u8(1);
            w.u64(r.round);
            w.u32(r.received);
        }
    }
}

fn decode_resume(r: &mut Reader<'_>) -> Result<Option<Resume>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(Resume { round: r.u64()?, received: r.u32()? })),
        _ => Err(DecodeError::InvalidField("resume flag")),
    }
}

/// Whether a frame is a service message (its type byte is in [`SERVICE_TYPES`]).
fn is_service(bytes: &[u8]) -> Result<bool, DecodeError> {
    Reader::message(bytes).map(|(ty, _)| SERVICE_TYPES.contains(&ty))
}

/// A frame the server receives: every message a client may send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromClient {
    /// A protocol message.
    Protocol(ClientMessage),
    /// A service message.
    Service(ClientServiceMessage),
}

impl FromClient {
    /// Decodes a frame from a client, within `limits`; never panics.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        if is_service(bytes)? {
            ClientServiceMessage::decode(bytes).map(Self::Service)
        } else {
            ClientMessage::decode(bytes, limits).map(Self::Protocol)
        }
    }

    /// Short name of the message, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Protocol(m) => m.name(),
            Self::Service(m) => m.name(),
        }
    }
}

/// A frame the client receives: every message a server may send.
#[derive(Clone, Debug, PartialEq)]
pub enum FromServer {
    /// A protocol message.
    Protocol(ServerMessage),
    /// A service message.
    Service(ServerServiceMessage),
}

impl FromServer {
    /// Decodes a frame from the server, within `limits`; never panics.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        if is_service(bytes)? {
            ServerServiceMessage::decode(bytes).map(Self::Service)
        } else {
            ServerMessage::decode(bytes, limits).map(Self::Protocol)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_messages() -> Vec<ClientServiceMessage> {
        vec![
            ClientServiceMessage::Hello { token: "tok-1".into(), identity: [3; 16], resume: None },
            ClientServiceMessage::Hello {
                token: String::new(),
                identity: [0; 16],
                resume: Some(Resume { round: 7, received: 3 }),
            },
            ClientServiceMessage::UploadReady,
            ClientServiceMessage::Ready { commitment: [0x5c; 32], log: LogRequest::default() },
            ClientServiceMessage::Ready {
                commitment: [0x5d; 32],
                log: LogRequest { session: [0x5e; 16], size: 7, rounds: vec![6, 7] },
            },
            ClientServiceMessage::CheckInReply { round: 4, attempt: 1, join: true },
            ClientServiceMessage::FollowModel,
            ClientServiceMessage::CheckInReply { round: 5, attempt: 3, join: false },
        ]
    }

    fn server_messages() -> Vec<ServerServiceMessage> {
        vec![
            ServerServiceMessage::Welcome { resumed: None },
            ServerServiceMessage::Welcome { resumed: Some(Resume { round: 2, received: 1 }) },
            ServerServiceMessage::Refused { reason: "unknown token".into() },
            ServerServiceMessage::UploadGrant,
            ServerServiceMessage::CheckIn { round: 4, attempt: 2, rate_ppb: 10_000_000 },
            ServerServiceMessage::Model { round: 3, values: vec![0.5, -1.25, 0.0] },
            ServerServiceMessage::SessionEnd { completed_rounds: 5, end: EndReason::Complete, reason: "done".into() },
        ]
    }

    fn assert_refuses_every_cut_and_extension(bytes: &[u8], decode: impl Fn(&[u8]) -> bool) {
        for cut in 0..bytes.len() {
            assert!(!decode(&bytes[..cut]), "cut at {cut}");
        }
        assert!(!decode(&[bytes, &[0]].concat()), "extended");
    }

    #[test]
    fn service_messages_round_trip_and_refuse_every_cut() {
        let limits = Limits::default();
        for m in client_messages() {
            let bytes = m.encode();
            assert_eq!(ClientServiceMessage::decode(&bytes), Ok(m.clone()));
            assert_eq!(FromClient::decode(&bytes, &limits), Ok(FromClient::Service(m.clone())));
            assert_refuses_every_cut_and_extension(&bytes, |b| FromClient::decode(b, &limits).is_ok());
        }
        for m in server_messages() {
            let bytes = m.encode();
            assert_eq!(ServerServiceMessage::decode(&bytes), Ok(m.clone()));
            assert_eq!(FromServer::decode(&bytes, &limits), Ok(FromServer::Service(m.clone())));
            assert_refuses_every_cut_and_extension(&bytes, |b| FromServer::decode(b, &limits).is_ok());
        }
    }

    #[test]
    fn a_message_of_the_other_direction_does_not_decode() {
        let limits = Limits::default();
        for m in server_messages() {
            let ty = m.encode()[1];
            assert_eq!(FromClient::decode(&m.encode(), &limits), Err(DecodeError::UnknownMessageType(ty)));
        }
        for m in client_messages() {
            let ty = m.encode()[1];
            assert_eq!(FromServer::decode(&m.encode(), &limits), Err(DecodeError::UnknownMessageType(ty)));
        }
        let complete = ServerMessage::RoundComplete { inputs: 3 }.encode();
        assert_eq!(FromClient::decode(&complete, &limits), Err(DecodeError::UnknownMessageType(0x05)));
        assert_eq!(
            FromServer::decode(&complete, &limits),
            Ok(FromServer::Protocol(ServerMessage::RoundComplete { inputs: 3 }))
        );
    }

    #[test]
    fn oversized_and_invalid_fields_are_refused() {
        let mut w = Writer::message(tag::REFUSED, 0);
        w.u32(MAX_TEXT as u32 + 1);
        w.bytes(&vec![b'a'; MAX_TEXT + 1]);
        assert!(matches!(ServerServiceMessage::decode(&w.into_bytes()), Err(DecodeError::LimitExceeded { .. })));
        let mut w = Writer::message(tag::REFUSED, 0);
        w.len_prefixed(&[0xff, 0xfe]);
        assert_eq!(ServerServiceMessage::decode(&w.into_bytes()), Err(DecodeError::InvalidField("reason")));
        let mut w = Writer::message(tag::WELCOME, 0);
        w.u8(2);
        assert_eq!(ServerServiceMessage::decode(&w.into_bytes()), Err(DecodeError::InvalidField("resume flag")));
        for rate in [0, CHECK_IN_RATE_UNIT + 1] {
            let mut w = Writer::message(tag::CHECK_IN, 0);
            w.u64(1);
            w.u32(1);
            w.u32(rate);
            assert_eq!(ServerServiceMessage::decode(&w.into_bytes()), Err(DecodeError::InvalidField("check-in rate")));
        }
        let mut w = Writer::message(tag::CHECK_IN_REPLY, 0);
        w.u64(1);
        w.u32(1);
        w.u8(2);
        assert_eq!(ClientServiceMessage::decode(&w.into_bytes()), Err(DecodeError::InvalidField("join flag")));
        assert!(matches!(FromClient::decode(&[], &Limits::default()), Err(DecodeError::Truncated { .. })));
        assert_eq!(FromClient::decode(&[9, 0x31], &Limits::default()), Err(DecodeError::UnsupportedVersion(9)));
        // Long texts are cut on encoding, at a character boundary, so they always decode.
        let long = ServerServiceMessage::Refused { reason: "é".repeat(MAX_TEXT) };
        let Ok(ServerServiceMessage::Refused { reason }) = ServerServiceMessage::decode(&long.encode()) else {
            panic!("a long reason must decode")
        };
        assert_eq!(reason.len(), MAX_TEXT);
    }
}

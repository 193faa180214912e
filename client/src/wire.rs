//! How privagg messages travel over QUIC, and the service messages around the protocol.
//!
//! A client opens one QUIC connection (ALPN `privagg/1`) and one bidirectional stream on
//! it; every message in either direction is a frame on that stream: a u32
//! little-endian length, then the message bytes. The stream keeps messages in order; the
//! length lets the reader refuse an oversized frame before reading it.
//!
//! Frames carry either a protocol message (`privagg-protocol`, types 0x01–0x15) or a
//! service message (types 0x31–0x36, same version byte): admission (`Hello`, `Welcome`,
//! `Refused`), upload flow control (`UploadReady`, `UploadGrant`) and the end of the
//! session (`SessionEnd`).
//!
//! Upload flow control keeps the server's memory O(m) however many clients send at
//! once: a client announces that its masked input is ready and sends it only when the
//! server grants an upload slot; the server grants a few slots at a time and adds each
//! vector into the running sum before granting the next.

use privagg_protocol::{ClientMessage, DecodeError, Limits, PROTOCOL_VERSION, ServerMessage};

/// The ALPN protocol id; it versions the whole wire format.
pub const ALPN: &[u8] = b"privagg/1";

/// Largest frame other than a granted upload: keys, envelopes, shares, service messages.
pub const MAX_CONTROL_FRAME: usize = 1 << 20;

/// Longest token or text field in a service message, in bytes.
pub const MAX_TEXT: usize = 1024;

/// Why a frame could not be read, written or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame's length prefix exceeds what the reader accepts now.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Current limit.
        limit: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// Reading failed (connection lost, reset, …).
    #[error("read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing failed.
    #[error("write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The frame is not a valid message.
    #[error("malformed message: {0}")]
    Decode(#[from] DecodeError),
}

/// Writes one frame.
pub async fn write_frame(send: &mut quinn::SendStream, payload: &[u8]) -> Result<(), WireError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| WireError::FrameTooLarge { len: payload.len(), limit: u32::MAX as usize })?;
    send.write_all(&len.to_le_bytes()).await?;
    send.write_all(payload).await?;
    Ok(())
}

/// Reads one frame of at most `limit` bytes; `None` when the stream ended cleanly
/// between frames.
pub async fn read_frame(recv: &mut quinn::RecvStream, limit: usize) -> Result<Option<Vec<u8>>, WireError> {
    read_frame_within(recv, || limit).await
}

/// Like [`read_frame`], with the limit asked for when the length prefix has arrived, so a
/// limit raised while the reader waits (an upload grant) applies to the next frame.
pub async fn read_frame_within(
    recv: &mut quinn::RecvStream,
    limit: impl FnOnce() -> usize,
) -> Result<Option<Vec<u8>>, WireError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(WireError::Truncated),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    let limit = limit();
    if len > limit {
        return Err(WireError::FrameTooLarge { len, limit });
    }
    let mut buf = vec![0u8; len];
    match recv.read_exact(&mut buf).await {
        Ok(()) => Ok(Some(buf)),
        Err(quinn::ReadExactError::FinishedEarly(_)) => Err(WireError::Truncated),
        Err(quinn::ReadExactError::ReadError(e)) => Err(e.into()),
    }
}

/// Messages around the protocol: admission, upload flow control, end of session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceMessage {
    /// Client → server, first frame: the admission token (empty without one) and a
    /// random identity that lets the server recognise the client when it reconnects.
    Hello {
        /// Admission token.
        token: String,
        /// Random per-client identity.
        identity: [u8; 16],
    },
    /// Server → client: admitted; wait for a round's `Config`.
    Welcome,
    /// Server → client: not admitted; the connection closes.
    Refused {
        /// Why.
        reason: String,
    },
    /// Client → server: its masked input is computed and waits for a slot.
    UploadReady,
    /// Server → client: send the masked input now.
    UploadGrant,
    /// Server → client: no more rounds; the connection closes.
    SessionEnd {
        /// Rounds the session completed.
        completed_rounds: u64,
        /// Why it ended.
        reason: String,
    },
}

mod tag {
    pub const HELLO: u8 = 0x31;
    pub const WELCOME: u8 = 0x32;
    pub const REFUSED: u8 = 0x33;
    pub const UPLOAD_READY: u8 = 0x34;
    pub const UPLOAD_GRANT: u8 = 0x35;
    pub const SESSION_END: u8 = 0x36;
}

impl ServiceMessage {
    /// Encodes the message as a frame payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![PROTOCOL_VERSION];
        match self {
            Self::Hello { token, identity } => {
                out.push(tag::HELLO);
                out.extend_from_slice(identity);
                push_text(&mut out, token);
            }
            Self::Welcome => out.push(tag::WELCOME),
            Self::Refused { reason } => {
                out.push(tag::REFUSED);
                push_text(&mut out, reason);
            }
            Self::UploadReady => out.push(tag::UPLOAD_READY),
            Self::UploadGrant => out.push(tag::UPLOAD_GRANT),
            Self::SessionEnd { completed_rounds, reason } => {
                out.push(tag::SESSION_END);
                out.extend_from_slice(&completed_rounds.to_le_bytes());
                push_text(&mut out, reason);
            }
        }
        out
    }

    /// Decodes a frame payload; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::Truncated { needed: 1, remaining: 0 })?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let (&ty, body) = rest.split_first().ok_or(DecodeError::Truncated { needed: 1, remaining: 0 })?;
        let msg = match ty {
            tag::HELLO => {
                let identity: [u8; 16] = body
                    .get(..16)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(DecodeError::Truncated { needed: 16, remaining: body.len() })?;
                Self::Hello { identity, token: read_text(&body[16..])? }
            }
            tag::WELCOME if body.is_empty() => Self::Welcome,
            tag::REFUSED => Self::Refused { reason: read_text(body)? },
            tag::UPLOAD_READY if body.is_empty() => Self::UploadReady,
            tag::UPLOAD_GRANT if body.is_empty() => Self::UploadGrant,
            tag::SESSION_END => {
                let rounds: [u8; 8] = body
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(DecodeError::Truncated { needed: 8, remaining: body.len() })?;
                Self::SessionEnd { completed_rounds: u64::from_le_bytes(rounds), reason: read_text(&body[8..])? }
            }
            tag::WELCOME | tag::UPLOAD_READY | tag::UPLOAD_GRANT => return Err(DecodeError::TrailingBytes(body.len())),
            other => return Err(DecodeError::UnknownMessageType(other)),
        };
        Ok(msg)
    }
}

/// A u32 length and UTF-8 bytes, cut to [`MAX_TEXT`] at a character boundary.
fn push_text(out: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u32).to_le_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

/// The whole rest of `body` as one text field.
fn read_text(body: &[u8]) -> Result<String, DecodeError> {
    let len: [u8; 4] = body
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(DecodeError::Truncated { needed: 4, remaining: body.len() })?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_TEXT {
        return Err(DecodeError::LimitExceeded { what: "text", value: len as u64, limit: MAX_TEXT as u64 });
    }
    let text = &body[4..];
    if text.len() != len {
        return Err(if text.len() < len {
            DecodeError::Truncated { needed: len, remaining: text.len() }
        } else {
            DecodeError::TrailingBytes(text.len() - len)
        });
    }
    String::from_utf8(text.to_vec()).map_err(|_| DecodeError::InvalidField("text"))
}

/// Type byte of a frame payload (after the version byte), if any.
fn message_type(bytes: &[u8]) -> Option<u8> {
    bytes.get(1).copied()
}

fn is_service_type(ty: u8) -> bool {
    (0x31..=0x36).contains(&ty)
}

/// A frame the server receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromClient {
    /// A protocol message.
    Protocol(ClientMessage),
    /// A service message.
    Service(ServiceMessage),
}

impl FromClient {
    /// Decodes a frame from a client.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        match message_type(bytes) {
            Some(ty) if is_service_type(ty) => ServiceMessage::decode(bytes).map(Self::Service),
            _ => ClientMessage::decode(bytes, limits).map(Self::Protocol),
        }
    }
}

/// A frame the client receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromServer {
    /// A protocol message.
    Protocol(ServerMessage),
    /// A service message.
    Service(ServiceMessage),
}

impl FromServer {
    /// Decodes a frame from the server.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        match message_type(bytes) {
            Some(ty) if is_service_type(ty) => ServiceMessage::decode(bytes).map(Self::Service),
            _ => ServerMessage::decode(bytes, limits).map(Self::Protocol),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_messages_round_trip() {
        let all = [
            ServiceMessage::Hello { token: "tok-1".into(), identity: [3; 16] },
            ServiceMessage::Hello { token: String::new(), identity: [0; 16] },
            ServiceMessage::Welcome,
            ServiceMessage::Refused { reason: "unknown token".into() },
            ServiceMessage::UploadReady,
            ServiceMessage::UploadGrant,
            ServiceMessage::SessionEnd { completed_rounds: 5, reason: "done".into() },
        ];
        for m in all {
            let bytes = m.encode();
            assert_eq!(ServiceMessage::decode(&bytes), Ok(m.clone()));
            assert_eq!(FromClient::decode(&bytes, &Limits::default()), Ok(FromClient::Service(m.clone())));
            for cut in 0..bytes.len() {
                assert!(ServiceMessage::decode(&bytes[..cut]).is_err(), "{m:?} cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(ServiceMessage::decode(&longer).is_err(), "{m:?} extended");
        }
    }

    #[test]
    fn oversized_and_invalid_text_is_refused() {
        let mut bytes = vec![PROTOCOL_VERSION, tag::REFUSED];
        bytes.extend_from_slice(&(MAX_TEXT as u32 + 1).to_le_bytes());
        bytes.resize(bytes.len() + MAX_TEXT + 1, b'a');
        assert!(matches!(ServiceMessage::decode(&bytes), Err(DecodeError::LimitExceeded { .. })));
        let mut bytes = vec![PROTOCOL_VERSION, tag::REFUSED];
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(ServiceMessage::decode(&bytes), Err(DecodeError::InvalidField("text")));
        // Long texts are cut on encoding, so that they always decode.
        let long = "é".repeat(MAX_TEXT);
        let m = ServiceMessage::Refused { reason: long };
        assert!(ServiceMessage::decode(&m.encode()).is_ok());
    }

    #[test]
    fn protocol_frames_are_told_apart_from_service_frames() {
        let garbage = [PROTOCOL_VERSION, 0x7f, 1, 2, 3];
        assert_eq!(FromClient::decode(&garbage, &Limits::default()), Err(DecodeError::UnknownMessageType(0x7f)));
        assert!(FromServer::decode(&[], &Limits::default()).is_err());
        let bye = ServerMessage::RoundComplete { inputs: 3 }.encode();
        assert_eq!(
            FromServer::decode(&bye, &Limits::default()),
            Ok(FromServer::Protocol(ServerMessage::RoundComplete { inputs: 3 }))
        );
    }
}

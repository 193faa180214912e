//! Framing: how messages travel on a connection's one bidirectional stream.
//!
//! Every message, protocol or service, in either direction, is one frame: a u32
//! little-endian length ([`FRAME_HEADER_LEN`] bytes) and then that many bytes of message.
//! The stream keeps frames in order; the length lets a reader refuse an oversized frame
//! before it reads (or allocates) the body. The limits below are a receiver's: a server
//! accepts [`MAX_HELLO_FRAME`] bytes from a new connection, [`MAX_CONTROL_FRAME`] from an
//! admitted client, and one masked input ([`masked_input_len`]) only while that client
//! holds an upload grant.

use std::sync::Arc;

use bytes::Bytes;
use privagg_protocol::packed_len;

/// Length of a frame's header: the u32 little-endian length of the message that follows.
pub const FRAME_HEADER_LEN: usize = 4;

/// Largest first frame (the client's `Hello`) a server reads from a new connection.
pub const MAX_HELLO_FRAME: usize = 4096;

/// Largest frame other than a model download or a granted upload: keys, envelopes,
/// shares and service messages.
pub const MAX_CONTROL_FRAME: usize = 1 << 20;

/// Exact length of an encoded `MaskedInput` message of `dim` words of `bits` bits:
/// version, type, u32 dim, u8 bits and the packed words.
pub fn masked_input_len(dim: u32, bits: u8) -> usize {
    7 + packed_len(dim, bits)
}

/// The frame limit of a client holding an upload grant: its masked input, or any control
/// frame.
pub fn upload_frame_limit(dim: u32, bits: u8) -> usize {
    masked_input_len(dim, bits).max(MAX_CONTROL_FRAME)
}

/// Why a frame was refused before its body was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The announced length exceeds what the reader accepts now.
    #[error("frame of {len} bytes exceeds the current limit of {limit}")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The reader's limit.
        limit: usize,
    },
}

/// The header of a frame whose message is `len` bytes long.
pub fn header(len: usize) -> Result<[u8; FRAME_HEADER_LEN], FrameError> {
    u32::try_from(len).map(u32::to_le_bytes).map_err(|_| FrameError::TooLarge { len, limit: u32::MAX as usize })
}

/// The message length a header announces, if it is within `limit`.
pub fn message_len(header: [u8; FRAME_HEADER_LEN], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len)
}

/// An outgoing message in parts: bytes of its own, and bytes shared by many frames (a
/// round's `Config` carries the model, the same for every client; each `ForwardedShares`
/// carries the commitments of the recipient's neighbours, the same for each of them). A
/// writer hands every part to the transport by reference, so n recipients cost one copy
/// of a shared part, not n.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    parts: Vec<Bytes>,
    shared: bool,
}

impl Frame {
    /// A frame carrying `message`.
    pub fn new(message: Vec<u8>) -> Self {
        Self { parts: vec![Bytes::from(message)], shared: false }
    }

    /// A frame carrying `head ‖ tail`, with `tail` shared rather than copied.
    pub fn shared(head: Vec<u8>, tail: Arc<[u8]>) -> Self {
        Self::interleaved(vec![(head, tail)])
    }

    /// A frame carrying `own₀ ‖ shared₀ ‖ own₁ ‖ shared₁ ‖ …`, the shared parts by reference.
    pub fn interleaved(parts: Vec<(Vec<u8>, Arc<[u8]>)>) -> Self {
        let shared = parts.iter().any(|(_, tail)| !tail.is_empty());
        let parts = parts.into_iter().flat_map(|(own, tail)| [Bytes::from(own), Bytes::from_owner(tail)]).collect();
        Self { parts, shared }
    }

    /// The message length (without the frame header).
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Whether the message is empty (never, for a valid message).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether part of the message is shared with other frames (a model download, relayed
    /// shares).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The bytes on the wire: the header, then the parts; cheap clones of shared buffers.
    pub fn wire_parts(&self) -> Result<Vec<Bytes>, FrameError> {
        let header = Bytes::copy_from_slice(&header(self.len())?);
        Ok(std::iter::once(header).chain(self.parts.iter().cloned()).collect())
    }

    /// The whole message as one vector (a copy; for tests and small frames).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }
}

impl From<Vec<u8>> for Frame {
    fn from(message: Vec<u8>) -> Self {
        Self::new(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privagg_protocol::{ClientMessage, PackedVector};

    #[test]
    fn the_upload_length_is_exactly_the_encoded_masked_input() {
        for (dim, bits) in [(1, 1), (7, 3), (1000, 20), (1 << 16, 64)] {
            let words = vec![0u64; dim as usize];
            let encoded = ClientMessage::MaskedInput(PackedVector::pack(&words, bits)).encode();
            assert_eq!(masked_input_len(dim, bits), encoded.len(), "dim {dim}, bits {bits}");
        }
        assert_eq!(upload_frame_limit(4, 8), MAX_CONTROL_FRAME);
        assert_eq!(upload_frame_limit(1 << 20, 20), masked_input_len(1 << 20, 20));
    }

    #[test]
    fn headers_announce_lengths_and_limits_refuse_them() {
        let h = header(300).unwrap();
        assert_eq!(h, [44, 1, 0, 0]);
        assert_eq!(message_len(h, 300), Ok(300));
        assert_eq!(message_len(h, 299), Err(FrameError::TooLarge { len: 300, limit: 299 }));
    }

    #[test]
    fn a_shared_frame_is_its_head_then_its_tail() {
        let frame = Frame::shared(vec![1, 2], Arc::from(&[3u8, 4, 5][..]));
        assert_eq!(frame.len(), 5);
        assert_eq!(frame.to_vec(), vec![1, 2, 3, 4, 5]);
        let parts = frame.wire_parts().unwrap();
        assert_eq!(&parts[0][..], &[5, 0, 0, 0]);
        assert_eq!(Frame::from(vec![9]).to_vec(), vec![9]);
    }
}

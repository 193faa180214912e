//! Bounded, total byte readers and writers for the wire codec, shared by the protocol
//! messages and the service messages of `privagg-service`.
//!
//! Every read checks the remaining length first, and every length field is checked
//! against both a configured limit and the bytes actually left before anything is
//! allocated, so a hostile length prefix can never make the decoder allocate more
//! than the message it came in.

use crate::error::DecodeError;
use crate::message::PROTOCOL_VERSION;

/// Appends little-endian fields to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A writer that starts a message: the version byte, then `ty`, with room for a body
    /// of `body_len` bytes.
    pub fn message(ty: u8, body_len: usize) -> Self {
        let mut w = Self::with_capacity(2 + body_len);
        w.u8(PROTOCOL_VERSION);
        w.u8(ty);
        w
    }

    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buf: Vec::with_capacity(capacity) }
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Appends a little-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a little-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// A u32 length prefix followed by the bytes.
    pub fn len_prefixed(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.bytes(v);
    }

    /// Appends `text` as a u32 length and UTF-8 bytes, cut to at most `max` bytes at a
    /// character boundary (see [`truncate_utf8`]), so that it always decodes within a
    /// reader's limit of `max`.
    pub fn text(&mut self, text: &str, max: usize) {
        self.len_prefixed(truncate_utf8(text, max).as_bytes());
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads little-endian fields from a byte slice; every method is fallible.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// Opens a message: checks the version byte and returns the type byte and a reader
    /// over the body.
    pub fn message(bytes: &'a [u8]) -> Result<(u8, Self), DecodeError> {
        let mut r = Self::new(bytes);
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        Ok((r.u8()?, r))
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated { needed: n, remaining: self.rest.len() });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a u32 element count and checks it against `limit` and against the bytes
    /// left, given that every element takes at least `min_element_len` bytes.
    pub fn count(&mut self, what: &'static str, limit: u64, min_element_len: usize) -> Result<usize, DecodeError> {
        let count = self.u32()?;
        if u64::from(count) > limit {
            return Err(DecodeError::LimitExceeded { what, value: u64::from(count), limit });
        }
        let count = count as usize;
        let needed = count.saturating_mul(min_element_len);
        if needed > self.rest.len() {
            return Err(DecodeError::Truncated { needed, remaining: self.rest.len() });
        }
        Ok(count)
    }

    /// A u32 length prefix (checked against `limit`) followed by that many bytes.
    pub fn len_prefixed(&mut self, what: &'static str, limit: u64) -> Result<&'a [u8], DecodeError> {
        let len = self.count(what, limit, 1)?;
        self.take(len)
    }

    /// A u32 length (at most `limit`) followed by that many bytes of UTF-8.
    pub fn text(&mut self, what: &'static str, limit: u64) -> Result<String, DecodeError> {
        let bytes = self.len_prefixed(what, limit)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::InvalidField(what))
    }

    /// Fails unless every byte has been consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() { Ok(()) } else { Err(DecodeError::TrailingBytes(self.rest.len())) }
    }
}

/// The longest prefix of `text` that is at most `max` bytes and ends at a character
/// boundary.
pub fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("abc", 2), "ab");
        assert_eq!(truncate_utf8("é", 1), "");
        assert_eq!(truncate_utf8("aé", 2), "a");
    }

    #[test]
    fn text_round_trips_and_refuses_bad_utf8_and_long_texts() {
        let mut w = Writer::default();
        w.text("héllo", 64);
        w.text(&"é".repeat(10), 5);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.text("text", 64).unwrap(), "héllo");
        assert_eq!(r.text("text", 5).unwrap(), "éé");
        r.finish().unwrap();
        let mut r = Reader::new(&[2, 0, 0, 0, 0xff, 0xfe]);
        assert_eq!(r.text("text", 8), Err(DecodeError::InvalidField("text")));
        let mut r = Reader::new(&[9, 0, 0, 0]);
        assert!(matches!(r.text("text", 8), Err(DecodeError::LimitExceeded { .. })));
    }
}

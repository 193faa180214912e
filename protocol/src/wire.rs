//! Bounded, total byte readers and writers for the wire codec.
//!
//! Every read checks the remaining length first, and every length field is checked
//! against both a configured limit and the bytes actually left before anything is
//! allocated, so a hostile length prefix can never make the decoder allocate more
//! than the message it came in.

use crate::error::DecodeError;

/// Appends little-endian fields to a byte vector.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self { buf: Vec::with_capacity(capacity) }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// A u32 length prefix followed by the bytes.
    pub(crate) fn len_prefixed(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.bytes(v);
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads little-endian fields from a byte slice; every method is fallible.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated { needed: n, remaining: self.rest.len() });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a u32 element count and checks it against `limit` and against the bytes
    /// left, given that every element takes at least `min_element_len` bytes.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        limit: u64,
        min_element_len: usize,
    ) -> Result<usize, DecodeError> {
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
    pub(crate) fn len_prefixed(&mut self, what: &'static str, limit: u64) -> Result<&'a [u8], DecodeError> {
        let len = self.count(what, limit, 1)?;
        self.take(len)
    }

    /// Fails unless every byte has been consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() { Ok(()) } else { Err(DecodeError::TrailingBytes(self.rest.len())) }
    }
}

//! Bit-packed vectors: `dim` words of `bits` bits each, least-significant bit first,
//! in ⌈dim·bits/8⌉ bytes. Padding bits in the last byte must be zero, so every vector
//! has exactly one encoding.
//!
//! The server never unpacks a masked vector into its own buffer: [`PackedVector::add_into`]
//! adds it straight into the running sum, which keeps its memory at O(m).

use crate::error::DecodeError;
use crate::round_params::word_mask;

/// Widths up to which a word plus its bit offset (≤ 7) fits one u64 window.
const WINDOW_BITS: u8 = 56;

/// The little-endian u64 at byte `at`, reading zeros past the end of `bytes`.
#[inline]
fn load_u64(bytes: &[u8], at: usize) -> u64 {
    let mut window = [0u8; 8];
    match bytes.get(at..at + 8) {
        Some(full) => window.copy_from_slice(full),
        None => {
            let tail = bytes.get(at..).unwrap_or(&[]);
            window[..tail.len()].copy_from_slice(tail);
        }
    }
    u64::from_le_bytes(window)
}

/// Writes byte-aligned words (`N` bytes each) into `bytes`.
fn put_words<const N: usize>(bytes: &mut [u8], words: &[u64], encode: impl Fn(u64) -> [u8; N]) {
    for (chunk, &w) in bytes.chunks_exact_mut(N).zip(words) {
        chunk.copy_from_slice(&encode(w));
    }
}

/// Adds byte-aligned words (`N` bytes each) of `bytes` into `acc` mod 2^bits.
fn add_words<const N: usize>(acc: &mut [u64], bytes: &[u8], mask: u64, decode: impl Fn([u8; N]) -> u64) {
    for (a, chunk) in acc.iter_mut().zip(bytes.chunks_exact(N)) {
        let mut word = [0u8; N];
        word.copy_from_slice(chunk);
        *a = a.wrapping_add(decode(word)) & mask;
    }
}

/// Length in bytes of `dim` words of `bits` bits.
pub fn packed_len(dim: u32, bits: u8) -> usize {
    (u64::from(dim) * u64::from(bits)).div_ceil(8) as usize
}

/// A bit-packed vector of words mod 2^bits.
#[derive(Clone, PartialEq, Eq)]
pub struct PackedVector {
    dim: u32,
    bits: u8,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for PackedVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedVector")
            .field("dim", &self.dim)
            .field("bits", &self.bits)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl PackedVector {
    /// Packs `words`, each reduced mod 2^bits. `bits` must be in 1..=64 and
    /// `words.len()` must fit in a u32 (both are guaranteed by validated round parameters).
    pub fn pack(words: &[u64], bits: u8) -> Self {
        let bits = bits.clamp(1, 64);
        let dim = u32::try_from(words.len()).unwrap_or(u32::MAX);
        let len = packed_len(dim, bits);
        let mask = word_mask(bits);
        let mut bytes = vec![0u8; len];
        match bits {
            8 => bytes.iter_mut().zip(words).for_each(|(b, &w)| *b = w as u8),
            16 => put_words(&mut bytes, words, |w| (w as u16).to_le_bytes()),
            32 => put_words(&mut bytes, words, |w| (w as u32).to_le_bytes()),
            64 => put_words(&mut bytes, words, u64::to_le_bytes),
            _ => {
                // A bit accumulator that spills 64 bits at a time (it never holds more than
                // 63 + 63 bits).
                let mut out = bytes.chunks_mut(8);
                let mut acc: u128 = 0;
                let mut acc_bits = 0u32;
                for &w in words {
                    acc |= u128::from(w & mask) << acc_bits;
                    acc_bits += u32::from(bits);
                    if acc_bits >= 64 {
                        if let Some(chunk) = out.next() {
                            chunk.copy_from_slice(&(acc as u64).to_le_bytes()[..chunk.len()]);
                        }
                        acc >>= 64;
                        acc_bits -= 64;
                    }
                }
                if let Some(chunk) = out.next() {
                    chunk.copy_from_slice(&(acc as u64).to_le_bytes()[..chunk.len()]);
                }
            }
        }
        Self { dim, bits, bytes }
    }

    /// Wraps received bytes after checking that they are exactly `dim` words of `bits`
    /// bits with zero padding.
    pub fn from_bytes(dim: u32, bits: u8, bytes: Vec<u8>) -> Result<Self, DecodeError> {
        if !(1..=64).contains(&bits) {
            return Err(DecodeError::InvalidField("bits"));
        }
        let expected = packed_len(dim, bits);
        if bytes.len() != expected {
            return Err(DecodeError::PackedLength { expected, got: bytes.len() });
        }
        let used_bits = (u64::from(dim) * u64::from(bits)) % 8;
        if used_bits != 0 {
            let last = bytes[expected - 1];
            if last >> used_bits != 0 {
                return Err(DecodeError::NonZeroPadding);
            }
        }
        Ok(Self { dim, bits, bytes })
    }

    /// Number of words.
    pub fn dim(&self) -> u32 {
        self.dim
    }

    /// Bits per word.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The words, unpacked.
    pub fn unpack(&self) -> Vec<u64> {
        let mut out = vec![0u64; self.dim as usize];
        self.add_into(&mut out);
        out
    }

    /// `acc[i] = (acc[i] + word[i]) mod 2^bits` for every word, without unpacking into a
    /// temporary vector. `acc` must have `dim` entries, each below 2^bits; extra
    /// entries are left alone.
    pub fn add_into(&self, acc: &mut [u64]) {
        let mask = word_mask(self.bits);
        let len = (self.dim as usize).min(acc.len());
        let acc = &mut acc[..len];
        let bytes = &self.bytes;
        match self.bits {
            8 => add_words(acc, bytes, mask, |c: [u8; 1]| u64::from(c[0])),
            16 => add_words(acc, bytes, mask, |c| u64::from(u16::from_le_bytes(c))),
            32 => add_words(acc, bytes, mask, |c| u64::from(u32::from_le_bytes(c))),
            64 => add_words(acc, bytes, mask, u64::from_le_bytes),
            1..=WINDOW_BITS => {
                let bits = usize::from(self.bits);
                for (i, a) in acc.iter_mut().enumerate() {
                    let bit = i * bits;
                    let word = (load_u64(bytes, bit / 8) >> (bit % 8)) & mask;
                    *a = a.wrapping_add(word) & mask;
                }
            }
            _ => {
                // Wide words: a bit reservoir refilled 64 bits at a time.
                let bits = u32::from(self.bits);
                let mut at = 0;
                let mut reservoir: u128 = 0;
                let mut available = 0u32;
                for a in acc.iter_mut() {
                    if available < bits {
                        reservoir |= u128::from(load_u64(bytes, at)) << available;
                        at += 8;
                        available += 64;
                    }
                    let word = (reservoir as u64) & mask;
                    reservoir >>= bits;
                    available -= bits;
                    *a = a.wrapping_add(word) & mask;
                }
            }
        }
    }

    /// Consumes the vector, returning its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pack_unpack_round_trips(bits in 1u8..=64, words in prop::collection::vec(any::<u64>(), 0..200)) {
            let mask = word_mask(bits);
            let packed = PackedVector::pack(&words, bits);
            prop_assert_eq!(packed.as_bytes().len(), packed_len(words.len() as u32, bits));
            let reparsed = PackedVector::from_bytes(packed.dim(), bits, packed.as_bytes().to_vec()).unwrap();
            let expected: Vec<u64> = words.iter().map(|w| w & mask).collect();
            prop_assert_eq!(reparsed.unpack(), expected);
        }

        #[test]
        fn add_into_is_modular_addition(bits in 1u8..=64, pairs in prop::collection::vec((any::<u64>(), any::<u64>()), 1..100)) {
            let mask = word_mask(bits);
            let a: Vec<u64> = pairs.iter().map(|p| p.0 & mask).collect();
            let b: Vec<u64> = pairs.iter().map(|p| p.1 & mask).collect();
            let mut acc = a.clone();
            PackedVector::pack(&b, bits).add_into(&mut acc);
            for i in 0..a.len() {
                prop_assert_eq!(acc[i], a[i].wrapping_add(b[i]) & mask);
            }
        }
    }

    #[test]
    fn rejects_wrong_length_and_padding() {
        assert_eq!(PackedVector::from_bytes(3, 5, vec![0; 3]), Err(DecodeError::PackedLength { expected: 2, got: 3 }));
        // 3 words × 5 bits = 15 bits: the top bit of byte 1 is padding.
        assert_eq!(PackedVector::from_bytes(3, 5, vec![0, 0x80]), Err(DecodeError::NonZeroPadding));
        assert!(PackedVector::from_bytes(3, 5, vec![0xff, 0x7f]).is_ok());
        assert_eq!(PackedVector::from_bytes(1, 0, vec![]), Err(DecodeError::InvalidField("bits")));
    }

    #[test]
    fn layout_is_lsb_first_little_endian() {
        let p = PackedVector::pack(&[0b101, 0b011, 0b111], 3);
        // 101 | 011<<3 | 111<<6 = 0b1_1101_1101 → bytes 0xDD, 0x01
        assert_eq!(p.as_bytes(), &[0xDD, 0x01]);
        let p = PackedVector::pack(&[0x0102_0304], 32);
        assert_eq!(p.as_bytes(), &[4, 3, 2, 1]);
    }
}

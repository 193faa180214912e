//! Envelope behaviour: round trip, binding to the context, tamper detection, error paths.

use privagg_crypto::envelope::{ASSOCIATED_DATA_LEN, ENVELOPE_LABEL};
use privagg_crypto::{
    ChannelKey, CryptoError, ENVELOPE_OVERHEAD, EnvelopeContext, KeyContext, SecretKey, derive_channel_key, open, seal,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn ctx() -> EnvelopeContext {
    EnvelopeContext { session_id: [7; 32], round: 3, sender: 11, recipient: 42 }
}

#[test]
fn associated_data_layout() {
    let ad = ctx().associated_data();
    assert_eq!(ad.len(), ASSOCIATED_DATA_LEN);
    assert_eq!(ASSOCIATED_DATA_LEN, 19 + 32 + 8 + 4 + 4);
    assert_eq!(&ad[..19], b"privagg/v1 envelope");
    assert_eq!(&ad[..19], ENVELOPE_LABEL);
    assert_eq!(&ad[19..51], &[7; 32]);
    assert_eq!(&ad[51..59], &3u64.to_be_bytes());
    assert_eq!(&ad[59..63], &11u32.to_be_bytes());
    assert_eq!(&ad[63..67], &42u32.to_be_bytes());
}

#[test]
fn seal_then_open_round_trips() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let key = ChannelKey::from_bytes([9; 32]);
    for len in [0usize, 1, 36, 72, 1000] {
        let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let envelope = seal(&key, &ctx(), &plaintext, &mut rng);
        assert_eq!(envelope.len(), len + ENVELOPE_OVERHEAD);
        let opened = open(&key, &ctx(), &envelope).expect("authentic envelope");
        assert_eq!(opened.as_slice(), plaintext.as_slice());
    }
}

#[test]
fn nonces_are_fresh() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let key = ChannelKey::from_bytes([9; 32]);
    let a = seal(&key, &ctx(), b"same", &mut rng);
    let b = seal(&key, &ctx(), b"same", &mut rng);
    assert_ne!(a[..12], b[..12]);
    assert_ne!(a, b);
}

#[test]
fn moved_envelope_fails_to_open() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let key = ChannelKey::from_bytes([9; 32]);
    let envelope = seal(&key, &ctx(), b"share bytes", &mut rng);
    let moved = [
        EnvelopeContext { recipient: 43, ..ctx() },
        EnvelopeContext { sender: 12, ..ctx() },
        EnvelopeContext { round: 4, ..ctx() },
        EnvelopeContext { session_id: [8; 32], ..ctx() },
        // Sender and recipient swapped: the reverse direction of the same channel.
        EnvelopeContext { sender: 42, recipient: 11, ..ctx() },
    ];
    for other in moved {
        assert_eq!(open(&key, &other, &envelope), Err(CryptoError::EnvelopeOpenFailed), "{other:?}");
    }
    let wrong_key = ChannelKey::from_bytes([10; 32]);
    assert_eq!(open(&wrong_key, &ctx(), &envelope), Err(CryptoError::EnvelopeOpenFailed));
}

#[test]
fn every_flipped_bit_is_detected() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let key = ChannelKey::from_bytes([9; 32]);
    let envelope = seal(&key, &ctx(), b"0123456789abcdef0123", &mut rng);
    for bit in 0..envelope.len() * 8 {
        let mut forged = envelope.clone();
        forged[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(open(&key, &ctx(), &forged), Err(CryptoError::EnvelopeOpenFailed), "bit {bit}");
    }
}

#[test]
fn truncated_or_extended_envelopes_fail() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let key = ChannelKey::from_bytes([9; 32]);
    let envelope = seal(&key, &ctx(), b"payload", &mut rng);
    for len in 0..ENVELOPE_OVERHEAD {
        assert_eq!(open(&key, &ctx(), &envelope[..len]), Err(CryptoError::EnvelopeTooShort), "length {len}");
    }
    for len in ENVELOPE_OVERHEAD..envelope.len() {
        assert_eq!(open(&key, &ctx(), &envelope[..len]), Err(CryptoError::EnvelopeOpenFailed), "length {len}");
    }
    let mut extended = envelope.clone();
    extended.push(0);
    assert_eq!(open(&key, &ctx(), &extended), Err(CryptoError::EnvelopeOpenFailed));
}

#[test]
fn both_ends_of_a_channel_derive_the_same_key() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let (u, v) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
    let kctx = KeyContext { session_id: [1; 32], round: 0 };
    let k_uv = derive_channel_key(&u.diffie_hellman(&v.public_key()).expect("contributory"), &kctx, 5, 9);
    let k_vu = derive_channel_key(&v.diffie_hellman(&u.public_key()).expect("contributory"), &kctx, 9, 5);
    let ectx = EnvelopeContext { session_id: [1; 32], round: 0, sender: 5, recipient: 9 };
    let envelope = seal(&k_uv, &ectx, b"shares for v", &mut rng);
    let opened = open(&k_vu, &ectx, &envelope).expect("same channel key");
    assert_eq!(opened.as_slice(), b"shares for v");
}

#[test]
fn channel_key_debug_is_redacted() {
    let key = ChannelKey::from_bytes([0xab; 32]);
    assert_eq!(format!("{key:?}"), "ChannelKey(<redacted>)");
}

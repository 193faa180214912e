//! Key agreement and key derivation behaviour.

use privagg_crypto::kdf::HKDF_SHA256_MAX_OUTPUT;
use privagg_crypto::{
    CryptoError, KeyContext, KeyPair, KeyPurpose, MaskSeed, MaskSign, PROTOCOL_LABEL, PrgKind, PublicKey, Scalar,
    SecretKey, apply_mask, derive_key, derive_pairwise_mask_seed, derive_self_mask_seed, hkdf_sha256,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::collections::HashSet;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

const CTX: KeyContext = KeyContext { session_id: [0x5a; 32], round: 7 };

#[test]
fn diffie_hellman_commutes() {
    let mut rng = rng(1);
    for _ in 0..8 {
        let a = KeyPair::generate(&mut rng);
        let b = KeyPair::generate(&mut rng);
        let ab = a.secret.diffie_hellman(&b.public).expect("contributory");
        let ba = b.secret.diffie_hellman(&a.public).expect("contributory");
        assert_eq!(ab.as_bytes(), ba.as_bytes());
        // The shared secret is a valid non-identity group element (ab·G).
        assert!(PublicKey::from_bytes(ab.as_bytes()).is_ok());
    }
}

#[test]
fn distinct_peers_give_distinct_secrets() {
    let mut rng = rng(2);
    let me = SecretKey::generate(&mut rng);
    let secrets: HashSet<[u8; 32]> = (0..16)
        .map(|_| {
            let peer = SecretKey::generate(&mut rng).public_key();
            *me.diffie_hellman(&peer).expect("contributory").as_bytes()
        })
        .collect();
    assert_eq!(secrets.len(), 16);
}

#[test]
fn public_key_round_trips_through_bytes() {
    let mut rng = rng(3);
    let key = SecretKey::generate(&mut rng).public_key();
    assert_eq!(PublicKey::LEN, 32);
    let decoded = PublicKey::from_bytes(&key.to_bytes()).expect("valid key");
    assert_eq!(decoded, key);
    let set: HashSet<PublicKey> = [key, decoded].into_iter().collect();
    assert_eq!(set.len(), 1);
}

#[test]
fn zero_secret_key_is_non_contributory() {
    let mut rng = rng(4);
    let peer = SecretKey::generate(&mut rng).public_key();
    let zero = SecretKey::from_scalar(Scalar::ZERO);
    assert_eq!(zero.diffie_hellman(&peer).map(|_| ()), Err(CryptoError::NonContributoryKeyAgreement));
}

#[test]
fn secret_key_from_bytes_rejects_non_canonical_and_zero() {
    let mut rng = rng(5);
    let key = SecretKey::generate(&mut rng);
    let decoded = SecretKey::from_bytes(key.as_scalar().as_bytes()).expect("canonical");
    assert_eq!(decoded.as_scalar(), key.as_scalar());
    assert_eq!(SecretKey::from_bytes(&[0; 32]).map(|_| ()), Err(CryptoError::InvalidScalar));
    assert_eq!(SecretKey::from_bytes(&[0xff; 32]).map(|_| ()), Err(CryptoError::InvalidScalar));
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let mut rng = rng(6);
    let a = KeyPair::generate(&mut rng);
    let b = KeyPair::generate(&mut rng);
    assert_eq!(format!("{:?}", a.secret), "SecretKey(<redacted>)");
    let shared = a.secret.diffie_hellman(&b.public).expect("contributory");
    assert_eq!(format!("{shared:?}"), "SharedSecret(<redacted>)");
    let pair = format!("{a:?}");
    assert!(pair.contains("<redacted>"));
    let seed = derive_pairwise_mask_seed(&shared, &CTX, 1, 2);
    assert_eq!(format!("{seed:?}"), "MaskSeed(<redacted>)");
    // Public keys print their encoding.
    let hex: String = a.public.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(format!("{:?}", a.public), format!("PublicKey({hex})"));
}

#[test]
fn derive_key_matches_the_documented_construction() {
    let ikm = b"input key material";
    let mut info = b"privagg/v1 pairwise-mask".to_vec();
    info.extend_from_slice(&7u64.to_be_bytes());
    info.extend_from_slice(&3u32.to_be_bytes());
    info.extend_from_slice(&9u32.to_be_bytes());
    let mut expected = [0u8; 32];
    hkdf_sha256(&CTX.session_id, ikm, &info, &mut expected).expect("32 bytes");
    assert_eq!(*derive_key(ikm, KeyPurpose::PairwiseMask, &CTX, 9, 3), expected);
    assert_eq!(*derive_key(ikm, KeyPurpose::PairwiseMask, &CTX, 3, 9), expected);
    assert_eq!(HKDF_SHA256_MAX_OUTPUT, 8160);
}

#[test]
fn labels_are_distinct_and_versioned() {
    let labels = [KeyPurpose::ChannelKey.label(), KeyPurpose::PairwiseMask.label(), KeyPurpose::SelfMask.label()];
    assert_eq!(labels[0], b"privagg/v1 channel-key");
    assert_eq!(labels[1], b"privagg/v1 pairwise-mask");
    assert_eq!(labels[2], b"privagg/v1 self-mask");
    for label in labels {
        assert!(label.starts_with(PROTOCOL_LABEL));
    }
    let set: HashSet<&[u8]> = labels.into_iter().collect();
    assert_eq!(set.len(), 3);
}

#[test]
fn keys_are_separated_by_purpose_session_round_and_pair() {
    let ikm = [1u8; 32];
    let base = *derive_key(&ikm, KeyPurpose::PairwiseMask, &CTX, 1, 2);
    let variants = [
        *derive_key(&ikm, KeyPurpose::ChannelKey, &CTX, 1, 2),
        *derive_key(&ikm, KeyPurpose::SelfMask, &CTX, 1, 2),
        *derive_key(&ikm, KeyPurpose::PairwiseMask, &KeyContext { round: 8, ..CTX }, 1, 2),
        *derive_key(&ikm, KeyPurpose::PairwiseMask, &KeyContext { session_id: [0; 32], ..CTX }, 1, 2),
        *derive_key(&ikm, KeyPurpose::PairwiseMask, &CTX, 1, 3),
        *derive_key(&[2u8; 32], KeyPurpose::PairwiseMask, &CTX, 1, 2),
    ];
    let mut all: HashSet<[u8; 32]> = variants.into_iter().collect();
    all.insert(base);
    assert_eq!(all.len(), 7);
}

/// First 16 mask words of a seed, for comparing masks.
fn mask_words(seed: &MaskSeed) -> Vec<u64> {
    let mut buf = vec![0u64; 16];
    apply_mask(PrgKind::default(), &mut buf, 0, 32, seed, MaskSign::Add).expect("valid width");
    buf
}

#[test]
fn self_and_pairwise_masks_differ() {
    let mut rng = rng(7);
    let a = KeyPair::generate(&mut rng);
    let b = KeyPair::generate(&mut rng);
    let shared = a.secret.diffie_hellman(&b.public).expect("contributory");
    let pairwise = derive_pairwise_mask_seed(&shared, &CTX, 1, 2);
    let reverse = derive_pairwise_mask_seed(&b.secret.diffie_hellman(&a.public).expect("contributory"), &CTX, 2, 1);
    assert_eq!(mask_words(&pairwise), mask_words(&reverse));

    let b_u = Scalar::random(&mut rng);
    let self_1 = derive_self_mask_seed(&b_u, &CTX, 1);
    assert_eq!(mask_words(&self_1), mask_words(&derive_self_mask_seed(&b_u, &CTX, 1)));
    let others = [
        mask_words(&pairwise),
        mask_words(&derive_self_mask_seed(&b_u, &CTX, 2)),
        mask_words(&derive_self_mask_seed(&b_u, &KeyContext { round: 8, ..CTX }, 1)),
        mask_words(&derive_self_mask_seed(&Scalar::random(&mut rng), &CTX, 1)),
    ];
    for other in others {
        assert_ne!(mask_words(&self_1), other);
    }
}

//! Certified identities: Ed25519 against RFC 8032, and certificates checked against a
//! root the way peers check each other (issued with rcgen, as `privagg ca` does).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use privagg_crypto::ed25519_cofactored::VerifyingKey;
use privagg_crypto::identity::{CHAIN_CACHE_HORIZON, IdentityError, IdentityKey, TrustRoot, certificate_key};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ED25519,
};

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// RFC 8032 §7.1, tests 1 to 3: (secret key, public key, message, signature).
const RFC8032: [(&str, &str, &str, &str); 3] = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
];

#[test]
fn ed25519_matches_rfc_8032() {
    for (secret, public, message, signature) in RFC8032 {
        let key = IdentityKey::from_seed(&unhex(secret)).unwrap();
        assert_eq!(key.public_key(), unhex::<32>(public));
        assert_eq!(key.sign(&hex::decode(message).unwrap()), unhex::<64>(signature));
        // The cofactored check of envelope signatures accepts the vectors, and nothing altered.
        let public = VerifyingKey::from_bytes(&unhex(public)).unwrap();
        let (message, signature) = (hex::decode(message).unwrap(), unhex::<64>(signature));
        assert!(public.verify(&message, &signature));
        assert!(!public.verify(&[message.as_slice(), b"!"].concat(), &signature));
        for byte in [0, 31, 32, 63] {
            let mut bad = signature;
            bad[byte] ^= 1;
            assert!(!public.verify(&message, &bad), "flipped byte {byte}");
        }
    }
}

/// A certificate authority as `privagg ca` makes one.
struct Authority {
    cert: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn authority(name: &str) -> Authority {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    Authority { cert: cert.der().to_vec(), issuer: Issuer::new(params, key) }
}

/// A client certificate valid from `from` to `to` (seconds since the epoch), for client
/// authentication unless `server_only`.
fn client(ca: &Authority, from: i64, to: i64, server_only: bool) -> (Vec<u8>, IdentityKey) {
    let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "client-1");
    params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
    params.extended_key_usages =
        vec![if server_only { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.der().to_vec(), IdentityKey::from_pkcs8(&key.serialize_der()).unwrap())
}

const NOW: i64 = 1_800_000_000; // December 2026
const DAY: i64 = 86_400;

#[test]
fn a_certificate_of_the_root_verifies_signatures_of_its_key() {
    let ca = authority("privagg enrollment");
    let root = TrustRoot::from_der(&ca.cert).unwrap();
    let (cert, key) = client(&ca, NOW - DAY, NOW + DAY, false);
    let certified = root.verify(&cert, NOW as u64).unwrap();
    let signature = key.sign(b"round 3 keys");
    certified.verify_signature(b"round 3 keys", &signature).unwrap();
    assert_eq!(certified.verify_signature(b"round 4 keys", &signature), Err(IdentityError::Signature));
    let mut flipped = signature;
    flipped[10] ^= 1;
    assert_eq!(certified.verify_signature(b"round 3 keys", &flipped), Err(IdentityError::Signature));
}

#[test]
fn a_certificates_key_checks_its_holders_signatures_the_cofactored_way_too() {
    let ca = authority("privagg enrollment");
    let (cert, key) = client(&ca, NOW - DAY, NOW + DAY, false);
    let public = certificate_key(&cert).unwrap();
    let signature = key.sign(b"envelope");
    assert!(public.verify(b"envelope", &signature));
    assert!(!public.verify(b"envelope!", &signature));
    let (other, _) = client(&ca, NOW - DAY, NOW + DAY, false);
    assert!(!certificate_key(&other).unwrap().verify(b"envelope", &signature));
    assert!(matches!(certificate_key(b"not a certificate"), Err(IdentityError::Certificate(_))));
    let p256 = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap())
        .unwrap();
    assert!(matches!(certificate_key(p256.der()), Err(IdentityError::Certificate(_))));
}

#[test]
fn certificates_of_another_root_out_of_date_or_for_servers_are_refused() {
    let ca = authority("privagg enrollment");
    let root = TrustRoot::from_der(&ca.cert).unwrap();
    let other = authority("privagg enrollment"); // same name, different key
    let refused = |cert: &[u8]| matches!(root.verify(cert, NOW as u64), Err(IdentityError::Certificate(_)));
    assert!(refused(&client(&other, NOW - DAY, NOW + DAY, false).0), "another authority");
    assert!(refused(&client(&ca, NOW - 2 * DAY, NOW - DAY, false).0), "expired");
    assert!(refused(&client(&ca, NOW + DAY, NOW + 2 * DAY, false).0), "not yet valid");
    assert!(refused(&client(&ca, NOW - DAY, NOW + DAY, true).0), "for servers only");
    assert!(refused(&ca.cert), "the root itself is no client");
    assert!(refused(b"not a certificate"));
    assert!(TrustRoot::from_der(b"not a certificate").is_err());
    assert_eq!(IdentityKey::from_pkcs8(b"not a key").unwrap_err(), IdentityError::Key);
}

#[test]
fn a_remembered_certificate_is_still_refused_outside_the_time_it_was_checked_for() {
    // A root remembers a certificate it accepted only for a span it checked both ends of.
    let ca = authority("privagg enrollment");
    let root = TrustRoot::from_der(&ca.cert).unwrap();
    let now = NOW as u64;
    let (cert, _) = client(&ca, NOW - DAY, NOW + DAY, false);
    assert!(root.verify(&cert, now).is_ok());
    assert!(root.verify(&cert, now + CHAIN_CACHE_HORIZON).is_ok(), "within the span");
    assert!(root.verify(&cert, now + 2 * DAY as u64).is_err(), "expired since");
    assert!(root.verify(&cert, now - 2 * DAY as u64).is_err(), "not yet valid then");
    assert!(root.verify(&cert, now).is_ok(), "a refusal forgets nothing true");
    // One expiring within the horizon is remembered for the instant it was checked only.
    let (short, _) = client(&ca, NOW - DAY, NOW + 60, false);
    assert!(root.verify(&short, now).is_ok());
    assert!(root.verify(&short, now + 61).is_err());
    // Clones share what they remember, and a different certificate is checked anew.
    let clone = root.clone();
    let (other_ca_cert, _) = client(&authority("privagg enrollment"), NOW - DAY, NOW + DAY, false);
    assert!(clone.verify(&cert, now + 10).is_ok());
    assert!(clone.verify(&other_ca_cert, now + 10).is_err());
}

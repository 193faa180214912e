//! Every message round-trips through the wire codec; truncated, extended, corrupted and
//! random frames are refused without panicking and without allocating beyond the limits.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use curve25519_dalek::Scalar;
use privagg_crypto::SecretKey;
use privagg_protocol::cohort::RevealedSeat;
use privagg_protocol::{
    Abort, AbortCode, AdvertisedKeys, Advertisement, Certified, ClientId, ClientMessage, Config, DecodeError,
    ENVELOPE_LEN, Envelope, ForwardedShare, KeyList, Leave, Limits, PackedVector, PeerEntry, PrgKind, RevealedShare,
    RoundParams, ServerMessage, ShareCommitments, ShareKeys, SurvivorSignature, UnmaskRequest, UnmaskResponse,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn id(raw: u32) -> ClientId {
    ClientId::new(raw).unwrap()
}

fn keys(seed: u64) -> AdvertisedKeys {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (channel, mask) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
    AdvertisedKeys::prove(&channel, &mask, &[7; 32], id(1), &mut rng)
}

fn envelope(peer: u32) -> Envelope {
    Envelope { peer: id(peer), sealed: Box::new([peer as u8; ENVELOPE_LEN]), signature: None }
}

/// Commitments of degree t − 1 to two random polynomials.
fn commitments(seed: u64, t: usize) -> Arc<ShareCommitments> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let holders: Vec<u32> = (1..=t as u32).collect();
    let (_, mask_key) = privagg_crypto::vss::split(&Scalar::random(&mut rng), t, &holders, &mut rng).unwrap();
    let (_, self_mask) = privagg_crypto::vss::split(&Scalar::random(&mut rng), t, &holders, &mut rng).unwrap();
    Arc::new(ShareCommitments { mask_key, self_mask })
}

/// An envelope carrying a (placeholder) signature of its sender.
fn signed_envelope(peer: u32) -> Envelope {
    Envelope { signature: Some([0x60 + peer as u8; 64]), ..envelope(peer) }
}

fn forwarded(peer: u32) -> ForwardedShare {
    ForwardedShare { envelope: envelope(peer), commitments: commitments(peer.into(), 3) }
}

fn server_messages() -> Vec<ServerMessage> {
    let params = RoundParams {
        round: u64::MAX,
        num_clients: 300,
        neighbours: 40,
        threshold: 21,
        min_clients: 250,
        dim: 1_000_000,
        bits: 20,
        prg: PrgKind::ChaCha20,
    };
    vec![
        ServerMessage::Config(Config {
            params,
            client_id: id(17),
            cohort: [0xc0; 32],
            client_data: b"log proof".to_vec(),
            app_data: Arc::from(&b"model and dp parameters"[..]),
        }),
        ServerMessage::KeyList(KeyList {
            cohort: seats(5),
            entries: vec![
                Arc::new(PeerEntry { id: id(1), keys: keys(1), certified: None }),
                Arc::new(PeerEntry { id: id(5), keys: keys(5), certified: None }),
            ],
        }),
        ServerMessage::ForwardedShares(vec![forwarded(2), forwarded(3)]),
        ServerMessage::ForwardedShares(vec![]),
        ServerMessage::UnmaskRequest(UnmaskRequest {
            survivors: vec![id(1), id(2)],
            dropped: vec![id(9)],
            signatures: vec![
                SurvivorSignature { signer: id(1), signature: [1; 64] },
                SurvivorSignature { signer: id(2), signature: [2; 64] },
            ],
        }),
        ServerMessage::RoundComplete { inputs: 99 },
        ServerMessage::Abort(Abort::new(AbortCode::TooFewClients, "only 3 clients remain — abandon")),
        ServerMessage::KeyList(KeyList {
            cohort: seats(3),
            entries: vec![Arc::new(PeerEntry {
                id: id(2),
                keys: keys(2),
                certified: Some(Certified { certificate: Arc::from(&b"a certificate"[..]), signature: [9; 64] }),
            })],
        }),
        ServerMessage::ConsistencyCheck(vec![id(1), id(2), id(300)]),
        ServerMessage::ConsistencyCheck(vec![]),
        ServerMessage::ForwardedShares(vec![
            ForwardedShare { envelope: signed_envelope(2), commitments: commitments(2, 3) },
            forwarded(3),
        ]),
    ]
}

fn seats(n: u8) -> Arc<[RevealedSeat]> {
    (1..=n).map(|i| RevealedSeat { fingerprint: [i; 32], nonce: [i ^ 0xff; 32] }).collect()
}

fn advertisement(seed: u64, signature: Option<[u8; 64]>) -> Box<Advertisement> {
    Box::new(Advertisement { keys: keys(seed), nonce: [seed as u8; 32], signature })
}

fn client_messages() -> Vec<ClientMessage> {
    vec![
        ClientMessage::AdvertiseKeys(advertisement(3, None)),
        ClientMessage::ShareKeys(ShareKeys {
            commitments: commitments(9, 2),
            envelopes: vec![envelope(4), envelope(6)],
        }),
        ClientMessage::MaskedInput(PackedVector::pack(&[1, 2, 3, 0x1f_ffff], 21)),
        ClientMessage::MaskedInput(PackedVector::pack(&[u64::MAX; 3], 64)),
        ClientMessage::UnmaskResponse(UnmaskResponse {
            self_mask_shares: vec![RevealedShare { owner: id(2), value: Scalar::from(5u64) }],
            mask_key_shares: vec![RevealedShare { owner: id(3), value: -Scalar::ONE }],
        }),
        ClientMessage::Leave(Leave::new([0x1e; 32], "dimension 7 ≠ 8")),
        ClientMessage::AdvertiseKeys(advertisement(4, Some([0xab; 64]))),
        ClientMessage::SurvivorsSigned(Some([0x5e; 64])),
        ClientMessage::SurvivorsSigned(None),
        ClientMessage::ShareKeys(ShareKeys { commitments: commitments(10, 1), envelopes: vec![] }),
        ClientMessage::ShareKeys(ShareKeys {
            commitments: commitments(12, 2),
            envelopes: vec![signed_envelope(1), signed_envelope(7)],
        }),
    ]
}

#[test]
fn every_message_round_trips() {
    let limits = Limits::default();
    for m in server_messages() {
        assert_eq!(ServerMessage::decode(&m.encode(), &limits), Ok(m.clone()), "{}", m.name());
    }
    for m in client_messages() {
        assert_eq!(ClientMessage::decode(&m.encode(), &limits), Ok(m.clone()), "{}", m.name());
    }
}

#[test]
fn a_config_splits_before_its_payload() {
    let ServerMessage::Config(c) = &server_messages()[0] else { unreachable!() };
    let (head, payload) = c.encode_split();
    assert_eq!([head, payload.to_vec()].concat(), server_messages()[0].encode());
}

#[test]
fn every_truncation_and_extension_is_refused() {
    let limits = Limits::default();
    for m in server_messages() {
        let bytes = m.encode();
        for len in 0..bytes.len() {
            assert!(ServerMessage::decode(&bytes[..len], &limits).is_err(), "{} cut at {len}", m.name());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(ServerMessage::decode(&longer, &limits), Err(DecodeError::TrailingBytes(1)));
    }
    for m in client_messages() {
        let bytes = m.encode();
        for len in 0..bytes.len() {
            assert!(ClientMessage::decode(&bytes[..len], &limits).is_err(), "{} cut at {len}", m.name());
        }
        let mut longer = bytes;
        longer.push(0);
        assert!(ClientMessage::decode(&longer, &limits).is_err(), "{} extended", m.name());
    }
}

#[test]
fn header_and_field_errors_are_typed() {
    let limits = Limits::default();
    let mut bytes = ClientMessage::AdvertiseKeys(advertisement(1, None)).encode();
    bytes[0] = 2;
    assert_eq!(ClientMessage::decode(&bytes, &limits), Err(DecodeError::UnsupportedVersion(2)));
    // A server message type sent by a client is unknown in that direction.
    let bytes = ServerMessage::RoundComplete { inputs: 1 }.encode();
    assert_eq!(ClientMessage::decode(&bytes, &limits), Err(DecodeError::UnknownMessageType(0x05)));
    // The service layer's type bytes are reserved in both directions.
    for ty in privagg_protocol::SERVICE_TYPES {
        let bytes = [1u8, ty];
        assert_eq!(ClientMessage::decode(&bytes, &limits), Err(DecodeError::ReservedType(ty)));
        assert_eq!(ServerMessage::decode(&bytes, &limits), Err(DecodeError::ReservedType(ty)));
    }
    assert_eq!(ServerMessage::decode(&[1, 0x40], &limits), Err(DecodeError::UnknownMessageType(0x40)));
    // The identity point is not a public key.
    let mut bytes = ClientMessage::AdvertiseKeys(advertisement(1, None)).encode();
    bytes[2..34].fill(0);
    assert_eq!(ClientMessage::decode(&bytes, &limits), Err(DecodeError::InvalidPublicKey));
    // A signature flag other than 0 or 1, in an advertisement and in a key list.
    let mut bytes = ClientMessage::AdvertiseKeys(advertisement(1, None)).encode();
    *bytes.last_mut().unwrap() = 2;
    assert_eq!(ClientMessage::decode(&bytes, &limits), Err(DecodeError::InvalidField("signature flag")));
    let mut bytes = server_messages()[1].encode();
    *bytes.last_mut().unwrap() = 7;
    assert_eq!(ServerMessage::decode(&bytes, &limits), Err(DecodeError::InvalidField("signature flag")));
    // Share commitments of degree −1 (t = 0), or with a point that is not canonical.
    let mut bytes = client_messages()[1].encode();
    bytes[2..6].copy_from_slice(&0u32.to_le_bytes());
    assert!(ClientMessage::decode(&bytes, &limits).is_err());
    let mut bytes = client_messages()[1].encode();
    bytes[6..38].copy_from_slice(&[0xff; 32]);
    assert_eq!(ClientMessage::decode(&bytes, &limits), Err(DecodeError::InvalidPublicKey));
    // A share equal to the group order is not canonical.
    let mut bytes = client_messages()[4].encode();
    let order: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    bytes[2 + 4 + 4..2 + 4 + 4 + 32].copy_from_slice(&order);
    assert_eq!(ClientMessage::decode(&bytes, &limits), Err(DecodeError::InvalidScalar));
    // An UnmaskRequest naming client 0.
    let bytes = [1u8, 0x04, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(ServerMessage::decode(&bytes, &limits), Err(DecodeError::InvalidField("client id")));
    // Unknown abort code and invalid UTF-8.
    let mut bytes = ServerMessage::Abort(Abort::new(AbortCode::Shutdown, "x")).encode();
    bytes[2] = 99;
    assert_eq!(ServerMessage::decode(&bytes, &limits), Err(DecodeError::InvalidField("abort code")));
    let mut bytes = ServerMessage::Abort(Abort::new(AbortCode::Shutdown, "x")).encode();
    let last = bytes.len() - 1;
    bytes[last] = 0xff;
    assert_eq!(ServerMessage::decode(&bytes, &limits), Err(DecodeError::InvalidField("abort detail")));
    let mut bytes = ClientMessage::Leave(Leave::new([0; 32], "x")).encode();
    let last = bytes.len() - 1;
    bytes[last] = 0xff;
    assert_eq!(ClientMessage::decode(&bytes, &limits), Err(DecodeError::InvalidField("leave detail")));
    // Non-zero padding of a packed vector.
    let mut bytes = client_messages()[2].encode();
    let last = bytes.len() - 1;
    bytes[last] |= 0x80;
    assert_eq!(ClientMessage::decode(&bytes, &limits), Err(DecodeError::NonZeroPadding));
}

#[test]
fn envelope_signatures_are_flagged_and_exactly_64_bytes() {
    let limits = Limits::default();
    let signed =
        ClientMessage::ShareKeys(ShareKeys { commitments: commitments(13, 1), envelopes: vec![signed_envelope(4)] });
    let unsigned =
        ClientMessage::ShareKeys(ShareKeys { commitments: commitments(13, 1), envelopes: vec![envelope(4)] });
    let (signed_bytes, unsigned_bytes) = (signed.encode(), unsigned.encode());
    // The signature costs its flag byte and 64 bytes; an unsigned envelope its flag alone.
    assert_eq!(signed_bytes.len(), unsigned_bytes.len() + 64);
    let flag_at = unsigned_bytes.len() - 1;
    assert_eq!((signed_bytes[flag_at], unsigned_bytes[flag_at]), (1, 0));
    // A flag other than 0 or 1.
    for flag in [2u8, 0xff] {
        let mut bytes = unsigned_bytes.clone();
        bytes[flag_at] = flag;
        assert_eq!(ClientMessage::decode(&bytes, &limits), Err(DecodeError::InvalidField("envelope signature flag")));
    }
    // Signed, but the signature one byte short, or absent; unsigned, but 64 bytes follow.
    let short = &signed_bytes[..signed_bytes.len() - 1];
    assert!(matches!(ClientMessage::decode(short, &limits), Err(DecodeError::Truncated { needed: 64, remaining: 63 })));
    let mut flagged_only = unsigned_bytes.clone();
    flagged_only[flag_at] = 1;
    assert!(matches!(ClientMessage::decode(&flagged_only, &limits), Err(DecodeError::Truncated { needed: 64, .. })));
    let mut trailing = unsigned_bytes;
    trailing.extend_from_slice(&[0x64; 64]);
    assert_eq!(ClientMessage::decode(&trailing, &limits), Err(DecodeError::TrailingBytes(64)));
    // The same in a forwarded envelope, followed by its commitments.
    let forwarded = ServerMessage::ForwardedShares(vec![ForwardedShare {
        envelope: signed_envelope(2),
        commitments: commitments(2, 1),
    }]);
    let mut bytes = forwarded.encode();
    let flag_at = 2 + 4 + 4 + ENVELOPE_LEN;
    assert_eq!(bytes[flag_at], 1);
    bytes[flag_at] = 3;
    assert_eq!(ServerMessage::decode(&bytes, &limits), Err(DecodeError::InvalidField("envelope signature flag")));
    let mut bytes = forwarded.encode();
    bytes[flag_at] = 0; // the signature's bytes are then read as commitments
    assert!(ServerMessage::decode(&bytes, &limits).is_err());
}

#[test]
fn counts_are_bounded_before_allocation() {
    let tight = Limits { max_clients: 1, max_dim: 2, max_app_data: 4, max_detail: 2, max_certificate: 4 };
    let err = ClientMessage::decode(&client_messages()[1].encode(), &tight).unwrap_err();
    assert!(matches!(err, DecodeError::LimitExceeded { what: "commitment degree", value: 2, limit: 1 }));
    let mut share_keys = ShareKeys { commitments: commitments(11, 1), envelopes: vec![envelope(4), envelope(6)] };
    let err = ClientMessage::decode(&ClientMessage::ShareKeys(share_keys.clone()).encode(), &tight).unwrap_err();
    assert!(matches!(err, DecodeError::LimitExceeded { what: "envelopes", value: 2, limit: 1 }));
    share_keys.envelopes.pop();
    assert!(ClientMessage::decode(&ClientMessage::ShareKeys(share_keys).encode(), &tight).is_ok());
    let err = ClientMessage::decode(&client_messages()[2].encode(), &tight).unwrap_err();
    assert!(matches!(err, DecodeError::LimitExceeded { what: "vector length", .. }));
    let err = ServerMessage::decode(&server_messages()[0].encode(), &tight).unwrap_err();
    assert!(matches!(err, DecodeError::LimitExceeded { what: "client data", .. }));
    let ServerMessage::Config(mut config) = server_messages()[0].clone() else { unreachable!() };
    config.client_data.clear();
    let err = ServerMessage::decode(&ServerMessage::Config(config).encode(), &tight).unwrap_err();
    assert!(matches!(err, DecodeError::LimitExceeded { what: "application data", .. }));
    let err = ClientMessage::decode(&client_messages()[5].encode(), &tight).unwrap_err();
    assert!(matches!(err, DecodeError::LimitExceeded { what: "leave detail", .. }));
    let err = ServerMessage::decode(&server_messages()[1].encode(), &tight).unwrap_err();
    assert!(matches!(err, DecodeError::LimitExceeded { what: "cohort seats", value: 5, limit: 1 }));
    let loose_count = Limits { max_clients: 10, ..tight };
    let err = ServerMessage::decode(&server_messages()[7].encode(), &loose_count).unwrap_err();
    assert!(matches!(err, DecodeError::LimitExceeded { what: "certificate", value: 13, limit: 4 }));
    // A count of 2^32 − 1 envelopes in a 10-byte frame is refused for lack of bytes,
    // without reserving memory for them.
    let frame = [1u8, 0x12, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    let err = ClientMessage::decode(&frame, &Limits { max_clients: u32::MAX, ..Limits::default() }).unwrap_err();
    assert!(matches!(err, DecodeError::Truncated { .. }));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let limits = Limits::default();
        let _ = ServerMessage::decode(&bytes, &limits);
        let _ = ClientMessage::decode(&bytes, &limits);
    }

    #[test]
    fn corrupted_frames_never_panic_and_valid_ones_reencode_identically(
        which in 0usize..15,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let limits = Limits::default();
        let servers = server_messages();
        let (mut bytes, server) = match servers.get(which) {
            Some(m) => (m.encode(), true),
            None => (client_messages()[which - servers.len()].encode(), false),
        };
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        // Whatever decodes is canonical: it encodes back to the same bytes.
        if server {
            if let Ok(m) = ServerMessage::decode(&bytes, &limits) {
                prop_assert_eq!(m.encode(), bytes);
            }
        } else if let Ok(m) = ClientMessage::decode(&bytes, &limits) {
            prop_assert_eq!(m.encode(), bytes);
        }
    }
}

#[test]
fn key_lists_split_for_sharing_are_exactly_the_encoded_message() {
    let mut seen = 0;
    for message in server_messages() {
        let ServerMessage::KeyList(list) = &message else { continue };
        seen += 1;
        let mut encoded_once = Vec::new();
        let cohort = Arc::from(privagg_protocol::encode_cohort(&list.cohort));
        let parts = privagg_protocol::encode_key_list_split(list, cohort, |e| {
            encoded_once.push(e.id);
            Arc::from(privagg_protocol::encode_entry(e))
        });
        let joined: Vec<u8> = parts.iter().flat_map(|(own, shared)| [&own[..], &shared[..]].concat()).collect();
        assert_eq!(joined, message.encode(), "{message:?}");
        let ids: Vec<_> = list.entries.iter().map(|e| e.id).collect();
        assert_eq!(encoded_once, ids, "each entry asked for once");
    }
    assert!(seen > 0, "no key list among the test messages");
}

#[test]
fn forwarded_shares_split_for_sharing_are_exactly_the_encoded_message() {
    for message in server_messages() {
        let ServerMessage::ForwardedShares(forwarded) = &message else { continue };
        let mut encoded_once = 0;
        let parts = privagg_protocol::encode_forwarded_split(forwarded, |c| {
            encoded_once += 1;
            Arc::from(c.encode())
        });
        let joined: Vec<u8> = parts.iter().flat_map(|(own, shared)| [&own[..], &shared[..]].concat()).collect();
        assert_eq!(joined, message.encode(), "{message:?}");
        assert_eq!(encoded_once, forwarded.len());
    }
}

//! Golden wire vectors, in the manner of openmls's `test_vectors/`: the hex encoding of
//! every protocol and service message, of the round settings, of a frame header and of
//! the cohort's hashes (cohort hash, labelling seed, session id, signed advertisement,
//! signed survivor set and signed envelope),
//! pinned in `test_vectors/wire.json`. Each vector is checked both ways:
//! the value encodes to exactly these bytes, and these bytes decode to exactly the
//! value. A change to the wire format therefore shows up in review as a change to that
//! file. After a deliberate change, regenerate it with
//! `PRIVAGG_BLESS=1 cargo test -p privagg-service --test golden`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::sync::Arc;

use curve25519_dalek::Scalar;
use privagg_crypto::dleq::DleqProof;
use privagg_crypto::{KeyContext, PrgKind, SecretKey};
use privagg_dp::encoding::{Clipping, EncodingParams, Rounding};
use privagg_dp::noise::{NoiseSpec, Ratio};
use privagg_dp::planner::Mechanism;
use privagg_protocol::cohort::{self, RevealedSeat};
use privagg_protocol::complaint::envelope_message;
use privagg_protocol::{
    Abort, AbortCode, AdvertisedKeys, Advertisement, Certified, ClientId, ClientMessage, Config, ENVELOPE_LEN,
    Envelope, EnvelopeComplaint, ForwardedShare, KeyList, Leave, Limits, PackedVector, PeerEntry, RevealedShare,
    RoundParams, ServerMessage, ShareCommitments, ShareKeys, SurvivorSignature, UnmaskRequest, UnmaskResponse,
};
use privagg_service::message::{ClientServiceMessage, FromClient, FromServer, Resume, ServerServiceMessage};
use privagg_service::round_log::{LogProof, LogRequest, ProvenLeaf};
use privagg_service::{AggregationMode, EndReason, RoundSettings};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::{Value, json};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/test_vectors/wire.json");

fn id(raw: u32) -> ClientId {
    ClientId::new(raw).unwrap()
}

fn keys(seed: u64) -> AdvertisedKeys {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (channel, mask) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
    AdvertisedKeys::prove(&channel, &mask, &[seed as u8; 32], id(1), &mut rng)
}

fn envelope(peer: u32) -> Envelope {
    let mut sealed = [0u8; ENVELOPE_LEN];
    for (i, b) in sealed.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(peer as u8);
    }
    Envelope { peer: id(peer), sealed: Box::new(sealed), signature: None }
}

/// [`envelope`], signed (a placeholder signature: the wire does not verify it).
fn signed_envelope(peer: u32) -> Envelope {
    Envelope { signature: Some([0x50 + peer as u8; 64]), ..envelope(peer) }
}

/// Deterministic Feldman commitments of degree t − 1 = 2 (the golden round's t = 3).
fn commitments(seed: u64) -> Arc<ShareCommitments> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (_, mask_key) = privagg_crypto::vss::split(&Scalar::from(seed + 1), 3, &[1, 2, 3], &mut rng).unwrap();
    let (_, self_mask) = privagg_crypto::vss::split(&Scalar::from(seed + 2), 3, &[1, 2, 3], &mut rng).unwrap();
    Arc::new(ShareCommitments { mask_key, self_mask })
}

fn forwarded(peer: u32) -> ForwardedShare {
    ForwardedShare { envelope: envelope(peer), commitments: commitments(peer.into()) }
}

fn params() -> RoundParams {
    RoundParams {
        round: 3,
        num_clients: 5,
        neighbours: 4,
        threshold: 3,
        min_clients: 4,
        dim: 4,
        bits: 20,
        prg: PrgKind::Aes128Ctr,
    }
}

fn weighted_settings() -> RoundSettings {
    RoundSettings {
        session: [0x5e; 16],
        round: 3,
        total_rounds: 10,
        mode: AggregationMode::Weighted { value_range: 8.0, max_weight: 1000.0 },
        encoding: EncodingParams::without_dp(3, 0.5, 48, Clipping::None, None).unwrap(),
        model: vec![0.5, -1.25],
        train_timeout_secs: 0,
    }
}

fn dp_settings() -> RoundSettings {
    RoundSettings {
        session: [0x5e; 16],
        round: 3,
        total_rounds: 10,
        mode: AggregationMode::Dp {
            mechanism: Mechanism::DiscreteGaussian,
            n_min: 4,
            colluders: 0,
            delta: 1e-5,
            epsilon_spent: 1.5,
            clip_indicator: None,
        },
        encoding: EncodingParams {
            dim: 3,
            padded_dim: 4,
            rotation_seed: Some([9; 32]),
            gamma: 0.001,
            bits: 20,
            clipping: Clipping::L2(1.0),
            rounding: Rounding::Conditional { beta: 0.5, norm_bound_sq: 1_200_000, max_attempts: 1000 },
            noise: NoiseSpec::DiscreteGaussian { variance: Ratio::new(25, 2).unwrap() },
        },
        model: vec![0.25, 0.0, -0.75],
        train_timeout_secs: 0,
    }
}

/// Whether pinned bytes decode to a vector's value.
type DecodesBack = Box<dyn Fn(&[u8]) -> bool>;

/// One vector: its name, its bytes, and whether those bytes decode to the value.
struct Vector {
    name: &'static str,
    bytes: Vec<u8>,
    decodes_back: DecodesBack,
}

fn server_message(name: &'static str, m: ServerMessage) -> Vector {
    let bytes = m.encode();
    Vector {
        name,
        bytes,
        decodes_back: Box::new(move |b| {
            FromServer::decode(b, &Limits::default()) == Ok(FromServer::Protocol(m.clone()))
        }),
    }
}

fn client_message(name: &'static str, m: ClientMessage) -> Vector {
    let bytes = m.encode();
    Vector {
        name,
        bytes,
        decodes_back: Box::new(move |b| {
            FromClient::decode(b, &Limits::default()) == Ok(FromClient::Protocol(m.clone()))
        }),
    }
}

fn to_client(name: &'static str, m: ServerServiceMessage) -> Vector {
    let bytes = m.encode();
    Vector {
        name,
        bytes,
        decodes_back: Box::new(move |b| {
            FromServer::decode(b, &Limits::default()) == Ok(FromServer::Service(m.clone()))
        }),
    }
}

fn to_server(name: &'static str, m: ClientServiceMessage) -> Vector {
    let bytes = m.encode();
    Vector {
        name,
        bytes,
        decodes_back: Box::new(move |b| {
            FromClient::decode(b, &Limits::default()) == Ok(FromClient::Service(m.clone()))
        }),
    }
}

fn settings(name: &'static str, s: RoundSettings) -> Vector {
    let bytes = s.encode().unwrap();
    Vector { name, bytes, decodes_back: Box::new(move |b| RoundSettings::decode(b).is_ok_and(|d| d == s)) }
}

fn vectors() -> Vec<Vector> {
    // Five seats: seats 1 and 2 certified (a placeholder certificate: the wire does not
    // parse it), the rest anonymous.
    let certificate: Arc<[u8]> = Arc::from(&b"0\x82 certificate DER"[..]);
    let seats: Vec<RevealedSeat> = (1..=5u8)
        .map(|i| RevealedSeat {
            fingerprint: cohort::fingerprint((i <= 2).then_some(&[&certificate[..], &[i]].concat()[..])),
            nonce: [i; 32],
        })
        .collect();
    let hash = cohort::cohort_hash(&params(), seats.iter().map(|s| (s.fingerprint, cohort::commitment(&s.nonce))));
    let labelling = cohort::labelling(&hash, seats.iter().map(|s| &s.nonce));
    let signed = Certified { certificate: certificate.clone(), signature: [0x51; 64] };
    let entries = [
        PeerEntry { id: id(1), keys: keys(1), certified: Some(signed.clone()) },
        PeerEntry { id: id(2), keys: keys(2), certified: Some(signed) },
        PeerEntry { id: id(4), keys: keys(4), certified: None },
    ]
    .map(Arc::new)
    .to_vec();
    let advertisement = cohort::advertisement_message(&hash, id(2), &keys(2), &[2; 32]);
    let survivors = cohort::survivors_message(&labelling.session_id, 3, &[id(1), id(2), id(4)]);
    let commitment_digest = commitments(2).digest(&labelling.session_id, 3, id(2));
    let ctx = KeyContext { session_id: labelling.session_id, round: 3 };
    let envelope_signed = envelope_message(&ctx, id(2), id(1), &commitment_digest, &envelope(2).sealed);
    // The client data of a Config: a round-log proof (its encoding pinned here; what it
    // proves is checked by `round_log`'s tests).
    let proof = LogProof {
        key: "privagg/5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e+0a0b0c0d+AQ==".into(),
        checkpoint:
            "privagg/5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e\n2\nAAAA\n\n— privagg/5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e c2ln\n"
                .into(),
        from: 1,
        consistency: vec![[0xc1; 32]],
        leaves: vec![ProvenLeaf { index: 1, leaf: br#"{"round":2}"#.to_vec(), path: vec![[0xa1; 32]] }],
    };
    let config = Config {
        params: params(),
        client_id: id(2),
        cohort: hash,
        client_data: LogProof::encode(Some(&proof)),
        app_data: Arc::from(&b"settings and model"[..]),
    };
    let header = privagg_service::frame::header(300).unwrap().to_vec();
    vec![
        server_message("Config", ServerMessage::Config(config)),
        server_message("KeyList", ServerMessage::KeyList(KeyList { cohort: seats.clone().into(), entries })),
        // Seat 1 is certified and signs its envelopes; seat 4 is anonymous.
        server_message(
            "ForwardedShares",
            ServerMessage::ForwardedShares(vec![
                ForwardedShare { envelope: signed_envelope(1), commitments: commitments(1) },
                forwarded(4),
            ]),
        ),
        server_message(
            "UnmaskRequest",
            ServerMessage::UnmaskRequest(UnmaskRequest {
                survivors: vec![id(1), id(2)],
                dropped: vec![id(4)],
                signatures: vec![SurvivorSignature { signer: id(1), signature: [0x52; 64] }],
            }),
        ),
        server_message("ConsistencyCheck", ServerMessage::ConsistencyCheck(vec![id(1), id(2)])),
        server_message("RoundComplete", ServerMessage::RoundComplete { inputs: 4 }),
        server_message("Abort (server)", ServerMessage::Abort(Abort::new(AbortCode::TooFewClients, "too few"))),
        server_message("Abort (dropped)", ServerMessage::Abort(Abort::new(AbortCode::Dropped, "missed the deadline"))),
        client_message(
            "AdvertiseKeys (signed)",
            ClientMessage::AdvertiseKeys(Box::new(Advertisement {
                keys: keys(2),
                nonce: [2; 32],
                signature: Some([0x51; 64]),
            })),
        ),
        client_message(
            "AdvertiseKeys (anonymous)",
            ClientMessage::AdvertiseKeys(Box::new(Advertisement { keys: keys(4), nonce: [4; 32], signature: None })),
        ),
        client_message(
            "ShareKeys",
            ClientMessage::ShareKeys(ShareKeys {
                commitments: commitments(2),
                envelopes: vec![signed_envelope(1), signed_envelope(4)],
            }),
        ),
        client_message("MaskedInput", ClientMessage::MaskedInput(PackedVector::pack(&[1, 0xfffff, 0, 77], 20))),
        client_message(
            "UnmaskResponse",
            ClientMessage::UnmaskResponse(UnmaskResponse {
                self_mask_shares: vec![RevealedShare { owner: id(1), value: Scalar::from(5u64) }],
                mask_key_shares: vec![RevealedShare { owner: id(4), value: -Scalar::ONE }],
            }),
        ),
        client_message("SurvivorsSigned", ClientMessage::SurvivorsSigned(Some([0x53; 64]))),
        client_message("SurvivorsSigned (anonymous)", ClientMessage::SurvivorsSigned(None)),
        client_message(
            "Complaints",
            ClientMessage::Complaints(vec![
                EnvelopeComplaint {
                    sender: id(1),
                    sealed: Box::new([0x3c; ENVELOPE_LEN]),
                    shared: [0x5c; 32].into(),
                    proof: DleqProof { challenge: Scalar::from(3u64), response: -Scalar::ONE },
                    mask_shared: [0x6c; 32].into(),
                    mask_proof: DleqProof { challenge: Scalar::from(7u64), response: Scalar::from(8u64) },
                },
                EnvelopeComplaint {
                    sender: id(4),
                    sealed: Box::new([0x3d; ENVELOPE_LEN]),
                    shared: [0x5d; 32].into(),
                    proof: DleqProof { challenge: Scalar::from(5u64), response: Scalar::from(6u64) },
                    mask_shared: [0x6d; 32].into(),
                    mask_proof: DleqProof { challenge: Scalar::from(9u64), response: -Scalar::from(2u64) },
                },
            ]),
        ),
        client_message("Leave", ClientMessage::Leave(Leave::new([2; 32], "dimension 7 ≠ 8"))),
        to_server("Hello", ClientServiceMessage::Hello { token: "tok-1".into(), identity: [3; 16], resume: None }),
        to_server(
            "Hello (resuming)",
            ClientServiceMessage::Hello {
                token: String::new(),
                identity: [3; 16],
                resume: Some(Resume { round: 3, received: 2 }),
            },
        ),
        to_server("UploadReady", ClientServiceMessage::UploadReady),
        to_server(
            "Ready",
            ClientServiceMessage::Ready {
                commitment: cohort::commitment(&[2; 32]),
                log: LogRequest { session: [0x5e; 16], size: 1, rounds: vec![2] },
            },
        ),
        to_server("CheckInReply", ClientServiceMessage::CheckInReply { round: 3, attempt: 1, join: true }),
        to_server("FollowModel", ClientServiceMessage::FollowModel),
        to_client("Welcome", ServerServiceMessage::Welcome { resumed: None }),
        to_client(
            "Welcome (resumed)",
            ServerServiceMessage::Welcome { resumed: Some(Resume { round: 3, received: 1 }) },
        ),
        to_client("Refused", ServerServiceMessage::Refused { reason: "unknown token".into() }),
        to_client("UploadGrant", ServerServiceMessage::UploadGrant),
        to_client("CheckIn", ServerServiceMessage::CheckIn { round: 3, attempt: 1, rate_ppb: 10_000_000 }),
        to_client("Model", ServerServiceMessage::Model { round: 3, values: vec![0.5, -1.25] }),
        to_client(
            "SessionEnd",
            ServerServiceMessage::SessionEnd { completed_rounds: 3, end: EndReason::Complete, reason: "done".into() },
        ),
        settings("RoundSettings (weighted)", weighted_settings()),
        settings("RoundSettings (DP)", dp_settings()),
        Vector { name: "frame header (300 bytes)", bytes: header, decodes_back: Box::new(|b| b == [44, 1, 0, 0]) },
        Vector { name: "cohort hash", bytes: hash.to_vec(), decodes_back: Box::new(move |b| b == hash) },
        Vector {
            name: "share commitments digest",
            bytes: commitment_digest.to_vec(),
            decodes_back: Box::new(move |b| b == commitment_digest),
        },
        Vector {
            name: "labelling seed",
            bytes: labelling.graph_seed.to_vec(),
            decodes_back: Box::new(move |b| b == labelling.graph_seed),
        },
        Vector {
            name: "session id",
            bytes: labelling.session_id.to_vec(),
            decodes_back: Box::new(move |b| b == labelling.session_id),
        },
        Vector {
            name: "signed advertisement",
            bytes: advertisement.clone(),
            decodes_back: Box::new(move |b| b == advertisement),
        },
        Vector {
            name: "signed survivor set",
            bytes: survivors.clone(),
            decodes_back: Box::new(move |b| b == survivors),
        },
        Vector {
            name: "signed envelope",
            bytes: envelope_signed.to_vec(),
            decodes_back: Box::new(move |b| b == envelope_signed),
        },
    ]
}

#[test]
fn every_message_matches_its_golden_vector_both_ways() {
    let vectors = vectors();
    if std::env::var_os("PRIVAGG_BLESS").is_some() {
        let list: Vec<Value> =
            vectors.iter().map(|v| json!({ "name": v.name, "hex": hex::encode(&v.bytes) })).collect();
        let file = json!({
            "description": "privagg wire format, version 1: protocol and service messages, round settings, framing, session id (see protocol/PROTOCOL.md)",
            "vectors": list,
        });
        std::fs::write(PATH, serde_json::to_string_pretty(&file).unwrap() + "\n").unwrap();
    }
    let file: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let pinned = file["vectors"].as_array().unwrap();
    assert_eq!(pinned.len(), vectors.len(), "vectors added or removed: regenerate and review");
    for (v, p) in vectors.iter().zip(pinned) {
        assert_eq!(p["name"], v.name);
        let bytes = hex::decode(p["hex"].as_str().unwrap()).unwrap();
        assert_eq!(hex::encode(&v.bytes), hex::encode(&bytes), "{} encodes differently", v.name);
        assert!((v.decodes_back)(&bytes), "{} does not decode to its value", v.name);
    }
}

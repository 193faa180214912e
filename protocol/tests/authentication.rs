//! A server that substitutes, invents or re-seats a target's neighbours, played against
//! real honest clients with certificates from the enrollment authority. Each attack ends
//! in a typed refusal before the target shares its secrets (or, for withheld envelopes,
//! before it sends its masked input): nothing secret leaves it. The consistency round:
//! survivor sets a client will not sign, and unmask requests without t holder signatures
//! over the set it signed, are refused before any share is revealed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use common::{Enrollment, Harness, id, now, params, until};
use privagg_crypto::SecretKey;
use privagg_protocol::graph_params::{AdversaryClass, ThreatModel, find_graph_parameters};
use privagg_protocol::{
    AdvertisedKeys, ClientError, ClientId, ClientMessage, ClientPolicy, ClientState, KeyList, NeighbourGraph,
    PeerEntry, RoundParams, ServerMessage, UnmaskRequest, Violation, cohort,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;

fn is_key_list(m: &ServerMessage) -> bool {
    matches!(m, ServerMessage::KeyList(_))
}

fn key_list(msg: ServerMessage) -> KeyList {
    match msg {
        ServerMessage::KeyList(k) => k,
        other => panic!("{other:?}"),
    }
}

/// A certified round of 10 (complete graph, t = 6, what the default policy accepts), run
/// until client 1 is about to receive its key list.
fn certified_round(enrollment: &Enrollment) -> (Harness, KeyList) {
    let h = Harness::certified(params(10, 9, 6, 8, 32), 21, ClientPolicy::default(), enrollment);
    let (h, msg) = until(h, is_key_list);
    (h, key_list(msg))
}

/// Delivers `list` to client 1: the error it answers with, after checking that it
/// shared nothing.
fn refusal(h: &mut Harness, list: KeyList) -> ClientError {
    let (client, rng) = &mut h.clients[0];
    let err = client.receive(ServerMessage::KeyList(list), rng).expect_err("the client should refuse");
    assert_eq!(client.state(), ClientState::Failed);
    err
}

/// A sparse round of 40 sized for a lying server (what the default policy accepts).
fn sparse_params() -> RoundParams {
    let threat =
        ThreatModel { corrupt_fraction: 0.05, dropout_fraction: 0.1, adversary: AdversaryClass::SemiMaliciousServer };
    let sized = find_graph_parameters(40, &threat).unwrap();
    assert!(!sized.is_complete());
    params(40, sized.neighbours, sized.threshold, 8, 32)
}

/// Keys the server holds, proven for seat `seat` of the round [`certified_round`] plays
/// (whose cohort `list` reveals): everything but the seat's signature is in order.
fn server_keys(seed: u64, list: &KeyList, seat: ClientId) -> AdvertisedKeys {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (channel, mask) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
    let cohort = cohort::cohort_hash(
        &params(10, 9, 6, 8, 32),
        list.cohort.iter().map(|s| (s.fingerprint, cohort::commitment(&s.nonce))),
    );
    AdvertisedKeys::prove(&channel, &mask, &cohort, seat, &mut rng)
}

#[test]
fn a_neighbours_keys_substituted_by_the_server_are_refused() {
    // The server swaps in keys it holds for neighbour 4, keeping 4's certificate and
    // signature: the signature no longer covers the keys.
    let enrollment = Enrollment::new();
    let (mut h, honest) = certified_round(&enrollment);
    let mut list = honest.clone();
    entry_mut(&mut list, id(4)).keys = server_keys(1, &honest, id(4));
    assert_eq!(refusal(&mut h, list), ClientError::BadPeerSignature(id(4)));
}

#[test]
fn a_neighbours_keys_without_proof_of_possession_are_refused_before_anything_is_shared() {
    // The attack (found by review): the server and a client it colludes with give seat 4
    // keys related to honest seat 3's, C_3 + a·G and S_3 + a·G for an a they know. Seat
    // 4's neighbours, complaining about its envelopes, would reveal c_v·C_4 and s_v·S_4,
    // from which the server subtracts a·C_v and a·S_v: the channel and mask values of
    // the honest pair (v, 3), which open seat 3's envelopes and masks. The colluder can
    // sign its rogue keys, but cannot prove it holds their secrets.
    let enrollment = Enrollment::new();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let a = SecretKey::generate(&mut rng);
    let related = |k: &privagg_crypto::PublicKey| {
        privagg_crypto::PublicKey::from_bytes(&(k.point() + a.public_key().point()).compress().to_bytes()).unwrap()
    };
    // The best the colluders can attach to the related keys: proofs for a·G, or seat 3's
    // own proofs. Then seat 3's genuine keys and proofs moved to seat 4, seat 3 left out
    // (the proofs are bound to seat 3).
    let of_a = AdvertisedKeys::prove(&a, &SecretKey::generate(&mut rng), &[0; 32], id(4), &mut rng).possession;
    for case in 0..3 {
        let (mut h, mut list) = certified_round(&enrollment);
        let three = list.entries.iter().find(|e| e.id == id(3)).unwrap().keys;
        let entry = entry_mut(&mut list, id(4));
        let rogue =
            |possession| AdvertisedKeys { channel: related(&three.channel), mask: related(&three.mask), possession };
        entry.keys = match case {
            0 => rogue(of_a),
            1 => rogue(three.possession),
            _ => three,
        };
        if case == 2 {
            list.entries.retain(|e| e.id != id(3)); // else the repeated keys are refused first
        }
        assert_eq!(refusal(&mut h, list), ClientError::UnprovenKeys(id(4)), "case {case}");
    }
}

#[test]
fn unsigned_or_wrongly_signed_neighbours_are_refused() {
    let enrollment = Enrollment::new();

    // Unsigned: the server strips the certificate and signature.
    let (mut h, mut list) = certified_round(&enrollment);
    entry_mut(&mut list, id(3)).certified = None;
    assert_eq!(refusal(&mut h, list), ClientError::UnsignedPeer(id(3)));

    // A signature that does not verify.
    let (mut h, mut list) = certified_round(&enrollment);
    entry_mut(&mut list, id(5)).certified.as_mut().unwrap().signature[7] ^= 1;
    assert_eq!(refusal(&mut h, list), ClientError::BadPeerSignature(id(5)));

    // Another client's genuine certificate and signature moved to seat 6: the certificate
    // is not the one seat 6 was taken with.
    let (mut h, mut list) = certified_round(&enrollment);
    let seven = list.entries.iter().find(|e| e.id == id(7)).unwrap().certified.clone();
    entry_mut(&mut list, id(6)).certified = seven;
    assert!(matches!(refusal(&mut h, list), ClientError::PeerCertificate { peer, .. } if peer == id(6)));
}

#[test]
fn neighbours_certified_by_another_authority_are_refused() {
    // The server seats the target among clients it certified itself (its own "authority"):
    // the certificates do not chain to the enrollment authority's root.
    let (real, sybils) = (Enrollment::new(), Enrollment::new());
    let h = Harness::with_clients(
        params(10, 9, 6, 8, 32),
        22,
        |c| {
            let authority = if c == id(1) { &real } else { &sybils };
            (ClientPolicy::default(), Some(authority.identity(&format!("client-{}", c.get()))))
        },
        &[],
    );
    let (mut h, msg) = until(h, is_key_list);
    let err = refusal(&mut h, key_list(msg));
    assert!(
        matches!(&err, ClientError::PeerCertificate { peer, reason } if *peer == id(2) && reason.contains("certificate")),
        "{err}"
    );
}

#[test]
fn invented_neighbours_without_certificates_are_refused() {
    // The audit's attack: one real client among peers the server invented. Without
    // certificates the invented seats are anonymous, which a certified client refuses
    // before it shares anything.
    let enrollment = Enrollment::new();
    let h = Harness::with_clients(
        params(5, 4, 3, 8, 32),
        23,
        |c| {
            // The invented peers are the server's; what they accept does not matter.
            match c == id(1) {
                true => (ClientPolicy::default(), Some(enrollment.identity("target"))),
                false => (common::any_threshold(), None),
            }
        },
        &[],
    );
    let (mut h, msg) = until(h, is_key_list);
    let err = refusal(&mut h, key_list(msg));
    assert!(matches!(&err, ClientError::CohortMismatch(why) if why.contains("without a certificate")), "{err}");
}

#[test]
fn an_expired_neighbour_certificate_is_refused() {
    // The peers' certificates are valid for a day; the target checks them two days later.
    let enrollment = Enrollment::new();
    let later = now() + 2 * 86_400;
    let h = Harness::with_clients(
        params(10, 9, 6, 8, 32),
        24,
        |c| {
            let identity = if c == id(1) {
                enrollment.identity_for("target", 30, later)
            } else {
                enrollment.identity_for(&format!("client-{}", c.get()), 1, now())
            };
            (ClientPolicy::default(), Some(identity))
        },
        &[],
    );
    let (mut h, msg) = until(h, is_key_list);
    let err = refusal(&mut h, key_list(msg));
    assert!(
        matches!(&err, ClientError::PeerCertificate { reason, .. } if reason.to_lowercase().contains("expired")),
        "{err}"
    );
}

#[test]
fn certificates_that_expire_while_the_server_keeps_the_client_waiting_are_refused() {
    // All certificates are valid for a day when the client commits; the server holds the
    // key list back for two days. The shell's clock, not the one at the start, decides.
    let enrollment = Enrollment::new();
    let h = Harness::with_clients(
        params(10, 9, 6, 8, 32),
        25,
        |c| {
            let days = if c == id(1) { 30 } else { 1 };
            (ClientPolicy::default(), Some(enrollment.identity_for(&format!("client-{}", c.get()), days, now())))
        },
        &[],
    );
    let (mut h, msg) = until(h, is_key_list);
    h.clients[0].0.set_clock(now() + 2 * 86_400);
    let err = refusal(&mut h, key_list(msg));
    assert!(matches!(&err, ClientError::PeerCertificate { reason, .. } if reason.to_lowercase().contains("expired")));
}

#[test]
fn a_neighbourhood_the_server_chose_after_the_reveal_is_refused() {
    // A sparse certified round; the server would like the target's neighbours to be
    // clients of its choosing. The labelling follows from the nonces, so it can only
    // (a) list other clients as neighbours, or (b) change the revealed nonces so that the
    // labelling suits it. Both are caught.
    let enrollment = Enrollment::new();
    let p = sparse_params();
    let fresh = || {
        let (h, msg) = until(Harness::certified(p.clone(), 25, ClientPolicy::default(), &enrollment), is_key_list);
        (h, key_list(msg))
    };

    // (a) An outsider listed in place of a neighbour.
    let (mut h, mut list) = fresh();
    let neighbours: Vec<ClientId> = list.entries.iter().map(|e| e.id).filter(|&c| c != id(1)).collect();
    let outsider = p.client_ids().find(|c| *c != id(1) && !neighbours.contains(c)).unwrap();
    let swapped = list.entries.iter().position(|e| e.id == neighbours[0]).unwrap();
    Arc::make_mut(&mut list.entries[swapped]).id = outsider;
    list.entries.sort_by_key(|e| e.id);
    assert!(matches!(refusal(&mut h, list), ClientError::UnexpectedPeer(c) if c == outsider));

    // (b) Ground nonces: any change to a revealed nonce breaks the cohort hash.
    let (mut h, mut list) = fresh();
    let mut cohort = list.cohort.to_vec();
    cohort[9].nonce = [0x42; 32];
    list.cohort = cohort.into();
    assert!(matches!(refusal(&mut h, list), ClientError::CohortMismatch(_)));
}

#[test]
fn the_labelling_is_the_nonces_and_not_the_seat_order() {
    // Two runs with the same seats, parameters and server choices, but fresh nonces:
    // the target's neighbourhood is what the revealed nonces label, computed by anyone
    // from the key list, and it changes with them.
    let enrollment = Enrollment::new();
    let p = sparse_params();
    let mut seen = Vec::new();
    for seed in [26, 27] {
        let h = Harness::certified(p.clone(), seed, ClientPolicy::default(), &enrollment);
        let mut cohort_hash = None;
        let (h, msg) = until(h, |m| {
            if let ServerMessage::Config(c) = m {
                cohort_hash.get_or_insert(c.cohort);
            }
            is_key_list(m)
        });
        drop(h);
        let list = key_list(msg);
        let labelling = cohort::labelling(&cohort_hash.unwrap(), list.cohort.iter().map(|s| &s.nonce));
        let graph = NeighbourGraph::new(p.num_clients, p.neighbours, &labelling.graph_seed);
        let listed: Vec<ClientId> = list.entries.iter().map(|e| e.id).filter(|&c| c != id(1)).collect();
        assert_eq!(listed, graph.neighbours(id(1)));
        seen.push(listed);
    }
    assert_ne!(seen[0], seen[1], "the same server choices gave the same neighbourhood under fresh nonces");
}

#[test]
fn a_server_withholding_honest_neighbours_cannot_isolate_the_client() {
    // A curious-server policy (t = c + 1 is then acceptable) on a sparse graph: the server
    // withholds most neighbours' entries, or their envelopes, leaving the client at the
    // threshold but below half of its neighbours. It refuses to mask.
    let policy = ClientPolicy { server: AdversaryClass::CuriousServer, ..ClientPolicy::default() };
    let p = params(30, 12, 3, 8, 32);
    let fresh = || Harness::with_clients(p.clone(), 28, |_| (policy.clone(), None), &[]);

    let (mut h, msg) = until(fresh(), is_key_list);
    let mut list = key_list(msg);
    let kept: Vec<ClientId> = list.entries.iter().map(|e| e.id).filter(|&c| c != id(1)).take(3).collect();
    list.entries.retain(|e| e.id == id(1) || kept.contains(&e.id));
    assert_eq!(refusal(&mut h, list), ClientError::NeighbourhoodShrunk { present: 3, degree: 12, required: 6 });

    let (mut h, msg) = until(fresh(), |m| matches!(m, ServerMessage::ForwardedShares(_)));
    let ServerMessage::ForwardedShares(mut envelopes) = msg else { unreachable!() };
    envelopes.truncate(4);
    let (client, rng) = &mut h.clients[0];
    let refused = client.receive(ServerMessage::ForwardedShares(envelopes), rng);
    assert_eq!(refused, Err(ClientError::NeighbourhoodShrunk { present: 4, degree: 12, required: 6 }));
    // No masked input went out.
    assert_eq!(client.state(), ClientState::Failed);
}

#[test]
fn the_server_refuses_an_advertisement_not_signed_by_the_senders_certificate() {
    // A client whose signature does not verify under the certificate of its connection
    // (one passing off keys as another's) is dropped; its nonce is in, so the round goes
    // on without it.
    let enrollment = Enrollment::new();
    let mut h = Harness::certified(params(10, 9, 6, 8, 32), 29, ClientPolicy::default(), &enrollment);
    h.run(|_, from, msg| match msg {
        ClientMessage::AdvertiseKeys(mut a) if from == id(4) => {
            a.signature.as_mut().unwrap()[0] ^= 1;
            Some(ClientMessage::AdvertiseKeys(a))
        }
        other => Some(other),
    });
    assert!(h.server_errors.iter().any(|(c, e)| *c == 4
        && matches!(e, privagg_protocol::ServerError::Violation { violation: Violation::BadSignature, .. })));
    assert_eq!(h.assert_exact().len(), 9);
}

/// Runs a certified round of 10 until client 1 is about to receive a message matching
/// `stop`.
fn certified_until(enrollment: &Enrollment, stop: impl FnMut(&ServerMessage) -> bool) -> (Harness, ServerMessage) {
    let h = Harness::certified(params(10, 9, 6, 8, 32), 31, ClientPolicy::default(), enrollment);
    until(h, stop)
}

/// Delivers `msg` to client 1, expecting a refusal that leaves it failed.
fn refuses(h: &mut Harness, msg: ServerMessage) -> ClientError {
    let (client, rng) = &mut h.clients[0];
    let err = client.receive(msg, rng).expect_err("the client should refuse");
    assert_eq!(client.state(), ClientState::Failed);
    err
}

#[test]
fn survivor_sets_a_client_cannot_vouch_for_are_not_signed() {
    let enrollment = Enrollment::new();
    let is_check = |m: &ServerMessage| matches!(m, ServerMessage::ConsistencyCheck(_));
    type Case = fn(&mut Vec<ClientId>);
    let cases: [(&str, Case); 4] = [
        ("without the client", |u| u.retain(|&c| c != id(1))),
        ("below the round's minimum", |u| u.truncate(5)),
        ("out of order", |u| u.swap(2, 3)),
        ("repeated", |u| u[3] = u[2]),
    ];
    for (case, tamper) in cases {
        let (mut h, honest) = certified_until(&enrollment, is_check);
        let ServerMessage::ConsistencyCheck(mut survivors) = honest else { unreachable!() };
        assert_eq!(survivors.len(), 10);
        tamper(&mut survivors);
        let err = refuses(&mut h, ServerMessage::ConsistencyCheck(survivors));
        assert!(matches!(err, ClientError::SurvivorSetRefused(_)), "{case}: {err}");
    }
}

#[test]
fn shares_are_revealed_only_with_t_holder_signatures_over_the_set_the_client_signed() {
    let enrollment = Enrollment::new();
    let is_request = |m: &ServerMessage| matches!(m, ServerMessage::UnmaskRequest(_));
    // Each case runs a fresh round (fresh certificates): the tampering applies to the
    // request the honest server made in it.
    let honest_request = || {
        let (h, honest) = certified_until(&enrollment, is_request);
        let ServerMessage::UnmaskRequest(request) = honest else { unreachable!() };
        assert_eq!(request.signatures.len(), 10, "every holder signed");
        (h, request)
    };
    type Case = (&'static str, fn(&mut UnmaskRequest), ClientError);
    let cases: [Case; 5] = [
        (
            "t − 1 signatures",
            |r| r.signatures.truncate(5),
            ClientError::TooFewSurvivorSignatures { signed: 5, threshold: 6 },
        ),
        ("a forged signature", |r| r.signatures[2].signature[0] ^= 1, ClientError::BadSurvivorSignature(id(3))),
        (
            "one signer's signature passed off as another's",
            |r| r.signatures[3].signature = r.signatures[2].signature,
            ClientError::BadSurvivorSignature(id(4)),
        ),
        (
            "a signature counted twice",
            |r| {
                let again = r.signatures[2];
                r.signatures.insert(2, again);
            },
            ClientError::DuplicatePeer(id(3)),
        ),
        (
            "a holder declared dropped after the client signed it survived",
            |r| {
                r.survivors.retain(|&c| c != id(4));
                r.dropped.push(id(4));
            },
            ClientError::InconsistentUnmaskRequest(
                "client 4's status contradicts the survivor set this client signed".into(),
            ),
        ),
    ];
    for (case, tamper, expected) in cases {
        let (mut h, mut request) = honest_request();
        tamper(&mut request);
        assert_eq!(refuses(&mut h, ServerMessage::UnmaskRequest(request)), expected, "{case}");
    }
    // The honest request is answered.
    let (mut h, honest) = honest_request();
    let (client, rng) = &mut h.clients[0];
    assert!(matches!(
        client.receive(ServerMessage::UnmaskRequest(honest), rng),
        Ok(Some(ClientMessage::UnmaskResponse(_)))
    ));
}

#[test]
fn the_server_drops_a_client_whose_survivor_signature_does_not_verify() {
    let enrollment = Enrollment::new();
    let mut h = Harness::certified(params(10, 9, 6, 8, 32), 33, ClientPolicy::default(), &enrollment);
    h.run(|_, from, msg| match msg {
        ClientMessage::SurvivorsSigned(Some(mut signature)) if from == id(4) => {
            signature[0] ^= 1;
            Some(ClientMessage::SurvivorsSigned(Some(signature)))
        }
        other => Some(other),
    });
    assert!(h.server_errors.iter().any(|(c, e)| *c == 4
        && matches!(e, privagg_protocol::ServerError::Violation { violation: Violation::BadSignature, .. })));
    // Its masked input is in the sum: its holders reveal b_4 as usual.
    assert_eq!(h.assert_exact().len(), 10);
}

/// The entry of `who` in `list`, to tamper with (a copy if it is shared).
fn entry_mut(list: &mut KeyList, who: ClientId) -> &mut PeerEntry {
    Arc::make_mut(list.entries.iter_mut().find(|e| e.id == who).expect("in the list"))
}

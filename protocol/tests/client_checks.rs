//! An honest client refuses whatever contradicts its own view, and never reveals both
//! shares of one peer, whatever the server asks.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use common::{Harness, id, params};
use privagg_protocol::cohort::RevealedSeat;
use privagg_protocol::{
    AbortCode, ClientError, ClientMessage, ClientPolicy, ClientRound, ClientState, Config, KeyList, ServerMessage,
    UnmaskRequest,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Runs the honest protocol until client 1 is about to receive a message matching
/// `stop`; returns the harness and that message (not yet delivered).
fn until(n: u32, k: u32, t: u32, stop: impl Fn(&ServerMessage) -> bool) -> (Harness, ServerMessage) {
    common::until(Harness::new(params(n, k, t, 8, 32), 11), stop)
}

fn give(h: &mut Harness, msg: ServerMessage) -> Result<Option<ClientMessage>, ClientError> {
    let (client, rng) = &mut h.clients[0];
    client.receive(msg, rng)
}

fn key_list(msg: ServerMessage) -> KeyList {
    match msg {
        ServerMessage::KeyList(k) => k,
        other => panic!("{other:?}"),
    }
}

fn unmask_request(msg: ServerMessage) -> UnmaskRequest {
    match msg {
        ServerMessage::UnmaskRequest(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn honest_request_is_answered_once() {
    let (mut h, msg) = until(5, 4, 3, |m| matches!(m, ServerMessage::UnmaskRequest(_)));
    let again = msg.clone();
    assert!(matches!(give(&mut h, msg), Ok(Some(ClientMessage::UnmaskResponse(_)))));
    // A second request, even an identical one, finds nothing to reveal.
    assert!(matches!(give(&mut h, again), Err(ClientError::UnexpectedMessage { .. })));
    assert_eq!(h.clients[0].0.state(), ClientState::Failed);
}

#[test]
fn never_both_shares_of_one_peer() {
    // A server asks for the self-mask share and the mask-key share of client 2 at once.
    let (mut h, msg) = until(5, 4, 3, |m| matches!(m, ServerMessage::UnmaskRequest(_)));
    let mut r = unmask_request(msg);
    r.dropped.push(id(2));
    assert_eq!(give(&mut h, ServerMessage::UnmaskRequest(r)), Err(ClientError::BothSharesRequested(id(2))));

    // A server that first asks for b-shares, then claims client 2 dropped and asks for its
    // s-share: the second request is refused.
    let (mut h, msg) = until(5, 4, 3, |m| matches!(m, ServerMessage::UnmaskRequest(_)));
    let first = unmask_request(msg);
    assert!(first.survivors.contains(&id(2)));
    assert!(give(&mut h, ServerMessage::UnmaskRequest(first.clone())).unwrap().is_some());
    let second = UnmaskRequest {
        survivors: first.survivors.iter().copied().filter(|&c| c != id(2)).collect(),
        dropped: vec![id(2)],
        signatures: vec![],
    };
    assert!(matches!(give(&mut h, ServerMessage::UnmaskRequest(second)), Err(ClientError::UnexpectedMessage { .. })));
}

#[test]
fn unmask_requests_contradicting_the_clients_view_are_refused() {
    type Case = (fn(&mut UnmaskRequest), fn(&ClientError) -> bool);
    let cases: Vec<Case> = vec![
        // Itself listed as dropped.
        (
            |r| {
                r.survivors.retain(|&c| c != id(1));
                r.dropped.push(id(1));
            },
            |e| matches!(e, ClientError::InconsistentUnmaskRequest(_)),
        ),
        // A survivor it never received an envelope from (no such client).
        (|r| r.survivors.push(id(9)), |e| matches!(e, ClientError::InconsistentUnmaskRequest(_))),
        // A holder left out of both lists.
        (|r| r.survivors.retain(|&c| c != id(3)), |e| matches!(e, ClientError::InconsistentUnmaskRequest(_))),
        // The same survivor twice.
        (|r| r.survivors.push(id(2)), |e| *e == ClientError::DuplicatePeer(id(2))),
        // Fewer survivors than the threshold: three declared dropped, two left.
        (
            |r| {
                let moved: Vec<_> = r.survivors.iter().copied().filter(|&c| c != id(1)).take(3).collect();
                r.survivors.retain(|c| !moved.contains(c));
                r.dropped.extend(moved);
            },
            |e| matches!(e, ClientError::InconsistentUnmaskRequest(_)),
        ),
    ];
    for (i, (mutate, expected)) in cases.into_iter().enumerate() {
        let (mut h, msg) = until(5, 4, 3, |m| matches!(m, ServerMessage::UnmaskRequest(_)));
        let mut r = unmask_request(msg);
        mutate(&mut r);
        let err = give(&mut h, ServerMessage::UnmaskRequest(r)).unwrap_err();
        assert!(expected(&err), "case {i}: {err}");
    }
}

#[test]
fn key_lists_contradicting_the_clients_view_are_refused() {
    // Sparse graph: 10 clients with 4 neighbours each, so some ids are not neighbours.
    let is_key_list = |m: &ServerMessage| matches!(m, ServerMessage::KeyList(_));
    let (_, msg) = until(10, 4, 3, is_key_list);
    let honest = key_list(msg);
    let own = honest.entries.iter().position(|e| e.id == id(1)).unwrap();
    let other = honest.entries.iter().position(|e| e.id != id(1)).unwrap();
    let refused = |tamper: &dyn Fn(&mut KeyList)| {
        let (mut h, _) = until(10, 4, 3, is_key_list);
        let mut k = honest.clone();
        tamper(&mut k);
        give(&mut h, ServerMessage::KeyList(k)).unwrap_err()
    };

    assert_eq!(refused(&|k| drop(k.entries.remove(own))), ClientError::OwnKeysMissing);
    let others_keys = refused(&|k| std::sync::Arc::make_mut(&mut k.entries[own]).keys = k.entries[other].keys);
    assert!(matches!(others_keys, ClientError::OwnKeysMissing | ClientError::ReusedKey(_)), "{others_keys}");
    let stranger = (2..=10).map(id).find(|c| !honest.entries.iter().any(|e| e.id == *c)).unwrap();
    let with_stranger = refused(&|k| {
        let mut entry = k.entries[other].clone();
        std::sync::Arc::make_mut(&mut entry).id = stranger;
        k.entries.push(entry);
        k.entries.sort_by_key(|e| e.id);
    });
    assert!(matches!(with_stranger, ClientError::UnexpectedPeer(_) | ClientError::ReusedKey(_)), "{with_stranger}");
    let duplicate = refused(&|k| {
        let entry = k.entries[other].clone();
        k.entries.insert(other, entry);
    });
    assert!(matches!(duplicate, ClientError::DuplicatePeer(_)), "{duplicate}");
    let keep = honest.entries[other].id;
    assert_eq!(
        refused(&|k| k.entries.retain(|e| e.id == id(1) || e.id == keep)),
        ClientError::TooFewNeighbours { alive: 2, threshold: 3 }
    );
}

#[test]
fn a_cohort_other_than_the_one_committed_to_is_refused() {
    // The cohort hash in the config fixes every seat's commitment before any nonce is
    // revealed; a server that changes the cohort afterwards (to relabel the graph) is caught.
    let is_key_list = |m: &ServerMessage| matches!(m, ServerMessage::KeyList(_));
    let (_, msg) = until(10, 4, 3, is_key_list);
    let honest = key_list(msg);
    let tampers: [fn(&mut Vec<RevealedSeat>); 5] = [
        |c| c[4].nonce[0] ^= 1,
        |c| c[0].nonce[0] ^= 1,
        |c| c.swap(2, 3),
        |c| {
            c.pop();
        },
        |c| c[5].fingerprint = [7; 32],
    ];
    for (i, tamper) in tampers.iter().enumerate() {
        let (mut h, _) = until(10, 4, 3, is_key_list);
        let mut cohort = honest.cohort.to_vec();
        tamper(&mut cohort);
        let k = KeyList { cohort: cohort.into(), entries: honest.entries.clone() };
        let err = give(&mut h, ServerMessage::KeyList(k)).unwrap_err();
        assert!(matches!(err, ClientError::CohortMismatch(_)), "case {i}: {err}");
    }
}

#[test]
fn tampered_or_misaddressed_envelopes_are_refused() {
    let is_shares = |m: &ServerMessage| matches!(m, ServerMessage::ForwardedShares(_));
    let (mut h, msg) = until(5, 4, 3, is_shares);
    let ServerMessage::ForwardedShares(honest) = msg else { unreachable!() };

    // A bad envelope is complained about (with the channel value and its proof), not a
    // reason to quit: the client goes on without that neighbour.
    let complained_about = |reply: Result<Option<ClientMessage>, ClientError>| match reply {
        Ok(Some(ClientMessage::Complaints(c))) => c.iter().map(|c| c.sender).collect::<Vec<_>>(),
        other => panic!("expected complaints, got {other:?}"),
    };
    let mut e = honest.clone();
    e[0].envelope.sealed[40] ^= 1;
    let sender = e[0].envelope.peer;
    assert_eq!(complained_about(give(&mut h, ServerMessage::ForwardedShares(e))), vec![sender]);

    // An envelope relabelled as coming from another neighbour does not open: the
    // associated data binds the sender.
    let (mut h, _) = until(5, 4, 3, is_shares);
    let mut e = honest.clone();
    e.swap(0, 1);
    let (a, b) = (e[0].envelope.peer, e[1].envelope.peer);
    e[0].envelope.peer = b;
    e[1].envelope.peer = a;
    assert_eq!(complained_about(give(&mut h, ServerMessage::ForwardedShares(e))), vec![a.min(b), a.max(b)]);

    let (mut h, _) = until(5, 4, 3, is_shares);
    let mut e = honest.clone();
    e.push(e[0].clone());
    assert!(matches!(give(&mut h, ServerMessage::ForwardedShares(e)), Err(ClientError::DuplicatePeer(_))));

    let (mut h, _) = until(5, 4, 3, is_shares);
    let mut e = honest.clone();
    e[0].envelope.peer = id(1);
    assert_eq!(give(&mut h, ServerMessage::ForwardedShares(e)), Err(ClientError::UnexpectedPeer(id(1))));

    let (mut h, _) = until(5, 4, 3, is_shares);
    let e = honest[..1].to_vec();
    assert_eq!(
        give(&mut h, ServerMessage::ForwardedShares(e)),
        Err(ClientError::TooFewNeighbours { alive: 2, threshold: 3 })
    );
}

#[test]
fn configs_are_checked_against_the_protocol_and_the_policy() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let config = |p| {
        ServerMessage::Config(Config {
            params: p,
            client_id: id(1),
            cohort: [0; 32],
            client_data: Vec::new(),
            app_data: Arc::from(&b""[..]),
        })
    };
    let mut c = ClientRound::new(ClientPolicy::default(), None, &mut rng);
    assert!(matches!(c.receive(config(params(5, 3, 3, 8, 32)), &mut rng), Err(ClientError::InvalidParams(_))));

    let mut c = ClientRound::new(ClientPolicy { min_threshold: 4, ..ClientPolicy::default() }, None, &mut rng);
    assert!(matches!(
        c.receive(config(params(5, 4, 3, 8, 32)), &mut rng),
        Err(ClientError::UnsafeThreshold { threshold: 3, required: 4, .. })
    ));

    let mut c = ClientRound::new(ClientPolicy { max_dim: 4, ..ClientPolicy::default() }, None, &mut rng);
    assert!(matches!(c.receive(config(params(5, 4, 3, 8, 32)), &mut rng), Err(ClientError::PolicyRefused(_))));

    // Assuming a lying server, a client without a certificate takes part in nothing.
    let mut c = ClientRound::new(ClientPolicy::default(), None, &mut rng);
    assert_eq!(c.receive(config(params(5, 4, 3, 8, 32)), &mut rng), Err(ClientError::IdentityRequired));

    let mut c = ClientRound::new(common::any_threshold(), None, &mut rng);
    let msg = ServerMessage::Config(Config {
        params: params(5, 4, 3, 8, 32),
        client_id: id(6),
        cohort: [0; 32],
        client_data: Vec::new(),
        app_data: Arc::from(&b""[..]),
    });
    assert_eq!(c.receive(msg, &mut rng), Err(ClientError::InvalidClientId(6)));

    // An input set early is checked when the config tells the dimension.
    let mut c = ClientRound::new(common::any_threshold(), None, &mut rng);
    c.set_input(vec![0; 7]).unwrap();
    assert_eq!(
        c.receive(config(params(5, 4, 3, 8, 32)), &mut rng),
        Err(ClientError::WrongInputLength { expected: 8, got: 7 })
    );
}

#[test]
fn inputs_are_checked() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut c = ClientRound::new(common::any_threshold(), None, &mut rng);
    let config = ServerMessage::Config(Config {
        params: params(5, 4, 3, 4, 8),
        client_id: id(2),
        cohort: [0; 32],
        client_data: Vec::new(),
        app_data: Arc::from(&b"m"[..]),
    });
    assert!(matches!(c.receive(config, &mut rng), Ok(Some(ClientMessage::AdvertiseKeys(_)))));
    assert_eq!(c.app_data().map(|a| a.to_vec()), Some(b"m".to_vec()));
    assert_eq!(c.set_input(vec![0; 5]), Err(ClientError::WrongInputLength { expected: 4, got: 5 }));
    assert_eq!(c.set_input(vec![0, 1, 256, 0]), Err(ClientError::InputOutOfRange { index: 2, bits: 8 }));
    assert_eq!(c.set_input(vec![0, 1, 255, 0]), Ok(None));
    assert_eq!(c.set_input(vec![0; 4]), Err(ClientError::InputAlreadySet));
}

#[test]
fn out_of_phase_messages_and_aborts_end_the_clients_round() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut c = ClientRound::new(ClientPolicy::default(), None, &mut rng);
    let msg = ServerMessage::UnmaskRequest(UnmaskRequest { survivors: vec![], dropped: vec![], signatures: vec![] });
    assert_eq!(
        c.receive(msg, &mut rng),
        Err(ClientError::UnexpectedMessage { state: "awaiting the config", message: "UnmaskRequest" })
    );
    assert_eq!(c.state(), ClientState::Failed);

    let mut c = ClientRound::new(ClientPolicy::default(), None, &mut rng);
    let abort = ServerMessage::Abort(privagg_protocol::Abort::new(AbortCode::TooFewClients, "bye"));
    assert_eq!(
        c.receive(abort, &mut rng),
        Err(ClientError::Aborted { code: AbortCode::TooFewClients, detail: "bye".into() })
    );
}

#[test]
fn input_can_arrive_after_the_envelopes() {
    // Key exchange overlaps training: the client parks until its input is set.
    let mut h = Harness::with_clients(params(4, 3, 2, 8, 32), 12, |_| (common::any_threshold(), None), &[id(1)]);
    let input = h.inputs[0].clone();
    let mut parked = false;
    h.run(|h, _, msg| {
        if !parked && matches!(msg, ClientMessage::MaskedInput(_)) {
            parked = true;
            assert_eq!(h.clients[0].0.state(), ClientState::AwaitingInput);
            let reply = h.clients[0].0.set_input(input.clone()).unwrap().unwrap();
            h.send(1, reply).unwrap();
        }
        Some(msg)
    });
    assert_eq!(h.assert_exact().len(), 4);
}

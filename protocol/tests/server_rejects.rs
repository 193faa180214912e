//! The server refuses every bad message with a typed error, drops the sender alone, and
//! the others still get an exact sum.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Harness, id, params};
use privagg_crypto::{PublicKey, SecretKey};
use privagg_protocol::{
    AbortCode, Advertisement, ClientError, ClientMessage, DropReason, PackedVector, Phase, RevealedShare, RoundAbort,
    ServerError, ServerMessage, UnmaskResponse, Violation,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn violation(h: &Harness, from: u32) -> Violation {
    h.server_errors
        .iter()
        .find_map(|(c, e)| match e {
            ServerError::Violation { client, violation } if *c == from && client.get() == from => {
                Some(violation.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no violation from {from}: {:?}", h.server_errors))
}

fn dropped_reason(h: &Harness, client: u32) -> DropReason {
    h.server.dropped().into_iter().find(|d| d.client == id(client)).unwrap().reason
}

#[test]
fn unknown_clients_are_refused_and_change_nothing() {
    let mut h = Harness::new(params(5, 4, 3, 16, 32), 1);
    let replies = h.deliver();
    let keys = replies[0].1.clone();
    assert_eq!(h.send(6, keys), Err(ServerError::UnknownClient(6)));
    for (from, msg) in replies {
        h.send(from.get(), msg).unwrap();
    }
    h.run(|_, _, m| Some(m));
    assert_eq!(h.assert_exact().len(), 5);
    assert!(h.server.dropped().is_empty());
}

#[test]
fn out_of_phase_message_drops_only_the_sender() {
    let mut h = Harness::new(params(5, 4, 3, 16, 32), 2);
    h.run(|_, from, msg| {
        if from == id(2) && matches!(msg, ClientMessage::ShareKeys(_)) {
            return Some(ClientMessage::MaskedInput(PackedVector::pack(&[0; 16], 32)));
        }
        Some(msg)
    });
    assert!(matches!(
        violation(&h, 2),
        Violation::UnexpectedMessage { phase: Phase::ShareKeys, message: "MaskedInput" }
    ));
    assert!(matches!(dropped_reason(&h, 2), DropReason::Violation(_)));
    assert_eq!(h.assert_exact().len(), 4);

    // Before it revealed its nonce, the graph cannot be labelled without it: the attempt
    // aborts (the next starts without it).
    let mut h = Harness::new(params(5, 4, 3, 16, 32), 2);
    h.run(|_, from, msg| {
        if from == id(2) && matches!(msg, ClientMessage::AdvertiseKeys(_)) {
            return Some(ClientMessage::MaskedInput(PackedVector::pack(&[0; 16], 32)));
        }
        Some(msg)
    });
    assert!(matches!(violation(&h, 2), Violation::UnexpectedMessage { phase: Phase::AdvertiseKeys, .. }));
    assert_eq!(h.server.abort_reason(), Some(&RoundAbort::CohortIncomplete { missing: 1 }));
}

#[test]
fn duplicate_message_drops_the_sender_but_keeps_its_input_in_the_sum() {
    let mut h = Harness::new(params(5, 4, 3, 16, 32), 3);
    let mut sent = None;
    h.run(|h, from, msg| {
        if from == id(4) && matches!(msg, ClientMessage::MaskedInput(_)) {
            sent = Some(msg.clone());
            h.send(4, msg.clone()).unwrap();
            return Some(msg); // the same masked input, again
        }
        Some(msg)
    });
    assert_eq!(violation(&h, 4), Violation::DuplicateMessage("MaskedInput"));
    // Its first masked input is in the sum and cannot be taken out: its neighbours'
    // shares rebuild its self mask, and the sum stays exact.
    let included = h.assert_exact();
    assert!(included.contains(&id(4)));
    assert!(h.server.dropped().iter().any(|d| d.client == id(4) && d.in_sum));
    // Anything more from it is refused as coming from a dropped client.
    assert_eq!(h.send(4, sent.unwrap()), Err(ServerError::AlreadyDropped(id(4))));
}

#[test]
fn reused_unproven_public_keys_and_foreign_nonces_are_refused() {
    // Client 3 advertises client 1's keys under its own nonce (their proofs of possession
    // are bound to seat 1), then keys related to client 1's, C_1 + a·G and S_1 + a·G (the
    // colluder's rogue keys of the review), which it cannot prove: refused, but its nonce
    // is in, so the round goes on without it.
    let a = SecretKey::generate(&mut ChaCha20Rng::seed_from_u64(9));
    let related = |k: &PublicKey| PublicKey::from_bytes(&(k.point() + a.public_key().point()).compress().to_bytes());
    for rogue in [false, true] {
        let mut h = Harness::new(params(5, 4, 3, 16, 32), 4);
        let mut first = None;
        h.run(|_, from, msg| {
            if let ClientMessage::AdvertiseKeys(a) = &msg {
                if from == id(1) {
                    first = Some(a.keys);
                } else if from == id(3) {
                    let mut keys = first.unwrap();
                    if rogue {
                        (keys.channel, keys.mask) = (related(&keys.channel).unwrap(), related(&keys.mask).unwrap());
                    }
                    let copied = Advertisement { keys, ..**a };
                    return Some(ClientMessage::AdvertiseKeys(Box::new(copied)));
                }
            }
            Some(msg)
        });
        assert_eq!(violation(&h, 3), Violation::UnprovenKeys, "rogue: {rogue}");
        assert_eq!(h.assert_exact().len(), 4);
    }

    // Client 3 replays client 1's whole advertisement: the nonce does not open client 3's
    // commitment, so its seat stays unrevealed and the attempt aborts.
    let mut h = Harness::new(params(5, 4, 3, 16, 32), 4);
    let mut first = None;
    h.run(|_, from, msg| {
        if let ClientMessage::AdvertiseKeys(a) = &msg {
            if from == id(1) {
                first = Some(a.clone());
            } else if from == id(3) {
                return Some(ClientMessage::AdvertiseKeys(first.clone().unwrap()));
            }
        }
        Some(msg)
    });
    assert_eq!(violation(&h, 3), Violation::WrongNonce);
    assert_eq!(h.server.abort_reason(), Some(&RoundAbort::CohortIncomplete { missing: 1 }));
}

#[test]
fn envelopes_must_go_to_exactly_the_neighbours() {
    // Client 1 leaves one envelope out; client 2 adds one for a client that does not exist
    // as its neighbour; client 3 sends one twice.
    let mut h = Harness::new(params(8, 7, 3, 16, 32), 5);
    h.run(|_, from, msg| match (from.get(), msg) {
        (1, ClientMessage::ShareKeys(mut e)) => {
            e.envelopes.pop();
            Some(ClientMessage::ShareKeys(e))
        }
        (2, ClientMessage::ShareKeys(mut e)) => {
            e.envelopes[0].peer = id(2);
            Some(ClientMessage::ShareKeys(e))
        }
        (3, ClientMessage::ShareKeys(mut e)) => {
            let copy = e.envelopes[0].clone();
            e.envelopes.push(copy);
            Some(ClientMessage::ShareKeys(e))
        }
        (_, m) => Some(m),
    });
    for c in 1..=3 {
        assert!(matches!(violation(&h, c), Violation::WrongEnvelopes(_)), "client {c}");
    }
    assert_eq!(h.assert_exact().len(), 5);
}

#[test]
fn wrongly_sized_masked_input_is_refused_and_its_masks_removed() {
    let mut h = Harness::new(params(6, 5, 3, 16, 32), 6);
    h.run(|_, from, msg| match (from.get(), msg) {
        (2, ClientMessage::MaskedInput(_)) => Some(ClientMessage::MaskedInput(PackedVector::pack(&[1; 15], 32))),
        (5, ClientMessage::MaskedInput(v)) => Some(ClientMessage::MaskedInput(PackedVector::pack(&v.unpack(), 16))),
        (_, m) => Some(m),
    });
    assert_eq!(
        violation(&h, 2),
        Violation::WrongVectorShape { dim: 15, bits: 32, expected_dim: 16, expected_bits: 32 }
    );
    assert!(matches!(violation(&h, 5), Violation::WrongVectorShape { bits: 16, .. }));
    // 2 and 5 shared keys, so the others masked against them; their mask keys are
    // rebuilt and the sum of the other four is exact.
    assert_eq!(h.assert_exact(), vec![id(1), id(3), id(4), id(6)]);
}

#[test]
fn unmask_responses_must_answer_exactly_the_request() {
    let mut h = Harness::new(params(6, 5, 3, 16, 32), 7);
    h.run(|_, from, msg| match (from.get(), msg) {
        // Leaves out a share.
        (1, ClientMessage::UnmaskResponse(mut r)) => {
            r.self_mask_shares.pop();
            Some(ClientMessage::UnmaskResponse(r))
        }
        // Sends a self-mask share as a mask-key share.
        (2, ClientMessage::UnmaskResponse(mut r)) => {
            let s = r.self_mask_shares.pop().unwrap();
            r.mask_key_shares.push(s);
            Some(ClientMessage::UnmaskResponse(r))
        }
        // Repeats an owner.
        (3, ClientMessage::UnmaskResponse(mut r)) => {
            let s: RevealedShare = r.self_mask_shares[0];
            r.self_mask_shares.push(s);
            Some(ClientMessage::UnmaskResponse(r))
        }
        (4, ClientMessage::UnmaskResponse(_)) => {
            Some(ClientMessage::UnmaskResponse(UnmaskResponse { self_mask_shares: vec![], mask_key_shares: vec![] }))
        }
        (_, m) => Some(m),
    });
    for c in 1..=4 {
        assert!(matches!(violation(&h, c), Violation::WrongShares(_)), "client {c}");
    }
    // Only two honest holders answered, below t = 3: the round aborts, revealing nothing.
    assert!(h.server.output().is_none());
    assert_eq!(h.server.phase(), Phase::Aborted);
}

#[test]
fn a_leaving_client_is_dropped_at_once() {
    let mut h = Harness::new(params(5, 4, 3, 16, 32), 8);
    for (from, msg) in h.deliver() {
        h.send(from.get(), msg).unwrap();
    }
    let replies = h.deliver();
    let bye = h.clients[2].0.leave("wrong dimension");
    h.send(3, bye).unwrap();
    assert_eq!(dropped_reason(&h, 3), DropReason::Left("wrong dimension".into()));
    for (from, msg) in replies.into_iter().filter(|(c, _)| *c != id(3)) {
        h.send(from.get(), msg).unwrap();
    }
    // Nobody waited for a deadline: the phase moved on with the four that answered.
    assert_eq!(h.server.phase(), Phase::MaskedInput);
    h.run(|_, _, m| Some(m));
    assert_eq!(h.assert_exact().len(), 4);

    // Leaving before advertising reveals the nonce too: the round goes on without it.
    let mut h = Harness::new(params(5, 4, 3, 16, 32), 8);
    let replies = h.deliver();
    let bye = h.clients[2].0.leave("policy");
    h.send(3, bye).unwrap();
    for (from, msg) in replies.into_iter().filter(|(c, _)| *c != id(3)) {
        h.send(from.get(), msg).unwrap();
    }
    assert_eq!(h.server.phase(), Phase::ShareKeys);
    h.run(|_, _, m| Some(m));
    assert_eq!(h.assert_exact().len(), 4);
}

#[test]
fn messages_after_the_round_are_refused() {
    let mut h = Harness::new(params(3, 2, 2, 4, 32), 9);
    h.run(|_, _, m| Some(m));
    h.assert_exact();
    let late = ClientMessage::MaskedInput(PackedVector::pack(&[0; 4], 32));
    assert_eq!(h.send(1, late), Err(ServerError::RoundOver));
}

#[test]
fn too_many_violations_abort_the_round_with_a_reason() {
    let mut h = Harness::new(params(4, 3, 3, 4, 32), 10);
    h.run(|_, from, msg| {
        if from.get() <= 2 && matches!(msg, ClientMessage::ShareKeys(_)) {
            return Some(ClientMessage::MaskedInput(PackedVector::pack(&[0; 4], 32)));
        }
        Some(msg)
    });
    assert_eq!(h.server.phase(), Phase::Aborted);
    assert!(h.server.abort_reason().unwrap().to_string().contains("below the minimum of 3"));
    // The two violators were told they were dropped, the two honest clients that the
    // round aborted.
    let codes: Vec<(u32, AbortCode)> = h
        .client_errors
        .iter()
        .filter_map(|(c, e)| match e {
            ClientError::Aborted { code, .. } => Some((c.get(), *code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            (1, AbortCode::Dropped),
            (2, AbortCode::Dropped),
            (3, AbortCode::TooFewClients),
            (4, AbortCode::TooFewClients)
        ]
    );
}

#[test]
fn a_dropped_client_is_told_unless_its_connection_is_gone() {
    let mut h = Harness::new(params(6, 5, 4, 16, 32), 1);
    for (from, msg) in h.deliver() {
        h.send(from.get(), msg).unwrap();
    }
    let replies = h.deliver();
    for (from, msg) in &replies {
        if from.get() <= 3 {
            h.send(from.get(), msg.clone()).unwrap();
        }
    }
    // Client 1 breaks the protocol, client 4's connection is gone, client 5 stays silent.
    let again = replies[0].1.clone();
    assert!(h.send(1, again).is_err());
    h.server.drop_client(id(4), DropReason::ConnectionLost);
    h.server.close_phase();
    let told: Vec<(u32, AbortCode)> = h
        .server
        .drain_outgoing()
        .into_iter()
        .filter_map(|o| match o.message {
            ServerMessage::Abort(a) => Some((o.to.get(), a.code)),
            _ => None,
        })
        .collect();
    // Dropping four of six leaves fewer than the minimum of five: the round aborts, and
    // the two clients left are told that.
    assert_eq!(
        told,
        vec![
            (1, AbortCode::Dropped),
            (5, AbortCode::Dropped),
            (6, AbortCode::Dropped),
            (2, AbortCode::TooFewClients),
            (3, AbortCode::TooFewClients)
        ]
    );
}

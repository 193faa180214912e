//! Malicious clients and a relaying server that lies about commitments, played against
//! the real state machines (issue 12, part 1): every share is checked against its owner's
//! Feldman commitments, so a wrong share is named and its sender dropped, the round still
//! completes with the exact sum when t valid shares remain, and with exactly t shares a
//! wrong one aborts the round (naming the liar) instead of corrupting the sum.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use common::{Harness, id, params, until};
use curve25519_dalek::Scalar;
use privagg_crypto::vss::Commitment;
use privagg_protocol::{
    AbortCode, ClientError, ClientMessage, DropReason, Phase, RoundAbort, ServerMessage, ShareCommitments, Violation,
};

/// The reason the server dropped `client`, if it did.
fn drop_reason(h: &Harness, client: u32) -> Option<DropReason> {
    h.server.dropped().into_iter().find(|d| d.client == id(client)).map(|d| d.reason)
}

/// Client `liar` adds one to its share of `owner`'s secret (self mask or mask key) in its
/// unmask response.
fn lie_about(
    liar: u32,
    owner: u32,
) -> impl FnMut(&mut Harness, privagg_protocol::ClientId, ClientMessage) -> Option<ClientMessage> {
    move |_, from, msg| match msg {
        ClientMessage::UnmaskResponse(mut r) if from == id(liar) => {
            for s in r.self_mask_shares.iter_mut().chain(r.mask_key_shares.iter_mut()) {
                if s.owner == id(owner) {
                    s.value += Scalar::ONE;
                }
            }
            Some(ClientMessage::UnmaskResponse(r))
        }
        m => Some(m),
    }
}

#[test]
fn a_wrong_self_mask_share_is_blamed_and_the_round_completes_with_the_exact_sum() {
    // Complete graph of 5, t = 3: client 4 lies about its share of b_1; five shares of b_1
    // arrive, four valid.
    let mut h = Harness::new(params(5, 4, 3, 64, 32), 11);
    h.run(lie_about(4, 1));
    let included = h.assert_exact();
    // The liar's own input was already in the sum; it stays (its own contribution), and
    // its self mask is rebuilt from the others' shares.
    assert_eq!(included.len(), 5);
    assert_eq!(drop_reason(&h, 4), Some(DropReason::Violation(Violation::InvalidShare { owner: id(1) })));
    let dropped = h.server.dropped();
    assert_eq!(dropped.len(), 1, "only the liar is dropped: {dropped:?}");
    assert_eq!(dropped[0].phase, Phase::Reconstruct);
    assert!(dropped[0].in_sum);
    // The liar is told; the honest clients complete.
    assert!(
        h.client_errors
            .iter()
            .any(|(c, e)| *c == id(4) && matches!(e, ClientError::Aborted { code: AbortCode::Dropped, .. }))
    );
    for c in [1, 2, 3, 5] {
        assert_eq!(h.clients[c - 1].0.state(), privagg_protocol::ClientState::Completed, "client {c}");
    }
}

#[test]
fn a_client_that_lies_about_every_share_is_blamed_once_and_the_sum_is_exact() {
    // SecAgg+ graph: n = 8, k = 6, t = 4. Client 3 corrupts every share it reveals.
    let mut h = Harness::new(params(8, 6, 4, 32, 24), 12);
    h.run(move |_, from, msg| match msg {
        ClientMessage::UnmaskResponse(mut r) if from == id(3) => {
            for s in r.self_mask_shares.iter_mut() {
                s.value = -s.value;
            }
            Some(ClientMessage::UnmaskResponse(r))
        }
        m => Some(m),
    });
    h.assert_exact();
    assert!(matches!(drop_reason(&h, 3), Some(DropReason::Violation(Violation::InvalidShare { .. }))));
    assert_eq!(h.server.dropped().len(), 1);
}

#[test]
fn a_wrong_mask_key_share_of_a_dropped_client_is_blamed() {
    // Client 2 drops after ShareKeys (its mask key must be rebuilt); client 5 lies about
    // its share of s_2. Four holders answer, three valid: t = 3 still met.
    let mut h = Harness::new(params(5, 4, 3, 48, 32), 13);
    h.run(move |h, from, msg| match msg {
        ClientMessage::MaskedInput(_) if from == id(2) => {
            h.server.drop_client(id(2), DropReason::ConnectionLost);
            None
        }
        m => lie_about(5, 2)(h, from, m),
    });
    let included = h.assert_exact();
    assert!(!included.contains(&id(2)));
    assert_eq!(drop_reason(&h, 5), Some(DropReason::Violation(Violation::InvalidShare { owner: id(2) })));
}

#[test]
fn with_exactly_t_shares_a_wrong_one_is_detected_never_a_corrupted_sum() {
    // The audit's H3: n = 3, t = 2. Client 2 misses the unmask deadline (an ordinary
    // dropout), client 3 lies about its share of b_1: exactly t = 2 shares of b_1, one
    // wrong. Without commitments this released a corrupted sum; now the round aborts and
    // names client 3.
    let mut h = Harness::new(params(3, 2, 2, 32, 32), 14);
    h.run(move |h, from, msg| match msg {
        ClientMessage::UnmaskResponse(_) if from == id(2) => None,
        m => lie_about(3, 1)(h, from, m),
    });
    assert!(h.server.output().is_none(), "no sum may be released");
    assert_eq!(h.server.phase(), Phase::Aborted);
    assert_eq!(
        h.server.abort_reason(),
        Some(&RoundAbort::InvalidShares { owner: id(1), valid: 1, threshold: 2, liars: vec![id(3)] })
    );
    assert_eq!(drop_reason(&h, 3), Some(DropReason::Violation(Violation::InvalidShare { owner: id(1) })));
    assert_eq!(drop_reason(&h, 2), Some(DropReason::MissedDeadline));
    // The honest client learns the round failed for want of valid shares.
    assert!(
        h.client_errors.iter().any(
            |(c, e)| *c == id(1) && matches!(e, ClientError::Aborted { code: AbortCode::ReconstructionFailed, .. })
        )
    );
}

/// A commitment with the same constant term (so it still commits to the advertised mask
/// key) but another point after it.
fn altered(c: &Commitment) -> Commitment {
    let mut encodings = c.encodings().to_vec();
    let other = curve25519_dalek::RistrettoPoint::mul_base(&Scalar::from(7u8)).compress().to_bytes();
    encodings[1] = other;
    Commitment::from_encodings(encodings).unwrap()
}

/// The senders a reply complains about (panics on any other reply).
fn complained_about(reply: Result<Option<ClientMessage>, ClientError>) -> Vec<privagg_protocol::ClientId> {
    match reply {
        Ok(Some(ClientMessage::Complaints(c))) => c.iter().map(|c| c.sender).collect(),
        other => panic!("expected complaints, got {other:?}"),
    }
}

/// Relayed commitments that are not those the sender sealed into its envelope make the
/// recipient complain (a server that swaps them is caught when it judges the complaint;
/// the recipient goes on without that sender either way).
#[test]
fn a_server_that_relays_other_commitments_is_detected_by_the_client() {
    let is_shares = |m: &ServerMessage| matches!(m, ServerMessage::ForwardedShares(_));
    let (h, msg) = until(Harness::new(params(5, 4, 3, 16, 32), 15), is_shares);
    let ServerMessage::ForwardedShares(honest) = msg else { unreachable!() };
    let give = |mut h: Harness, msg: ServerMessage| {
        let (client, rng) = &mut h.clients[0];
        client.receive(msg, rng)
    };
    assert!(
        give(
            until(Harness::new(params(5, 4, 3, 16, 32), 15), is_shares).0,
            ServerMessage::ForwardedShares(honest.clone())
        )
        .is_ok()
    );

    // The self-mask commitment of one sender swapped for a different one (the server
    // could then accept wrong shares of b_u from colluders): the digest sealed in the
    // envelope does not match.
    let mut forwarded = honest.clone();
    let sender = forwarded[0].envelope.peer;
    let c = forwarded[0].commitments.as_ref().clone();
    forwarded[0].commitments = Arc::new(ShareCommitments { self_mask: altered(&c.self_mask), ..c.clone() });
    assert_eq!(complained_about(give(h, ServerMessage::ForwardedShares(forwarded))), vec![sender]);

    // The mask key's higher coefficients changed, its constant term kept.
    let (h, _) = until(Harness::new(params(5, 4, 3, 16, 32), 15), is_shares);
    let mut forwarded = honest.clone();
    forwarded[1].commitments = Arc::new(ShareCommitments { mask_key: altered(&c.mask_key), ..c.clone() });
    let sender = forwarded[1].envelope.peer;
    assert_eq!(complained_about(give(h, ServerMessage::ForwardedShares(forwarded))), vec![sender]);

    // Another sender's commitments, wholesale.
    let (h, _) = until(Harness::new(params(5, 4, 3, 16, 32), 15), is_shares);
    let mut forwarded = honest.clone();
    forwarded[2].commitments = forwarded[3].commitments.clone();
    let sender = forwarded[2].envelope.peer;
    assert_eq!(complained_about(give(h, ServerMessage::ForwardedShares(forwarded))), vec![sender]);
}

#[test]
fn the_server_refuses_commitments_that_do_not_commit_to_the_advertised_key_or_have_the_wrong_degree() {
    let mut h = Harness::new(params(6, 5, 3, 16, 32), 16);
    h.run(|_, from, msg| match msg {
        ClientMessage::ShareKeys(mut s) if from == id(1) => {
            // Another client's commitments: the constant term is not client 1's mask key.
            let mut c = s.commitments.as_ref().clone();
            c.mask_key = altered(&c.mask_key);
            let swapped = c.self_mask.clone();
            c.mask_key = swapped;
            s.commitments = Arc::new(c);
            Some(ClientMessage::ShareKeys(s))
        }
        ClientMessage::ShareKeys(mut s) if from == id(2) => {
            let mut c = s.commitments.as_ref().clone();
            let mut encodings = c.self_mask.encodings().to_vec();
            encodings.pop();
            c.self_mask = Commitment::from_encodings(encodings).unwrap();
            s.commitments = Arc::new(c);
            Some(ClientMessage::ShareKeys(s))
        }
        m => Some(m),
    });
    for c in [1, 2] {
        assert!(
            matches!(drop_reason(&h, c), Some(DropReason::Violation(Violation::WrongCommitments(_)))),
            "client {c}: {:?}",
            drop_reason(&h, c)
        );
    }
    assert_eq!(h.assert_exact().len(), 4);
}

//! Complaints about envelopes, played against the real state machines (issue 12, part 1):
//! a client that cannot use a neighbour's envelope reveals their channel's
//! Diffie-Hellman value with a DLEQ proof, treats the neighbour as absent and goes on; the
//! server opens the envelope it relayed and blames whoever lied — the sender of a bad
//! envelope, or the client that complained about a good one — and the sum stays exact
//! because the server knows which pairs did not mask with each other, and removes the
//! sender's half of such a pair's mask with the pairwise seed the complaint reveals when
//! the sender's masked input is already in the sum.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use common::{Harness, id, params};
use curve25519_dalek::{RistrettoPoint, Scalar};
use privagg_crypto::{EnvelopeContext, KeyContext, SecretKey, derive_channel_key, seal, vss};
use privagg_protocol::{
    AdvertisedKeys, ClientId, ClientMessage, ClientState, DropReason, ENVELOPE_LEN, Envelope, KeyList, ServerMessage,
    ShareCommitments, ShareKeys, Violation, cohort,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// The reason the server dropped `client`, if it did.
fn drop_reason(h: &Harness, client: u32) -> Option<DropReason> {
    h.server.dropped().into_iter().find(|d| d.client == id(client)).map(|d| d.reason)
}

fn ids(raw: &[u32]) -> Vec<ClientId> {
    raw.iter().map(|&c| id(c)).collect()
}

/// Client `attacker` sends garbage in place of its envelopes to `victims` (all if empty).
fn garbage_to(
    attacker: u32,
    victims: &'static [u32],
) -> impl FnMut(&mut Harness, ClientId, ClientMessage) -> Option<ClientMessage> {
    move |_, from, msg| match msg {
        ClientMessage::ShareKeys(mut s) if from == id(attacker) => {
            for e in s.envelopes.iter_mut().filter(|e| victims.is_empty() || victims.contains(&e.peer.get())) {
                e.sealed.iter_mut().for_each(|b| *b ^= 0x5a);
            }
            Some(ClientMessage::ShareKeys(s))
        }
        m => Some(m),
    }
}

fn assert_honest_completed(h: &Harness, honest: &[u32]) {
    for &c in honest {
        assert_eq!(h.clients[c as usize - 1].0.state(), ClientState::Completed, "client {c}");
        assert!(!h.client_errors.iter().any(|(e, _)| *e == id(c)), "client {c}: {:?}", h.client_errors);
    }
}

#[test]
fn garbage_envelopes_blame_their_sender_and_the_round_sums_the_honest_inputs_exactly() {
    // Complete graph of 6, t = 3: client 6 sends garbage to every neighbour. Each
    // complains; the first complaint drops client 6 before its masked input arrives.
    let mut h = Harness::new(params(6, 5, 3, 32, 32), 21);
    h.run(garbage_to(6, &[]));
    assert_eq!(h.assert_exact(), ids(&[1, 2, 3, 4, 5]));
    assert_eq!(drop_reason(&h, 6), Some(DropReason::Violation(Violation::BadEnvelope { recipient: id(1) })));
    assert_eq!(h.server.dropped().len(), 1, "only the attacker is dropped: {:?}", h.server.dropped());
    assert_honest_completed(&h, &[1, 2, 3, 4, 5]);
}

#[test]
fn a_garbage_envelope_to_one_neighbour_leaves_that_pair_unmasked_and_the_sum_exact() {
    // SecAgg+ graph: n = 8, k = 6, t = 4. Client 8 sends garbage to its first neighbour
    // only: the others hold its shares and masked with it, so its mask key is rebuilt and
    // its masks removed — except with the complainer, which never applied one.
    let victim = Rc::new(RefCell::new(None));
    let seen = victim.clone();
    let mut h = Harness::new(params(8, 6, 4, 24, 20), 22);
    h.run(move |_, from, msg| match msg {
        ClientMessage::ShareKeys(mut s) if from == id(8) => {
            s.envelopes[0].sealed[20] ^= 1;
            *seen.borrow_mut() = Some(s.envelopes[0].peer);
            Some(ClientMessage::ShareKeys(s))
        }
        m => Some(m),
    });
    let victim = victim.borrow().unwrap();
    assert_eq!(h.assert_exact(), ids(&[1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(drop_reason(&h, 8), Some(DropReason::Violation(Violation::BadEnvelope { recipient: victim })));
    assert_eq!(h.server.dropped().len(), 1);
    assert_honest_completed(&h, &[1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn a_bad_sender_whose_input_is_already_in_the_sum_is_blamed_and_cannot_make_the_round_abort() {
    // The attack (found by review): client 1 sends a bad envelope to client 2 and gets its
    // masked input in before client 2's complaint. It used to leave a pair mask only its
    // own mask key could remove, so the attempt aborted after every honest client had
    // sent its input and spent privacy budget on it: a forced abort per offence. Now the
    // complaint also reveals the pair's mask seed (with its own DLEQ proof), the server
    // removes client 1's half of that mask with it, rebuilds client 1's self mask from
    // the other holders, and the round releases the exact sum.
    let mut h = Harness::new(params(5, 4, 3, 16, 32), 23);
    h.run(garbage_to(1, &[2]));
    let included = h.assert_exact();
    assert_eq!(included, ids(&[1, 2, 3, 4, 5]), "client 1's input was in the sum before it was blamed");
    let dropped = h.server.dropped();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].reason, DropReason::Violation(Violation::BadEnvelope { recipient: id(2) }));
    assert!(dropped[0].in_sum);
    assert_honest_completed(&h, &[2, 3, 4, 5]);
}

#[test]
fn a_complaint_revealing_a_wrong_mask_seed_blames_the_complainer_and_cannot_corrupt_the_sum() {
    // The mask value a complaint reveals is used to remove a mask from the sum, so a
    // complainer that lies about it, about an envelope that really is bad and whose
    // sender's input is already in the sum, could otherwise shift the released sum at
    // will. The value must carry its own DLEQ proof against the advertised mask keys: a
    // wrong value, a bad proof, or the channel value's proof in its place makes the whole
    // complaint unfounded. So does carrying other bytes than the (bad) envelope relayed:
    // the server judges only what it relayed. Then the complainer, not the sender, is
    // blamed, and the sum is exact (client 1's mask with client 2 comes out with client
    // 2's rebuilt key).
    for lie in 0..4 {
        let mut h = Harness::new(params(5, 4, 3, 16, 32), 23);
        let mut garbage = garbage_to(1, &[2]);
        h.run(move |h, from, msg| match garbage(h, from, msg)? {
            ClientMessage::Complaints(mut c) if from == id(2) => {
                match lie {
                    0 => *c[0].mask_shared = RistrettoPoint::mul_base(&Scalar::from(7u8)).compress().to_bytes(),
                    1 => c[0].mask_proof.response += Scalar::ONE,
                    2 => c[0].mask_proof = c[0].proof,
                    _ => c[0].sealed[0] ^= 1,
                }
                Some(ClientMessage::Complaints(c))
            }
            m => Some(m),
        });
        assert_eq!(
            drop_reason(&h, 2),
            Some(DropReason::Violation(Violation::UnfoundedComplaint { sender: id(1) })),
            "lie {lie}"
        );
        assert_eq!(h.server.dropped().len(), 1, "lie {lie}: {:?}", h.server.dropped());
        assert_eq!(h.assert_exact(), ids(&[1, 3, 4, 5]), "lie {lie}");
        assert_honest_completed(&h, &[1, 3, 4, 5]);
    }
}

/// How a complainer misrepresents a good envelope.
#[derive(Clone, Copy, Debug)]
enum FalseComplaint {
    /// The true channel value and a valid proof of it.
    TrueValue,
    /// The proof's response changed.
    BadProof,
    /// Another point revealed, with the proof of the true one.
    WrongValue,
    /// The same complaint twice.
    Repeated,
    /// The bytes of the accused's envelope to another client (which do not open under the
    /// complainer's channel key, so judged on them the accused would look guilty).
    AnotherPairsEnvelope,
}

#[test]
fn a_false_complaint_blames_the_complainer_and_the_accused_stays_in_the_sum() {
    for lie in [
        FalseComplaint::TrueValue,
        FalseComplaint::BadProof,
        FalseComplaint::WrongValue,
        FalseComplaint::Repeated,
        FalseComplaint::AnotherPairsEnvelope,
    ] {
        // Client 2 is shown client 3's envelope with a bit flipped (the server relayed it
        // intact), so it complains — honestly, from where it stands, with a valid proof;
        // the other cases tamper with that complaint.
        let mut h = Harness::new(params(5, 4, 3, 16, 32), 24);
        let to_4 = Rc::new(RefCell::new(None));
        let seen = to_4.clone();
        h.run_with(
            move |to, msg| {
                if let ServerMessage::ForwardedShares(f) = msg {
                    let from_3 = f.iter_mut().find(|f| f.envelope.peer == id(3));
                    if to == id(2) {
                        from_3.unwrap().envelope.sealed[30] ^= 1;
                    } else if to == id(4) {
                        *seen.borrow_mut() = Some(from_3.unwrap().envelope.sealed.clone());
                    }
                }
            },
            move |_, from, msg| match msg {
                ClientMessage::Complaints(mut c) if from == id(2) => {
                    assert_eq!(c.len(), 1);
                    assert_eq!(c[0].sender, id(3));
                    match lie {
                        FalseComplaint::TrueValue => {}
                        FalseComplaint::BadProof => c[0].proof.response += Scalar::ONE,
                        FalseComplaint::WrongValue => {
                            *c[0].shared = RistrettoPoint::mul_base(&Scalar::from(7u8)).compress().to_bytes();
                        }
                        FalseComplaint::Repeated => c.push(c[0].clone()),
                        FalseComplaint::AnotherPairsEnvelope => {
                            c[0].sealed = to_4.borrow().clone().expect("relayed to client 4 before client 2 complains");
                        }
                    }
                    Some(ClientMessage::Complaints(c))
                }
                m => Some(m),
            },
        );
        assert_eq!(
            drop_reason(&h, 2),
            Some(DropReason::Violation(Violation::UnfoundedComplaint { sender: id(3) })),
            "{lie:?}"
        );
        assert_eq!(h.server.dropped().len(), 1, "{lie:?}: {:?}", h.server.dropped());
        assert_eq!(h.assert_exact(), ids(&[1, 3, 4, 5]), "{lie:?}");
        assert_honest_completed(&h, &[1, 3, 4, 5]);
    }
}

/// What the test learns on the way, to play client 5 as a dealer of wrong shares.
#[derive(Default)]
struct Dealer {
    cohort: Option<[u8; 32]>,
    key_list: Option<KeyList>,
    own_keys: Option<AdvertisedKeys>,
}

#[test]
fn shares_that_contradict_their_commitments_blame_the_sender() {
    // Client 5 advertises keys the test holds and deals its shares itself: every envelope
    // opens and is bound to the commitments relayed with it, but client 1's share of b_5
    // is off by one. Client 1 complains; the server opens the envelope with the revealed
    // value, finds the share wrong and blames client 5 — whose mask key the others' shares
    // rebuild, so its masks come out of the sum.
    let mut rng = ChaCha20Rng::seed_from_u64(25);
    let (channel, mask) = (SecretKey::generate(&mut rng), SecretKey::generate(&mut rng));
    let dealer = Rc::new(RefCell::new(Dealer::default()));
    let on_way_dealer = dealer.clone();
    let mut h = Harness::new(params(5, 4, 3, 16, 32), 25);
    h.run_with(
        move |to, msg| {
            let mut d = on_way_dealer.borrow_mut();
            match msg {
                ServerMessage::Config(c) if to == id(5) => d.cohort = Some(c.cohort),
                ServerMessage::KeyList(list) if to == id(5) => {
                    d.key_list = Some(list.clone());
                    // Client 5's state machine sees the keys it made (it seals nothing that counts).
                    let own = list.entries.iter_mut().find(|e| e.id == id(5)).unwrap();
                    std::sync::Arc::make_mut(own).keys = d.own_keys.unwrap();
                }
                _ => {}
            }
        },
        move |_, from, msg| match msg {
            ClientMessage::AdvertiseKeys(mut a) if from == id(5) => {
                let cohort = dealer.borrow().cohort.unwrap();
                dealer.borrow_mut().own_keys = Some(a.keys);
                a.keys = AdvertisedKeys::prove(&channel, &mask, &cohort, id(5), &mut rng);
                Some(ClientMessage::AdvertiseKeys(a))
            }
            ClientMessage::ShareKeys(s) if from == id(5) => {
                let d = dealer.borrow();
                let list = d.key_list.as_ref().unwrap();
                let session_id = cohort::labelling(&d.cohort.unwrap(), list.cohort.iter().map(|s| &s.nonce)).session_id;
                let ctx = KeyContext { session_id, round: 3 };
                let holders: Vec<u32> = (1..=5).collect();
                let (key_shares, mask_key) = vss::split(mask.as_scalar(), 3, &holders, &mut rng).unwrap();
                let (self_shares, self_mask) = vss::split(&Scalar::from(99u8), 3, &holders, &mut rng).unwrap();
                let commitments = Arc::new(ShareCommitments { mask_key, self_mask });
                let digest = commitments.digest(&session_id, 3, id(5));
                let envelopes = s
                    .envelopes
                    .iter()
                    .map(|e| {
                        let v = e.peer;
                        let peer = list.entries.iter().find(|p| p.id == v).unwrap();
                        let shared = channel.diffie_hellman(&peer.keys.channel).unwrap();
                        let key = derive_channel_key(&shared, &ctx, 5, v.get());
                        let wrong = if v == id(1) { Scalar::ONE } else { Scalar::ZERO };
                        let mut plaintext = Vec::new();
                        plaintext.extend_from_slice(key_shares[(v.get() - 1) as usize].y.as_bytes());
                        plaintext.extend_from_slice((self_shares[(v.get() - 1) as usize].y + wrong).as_bytes());
                        plaintext.extend_from_slice(&digest);
                        let aad = EnvelopeContext { session_id, round: 3, sender: 5, recipient: v.get() };
                        let sealed: Box<[u8; ENVELOPE_LEN]> =
                            seal(&key, &aad, &plaintext, &mut rng).into_boxed_slice().try_into().unwrap();
                        Envelope { peer: v, sealed, signature: None }
                    })
                    .collect();
                Some(ClientMessage::ShareKeys(ShareKeys { commitments, envelopes }))
            }
            m => Some(m),
        },
    );
    assert_eq!(drop_reason(&h, 5), Some(DropReason::Violation(Violation::BadEnvelope { recipient: id(1) })));
    assert_eq!(h.server.dropped().len(), 1, "{:?}", h.server.dropped());
    assert_eq!(h.assert_exact(), ids(&[1, 2, 3, 4]));
    assert_honest_completed(&h, &[1, 2, 3, 4]);
}

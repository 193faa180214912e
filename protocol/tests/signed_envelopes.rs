//! Signed envelopes: complaints under the default policy, which assumes a server that may
//! deviate. Every certified sender signs each envelope over (session, round, sender,
//! recipient, digest of its commitments, ciphertext); the server checks the signature on
//! receipt and relays it; the recipient checks it before opening anything.
//!
//! Played against the real state machines:
//! * a client that sends validly signed garbage is blamed on its recipients' complaints
//!   and the honest clients finish with the exact sum of their inputs;
//! * a server that alters, strips, substitutes or replays a signed envelope (or the
//!   commitments it binds) makes the recipient refuse the round: it sends nothing more,
//!   so no channel value Z — the key a complaint reveals — reaches the server;
//! * an honest server drops a client whose envelope signature is missing, wrong or (for
//!   a client without a certificate) unexpected, with a typed violation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use sha2::{Digest, Sha512};

use common::{Enrollment, Harness, id, params};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use privagg_crypto::KeyContext;
use privagg_crypto::identity::verify_signed_by;
use privagg_protocol::complaint::{envelope_message, envelope_signatures_all_valid};
use privagg_protocol::{
    ClientError, ClientId, ClientMessage, ClientPolicy, ClientState, DropReason, ForwardedShare, Identity, RoundParams,
    ServerMessage, Violation,
};

/// A round the default policy accepts: n = 10, complete graph, t = 6.
fn round(number: u64) -> RoundParams {
    RoundParams { round: number, ..params(10, 9, 6, 8, 32) }
}

/// One certified identity per seat of [`round`].
fn identities(enrollment: &Enrollment) -> Vec<Identity> {
    (1..=10).map(|c| enrollment.identity(&format!("client-{c}"))).collect()
}

/// Clients with `identities` and the default policy (the server may deviate).
fn certified(p: RoundParams, seed: u64, identities: &[Identity]) -> Harness {
    Harness::with_clients(p, seed, |c| (ClientPolicy::default(), Some(identities[(c.get() - 1) as usize].clone())), &[])
}

fn ids(raw: std::ops::RangeInclusive<u32>) -> Vec<ClientId> {
    raw.map(id).collect()
}

fn drop_reason(h: &Harness, client: u32) -> Option<DropReason> {
    h.server.dropped().into_iter().find(|d| d.client == id(client)).map(|d| d.reason)
}

fn assert_completed(h: &Harness, honest: &[ClientId]) {
    for &c in honest {
        assert_eq!(h.clients[(c.get() - 1) as usize].0.state(), ClientState::Completed, "{c}");
        assert!(!h.client_errors.iter().any(|(e, _)| *e == c), "{c}: {:?}", h.client_errors);
    }
}

/// Runs `h` honestly until the server queues the forwarded shares; returns them by
/// recipient, undelivered.
fn forwarded_shares(h: &mut Harness) -> BTreeMap<ClientId, Vec<ForwardedShare>> {
    for _ in 0..8 {
        let queued = h.server.drain_outgoing();
        if queued.iter().any(|o| matches!(o.message, ServerMessage::ForwardedShares(_))) {
            return queued
                .into_iter()
                .filter_map(|o| match o.message {
                    ServerMessage::ForwardedShares(f) => Some((o.to, f)),
                    _ => None,
                })
                .collect();
        }
        for out in queued {
            let (client, rng) = &mut h.clients[(out.to.get() - 1) as usize];
            let reply = client.receive(out.message, rng).unwrap();
            if let Some(reply) = reply {
                h.server.receive(out.to, reply).unwrap();
            }
        }
    }
    panic!("the forwarded shares never came");
}

/// Gives client 1 `forwarded` and asserts that it refuses with `expected` and has
/// nothing to send afterwards: no complaint, so no channel value revealed.
fn assert_refused_silently(h: &mut Harness, forwarded: Vec<ForwardedShare>, expected: ClientError, case: &str) {
    let (client, rng) = &mut h.clients[0];
    let reply = client.receive(ServerMessage::ForwardedShares(forwarded), rng);
    assert_eq!(reply, Err(expected), "{case}");
    assert_eq!(client.state(), ClientState::Failed, "{case}");
    assert_eq!(client.follow_up(), Ok(None), "{case}: nothing may follow the refusal");
}

#[test]
fn under_the_default_policy_signed_garbage_blames_its_sender_and_the_honest_sum_is_exact() {
    // Client 10 seals garbage for every neighbour and signs it properly, as a malicious
    // client can. Each recipient checks the signature (valid), fails to open the envelope
    // and complains — safe, since the server relayed what client 10 signed. The server
    // confirms the signature, opens the envelope with Z and blames client 10.
    let enrollment = Enrollment::new();
    let identities = identities(&enrollment);
    let attacker = identities[9].key.clone();
    let mut h = certified(round(3), 31, &identities);
    let complaints = Rc::new(RefCell::new(Vec::new()));
    let seen = complaints.clone();
    h.run(move |h, from, msg| match msg {
        ClientMessage::ShareKeys(mut s) if from == id(10) => {
            let ctx = KeyContext { session_id: h.clients[9].0.session_id().unwrap(), round: 3 };
            let digest = s.commitments.digest(&ctx.session_id, ctx.round, id(10));
            for e in &mut s.envelopes {
                e.sealed.iter_mut().for_each(|b| *b ^= 0x5a);
                e.signature = Some(attacker.sign(&envelope_message(&ctx, id(10), e.peer, &digest, &e.sealed)));
            }
            Some(ClientMessage::ShareKeys(s))
        }
        ClientMessage::Complaints(c) => {
            seen.borrow_mut().push((from, c.iter().map(|c| c.sender).collect::<Vec<_>>()));
            Some(ClientMessage::Complaints(c))
        }
        m => Some(m),
    });
    let complaints = complaints.borrow();
    assert!(!complaints.is_empty(), "the recipients complain under the default policy");
    assert!(complaints.iter().all(|(from, about)| *from != id(10) && *about == [id(10)]), "{complaints:?}");
    assert_eq!(drop_reason(&h, 10), Some(DropReason::Violation(Violation::BadEnvelope { recipient: id(1) })));
    assert_eq!(h.server.dropped().len(), 1, "only the attacker is dropped: {:?}", h.server.dropped());
    assert_eq!(h.assert_exact(), ids(1..=9));
    assert_completed(&h, &ids(1..=9));
}

#[test]
fn a_server_that_flips_a_bit_of_a_signed_envelope_gets_no_complaint_and_no_channel_value() {
    // The server flips one bit of client 7's honest envelope on its way to client 1.
    // Without signatures client 1 would complain and reveal Z, with which the server would
    // open the original. Instead the signature fails and client 1 refuses the round: after
    // its ShareKeys it sends nothing at all.
    let enrollment = Enrollment::new();
    let mut h = certified(round(3), 32, &identities(&enrollment));
    let sent_by_1 = Rc::new(RefCell::new(Vec::new()));
    let log = sent_by_1.clone();
    let mut complained = false;
    h.run_with(
        |to, msg| {
            if let ServerMessage::ForwardedShares(f) = msg
                && to == id(1)
            {
                let from_7 = f.iter_mut().find(|f| f.envelope.peer == id(7)).unwrap();
                from_7.envelope.sealed[50] ^= 1;
            }
        },
        |_, from, msg| {
            complained |= matches!(msg, ClientMessage::Complaints(_));
            if from == id(1) {
                log.borrow_mut().push(msg.name());
            }
            Some(msg)
        },
    );
    assert!(!complained, "no client revealed a channel value");
    assert_eq!(*sent_by_1.borrow(), ["AdvertiseKeys", "ShareKeys"], "client 1 sent nothing after the tampering");
    assert!(h.client_errors.contains(&(id(1), ClientError::BadEnvelopeSignature(id(7)))), "{:?}", h.client_errors);
    // The honest sender is not blamed; the refusing client counts as dropped after
    // ShareKeys, and the others finish exactly.
    assert_eq!(drop_reason(&h, 7), None);
    assert_eq!(drop_reason(&h, 1), Some(DropReason::MissedDeadline));
    assert_eq!(h.assert_exact(), ids(2..=10));
    assert_completed(&h, &ids(2..=10));
}

#[test]
fn stripped_substituted_or_misbound_signatures_are_refused_before_anything_is_revealed() {
    let enrollment = Enrollment::new();
    let identities = identities(&enrollment);
    let fresh = || {
        let mut h = certified(round(3), 33, &identities);
        let all = forwarded_shares(&mut h);
        (h, all)
    };
    let sender = |f: &[ForwardedShare], i: usize| f[i].envelope.peer;

    // The control: the envelopes as the honest server relays them are accepted.
    let (mut h, all) = fresh();
    let (client, rng) = &mut h.clients[0];
    let reply = client.receive(ServerMessage::ForwardedShares(all[&id(1)].clone()), rng);
    assert!(matches!(reply, Ok(Some(ClientMessage::MaskedInput(_)))), "{reply:?}");

    // Stripped.
    let (mut h, all) = fresh();
    let mut f = all[&id(1)].clone();
    f[0].envelope.signature = None;
    let expected = ClientError::UnsignedEnvelope(sender(&f, 0));
    assert_refused_silently(&mut h, f, expected, "stripped");

    // Another envelope's signature, and arbitrary bytes.
    let (mut h, all) = fresh();
    let mut f = all[&id(1)].clone();
    f[0].envelope.signature = f[1].envelope.signature;
    let expected = ClientError::BadEnvelopeSignature(sender(&f, 0));
    assert_refused_silently(&mut h, f, expected, "substituted");
    let (mut h, all) = fresh();
    let mut f = all[&id(1)].clone();
    f[2].envelope.signature = Some([0x42; 64]);
    let expected = ClientError::BadEnvelopeSignature(sender(&f, 2));
    assert_refused_silently(&mut h, f, expected, "arbitrary bytes");

    // A sender's envelope to client 4, relayed to client 1 (signed for another recipient).
    let (mut h, all) = fresh();
    let mut f = all[&id(1)].clone();
    let u = sender(&f, 1);
    assert_ne!(u, id(4));
    f[1] = all[&id(4)].iter().find(|s| s.envelope.peer == u).unwrap().clone();
    assert_refused_silently(&mut h, f, ClientError::BadEnvelopeSignature(u), "another recipient");

    // Two senders' envelopes swapped (each signed by the other).
    let (mut h, all) = fresh();
    let mut f = all[&id(1)].clone();
    let (a, b) = (sender(&f, 0), sender(&f, 1));
    (f[0].envelope.peer, f[1].envelope.peer) = (b, a);
    f.swap(0, 1);
    assert_refused_silently(&mut h, f, ClientError::BadEnvelopeSignature(a), "another sender");

    // The envelope kept, the commitments it binds replaced by another sender's: without
    // the signature this made the recipient complain (the digest sealed inside differs).
    let (mut h, all) = fresh();
    let mut f = all[&id(1)].clone();
    f[0].commitments = f[1].commitments.clone();
    let expected = ClientError::BadEnvelopeSignature(sender(&f, 0));
    assert_refused_silently(&mut h, f, expected, "other commitments");
}

#[test]
fn envelopes_replayed_from_another_session_or_round_are_refused_without_a_complaint() {
    // The same certified clients take part in another attempt of round 3 (other nonces, so
    // another session id) and in round 4. Client 2's envelope to client 1 there, with its
    // commitments, is validly signed by client 2 — for that session and round only.
    let enrollment = Enrollment::new();
    let identities = identities(&enrollment);
    for (case, other) in [("another session", round(3)), ("another round", round(4))] {
        let mut elsewhere = certified(other, 35, &identities);
        let replayed =
            forwarded_shares(&mut elsewhere)[&id(1)].iter().find(|s| s.envelope.peer == id(2)).unwrap().clone();
        let mut h = certified(round(3), 34, &identities);
        let mut f = forwarded_shares(&mut h)[&id(1)].clone();
        let at = f.iter().position(|s| s.envelope.peer == id(2)).unwrap();
        assert_ne!(f[at], replayed, "{case}: the attempts differ");
        f[at] = replayed;
        assert_refused_silently(&mut h, f, ClientError::BadEnvelopeSignature(id(2)), case);
    }
}

#[test]
fn an_honest_server_drops_a_client_whose_envelope_signature_is_missing_or_wrong() {
    // Client 3 strips the signature of its first envelope, client 4 signs with the wrong
    // key, client 5 alters an envelope after signing it (the malicious client that does
    // not bother to re-sign). The server drops each at ShareKeys, relays none of their
    // envelopes, and nobody needs to complain.
    let enrollment = Enrollment::new();
    let identities = identities(&enrollment);
    let wrong_key = identities[0].key.clone();
    let mut h = certified(round(3), 36, &identities);
    let recipients = Rc::new(RefCell::new(BTreeMap::new()));
    let seen = recipients.clone();
    let mut complained = false;
    h.run(|_, from, msg| {
        complained |= matches!(msg, ClientMessage::Complaints(_));
        match msg {
            ClientMessage::ShareKeys(mut s) if (3..=5).contains(&from.get()) => {
                let e = &mut s.envelopes[0];
                seen.borrow_mut().insert(from.get(), e.peer);
                match from.get() {
                    3 => e.signature = None,
                    4 => e.signature = Some(wrong_key.sign(b"not the envelope")),
                    _ => e.sealed[7] ^= 1,
                }
                Some(ClientMessage::ShareKeys(s))
            }
            m => Some(m),
        }
    });
    let recipients = recipients.borrow();
    assert_eq!(
        drop_reason(&h, 3),
        Some(DropReason::Violation(Violation::UnsignedEnvelope { recipient: recipients[&3] }))
    );
    for c in [4, 5] {
        assert_eq!(
            drop_reason(&h, c),
            Some(DropReason::Violation(Violation::BadEnvelopeSignature { recipient: recipients[&c] })),
            "client {c}"
        );
    }
    assert!(!complained, "nothing bad was relayed");
    assert_eq!(h.server.dropped().len(), 3, "{:?}", h.server.dropped());
    let honest: Vec<ClientId> = [1, 2, 6, 7, 8, 9, 10].into_iter().map(id).collect();
    assert_eq!(h.assert_exact(), honest);
    assert_completed(&h, &honest);
}

#[test]
fn a_client_without_a_certificate_may_not_sign_its_envelopes() {
    // Anonymous clients (a curious-server deployment) send unsigned envelopes; a
    // signature from one could be verified by nobody and is refused.
    let mut h = Harness::new(params(6, 5, 3, 16, 32), 37);
    let mut recipient = None;
    h.run(|_, from, msg| match msg {
        ClientMessage::ShareKeys(mut s) if from == id(2) => {
            assert!(s.envelopes.iter().all(|e| e.signature.is_none()));
            s.envelopes[0].signature = Some([7; 64]);
            recipient = Some(s.envelopes[0].peer);
            Some(ClientMessage::ShareKeys(s))
        }
        m => Some(m),
    });
    let recipient = recipient.unwrap();
    assert_eq!(drop_reason(&h, 2), Some(DropReason::Violation(Violation::UnexpectedEnvelopeSignature { recipient })));
    assert_eq!(h.assert_exact(), [1, 3, 4, 5, 6].into_iter().map(id).collect::<Vec<_>>());
}

/// The Ed25519 signing scalar of a PKCS#8 (RFC 8410) key, to sign as no honest signer
/// would: what a malicious client holding its own certified key can do.
struct RawSigner {
    secret: Scalar,
    public: [u8; 32],
}

impl RawSigner {
    fn from_pkcs8(der: &[u8]) -> Self {
        let at = der.windows(4).position(|w| w == [0x04, 0x22, 0x04, 0x20]).unwrap() + 4;
        let expanded = Sha512::digest(&der[at..at + 32]);
        let mut clamped: [u8; 32] = expanded[..32].try_into().unwrap();
        clamped[0] &= 248;
        clamped[31] &= 127;
        clamped[31] |= 64;
        let secret = Scalar::from_bytes_mod_order(clamped);
        Self { secret, public: EdwardsPoint::mul_base(&secret).compress().to_bytes() }
    }

    /// A signature on `message` whose R carries a point of order 4: valid under the
    /// cofactored equation, refused by an uncofactored check (ring's).
    fn sign_with_torsion(&self, message: &[u8], nonce: u64) -> [u8; 64] {
        self.sign_with_r(message, nonce, CompressedEdwardsY([0; 32]).decompress().unwrap())
    }

    /// An ordinary signature, with `nonce` for r.
    fn sign(&self, message: &[u8], nonce: u64) -> [u8; 64] {
        self.sign_with_r(message, nonce, EdwardsPoint::default())
    }

    fn sign_with_r(&self, message: &[u8], nonce: u64, torsion: EdwardsPoint) -> [u8; 64] {
        let r = Scalar::from(nonce);
        let big_r = (EdwardsPoint::mul_base(&r) + torsion).compress().to_bytes();
        let wide: [u8; 64] =
            Sha512::new().chain_update(big_r).chain_update(self.public).chain_update(message).finalize().into();
        let s = r + Scalar::from_bytes_mod_order_wide(&wide) * self.secret;
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&big_r);
        signature[32..].copy_from_slice(s.as_bytes());
        signature
    }
}

#[test]
fn the_server_batch_and_each_recipient_judge_every_envelope_signature_alike() {
    // The server checks a client's k envelope signatures in one batch, each recipient
    // checks its own alone; if they could disagree, a client could get envelopes relayed
    // that their recipients then refuse, stalling its neighbours without blame. Client 4,
    // holding its own certified key, signs every envelope with a small-order component in
    // R (what separates the cofactored equation from ring's): the server relays them and
    // every recipient accepts them; the round completes with everyone. Client 7 signs
    // validly but alters its last envelope after signing: the batch fails, and the check
    // one by one names that envelope's recipient.
    let enrollment = Enrollment::new();
    let credentials: Vec<_> =
        (1..=10).map(|c| enrollment.authority.issue(&format!("client-{c}"), 30).unwrap()).collect();
    let identities: Vec<Identity> = credentials
        .iter()
        .map(|c| Identity::from_der(&c.cert, &c.key, enrollment.authority.root_der(), common::now()).unwrap())
        .collect();
    let torsion_signer = RawSigner::from_pkcs8(&credentials[3].key);
    assert_eq!(torsion_signer.public, identities[3].key.public_key());
    let mut h = certified(round(3), 37, &identities);
    let last_recipient = Rc::new(RefCell::new(None));
    let seen = last_recipient.clone();
    let ring_refused = Rc::new(RefCell::new(0));
    let refused = ring_refused.clone();
    let cert_4 = credentials[3].cert.clone();
    h.run(move |h, from, msg| match msg {
        ClientMessage::ShareKeys(mut s) if from == id(4) => {
            let ctx = KeyContext { session_id: h.clients[3].0.session_id().unwrap(), round: 3 };
            let digest = s.commitments.digest(&ctx.session_id, ctx.round, id(4));
            for (i, e) in s.envelopes.iter_mut().enumerate() {
                let message = envelope_message(&ctx, id(4), e.peer, &digest, &e.sealed);
                let signature = torsion_signer.sign_with_torsion(&message, 1_000 + i as u64);
                *refused.borrow_mut() += usize::from(verify_signed_by(&cert_4, &message, &signature).is_err());
                e.signature = Some(signature);
            }
            Some(ClientMessage::ShareKeys(s))
        }
        ClientMessage::ShareKeys(mut s) if from == id(7) => {
            let last = s.envelopes.last_mut().unwrap();
            last.sealed[3] ^= 1;
            *seen.borrow_mut() = Some(last.peer);
            Some(ClientMessage::ShareKeys(s))
        }
        m => Some(m),
    });
    assert_eq!(*ring_refused.borrow(), 9, "every one of client 4's signatures is one ring refuses");
    let recipient = last_recipient.borrow().unwrap();
    assert_ne!(recipient, id(1), "not the first envelope");
    assert_eq!(drop_reason(&h, 7), Some(DropReason::Violation(Violation::BadEnvelopeSignature { recipient })));
    assert_eq!(h.server.dropped().len(), 1, "{:?}", h.server.dropped());
    let honest: Vec<ClientId> = [1, 2, 3, 4, 5, 6, 8, 9, 10].into_iter().map(id).collect();
    assert_eq!(h.assert_exact(), honest);
    assert_completed(&h, &honest);
}

#[test]
fn the_batch_accepts_small_order_components_in_every_chunk_and_refuses_a_bad_signature_in_the_last() {
    // More envelopes than one batch of 64 holds, so that every chunk is checked: a
    // small-order component in every other signature, across all chunks, passes; one bad
    // signature in the last chunk alone fails the whole check.
    let enrollment = Enrollment::new();
    let credential = enrollment.authority.issue("client-1", 30).unwrap();
    let signer = RawSigner::from_pkcs8(&credential.key);
    let messages: Vec<[u8; privagg_protocol::complaint::ENVELOPE_MESSAGE_LEN]> = (0..200u32)
        .map(|i| {
            let mut m = [0u8; privagg_protocol::complaint::ENVELOPE_MESSAGE_LEN];
            m[..4].copy_from_slice(&i.to_be_bytes());
            m
        })
        .collect();
    let mut signatures: Vec<[u8; 64]> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| if i % 2 == 1 { signer.sign_with_torsion(m, 7 + i as u64) } else { signer.sign(m, 7 + i as u64) })
        .collect();
    let signed = |signatures: &[[u8; 64]]| -> bool {
        let pairs: Vec<_> = messages.iter().zip(signatures).map(|(m, s)| (m, Some(s))).collect();
        envelope_signatures_all_valid(Some(&credential.cert), &pairs)
    };
    assert!(signed(&signatures));
    assert!(verify_signed_by(&credential.cert, &messages[199], &signatures[199]).is_err(), "ring refuses these");
    signatures[198][40] ^= 1;
    assert!(!signed(&signatures));
    let unsigned: Vec<_> = messages.iter().map(|m| (m, None)).collect();
    assert!(!envelope_signatures_all_valid(Some(&credential.cert), &unsigned));
    assert!(envelope_signatures_all_valid(None, &unsigned));
}

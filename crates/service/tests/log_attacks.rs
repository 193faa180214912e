//! The round log, attacked: a server that deviates in what it proves of its log,
//! played in the deterministic harness against real client state machines. Each
//! attack rewrites the round-log proof in the clients' `Config`s of a later round; each
//! must end, for every client, in its typed refusal before it sends anything of that
//! round but its `Leave` — no masked input, no unmask share.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod harness;

use harness::{Harness, SESSION, Setup};
use privagg_log::{LogKey, VerifierKey};
use privagg_protocol::{Limits, ServerMessage};
use privagg_service::message::FromServer;
use privagg_service::round_log::{
    LeafPrivacy, LogProof, LogRefusal, LogRequest, LogState, LogTrust, RoundLeaf, origin,
};
use privagg_service::{ClientEvent, RoundError};

/// A session of `rounds` rounds of 4 clients (all of them needed).
fn session(rounds: u64) -> Harness {
    let mut setup = Setup::new(4, 4, 4, 8);
    setup.session.rounds = rounds;
    setup.session.max_round_attempts = 2;
    setup.start()
}

/// Runs `h` until `rounds` rounds are committed.
fn commit_rounds(h: &mut Harness, rounds: usize) {
    h.run_until(|h| h.commits.len() >= rounds);
    assert_eq!(h.commits.len(), rounds);
}

/// From now on, the server rewrites the log proof in every `Config` as `attack` says.
fn rewrite_proofs(h: &mut Harness, mut attack: impl FnMut(&mut LogProof) + 'static) {
    h.tamper_to_client = Some(Box::new(move |_, frame| {
        let limits = Limits::default();
        if let Ok(FromServer::Protocol(ServerMessage::Config(mut config))) = FromServer::decode(frame, &limits) {
            let mut proof = LogProof::decode(&config.client_data).unwrap().expect("the honest server proves its log");
            attack(&mut proof);
            config.client_data = LogProof::encode(Some(&proof));
            *frame = ServerMessage::Config(config).encode();
        }
        true
    }));
}

/// Runs the attacked rest of the session and checks that every client refused with
/// `expected` — and refused only that way — having sent no masked input and no unmask
/// share after the `honest` rounds it completed.
fn assert_every_client_refuses(h: &mut Harness, honest: usize, expected: impl Fn(&LogRefusal) -> bool) {
    let before: Vec<(u32, u32)> = h.peers.iter().map(|p| (p.uploads, p.unmask_responses)).collect();
    assert!(before.iter().all(|&(u, s)| u as usize == honest && s as usize == honest), "{before:?}");
    h.run();
    assert_eq!(h.commits.len(), honest, "no round completed under the attack");
    for (i, p) in h.peers.iter().enumerate() {
        assert_eq!((p.uploads, p.unmask_responses), before[i], "peer {i} sent something of the attacked round");
        let failures = p.failures();
        let refused = |f: &&RoundError| matches!(f, RoundError::LogRefused(r) if expected(r));
        assert!(failures.iter().any(refused), "peer {i} did not refuse as expected: {failures:?}");
        for f in failures {
            // Besides its refusals, a client only hears the abort of the round it left
            // (the others left too).
            assert!(refused(&f) || matches!(f, RoundError::Aborted { .. }), "peer {i}: {f:?}");
            // The error names the problem, never a secret: it fits on a line.
            assert!(!f.to_string().contains('\n'), "{f}");
        }
    }
}

#[test]
fn an_honest_log_is_checked_every_round_and_the_checkpoint_kept() {
    let mut h = session(3);
    h.run();
    assert_eq!(h.commits.len(), 3);
    let key = VerifierKey::parse(&h.log_key.verifier().to_string()).unwrap();
    for p in &h.peers {
        assert!(p.failures().is_empty(), "{:?}", p.failures());
        assert_eq!(p.unmask_responses, 3);
        // Before round 3 it accepted the log of rounds 1 and 2 (both proven), signed by
        // the key it trusted on first use; round 3 waits to be proven before its next round.
        let log = p.remembered.as_ref().unwrap().session(&SESSION).log;
        assert_eq!((log.size, log.unproven.iter().copied().collect::<Vec<_>>()), (2, vec![3]));
        assert_eq!(log.key.as_deref(), Some(key.to_string().as_str()));
        let accepted = privagg_log::Checkpoint::verify(log.checkpoint.as_deref().unwrap(), &key).unwrap();
        assert_eq!(accepted.root, privagg_log::root(&h.log.hashes()[..2]));
    }
}

#[test]
fn a_pinned_key_refuses_a_log_signed_by_any_other_from_the_first_round() {
    let mut setup = Setup::new(4, 4, 4, 8);
    setup.session.max_round_attempts = 1;
    let mut h = setup.build();
    let other = LogKey::generate(&origin(&hex::encode(SESSION))).unwrap().verifier();
    for i in 0..4 {
        h.configure(i, |c| c.log = LogTrust::Pinned(other.clone()));
    }
    h.join_all();
    assert_every_client_refuses(&mut h, 0, |r| matches!(r, LogRefusal::BadSignature(_)));
}

#[test]
fn a_checkpoint_signed_by_another_key_is_refused() {
    // (a) After a round, the server presents its log under a new key of the same name
    // (its own key lost, or a substitute): the clients trusted the first one.
    let mut h = session(3);
    commit_rounds(&mut h, 1);
    let impostor = LogKey::generate(&origin(&hex::encode(SESSION))).unwrap();
    let mut forged = LogState::new(SESSION, &impostor);
    forged.append(h.log.leaf(0).unwrap().to_vec(), &impostor);
    rewrite_proofs(&mut h, move |proof| {
        *proof = forged.prove(&LogRequest { session: SESSION, size: proof.from, rounds: vec![1] });
    });
    assert_every_client_refuses(&mut h, 1, |r| matches!(r, LogRefusal::BadSignature(_)));
}

#[test]
fn a_truncated_log_is_refused() {
    // (b) Four rounds; before round 4 the server presents its log as it was after round
    // 1 (properly signed), hiding rounds 2 and 3. The clients accepted 2 rounds before
    // round 3.
    let mut h = session(4);
    commit_rounds(&mut h, 1);
    let after_one = h.log.clone();
    commit_rounds(&mut h, 3);
    rewrite_proofs(&mut h, move |proof| *proof = after_one.prove(&LogRequest::default()));
    assert_every_client_refuses(&mut h, 3, |r| *r == LogRefusal::Truncated { held: 2, presented: 1 });
}

#[test]
fn a_forked_log_is_refused() {
    // (c) Before round 3 the server presents a log of the right size whose round 1 was
    // rewritten (a history the clients did not see), signed with its own key.
    let mut h = session(3);
    commit_rounds(&mut h, 2);
    let mut leaf = RoundLeaf::decode(h.log.leaf(0).unwrap()).unwrap();
    leaf.survivor_count -= 1;
    let key = h.log_key_copy();
    let mut fork = LogState::new(SESSION, &key);
    fork.append(leaf.encode().unwrap(), &key);
    fork.append(h.log.leaf(1).unwrap().to_vec(), &key);
    rewrite_proofs(&mut h, move |proof| {
        *proof = fork.prove(&LogRequest { session: SESSION, size: proof.from, rounds: vec![2] });
    });
    assert_every_client_refuses(&mut h, 2, |r| *r == LogRefusal::Forked { held: 1, presented: 2 });
}

#[test]
fn a_consistency_proof_that_does_not_verify_is_refused() {
    // (c) The honest checkpoint, with a consistency proof that does not lead to it.
    let mut h = session(4);
    commit_rounds(&mut h, 2);
    rewrite_proofs(&mut h, |proof| {
        for hash in &mut proof.consistency {
            hash[0] ^= 1;
        }
        if proof.consistency.is_empty() {
            proof.consistency.push([0; 32]);
        }
    });
    assert_every_client_refuses(&mut h, 2, |r| matches!(r, LogRefusal::Forked { .. }));
}

#[test]
fn an_omitted_inclusion_proof_is_refused() {
    // (d) The server leaves out the leaf of the round the clients took part in.
    let mut h = session(3);
    commit_rounds(&mut h, 2);
    rewrite_proofs(&mut h, |proof| proof.leaves.retain(|l| l.index != 1));
    assert_every_client_refuses(
        &mut h,
        2,
        |r| matches!(r, LogRefusal::NotIncluded { round: 2, why } if why.contains("no proof")),
    );
}

#[test]
fn a_falsified_inclusion_proof_is_refused() {
    // (d) The leaf of the clients' round comes with a wrong path, or rewritten.
    let mut h = session(3);
    commit_rounds(&mut h, 2);
    rewrite_proofs(&mut h, |proof| {
        for l in proof.leaves.iter_mut().filter(|l| l.index == 1) {
            l.path[0][5] ^= 0x10;
        }
    });
    assert_every_client_refuses(
        &mut h,
        2,
        |r| matches!(r, LogRefusal::NotIncluded { round: 2, why } if why.contains("does not verify")),
    );

    let mut h = session(3);
    commit_rounds(&mut h, 2);
    rewrite_proofs(&mut h, |proof| {
        for l in proof.leaves.iter_mut().filter(|l| l.index == 1) {
            l.leaf = String::from_utf8(l.leaf.clone()).unwrap().replacen("\"round\":2", "\"round\":9", 1).into_bytes();
        }
    });
    assert_every_client_refuses(&mut h, 2, |r| matches!(r, LogRefusal::NotIncluded { round: 2, .. }));
}

#[test]
fn a_stale_checkpoint_that_hides_the_latest_round_is_refused() {
    // The log as it was before round 2, shown again before round 3: its size no longer
    // matches the round, and its ε would be out of date.
    let mut h = session(3);
    commit_rounds(&mut h, 1);
    let after_one = h.log.clone();
    commit_rounds(&mut h, 2);
    rewrite_proofs(&mut h, move |proof| {
        *proof = after_one.prove(&LogRequest { session: SESSION, size: 1, rounds: vec![2] })
    });
    assert_every_client_refuses(&mut h, 2, |r| *r == LogRefusal::Stale { round: 3, size: 1 });
}

#[test]
fn a_logged_epsilon_beyond_the_budget_is_refused() {
    // (e) The server's own signed log says the session has spent ε = 20: beyond the
    // clients' default budget of 16, whatever this round adds.
    let mut h = session(3);
    h.leaf_privacy = Some(LeafPrivacy { delta: 1e-5, releases: Vec::new(), epsilon_round: 20.0, epsilon_total: 20.0 });
    commit_rounds(&mut h, 1);
    assert_every_client_refuses(
        &mut h,
        1,
        |r| matches!(r, LogRefusal::Budget { logged, max_epsilon, .. } if *logged == 20.0 && *max_epsilon == 16.0),
    );
    // A client with a larger budget takes part: the check is its own policy's.
    let mut setup = Setup::new(4, 4, 4, 8);
    setup.session.rounds = 2;
    let mut h = setup.build();
    h.leaf_privacy = Some(LeafPrivacy { delta: 1e-5, releases: Vec::new(), epsilon_round: 20.0, epsilon_total: 20.0 });
    for i in 0..4 {
        h.configure(i, |c| c.privacy.max_epsilon = Some(25.0));
    }
    h.join_all();
    h.run();
    assert_eq!(h.commits.len(), 2);
    assert!(h.peers.iter().all(|p| p.events.iter().all(|e| !matches!(e, ClientEvent::RoundFailed(_)))));
}

#[test]
fn a_client_restarted_from_its_memory_still_catches_a_truncation() {
    // Clients take part in three rounds and stop; the same server (same key) comes back
    // with its state rolled back to before round 1 and starts round 1 again. Clients
    // restarted from what they stored hold a checkpoint of 2 rounds and refuse.
    let mut first = session(3);
    first.run();
    assert_eq!(first.commits.len(), 3);
    let mut again = Setup::new(4, 4, 4, 8).build();
    again.restart_log(first.log_key_copy());
    for i in 0..4 {
        let remembered = first.peers[i].remembered.clone().unwrap();
        again.configure(i, |c| c.memory = remembered);
    }
    again.join_all();
    assert_every_client_refuses(&mut again, 0, |r| *r == LogRefusal::Truncated { held: 2, presented: 0 });
}

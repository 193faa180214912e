//! The round log, attacked: a server that deviates in what it proves of its log,
//! played in the deterministic harness against real client state machines. Each
//! attack rewrites the round-log proof in the clients' `Config`s of a later round; each
//! must end, for every client, in its typed refusal before it sends anything of that
//! round but its `Leave` — no masked input, no unmask share.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod harness;

use harness::{Harness, SESSION, Setup, TamperLeaf};
use privagg_log::{LogKey, VerifierKey};
use privagg_protocol::{DropPoint, Limits, RoundAbort, ServerMessage};
use privagg_service::message::FromServer;
use privagg_service::round_log::{
    LeafPrivacy, LogProof, LogRefusal, LogRequest, LogState, LogTrust, MAX_REFUSED, RoundLeaf, origin,
};
use privagg_service::{ClientEvent, RoundError, RoundMemory, SessionEvent};

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
        assert_eq!((log.size, log.unproven.keys().copied().collect::<Vec<_>>()), (2, vec![3]));
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

/// Round 1 of 6 clients in cohorts of 3 (all needed, DP on) runs twice: in attempt 1
/// client 0 vanishes before revealing its shares, clients 1 and 2 reveal theirs and the
/// attempt aborts (`TooFewShares`) — the server could have unmasked their sum. Attempt 2
/// completes without them. Returns the harness once round 1 is committed, with the
/// instance of attempt 1 (what clients 1 and 2 remember).
fn round_one_unmasked_twice(tamper: Option<TamperLeaf>) -> (Harness, String) {
    let mut setup = Setup::new(6, 3, 3, 8);
    setup.noise_multiplier = Some(1.0);
    setup.session.rounds = 2;
    let mut h = setup.build();
    h.tamper_leaf = tamper;
    h.peers[0].session.set_drop_point(Some(DropPoint::BeforeUnmaskResponse));
    h.join_all();
    h.run_until(|h| {
        h.events.iter().any(|e| {
            matches!(e, SessionEvent::RoundAborted { attempt: 1, reason: RoundAbort::TooFewShares { .. }, .. })
        })
    });
    h.peers[0].session.set_drop_point(None);
    h.run_until(|h| !h.commits.is_empty());
    let attempt_one = hex::encode(h.unmasked[0].1);
    for i in [1, 2] {
        let log = h.peers[i].remembered.as_ref().unwrap().session(&SESSION).log;
        assert!(log.unproven[&1].contains(&attempt_one), "peer {i} revealed its shares in attempt 1");
    }
    assert_eq!(h.unmasked.len(), 2, "both attempts were charged before unmasking");
    (h, attempt_one)
}

#[test]
fn an_honest_server_logs_an_aborted_attempt_that_was_unmasked_and_is_not_refused() {
    let (mut h, attempt_one) = round_one_unmasked_twice(None);
    let leaf = RoundLeaf::decode(h.log.leaf(0).unwrap()).unwrap();
    assert_eq!(leaf.unmasked, [attempt_one.clone(), leaf.instance.clone()]);
    assert_ne!(leaf.instance, attempt_one);
    h.run();
    assert_eq!(h.commits.len(), 2);
    for i in [1, 2] {
        let p = &h.peers[i];
        assert!(p.failures().iter().all(|f| !matches!(f, RoundError::LogRefused(_))), "{:?}", p.failures());
        assert!(p.completed(2), "peer {i} took part in round 2, its attempt of round 1 proven");
        let log = p.remembered.as_ref().unwrap().session(&SESSION).log;
        assert!(!log.unproven.contains_key(&1));
    }
}

#[test]
fn a_leaf_that_logs_only_another_attempt_of_the_round_is_refused() {
    // The server ran round 1 twice and logs only the attempt that completed: clients 1
    // and 2, which revealed their shares in the first, refuse round 2 before sending
    // anything of it.
    let only_completed: TamperLeaf = Box::new(|leaf| leaf.unmasked = vec![leaf.instance.clone()]);
    let (mut h, _) = round_one_unmasked_twice(Some(only_completed));
    let before: Vec<(u32, u32)> = h.peers.iter().map(|p| (p.uploads, p.unmask_responses)).collect();
    h.run();
    for i in [1, 2] {
        let p = &h.peers[i];
        assert_eq!((p.uploads, p.unmask_responses), before[i], "peer {i} sent nothing more");
        assert!(!p.completed(2));
        let refused = p.failures().iter().any(|f| {
            matches!(f, RoundError::LogRefused(LogRefusal::NotIncluded { round: 1, why }) if why.contains("attempt"))
        });
        assert!(refused, "peer {i}: {:?}", p.failures());
    }
}

#[test]
fn a_cumulative_epsilon_that_falls_is_refused() {
    // The log says ε = 5 after round 1, then ε = 3 after round 2: it took back privacy it
    // had spent. Clients accepted 5 before round 2 and refuse round 3.
    let mut h = session(3);
    let mut round = 0.0;
    h.tamper_leaf = Some(Box::new(move |leaf| {
        round += 1.0;
        let total = if round == 1.0 { 5.0 } else { 3.0 };
        leaf.privacy =
            Some(LeafPrivacy { delta: 1e-5, releases: Vec::new(), epsilon_round: 1.0, epsilon_total: total });
    }));
    commit_rounds(&mut h, 2);
    assert_every_client_refuses(
        &mut h,
        2,
        |r| matches!(r, LogRefusal::EpsilonDecreased { logged, held, .. } if *logged == 3.0 && *held == 5.0),
    );
    let log = h.peers[0].remembered.as_ref().unwrap().session(&SESSION).log;
    assert_eq!(log.total, Some((5.0, 1e-5)), "the refused figure is not kept");
}

#[test]
fn an_honest_log_keeps_the_cumulative_epsilon_it_accepted() {
    let mut h = session(3);
    let mut total = 0.0;
    h.tamper_leaf = Some(Box::new(move |leaf| {
        total += 1.5;
        leaf.privacy =
            Some(LeafPrivacy { delta: 1e-5, releases: Vec::new(), epsilon_round: 1.5, epsilon_total: total });
    }));
    h.run();
    assert_eq!(h.commits.len(), 3);
    for p in &h.peers {
        assert!(p.failures().is_empty(), "{:?}", p.failures());
        assert_eq!(p.remembered.as_ref().unwrap().session(&SESSION).log.total, Some((3.0, 1e-5)));
    }
}

#[test]
fn a_client_back_from_another_session_resumes_its_memory_of_this_one() {
    // Clients take part in 3 rounds of the session, then in another session of the same
    // server (their `Ready` now asks about that one's log). The server resumes the first
    // session at round 4: its proof starts from 0, since the request names another log.
    // The clients do not take that for a fork for ever: they refuse the attempt as a
    // switch, ask about this session next, and go on from the checkpoint they held.
    let mut first = session(3);
    first.run();
    assert_eq!(first.commits.len(), 3);
    let mut setup = Setup::new(4, 4, 4, 8);
    setup.session.completed_rounds = 3;
    setup.session.rounds = 5;
    setup.session.max_round_attempts = 2;
    let mut again = setup.build();
    again.log = first.log.clone();
    again.restart_log_state(first.log_key_copy());
    for i in 0..4 {
        let mut memory = serde_json::to_value(first.peers[i].remembered.clone().unwrap()).unwrap();
        memory["log_session"] = serde_json::Value::String(hex::encode([0x77u8; 16]));
        let memory: RoundMemory = serde_json::from_value(memory).unwrap();
        again.configure(i, |c| c.memory = memory);
    }
    again.join_all();
    again.run();
    assert_eq!(again.commits.len(), 2, "rounds 4 and 5 completed");
    for (i, p) in again.peers.iter().enumerate() {
        let failures = p.failures();
        assert!(
            failures.iter().all(|f| matches!(
                f,
                RoundError::LogRefused(LogRefusal::SessionSwitched { held: 2 }) | RoundError::Aborted { .. }
            )),
            "peer {i}: {failures:?}"
        );
        assert!(p.completed(4) && p.completed(5), "peer {i}");
        let log = p.remembered.as_ref().unwrap().session(&SESSION).log;
        assert_eq!(log.size, 4);
    }
}

#[test]
fn a_refused_checkpoint_is_kept_as_evidence_and_only_the_latest_few() {
    // The truncation attack of before; each client keeps the signed checkpoint it
    // refused, with the one it held, and why.
    let mut h = session(4);
    commit_rounds(&mut h, 1);
    let after_one = h.log.clone();
    commit_rounds(&mut h, 3);
    let truncated = after_one.note().to_owned();
    rewrite_proofs(&mut h, move |proof| *proof = after_one.prove(&LogRequest::default()));
    assert_every_client_refuses(&mut h, 3, |r| matches!(r, LogRefusal::Truncated { .. }));
    let key = VerifierKey::parse(&h.log_key.verifier().to_string()).unwrap();
    for p in &h.peers {
        let memory = p.remembered.as_ref().unwrap();
        let evidence = memory.refused().last().expect("the refusal is kept");
        assert_eq!((evidence.session.as_str(), evidence.round), (hex::encode(SESSION).as_str(), 4));
        assert_eq!(evidence.checkpoint, truncated);
        assert!(evidence.reason.contains("truncated"), "{}", evidence.reason);
        // Both checkpoints carry the server's signature: a contradiction it signed.
        let held = privagg_log::Checkpoint::verify(evidence.held.as_deref().unwrap(), &key).unwrap();
        let refused = privagg_log::Checkpoint::verify(&evidence.checkpoint, &key).unwrap();
        assert_eq!((held.size, refused.size), (2, 1));
    }

    // A server that keeps deviating, attempt after attempt: the latest few are kept.
    let mut setup = Setup::new(4, 4, 4, 8);
    setup.session.rounds = 2;
    setup.session.max_round_attempts = 10;
    let mut h = setup.start();
    commit_rounds(&mut h, 1);
    rewrite_proofs(&mut h, |proof| proof.leaves.clear());
    h.run();
    for p in &h.peers {
        let refusals = p.failures().iter().filter(|f| matches!(f, RoundError::LogRefused(_))).count();
        assert!(refusals > MAX_REFUSED, "{refusals}");
        assert_eq!(p.remembered.as_ref().unwrap().refused().len(), MAX_REFUSED);
    }
}

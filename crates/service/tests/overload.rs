//! Attacks on the service's availability, run in the deterministic harness: clients that
//! never read, granted uploads that never arrive, a second connection with a token in
//! use, violators and repeat offenders, and a flood of connections without a `Hello`.
//! The shell's timers are played by the harness ([`Harness::stall`]); no assertion
//! depends on timing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod harness;

use std::time::Duration;

use harness::{Setup, ty};
use privagg_protocol::{AdversaryClass, ClientId, ClientPolicy};
use privagg_service::message::{ClientServiceMessage, FromServer, ServerServiceMessage};
use privagg_service::server::CloseReason;
use privagg_service::{Admission, ClientIdentity, Offence, SessionEvent, Stall};

/// A token-admitted harness: peer i holds token `t<i>`; clients trust the server (a token
/// certifies nobody to the other clients).
fn with_tokens(setup: Setup) -> harness::Harness {
    let tokens: Vec<String> = (0..setup.peers).map(|i| format!("t{i}")).collect();
    let mut setup = setup;
    setup.session.admission = Admission::with_tokens(tokens.iter().map(String::as_str)).unwrap();
    let mut h = setup.build();
    for (i, token) in tokens.iter().enumerate() {
        h.configure(i, |c| {
            c.token = Some(token.clone());
            c.policy = ClientPolicy { server: AdversaryClass::CuriousServer, ..ClientPolicy::default() };
            c.credentials = None;
        });
    }
    h.join_all();
    h
}

#[test]
fn four_clients_that_never_read_their_config_are_dropped_and_the_round_completes() {
    let mut setup = Setup::new(10, 10, 5, 16);
    setup.session.ban_after = 1;
    let mut h = setup.start();
    h.run_until(|h| (0..4).all(|i| h.in_flight_to(i).contains(&ty::CONFIG)));
    // Peers 0–3 read nothing from now on; the shell's write deadline fires for each.
    h.tamper_to_client = Some(Box::new(|i, _| i >= 4));
    let stalled: Vec<u64> = (0..4).map(|i| h.peers[i].conn.unwrap()).collect();
    for &conn in &stalled {
        h.stall(conn, Stall::Write);
    }
    h.run();
    assert!(h.finished.is_some(), "{:?}", h.events);
    assert_eq!(h.commits.len(), 1, "{:?}", h.events);
    let committed = &h.commits[0];
    // Dropped before they advertised keys, they leave the first attempt's cohort
    // incomplete (the protocol aborts it); the retry seats only clients that read.
    assert!(committed.commit.attempt <= 2);
    assert_eq!(committed.peers, vec![4, 5, 6, 7, 8, 9]);
    h.assert_exact(0);
    for conn in stalled {
        // Closed as banned (one offence suffices here), which says it stalled.
        assert!(h.closes.contains(&(conn, CloseReason::Banned)), "{:?}", h.closes);
    }
    // Each was banned, with a typed reason in the round's commit.
    let bans = &committed.commit.banned;
    assert_eq!(bans.len(), 4);
    assert!(bans.iter().all(|b| b.reason == Offence::StalledDownload), "{bans:?}");
    assert_eq!(h.events.iter().filter(|e| matches!(e, SessionEvent::Banned(_))).count(), 4);
}

#[test]
fn a_granted_upload_that_never_arrives_loses_its_grant_and_the_others_finish() {
    let mut setup = Setup::new(5, 5, 4, 200_000);
    setup.session.upload_slots = 1;
    setup.session.upload_timeout = Some(Duration::from_secs(2));
    let mut h = setup.start();
    // Peer 0 asks for a grant, then never sends its masked input.
    h.tamper = Some(Box::new(|i, frame| !(i == 0 && frame.get(1) == Some(&ty::MASKED_INPUT))));
    let silent = h.peers[0].conn.unwrap();
    h.run();
    assert_eq!(h.commits.len(), 1, "{:?}", h.events);
    // The first attempt completes: the grant expired long before the phase deadline.
    assert_eq!(h.commits[0].commit.attempt, 1);
    assert_eq!(h.commits[0].peers, vec![1, 2, 3, 4]);
    h.assert_exact(0);
    assert!(h.closes.contains(&(silent, CloseReason::Stalled)), "{:?}", h.closes);
    let dropped = h.dropped(0);
    assert!(dropped.iter().any(|d| d.0 == 0 && d.2.contains("upload grant past its deadline")), "{dropped:?}");
}

#[test]
fn a_second_connection_with_a_token_in_use_is_refused_and_the_holder_keeps_its_seat() {
    let mut h = with_tokens(Setup::new(3, 3, 3, 8));
    h.run_until(|h| h.in_flight_to(0).contains(&ty::CONFIG));
    let holder = h.peers[0].conn.unwrap();
    let thief = h.connect_raw();
    h.send_raw(thief, ClientServiceMessage::Hello { token: "t0".into(), identity: [0xee; 16], resume: None }.encode());
    h.run();
    let received = h.raw_received(thief);
    assert!(
        matches!(&received[..], [FromServer::Service(ServerServiceMessage::Refused { reason })] if reason.contains("in use")),
        "{received:?}"
    );
    assert!(h.closes.contains(&(thief, CloseReason::Refused)));
    // The holder's connection is closed only when the session ends.
    assert_eq!(
        h.closes.iter().filter(|&&(c, _)| c == holder).collect::<Vec<_>>(),
        [&(holder, CloseReason::SessionEnded)]
    );
    assert_eq!(h.commits[0].peers, vec![0, 1, 2]);
    h.assert_exact(0);
}

#[test]
fn a_second_connection_with_a_token_in_use_is_refused_in_the_lobby_too() {
    let mut h = with_tokens(Setup::new(2, 3, 3, 8));
    h.run();
    let holder = h.peers[1].conn.unwrap();
    let thief = h.connect_raw();
    h.send_raw(thief, ClientServiceMessage::Hello { token: "t1".into(), identity: [0xee; 16], resume: None }.encode());
    h.run();
    assert!(h.closes.contains(&(thief, CloseReason::Refused)));
    assert!(h.is_open(holder));
    assert!(!h.closes.iter().any(|&(c, _)| c == holder), "{:?}", h.closes);
}

#[test]
fn a_token_holder_that_reconnects_gets_its_seat_back() {
    let mut h = with_tokens(Setup::new(3, 3, 3, 8));
    h.run_until(|h| h.in_flight_to(0).contains(&ty::CONFIG));
    h.outage(0, Duration::from_secs(2));
    h.run();
    assert_eq!(h.commits.len(), 1, "{:?}", h.events);
    assert_eq!(h.commits[0].peers, vec![0, 1, 2]);
    assert_eq!(h.commits[0].commit.reconnected, vec![ClientId::new(1).unwrap()]);
}

#[test]
fn a_violator_waits_behind_honest_clients_for_the_next_round() {
    // Seven clients, cohorts of six: peer 6 waits while 0–5 take round 1, in which peer 0
    // breaks the protocol. Round 2 seats the six who did not, however early 0 asks.
    let mut setup = Setup::new(7, 6, 4, 16);
    setup.session.rounds = 2;
    let mut h = setup.start();
    h.tamper = Some(Box::new(|i, frame| {
        if i == 0 && frame.get(1) == Some(&ty::SHARE_KEYS) {
            *frame = ClientServiceMessage::UploadReady.encode();
        }
        true
    }));
    h.run();
    assert_eq!(h.commits.len(), 2, "{:?}", h.events);
    assert_eq!(h.commits[0].peers, vec![1, 2, 3, 4, 5]);
    assert!(!h.commits[1].peers.contains(&0), "{:?}", h.commits[1].peers);
    assert_eq!(h.commits[1].peers.len(), 6);
}

/// Peer `i`'s identity says hello on a new connection; the server must refuse it as banned.
fn assert_refused_as_banned(h: &mut harness::Harness, i: usize) {
    let again = h.connect_raw_as(h.peers[i].certificate.clone());
    h.send_raw(again, ClientServiceMessage::Hello { token: String::new(), identity: [3; 16], resume: None }.encode());
    h.run();
    let received = h.raw_received(again);
    assert!(
        matches!(&received[..], [FromServer::Service(ServerServiceMessage::Refused { reason })] if reason.starts_with("banned")),
        "{received:?}"
    );
}

#[test]
fn a_repeat_offender_is_banned_for_the_session_with_a_typed_reason() {
    let mut setup = Setup::new(6, 5, 3, 16);
    setup.session.rounds = 2;
    setup.session.ban_after = 1;
    let mut h = setup.start();
    h.tamper = Some(Box::new(|i, frame| {
        if i == 0 && frame.get(1) == Some(&ty::SHARE_KEYS) {
            *frame = ClientServiceMessage::UploadReady.encode();
        }
        true
    }));
    let offender = h.peers[0].conn.unwrap();
    h.run_until(|h| h.commits.len() == 1);
    // It cannot come back under the same identity.
    assert_refused_as_banned(&mut h, 0);
    assert_eq!(h.commits.len(), 2, "{:?}", h.events);
    let bans = &h.commits[0].commit.banned;
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].seat, ClientId::new(1));
    assert!(matches!(&bans[0].reason, Offence::Violation(v) if v.contains("UploadReady")), "{bans:?}");
    assert!(h.commits[1].commit.banned.is_empty());
    assert!(h.closes.contains(&(offender, CloseReason::Banned)), "{:?}", h.closes);
    assert_eq!(h.commits[1].peers, vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_flood_of_connections_that_never_say_hello_is_closed_and_honest_clients_finish() {
    let mut h = Setup::new(5, 5, 4, 16).build();
    let flood: Vec<u64> = (0..1000).map(|_| h.connect_raw()).collect();
    assert_eq!(h.server.unadmitted(), 1000);
    h.join(0);
    h.run_until(|h| h.closes.len() >= 1000);
    assert_eq!(h.server.unadmitted(), 0);
    for &conn in &flood {
        assert!(h.closes.contains(&(conn, CloseReason::HelloTimeout)));
    }
    for i in 1..5 {
        h.join(i);
    }
    h.run();
    assert_eq!(h.commits.len(), 1);
    assert_eq!(h.commits[0].peers, vec![0, 1, 2, 3, 4]);
    // Only the honest clients were ever admitted (and given an admitted client's windows).
    assert_eq!(h.admitted.len(), 5);
    assert!(flood.iter().all(|&c| !h.admitted.contains(&c) && !h.is_open(c)));
}

#[test]
fn a_timed_ban_holds_for_its_duration_and_then_ends() {
    let mut setup = Setup::new(6, 5, 3, 16);
    setup.session.rounds = 2;
    setup.session.ban_after = 1;
    setup.session.ban_duration = Some(Duration::from_secs(600));
    let mut h = setup.start();
    h.tamper = Some(Box::new(|i, frame| {
        if i == 0 && frame.get(1) == Some(&ty::SHARE_KEYS) {
            *frame = ClientServiceMessage::UploadReady.encode();
        }
        true
    }));
    h.run_until(|h| h.events.iter().any(|e| matches!(e, SessionEvent::Banned(_))));
    let banned_at = h.now;
    let Some(SessionEvent::Banned(ban)) = h.events.iter().find(|e| matches!(e, SessionEvent::Banned(_))) else {
        unreachable!()
    };
    assert_eq!(ban.duration, Some(Duration::from_secs(600)));
    let identity = ClientIdentity::of_certificate(&h.peers[0].certificate);
    assert_eq!(ban.identity, identity);
    assert!(h.server.is_banned(&identity, banned_at + Duration::from_secs(599)));
    assert!(!h.server.is_banned(&identity, banned_at + Duration::from_secs(600)));
    h.run();
    assert_eq!(h.commits.len(), 2, "the others finish without it");
}

#[test]
fn a_ban_kept_from_before_a_restart_refuses_the_identity_until_it_passes() {
    // The server shell gives a restarted session the bans it kept (`bans.json`).
    let mut h = Setup::new(5, 5, 4, 16).build();
    let identity = ClientIdentity::of_certificate(&h.peers[0].certificate);
    let now = h.now;
    h.server.restore_ban(identity, Offence::StalledUpload, Some(Duration::from_secs(60)), now);
    assert_refused_as_banned(&mut h, 0);
    // Once it has passed, the client is admitted and takes part.
    h.now += Duration::from_secs(61);
    h.join_all();
    h.run();
    assert_eq!(h.commits.len(), 1);
    assert!(h.peers[0].completed(1), "{:?}", h.peers[0].events);
}

#[test]
fn a_client_the_protocol_blames_for_a_bad_envelope_is_banned_like_any_violator() {
    // Peer 0's envelopes do not open (the last byte of its last envelope's tag, just
    // before that envelope's signature flag — the frame's last byte — is flipped). Its
    // neighbours complain, the server proves the envelope bad and drops the sender: an
    // offence of its identity, so it is banned.
    let mut setup = Setup::new(6, 5, 3, 16);
    setup.session.rounds = 2;
    setup.session.ban_after = 1;
    let mut h = with_tokens(setup);
    h.tamper = Some(Box::new(|i, frame| {
        if i == 0
            && frame.get(1) == Some(&ty::SHARE_KEYS)
            && let Some(tag_end) = frame.len().checked_sub(2)
        {
            frame[tag_end] ^= 1;
        }
        true
    }));
    h.run();
    assert_eq!(h.commits.len(), 2, "{:?}", h.events);
    let bans: Vec<_> = h.commits.iter().flat_map(|c| c.commit.banned.clone()).collect();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].identity, ClientIdentity::of_token("t0"));
    assert!(matches!(&bans[0].reason, Offence::Violation(v) if v.contains("envelope")), "{bans:?}");
    assert!(h.commits.iter().all(|c| !c.peers.contains(&0)), "the offender's input is in no sum");
}

#[test]
fn a_certified_client_whose_envelope_signature_fails_is_banned_before_anything_is_relayed() {
    // Under certificates and the default policy, peer 0 alters its last envelope's
    // signature (the last byte of its ShareKeys). The server checks every envelope's
    // signature on receipt and drops peer 0 before relaying any of them: nobody has
    // anything to complain about, and the dropped sender is an offender like any other.
    let complaints = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = complaints.clone();
    let mut setup = Setup::new(7, 6, 4, 16);
    setup.session.rounds = 2;
    setup.session.ban_after = 1;
    let mut h = setup.build();
    let identity = ClientIdentity::of_certificate(&h.peers[0].certificate);
    h.tamper = Some(Box::new(move |i, frame| {
        if frame.get(1) == Some(&ty::COMPLAINTS) {
            seen.set(seen.get() + 1);
        }
        if i == 0
            && frame.get(1) == Some(&ty::SHARE_KEYS)
            && let Some(last) = frame.last_mut()
        {
            *last ^= 1;
        }
        true
    }));
    h.join_all();
    h.run();
    assert_eq!(h.commits.len(), 2, "{:?}", h.events);
    let bans: Vec<_> = h.commits.iter().flat_map(|c| c.commit.banned.clone()).collect();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].identity, identity);
    assert!(matches!(&bans[0].reason, Offence::Violation(v) if v.contains("signature of the envelope")), "{bans:?}");
    assert_eq!(complaints.get(), 0, "no envelope that fails its signature is relayed");
    assert!(h.commits.iter().all(|c| !c.peers.contains(&0)), "the offender's input is in no sum");
}

#[test]
fn after_a_ban_has_passed_one_more_offence_bans_again() {
    let mut setup = Setup::new(6, 5, 3, 16);
    setup.session.ban_after = 2;
    let mut h = setup.build();
    let identity = ClientIdentity::of_certificate(&h.peers[0].certificate);
    let now = h.now;
    h.server.restore_ban(identity, Offence::StalledUpload, Some(Duration::from_secs(60)), now);
    h.now += Duration::from_secs(61);
    h.tamper = Some(Box::new(|i, frame| {
        if i == 0 && frame.get(1) == Some(&ty::SHARE_KEYS) {
            *frame = ClientServiceMessage::UploadReady.encode();
        }
        true
    }));
    h.join_all();
    h.run();
    let bans: Vec<_> = h.commits.iter().flat_map(|c| c.commit.banned.clone()).collect();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].identity, identity);
    assert_eq!(bans[0].offences, 3, "the first new offence, on top of the two the old ban counted");
    assert!(h.server.is_banned(&identity, h.now));
}

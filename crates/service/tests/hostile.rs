//! Hostile clients among honest ones (issue 12, "What to build" 6): "50 hostile clients
//! of each kind among 500 honest ones: slow readers, silent uploaders, garbage frames,
//! wrong shares, bad envelopes, reconnect storms, a flood of connections that never send
//! a Hello. Honest clients' rounds complete and, with DP off, the released sum is exactly
//! the honest survivors' sum."
//!
//! Played in the deterministic harness: the real [`privagg_service::ServerSession`], the
//! real client state machines, a simulated clock. Each hostile kind is a real deviation of
//! a real client (its frames rewritten or swallowed on the way out, its downloads never
//! read, its connection cut), so a run is exact and repeats with its seed. The CI tests
//! run a small scale; `hostile_campaign` (ignored) runs the scale, see
//! RELIABILITY.md ("Hostile clients").
//!
//! # Who may be in the sum
//!
//! The protocol sums every client whose masked input it accepted (U3), whatever that
//! client does afterwards: its self mask is then rebuilt from its neighbours' shares.
//! So, of the hostile kinds:
//!
//! * **slow readers** stall on their `Config`, before they advertise keys: never in a sum
//!   (the attempt they were seated in aborts — the cohort cannot be labelled without
//!   their nonce — and the retry goes on without them);
//! * **silent uploaders** never send their masked input: never in a sum (their mask keys
//!   are rebuilt, so the masks they shared with honest clients come out);
//! * **garbage frames** replace their `ShareKeys`: never in a sum (dropped before they
//!   masked anything);
//! * **wrong shares** are sent at unmasking, after the liar's masked input was accepted:
//!   its input *is* in that round's sum, legitimately — it is its own, correctly masked
//!   contribution — and the sum must still be exact including it; the wrong shares are
//!   caught against the owners' Feldman commitments and never used;
//! * **bad envelopes** (every envelope of its `ShareKeys` altered after it was signed):
//!   the server finds the signatures wrong and drops the sender before relaying them.
//!   (An uncertified sender's are relayed; each recipient complains, the server proves
//!   the envelope bad and drops the sender; a sender whose masked input beat the first
//!   complaint stays in that sum, its mask with each complainer removed with the seed
//!   the complaint reveals — `protocol/tests/complaints.rs`.) Never in a sum here, as
//!   every harness client signs;
//! * **reconnect storms** (several connections claiming the identity in the lobby, then
//!   the connection cut at every message of the round): a client that reconnects gets
//!   its seat back by design, so a storm client that otherwise follows the protocol is in
//!   the sum, legitimately, and is not punished;
//! * **a Hello flood** never gets an identity, let alone a seat.
//!
//! Every test asserts behaviour: who is in each sum (every honest client, none of the
//! kinds that may not be), the released words equal to the sum of those clients' encoded
//! inputs, who was dropped and banned and why. No assertion depends on timing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod harness;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use harness::{Harness, Setup, ty};
use privagg_protocol::graph_params::ThreatModel;
use privagg_protocol::{AdversaryClass, ClientMessage, Limits};
use privagg_service::frame::MAX_CONTROL_FRAME;
use privagg_service::message::ClientServiceMessage;
use privagg_service::server::CloseReason;
use privagg_service::{ClientEvent, ClientIdentity, Offence, SessionEnd, SessionEvent};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A kind of hostile client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    /// Never reads a frame from its `Config` on; the shell's write deadline fires.
    SlowReader,
    /// Asks for an upload slot and never sends its masked input.
    SilentUploader,
    /// Sends undecodable bytes (or a frame above the limit) in place of its `ShareKeys`.
    GarbageFrames,
    /// Reveals wrong Shamir shares at unmasking.
    WrongShares,
    /// Seals envelopes that do not open (a bit of each flipped).
    BadEnvelopes,
    /// Opens several connections under its identity, then drops and reconnects at every
    /// message of the round.
    ReconnectStorm,
    /// Connections that never send a `Hello`.
    HelloFlood,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::SlowReader,
        Kind::SilentUploader,
        Kind::GarbageFrames,
        Kind::WrongShares,
        Kind::BadEnvelopes,
        Kind::ReconnectStorm,
        Kind::HelloFlood,
    ];

    /// Whether clients of this kind are admitted (peers of the harness): all but the flood.
    fn is_peer(self) -> bool {
        self != Kind::HelloFlood
    }

    /// Whether a client of this kind may legitimately be in a sum (see the module docs).
    fn may_be_in_sum(self) -> bool {
        matches!(self, Kind::WrongShares | Kind::ReconnectStorm)
    }

    /// Whether the service must ban a client of this kind (with `ban_after` = 1).
    /// Reconnecting is not an offence; the flood never had an identity.
    fn is_banned(self) -> bool {
        !matches!(self, Kind::ReconnectStorm | Kind::HelloFlood)
    }

    /// Whether `offence` is the typed reason a ban of this kind must give.
    fn is_reason(self, offence: &Offence) -> bool {
        let violation = |needle: &str| matches!(offence, Offence::Violation(v) if v.contains(needle));
        match self {
            Kind::SlowReader => *offence == Offence::StalledDownload,
            Kind::SilentUploader => *offence == Offence::StalledUpload,
            Kind::GarbageFrames => violation("malformed") || violation("exceeds the current limit"),
            Kind::WrongShares => violation("does not verify against its commitments"),
            Kind::BadEnvelopes => violation("envelope"),
            Kind::ReconnectStorm | Kind::HelloFlood => false,
        }
    }
}

/// A hostile mix: who takes part, and what the clients assume.
#[derive(Clone, Debug)]
struct Scenario {
    /// Honest clients.
    honest: usize,
    /// Hostile clients of each kind.
    per_kind: usize,
    /// The hostile kinds present.
    kinds: Vec<Kind>,
    /// Seeds the delivery order of simultaneous frames and the garbage bytes.
    seed: u64,
    /// What every client assumes the server may do; the graph is planned for it. Harness
    /// clients are certified and sign their envelopes under either policy, so this kind's
    /// envelopes (altered after signing) fail their signature at the server, which drops
    /// the sender before relaying them.
    server: AdversaryClass,
    /// Fraction of each cohort the graph is planned to lose (hostile clients count).
    dropout: f64,
    /// Rounds in the session.
    rounds: u64,
    /// Model dimension.
    dim: usize,
}

impl Scenario {
    /// `per_kind` of each of `kinds` among `honest`, against the server `server`, two rounds
    /// (the second shows the banned stay out), dimension 8.
    fn new(honest: usize, per_kind: usize, kinds: &[Kind], server: AdversaryClass) -> Self {
        Self { honest, per_kind, kinds: kinds.to_vec(), seed: 12, server, dropout: 0.3, rounds: 2, dim: 8 }
    }

    /// The kind of peer `i` (`None`: honest). Honest peers come first, then a block of
    /// `per_kind` peers per admitted kind.
    fn roles(&self) -> Vec<Option<Kind>> {
        let mut roles = vec![None; self.honest];
        for &kind in self.kinds.iter().filter(|k| k.is_peer()) {
            roles.extend(std::iter::repeat_n(Some(kind), self.per_kind));
        }
        roles
    }
}

/// What a kind's clients went through, for the assertions and the report.
#[derive(Clone, Debug, Default)]
struct KindOutcome {
    /// Clients (or connections, for the flood).
    hostile: usize,
    /// Dropped from a round (or, for the flood, closed without admission).
    dropped: usize,
    /// Banned, with the right reason.
    banned: usize,
    /// In at least one released sum.
    in_sum: usize,
}

/// What a run produced.
struct Outcome {
    kinds: BTreeMap<Kind, KindOutcome>,
    /// Rounds committed, and the attempt that completed each.
    attempts: Vec<u32>,
    /// Each committed round's cohort, neighbours k and threshold t.
    graphs: Vec<(u32, u32, u32)>,
    /// Honest clients missing from a round's sum (a round each). The report shows it; a
    /// run that returns has none (it is asserted).
    honest_lost: usize,
    /// Every released sum equal, word for word, to its included inputs' sum (likewise
    /// asserted: always true in a run that returns).
    exact: bool,
    /// Wall time of the run (reported, never asserted).
    took: Duration,
}

/// Runs `s` to the end of its session and checks every guarantee; panics on the first
/// broken one. Returns the harness and the outcome.
fn run(s: &Scenario) -> (Harness, Outcome) {
    let started = Instant::now();
    let roles = s.roles();
    let peers = roles.len();
    let mut setup = Setup::new(peers, peers as u32, s.honest as u32, s.dim);
    setup.session.rounds = s.rounds;
    // One offence bans: each hostile client is caught once, and must be banned then.
    setup.session.ban_after = 1;
    // Uploads are granted 64 at a time; a grant not used within 2 s is taken back.
    setup.session.upload_slots = 64;
    setup.session.upload_timeout = Some(Duration::from_secs(2));
    // A round that cannot complete in three counted attempts ends the session: the test
    // then fails.
    setup.session.max_round_attempts = 3;
    setup.reorder_seed = Some(s.seed);
    setup.graph = Some(ThreatModel { corrupt_fraction: 0.05, dropout_fraction: s.dropout, adversary: s.server });
    let hello_timeout = setup.session.hello_timeout;
    let mut h = setup.build();
    for i in 0..peers {
        h.configure(i, |c| c.policy.server = s.server);
    }
    let of_kind = |kind: Kind| (0..peers).filter(|&i| roles[i] == Some(kind)).collect::<Vec<_>>();
    h.slow_readers = of_kind(Kind::SlowReader).into_iter().collect();
    h.tamper = Some(tamper(roles.clone(), s.seed));

    // The flood: connections that never say hello, opened before anyone else.
    let flood_ends = h.now + hello_timeout;
    let flood: Vec<u64> =
        if s.kinds.contains(&Kind::HelloFlood) { (0..s.per_kind).map(|_| h.connect_raw()).collect() } else { vec![] };
    h.join_all();
    let storm = of_kind(Kind::ReconnectStorm);
    // Storm clients are admitted first, so that their duplicates come after them.
    h.run_until(|h| storm.iter().all(|&i| h.peers[i].events.contains(&ClientEvent::Admitted)));
    // Reconnect storms, first in the lobby: three more connections under each storm
    // client's identity (its certificate, another random client identity), each replacing
    // the one before, then the client itself again.
    let mut duplicates = Vec::new();
    for &i in &storm {
        for d in 0..3u8 {
            let conn = h.connect_raw_as(h.peers[i].certificate.clone());
            let hello = ClientServiceMessage::Hello { token: String::new(), identity: [0xd0 + d; 16], resume: None };
            h.send_raw(conn, hello.encode());
            duplicates.push(conn);
        }
    }
    if !storm.is_empty() {
        // Each duplicate is admitted in turn (and replaces the connection before it); the
        // client's own connection is gone once the first is.
        h.run_until(|h| duplicates.iter().all(|c| h.admitted.contains(c)));
        h.run_until(|h| storm.iter().all(|&i| h.peers[i].conn.is_none()));
        for &i in &storm {
            h.join(i);
        }
    }
    drive(&mut h, &storm);

    let outcome = check(&h, s, &roles, (&flood, flood_ends), &duplicates, started);
    (h, outcome)
}

/// The hostile clients' outgoing frames: silent uploaders swallow their masked input,
/// garbage senders replace their `ShareKeys`, liars corrupt their unmask response, bad
/// envelopes break every envelope (so that an honest neighbour is sure to complain).
fn tamper(roles: Vec<Option<Kind>>, seed: u64) -> harness::Tamper {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Box::new(move |i, frame| {
        let kind = roles.get(i).copied().flatten();
        match (kind, frame.get(1).copied()) {
            (Some(Kind::SilentUploader), Some(ty::MASKED_INPUT)) => return false,
            (Some(Kind::GarbageFrames), Some(ty::SHARE_KEYS)) if i % 2 == 0 => {
                // Random bytes behind a message type nobody defines: undecodable.
                let mut garbage: Vec<u8> = (0..frame.len()).map(|_| rng.random()).collect();
                garbage[0] = frame[0];
                garbage[1] = 0xee;
                *frame = garbage;
            }
            // More than an admitted client may send outside an upload grant.
            (Some(Kind::GarbageFrames), Some(ty::SHARE_KEYS)) => *frame = vec![0x5a; MAX_CONTROL_FRAME + 1],
            (Some(Kind::WrongShares), Some(ty::UNMASK_RESPONSE)) => {
                let Ok(ClientMessage::UnmaskResponse(mut r)) =
                    ClientMessage::decode(frame.as_slice(), &Limits::default())
                else {
                    panic!("peer {i}'s unmask response does not decode");
                };
                // Every share doubled: wrong unless zero (probability 2⁻²⁵²).
                for share in r.self_mask_shares.iter_mut().chain(r.mask_key_shares.iter_mut()) {
                    share.value = share.value + share.value;
                }
                *frame = ClientMessage::UnmaskResponse(r).encode();
            }
            (Some(Kind::BadEnvelopes), Some(ty::SHARE_KEYS)) => {
                let Ok(ClientMessage::ShareKeys(mut sk)) = ClientMessage::decode(frame.as_slice(), &Limits::default())
                else {
                    panic!("peer {i}'s ShareKeys does not decode");
                };
                for envelope in &mut sk.envelopes {
                    envelope.sealed[20] ^= 1;
                }
                *frame = ClientMessage::ShareKeys(sk).encode();
            }
            _ => {}
        }
        true
    })
}

/// Runs the session to its end, cutting each storm client's connection once per message
/// type of each attempt while such a message is on its way to it (the client reconnects
/// after the idle timeout and resumes its seat). Once per type: the server resends the
/// frame the cut lost, and cutting at every resend would never end.
fn drive(h: &mut Harness, storm: &[usize]) {
    const CUT_AT: [u8; 4] = [ty::CONFIG, ty::KEY_LIST, ty::FORWARDED_SHARES, ty::UNMASK_REQUEST];
    let mut cut: HashSet<(usize, usize, u8)> = HashSet::new();
    for _ in 0..50_000_000u64 {
        if !h.step() {
            return;
        }
        if storm.is_empty() {
            continue;
        }
        let attempt = h.events.iter().filter(|e| matches!(e, SessionEvent::RoundStarted { .. })).count();
        for &i in storm {
            if h.peers[i].conn.is_none() {
                continue;
            }
            let in_flight = h.in_flight_to(i);
            if let Some(&message) = CUT_AT.iter().find(|m| in_flight.contains(m))
                && cut.insert((i, attempt, message))
            {
                h.outage(i, Duration::from_millis(500));
            }
        }
    }
    panic!("the session did not settle");
}

/// Checks every guarantee of the run and counts what happened to each kind.
fn check(
    h: &Harness,
    s: &Scenario,
    roles: &[Option<Kind>],
    (flood, flood_ends): (&[u64], Instant),
    duplicates: &[u64],
    started: Instant,
) -> Outcome {
    // Every round completed, within the allowed attempts.
    assert_eq!(h.finished, Some(SessionEnd::Complete { completed_rounds: s.rounds }), "{:?}", h.events);
    assert_eq!(h.commits.len() as u64, s.rounds);

    // Each sum is exact over who is in it, every honest client is in every sum, and no
    // client of a kind that may not be in a sum is.
    let mut honest_lost = 0;
    let mut in_sum: BTreeSet<usize> = BTreeSet::new();
    for (index, c) in h.commits.iter().enumerate() {
        h.assert_exact(index);
        let included: BTreeSet<usize> = c.peers.iter().copied().collect();
        honest_lost += (0..s.honest).filter(|i| !included.contains(i)).count();
        for &i in &included {
            if let Some(kind) = roles[i] {
                assert!(kind.may_be_in_sum(), "round {}: a {kind:?} client (peer {i}) is in the sum", c.commit.round);
            }
        }
        in_sum.extend(included);
    }
    assert_eq!(honest_lost, 0, "honest clients missing from a sum");
    for i in 0..s.honest {
        for round in 1..=s.rounds {
            assert!(h.peers[i].completed(round), "honest peer {i}, round {round}: {:?}", h.peers[i].events);
        }
    }

    // Bans: one per hostile client of a kind that offends, with the right typed reason,
    // and none of anybody else.
    let identity_of = |i: usize| ClientIdentity::of_certificate(&h.peers[i].certificate);
    let bans: Vec<_> = h
        .events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Banned(b) => Some(b),
            _ => None,
        })
        .collect();
    let mut kinds: BTreeMap<Kind, KindOutcome> = BTreeMap::new();
    for (i, kind) in roles.iter().enumerate() {
        let banned: Vec<_> = bans.iter().filter(|b| b.identity == identity_of(i)).collect();
        let Some(kind) = *kind else {
            assert!(banned.is_empty(), "honest peer {i} banned: {banned:?}");
            continue;
        };
        let out = kinds.entry(kind).or_default();
        out.hostile += 1;
        out.in_sum += usize::from(in_sum.contains(&i));
        // Dropped: listed as dropped in a committed round, or a connection the server
        // closed for what it did (an aborted attempt's drops are in no commit).
        let listed = h
            .commits
            .iter()
            .any(|c| c.commit.dropped.iter().any(|d| h.peers[i].seats.get(&c.commit.round) == Some(&d.client.get())));
        let closed = h.closes.iter().any(|(conn, reason)| {
            h.owners.get(conn) == Some(&i)
                && matches!(reason, CloseReason::Stalled | CloseReason::BadFrame | CloseReason::Banned)
        });
        out.dropped += usize::from(listed || closed);
        match (banned.as_slice(), kind.is_banned()) {
            (_, false) => assert!(banned.is_empty(), "a {kind:?} client (peer {i}) banned: {banned:?}"),
            ([ban], true) => {
                assert!(kind.is_reason(&ban.reason), "peer {i} ({kind:?}) banned for {:?}", ban.reason);
                out.banned += 1;
            }
            (other, true) => panic!("peer {i} ({kind:?}) should be banned once: {other:?}"),
        }
        match kind {
            // Reconnecting is allowed: a storm client keeps its seat and is in every sum.
            Kind::ReconnectStorm => {
                for c in &h.commits {
                    assert!(c.peers.contains(&i), "storm peer {i} lost its seat in round {}", c.commit.round);
                }
            }
            _ => assert!(listed || closed, "peer {i} ({kind:?}) was never dropped"),
        }
    }
    // Every duplicate connection of a storm client was replaced by a newer one.
    for &conn in duplicates {
        assert!(h.closes.contains(&(conn, CloseReason::Replaced)), "duplicate {conn}: {:?}", h.closes);
    }
    if !flood.is_empty() {
        let out = kinds.entry(Kind::HelloFlood).or_default();
        out.hostile = flood.len();
        // Closed at the hello timeout — or, if the session was over by then, at its end.
        let reason = if h.now >= flood_ends { CloseReason::HelloTimeout } else { CloseReason::SessionEnded };
        for conn in flood {
            assert!(
                h.closes.contains(&(*conn, reason)),
                "flood connection {conn}: {:?}",
                h.closes.iter().find(|c| c.0 == *conn)
            );
            assert!(!h.admitted.contains(conn), "flood connection {conn} admitted");
        }
        out.dropped = flood.len();
    }
    Outcome {
        kinds,
        attempts: h.commits.iter().map(|c| c.commit.attempt).collect(),
        graphs: h
            .commits
            .iter()
            .map(|c| (c.commit.params.num_clients, c.commit.params.neighbours, c.commit.params.threshold))
            .collect(),
        honest_lost,
        exact: true,
        took: started.elapsed(),
    }
}

/// One line of the report per kind (the table of RELIABILITY.md).
fn report(s: &Scenario, outcome: &Outcome) {
    for (kind, k) in &outcome.kinds {
        println!(
            "| {kind:?} | {} | {} | {} of {} (attempts {:?}) | {} | {} / {} | {} | {} | {} | {:.1} s |",
            k.hostile,
            s.honest,
            outcome.attempts.len(),
            s.rounds,
            outcome.attempts,
            outcome.graphs.iter().map(|(n, k, t)| format!("{n}/{k}/{t}")).collect::<Vec<_>>().join(", "),
            k.dropped,
            k.banned,
            k.in_sum,
            outcome.honest_lost,
            if outcome.exact { "yes" } else { "no" },
            outcome.took.as_secs_f64(),
        );
    }
}

#[test]
fn hostile_clients_of_every_kind_are_dropped_and_the_honest_sums_are_exact() {
    // Five of each kind among fifty honest clients, clients assuming a curious server so
    // that bad envelopes are complained about (see `Scenario::server`).
    let s = Scenario::new(50, 5, &Kind::ALL, AdversaryClass::CuriousServer);
    let (_, outcome) = run(&s);
    report(&s, &outcome);
    for kind in Kind::ALL {
        let k = &outcome.kinds[&kind];
        assert_eq!(k.hostile, 5, "{kind:?}");
        if kind != Kind::ReconnectStorm {
            assert_eq!(k.dropped, 5, "{kind:?}");
        }
    }
}

#[test]
fn under_the_default_policy_every_kind_changes_nothing_for_honest_clients() {
    // The default client policy (a server that may lie about dropouts): certified senders
    // sign their envelopes, so bytes altered after signing (this kind's envelopes) fail
    // their signature at the server, which drops the sender before relaying anything.
    // Validly signed garbage, which recipients complain about under this policy too, is
    // played in `protocol/tests/signed_envelopes.rs`.
    let s = Scenario::new(50, 5, &Kind::ALL, AdversaryClass::SemiMaliciousServer);
    let (_, outcome) = run(&s);
    report(&s, &outcome);
}

#[test]
fn a_hostile_mix_runs_the_same_twice() {
    let s = Scenario { rounds: 1, ..Scenario::new(20, 2, &Kind::ALL, AdversaryClass::CuriousServer) };
    let (a, first) = run(&s);
    let (b, second) = run(&s);
    // Who is in each sum, the attempts, and what happened to each kind: all the same.
    let included = |h: &Harness| h.commits.iter().map(|c| c.peers.clone()).collect::<Vec<_>>();
    assert_eq!(included(&a), included(&b));
    assert_eq!(first.attempts, second.attempts);
    assert_eq!(format!("{:?}", first.kinds), format!("{:?}", second.kinds));
}

/// The scale: `HOSTILE_HONEST` honest clients (500) and `HOSTILE_PER_KIND` (50) of
/// each kind in `HOSTILE_KINDS` (all; a comma-separated list of kind names), one kind at
/// a time unless `HOSTILE_MIX=1`; `HOSTILE_ROUNDS` rounds each (2). Prints a line of the
/// table in RELIABILITY.md per kind:
/// `cargo test -p privagg-service --test hostile -- --ignored --nocapture hostile_campaign`
/// (the test profile builds dependencies at opt-level 3; `--release` works too).
#[test]
#[ignore = "the issue's scale: about five minutes per kind"]
fn hostile_campaign() {
    let var = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let honest = var("HOSTILE_HONEST", 500);
    let per_kind = var("HOSTILE_PER_KIND", 50);
    let kinds: Vec<Kind> = match std::env::var("HOSTILE_KINDS") {
        Ok(list) => Kind::ALL.into_iter().filter(|k| list.split(',').any(|n| n.trim() == format!("{k:?}"))).collect(),
        Err(_) => Kind::ALL.to_vec(),
    };
    let rounds = var("HOSTILE_ROUNDS", 2) as u64;
    let runs: Vec<Vec<Kind>> =
        if var("HOSTILE_MIX", 0) == 1 { vec![kinds] } else { kinds.into_iter().map(|k| vec![k]).collect() };
    println!(
        "| kind | hostile | honest | rounds completed | n/k/t per round | hostile dropped / banned | hostile in a sum | honest lost | sum exact | run time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for kinds in runs {
        // Bad envelopes run with clients that trust the server (a curious server), as they
        // did when only such clients complained (the table in RELIABILITY.md); every
        // harness client is certified and signs, so either way the server now drops the
        // sender of envelopes altered after signing on their signature.
        let server = if kinds.contains(&Kind::BadEnvelopes) {
            AdversaryClass::CuriousServer
        } else {
            AdversaryClass::SemiMaliciousServer
        };
        let mut s = Scenario::new(honest, per_kind, &kinds, server);
        s.rounds = rounds;
        let hostile = per_kind * kinds.iter().filter(|k| k.is_peer()).count();
        // Plan the graph for the hostile share of the cohort, with room to spare.
        s.dropout = (hostile as f64 / (honest + hostile) as f64 + 0.05).min(0.42);
        let (_, outcome) = run(&s);
        report(&s, &outcome);
    }
}

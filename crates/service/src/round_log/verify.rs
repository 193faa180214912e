//! The client's check of the log before a round ([`check`]): what it requires of the
//! server's [`LogProof`] against what it accepted before ([`LogMemory`]) and the key it
//! trusts ([`LogTrust`]), and why it refuses ([`LogRefusal`]).
//!
//! In order (the first failure is reported):
//!
//! 1. a proof is there and decodes;
//! 2. the key: the pinned one, else the one trusted on first use (stored), else — on
//!    first use — the key the proof names, if it is named for this session's log;
//! 3. the checkpoint carries a valid signature by that key, for this session's log;
//! 4. it is not smaller than the checkpoint accepted before (truncation);
//! 5. the consistency proof leads from the accepted checkpoint to it (a fork, or a
//!    rewritten history, fails here; equal sizes need equal roots);
//! 6. it holds exactly the rounds before this one (round − 1 leaves: a stale checkpoint
//!    would hide the latest rounds and their ε);
//! 7. every earlier round the client revealed unmasking shares in is proven included,
//!    by a leaf that describes that round of this session and logs the very attempt the
//!    client revealed its shares in (its instance: the completed attempt, or one of the
//!    attempts the round unmasked) — a server that ran the round twice cannot log only
//!    the other attempt;
//! 8. the latest leaf is proven included, its cumulative ε is not below the one accepted
//!    before (at no looser δ), and it (at a δ no larger than the budget's), plus this
//!    round's ε as the client accounts it, is within the budget.
//!
//! A refusal costs the client one round; what it refused is kept as evidence
//! ([`RefusedCheckpoint`]).

use std::collections::BTreeMap;

use privagg_dp::accountant::DpEvent;
use privagg_log::{Checkpoint, Hash, VerifierKey, leaf_hash, verify_consistency, verify_inclusion};
use serde::{Deserialize, Serialize};

use super::leaf::{LEAF_FORMAT, RoundLeaf, origin};
use super::proof::{LogProof, LogRequest, MAX_PROVEN_ROUNDS};
use crate::privacy::{PrivacyPolicy, PrivacySpent};

/// How a client learns the log's verifier key.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum LogTrust {
    /// Trust the key a session's log first presents, and only that key afterwards (it is
    /// kept in the client's memory). A server that lies from the very first round is not
    /// caught; one that changes its story later is.
    #[default]
    TrustOnFirstUse,
    /// Only this key (the server's `log.pub`, obtained out of band).
    Pinned(VerifierKey),
}

/// What a client keeps of one session's log (in its memory, stored atomically with the
/// rest before anything that depends on it goes out).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogMemory {
    /// The verifier key trusted on first use, `<name>+<id>+<key>`.
    #[serde(default)]
    pub key: Option<String>,
    /// The last checkpoint accepted, as signed (an auditor's `--since`).
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// Its tree size (0: none accepted).
    #[serde(default)]
    pub size: u64,
    /// Its root (hex; `None` with size 0).
    #[serde(default)]
    pub root: Option<String>,
    /// Rounds in which the client revealed unmasking shares and whose inclusion it has
    /// not yet verified, each with the instances (hex SecAgg session ids) of the attempts
    /// it revealed them in: more than one if a server that crashed after the reveal
    /// redid the round. (A memory written with one instance per round still reads.)
    #[serde(default, rename = "unproven_attempts", deserialize_with = "one_or_more_instances")]
    pub unproven: BTreeMap<u64, Vec<String>>,
    /// The cumulative ε and its δ of the latest leaf accepted (DP on): a later one may
    /// not be smaller.
    #[serde(default)]
    pub total: Option<(f64, f64)>,
}

/// Reads [`LogMemory::unproven`] as written now (a list of instances per round) or
/// before (one instance per round).
fn one_or_more_instances<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Instances {
        One(String),
        More(Vec<String>),
    }
    let read = BTreeMap::<u64, Instances>::deserialize(d)?;
    Ok(read
        .into_iter()
        .map(|(round, i)| match i {
            Instances::One(one) => (round, vec![one]),
            Instances::More(more) => (round, more),
        })
        .collect())
}

impl LogMemory {
    /// The request for a proof from this memory, for session `session`: the oldest
    /// [`MAX_PROVEN_ROUNDS`] unproven rounds, strictly ascending (the later ones are asked
    /// for once these are proven).
    pub fn request(&self, session: [u8; 16]) -> LogRequest {
        LogRequest { session, size: self.size, rounds: self.unproven.keys().take(MAX_PROVEN_ROUNDS).copied().collect() }
    }

    fn root(&self) -> Result<Hash, LogRefusal> {
        match &self.root {
            None => Ok(privagg_log::root(&[])),
            Some(hex_root) => hex::decode(hex_root)
                .ok()
                .and_then(|r| Hash::try_from(r).ok())
                .ok_or_else(|| LogRefusal::Memory("the stored root is not 32 bytes of hex".into())),
        }
    }
}

/// Most refused checkpoints a client keeps as evidence (the oldest go first).
pub const MAX_REFUSED: usize = 8;

/// A checkpoint a client refused, kept as evidence: with the one it held before (both
/// signed by the server's log key), an auditor can show the server contradicted itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusedCheckpoint {
    /// The training session (hex).
    pub session: String,
    /// The round the checkpoint came with.
    pub round: u64,
    /// The verifier key the proof presented.
    pub key: String,
    /// The refused checkpoint, as signed.
    pub checkpoint: String,
    /// The checkpoint the client held then, as signed (`None`: none yet).
    pub held: Option<String>,
    /// Why it was refused (the [`LogRefusal`]'s text: public facts only).
    pub reason: String,
}

impl RefusedCheckpoint {
    /// The evidence of refusing `proof` (of `session`, before `round`) for `why`, while
    /// holding `memory`.
    pub fn new(session: [u8; 16], round: u64, proof: &LogProof, memory: &LogMemory, why: &LogRefusal) -> Self {
        Self {
            session: hex::encode(session),
            round,
            key: proof.key.clone(),
            checkpoint: proof.checkpoint.clone(),
            held: memory.checkpoint.clone(),
            reason: why.to_string(),
        }
    }
}

/// Why a client refused the server's round log (no secret in any of them: sizes, rounds
/// and ε are public).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LogRefusal {
    /// The server sent no proof of its round log.
    #[error("the server proved nothing of its round log")]
    Missing,
    /// The proof does not parse.
    #[error("malformed round-log proof: {0}")]
    Malformed(String),
    /// The client's own memory of the log is unusable.
    #[error("the stored round-log state is unusable: {0}")]
    Memory(String),
    /// No key to verify with (first use, and the presented key is not this log's), or
    /// the checkpoint carries no valid signature by the trusted key.
    #[error("the round log's checkpoint is not signed by the trusted key: {0}")]
    BadSignature(String),
    /// The checkpoint is of another log than this session's.
    #[error("the checkpoint is of log {got:?}, not {expected:?}")]
    WrongLog {
        /// The checkpoint's origin.
        got: String,
        /// This session's.
        expected: String,
    },
    /// The log is smaller than the checkpoint the client accepted before.
    #[error("the round log was truncated: it holds {presented} rounds, this client accepted {held} before")]
    Truncated {
        /// The size the client accepted.
        held: u64,
        /// The size presented.
        presented: u64,
    },
    /// The client asked (in its `Ready`) about another session's log than the one the
    /// server now runs, in which it holds a checkpoint: the proof cannot start from it.
    /// The client asks about this session next time and resumes its memory of it.
    #[error("this client asked about another session's round log; it holds {held} rounds of this one and asks again")]
    SessionSwitched {
        /// The size the client holds of this session's log.
        held: u64,
    },
    /// The log does not extend the checkpoint the client accepted before.
    #[error("the round log of {presented} rounds does not extend the {held} this client accepted (a fork)")]
    Forked {
        /// The size the client accepted.
        held: u64,
        /// The size presented.
        presented: u64,
    },
    /// The log does not hold every round before this one.
    #[error("round {round} comes with a log of {size} rounds, not {}", round.saturating_sub(1))]
    Stale {
        /// The round configured.
        round: u64,
        /// The log's size.
        size: u64,
    },
    /// A round the client took part in, or the latest round, is not proven included.
    #[error("round {round} is not proven in the round log: {why}")]
    NotIncluded {
        /// The round.
        round: u64,
        /// What is wrong.
        why: String,
    },
    /// The latest leaf's privacy figures are missing in a round with DP, or impossible
    /// (not finite, negative, a round's ε above the total, δ outside (0, 1)).
    #[error("the round log's privacy figures for round {round} are {why}")]
    Implausible {
        /// The latest logged round.
        round: u64,
        /// What is wrong.
        why: String,
    },
    /// The latest leaf's cumulative ε is below the one this client accepted before, or
    /// at a looser δ: the log took back privacy it had spent.
    #[error(
        "the round log's cumulative ε fell to {logged} (δ = {logged_delta}) from the {held} (δ = {held_delta}) accepted before"
    )]
    EpsilonDecreased {
        /// The cumulative ε logged now.
        logged: f64,
        /// Its δ.
        logged_delta: f64,
        /// The cumulative ε accepted before.
        held: f64,
        /// Its δ.
        held_delta: f64,
    },
    /// The logged cumulative ε, with this round's, exceeds the client's budget.
    #[error(
        "the round log's ε = {logged:.3} (at δ = {logged_delta}) with this round's would reach {would_reach:.3}, above the budget of {max_epsilon}"
    )]
    Budget {
        /// The cumulative ε the latest leaf logs.
        logged: f64,
        /// Its δ.
        logged_delta: f64,
        /// With this round's ε (basic composition).
        would_reach: f64,
        /// The budget.
        max_epsilon: f64,
    },
}

/// What the check of a round's log looks at.
pub struct LogCheck<'a> {
    /// The `Config`'s client data, decoded (`None`: absent).
    pub proof: Option<&'a LogProof>,
    /// The round's training session.
    pub session: [u8; 16],
    /// The round configured.
    pub round: u64,
    /// How the key is trusted.
    pub trust: &'a LogTrust,
    /// What the client accepted before, in this session.
    pub memory: &'a LogMemory,
    /// The session the client's `Ready` asked about (its request's), or `None`.
    pub asked: Option<[u8; 16]>,
    /// The client's privacy policy (its budget).
    pub policy: &'a PrivacyPolicy,
    /// This round's DP event as the client accounts it (`None`: without DP).
    pub event: Option<&'a DpEvent>,
}

/// Checks the log before round `check.round` (the steps of the module's docs); returns
/// the memory to keep once the round goes ahead: the new checkpoint accepted, the key
/// trusted, the rounds proven forgotten.
pub fn check(check: &LogCheck<'_>) -> Result<LogMemory, LogRefusal> {
    let proof = check.proof.ok_or(LogRefusal::Missing)?;
    let expected = origin(&hex::encode(check.session));
    let memory = check.memory;
    let key_text = match (check.trust, &memory.key) {
        (LogTrust::Pinned(key), _) => key.to_string(),
        (LogTrust::TrustOnFirstUse, Some(key)) => key.clone(),
        (LogTrust::TrustOnFirstUse, None) => proof.key.clone(),
    };
    let key = VerifierKey::parse(&key_text).map_err(|e| LogRefusal::BadSignature(e.to_string()))?;
    if key.name() != expected {
        return Err(LogRefusal::BadSignature(format!("the key is named {:?}, not {expected:?}", key.name())));
    }
    let checkpoint =
        Checkpoint::verify(&proof.checkpoint, &key).map_err(|e| LogRefusal::BadSignature(e.to_string()))?;
    if checkpoint.origin != expected {
        return Err(LogRefusal::WrongLog { got: checkpoint.origin, expected });
    }
    let (held, presented) = (memory.size, checkpoint.size);
    if presented < held {
        return Err(LogRefusal::Truncated { held, presented });
    }
    let forked = LogRefusal::Forked { held, presented };
    let (Ok(first), Ok(second)) = (usize::try_from(held), usize::try_from(presented)) else { return Err(forked) };
    if proof.from != held && held > 0 && check.asked != Some(check.session) {
        return Err(LogRefusal::SessionSwitched { held });
    }
    if proof.from != held
        || verify_consistency(first, second, &memory.root()?, &checkpoint.root, &proof.consistency).is_err()
    {
        return Err(forked);
    }
    if presented != check.round.saturating_sub(1) {
        return Err(LogRefusal::Stale { round: check.round, size: presented });
    }
    let proven = |round: u64| -> Result<RoundLeaf, LogRefusal> {
        let not_included = |why: &str| LogRefusal::NotIncluded { round, why: why.into() };
        let index = round.checked_sub(1).filter(|&i| i < presented).ok_or_else(|| not_included("beyond the log"))?;
        let entry = proof.leaves.iter().find(|l| l.index == index).ok_or_else(|| not_included("no proof sent"))?;
        let (Ok(i), Ok(size)) = (usize::try_from(index), usize::try_from(presented)) else {
            return Err(not_included("out of range"));
        };
        verify_inclusion(&leaf_hash(&entry.leaf), i, size, &entry.path, &checkpoint.root)
            .map_err(|_| not_included("the inclusion proof does not verify"))?;
        let leaf = RoundLeaf::decode(&entry.leaf).map_err(|_| not_included("the leaf does not parse"))?;
        // Two encodings of one leaf would let a log show different bytes to different
        // readers under one tree: only the canonical one counts.
        if leaf.encode().ok().as_deref() != Some(entry.leaf.as_slice()) {
            return Err(not_included("the leaf is not in its canonical encoding"));
        }
        if leaf.format != LEAF_FORMAT || leaf.round != round || leaf.session != hex::encode(check.session) {
            return Err(not_included("the leaf describes another round"));
        }
        Ok(leaf)
    };
    let mut unproven = memory.unproven.clone();
    for (&round, instances) in memory.unproven.iter().filter(|&(&r, _)| r < check.round) {
        let leaf = proven(round)?;
        if !instances.iter().all(|instance| leaf.logs_instance(instance)) {
            let why = "the leaf does not log the attempt this client revealed its shares in".into();
            return Err(LogRefusal::NotIncluded { round, why });
        }
        unproven.remove(&round);
    }
    let mut total = memory.total;
    if presented > 0 {
        let latest = proven(presented)?;
        check_budget(presented, latest.privacy.as_ref(), check)?;
        total = latest.privacy.map(|p| (p.epsilon_total, p.delta)).or(total);
    }
    Ok(LogMemory {
        key: Some(key_text),
        checkpoint: Some(proof.checkpoint.clone()),
        size: presented,
        root: Some(hex::encode(checkpoint.root)),
        unproven,
        total,
    })
}

/// Step 8: the logged cumulative ε (at δ_L ≤ the budget's δ, so no smaller than the ε
/// at the budget's δ) plus this round's ε at the budget's δ, composed by addition.
/// A round with DP needs the logged figures (a server that left them out would hide its
/// ε), and they must be possible ones.
fn check_budget(
    latest: u64,
    privacy: Option<&super::leaf::LeafPrivacy>,
    check: &LogCheck<'_>,
) -> Result<(), LogRefusal> {
    let implausible = |why: &str| LogRefusal::Implausible { round: latest, why: why.into() };
    let Some(p) = privacy else {
        return match (check.event, check.memory.total) {
            (Some(_), _) => Err(implausible("missing, in a session with DP")),
            (None, Some(_)) => Err(implausible("missing, after earlier rounds logged them")),
            (None, None) => Ok(()),
        };
    };
    let finite = [p.epsilon_round, p.epsilon_total, p.delta].iter().all(|v| v.is_finite());
    if !(finite && 0.0 <= p.epsilon_round && p.epsilon_round <= p.epsilon_total && 0.0 < p.delta && p.delta < 1.0) {
        return Err(implausible(&format!(
            "impossible (ε for the round {}, in total {}, δ {})",
            p.epsilon_round, p.epsilon_total, p.delta
        )));
    }
    if let Some((held, held_delta)) = check.memory.total
        && !(p.epsilon_total >= held && p.delta <= held_delta)
    {
        return Err(LogRefusal::EpsilonDecreased { logged: p.epsilon_total, logged_delta: p.delta, held, held_delta });
    }
    let Some(max_epsilon) = check.policy.max_epsilon else { return Ok(()) };
    let delta = check.policy.budget_delta;
    let this_round = match check.event {
        Some(event) => PrivacySpent::default().epsilon_with(Some(event), delta).unwrap_or(f64::NAN),
        None => 0.0,
    };
    let would_reach = p.epsilon_total + this_round;
    // NaN anywhere counts as a failure.
    let within = p.delta <= delta && would_reach <= max_epsilon;
    if !within {
        return Err(LogRefusal::Budget { logged: p.epsilon_total, logged_delta: p.delta, would_reach, max_epsilon });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use privagg_log::LogKey;

    use super::*;
    use crate::round_log::leaf::{LEAF_FORMAT, LeafPrivacy};
    use crate::round_log::proof::LogState;

    const SESSION: [u8; 16] = [0x11; 16];

    fn leaf(round: u64, privacy: Option<LeafPrivacy>) -> Vec<u8> {
        RoundLeaf {
            format: LEAF_FORMAT.into(),
            software: "test".into(),
            session: hex::encode(SESSION),
            round,
            attempt: 1,
            instance: hex::encode([round as u8; 32]),
            unmasked: vec![hex::encode([round as u8; 32])],
            participants: 3,
            neighbours: 2,
            threshold: 2,
            bits: 20,
            survivors: String::new(),
            survivor_count: 3,
            denominator: 3.0,
            model_sha256: String::new(),
            privacy,
        }
        .encode()
        .unwrap()
    }

    /// The check of round 2 by a new client, the log holding round 1 with `logged`
    /// (ε_total, δ), this round accounted as `event`.
    fn check_with(logged: (f64, f64), event: Option<&DpEvent>) -> Result<LogMemory, LogRefusal> {
        let key = LogKey::generate(&origin(&hex::encode(SESSION))).unwrap();
        let privacy =
            LeafPrivacy { delta: logged.1, releases: Vec::new(), epsilon_round: 1.0, epsilon_total: logged.0 };
        let log = LogState::with_leaves(SESSION, &key, vec![leaf(1, Some(privacy))]);
        let proof = log.prove(&LogRequest::default());
        let policy = PrivacyPolicy::default();
        let memory = LogMemory::default();
        check(&LogCheck {
            proof: Some(&proof),
            session: SESSION,
            round: 2,
            trust: &LogTrust::TrustOnFirstUse,
            memory: &memory,
            asked: None,
            policy: &policy,
            event,
        })
    }

    #[test]
    fn the_logged_epsilon_and_this_rounds_must_fit_the_budget_at_its_delta() {
        let gaussian = DpEvent::Gaussian { noise_multiplier: 2.0, sampling_rate: 1.0 };
        let this_round = PrivacySpent::default().epsilon_with(Some(&gaussian), 1e-5).unwrap();
        assert!(this_round > 1.0 && this_round < 8.0, "{this_round}");
        // Room for this round: accepted, and the key trusted on first use is kept.
        let accepted = check_with((8.0, 1e-5), Some(&gaussian)).unwrap();
        assert_eq!((accepted.size, accepted.key.is_some()), (1, true));
        // The logged ε alone fits the budget of 16; with this round's it does not.
        let logged = 16.0 - this_round / 2.0;
        assert!(matches!(
            check_with((logged, 1e-5), Some(&gaussian)),
            Err(LogRefusal::Budget { would_reach, .. }) if (would_reach - logged - this_round).abs() < 1e-9
        ));
        assert!(check_with((logged, 1e-5), None).is_ok(), "a round without DP adds nothing");
        // A figure at a looser δ than the budget's says nothing about it: refused.
        assert!(matches!(check_with((1.0, 1e-3), None), Err(LogRefusal::Budget { .. })));
        // A NaN is no figure at all (JSON has none: the leaf does not even parse).
        assert!(check_with((f64::NAN, 1e-5), None).is_err());
        // Impossible figures, which would pass the budget, are refused as such: a
        // negative total, a total below the round's ε (1 here), a δ of 0 or of 1.
        for (total, delta) in [(-1e300, 1e-5), (0.5, 1e-5), (8.0, 0.0), (8.0, 1.0)] {
            assert!(
                matches!(check_with((total, delta), Some(&gaussian)), Err(LogRefusal::Implausible { round: 1, .. })),
                "ε {total}, δ {delta}"
            );
        }
    }

    #[test]
    fn a_round_with_dp_needs_the_logged_figures_and_a_leaf_in_its_canonical_encoding() {
        let gaussian = DpEvent::Gaussian { noise_multiplier: 2.0, sampling_rate: 1.0 };
        let key = LogKey::generate(&origin(&hex::encode(SESSION))).unwrap();
        let (policy, memory) = (PrivacyPolicy::default(), LogMemory::default());
        let check_leaf = |leaf: Vec<u8>, event: Option<&DpEvent>| {
            let log = LogState::with_leaves(SESSION, &key, vec![leaf]);
            let proof = log.prove(&LogRequest::default());
            let trust = LogTrust::TrustOnFirstUse;
            check(&LogCheck {
                proof: Some(&proof),
                session: SESSION,
                round: 2,
                trust: &trust,
                memory: &memory,
                asked: None,
                policy: &policy,
                event,
            })
        };
        // A server that leaves the figures out hides its ε: refused when this round has DP.
        assert!(matches!(check_leaf(leaf(1, None), Some(&gaussian)), Err(LogRefusal::Implausible { .. })));
        assert!(check_leaf(leaf(1, None), None).is_ok(), "a session without DP logs none");
        // The same leaf with a space added: the tree is consistent, the bytes are not canonical.
        let mut spaced = leaf(1, None);
        spaced.insert(1, b' ');
        assert!(matches!(check_leaf(spaced, None), Err(LogRefusal::NotIncluded { round: 1, .. })));
    }

    #[test]
    fn no_proof_or_a_key_of_another_log_is_refused() {
        let memory = LogMemory::default();
        let policy = PrivacyPolicy::default();
        let mut args = LogCheck {
            proof: None,
            session: SESSION,
            round: 1,
            trust: &LogTrust::TrustOnFirstUse,
            memory: &memory,
            asked: None,
            policy: &policy,
            event: None,
        };
        assert_eq!(check(&args), Err(LogRefusal::Missing));
        // A log of another session, trusted on first use: its key's name gives it away.
        let key = LogKey::generate(&origin(&hex::encode([0x22; 16]))).unwrap();
        let proof = LogState::new([0x22; 16], &key).prove(&LogRequest::default());
        args.proof = Some(&proof);
        assert!(matches!(check(&args), Err(LogRefusal::BadSignature(_))));
    }
}

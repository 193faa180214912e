//! What the round-log check costs per round: the bytes it adds to a client's `Ready`
//! and `Config`, the server's time to make one client's proof, and the client's time to
//! check it, for logs of 10 to 10,000 rounds (DP leaves of about 770 bytes).
//!
//! `cargo run --release -p privagg-service --example log_cost`
#![allow(clippy::unwrap_used, clippy::expect_used)] // an example: a failure is a bug

use std::time::Instant;

use privagg_log::LogKey;
use privagg_service::PrivacyPolicy;
use privagg_service::round_log::proof::MAX_PROVEN_ROUNDS;
use privagg_service::round_log::{LogCheck, LogMemory, LogProof, LogRequest, LogState, LogTrust, check, origin};

const LEAF: &str = r#"{"format":"privagg-round-leaf/2","software":"privagg 0.1.0","session":"SESSION","round":ROUND,"attempt":1,"instance":"INSTANCE","unmasked":["INSTANCE"],"participants":3,"neighbours":2,"threshold":3,"bits":20,"survivors":"7b0b5ea3ff36958c8e32ccf24b71da9ac68e51d0881bf75e62b837ec9ea6f3a5","survivor_count":3,"denominator":3.0,"model_sha256":"3aede9b7129ee528f982edca316b861f6f448ce595a96dcc04d6f30635a064b3","privacy":{"delta":0.00001,"releases":[{"round":ROUND,"attempt":1,"event":{"mechanism":"distributed_discrete_gaussian","sampling_rate":1.0,"l2_sensitivity":80899.60903490188,"l1_sensitivity":228819.0,"local_variance":3272373371.0,"shares":2,"dim":8},"n_min":3,"survivors":3,"effective_noise_multiplier":1.0000000000000018}],"epsilon_round":4.728507067217613,"epsilon_total":7.077391578166626}}"#;

fn main() {
    let session = [0x5e; 16];
    let hex_session = hex::encode(session);
    let key = LogKey::generate(&origin(&hex_session)).unwrap();
    let policy = PrivacyPolicy::default();
    println!(
        "rounds logged | Ready +bytes | Config +bytes | prove (server, per client) | prove (16 rounds asked + latest) | check (client)"
    );
    for rounds in [10u64, 100, 1000, 10_000] {
        let mut log = LogState::new(session, &key);
        let mut held = LogMemory::default();
        for round in 1..=rounds {
            if round == rounds {
                // The client accepted the log before its last round and took part in it.
                let c = log.checkpoint();
                held = LogMemory {
                    key: Some(key.verifier().to_string()),
                    checkpoint: Some(log.note().to_owned()),
                    size: c.size,
                    root: Some(hex::encode(c.root)),
                    unproven: [(round, vec![hex::encode([7; 32])])].into(),
                    total: None,
                };
            }
            let leaf = LEAF
                .replace("SESSION", &hex_session)
                .replace("ROUND", &round.to_string())
                .replace("INSTANCE", &hex::encode([7; 32]));
            log.append(leaf.into_bytes(), &key);
        }
        let request = held.request(session);
        let reps = 20;
        let start = Instant::now();
        let mut proof = None;
        for _ in 0..reps {
            proof = Some(log.prove(&request));
        }
        let prove = start.elapsed() / reps;
        // The most a seated client can ask: MAX_PROVEN_ROUNDS rounds, and the latest.
        let most = LogRequest {
            rounds: (rounds.saturating_sub(MAX_PROVEN_ROUNDS as u64) + 1..=rounds).collect(),
            ..held.request(session)
        };
        let start = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(log.prove(&most));
        }
        let prove_most = start.elapsed() / reps;
        let proof = proof.unwrap();
        let bytes = LogProof::encode(Some(&proof));
        let trust = LogTrust::default();
        let start = Instant::now();
        for _ in 0..reps {
            let decoded = LogProof::decode(&bytes).unwrap();
            let accepted = check(&LogCheck {
                proof: decoded.as_ref(),
                session,
                round: rounds + 1,
                trust: &trust,
                memory: &held,
                asked: Some(session),
                policy: &policy,
                event: None,
            })
            .unwrap();
            assert_eq!(accepted.size, rounds);
        }
        let verify = start.elapsed() / reps;
        println!(
            "{rounds:>13} | {:>12} | {:>13} | {:>26.1?} | {:>28.1?} | {:>14.1?}",
            request.encoded_len(),
            bytes.len() + 4,
            prove,
            prove_most,
            verify
        );
    }
}

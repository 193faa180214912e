//! The verifiable round log, attacked: a real three-round DP session, then one copy of
//! its state directory per kind of tampering, each of which `round_log::verify` must
//! catch and name; and real clients that check the log before every round, keep the
//! checkpoint they accepted, and catch a server whose state was rolled back.
#![allow(clippy::unwrap_used)] // test code

use std::path::{Path, PathBuf};

use ndarray::{Array1, ArrayView1};
use privagg_client::{Client, ClientOptions, LogRefusal, RoundError, SdkError};
use privagg_e2e::{Running, config, start, state_dir};
use privagg_log::VerifierKey;
use privagg_server::round_log::{LogError, RoundLeaf, verify};
use privagg_service::RoundMemory;
use privagg_service::round_log::LogMemory;

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn spawn_clients(running: &Running, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let options = running.options();
            tokio::spawn(async move {
                let mut client = Client::connect(options).await.unwrap();
                let _ = client
                    .run(|model: ArrayView1<'_, f32>| Ok::<_, String>(Array1::from_elem(model.len(), 0.01 * i as f32)))
                    .await;
            })
        })
        .collect()
}

/// A tampered copy of `state`, named `case`.
fn tampered(state: &Path, case: &str, tamper: impl FnOnce(&Path)) -> PathBuf {
    let copy = state_dir(&format!("log-{case}"));
    copy_dir(state, &copy);
    tamper(&copy);
    copy
}

fn edit(path: &Path, change: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    let changed = change(text.clone());
    assert_ne!(changed, text, "{}: the tampering changed nothing", path.display());
    std::fs::write(path, changed).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_tampering_with_the_round_log_is_caught() {
    let mut cfg = config("round-log", 6, 3, 3);
    cfg.dp.enabled = true;
    cfg.rounds = 3;
    let state = cfg.state.clone();
    let running = start(cfg).await;
    let clients = spawn_clients(&running, 3);
    running.finish().await;
    for c in clients {
        c.await.unwrap();
    }
    let key = VerifierKey::parse(&std::fs::read_to_string(state.join("log.pub")).unwrap()).unwrap();
    let honest = verify(&state, Some(&key), &[]).unwrap();
    assert_eq!((honest.rounds, honest.checkpoints), (3, 4));
    let ledger: privagg_dp::ledger::PrivacyLedger =
        serde_json::from_slice(&std::fs::read(state.join("privacy-ledger.json")).unwrap()).unwrap();
    let (epsilon, delta) = honest.epsilon.unwrap();
    assert_eq!(epsilon, ledger.epsilon(delta).unwrap());
    // What an auditor saved after round 2.
    let after_two = std::fs::read_to_string(state.join("log/checkpoint-2")).unwrap();
    verify(&state, Some(&key), std::slice::from_ref(&after_two)).unwrap();

    let leaf_problem = |dir: &Path, round: u64, needle: &str| match verify(dir, Some(&key), &[]) {
        Err(LogError::Leaf { round: r, why, .. }) => {
            assert_eq!(r, round, "{why}");
            assert!(why.contains(needle), "{why}");
        }
        other => panic!("{}: {other:?}", dir.display()),
    };
    let checkpoint_problem = |dir: &Path, trusted: &[String], needle: &str| match verify(dir, Some(&key), trusted) {
        Err(e @ LogError::Checkpoint { .. }) => assert!(e.to_string().contains(needle), "{e}"),
        other => panic!("{}: {other:?}", dir.display()),
    };

    // A model file replaced after the fact.
    let dir = tampered(&state, "model", |d| {
        let model = privagg_server::storage::npy_bytes(&[9.0; 6]).unwrap();
        std::fs::write(d.join("model-2.npy"), model).unwrap();
    });
    leaf_problem(&dir, 2, "model-2.npy hashes to");

    // A record rewritten: who was in the sum.
    let dir = tampered(&state, "record", |d| {
        edit(&d.join("round-1.json"), |t| t.replacen("\"included\": [\n    1,", "\"included\": [\n    7,", 1))
    });
    leaf_problem(&dir, 1, "field survivors");

    // The ledger rewritten to forget a release: the logged ε no longer composes.
    let dir = tampered(&state, "ledger", |d| {
        let mut ledger = ledger.clone();
        ledger.releases.remove(0);
        std::fs::write(d.join("privacy-ledger.json"), serde_json::to_vec(&ledger).unwrap()).unwrap();
    });
    leaf_problem(&dir, 1, "field privacy");

    // A leaf rewritten (a lower ε), record and all left alone.
    let dir = tampered(&state, "leaf", |d| {
        let path = d.join("log/leaf-2.json");
        let mut leaf: RoundLeaf = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        leaf.privacy.as_mut().unwrap().epsilon_total /= 2.0;
        std::fs::write(&path, serde_json::to_vec(&leaf).unwrap()).unwrap();
    });
    leaf_problem(&dir, 3, "field privacy");
    let dir = tampered(&state, "garbage", |d| std::fs::write(d.join("log/leaf-1.json"), b"{").unwrap());
    leaf_problem(&dir, 2, "does not parse");

    // Leaves reordered.
    let dir = tampered(&state, "reorder", |d| {
        std::fs::rename(d.join("log/leaf-0.json"), d.join("log/tmp")).unwrap();
        std::fs::rename(d.join("log/leaf-1.json"), d.join("log/leaf-0.json")).unwrap();
        std::fs::rename(d.join("log/tmp"), d.join("log/leaf-1.json")).unwrap();
    });
    leaf_problem(&dir, 1, "describes round 2");

    // Truncated: the last round and its checkpoints gone, the older checkpoint put back.
    // The directory alone now looks whole; the auditor's later checkpoint catches it.
    let after_three = std::fs::read_to_string(state.join("log/checkpoint")).unwrap();
    let dir = tampered(&state, "truncate", |d| {
        for f in ["log/leaf-2.json", "log/checkpoint-3", "round-3.json", "model-3.npy"] {
            std::fs::remove_file(d.join(f)).unwrap();
        }
        std::fs::copy(d.join("log/checkpoint-2"), d.join("log/checkpoint")).unwrap();
    });
    verify(&dir, Some(&key), &[]).unwrap();
    checkpoint_problem(&dir, std::slice::from_ref(&after_three), "truncated");

    // A fork: round 3 redone differently and its checkpoints re-signed with the log's
    // own key (a server rewriting history). Any checkpoint of the old history catches it.
    let dir = tampered(&state, "fork", |d| {
        let mut record: privagg_server::record::RoundRecord =
            serde_json::from_slice(&std::fs::read(d.join("round-3.json")).unwrap()).unwrap();
        record.included.pop();
        std::fs::write(d.join("round-3.json"), serde_json::to_vec(&record).unwrap()).unwrap();
        for f in ["log/leaf-2.json", "log/checkpoint-3"] {
            std::fs::remove_file(d.join(f)).unwrap();
        }
        // Reopening the log re-appends round 3 from the rewritten record, signed.
        let storage = privagg_server::storage::StateDir::open(d).unwrap();
        privagg_server::round_log::RoundLog::open(&storage, &storage.session().unwrap()).unwrap();
    });
    verify(&dir, Some(&key), &[]).unwrap();
    checkpoint_problem(&dir, std::slice::from_ref(&after_three), "rewritten or forked");
    verify(&dir, Some(&key), std::slice::from_ref(&after_two)).unwrap();

    // A committed round's record lost (or rolled back) under a log that holds it: the
    // server refuses to start on it rather than log the round twice.
    let dir = tampered(&state, "lost-record", |d| std::fs::remove_file(d.join("round-3.json")).unwrap());
    let storage = privagg_server::storage::StateDir::open(&dir).unwrap();
    let refused = privagg_server::round_log::RoundLog::open(&storage, &storage.session().unwrap()).err().unwrap();
    assert!(refused.to_string().contains("holds 3 rounds"), "{refused}");

    // Checkpoints signed by another key, or not at all.
    let other = privagg_log::LogKey::generate("privagg/other").unwrap().verifier();
    assert!(matches!(verify(&state, Some(&other), &[]), Err(LogError::Checkpoint { .. })));
    let dir = tampered(&state, "unsigned", |d| edit(&d.join("log/checkpoint"), |t| t.replacen("\n3\n", "\n2\n", 1)));
    checkpoint_problem(&dir, &[], "no valid signature");
}

/// Clients that take part in every round of `running`, remembering rounds in `dir`.
fn options_in(running: &Running, n: usize, dir: &Path) -> Vec<ClientOptions> {
    (0..n)
        .map(|_| {
            let mut o = running.options();
            o.state_dir = Some(dir.to_owned());
            o
        })
        .collect()
}

/// What each client in `dir` remembers of `session`'s log.
fn client_logs(dir: &Path, session: &[u8; 16]) -> Vec<LogMemory> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|entry| {
            let memory: RoundMemory = serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
            memory.session(session).log
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_check_the_log_every_round_and_catch_it_rolled_back_after_a_restart() {
    // An honest session of four rounds: the clients check the log before each round
    // (trusting its key on first use) and keep the last checkpoint they accepted.
    let mut cfg = config("log-rollback", 4, 3, 3);
    cfg.rounds = 4;
    let state = cfg.state.clone();
    let clients_dir = state.with_extension("clients");
    let _ = std::fs::remove_dir_all(&clients_dir);
    let running = start(cfg.clone()).await;
    let options = options_in(&running, 3, &clients_dir);
    let cert = running.cert.clone();
    let tasks: Vec<_> = options
        .iter()
        .cloned()
        .map(|o| {
            tokio::spawn(async move {
                let mut client = Client::connect(o).await?;
                let reports = client.run(|m| Ok::<_, String>(Array1::from_elem(m.len(), 0.01f32))).await;
                client.close().await;
                reports
            })
        })
        .collect();
    running.finish().await;
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().len(), 4);
    }
    let key = VerifierKey::parse(&std::fs::read_to_string(state.join("log.pub")).unwrap()).unwrap();
    let session = privagg_server::storage::StateDir::open(&state).unwrap().session().unwrap();
    let logs = client_logs(&clients_dir, &session);
    assert_eq!(logs.len(), 3);
    let mut kept = Vec::new();
    for log in logs {
        // Accepted before round 4: rounds 1–3, signed by the server's key; round 4 is
        // proven before the client's next round.
        assert_eq!((log.size, log.unproven.into_keys().collect::<Vec<_>>()), (3, vec![4]));
        assert_eq!(log.key, Some(key.to_string()));
        kept.push(log.checkpoint.unwrap());
    }
    // An auditor holding the clients' checkpoints finds the log consistent with them.
    assert_eq!(verify(&state, Some(&key), &kept).unwrap().rounds, 4);

    // The operator rolls the state back to after round 2 and restarts the server, which
    // runs rounds 3 and 4 again: its log of 2 rounds is properly signed, and consistent
    // with itself. The clients, restarted from their stores with the key pinned, refuse
    // before they take part.
    for f in ["round-3.json", "round-4.json", "model-3.npy", "model-4.npy"] {
        std::fs::remove_file(state.join(f)).unwrap();
    }
    for f in ["leaf-2.json", "leaf-3.json", "checkpoint-3", "checkpoint-4"] {
        std::fs::remove_file(state.join("log").join(f)).unwrap();
    }
    std::fs::copy(state.join("log/checkpoint-2"), state.join("log/checkpoint")).unwrap();
    verify(&state, Some(&key), &[]).unwrap();
    let mut again = cfg;
    again.client_ca = Some(state.with_extension("client-ca.der"));
    let running = start(again).await;
    assert_eq!(running.cert, cert, "the same server (certificate) as before");
    let tasks: Vec<_> = options
        .into_iter()
        .map(|mut o| {
            o.server = running.addr;
            o.log_key = Some(key.clone());
            tokio::spawn(async move {
                let mut client = Client::connect(o).await?;
                let result = client.submit(ndarray::ArrayView1::from(&[0.5f32; 4][..]), 1.0).await;
                client.close().await;
                result
            })
        })
        .collect();
    for t in tasks {
        match t.await.unwrap() {
            Err(SdkError::Round(RoundError::LogRefused(LogRefusal::Truncated { held: 3, presented: 2 }))) => {}
            other => panic!("{other:?}"),
        }
    }
    running.shutdown.shutdown();
    let _ = tokio::time::timeout(privagg_e2e::PATIENCE, running.task).await.unwrap();
    assert!(!state.join("round-3.json").exists(), "no round ran again with these clients");
}

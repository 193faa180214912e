//! A server stopped between rounds resumes, on restart, at the next round with the
//! saved model; a round interrupted before its record was written is redone.
#![allow(clippy::unwrap_used)] // test code

use std::sync::{Arc, Mutex};

use ndarray::{Array1, ArrayView1};
use privagg_client::Client;
use privagg_e2e::{PATIENCE, Running, config, start, uncommit};
use privagg_server::{ServeError, ServerEvent};

/// Clients that add 0.1 to every weight each round and remember the models they got.
fn spawn_clients(running: &Running, n: usize, seen: Arc<Mutex<Vec<Vec<f32>>>>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let options = running.options();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut client = Client::connect(options).await.unwrap();
                let _ = client
                    .run(|model: ArrayView1<'_, f32>| {
                        seen.lock().unwrap().push(model.to_vec());
                        Ok::<_, String>(Array1::from_elem(model.len(), 0.1f32))
                    })
                    .await;
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_at_the_next_round_with_the_saved_model() {
    let dim = 8;
    let mut cfg = config("restart", dim, 3, 3);
    cfg.rounds = 3;
    let state = cfg.state.clone();

    // First run: stop right after round 1 is committed.
    let mut running = start(cfg.clone()).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clients = spawn_clients(&running, 3, seen.clone());
    loop {
        if let Some(ServerEvent::RoundCompleted(r)) =
            tokio::time::timeout(PATIENCE, running.events.recv()).await.unwrap()
        {
            assert_eq!(r.round, 1);
            running.shutdown.shutdown();
            break;
        }
    }
    let result = tokio::time::timeout(PATIENCE, running.task).await.unwrap().unwrap();
    assert!(matches!(result, Err(ServeError::Shutdown { completed_rounds: 1 })), "{result:?}");
    for c in clients {
        tokio::time::timeout(PATIENCE, c).await.unwrap().unwrap();
    }
    let after_one = privagg_server::storage::read_vector(&state.join("model-1.npy")).unwrap();
    assert!(after_one.iter().all(|&w| (w - 0.1).abs() < 1e-6));
    assert!(!state.join("round-2.json").exists());

    // Second run on the same state: rounds 2 and 3, starting from model-1.
    let mut running = start(cfg).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clients = spawn_clients(&running, 3, seen.clone());
    assert_eq!(running.next_record().await.round, 2);
    assert_eq!(running.next_record().await.round, 3);
    let summary = running.finish().await;
    for c in clients {
        tokio::time::timeout(PATIENCE, c).await.unwrap().unwrap();
    }
    assert_eq!(summary.completed_rounds, 3);
    assert!(summary.model.iter().all(|&w| (w - 0.3).abs() < 1e-5), "{:?}", summary.model);
    // The first model the clients saw after the restart is the one saved after round 1.
    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(first, after_one);

    // A third start finds the session complete and exits at once.
    let mut cfg = config("restart-done", dim, 3, 3);
    cfg.state = state.clone();
    cfg.rounds = 3;
    let summary = start(cfg).await.finish().await;
    assert_eq!(summary.completed_rounds, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_without_its_record_is_redone() {
    let dim = 4;
    let mut cfg = config("crash", dim, 2, 2);
    cfg.rounds = 2;
    let state = cfg.state.clone();
    let running = start(cfg.clone()).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clients = spawn_clients(&running, 2, seen);
    running.finish().await;
    for c in clients {
        c.await.unwrap();
    }
    // Pretend the server crashed while committing round 2: its model file is there,
    // its record is not.
    uncommit(&state, 2);
    let running = start(cfg).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clients = spawn_clients(&running, 2, seen.clone());
    let summary = running.finish().await;
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(summary.completed_rounds, 2);
    // Round 2 ran again from model-1 (0.1), not from the orphaned model-2 (0.2).
    assert!(seen.lock().unwrap().iter().all(|m| m.iter().all(|&w| (w - 0.1).abs() < 1e-6)));
    assert!(summary.model.iter().all(|&w| (w - 0.2).abs() < 1e-5));
    assert!(state.join("round-2.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refuses_a_round_the_server_rolled_back_to_run_again() {
    use privagg_client::{RoundError, SdkError};
    let dim = 4;
    let mut cfg = config("rollback", dim, 2, 2);
    cfg.threat = privagg_server::Threat::Curious; // clients admitted by token
    std::fs::create_dir_all(&cfg.state).unwrap();
    let tokens = cfg.state.join("tokens.txt");
    std::fs::write(&tokens, "alpha\nbeta\n").unwrap();
    cfg.tokens = Some(tokens);
    let state = cfg.state.clone();
    let memory = state.join("alpha-client");
    let submit_as = |running: &Running, token: &str, memory: Option<std::path::PathBuf>| {
        let mut options = running.options();
        options.token = Some(token.into());
        if memory.is_some() {
            options.state_dir = memory;
        }
        tokio::spawn(async move {
            let mut client = Client::connect(options).await?;
            let report = client.submit(ArrayView1::from(&[0.1f32; 4][..]), 1.0).await;
            client.close().await;
            report
        })
    };
    let running = start(cfg.clone()).await;
    let (a, b) = (submit_as(&running, "alpha", Some(memory.clone())), submit_as(&running, "beta", None));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    running.finish().await;
    // The server's state is rolled back to before round 1 (its log too: the server holds
    // the log's key), and round 1 runs again. The client starts again too, from what it
    // stored.
    std::fs::remove_file(state.join("round-1.json")).unwrap();
    std::fs::remove_file(state.join("model-1.npy")).unwrap();
    std::fs::remove_dir_all(state.join("log")).unwrap();
    cfg.max_round_attempts = 1;
    cfg.stop_after_failed_round = true;
    let running = start(cfg).await;
    let (a, b) = (submit_as(&running, "alpha", Some(memory)), submit_as(&running, "beta", None));
    let replayed = a.await.unwrap();
    assert!(
        matches!(replayed, Err(SdkError::Round(RoundError::ReplayedRound { round: 1, finished: 1 }))),
        "{replayed:?}"
    );
    let _ = b.await.unwrap();
    let _ = tokio::time::timeout(PATIENCE, running.task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_finalize_and_commit_is_charged_on_restart_and_leaves_no_orphan() {
    use privagg_dp::ledger::PrivacyLedger;
    use privagg_server::storage::LEDGER_FILE;
    let mut cfg = config("crash-dp", 4, 3, 3);
    cfg.dp.enabled = true;
    cfg.rounds = 2;
    let state = cfg.state.clone();
    let ledger =
        || -> PrivacyLedger { serde_json::from_slice(&std::fs::read(state.join(LEDGER_FILE)).unwrap()).unwrap() };
    let running = start(cfg.clone()).await;
    let clients = spawn_clients(&running, 3, Arc::default());
    running.finish().await;
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(ledger().releases.iter().map(|r| r.round).collect::<Vec<_>>(), [1, 2]);
    // The server crashed after round 2 was unmasked and its model written, before its
    // record: on restart the orphaned model goes, the release stays charged, and the
    // round that runs again is charged once more.
    uncommit(&state, 2);
    let mut cfg_again = cfg.clone();
    cfg_again.client_ca = Some(state.with_extension("client-ca.der")); // what `start` made
    let mut running = start(cfg).await;
    assert!(!state.join("model-2.npy").exists());
    assert_eq!(ledger().releases.len(), 2);
    let clients = spawn_clients(&running, 3, Arc::default());
    let record = running.next_record().await;
    running.finish().await;
    for c in clients {
        c.await.unwrap();
    }
    let ledger = ledger();
    assert_eq!(ledger.releases.iter().map(|r| r.round).collect::<Vec<_>>(), [1, 2, 2]);
    let privacy = record.privacy.unwrap();
    assert_eq!(privacy.releases, 3);
    assert_eq!(privacy.epsilon, ledger.epsilon(privacy.delta).unwrap());
    let two_releases = PrivacyLedger { releases: ledger.releases[..2].to_vec(), ..PrivacyLedger::default() };
    assert!(privacy.epsilon > two_releases.epsilon(privacy.delta).unwrap());

    // Restoring an older ledger (to spend the budget again) is caught on start: the last
    // record says 3 releases were charged.
    std::fs::write(state.join(LEDGER_FILE), serde_json::to_vec(&two_releases).unwrap()).unwrap();
    let refused = privagg_server::Server::bind(cfg_again).await.err().expect("a rolled-back ledger was accepted");
    assert!(refused.to_string().contains("charged 3 releases"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_per_state_directory_and_no_silent_change_of_plan() {
    let mut cfg = config("plan-change", 4, 2, 2);
    cfg.dp.enabled = true;
    let state = cfg.state.clone();
    let running = start(cfg.clone()).await;
    // A second server on the same directory is refused while the first holds it.
    let mut other = cfg.clone();
    other.client_ca = Some(state.with_extension("client-ca.der")); // what `start` made
    let refused = privagg_server::Server::bind(other.clone()).await.err().expect("two servers on one directory");
    assert!(refused.to_string().contains("another privagg server"), "{refused}");
    let clients = spawn_clients(&running, 2, Arc::default());
    running.finish().await;
    for c in clients {
        c.await.unwrap();
    }
    // Resuming with DP off after a DP round is refused, naming what changed...
    other.rounds = 2;
    other.dp.enabled = false;
    let refused = privagg_server::Server::bind(other.clone()).await.err().expect("DP turned off silently");
    assert!(refused.to_string().contains("dp.enabled"), "{refused}");
    assert!(!state.join("plan-changes.json").exists());
    // ...unless forced, and then the change is on record.
    other.force_resume = true;
    drop(privagg_server::Server::bind(other).await.unwrap());
    let changes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("plan-changes.json")).unwrap()).unwrap();
    assert_eq!(changes[0]["after_round"], 1);
    assert_eq!(changes[0]["changed"], serde_json::json!(["dp.enabled"]));
    // More rounds, other timeouts: not a change of plan.
    cfg.rounds = 3;
    cfg.phase_timeout = 5.0;
    cfg.client_ca = Some(state.with_extension("client-ca.der"));
    cfg.dp.enabled = false;
    drop(privagg_server::Server::bind(cfg).await.unwrap());
}

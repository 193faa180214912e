//! Smoke test of the shells' dropout path over real QUIC: a client vanishes after sharing
//! its keys (the case that makes the server rebuild its mask key and remove its pairwise
//! masks); the others finish and the new model is the mean of exactly their inputs.
//! Every other drop point, and both ways of vanishing, run in the service layer's
//! deterministic harness (`crates/service/tests/sessions.rs`).
#![allow(clippy::unwrap_used)] // test code

use privagg_client::{DropPoint, SdkError};
use privagg_e2e::{config, max_error, mean, start, submit, updates};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_vanishing_before_its_upload_leaves_the_mean_of_the_others() {
    let dim = 40;
    let mut running = start(config("drop-forwarded", dim, 6, 4)).await;
    let ups = updates(6, dim, 3);
    let clients: Vec<_> = ups
        .iter()
        .enumerate()
        .map(|(i, u)| {
            submit(&running, u.clone(), 1.0, |o| o.drop_point = (i == 0).then_some(DropPoint::BeforeMaskedInput))
        })
        .collect();
    let record = running.next_record().await;
    let mut results = Vec::new();
    for c in clients {
        results.push(c.await.unwrap());
    }
    let summary = running.finish().await;
    assert!(matches!(results[0], Err(SdkError::TestingDropout)), "{:?}", results[0]);
    assert!(results[1..].iter().all(Result::is_ok), "{results:?}");
    // In U2, not in U3: the server had to rebuild its mask key to finish.
    assert_eq!(record.dropped.len(), 1, "{:?}", record.dropped);
    assert_eq!(record.dropped[0].phase, "masked_input");
    assert!(!record.dropped[0].in_sum);
    assert_eq!(record.included.len(), 5);
    let err = max_error(&summary.model, &mean(&ups[1..]));
    assert!(err < 1e-6, "max error {err}");
}

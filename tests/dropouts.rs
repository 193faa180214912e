//! A client that vanishes after any step of the protocol is dropped; the others finish,
//! and the new model is the mean of exactly the inputs in the sum.
#![allow(clippy::unwrap_used)] // test code

use privagg_client::{DropAfter, SdkError};
use privagg_e2e::{config, max_error, mean, start, submit, updates};

async fn one_client_vanishes(step: DropAfter, name: &str) {
    let dim = 40;
    let mut running = start(config(name, dim, 6, 4)).await;
    let ups = updates(6, dim, 3);
    let clients: Vec<_> = ups
        .iter()
        .enumerate()
        .map(|(i, u)| submit(&running, u.clone(), 1.0, |o| o.drop_after = (i == 0).then_some(step)))
        .collect();
    let record = running.next_record().await;
    let mut results = Vec::new();
    for c in clients {
        results.push(c.await.unwrap());
    }
    let summary = running.finish().await;
    assert!(matches!(results[0], Err(SdkError::TestingDropout)), "{step:?}: {:?}", results[0]);
    assert!(results[1..].iter().all(Result::is_ok), "{step:?}: {results:?}");
    // Which client got which seat depends on arrival order: find the vanished one's seat
    // from the record and check that the sum is the mean of the others, or of everyone
    // when it vanished after its input was in.
    let in_sum = matches!(step, DropAfter::MaskedInput | DropAfter::UnmaskResponse);
    match record.dropped.as_slice() {
        [dropped] => {
            assert_eq!(dropped.in_sum, in_sum, "{step:?}");
            if step == DropAfter::ForwardedShares {
                // In U2, not in U3: the server had to rebuild its mask key to finish.
                assert_eq!(dropped.phase, "masked_input", "{step:?}");
            }
        }
        // A client that vanishes after its last message may be gone only after the round
        // completed, and then nobody had to drop it.
        [] => assert_eq!(step, DropAfter::UnmaskResponse),
        more => panic!("{step:?}: {more:?}"),
    }
    assert_eq!(record.included.len(), if in_sum { 6 } else { 5 }, "{step:?}");
    let expected = if in_sum { mean(&ups) } else { mean(&ups[1..]) };
    let err = max_error(&summary.model, &expected);
    assert!(err < 1e-6, "{step:?}: max error {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanishing_on_config() {
    one_client_vanishes(DropAfter::Config, "drop-config").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanishing_after_advertising_keys() {
    one_client_vanishes(DropAfter::AdvertiseKeys, "drop-advertise").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanishing_after_sharing_keys() {
    one_client_vanishes(DropAfter::ShareKeys, "drop-share").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanishing_after_receiving_the_envelopes() {
    one_client_vanishes(DropAfter::ForwardedShares, "drop-forwarded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanishing_after_uploading() {
    one_client_vanishes(DropAfter::MaskedInput, "drop-upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanishing_after_unmasking() {
    one_client_vanishes(DropAfter::UnmaskResponse, "drop-unmask").await;
}

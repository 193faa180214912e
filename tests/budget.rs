//! A round the privacy budget does not allow ends the session at once and tells every
//! client why — with a full cohort, and with a partial one after the lobby timeout
//! (where the error used to be dropped and the driver spun on a deadline in the past).
#![allow(clippy::unwrap_used)] // test code

use privagg_client::{EndReason, SdkError};
use privagg_e2e::{PATIENCE, config, start, submit};
use privagg_server::ServeError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_ends_the_session_whether_the_cohort_is_full_or_partial() {
    for partial in [false, true] {
        let mut cfg = config(if partial { "budget-partial" } else { "budget-full" }, 8, 3, 2);
        cfg.dp.enabled = true;
        cfg.dp.max_epsilon = Some(0.01); // one round costs ε ≈ 4.7 at z = 1
        cfg.lobby_timeout = 0.3;
        let running = start(cfg).await;
        let clients: Vec<_> =
            (0..if partial { 2 } else { 3 }).map(|_| submit(&running, vec![0.0; 8], 1.0, |_| {})).collect();
        let result = tokio::time::timeout(PATIENCE, running.task).await.unwrap().unwrap();
        assert!(matches!(result, Err(ServeError::Budget(_))), "partial: {partial}: {result:?}");
        for c in clients {
            let ended = c.await.unwrap();
            // The client hears a typed reason, not a plain end of the session.
            let budget = EndReason::BudgetSpent;
            assert!(
                matches!(&ended, Err(SdkError::SessionEnded { completed_rounds: 0, end, .. }) if *end == budget),
                "{ended:?}"
            );
        }
    }
}

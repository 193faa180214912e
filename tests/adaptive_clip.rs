//! Adaptive clipping over QUIC: each client's noised clip indicator rides in the masked
//! sum, the server moves the clip toward the target quantile from it, and the ledger
//! charges the indicator as part of the release.
#![allow(clippy::unwrap_used)] // test code

use privagg_dp::accountant::DpEvent;
use privagg_dp::adaptive_clip::AdaptiveClipping;
use privagg_dp::ledger::PrivacyLedger;
use privagg_e2e::{config, start, submit};
use privagg_server::aggregation::Aggregation;
use privagg_server::storage::LEDGER_FILE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clip_follows_the_noisy_indicator_count_and_the_indicator_is_charged() {
    let dim = 64;
    let mut cfg = config("adaptive-clip", dim, 20, 16);
    cfg.rounds = 3;
    cfg.dp.enabled = true;
    cfg.dp.clip = 1.0;
    let rule = AdaptiveClipping { count_noise_fraction: 0.1, ..AdaptiveClipping::default() };
    cfg.dp.adaptive_clip = Some(rule);
    let aggregation = Aggregation::new(&cfg).unwrap();
    let padded = aggregation.plan().unwrap().padded_dim;
    assert_eq!(aggregation.protocol_dim(), padded + 1);
    let state = cfg.state.clone();
    let mut running = start(cfg).await;
    let mut clip = 1.0;
    for round in 1..=3u64 {
        // Every update is far under the clip: the noisy fraction unclipped is near 1 (its
        // noise has σ = 2 clients of 20), so the clip shrinks every round.
        let clients: Vec<_> = (0..20).map(|_| submit(&running, vec![0.001; dim], 1.0, |_| {})).collect();
        let record = running.next_record().await;
        for c in clients {
            c.await.unwrap().unwrap();
        }
        let step = record.clip.unwrap();
        assert_eq!((record.round, step.clip), (round, clip));
        let expected = clip * (-rule.learning_rate * (step.unclipped_fraction.unwrap() - rule.target_quantile)).exp();
        assert!((step.next_clip - expected).abs() < 1e-12);
        assert!(step.next_clip < clip, "{step:?}");
        clip = step.next_clip;
    }
    running.finish().await;
    // The ledger charged one more coordinate, with the indicator's sensitivity.
    let ledger: PrivacyLedger = serde_json::from_slice(&std::fs::read(state.join(LEDGER_FILE)).unwrap()).unwrap();
    assert_eq!(ledger.releases.len(), 3);
    let DpEvent::DistributedDiscreteGaussian { dim: charged_dim, l2_sensitivity, .. } = ledger.releases[0].event else {
        panic!("{:?}", ledger.releases[0].event)
    };
    assert_eq!(charged_dim, padded as u64 + 1);
    assert!(l2_sensitivity > aggregation.plan().unwrap().l2_sensitivity);
}

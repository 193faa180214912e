//! Random check-ins over QUIC: before each round every waiting client flips its own coin
//! and only those it chose are seated; the rest wait for the next round.
#![allow(clippy::unwrap_used)] // test code

use ndarray::{Array1, ArrayView1};
use privagg_client::Client;
use privagg_e2e::{PATIENCE, config, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_run_with_the_clients_whose_coins_came_up() {
    let population = 8;
    let mut cfg = config("check-ins", 4, population, 5);
    cfg.rounds = 3;
    cfg.dp.check_ins = true;
    cfg.dp.sampling_rate = 0.9;
    cfg.threat = privagg_server::Threat::Curious;
    let mut running = start(cfg).await;
    let clients: Vec<_> = (0..population)
        .map(|_| {
            let options = running.options();
            tokio::spawn(async move {
                let mut client = Client::connect(options).await.unwrap();
                let reports = client
                    .run(|model: ArrayView1<'_, f32>| Ok::<_, String>(Array1::from_elem(model.len(), 1.0f32)))
                    .await;
                client.close().await;
                reports
            })
        })
        .collect();
    let mut participants = Vec::new();
    for round in 1..=3 {
        let record = running.next_record().await;
        assert_eq!(record.round, round);
        assert!((5..=population).contains(&record.participants), "{record:?}");
        // DP off: the weighted mean of updates of 1.0 is 1.0 whoever took part.
        assert!((record.denominator - record.included.len() as f64).abs() < 1e-6, "{record:?}");
        participants.push(record.participants);
    }
    let summary = running.finish().await;
    assert!(summary.model.iter().all(|&w| (w - 3.0).abs() < 1e-4), "{:?}", summary.model);
    let mut taken_part = 0;
    for c in clients {
        taken_part += tokio::time::timeout(PATIENCE, c).await.unwrap().unwrap().map_or(0, |r| r.len());
    }
    assert_eq!(taken_part, participants.iter().sum::<u32>() as usize);
}

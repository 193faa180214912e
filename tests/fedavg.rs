//! With DP off, a round's new model is exactly the old model plus the (weighted) mean of
//! the clients' updates, up to the quantization error.
#![allow(clippy::unwrap_used)] // test code

use privagg_e2e::{config, max_error, mean, start, submit, updates};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_clients_give_the_exact_mean() {
    let dim = 300;
    let running = start(config("fedavg-mean", dim, 10, 8)).await;
    let ups = updates(10, dim, 1);
    let clients: Vec<_> = ups.iter().map(|u| submit(&running, u.clone(), 1.0, |_| {})).collect();
    for c in clients {
        let report = c.await.unwrap().unwrap();
        assert_eq!(report.inputs, 10);
        assert_eq!(report.round, 1);
    }
    let summary = running.finish().await;
    assert_eq!(summary.completed_rounds, 1);
    // The bound is 1e-4 for updates in [−1, 1]; 48-bit words give far better.
    let err = max_error(&summary.model, &mean(&ups));
    assert!(err < 1e-6, "max error {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_give_the_weighted_mean_and_the_record_tells_it() {
    let dim = 64;
    let mut cfg = config("fedavg-weighted", dim, 4, 4);
    cfg.server_lr = 0.5;
    let state = cfg.state.clone();
    let mut running = start(cfg).await;
    let ups = updates(4, dim, 2);
    let weights = [1.0f32, 2.0, 3.0, 10.0];
    let clients: Vec<_> = ups.iter().zip(weights).map(|(u, w)| submit(&running, u.clone(), w, |_| {})).collect();
    let record = running.next_record().await;
    for c in clients {
        c.await.unwrap().unwrap();
    }
    let summary = running.finish().await;
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let expected: Vec<f64> = (0..dim)
        .map(|j| 0.5 * ups.iter().zip(weights).map(|(u, w)| f64::from(w) * f64::from(u[j])).sum::<f64>() / total)
        .collect();
    assert!(max_error(&summary.model, &expected) < 1e-6);
    assert!((record.denominator - total).abs() < 1e-6, "denominator {}", record.denominator);
    assert_eq!(record.included, vec![1, 2, 3, 4]);
    assert!(record.privacy.is_none());
    assert!(record.bytes_in > 0 && record.bytes_out > 0);
    assert!(record.timings.contains_key("masked_input") && record.timings.contains_key("total"));
    // The committed files are the record and a NumPy model.
    assert!(
        state.join("round-1.json").exists() && state.join("model-1.npy").exists() && state.join("cert.der").exists()
    );
    let saved = privagg_server::storage::read_vector(&state.join("model-1.npy")).unwrap();
    assert_eq!(saved, summary.model);
}

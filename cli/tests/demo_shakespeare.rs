//! `privagg demo --task shakespeare`, shrunk (a tiny GRU, 3 clients, 2 rounds): the real
//! server and clients over QUIC on loopback train the language model, with DP off and on.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::process::Command;

/// Runs the shrunk demo with `extra` flags; returns the report's rows.
fn run(extra: &[&str]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_privagg"))
        .args(["demo", "--task", "shakespeare", "--clients", "3", "--rounds", "2", "--hidden", "16"])
        .args(["--local-steps", "12", "--batch", "8", "--seq-len", "32", "--lr", "0.02", "--test-chars", "4000"])
        .arg("--report")
        .arg(&report)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("round 2/2: test loss"), "{stdout}");
    assert!(stdout.contains("perplexity") && stdout.contains("accuracy"), "{stdout}");
    let text = std::fs::read_to_string(&report).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn field(row: &serde_json::Value, key: &str) -> f64 {
    row[key].as_f64().unwrap()
}

#[test]
fn the_language_model_learns_without_dp() {
    let rows = run(&["--no-dp"]);
    assert_eq!(rows.len(), 2);
    // 65 characters: a uniform guess has loss ln 65 ≈ 4.17 and accuracy 1.5 %.
    let (first, last) = (&rows[0], &rows[1]);
    assert!(field(last, "loss") < field(first, "loss"), "{rows:?}");
    assert!(field(last, "loss") < 3.9, "{rows:?}");
    assert!(field(last, "accuracy") > 0.08, "well above chance: {rows:?}");
    assert!((field(last, "perplexity") - field(last, "loss").exp()).abs() < 1e-6);
    assert_eq!(field(last, "inputs"), 3.0);
    assert_eq!(field(last, "epsilon"), 0.0);
}

#[test]
fn the_language_model_round_runs_with_dp() {
    let rows = run(&["--noise-multiplier", "1", "--clip", "0.5"]);
    assert_eq!(rows.len(), 2);
    let (first, last) = (field(&rows[0], "epsilon"), field(&rows[1], "epsilon"));
    assert!(first > 0.0 && last > first, "ε grows with the rounds: {rows:?}");
    assert!(field(&rows[1], "loss").is_finite());
}

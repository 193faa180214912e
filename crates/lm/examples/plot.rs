//! Draws the demo's figures from its `--report` files (JSON lines):
//! `cargo run -p privagg-lm --example plot -- OUT_DIR NAME=REPORT.jsonl ...`
//! writes `OUT_DIR/accuracy-by-round.svg` and `OUT_DIR/accuracy-by-epsilon.svg`
//! (the latter for the runs with DP, ε spent so far on the x axis).

use privagg_lm::svg::{LineChart, Series};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().ok_or("usage: plot OUT_DIR NAME=REPORT ...")?);
    let (mut by_round, mut by_epsilon) = (Vec::new(), Vec::new());
    for arg in args {
        let (name, path) = arg.rsplit_once('=').ok_or("each report is NAME=PATH")?;
        let text = std::fs::read_to_string(path)?;
        let rows: Vec<serde_json::Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        let get = |r: &serde_json::Value, k: &str| r.get(k).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
        by_round.push(Series {
            name: name.to_owned(),
            points: rows.iter().map(|r| (get(r, "round"), 100.0 * get(r, "accuracy"))).collect(),
        });
        if rows.iter().any(|r| get(r, "epsilon") > 0.0) {
            by_epsilon.push(Series {
                name: name.to_owned(),
                points: rows.iter().map(|r| (get(r, "epsilon"), 100.0 * get(r, "accuracy"))).collect(),
            });
        }
    }
    std::fs::create_dir_all(&out)?;
    let chart = |title: &str, x: &str, series| LineChart {
        title: title.to_owned(),
        x_label: x.to_owned(),
        y_label: "next-character test accuracy (%)".to_owned(),
        series,
    };
    let round = chart("Federated Tiny Shakespeare: accuracy by round", "round", by_round);
    std::fs::write(out.join("accuracy-by-round.svg"), round.to_svg())?;
    let eps = chart("Accuracy against ε spent (δ = 1e-5, against the server)", "ε", by_epsilon);
    std::fs::write(out.join("accuracy-by-epsilon.svg"), eps.to_svg())?;
    Ok(())
}

//! Times local training steps and an evaluation at a few model sizes, to choose the
//! demo's defaults on a small machine:
//! `cargo run --release -p privagg-lm --example step_time [hidden ...]`.

use std::time::Instant;

use privagg_lm::{ModelConfig, SplitOptions, TINY_SHAKESPEARE, TrainOptions, evaluate, local_update, split};

fn main() -> Result<(), privagg_lm::LmError> {
    let data = split(TINY_SHAKESPEARE, &SplitOptions::default())?;
    let hidden: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let hidden = if hidden.is_empty() { vec![128, 256] } else { hidden };
    for h in hidden {
        let config = ModelConfig { vocab: data.vocab.len(), embed: 32, hidden: h };
        let global = config.init(1);
        for batch in [32, 64] {
            let options = TrainOptions { steps: 10, batch, seq_len: 64, ..TrainOptions::default() };
            let t = Instant::now();
            let local = local_update(config, &global, &data.clients[0].tokens, &options, 1)?;
            let per_step = t.elapsed().as_secs_f64() / options.steps as f64;
            println!(
                "H = {h:4} (dim {:7}), batch {batch:3} × 64: {:.1} ms a step, {:.0} chars/s, loss {:.3}",
                config.dim(),
                per_step * 1e3,
                (batch * 64) as f64 / per_step,
                local.train_loss
            );
        }
        let t = Instant::now();
        let e = evaluate(config, &global, &data.test, 50, 100)?;
        println!("  evaluation of {} chars: {:.2} s (accuracy {:.3})", e.chars, t.elapsed().as_secs_f64(), e.accuracy);
    }
    Ok(())
}

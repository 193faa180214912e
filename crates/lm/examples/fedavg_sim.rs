//! FedAvg in one process, without privagg (no masking, no DP): for tuning the demo's
//! defaults quickly. `cargo run --release -p privagg-lm --example fedavg_sim --
//! ROUNDS SEATS STEPS LR HIDDEN DECAY_ROUNDS MOMENTUM`.

use std::time::Instant;

use privagg_lm::{ModelConfig, SplitOptions, TINY_SHAKESPEARE, TrainOptions, evaluate, local_update, split};

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() -> Result<(), privagg_lm::LmError> {
    let (rounds, clients, steps, lr, hidden, decay) =
        (arg(1, 30usize), arg(2, 10usize), arg(3, 20usize), arg(4, 3e-3f64), arg(5, 128usize), arg(6, 8.0f64));
    let momentum = arg(7, 0.0f32);
    let data = split(TINY_SHAKESPEARE, &SplitOptions::default())?;
    let config = ModelConfig { vocab: data.vocab.len(), embed: 32, hidden };
    let mut global = config.init(1);
    let mut velocity = vec![0f32; global.len()];
    let options = TrainOptions { steps, lr, ..TrainOptions::default() };
    let started = Instant::now();
    for round in 1..=rounds {
        let updates: Vec<Result<Vec<f32>, privagg_lm::LmError>> = std::thread::scope(|s| {
            let halves: Vec<_> = (0..2)
                .map(|w| {
                    let (data, global) = (&data, &global);
                    s.spawn(move || {
                        let sample = privagg_lm::sample_roles(data.clients.len(), clients, round as u64, 7);
                        (w..clients)
                            .step_by(2)
                            .filter_map(|i| sample.as_ref().ok().map(|s| s[i]))
                            .map(|c| {
                                let seed = (round * 1000 + c) as u64;
                                local_update(
                                    config,
                                    global,
                                    &data.clients[c].tokens,
                                    &options.at_round(round as u64 - 1, decay),
                                    seed,
                                )
                                .map(|l| l.update)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            halves.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        let n = updates.len() as f32;
        let mut mean = vec![0f32; global.len()];
        for u in updates {
            let u = u?;
            mean.iter_mut().zip(&u).for_each(|(m, d)| *m += d / n);
        }
        for ((g, v), m) in global.iter_mut().zip(velocity.iter_mut()).zip(&mean) {
            *v = momentum * *v + m;
            *g += *v;
        }
        let e = evaluate(config, &global, &data.test, 50, 100)?;
        println!(
            "round {round}: loss {:.3} ppl {:.2} acc {:.3} at {:.0} s",
            e.loss,
            e.perplexity(),
            e.accuracy,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

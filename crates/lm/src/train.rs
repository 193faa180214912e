//! Local training (a client's round: a few Adam steps from the global model, the update
//! is new − global) and evaluation (test loss, perplexity, next-character accuracy).

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::RngExt;
use rand::SeedableRng;

use crate::LmError;
use crate::model::{CharGru, ModelConfig};

/// How a client trains in one round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainOptions {
    /// Adam steps per round.
    pub steps: usize,
    /// Windows per batch.
    pub batch: usize,
    /// Characters per window (the truncated back-propagation length).
    pub seq_len: usize,
    /// Adam's learning rate (no weight decay; the moments restart every round).
    pub lr: f64,
    /// Each step's gradient is clipped to this global L2 norm before Adam sees it
    /// (`None`: no clipping). Keeps a recurrent model's rare gradient spikes from
    /// throwing the local model off.
    pub grad_clip: Option<f64>,
}

impl TrainOptions {
    /// These options with the learning rate of round `round` (from 0) of a schedule that
    /// divides `lr` by 1 + round / `decay_rounds` (halved after `decay_rounds` rounds).
    /// Adam's moments restart every round, so its first steps are about `lr` in every
    /// coordinate whatever the gradient: without decay that sets a floor on the loss.
    pub fn at_round(&self, round: u64, decay_rounds: f64) -> Self {
        let factor = if decay_rounds > 0.0 { 1.0 + round as f64 / decay_rounds } else { 1.0 };
        Self { lr: self.lr / factor, ..*self }
    }
}

impl TrainOptions {
    /// These options with the learning rate scaled down linearly over the last
    /// `cooldown` rounds of `rounds` (rounds counted from 0): × (rounds − round) /
    /// `cooldown` once that is below 1, so the last round trains at 1/`cooldown` of the
    /// rate. The noise of the last rounds' updates settles instead of staying at the level
    /// the learning rate sets. `cooldown` = 0: unchanged.
    pub fn cooled_down(&self, round: u64, rounds: u64, cooldown: u64) -> Self {
        if cooldown == 0 {
            return *self;
        }
        let factor = (rounds.saturating_sub(round) as f64 / cooldown as f64).clamp(0.0, 1.0);
        Self { lr: self.lr * factor, ..*self }
    }
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self { steps: 20, batch: 32, seq_len: 64, lr: 3e-3, grad_clip: Some(1.0) }
    }
}

/// What one client's round of local training produced.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalUpdate {
    /// new − global, in the flat order.
    pub update: Vec<f32>,
    /// Mean training loss over the round's steps (nats per character).
    pub train_loss: f64,
}

/// Trains from the flat `global` model on `tokens` (one client's text) for
/// `options.steps` Adam steps on random windows drawn with `seed`; returns new − global.
///
/// Errors: `global` of the wrong length, or text shorter than one window plus one.
pub fn local_update(
    config: ModelConfig,
    global: &[f32],
    tokens: &[u32],
    options: &TrainOptions,
    seed: u64,
) -> Result<LocalUpdate, LmError> {
    let window = options.seq_len + 1;
    if tokens.len() < window || options.batch == 0 || options.seq_len == 0 {
        return Err(LmError::Data(format!(
            "{} characters of text cannot give windows of {} characters",
            tokens.len(),
            window
        )));
    }
    let model = CharGru::from_flat(config, global)?;
    let vars = model.vars();
    let params = ParamsAdamW { lr: options.lr, weight_decay: 0.0, ..ParamsAdamW::default() };
    let mut adam = AdamW::new(vars.clone(), params)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut total = 0.0;
    for _ in 0..options.steps {
        let (inputs, targets) = batch(tokens, options, &mut rng)?;
        let loss = model.loss(&inputs, &targets)?;
        total += f64::from(loss.to_scalar::<f32>()?);
        let mut grads = loss.backward()?;
        if let Some(max) = options.grad_clip {
            let mut sq = 0.0f64;
            for v in &vars {
                if let Some(g) = grads.get(v.as_tensor()) {
                    sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
                }
            }
            let norm = sq.sqrt();
            if norm > max {
                for v in &vars {
                    if let Some(g) = grads.remove(v.as_tensor()) {
                        grads.insert(v.as_tensor(), (g * (max / norm))?);
                    }
                }
            }
        }
        adam.step(&grads)?;
    }
    let new = model.to_flat()?;
    let update = new.iter().zip(global).map(|(n, g)| n - g).collect();
    Ok(LocalUpdate { update, train_loss: total / options.steps.max(1) as f64 })
}

/// A batch of random windows: inputs and the next characters, both [batch, seq_len].
fn batch(
    tokens: &[u32],
    options: &TrainOptions,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<(Tensor, Tensor), LmError> {
    let (b, t) = (options.batch, options.seq_len);
    let mut inputs = Vec::with_capacity(b * t);
    let mut targets = Vec::with_capacity(b * t);
    for _ in 0..b {
        let start = rng.random_range(0..tokens.len() - t);
        inputs.extend_from_slice(&tokens[start..start + t]);
        targets.extend_from_slice(&tokens[start + 1..start + t + 1]);
    }
    Ok((Tensor::from_vec(inputs, (b, t), &Device::Cpu)?, Tensor::from_vec(targets, (b, t), &Device::Cpu)?))
}

/// Test figures of a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy per character, in nats.
    pub loss: f64,
    /// Fraction of characters whose most likely prediction is right.
    pub accuracy: f64,
    /// Characters scored.
    pub chars: usize,
}

impl Evaluation {
    /// e^loss: the perplexity per character.
    pub fn perplexity(&self) -> f64 {
        self.loss.exp()
    }
}

/// Scores the flat model on `tokens` read as `streams` consecutive pieces side by side,
/// `chunk` characters at a time, the hidden state carried from chunk to chunk (so every
/// character but each stream's first is predicted from all the text before it in its
/// stream). The tail that does not fill the streams evenly is left out.
pub fn evaluate(
    config: ModelConfig,
    flat: &[f32],
    tokens: &[u32],
    streams: usize,
    chunk: usize,
) -> Result<Evaluation, LmError> {
    let model = CharGru::from_flat(config, flat)?;
    let streams = streams.max(1);
    let per = tokens.len().saturating_sub(1) / streams;
    if per == 0 || chunk == 0 {
        return Err(LmError::Data(format!("{} characters are too few to evaluate", tokens.len())));
    }
    let (mut loss_sum, mut right, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut state: Option<Tensor> = None;
    let mut at = 0;
    while at < per {
        let len = chunk.min(per - at);
        let mut inputs = Vec::with_capacity(streams * len);
        let mut targets = Vec::with_capacity(streams * len);
        for s in 0..streams {
            let start = s * per + at;
            inputs.extend_from_slice(&tokens[start..start + len]);
            targets.extend_from_slice(&tokens[start + 1..start + len + 1]);
        }
        let inputs = Tensor::from_vec(inputs, (streams, len), &Device::Cpu)?;
        let targets = Tensor::from_vec(targets, streams * len, &Device::Cpu)?;
        let (logits, h) = model.forward(&inputs, state.as_ref())?;
        let loss = candle_nn::loss::cross_entropy(&logits, &targets)?;
        loss_sum += f64::from(loss.to_scalar::<f32>()?) * (streams * len) as f64;
        let predicted = logits.argmax(D::Minus1)?;
        right += f64::from(predicted.eq(&targets)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?);
        count += streams * len;
        state = Some(h.detach());
        at += len;
    }
    Ok(Evaluation { loss: loss_sum / count as f64, accuracy: right / count as f64, chars: count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_steps_reduce_the_loss_on_a_tiny_text() {
        let text: Vec<u32> =
            b"abcabdabcabdabcabdabcabdabcabdabcabdabcabd".iter().map(|&c| u32::from(c - b'a')).collect();
        let config = ModelConfig { vocab: 4, embed: 4, hidden: 8 };
        let global = config.init(3);
        let before = evaluate(config, &global, &text, 2, 8).expect("evaluate");
        let options = TrainOptions { steps: 30, batch: 8, seq_len: 8, lr: 1e-2, grad_clip: Some(1.0) };
        let local = local_update(config, &global, &text, &options, 4).expect("train");
        assert_eq!(local.update.len(), config.dim());
        let new: Vec<f32> = global.iter().zip(&local.update).map(|(g, u)| g + u).collect();
        let after = evaluate(config, &new, &text, 2, 8).expect("evaluate");
        assert!(after.loss < before.loss * 0.7, "loss {} → {}", before.loss, after.loss);
        assert!(after.accuracy > 0.5, "accuracy {}", after.accuracy);
    }

    #[test]
    fn one_step_reduces_the_batch_loss() {
        let text: Vec<u32> = (0..200u32).map(|i| (i * 7 + i / 3) % 5).collect();
        let config = ModelConfig { vocab: 5, embed: 3, hidden: 6 };
        let global = config.init(5);
        let options = TrainOptions { steps: 1, batch: 4, seq_len: 10, lr: 1e-2, grad_clip: None };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (inputs, targets) = batch(&text, &options, &mut rng).expect("batch");
        let loss_of = |flat: &[f32]| {
            let model = CharGru::from_flat(config, flat).expect("model");
            model.loss(&inputs, &targets).and_then(|l| Ok(l.to_scalar::<f32>()?)).expect("loss")
        };
        // The same seed draws the same batch inside local_update.
        let local = local_update(config, &global, &text, &options, 9).expect("train");
        let new: Vec<f32> = global.iter().zip(&local.update).map(|(g, u)| g + u).collect();
        assert!(loss_of(&new) < loss_of(&global));
    }

    #[test]
    fn the_cooldown_scales_the_last_rounds_down() {
        let o = TrainOptions { lr: 1.0, ..TrainOptions::default() };
        assert_eq!(o.cooled_down(5, 10, 0).lr, 1.0);
        assert_eq!(o.cooled_down(0, 10, 4).lr, 1.0);
        assert_eq!(o.cooled_down(6, 10, 4).lr, 1.0);
        assert_eq!(o.cooled_down(7, 10, 4).lr, 0.75);
        assert_eq!(o.cooled_down(9, 10, 4).lr, 0.25);
        assert_eq!(o.cooled_down(12, 10, 4).lr, 0.0);
    }

    #[test]
    fn too_short_a_text_is_an_error() {
        let config = ModelConfig { vocab: 3, embed: 2, hidden: 2 };
        let options = TrainOptions { seq_len: 10, ..TrainOptions::default() };
        assert!(local_update(config, &config.init(0), &[0, 1, 2], &options, 0).is_err());
    }
}

//! The Shakespeare task: a character-level GRU trained on Tiny Shakespeare split by
//! speaking role (privagg-lm), scored on held-out text by loss, perplexity and
//! next-character accuracy.
//!
//! As in LEAF, every role with enough text is a client of the population and each round
//! trains a sample of them: the demo's connected clients are seats, and in each round
//! seat c trains as the c-th role of that round's sample (distinct roles). A role's text
//! goes through one seat per round at most, so the ε reported per seat also bounds
//! what a round reveals about one role.

use ndarray::{Array1, ArrayView1};
use privagg_lm::{FederatedData, ModelConfig, SplitOptions, TINY_SHAKESPEARE, TrainOptions};

use super::{Metrics, Task};

/// What the Shakespeare task trains.
#[derive(Clone, Debug, PartialEq)]
pub struct ShakespeareOptions {
    /// GRU hidden width.
    pub hidden: usize,
    /// Embedding width.
    pub embed: usize,
    /// Local training per round.
    pub train: TrainOptions,
    /// The local learning rate is divided by 1 + round / `decay_rounds` (0: constant).
    pub decay_rounds: f64,
    /// The local learning rate also falls linearly over the last `cooldown` fraction of
    /// the `rounds` (⌊cooldown · rounds⌋ rounds, K), to 1/K of itself in the last round
    /// (0: no cooldown; a short session may have none).
    pub cooldown: f64,
    /// The session's rounds (for the cooldown).
    pub rounds: u64,
    /// Held-out characters scored after each round.
    pub test_chars: usize,
    /// With a value above 0: a role trains at most this many passes over its text per
    /// round (steps = ⌈epochs · len / (batch · seq_len)⌉, at least 1, at most
    /// `train.steps`), so small roles are not trained for dozens of epochs; 0: always
    /// `train.steps`.
    pub max_epochs: f64,
}

impl Default for ShakespeareOptions {
    fn default() -> Self {
        Self {
            hidden: 128,
            embed: 32,
            train: TrainOptions { steps: 40, batch: 32, seq_len: 64, lr: 1e-2, grad_clip: Some(1.0) },
            decay_rounds: 30.0,
            cooldown: 0.35,
            rounds: 110,
            test_chars: 50_000,
            max_epochs: 4.0,
        }
    }
}

/// The Shakespeare task's role population and test text.
pub struct Shakespeare {
    data: FederatedData,
    config: ModelConfig,
    options: ShakespeareOptions,
    seed: u64,
}

impl Shakespeare {
    /// Splits the shipped corpus into roles and held-out text, for `clients` seats.
    pub fn new(clients: u32, options: ShakespeareOptions, seed: u64) -> Result<Self, privagg_lm::LmError> {
        let split = SplitOptions { test_chars: Some(options.test_chars), ..SplitOptions::default() };
        let data = privagg_lm::split(TINY_SHAKESPEARE, &split)?;
        if data.clients.len() < clients as usize {
            return Err(privagg_lm::LmError::Config(format!(
                "the text has {} roles, fewer than {clients} clients",
                data.clients.len()
            )));
        }
        let config = ModelConfig { vocab: data.vocab.len(), embed: options.embed, hidden: options.hidden };
        Ok(Self { data, config, options, seed })
    }

    /// The roles of the population, largest first.
    pub fn roles(&self) -> Vec<&str> {
        self.data.clients.iter().map(|c| c.role.as_str()).collect()
    }

    /// Characters of training text over all roles.
    pub fn train_chars(&self) -> usize {
        self.data.clients.iter().map(|c| c.tokens.len()).sum()
    }
}

impl Task for Shakespeare {
    fn dim(&self) -> usize {
        self.config.dim()
    }

    fn initial_model(&self) -> Option<Array1<f32>> {
        Some(Array1::from(self.config.init(self.seed)))
    }

    fn train(&self, client: usize, round: u64, model: ArrayView1<'_, f32>) -> Result<Array1<f32>, String> {
        let sample = privagg_lm::sample_roles(self.data.clients.len(), client + 1, round, self.seed)
            .map_err(|e| e.to_string())?;
        let role = sample.get(client).copied().ok_or_else(|| format!("no seat {client}"))?;
        let data = &self.data.clients[role];
        let global = model.to_vec();
        let seed = self.seed ^ (round << 20) ^ client as u64;
        let mut train = self.options.train.at_round(round, self.options.decay_rounds).cooled_down(
            round,
            self.options.rounds,
            (self.options.cooldown * self.options.rounds as f64).floor() as u64,
        );
        if self.options.max_epochs > 0.0 {
            let per_step = (train.batch * train.seq_len).max(1) as f64;
            let steps = (self.options.max_epochs * data.tokens.len() as f64 / per_step).ceil() as usize;
            train.steps = steps.clamp(1, train.steps);
        }
        let local =
            privagg_lm::local_update(self.config, &global, &data.tokens, &train, seed).map_err(|e| e.to_string())?;
        Ok(Array1::from(local.update))
    }

    fn evaluate(&self, model: ArrayView1<'_, f32>) -> Metrics {
        let flat = model.to_vec();
        match privagg_lm::evaluate(self.config, &flat, &self.data.test, 50, 100) {
            Ok(e) => Metrics { loss: e.loss, perplexity: Some(e.perplexity()), accuracy: Some(e.accuracy) },
            Err(e) => {
                tracing::warn!(error = %e, "cannot evaluate the model");
                Metrics { loss: f64::NAN, perplexity: None, accuracy: None }
            }
        }
    }

    fn drops_out(&self) -> bool {
        false
    }
}

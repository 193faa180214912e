//! The character model: an embedding, one GRU layer and a linear read-out, held as a
//! flat `f32` vector in a fixed order so that privagg can aggregate it.
//!
//! The flat layout, each tensor row-major, in this order (V = vocabulary, E = embedding
//! width, H = hidden width):
//!
//! | name         | shape     | use                                      |
//! |--------------|-----------|------------------------------------------|
//! | `embed`      | [V, E]    | character embeddings                     |
//! | `gru.w_ih`   | [3H, E]   | input weights of the reset, update, new gates |
//! | `gru.w_hh`   | [3H, H]   | recurrent weights, same gate order       |
//! | `gru.b_ih`   | [3H]      | input bias                               |
//! | `gru.b_hh`   | [3H]      | recurrent bias                           |
//! | `head.w`     | [V, H]    | read-out weights                         |
//! | `head.b`     | [V]       | read-out bias                            |
//!
//! The GRU follows PyTorch's `nn.GRU`: r = σ(W_ir x + b_ir + W_hr h + b_hr),
//! z = σ(W_iz x + b_iz + W_hz h + b_hz), n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),
//! h' = (1 − z) ⊙ n + z ⊙ h.

use candle_core::{DType, Device, Tensor, Var};
use rand::{RngExt, SeedableRng};

use crate::LmError;

/// The model's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// Vocabulary size V.
    pub vocab: usize,
    /// Embedding width E.
    pub embed: usize,
    /// GRU hidden width H.
    pub hidden: usize,
}

impl ModelConfig {
    /// The named tensors of the flat vector, with their shapes, in the flat order.
    pub fn layout(&self) -> Vec<(&'static str, Vec<usize>)> {
        let (v, e, h) = (self.vocab, self.embed, self.hidden);
        vec![
            ("embed", vec![v, e]),
            ("gru.w_ih", vec![3 * h, e]),
            ("gru.w_hh", vec![3 * h, h]),
            ("gru.b_ih", vec![3 * h]),
            ("gru.b_hh", vec![3 * h]),
            ("head.w", vec![v, h]),
            ("head.b", vec![v]),
        ]
    }

    /// Length of the flat vector (the privagg model dimension).
    pub fn dim(&self) -> usize {
        self.layout().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    /// A fresh flat model from `seed`: embeddings uniform in ±1, the GRU and the
    /// read-out uniform in ±1/√H (PyTorch's default), biases likewise.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let k = 1.0 / (self.hidden as f32).sqrt();
        let mut flat = Vec::with_capacity(self.dim());
        for (name, shape) in self.layout() {
            let bound = if name == "embed" { 1.0 } else { k };
            let n: usize = shape.iter().product();
            flat.extend((0..n).map(|_| rng.random_range(-bound..bound)));
        }
        flat
    }
}

/// A model whose parameters are candle variables (trainable), on the CPU.
pub struct CharGru {
    config: ModelConfig,
    params: Vec<Var>,
}

impl CharGru {
    /// The model of the flat vector `flat` (see the module docs for the order); errors
    /// when its length is not `config.dim()`.
    pub fn from_flat(config: ModelConfig, flat: &[f32]) -> Result<Self, LmError> {
        if flat.len() != config.dim() {
            return Err(LmError::Dimension { expected: config.dim(), got: flat.len() });
        }
        let mut offset = 0;
        let mut params = Vec::new();
        for (_, shape) in config.layout() {
            let n: usize = shape.iter().product();
            let t = Tensor::from_slice(&flat[offset..offset + n], shape.as_slice(), &Device::Cpu)?;
            params.push(Var::from_tensor(&t)?);
            offset += n;
        }
        Ok(Self { config, params })
    }

    /// The parameters as one flat vector, in the documented order.
    pub fn to_flat(&self) -> Result<Vec<f32>, LmError> {
        let mut flat = Vec::with_capacity(self.config.dim());
        for p in &self.params {
            flat.extend(p.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(flat)
    }

    /// The parameters by name, in the documented order.
    pub fn named_tensors(&self) -> Vec<(&'static str, Tensor)> {
        self.config.layout().into_iter().zip(&self.params).map(|((name, _), v)| (name, v.as_tensor().clone())).collect()
    }

    /// The trainable variables, in the documented order.
    pub fn vars(&self) -> Vec<Var> {
        self.params.clone()
    }

    /// The sizes.
    pub fn config(&self) -> ModelConfig {
        self.config
    }

    fn p(&self, i: usize) -> &Tensor {
        self.params[i].as_tensor()
    }

    /// Runs the model over `tokens` ([B, T], u32) from hidden state `h0` ([B, H]; zeros
    /// if `None`). Returns the logits of the next character at every position
    /// ([B·T, V], row b·T + t) and the last hidden state ([B, H]).
    pub fn forward(&self, tokens: &Tensor, h0: Option<&Tensor>) -> Result<(Tensor, Tensor), LmError> {
        let (b, t) = tokens.dims2()?;
        let h = self.config.hidden;
        // The input side of the gates depends on the character alone, so it is one table
        // of V rows (embed · W_ihᵀ + b_ih, [V, 3H]) computed once per call, and each step
        // looks its characters up in it: the same model as projecting each step's
        // embeddings, without a [B, E] × [E, 3H] product per step (forward and backward).
        let table = self.p(0).matmul(&self.p(1).t()?)?.broadcast_add(self.p(3))?;
        // Step-major ids, so each step's ids are one contiguous slice. (Looking each step
        // up apart keeps back-propagation linear in T: the gradient of a narrow of one
        // [B, T, 3H] projection would be a zero-padded copy of the whole at every step.)
        let ids = tokens.t()?.contiguous()?;
        let w_hh = self.p(2).t()?;
        let b_hh = self.p(4);
        let mut state = match h0 {
            Some(h0) => h0.clone(),
            None => Tensor::zeros((b, h), DType::F32, &Device::Cpu)?,
        };
        let mut outputs = Vec::with_capacity(t);
        for step in 0..t {
            let gi = table.index_select(&ids.get(step)?, 0)?; // [B, 3H]
            let gh = state.matmul(&w_hh)?.broadcast_add(b_hh)?;
            let rz = candle_nn::ops::sigmoid(&(gi.narrow(1, 0, 2 * h)? + gh.narrow(1, 0, 2 * h)?)?)?;
            let r = rz.narrow(1, 0, h)?;
            let z = rz.narrow(1, h, h)?;
            let n = (gi.narrow(1, 2 * h, h)? + (r * gh.narrow(1, 2 * h, h)?)?)?.tanh()?;
            // h' = (1 − z) n + z h = n + z (h − n)
            state = (&n + (z * (&state - &n)?)?)?;
            outputs.push(state.clone());
        }
        let hs = Tensor::stack(&outputs, 1)?.reshape((b * t, h))?;
        let logits = hs.matmul(&self.p(5).t()?)?.broadcast_add(self.p(6))?;
        Ok((logits, state))
    }

    /// Mean cross-entropy of predicting `targets` ([B, T], u32) from `inputs` ([B, T]).
    pub fn loss(&self, inputs: &Tensor, targets: &Tensor) -> Result<Tensor, LmError> {
        let (logits, _) = self.forward(inputs, None)?;
        Ok(candle_nn::loss::cross_entropy(&logits, &targets.flatten_all()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_named_tensors_round_trip() {
        let config = ModelConfig { vocab: 7, embed: 3, hidden: 4 };
        let flat = config.init(1);
        assert_eq!(flat.len(), 7 * 3 + 12 * 3 + 12 * 4 + 12 + 12 + 7 * 4 + 7);
        let model = CharGru::from_flat(config, &flat).expect("model");
        assert_eq!(model.to_flat().expect("flat"), flat);
        // The named tensors are the flat vector's consecutive slices, in order.
        let mut offset = 0;
        for ((name, shape), (got, tensor)) in config.layout().into_iter().zip(model.named_tensors()) {
            assert_eq!(name, got);
            assert_eq!(tensor.dims(), shape.as_slice());
            let values = tensor.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("values");
            assert_eq!(values, flat[offset..offset + values.len()]);
            offset += values.len();
        }
        assert_eq!(offset, flat.len());
        assert!(matches!(CharGru::from_flat(config, &flat[1..]), Err(LmError::Dimension { .. })));
    }

    /// The GRU of the module docs in plain arithmetic, one sequence: the logits of every
    /// position, row-major [T, V].
    fn reference_logits(config: ModelConfig, flat: &[f32], tokens: &[u32]) -> Vec<f32> {
        let (v, e, h) = (config.vocab, config.embed, config.hidden);
        let mut at = 0;
        let mut take = |n: usize| {
            let s = &flat[at..at + n];
            at += n;
            s
        };
        let (embed, w_ih, w_hh, b_ih, b_hh, head_w, head_b) =
            (take(v * e), take(3 * h * e), take(3 * h * h), take(3 * h), take(3 * h), take(v * h), take(v));
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        let mut state = vec![0f32; h];
        let mut logits = Vec::new();
        for &c in tokens {
            let x = &embed[c as usize * e..(c as usize + 1) * e];
            let gi: Vec<f32> =
                (0..3 * h).map(|g| b_ih[g] + (0..e).map(|k| w_ih[g * e + k] * x[k]).sum::<f32>()).collect();
            let gh: Vec<f32> =
                (0..3 * h).map(|g| b_hh[g] + (0..h).map(|k| w_hh[g * h + k] * state[k]).sum::<f32>()).collect();
            state = (0..h)
                .map(|j| {
                    let r = sigmoid(gi[j] + gh[j]);
                    let z = sigmoid(gi[h + j] + gh[h + j]);
                    let n = (gi[2 * h + j] + r * gh[2 * h + j]).tanh();
                    (1.0 - z) * n + z * state[j]
                })
                .collect();
            logits.extend((0..v).map(|o| head_b[o] + (0..h).map(|k| head_w[o * h + k] * state[k]).sum::<f32>()));
        }
        logits
    }

    #[test]
    fn forward_matches_the_gate_equations() {
        let config = ModelConfig { vocab: 6, embed: 3, hidden: 5 };
        let flat = config.init(4);
        let model = CharGru::from_flat(config, &flat).expect("model");
        let seqs = [[0u32, 5, 2, 2, 1], [3, 4, 0, 1, 5]];
        let tokens = Tensor::from_iter(seqs.iter().flatten().copied(), &Device::Cpu)
            .and_then(|t| t.reshape((2, 5)))
            .expect("tokens");
        let (logits, _) = model.forward(&tokens, None).expect("forward");
        let got = logits.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("logits");
        let want: Vec<f32> = seqs.iter().flat_map(|s| reference_logits(config, &flat, s)).collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    #[test]
    fn forward_shapes() {
        let config = ModelConfig { vocab: 5, embed: 2, hidden: 3 };
        let model = CharGru::from_flat(config, &config.init(2)).expect("model");
        let tokens = Tensor::from_slice(&[0u32, 1, 2, 3, 4, 0, 1, 2], (2, 4), &Device::Cpu).expect("tokens");
        let (logits, h) = model.forward(&tokens, None).expect("forward");
        assert_eq!(logits.dims(), [8, 5]);
        assert_eq!(h.dims(), [2, 3]);
    }
}

//! The linear task: synthetic non-IID regression data.
//!
//! Features whose variance decays with the index (like real features of decreasing
//! importance), a shared true model on the leading features, and per-client feature
//! shifts and model drift, so no two clients see the same distribution. Each client runs
//! a few steps of gradient descent from the global model and submits the difference.

use ndarray::{Array1, Array2, ArrayView1, Axis};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use super::{Metrics, Task};

/// Synthetic regression data for one client (or the test set).
struct Dataset {
    x: Array2<f32>,
    y: Array1<f32>,
}

impl Dataset {
    fn loss(&self, w: ArrayView1<'_, f32>) -> f64 {
        let r = self.x.dot(&w) - &self.y;
        0.5 * f64::from(r.dot(&r)) / self.y.len() as f64
    }

    /// A few steps of gradient descent from `w`; returns the change.
    fn local_update(&self, w: ArrayView1<'_, f32>) -> Array1<f32> {
        let mut local = w.to_owned();
        let m = self.y.len() as f32;
        for _ in 0..5 {
            let residual = self.x.dot(&local) - &self.y;
            let grad = self.x.t().dot(&residual) / m;
            local.scaled_add(-0.5, &grad);
        }
        local - w
    }
}

/// The linear task's clients and test set.
pub struct Linear {
    clients: Vec<Dataset>,
    test: Dataset,
    dim: usize,
}

impl Linear {
    /// Builds non-IID data for `clients` clients of `examples` examples in dimension
    /// `dim` from `seed`: feature j has scale 1/(1 + j/10); the true model lives on the
    /// first 20 features; client c shifts its features and its model by its own offsets.
    pub fn new(clients: u32, dim: usize, examples: usize, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let d = dim;
        let scale: Vec<f32> = (0..d).map(|j| 1.0 / (1.0 + j as f32 / 10.0)).collect();
        let support = d.min(20);
        let truth: Vec<f32> = (0..d).map(|j| if j < support { normal(&mut rng) * 0.4 } else { 0.0 }).collect();
        let make = |n: usize, shift: &[f32], drift: &[f32], rng: &mut rand_chacha::ChaCha8Rng| {
            let mut x = Array2::<f32>::zeros((n, d));
            for mut row in x.axis_iter_mut(Axis(0)) {
                for j in 0..d {
                    row[j] = (normal(rng) + shift[j]) * scale[j];
                }
            }
            let w: Array1<f32> = truth.iter().zip(drift).map(|(t, dr)| t + dr).collect();
            let y = x.dot(&w) + Array1::from_shape_fn(n, |_| normal(rng) * 0.05);
            Dataset { x, y }
        };
        let zero = vec![0.0f32; d];
        let clients = (0..clients)
            .map(|_| {
                let shift: Vec<f32> = (0..d).map(|j| if j < support { normal(&mut rng) * 0.8 } else { 0.0 }).collect();
                let drift: Vec<f32> = (0..d).map(|j| if j < support { normal(&mut rng) * 0.05 } else { 0.0 }).collect();
                make(examples, &shift, &drift, &mut rng)
            })
            .collect();
        let test = make(400, &zero, &zero, &mut rng);
        Self { clients, test, dim }
    }
}

/// A standard normal draw (synthetic data, not a privacy mechanism).
fn normal(rng: &mut rand_chacha::ChaCha8Rng) -> f32 {
    StandardNormal.sample(rng)
}

impl Task for Linear {
    fn dim(&self) -> usize {
        self.dim
    }

    fn initial_model(&self) -> Option<Array1<f32>> {
        None
    }

    fn train(&self, client: usize, _round: u64, model: ArrayView1<'_, f32>) -> Result<Array1<f32>, String> {
        let data = self.clients.get(client).ok_or_else(|| format!("no client {client}"))?;
        Ok(data.local_update(model))
    }

    fn evaluate(&self, model: ArrayView1<'_, f32>) -> Metrics {
        Metrics { loss: self.test.loss(model), perplexity: None, accuracy: None }
    }

    fn drops_out(&self) -> bool {
        true
    }
}

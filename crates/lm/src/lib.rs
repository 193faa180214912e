//! `privagg-lm`: a federated character-level language model for privagg's demo.
//!
//! Tiny Shakespeare is split by speaking role into non-IID clients with held-out test
//! text ([`data`]); a small GRU ([`model`]) is held as a flat `f32` vector in a fixed,
//! documented order, which is what privagg aggregates; a client trains a few Adam steps
//! from the global model and returns new − global ([`train`]). CPU only, with candle.

pub mod data;
pub mod model;
pub mod svg;
pub mod train;
pub mod vocab;

pub use data::{ClientData, FederatedData, SplitOptions, TINY_SHAKESPEARE, sample_roles, split};
pub use model::{CharGru, ModelConfig};
pub use train::{Evaluation, LocalUpdate, TrainOptions, evaluate, local_update};
pub use vocab::Vocab;

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    /// The text cannot be used (empty, no speech, a character outside the vocabulary,
    /// too short for a window).
    #[error("data: {0}")]
    Data(String),
    /// An option is out of range.
    #[error("configuration: {0}")]
    Config(String),
    /// A flat model of the wrong length.
    #[error("the model has {got} parameters, expected {expected}")]
    Dimension {
        /// What the configuration needs.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// The tensor library failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

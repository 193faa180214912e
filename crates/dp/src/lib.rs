//! Differential privacy for privagg: distributed noise under secure aggregation.
//!
//! The privacy unit is one client identity — a device, or a person when each person
//! holds one certificate or token. Neighbouring datasets differ in one client's whole
//! contribution — its update and, with adaptive clipping, its clip indicator — replaced
//! by zeros (zero-out adjacency; with DP-FedAvg's public denominator this is
//! what the accounting bounds, McMahan, Ramage, Talwar, Zhang, ICLR 2018). Each client
//! bounds its update's influence, adds a share of integer noise, and the server only
//! ever sees the sum of at least `n_min` clients, so the sum carries the full noise
//! whoever drops out and no party holds a noiseless sum — provided at most the assumed
//! number of colluders withhold their noise: distributed DP counts honest shares only.
//!
//! Two audiences, two figures. Against the server (and whoever sees who took part) a
//! round is a release at sampling rate 1: this is the headline every command reports and
//! every budget checks, charged per release ([`ledger`]). Against those who see only the
//! released models, random check-ins give amplification by sampling ([`sampling`]).
//!
//! The pipeline follows the distributed discrete Gaussian of Kairouz, Liu, Steinke
//! (ICML 2021) and the distributed Skellam mechanism of Agarwal, Kairouz, Liu
//! (NeurIPS 2021):
//!
//! | step | module |
//! | --- | --- |
//! | flat L2 clip to `C` | [`clip`] |
//! | randomized Hadamard rotation | [`rotation`] |
//! | scale `1/γ`, conditional rounding, mod `2^b` | [`quantize`] |
//! | exact discrete Gaussian / Skellam noise on a CSPRNG | [`noise`], [`rng`] |
//! | the whole client encoding and the server decoding | [`encoding`] |
//! | choose `γ`, the noise share and check wrap-around | [`planner`] |
//! | RDP and PLD accountants (dp_accounting-compatible), analytic Gaussian, zCDP ρ | [`accountant`] |
//! | per-round DP events and the budget check | [`ledger`] |
//! | amplification by random check-ins, against model consumers | [`sampling`] |
//! | the public FedAvg denominator | [`fedavg`] |
//! | adaptive clipping inside secure aggregation | [`adaptive_clip`] |
//!
//! Everything on the privacy path after clipping is integer arithmetic: exact samplers
//! (Canonne, Kamath, Steinke, NeurIPS 2020), an exact integer norm check, and a sum in
//! `Z_{2^b}` — floating-point noise is attackable (Mironov, CCS 2012).

pub mod accountant;
pub mod adaptive_clip;
pub mod clip;
pub mod encoding;
mod error;
pub mod fedavg;
pub mod ledger;
pub mod noise;
pub mod planner;
pub mod quantize;
pub mod rng;
pub mod rotation;
pub mod sampling;

pub use encoding::{
    ClientEncoder, EncodedUpdate, EncodingParams, decode_sum, ensure_enough_survivors, plan_without_dp,
};
pub use error::DpError;
pub use rng::NoiseRng;

//! What a round's `Config` carries for the application (the protocol's opaque payload):
//! how to encode an update, the aggregation mode, and the current global model.
//!
//! Layout: u32 little-endian length of a JSON header, the header, then the model as
//! `dim` little-endian f32. The header is small; the model is raw, so a 10⁶-parameter
//! model costs 4 MB, not a JSON array.

use privagg_dp::noise::NoiseSpec;
use privagg_dp::{EncodingParams, planner::Mechanism};
use serde::{Deserialize, Serialize};

/// How the server aggregates this session's updates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregationMode {
    /// Distributed DP: clipped, noised, unweighted updates; the server divides by the
    /// public expected cohort size.
    Dp {
        /// Noise mechanism.
        mechanism: Mechanism,
        /// Smallest number of inputs a released sum covers (the DP n_min, at most the
        /// protocol's `min_clients`).
        n_min: u32,
        /// Colluding clients whose noise is not counted.
        colluders: u32,
        /// δ of the privacy accounting.
        delta: f64,
        /// ε spent by the rounds before this one.
        epsilon_spent: f64,
    },
    /// No DP: each client clamps its update to [−value_range, value_range], multiplies
    /// it by its weight (clamped to [0, max_weight]) and appends the weight, so the
    /// server learns the total weight and the weighted mean only.
    Weighted {
        /// Bound on each coordinate of an update.
        value_range: f64,
        /// Bound on a client's weight.
        max_weight: f64,
    },
}

/// The application payload of a round's `Config`.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundSettings {
    /// Round number (1-based).
    pub round: u64,
    /// Rounds in the session.
    pub total_rounds: u64,
    /// Aggregation mode.
    pub mode: AggregationMode,
    /// How to encode the update vector (with DP off: the weighted vector, one longer
    /// than the model).
    pub encoding: EncodingParams,
    /// The current global model.
    pub model: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    round: u64,
    total_rounds: u64,
    mode: AggregationMode,
    encoding: EncodingParams,
    model_dim: usize,
}

/// Why a settings payload was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The payload is too short or its lengths disagree.
    #[error("malformed round settings: {0}")]
    Malformed(String),
    /// The JSON header does not parse.
    #[error("malformed round settings header: {0}")]
    Header(#[from] serde_json::Error),
    /// The encoding parameters are invalid.
    #[error("invalid encoding parameters: {0}")]
    Encoding(#[from] privagg_dp::DpError),
}

impl RoundSettings {
    /// The model dimension.
    pub fn model_dim(&self) -> usize {
        self.model.len()
    }

    /// Whether updates carry a weight coordinate (DP off).
    pub fn is_weighted(&self) -> bool {
        matches!(self.mode, AggregationMode::Weighted { .. })
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, SettingsError> {
        let header = serde_json::to_vec(&Header {
            round: self.round,
            total_rounds: self.total_rounds,
            mode: self.mode.clone(),
            encoding: self.encoding.clone(),
            model_dim: self.model.len(),
        })?;
        let mut out = Vec::with_capacity(4 + header.len() + 4 * self.model.len());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        for v in &self.model {
            out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(out)
    }

    /// Decodes and checks a payload: valid encoding parameters whose dimension matches
    /// the model (plus one when weighted) and a finite model.
    pub fn decode(bytes: &[u8]) -> Result<Self, SettingsError> {
        let malformed = |what: &str| SettingsError::Malformed(what.to_owned());
        let len: [u8; 4] = bytes.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(|| malformed("no header"))?;
        let len = u32::from_le_bytes(len) as usize;
        let header = bytes.get(4..4 + len).ok_or_else(|| malformed("header truncated"))?;
        let header: Header = serde_json::from_slice(header)?;
        let model_bytes = &bytes[4 + len..];
        if model_bytes.len() != header.model_dim.saturating_mul(4) {
            return Err(malformed("model length differs from its dimension"));
        }
        let model: Vec<f32> =
            model_bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if model.iter().any(|v| !v.is_finite()) {
            return Err(malformed("model holds NaN or infinity"));
        }
        header.encoding.validate()?;
        let settings = Self {
            round: header.round,
            total_rounds: header.total_rounds,
            mode: header.mode,
            encoding: header.encoding,
            model,
        };
        let expected = settings.model_dim() + usize::from(settings.is_weighted());
        if settings.encoding.dim != expected {
            return Err(malformed("encoding dimension does not fit the model"));
        }
        Ok(settings)
    }

    /// The noise multiplier these settings actually give, as a client can check it:
    /// √(h·s²)/Δ₂ with h = n_min − colluders honest noise shares of variance s² and Δ₂
    /// the norm bound clients enforce. `None` when DP is off.
    pub fn effective_noise_multiplier(&self) -> Option<f64> {
        let AggregationMode::Dp { n_min, colluders, .. } = self.mode else {
            return None;
        };
        let variance = match self.encoding.noise {
            NoiseSpec::DiscreteGaussian { variance } | NoiseSpec::Skellam { variance } => variance.to_f64(),
            NoiseSpec::None => return Some(0.0),
        };
        let privagg_dp::encoding::Rounding::Conditional { norm_bound_sq, .. } = self.encoding.rounding else {
            return Some(0.0);
        };
        let honest = f64::from(n_min.saturating_sub(colluders));
        Some((honest * variance).sqrt() / (norm_bound_sq as f64).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privagg_dp::encoding::Clipping;

    fn weighted(dim: usize) -> RoundSettings {
        RoundSettings {
            round: 2,
            total_rounds: 5,
            mode: AggregationMode::Weighted { value_range: 8.0, max_weight: 1000.0 },
            encoding: EncodingParams::without_dp(dim + 1, 1e-6, 48, Clipping::None, None).unwrap(),
            model: (0..dim).map(|i| i as f32 * 0.5).collect(),
        }
    }

    #[test]
    fn settings_round_trip() {
        let s = weighted(7);
        let bytes = s.encode().unwrap();
        assert_eq!(RoundSettings::decode(&bytes).unwrap(), s);
        assert_eq!(s.effective_noise_multiplier(), None);
    }

    #[test]
    fn malformed_settings_are_refused() {
        let s = weighted(7);
        let bytes = s.encode().unwrap();
        for cut in [0, 3, 10, bytes.len() - 1] {
            assert!(RoundSettings::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut nan = s.clone();
        nan.model[3] = f32::NAN;
        assert!(RoundSettings::decode(&nan.encode().unwrap()).is_err());
        let mut wrong_dim = s.clone();
        wrong_dim.model.pop();
        assert!(RoundSettings::decode(&wrong_dim.encode().unwrap()).is_err());
        let mut header_garbage = bytes.clone();
        header_garbage[5] = b'!';
        assert!(matches!(RoundSettings::decode(&header_garbage), Err(SettingsError::Header(_))));
    }
}

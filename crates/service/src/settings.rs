//! What a round's `Config` carries for the application (the protocol's opaque payload):
//! how to encode an update, the aggregation mode, and the current global model — and
//! the two ends of that encoding: a client's [`RoundSettings::encode_update`] and the
//! server's [`RoundSettings::decode_sum`].
//!
//! Layout: u32 little-endian length of a JSON header, the header, then the model as
//! `dim` little-endian f32. The header is small; the model is raw, so a 10⁶-parameter
//! model costs 4 MB, not a JSON array. The header's JSON is pinned by a golden vector
//! (`test_vectors/wire.json`), so renaming a field of `privagg-dp` cannot change it
//! unnoticed.

use privagg_dp::adaptive_clip::{decode_indicator, indicator_word};
use privagg_dp::encoding::{Clipping, Rounding};
use privagg_dp::noise::{IntegerNoise, NoiseSpec};
use privagg_dp::planner::{Mechanism, effective_noise_multiplier};
use privagg_dp::{ClientEncoder, DpError, EncodingParams, NoiseRng};
use privagg_protocol::codec::{Reader, Writer};
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
        /// Adaptive clipping: each client appends its clip indicator, scaled to
        /// `(b − ½)·κ` with this even κ and noised like the other coordinates
        /// (`privagg_dp::adaptive_clip`). `None`: a fixed clip.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clip_indicator: Option<u64>,
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
    /// The training session: random, fixed for the life of the server's state (a
    /// restarted server carries on the same session). Clients remember rounds per session.
    pub session: [u8; 16],
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
    /// Seconds the server gives a seated client to train before it must advertise its
    /// keys (the first phase's deadline is this plus the phase timeout); 0: not stated.
    pub train_timeout_secs: u32,
}

#[derive(Serialize, Deserialize)]
struct Header {
    session: [u8; 16],
    round: u64,
    total_rounds: u64,
    mode: AggregationMode,
    encoding: EncodingParams,
    model_dim: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    train_timeout_secs: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Why a settings payload was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The payload is too short or its lengths disagree.
    #[error("malformed round settings: {0}")]
    Malformed(&'static str),
    /// The JSON header does not parse.
    #[error("malformed round settings header: {0}")]
    Header(#[from] serde_json::Error),
    /// The encoding parameters are invalid.
    #[error("invalid encoding parameters: {0}")]
    Encoding(#[from] DpError),
}

/// Why an update could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The weight is negative, NaN or infinite.
    #[error("weight {0} is not a finite non-negative number")]
    InvalidWeight(f32),
    /// The update has the wrong length, holds NaN or infinity, or cannot be rounded.
    #[error(transparent)]
    Encoding(#[from] DpError),
}

/// An encoded update: the words to mask, and the update's norm before clipping.
pub struct EncodedInput {
    /// [`RoundSettings::protocol_dim`] words below 2^bits.
    pub words: Vec<u64>,
    /// L2 norm of the update before clipping (DP on; 0 without DP).
    pub pre_clip_norm: f64,
}

impl std::fmt::Debug for EncodedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedInput").field("words", &self.words.len()).finish_non_exhaustive()
    }
}

/// A decoded sum: the summed values of the model's coordinates and, without DP, the
/// total weight that the values are weighted by.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedSum {
    /// Σ of the (clipped, or clamped and weighted) updates, one value per model
    /// coordinate.
    pub values: Vec<f64>,
    /// Σ of the clients' weights (DP off only).
    pub total_weight: Option<f64>,
    /// With adaptive clipping: Σ(b − ½) over the clients plus noise, in count units,
    /// where b says a client's update was under the clip.
    pub clip_count: Option<f64>,
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

    /// The clip indicator's scale κ, with adaptive clipping.
    pub fn clip_indicator(&self) -> Option<u64> {
        match self.mode {
            AggregationMode::Dp { clip_indicator, .. } => clip_indicator,
            AggregationMode::Weighted { .. } => None,
        }
    }

    /// Words per masked vector: the encoding's padded dimension, plus the clip
    /// indicator with adaptive clipping.
    pub fn protocol_dim(&self) -> usize {
        self.encoding.padded_dim + usize::from(self.clip_indicator().is_some())
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, SettingsError> {
        let header = serde_json::to_vec(&Header {
            session: self.session,
            round: self.round,
            total_rounds: self.total_rounds,
            mode: self.mode.clone(),
            encoding: self.encoding.clone(),
            model_dim: self.model.len(),
            train_timeout_secs: self.train_timeout_secs,
        })?;
        let mut w = Writer::with_capacity(4 + header.len() + 4 * self.model.len());
        w.len_prefixed(&header);
        for v in &self.model {
            w.bytes(&v.to_le_bytes());
        }
        Ok(w.into_bytes())
    }

    /// Decodes and checks a payload: valid encoding parameters whose dimension matches
    /// the model (plus one when weighted) and a finite model.
    pub fn decode(bytes: &[u8]) -> Result<Self, SettingsError> {
        let malformed = SettingsError::Malformed;
        let mut r = Reader::new(bytes);
        let header = r.len_prefixed("settings header", u32::MAX.into()).map_err(|_| malformed("header truncated"))?;
        let header: Header = serde_json::from_slice(header)?;
        let model_bytes = r.take(r.remaining()).map_err(|_| malformed("model truncated"))?;
        if model_bytes.len() != header.model_dim.saturating_mul(4) {
            return Err(malformed("model length differs from its dimension"));
        }
        let model: Vec<f32> =
            model_bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if model.iter().any(|v| !v.is_finite()) {
            return Err(malformed("model holds NaN or infinity"));
        }
        header.encoding.validate()?;
        check_mode(&header.mode)?;
        let settings = Self {
            session: header.session,
            round: header.round,
            total_rounds: header.total_rounds,
            mode: header.mode,
            encoding: header.encoding,
            model,
            train_timeout_secs: header.train_timeout_secs,
        };
        let expected = settings.model_dim() + usize::from(settings.is_weighted());
        if settings.encoding.dim != expected {
            return Err(malformed("encoding dimension does not fit the model"));
        }
        Ok(settings)
    }

    /// The noise multiplier the header's own figures claim: √(h·s²)/Δ₂ with
    /// h = n_min − colluders as the server states them and Δ₂ the norm bound clients
    /// enforce — a Gaussian reading that ignores τ. Clients do not rely on it: see
    /// [`PrivacyPolicy`](crate::PrivacyPolicy). `None` when DP is off.
    pub fn effective_noise_multiplier(&self) -> Option<f64> {
        let AggregationMode::Dp { n_min, colluders, .. } = self.mode else {
            return None;
        };
        let variance = match self.encoding.noise {
            NoiseSpec::DiscreteGaussian { variance } | NoiseSpec::Skellam { variance } => variance.to_f64(),
            NoiseSpec::None => return Some(0.0),
        };
        let Rounding::Conditional { norm_bound_sq, .. } = self.encoding.rounding else {
            return Some(0.0);
        };
        let honest = n_min.saturating_sub(colluders) as usize;
        Some(effective_noise_multiplier(honest, variance, (norm_bound_sq as f64).sqrt()))
    }

    /// A client's side: turns `update` (the model's length) into the words it masks.
    /// With DP on: clip, rotate, round and add this client's noise share (drawn from
    /// `rng`). With DP off: clamp each coordinate to the value range, multiply by
    /// `weight` (clamped to `[0, max_weight]`) and append the weight.
    pub fn encode_update(&self, update: &[f32], weight: f32, rng: &mut NoiseRng) -> Result<EncodedInput, UpdateError> {
        let encoder = ClientEncoder::new(self.encoding.clone())?;
        let mut encoded = match self.mode {
            AggregationMode::Dp { clip_indicator, .. } => {
                let mut encoded = encoder.encode(update, rng)?;
                if let (Some(scale), Clipping::L2(clip)) = (clip_indicator, self.encoding.clipping) {
                    let noise = IntegerNoise::new(self.encoding.noise)?;
                    let pre_clip_norm = encoded.pre_clip_norm;
                    let word = indicator_word(pre_clip_norm, clip, scale, &noise, self.encoding.bits, rng)?;
                    encoded.words.push(word);
                }
                encoded
            }
            AggregationMode::Weighted { value_range, max_weight } => {
                if !weight.is_finite() || weight < 0.0 {
                    return Err(UpdateError::InvalidWeight(weight));
                }
                let weight = weight.min(max_weight as f32);
                let range = value_range as f32;
                let mut weighted: Vec<f32> = update.iter().map(|x| x.clamp(-range, range) * weight).collect();
                weighted.push(weight);
                encoder.encode(&weighted, rng)?
            }
        };
        Ok(EncodedInput { words: std::mem::take(&mut encoded.words), pre_clip_norm: encoded.pre_clip_norm })
    }

    /// The server's side: decodes the round's unmasked sum (`encoding.padded_dim` words)
    /// into the summed model coordinates and, without DP, the total weight.
    pub fn decode_sum(&self, sum_words: &[u64]) -> Result<DecodedSum, DpError> {
        let (sum_words, clip_count) = match (self.clip_indicator(), sum_words.split_last()) {
            (Some(scale), Some((&word, rest))) => (rest, Some(decode_indicator(word, scale, self.encoding.bits)?)),
            _ => (sum_words, None),
        };
        let mut values = privagg_dp::decode_sum(sum_words, &self.encoding)?;
        let total_weight = if self.is_weighted() { values.pop() } else { None };
        if values.len() != self.model_dim() {
            return Err(DpError::LengthMismatch { expected: self.model_dim(), actual: values.len() });
        }
        Ok(DecodedSum { values, total_weight, clip_count })
    }
}

/// Refuses modes whose numbers a client cannot use (they come from the server).
fn check_mode(mode: &AggregationMode) -> Result<(), SettingsError> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let ok = match *mode {
        AggregationMode::Weighted { value_range, max_weight } => positive(value_range) && positive(max_weight),
        AggregationMode::Dp { n_min, colluders, delta, epsilon_spent, clip_indicator, .. } => {
            let even = clip_indicator.is_none_or(|k| k >= 2 && k.is_multiple_of(2) && k <= 1 << 60);
            n_min >= 1 && colluders < n_min && positive(delta) && delta < 1.0 && epsilon_spent.is_finite() && even
        }
    };
    if ok { Ok(()) } else { Err(SettingsError::Malformed("aggregation mode out of range")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privagg_dp::encoding::Clipping;

    fn weighted(dim: usize) -> RoundSettings {
        RoundSettings {
            session: [4; 16],
            round: 2,
            total_rounds: 5,
            mode: AggregationMode::Weighted { value_range: 8.0, max_weight: 1000.0 },
            encoding: EncodingParams::without_dp(dim + 1, 1e-6, 48, Clipping::None, None).unwrap(),
            model: (0..dim).map(|i| i as f32 * 0.5).collect(),
            train_timeout_secs: 0,
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
        // A value range or weight a client cannot clamp to (it used to panic the client);
        // JSON has no NaN or infinity, so those do not even parse.
        for (value_range, max_weight) in [(-1.0, 10.0), (1.0, 0.0), (f64::NAN, 10.0), (1.0, f64::INFINITY)] {
            let mut bad = s.clone();
            bad.mode = AggregationMode::Weighted { value_range, max_weight };
            assert!(RoundSettings::decode(&bad.encode().unwrap()).is_err(), "{value_range}, {max_weight}");
        }
        let mut header_garbage = bytes.clone();
        header_garbage[5] = b'!';
        assert!(matches!(RoundSettings::decode(&header_garbage), Err(SettingsError::Header(_))));
        // A header length near u32::MAX is refused for lack of bytes, never allocated.
        let huge = [0xff, 0xff, 0xff, 0xff, b'{'];
        assert!(matches!(RoundSettings::decode(&huge), Err(SettingsError::Malformed(_))));
    }

    #[test]
    fn the_weighted_encoding_decodes_to_the_weighted_sum_and_the_total_weight() {
        let s = weighted(3);
        let mut rng = NoiseRng::insecure_from_seed([1; 32]);
        let a = s.encode_update(&[1.0, -2.0, 100.0], 2.0, &mut rng).unwrap();
        let b = s.encode_update(&[0.5, 0.5, 0.5], 4.0, &mut rng).unwrap();
        let modulus = 1u64 << 48;
        let sum: Vec<u64> = a.words.iter().zip(&b.words).map(|(x, y)| (x + y) % modulus).collect();
        let decoded = s.decode_sum(&sum).unwrap();
        // 100 is clamped to the value range 8.
        let expected = [2.0 + 2.0, -4.0 + 2.0, 16.0 + 2.0];
        for (v, e) in decoded.values.iter().zip(expected) {
            assert!((v - e).abs() < 1e-4, "{v} vs {e}");
        }
        assert!((decoded.total_weight.unwrap() - 6.0).abs() < 1e-4);
        assert!(matches!(s.encode_update(&[0.0; 3], -1.0, &mut rng), Err(UpdateError::InvalidWeight(_))));
        assert!(matches!(s.encode_update(&[f32::NAN; 3], 1.0, &mut rng), Err(UpdateError::Encoding(_))));
        assert!(s.decode_sum(&sum[..3]).is_err());
    }
}

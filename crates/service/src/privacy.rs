//! The client's own differential-privacy policy: what it requires of a round before it
//! encodes anything. Every figure is recomputed from what the client received and from
//! the protocol's parameters, never taken from the server's header alone:
//!
//! * DP must be on, unless the client opted out ([`PrivacyPolicy::allow_no_dp`]);
//! * noise must be on in a DP round, with the conditional norm check at the bound
//!   Kairouz–Liu–Steinke give for the round's clip, scale and dimension, and enough
//!   rounding attempts that failing to round (which the server would see) has
//!   negligible probability;
//! * the honest noise shares are counted from n_min := min(the header's n_min, the
//!   protocol's `min_clients`) less colluders := max(the header's, ⌈c · n_min⌉) for the
//!   client's corrupt fraction c;
//! * the round, accounted with the full RDP accountant (the discrete Gaussian's τ term
//!   included) and with no amplification, must be at least as private at every Rényi
//!   order as a Gaussian mechanism with the client's minimum noise multiplier;
//! * everything the client sent a server, over all its sessions, stays within the
//!   client's budget ([`PrivacySpent`], kept in the client's memory).
//!
//! The accounting is against the server: zero-out adjacency (one client's update
//! replaced by zeros, its noise share kept), no sampling.

use privagg_dp::accountant::{DEFAULT_RDP_ORDERS, DpEvent, rdp_to_epsilon};
use privagg_dp::adaptive_clip::with_indicator;
use privagg_dp::encoding::{Clipping, Rounding};
use privagg_dp::noise::NoiseSpec;
use privagg_dp::planner::Mechanism;
use privagg_dp::quantize::{MAX_SCALED, inflated_l2_bound, l1_bound_from_l2, norm_bound_sq};
use privagg_protocol::RoundParams;
use serde::{Deserialize, Serialize};

use crate::settings::{AggregationMode, RoundSettings};

/// The noise multiplier a client requires unless told otherwise.
pub const DEFAULT_MIN_NOISE_MULTIPLIER: f64 = 0.5;

/// Fewest conditional-rounding attempts a client accepts: with fewer, whether its update
/// could be rounded at all (which the server sees) would depend on the update.
pub const MIN_ROUNDING_ATTEMPTS: u32 = 1000;

/// The colluding clients a round of at least `n_min` inputs is assumed to hold, for a
/// corrupt fraction in [0, 1): ⌈fraction · n_min⌉ (their noise shares do not count).
pub fn assumed_colluders(corrupt_fraction: f64, n_min: u32) -> u32 {
    (corrupt_fraction.clamp(0.0, 1.0) * f64::from(n_min)).ceil() as u32
}

/// The privacy budget a client keeps per server, over all its training sessions, unless
/// told otherwise: ε = 16 at δ = 10⁻⁵. Far from strong privacy, it still stops the absurd
/// configurations (ε in the hundreds or more); set your own.
pub const DEFAULT_MAX_EPSILON: f64 = 16.0;

/// The δ at which a client measures its budget unless told otherwise.
pub const DEFAULT_BUDGET_DELTA: f64 = 1e-5;

/// What a client requires of a round's differential privacy.
#[derive(Clone, Debug, PartialEq)]
pub struct PrivacyPolicy {
    /// Take part in rounds without DP (weighted FedAvg: only secure aggregation hides
    /// the update). Off by default.
    pub allow_no_dp: bool,
    /// Smallest noise multiplier z (≥ 0): each round must be at least as private as a
    /// Gaussian mechanism with noise z times its sensitivity.
    pub min_noise_multiplier: f64,
    /// Most ε (at [`budget_delta`](Self::budget_delta)) one server may cost this client,
    /// over all its training sessions (a server can open a new session at will), every
    /// masked input sent counted; `None`: no budget.
    pub max_epsilon: Option<f64>,
    /// The δ of the budget, in (0, 1).
    pub budget_delta: f64,
    /// Most masked inputs the client sends to one server over all its training sessions,
    /// DP or not; `None`: no cap.
    pub max_participations: Option<u64>,
}

impl Default for PrivacyPolicy {
    fn default() -> Self {
        Self {
            allow_no_dp: false,
            min_noise_multiplier: DEFAULT_MIN_NOISE_MULTIPLIER,
            max_epsilon: Some(DEFAULT_MAX_EPSILON),
            budget_delta: DEFAULT_BUDGET_DELTA,
            max_participations: None,
        }
    }
}

/// What a session has cost a client: the Rényi DP of everything it sent, composed, at
/// each of [`DEFAULT_RDP_ORDERS`], and how many masked inputs it sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpent {
    /// Composed RDP per order (empty: nothing spent).
    rdp: Vec<f64>,
    /// Masked inputs sent.
    pub participations: u64,
}

impl PrivacySpent {
    /// Adds one masked input sent with `event`'s privacy (`None`: a round without DP).
    pub fn charge(&mut self, event: Option<&DpEvent>) {
        self.participations += 1;
        if let Some(event) = event {
            self.rdp = self.composed_with(Some(event));
        }
    }

    /// What `self` and `other` cost together (RDP composes by addition).
    pub fn and(&self, other: &PrivacySpent) -> PrivacySpent {
        let orders = DEFAULT_RDP_ORDERS.len();
        let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(0.0);
        let rdp = if self.rdp.is_empty() && other.rdp.is_empty() {
            Vec::new()
        } else {
            (0..orders).map(|i| at(&self.rdp, i) + at(&other.rdp, i)).collect()
        };
        PrivacySpent { rdp, participations: self.participations + other.participations }
    }

    fn composed_with(&self, event: Option<&DpEvent>) -> Vec<f64> {
        DEFAULT_RDP_ORDERS
            .iter()
            .enumerate()
            .map(|(i, &alpha)| self.rdp.get(i).copied().unwrap_or(0.0) + event.map_or(0.0, |e| e.rdp(alpha)))
            .collect()
    }

    /// ε at `delta` of what was spent; `None` if no round with DP was charged (or the
    /// conversion failed).
    pub fn epsilon(&self, delta: f64) -> Option<f64> {
        if self.rdp.is_empty() {
            return None;
        }
        self.epsilon_with(None, delta).ok()
    }

    /// ε at `delta` of what was spent, with `next` added.
    pub fn epsilon_with(&self, next: Option<&DpEvent>, delta: f64) -> Result<f64, String> {
        let rdp = self.composed_with(next);
        rdp_to_epsilon(&DEFAULT_RDP_ORDERS, &rdp, delta).map(|(epsilon, _)| epsilon).map_err(|e| e.to_string())
    }
}

/// A privacy policy no client can mean (the message names the field and the value).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid privacy policy: {0}")]
pub struct InvalidPolicy(pub String);

impl PrivacyPolicy {
    /// Refuses a noise floor that is negative or not finite, a budget ε that is not a
    /// positive number (NaN included: `None` is how to ask for no budget), a δ outside
    /// (0, 1), and a cap of 0 participations (which would never take part).
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        let bad = |m: String| Err(InvalidPolicy(m));
        if !(self.min_noise_multiplier.is_finite() && self.min_noise_multiplier >= 0.0) {
            return bad(format!("min_noise_multiplier must be a finite number ≥ 0, got {}", self.min_noise_multiplier));
        }
        if let Some(epsilon) = self.max_epsilon
            && !(epsilon > 0.0 && epsilon.is_finite())
        {
            return bad(format!("max_epsilon must be a finite number > 0 (or no budget at all), got {epsilon}"));
        }
        if !(self.budget_delta > 0.0 && self.budget_delta < 1.0) {
            return bad(format!("budget_delta must be in (0, 1), got {}", self.budget_delta));
        }
        if self.max_participations == Some(0) {
            return bad("max_participations of 0 would never take part".into());
        }
        Ok(())
    }
}

/// Why a round's privacy was refused (kept by the client; the server hears only that it
/// left).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivacyRefusal {
    /// The round runs without DP and the client did not opt out of it.
    #[error("the round runs without DP, which this client does not allow")]
    NoDp,
    /// DP is on but the encoding adds no noise, or lacks the norm check.
    #[error("a DP round without noise or without the conditional norm check")]
    NoNoise,
    /// The norm check is looser than the bound for the round's clip and scale, or leaves
    /// too few attempts, or the clip does not fit the integer range.
    #[error("the encoding's norm check is unsafe: {0}")]
    UnsafeEncoding(String),
    /// Fewer honest noise shares than one, counted the client's way.
    #[error("no honest noise share: n_min {n_min}, colluders {colluders}")]
    NoHonestShares {
        /// min(header, protocol).
        n_min: u32,
        /// max(header, policy).
        colluders: u32,
    },
    /// The round is less private than the client's floor.
    #[error("the round is less private than a Gaussian with noise multiplier {floor} (at Rényi order {order})")]
    BelowFloor {
        /// The client's minimum noise multiplier.
        floor: f64,
        /// An order at which the round's RDP exceeds the floor's.
        order: f64,
    },
    /// The parameters cannot be accounted.
    #[error("cannot account the round: {0}")]
    Unaccountable(String),
    /// Taking part would spend more than the client's budget for this server.
    #[error("the privacy budget for this server: ε would reach {would_reach:.3} at δ = {delta}, above {max_epsilon}")]
    BudgetExhausted {
        /// ε after this round.
        would_reach: f64,
        /// The budget.
        max_epsilon: f64,
        /// Its δ.
        delta: f64,
    },
    /// The client already sent this server as many masked inputs as it allows.
    #[error("{0} participations with this server, the most this client allows")]
    ParticipationCap(u64),
}

impl PrivacyPolicy {
    /// Checks that one more masked input, costing `next` (`None`: without DP), keeps the
    /// session within the budget and the participation cap.
    pub fn check_budget(&self, spent: &PrivacySpent, next: Option<&DpEvent>) -> Result<(), PrivacyRefusal> {
        if let Some(cap) = self.max_participations
            && spent.participations >= cap
        {
            return Err(PrivacyRefusal::ParticipationCap(spent.participations));
        }
        if let (Some(max_epsilon), Some(_)) = (self.max_epsilon, next) {
            let delta = self.budget_delta;
            let would_reach = spent.epsilon_with(next, delta).map_err(PrivacyRefusal::Unaccountable)?;
            if would_reach.is_nan() || would_reach > max_epsilon {
                return Err(PrivacyRefusal::BudgetExhausted { would_reach, max_epsilon, delta });
            }
        }
        Ok(())
    }

    /// Checks one round; returns the DP event the client accounts for it (`None` for a
    /// round without DP that the policy allows).
    pub fn check(
        &self,
        settings: &RoundSettings,
        params: &RoundParams,
        corrupt_fraction: f64,
    ) -> Result<Option<DpEvent>, PrivacyRefusal> {
        let (mechanism, header_n_min, header_colluders) = match settings.mode {
            AggregationMode::Weighted { .. } if self.allow_no_dp => return Ok(None),
            AggregationMode::Weighted { .. } => return Err(PrivacyRefusal::NoDp),
            AggregationMode::Dp { mechanism, n_min, colluders, .. } => (mechanism, n_min, colluders),
        };
        let encoding = &settings.encoding;
        let (variance, noise_mechanism) = match encoding.noise {
            NoiseSpec::DiscreteGaussian { variance } => (variance.to_f64(), Mechanism::DiscreteGaussian),
            NoiseSpec::Skellam { variance } => (variance.to_f64(), Mechanism::Skellam),
            NoiseSpec::None => return Err(PrivacyRefusal::NoNoise),
        };
        let (Clipping::L2(clip), Rounding::Conditional { beta, max_attempts, norm_bound_sq: enforced }) =
            (encoding.clipping, encoding.rounding)
        else {
            return Err(PrivacyRefusal::NoNoise);
        };
        if noise_mechanism != mechanism {
            return Err(PrivacyRefusal::UnsafeEncoding("the noise is not the announced mechanism".into()));
        }
        let unsafe_encoding = |why: String| Err(PrivacyRefusal::UnsafeEncoding(why));
        let scaled_clip = clip / encoding.gamma;
        if !(scaled_clip.is_finite() && scaled_clip < MAX_SCALED / 2.0) {
            return unsafe_encoding(format!("clip {clip} over γ {} leaves the integer range", encoding.gamma));
        }
        let dim = encoding.padded_dim;
        let bound =
            inflated_l2_bound(scaled_clip, dim, beta).map_err(|e| PrivacyRefusal::Unaccountable(e.to_string()))?;
        let required = norm_bound_sq(bound).map_err(|e| PrivacyRefusal::Unaccountable(e.to_string()))?;
        if enforced < required {
            return unsafe_encoding(format!("norm bound {enforced} below ⌊Δ₂²⌋ = {required}"));
        }
        if max_attempts < MIN_ROUNDING_ATTEMPTS {
            return unsafe_encoding(format!("{max_attempts} rounding attempts, below {MIN_ROUNDING_ATTEMPTS}"));
        }
        let n_min = header_n_min.min(params.min_clients);
        let colluders = header_colluders.max(assumed_colluders(corrupt_fraction, n_min));
        let honest = n_min.saturating_sub(colluders);
        if honest == 0 {
            return Err(PrivacyRefusal::NoHonestShares { n_min, colluders });
        }
        // The sensitivity is what the norm check lets through, however loose.
        let l2 = bound.max((enforced as f64).sqrt());
        let l1 = l1_bound_from_l2(l2, dim);
        let event = match mechanism {
            Mechanism::DiscreteGaussian => DpEvent::DistributedDiscreteGaussian {
                sampling_rate: 1.0,
                l2_sensitivity: l2,
                l1_sensitivity: l1,
                local_variance: variance,
                shares: u64::from(honest),
                dim: dim as u64,
            },
            Mechanism::Skellam => DpEvent::DistributedSkellam {
                sampling_rate: 1.0,
                l2_sensitivity: l2,
                l1_sensitivity: l1,
                total_variance: variance * f64::from(honest),
            },
        };
        // The clip indicator is one more coordinate of the same release.
        let event = match settings.clip_indicator() {
            Some(scale) => with_indicator(&event, scale),
            None => event,
        };
        event.validate().map_err(|e| PrivacyRefusal::Unaccountable(e.to_string()))?;
        let floor = self.min_noise_multiplier;
        if floor > 0.0 {
            // A Gaussian with multiplier z has RDP α / (2z²) at order α.
            // A NaN counts as above.
            let above = DEFAULT_RDP_ORDERS.iter().find(|&&alpha| {
                let (rdp, allowed) = (event.rdp(alpha), alpha / (2.0 * floor * floor));
                rdp.is_nan() || rdp > allowed
            });
            if let Some(&order) = above {
                return Err(PrivacyRefusal::BelowFloor { floor, order });
            }
        }
        Ok(Some(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_no_client_can_mean_is_refused_with_the_field_it_is_about() {
        PrivacyPolicy::default().validate().unwrap();
        PrivacyPolicy { max_epsilon: None, min_noise_multiplier: 0.0, ..PrivacyPolicy::default() }.validate().unwrap();
        let cases = [
            (PrivacyPolicy { min_noise_multiplier: -1.0, ..PrivacyPolicy::default() }, "min_noise_multiplier"),
            (PrivacyPolicy { min_noise_multiplier: f64::NAN, ..PrivacyPolicy::default() }, "min_noise_multiplier"),
            (PrivacyPolicy { max_epsilon: Some(0.0), ..PrivacyPolicy::default() }, "max_epsilon"),
            (PrivacyPolicy { max_epsilon: Some(-3.0), ..PrivacyPolicy::default() }, "max_epsilon"),
            // NaN must not slip through as "no budget".
            (PrivacyPolicy { max_epsilon: Some(f64::NAN), ..PrivacyPolicy::default() }, "max_epsilon"),
            (PrivacyPolicy { max_epsilon: Some(f64::INFINITY), ..PrivacyPolicy::default() }, "max_epsilon"),
            (PrivacyPolicy { budget_delta: 0.0, ..PrivacyPolicy::default() }, "budget_delta"),
            (PrivacyPolicy { budget_delta: 1.0, ..PrivacyPolicy::default() }, "budget_delta"),
            (PrivacyPolicy { max_participations: Some(0), ..PrivacyPolicy::default() }, "max_participations"),
        ];
        for (policy, field) in cases {
            let err = policy.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{policy:?}: {err}");
        }
    }
}

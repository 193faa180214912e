//! What the server does with a round's sum: the session's encoding plan (DP or weighted
//! FedAvg), each round's settings for the clients, the neighbour graph of a cohort, and
//! the FedAvg step that turns the decoded sum into a new global model.

use privagg_dp::accountant::discrete::ddg_tau;
use privagg_dp::accountant::{DpEvent, tightest_epsilon};
use privagg_dp::adaptive_clip::{AdaptiveClipping, indicator_scale, update_noise_multiplier, with_indicator};
use privagg_dp::encoding::Clipping;
use privagg_dp::fedavg::{apply_fedavg_momentum_step, apply_fedavg_step};
use privagg_dp::planner::{Mechanism, NoiseTarget, Plan, PlanInput, plan};
use privagg_dp::sampling::CheckIns;
use privagg_dp::{EncodingParams, ensure_enough_survivors, plan_without_dp};
use privagg_protocol::graph_params::lowest_safe_threshold;
use privagg_protocol::{AdversaryClass, RoundOutput, ThreatModel, find_graph_parameters};
use privagg_service::{AggregationMode, RoundSettings};
use rand::RngExt;
use serde::Serialize;

use crate::config::ServeConfig;
use crate::error::ServeError;

enum Mode {
    Dp { plan: Box<Plan>, adaptive: Option<Adaptive> },
    Weighted { gamma: f64, bits: u32, value_range: f64, max_weight: f64 },
}

/// Adaptive clipping as planned: the rule, the indicator's scale κ and the count's noise.
#[derive(Clone, Copy, Debug)]
struct Adaptive {
    rule: AdaptiveClipping,
    scale: u64,
    count_stddev: f64,
    /// The configured clip, around which the clip may move.
    initial_clip: f64,
}

/// The session's aggregation: fixed at start from the configuration.
pub struct Aggregation {
    mode: Mode,
    dim: usize,
    clients: u32,
    min_clients: u32,
    colluders: u32,
    delta: f64,
    /// Random check-ins, if the session runs them.
    check_ins: Option<CheckIns>,
}

/// What one round's sum did to the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Applied {
    /// What the sum was divided by.
    pub denominator: f64,
    /// L2 norm of the averaged update.
    pub update_norm: f64,
    /// With adaptive clipping: how the clip moved.
    pub clip: Option<ClipStep>,
}

/// One step of adaptive clipping.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ClipStep {
    /// The round's clip C (model units).
    pub clip: f64,
    /// The noisy fraction of clients whose update was under it; `None` when the count
    /// was out of any honest range, ignored, and the clip held.
    pub unclipped_fraction: Option<f64>,
    /// The next round's clip.
    pub next_clip: f64,
}

impl Aggregation {
    /// Plans the session: with DP, γ and the noise share for n = `clients`, n_min =
    /// `min_clients`, C, z, b; without, γ so that `clients` weighted updates cannot wrap.
    pub fn new(config: &ServeConfig) -> Result<Self, ServeError> {
        let dp = &config.dp;
        let colluders = config.colluders();
        let check_ins = config.check_in_plan()?;
        let expected_cohort = expected_cohort(config.clients, check_ins.as_ref());
        let mode = if dp.enabled {
            // With adaptive clipping the update gets the larger share of the noise budget
            // and the clip indicator the rest (Andrew et al., Theorem 1).
            let count_stddev = dp.adaptive_clip.map(|rule| rule.count_stddev(expected_cohort));
            let bad = |e: privagg_dp::DpError| ServeError::Config(format!("adaptive clipping: {e}"));
            let update_z = match count_stddev {
                Some(sigma_b) => update_noise_multiplier(dp.noise_multiplier, sigma_b).map_err(bad)?,
                None => dp.noise_multiplier,
            };
            let mut input = PlanInput::new(
                dp.mechanism,
                NoiseTarget::Multiplier(update_z),
                dp.delta,
                config.rounds,
                dp.sampling_rate,
                config.clients as usize,
                config.min_clients as usize,
                config.dim,
                dp.clip,
                dp.bits,
            );
            input.colluders = colluders as usize;
            let mut plan = plan(&input).map_err(|e| ServeError::Config(format!("DP plan: {e}")))?;
            if !dp.force_plan {
                check_tight(&plan)?;
            }
            let adaptive = match (dp.adaptive_clip, count_stddev) {
                (Some(rule), Some(count_stddev)) => {
                    rule.validate().map_err(bad)?;
                    let total_stddev = (plan.local_variance.to_f64() * plan.honest_shares as f64).sqrt();
                    let scale = indicator_scale(total_stddev, count_stddev);
                    // γ fills the words' range with the update's k standard deviations; the
                    // indicator's sum reaches n·κ/2 ≈ σ/(2·fraction) beyond its noise, so
                    // its words get more room (γ and the accounting stay as planned).
                    plan.input.bits += ADAPTIVE_CLIP_HEADROOM_BITS;
                    let reach =
                        f64::from(config.largest_cohort()) * scale as f64 / 2.0 + plan.input.k_stddevs * total_stddev;
                    if plan.input.bits > 62 || reach >= 2f64.powi(plan.input.bits as i32 - 1) {
                        return Err(ServeError::Config(format!(
                            "adaptive clipping: the clip indicator's sum would wrap around {} bits (use more --bits)",
                            plan.input.bits
                        )));
                    }
                    Some(Adaptive { rule, scale, count_stddev, initial_clip: dp.clip })
                }
                _ => None,
            };
            Mode::Dp { plan: Box::new(plan), adaptive }
        } else {
            let w = &config.weighting;
            let max_abs = w.value_range.max(1.0) * w.max_weight;
            let gamma = plan_without_dp(config.clients as usize, max_abs, w.bits)
                .map_err(|e| ServeError::Config(format!("quantization: {e}")))?;
            Mode::Weighted { gamma, bits: w.bits, value_range: w.value_range, max_weight: w.max_weight }
        };
        Ok(Self {
            mode,
            dim: config.dim,
            clients: config.clients,
            min_clients: config.min_clients,
            colluders,
            delta: dp.delta,
            check_ins,
        })
    }

    /// The DP plan, if DP is on.
    pub fn plan(&self) -> Option<&Plan> {
        match &self.mode {
            Mode::Dp { plan, .. } => Some(plan),
            Mode::Weighted { .. } => None,
        }
    }

    /// Bits per word of the modular sum.
    pub fn bits(&self) -> u8 {
        let bits = match &self.mode {
            Mode::Dp { plan, .. } => plan.input.bits,
            Mode::Weighted { bits, .. } => *bits,
        };
        bits as u8
    }

    /// Words per protocol vector: the padded dimension with DP, the model plus the
    /// weight without.
    pub fn protocol_dim(&self) -> usize {
        match &self.mode {
            Mode::Dp { plan, adaptive } => plan.padded_dim + usize::from(adaptive.is_some()),
            Mode::Weighted { .. } => self.dim + 1,
        }
    }

    /// The DP event of one round against the server (no amplification: it sees who
    /// takes part), if DP is on. The ledger and the budget charge this.
    pub fn dp_event(&self) -> Option<DpEvent> {
        let Mode::Dp { plan, adaptive } = &self.mode else { return None };
        let event = plan.dp_event_with_rate(1.0);
        Some(match adaptive {
            Some(a) => with_indicator(&event, a.scale),
            None => event,
        })
    }

    /// The random check-ins of the session, if it runs them.
    pub fn check_ins(&self) -> Option<&CheckIns> {
        self.check_ins.as_ref()
    }

    /// What the session's DP plan amounts to (DP on): what `privagg plan` prints and
    /// `serve` logs.
    pub fn summary(&self) -> Option<Result<PlanSummary, ServeError>> {
        let (Mode::Dp { plan, adaptive }, Some(event)) = (&self.mode, self.dp_event()) else { return None };
        Some(PlanSummary::of(plan, &event, *adaptive, self.colluders, self.check_ins.as_ref()))
    }

    /// The settings clients get for `round` of `session`, with a fresh rotation seed and,
    /// with DP, the clip `clip` (model units): the plan's γ scales with it, so that
    /// everything in integer units — noise, sensitivity, the accounting — stays the same.
    pub fn round_settings(
        &self,
        session: [u8; 16],
        round: u64,
        total_rounds: u64,
        model: &[f32],
        (epsilon_spent, clip): (f64, f64),
    ) -> Result<RoundSettings, ServeError> {
        let (mode, encoding) = match &self.mode {
            Mode::Dp { plan, adaptive } => {
                let mut encoding = plan.encoding_params(rand::rng().random());
                if !(clip.is_finite() && clip > 0.0) {
                    return Err(ServeError::Model(format!("clip {clip} is not positive")));
                }
                encoding.clipping = Clipping::L2(clip);
                encoding.gamma = plan.gamma * clip / plan.input.clip;
                let mode = AggregationMode::Dp {
                    mechanism: plan.input.mechanism,
                    n_min: self.min_clients,
                    colluders: self.colluders,
                    delta: self.delta,
                    epsilon_spent,
                    clip_indicator: adaptive.map(|a| a.scale),
                };
                (mode, encoding)
            }
            Mode::Weighted { gamma, bits, value_range, max_weight } => (
                AggregationMode::Weighted { value_range: *value_range, max_weight: *max_weight },
                EncodingParams::without_dp(self.dim + 1, *gamma, *bits, Clipping::None, None)
                    .map_err(|e| ServeError::Config(format!("quantization: {e}")))?,
            ),
        };
        Ok(RoundSettings { session, round, total_rounds, mode, encoding, model: model.to_vec(), train_timeout_secs: 0 })
    }

    /// Decodes the round's sum and applies the FedAvg step to `model`:
    /// θ ← θ + η·v with v = β·v + update (β = 0: no momentum; `momentum` holds v). The
    /// update is the sum divided by the expected cohort size (DP on: a public constant,
    /// DP-FedAvg's fixed denominator; a sum of fewer than n_min inputs is refused) or by
    /// the total weight (DP off: the weighted mean). A round whose total weight is zero
    /// leaves the model unchanged.
    pub fn apply(
        &self,
        output: &RoundOutput,
        settings: &RoundSettings,
        model: &mut [f32],
        momentum: Option<&mut Vec<f32>>,
        (server_lr, beta): (f64, f64),
    ) -> Result<Applied, ServeError> {
        let decoded = settings.decode_sum(&output.sum).map_err(|e| ServeError::Model(e.to_string()))?;
        let denominator = match (&self.mode, decoded.total_weight) {
            (Mode::Dp { .. }, _) => {
                ensure_enough_survivors(output.included.len(), self.min_clients as usize)
                    .map_err(|e| ServeError::Model(e.to_string()))?;
                expected_cohort(self.clients, self.check_ins.as_ref())
            }
            (Mode::Weighted { .. }, Some(weight)) => weight,
            (Mode::Weighted { .. }, None) => return Err(ServeError::Model("a weighted sum without its weight".into())),
        };
        let clip = match (&self.mode, decoded.clip_count, settings.encoding.clipping) {
            (Mode::Dp { adaptive: Some(a), .. }, Some(count), Clipping::L2(clip)) => {
                // The count's noise grows with the cohort above n_min, whose shares it plans.
                let inputs = output.included.len();
                let stddev = a.count_stddev * (inputs as f64 / f64::from(self.min_clients)).sqrt().max(1.0);
                let step = a.rule.next_clip(clip, count, inputs, stddev, a.initial_clip);
                if step.unclipped_fraction.is_none() {
                    tracing::warn!(
                        count,
                        inputs,
                        "clip count out of any honest range (a client wrote past its indicator); clip held"
                    );
                }
                Some(ClipStep { clip, unclipped_fraction: step.unclipped_fraction, next_clip: step.next_clip })
            }
            _ => None,
        };
        if denominator <= 0.0 {
            return Ok(Applied { denominator, update_norm: 0.0, clip });
        }
        let update_norm = match momentum {
            Some(velocity) => {
                apply_fedavg_momentum_step(model, velocity, &decoded.values, denominator, server_lr, beta)
            }
            None => apply_fedavg_step(model, &decoded.values, denominator, server_lr),
        }
        .map_err(|e| ServeError::Model(e.to_string()))?;
        Ok(Applied { denominator, update_norm, clip })
    }
}

/// The FedAvg denominator with DP: the expected cohort, a public constant — the cohort
/// with check-ins is q·N on average, otherwise N.
fn expected_cohort(clients: u32, check_ins: Option<&CheckIns>) -> f64 {
    f64::from(clients) * check_ins.map_or(1.0, CheckIns::rate)
}

/// The figures of a session's DP plan, against the server (no amplification: the server
/// does not sample). Sensitivities and variances are in integer units.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanSummary {
    /// ε over the whole session at `delta`: the headline, the tightest sound bound
    /// (`privagg_dp::accountant::tightest_epsilon`).
    pub epsilon: f64,
    /// ε of one round at `delta`.
    pub epsilon_per_round: f64,
    /// δ.
    pub delta: f64,
    /// Rounds in the session.
    pub rounds: u64,
    /// ρ of zero-concentrated DP for the session ([`DpEvent::zcdp_rho`] per round: valid
    /// at every order α > 1, no amplification).
    pub zcdp_rho: f64,
    /// The noise mechanism.
    pub mechanism: Mechanism,
    /// Requested noise multiplier z.
    pub noise_multiplier: f64,
    /// √(h s²)/Δ₂: what the honest shares give.
    pub effective_noise_multiplier: f64,
    /// Honest noise shares h = n_min − colluders.
    pub honest_shares: usize,
    /// Colluders assumed.
    pub colluders: u32,
    /// Lattice step γ (model units per integer unit).
    pub gamma: f64,
    /// Bits per word of the modular sum.
    pub bits: u32,
    /// Padded dimension m.
    pub padded_dim: usize,
    /// Each client's noise parameter s².
    pub local_variance: f64,
    /// Inflated L2 sensitivity Δ₂.
    pub l2_sensitivity: f64,
    /// Δ₂γ/C.
    pub sensitivity_inflation: f64,
    /// τ·m of the discrete Gaussian (0 for Skellam).
    pub tau_dim: f64,
    /// Expected coordinates of the aggregate that wrap around modulo 2^b per round (a
    /// Gaussian estimate; utility only, privacy is unaffected).
    pub expected_wrapped_per_round: f64,
    /// With random check-ins: the second figure, against those who see only the released
    /// models.
    pub check_ins: Option<CheckInSummary>,
    /// With adaptive clipping: how the noise is split between update and clip indicator.
    pub adaptive_clip: Option<AdaptiveClipSummary>,
}

/// How adaptive clipping shares the noise (Andrew et al., Theorem 1): the update is
/// planned at `noise_multiplier` (above the requested z), the clip indicator's count
/// carries noise of standard deviation `count_stddev`; together they have the requested
/// multiplier, and ε above accounts both.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdaptiveClipSummary {
    /// Target fraction of unclipped updates.
    pub target_quantile: f64,
    /// Geometric learning rate of the clip.
    pub learning_rate: f64,
    /// The indicator's scale κ (integer units).
    pub scale: u64,
    /// Noise standard deviation on the count of unclipped clients (count units).
    pub count_stddev: f64,
}

/// The ε of a session with random check-ins against those who see only the released
/// models (see `privagg_dp::sampling`): each round's participation is a hidden coin.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckInSummary {
    /// The check-in rate q.
    pub rate: f64,
    /// ε over the session at `delta`.
    pub epsilon: f64,
    /// δ of that ε: the configured δ plus windows·β.
    pub delta: f64,
    /// β: the chance, per check-in window, that the other clients' count is at an edge
    /// where the target's coin decides whether the round runs.
    pub shortfall_per_window: f64,
}

impl PlanSummary {
    fn of(
        plan: &Plan,
        event: &DpEvent,
        adaptive: Option<Adaptive>,
        colluders: u32,
        check_ins: Option<&CheckIns>,
    ) -> Result<Self, ServeError> {
        let (delta, rounds) = (plan.input.delta, plan.input.rounds);
        let bad = |e: privagg_dp::DpError| ServeError::Config(format!("DP plan: {e}"));
        Ok(Self {
            epsilon: tightest_epsilon(event, rounds, delta).map_err(bad)?,
            epsilon_per_round: tightest_epsilon(event, 1, delta).map_err(bad)?,
            delta,
            rounds,
            zcdp_rho: event.zcdp_rho() * rounds as f64,
            mechanism: plan.input.mechanism,
            noise_multiplier: plan.noise_multiplier,
            effective_noise_multiplier: plan.effective_noise_multiplier,
            honest_shares: plan.honest_shares,
            colluders,
            gamma: plan.gamma,
            bits: plan.input.bits,
            padded_dim: plan.padded_dim,
            local_variance: plan.local_variance.to_f64(),
            l2_sensitivity: plan.l2_sensitivity,
            sensitivity_inflation: plan.sensitivity_inflation,
            tau_dim: tau_dim(plan),
            expected_wrapped_per_round: plan.wrap.per_coordinate_gaussian * plan.padded_dim as f64,
            check_ins: check_ins
                .map(|c| {
                    let (epsilon, delta) = c.epsilon(event, rounds, plan.input.delta).map_err(bad)?;
                    Ok::<_, ServeError>(CheckInSummary {
                        rate: c.rate(),
                        epsilon,
                        delta,
                        shortfall_per_window: c.shortfall(),
                    })
                })
                .transpose()?,
            adaptive_clip: adaptive.map(|a| AdaptiveClipSummary {
                target_quantile: a.rule.target_quantile,
                learning_rate: a.rule.learning_rate,
                scale: a.scale,
                count_stddev: a.count_stddev,
            }),
        })
    }
}

fn tau_dim(plan: &Plan) -> f64 {
    match plan.input.mechanism {
        Mechanism::DiscreteGaussian => {
            ddg_tau(plan.local_variance.to_f64(), plan.honest_shares as u64) * plan.padded_dim as f64
        }
        Mechanism::Skellam => 0.0,
    }
}

/// Bits added to every word with adaptive clipping: room for the clip indicator's sum.
pub const ADAPTIVE_CLIP_HEADROOM_BITS: u32 = 2;

/// Largest τ·m of the discrete Gaussian a plan may have: above it the τ term of the
/// accounting grows fast (the noise shares are too small to be nearly Gaussian).
pub const MAX_TAU_DIM: f64 = 1e-3;

/// Largest sensitivity inflation from rounding a plan may have.
pub const MAX_INFLATION: f64 = 1.1;

/// Refuses a plan whose accounting is loose (see [`MAX_TAU_DIM`], [`MAX_INFLATION`]).
fn check_tight(plan: &Plan) -> Result<(), ServeError> {
    let tau_dim = tau_dim(plan);
    if tau_dim > MAX_TAU_DIM {
        return Err(ServeError::Config(format!(
            "DP plan: τ·m = {tau_dim:.3e} above {MAX_TAU_DIM}: the noise shares are too small to account tightly (use more --bits or a larger --clip, or --force-plan)"
        )));
    }
    if plan.sensitivity_inflation > MAX_INFLATION {
        return Err(ServeError::Config(format!(
            "DP plan: rounding inflates the sensitivity {:.3}×, above {MAX_INFLATION} (use more --bits, or --force-plan)",
            plan.sensitivity_inflation
        )));
    }
    Ok(())
}

/// Neighbours k and Shamir threshold t for the largest cohort of `config`'s session
/// ([`ServeConfig::largest_cohort`]).
pub fn session_graph(config: &ServeConfig) -> Result<(u32, u32), ServeError> {
    let n = config.largest_cohort();
    graph_for(n, config.min_clients, config.neighbors, config.corrupt_fraction, config.threat.adversary())
}

/// Neighbours k and Shamir threshold t for a cohort of `n`: the user's k (made valid)
/// or the parameter finder's, for a server of class `adversary` and a threat model where
/// `corrupt_fraction` of clients collude and up to n − `min_clients` drop out. The
/// complete graph uses t = `min_clients`, as in the original SecAgg, which must then be
/// safe itself.
pub fn graph_for(
    n: u32,
    min_clients: u32,
    neighbors: Option<u32>,
    corrupt_fraction: f64,
    adversary: AdversaryClass,
) -> Result<(u32, u32), ServeError> {
    let threat =
        ThreatModel { corrupt_fraction, dropout_fraction: 1.0 - f64::from(min_clients) / f64::from(n), adversary };
    let k = match neighbors {
        Some(k) if k + 2 >= n => n - 1,
        Some(k) => k + k % 2,
        None => find_graph_parameters(n, &threat).map(|p| p.neighbours).unwrap_or(n - 1),
    };
    if k + 1 == n {
        let (lowest, corrupt) = lowest_safe_threshold(n, k, corrupt_fraction, adversary)
            .map_err(|e| ServeError::Config(format!("{n} clients: {e}")))?;
        if min_clients < lowest {
            return Err(ServeError::Config(format!(
                "--min-clients {min_clients} is below {lowest}, the least threshold that keeps a client's secrets from {} with {corrupt} corrupt clients among {n}",
                match adversary {
                    AdversaryClass::SemiMaliciousServer => "a server that lies about dropouts",
                    AdversaryClass::CuriousServer => "a curious server",
                }
            )));
        }
        return Ok((k, min_clients));
    }
    let (t, _) = privagg_protocol::graph_params::safe_thresholds(n, k, &threat)
        .map_err(|e| ServeError::Config(format!("{k} neighbours for {n} clients: {e}")))?;
    if t > min_clients {
        return Err(ServeError::Config(format!(
            "{k} neighbours for {n} clients need a Shamir threshold of {t}, above --min-clients {min_clients}"
        )));
    }
    Ok((k, t))
}

#[cfg(test)]
mod tests {
    use privagg_protocol::ClientId;

    use super::*;

    fn config(dp: bool) -> ServeConfig {
        let mut c = ServeConfig { dim: 4, clients: 10, min_clients: 8, ..ServeConfig::default() };
        c.dp.enabled = dp;
        c
    }

    #[test]
    fn adaptive_clipping_splits_the_noise_so_that_epsilon_stays_put() {
        let mut c = ServeConfig { dim: 1000, clients: 200, min_clients: 160, ..ServeConfig::default() };
        c.dp.max_epsilon = None;
        let fixed = Aggregation::new(&c).unwrap().summary().unwrap().unwrap();
        c.dp.adaptive_clip = Some(AdaptiveClipping::default());
        let adaptive = Aggregation::new(&c).unwrap();
        let summary = adaptive.summary().unwrap().unwrap();
        // The update gets more noise, the indicator the rest; together they cost what the
        // fixed clip costs (up to κ's rounding to an even integer).
        assert!(summary.noise_multiplier > fixed.noise_multiplier);
        assert!((summary.epsilon / fixed.epsilon - 1.0).abs() < 0.01, "{} vs {}", summary.epsilon, fixed.epsilon);
        assert_eq!(summary.bits, fixed.bits + ADAPTIVE_CLIP_HEADROOM_BITS);
        assert!(summary.adaptive_clip.is_some());
        // Clip and γ move together: the integer-domain encoding is the same at any clip.
        let at = |clip: f64| adaptive.round_settings([0; 16], 1, 1, &[0.0; 1000], (0.0, clip)).unwrap();
        let (one, two) = (at(1.0), at(2.0));
        assert!((two.encoding.gamma / one.encoding.gamma - 2.0).abs() < 1e-12);
        assert_eq!((one.encoding.rounding, one.protocol_dim()), (two.encoding.rounding, two.protocol_dim()));
        assert!(adaptive.round_settings([0; 16], 1, 1, &[0.0; 1000], (0.0, f64::NAN)).is_err());
        // Too small a cohort for the split is refused, not silently under-noised.
        c.clients = 10;
        c.min_clients = 8;
        assert!(Aggregation::new(&c).is_err());
    }

    #[test]
    fn a_client_writing_past_its_indicator_cannot_steer_the_clip() {
        let mut c = ServeConfig { dim: 100, clients: 200, min_clients: 160, ..ServeConfig::default() };
        c.dp.max_epsilon = None;
        c.dp.adaptive_clip = Some(AdaptiveClipping::default());
        let aggregation = Aggregation::new(&c).unwrap();
        let settings = aggregation.round_settings([0; 16], 1, 1, &[0.0; 100], (0.0, 1.0)).unwrap();
        let (scale, bits) = (settings.clip_indicator().unwrap(), settings.encoding.bits);
        let step_with_count = |count: i64| {
            let mut sum = vec![0u64; settings.protocol_dim()];
            let word = count * scale as i64;
            assert!(word.unsigned_abs() < 1 << (bits - 1), "the test's count must fit the word");
            sum[settings.encoding.padded_dim] = (word as u64) & ((1 << bits) - 1);
            let mut model = vec![0.0f32; 100];
            aggregation.apply(&output(180, sum), &settings, &mut model, None, (1.0, 0.0)).unwrap().clip.unwrap()
        };
        // An honest count (all 180 under the clip: +90 centred) moves the clip down.
        let honest = step_with_count(90);
        assert_eq!(honest.unclipped_fraction, Some(1.0));
        assert!(honest.next_clip < 1.0);
        // One client adding 300 to its indicator: out of any honest range, ignored.
        for count in [390, -390] {
            let steered = step_with_count(count);
            assert_eq!((steered.unclipped_fraction, steered.next_clip), (None, 1.0), "{count}");
        }
    }

    fn output(included: u32, sum: Vec<u64>) -> RoundOutput {
        RoundOutput { sum, included: (1..=included).filter_map(ClientId::new).collect() }
    }

    #[test]
    fn a_dp_sum_of_fewer_than_n_min_inputs_is_never_applied() {
        let c = config(true);
        let aggregation = Aggregation::new(&c).unwrap();
        let settings = aggregation.round_settings([0; 16], 1, 1, &[0.0; 4], (0.0, 1.0)).unwrap();
        let zeros = vec![0; settings.encoding.padded_dim];
        let mut model = vec![1.0f32; 4];
        let short = aggregation.apply(&output(7, zeros.clone()), &settings, &mut model, None, (1.0, 0.0));
        assert!(matches!(&short, Err(ServeError::Model(e)) if e.contains("n_min")), "{short:?}");
        assert_eq!(model, vec![1.0; 4], "the model changed");
        let applied = aggregation.apply(&output(8, zeros), &settings, &mut model, None, (1.0, 0.0)).unwrap();
        assert_eq!(applied.denominator, 10.0, "DP divides by the public cohort size");
    }

    #[test]
    fn a_weighted_sum_is_divided_by_its_total_weight_with_momentum_if_asked() {
        let c = config(false);
        let aggregation = Aggregation::new(&c).unwrap();
        let settings = aggregation.round_settings([0; 16], 1, 1, &[0.0; 4], (0.0, 1.0)).unwrap();
        let mut rng = privagg_dp::NoiseRng::from_os().unwrap();
        let a = settings.encode_update(&[1.0, 2.0, 3.0, 4.0], 1.0, &mut rng).unwrap();
        let b = settings.encode_update(&[3.0, 2.0, 1.0, 0.0], 3.0, &mut rng).unwrap();
        let modulus = 1u64 << settings.encoding.bits;
        let sum: Vec<u64> = a.words.iter().zip(&b.words).map(|(x, y)| (x + y) % modulus).collect();
        let (mut model, mut velocity) = (vec![0.0f32; 4], vec![0.0f32; 4]);
        let applied =
            aggregation.apply(&output(2, sum), &settings, &mut model, Some(&mut velocity), (1.0, 0.5)).unwrap();
        assert!((applied.denominator - 4.0).abs() < 1e-9);
        for (m, want) in model.iter().zip([2.5, 2.0, 1.5, 1.0]) {
            assert!((m - want).abs() < 1e-5, "{model:?}");
        }
        assert_eq!(model, velocity);
    }
}

//! What the server does with a round's sum: the session's encoding plan (DP or weighted
//! FedAvg), each round's settings for the clients, the neighbour graph of a cohort, and
//! the FedAvg step that turns the decoded sum into a new global model.

use privagg_dp::accountant::discrete::ddg_tau;
use privagg_dp::accountant::{DpEvent, tightest_epsilon};
use privagg_dp::encoding::Clipping;
use privagg_dp::fedavg::{apply_fedavg_momentum_step, apply_fedavg_step};
use privagg_dp::planner::{Mechanism, NoiseTarget, Plan, PlanInput, plan};
use privagg_dp::sampling::CheckIns;
use privagg_dp::{EncodingParams, ensure_enough_survivors, plan_without_dp};
use privagg_protocol::graph_params::lowest_safe_threshold;
use privagg_protocol::{AdversaryClass, RoundOutput, ThreatModel, find_graph_parameters};
use privagg_service::privacy::assumed_colluders;
use privagg_service::{AggregationMode, RoundSettings};
use rand::RngExt;
use serde::Serialize;

use crate::config::ServeConfig;
use crate::error::ServeError;

enum Mode {
    Dp { plan: Box<Plan> },
    Weighted { gamma: f64, bits: u32, value_range: f64, max_weight: f64 },
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
}

impl Aggregation {
    /// Plans the session: with DP, γ and the noise share for n = `clients`, n_min =
    /// `min_clients`, C, z, b; without, γ so that `clients` weighted updates cannot wrap.
    pub fn new(config: &ServeConfig) -> Result<Self, ServeError> {
        let dp = &config.dp;
        let colluders = dp.colluders.unwrap_or_else(|| assumed_colluders(config.corrupt_fraction, config.min_clients));
        let mode = if dp.enabled {
            let mut input = PlanInput::new(
                dp.mechanism,
                NoiseTarget::Multiplier(dp.noise_multiplier),
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
            let plan = plan(&input).map_err(|e| ServeError::Config(format!("DP plan: {e}")))?;
            if !dp.force_plan {
                check_tight(&plan)?;
            }
            Mode::Dp { plan: Box::new(plan) }
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
            check_ins: config.check_in_plan()?,
        })
    }

    /// The DP plan, if DP is on.
    pub fn plan(&self) -> Option<&Plan> {
        match &self.mode {
            Mode::Dp { plan } => Some(plan),
            Mode::Weighted { .. } => None,
        }
    }

    /// Bits per word of the modular sum.
    pub fn bits(&self) -> u8 {
        let bits = match &self.mode {
            Mode::Dp { plan } => plan.input.bits,
            Mode::Weighted { bits, .. } => *bits,
        };
        bits as u8
    }

    /// Words per protocol vector: the padded dimension with DP, the model plus the
    /// weight without.
    pub fn protocol_dim(&self) -> usize {
        match &self.mode {
            Mode::Dp { plan } => plan.padded_dim,
            Mode::Weighted { .. } => self.dim + 1,
        }
    }

    /// The DP event of one round against the server (no amplification: it sees who
    /// takes part), if DP is on. The ledger and the budget charge this.
    pub fn dp_event(&self) -> Option<DpEvent> {
        self.plan().map(|p| p.dp_event_with_rate(1.0))
    }

    /// The random check-ins of the session, if it runs them.
    pub fn check_ins(&self) -> Option<&CheckIns> {
        self.check_ins.as_ref()
    }

    /// What the session's DP plan amounts to (DP on): what `privagg plan` prints and
    /// `serve` logs.
    pub fn summary(&self) -> Option<Result<PlanSummary, ServeError>> {
        let plan = self.plan()?;
        Some(PlanSummary::of(plan, self.colluders, self.check_ins.as_ref()))
    }

    /// The FedAvg denominator with DP: the expected cohort, a public constant — the
    /// cohort with check-ins is q·N on average, otherwise N.
    fn expected_cohort(&self) -> f64 {
        f64::from(self.clients) * self.check_ins.map_or(1.0, |c| c.rate())
    }

    /// The settings clients get for `round` of `session`, with a fresh rotation seed.
    pub fn round_settings(
        &self,
        session: [u8; 16],
        round: u64,
        total_rounds: u64,
        model: &[f32],
        epsilon_spent: f64,
    ) -> Result<RoundSettings, ServeError> {
        let (mode, encoding) = match &self.mode {
            Mode::Dp { plan } => (
                AggregationMode::Dp {
                    mechanism: plan.input.mechanism,
                    n_min: self.min_clients,
                    colluders: self.colluders,
                    delta: self.delta,
                    epsilon_spent,
                },
                plan.encoding_params(rand::rng().random()),
            ),
            Mode::Weighted { gamma, bits, value_range, max_weight } => (
                AggregationMode::Weighted { value_range: *value_range, max_weight: *max_weight },
                EncodingParams::without_dp(self.dim + 1, *gamma, *bits, Clipping::None, None)
                    .map_err(|e| ServeError::Config(format!("quantization: {e}")))?,
            ),
        };
        Ok(RoundSettings { session, round, total_rounds, mode, encoding, model: model.to_vec() })
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
                self.expected_cohort()
            }
            (Mode::Weighted { .. }, Some(weight)) => weight,
            (Mode::Weighted { .. }, None) => return Err(ServeError::Model("a weighted sum without its weight".into())),
        };
        if denominator <= 0.0 {
            return Ok(Applied { denominator, update_norm: 0.0 });
        }
        let update_norm = match momentum {
            Some(velocity) => {
                apply_fedavg_momentum_step(model, velocity, &decoded.values, denominator, server_lr, beta)
            }
            None => apply_fedavg_step(model, &decoded.values, denominator, server_lr),
        }
        .map_err(|e| ServeError::Model(e.to_string()))?;
        Ok(Applied { denominator, update_norm })
    }
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
}

/// The ε of a session with random check-ins against those who see only the released
/// models (see `privagg_dp::sampling`): each round's participation is a hidden coin.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckInSummary {
    /// The check-in rate q.
    pub rate: f64,
    /// ε over the session at `delta`.
    pub epsilon: f64,
    /// δ of that ε: the configured δ plus rounds·β.
    pub delta: f64,
    /// β: the chance, per round, that too few of the other clients check in.
    pub shortfall_per_round: f64,
}

impl PlanSummary {
    fn of(plan: &Plan, colluders: u32, check_ins: Option<&CheckIns>) -> Result<Self, ServeError> {
        let event = plan.dp_event_with_rate(1.0);
        let (delta, rounds) = (plan.input.delta, plan.input.rounds);
        let bad = |e: privagg_dp::DpError| ServeError::Config(format!("DP plan: {e}"));
        Ok(Self {
            epsilon: tightest_epsilon(&event, rounds, delta).map_err(bad)?,
            epsilon_per_round: tightest_epsilon(&event, 1, delta).map_err(bad)?,
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
                    let (epsilon, delta) = c.epsilon(&event, rounds, plan.input.delta).map_err(bad)?;
                    Ok::<_, ServeError>(CheckInSummary {
                        rate: c.rate(),
                        epsilon,
                        delta,
                        shortfall_per_round: c.shortfall(),
                    })
                })
                .transpose()?,
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

    fn output(included: u32, sum: Vec<u64>) -> RoundOutput {
        RoundOutput { sum, included: (1..=included).filter_map(ClientId::new).collect() }
    }

    #[test]
    fn a_dp_sum_of_fewer_than_n_min_inputs_is_never_applied() {
        let c = config(true);
        let aggregation = Aggregation::new(&c).unwrap();
        let settings = aggregation.round_settings([0; 16], 1, 1, &[0.0; 4], 0.0).unwrap();
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
        let settings = aggregation.round_settings([0; 16], 1, 1, &[0.0; 4], 0.0).unwrap();
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

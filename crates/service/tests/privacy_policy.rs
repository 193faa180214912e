//! A server that lies about a round's differential privacy, against a default client's
//! [`PrivacyPolicy`]: each lie from the DP audit is refused before the client encodes
//! anything, and the honest round passes with the DP event the client accounts itself.
#![allow(clippy::unwrap_used)] // test code

use privagg_dp::accountant::DpEvent;
use privagg_dp::encoding::Rounding;
use privagg_dp::noise::{NoiseSpec, Ratio};
use privagg_dp::planner::{Mechanism, NoiseTarget, Plan, PlanInput, plan};
use privagg_protocol::{PrgKind, RoundParams};
use privagg_service::privacy::{PrivacyRefusal, PrivacySpent, assumed_colluders};
use privagg_service::{AggregationMode, PrivacyPolicy, RoundMemory, RoundSettings};

const CORRUPT: f64 = 0.05;

/// An honest server's round: 100 clients, at least 80 in the sum, z = 1.
fn honest() -> (RoundSettings, RoundParams, Plan) {
    let (n, n_min, dim) = (100, 80, 1000);
    let input = plan_input(1.0, assumed_colluders(CORRUPT, n_min as u32) as usize);
    let p = plan(&input).unwrap();
    let settings = RoundSettings {
        session: [1; 16],
        round: 1,
        total_rounds: 10,
        mode: AggregationMode::Dp {
            mechanism: Mechanism::DiscreteGaussian,
            n_min: n_min as u32,
            colluders: input.colluders as u32,
            delta: 1e-5,
            epsilon_spent: 0.0,
            clip_indicator: None,
        },
        encoding: p.encoding_params([3; 32]),
        model: vec![0.0; dim],
        train_timeout_secs: 0,
    };
    let params = RoundParams {
        round: 1,
        num_clients: n as u32,
        neighbours: 68,
        threshold: 38,
        min_clients: n_min as u32,
        dim: p.padded_dim as u32,
        bits: 20,
        prg: PrgKind::default(),
    };
    (settings, params, p)
}

/// The plan of a round of 100 clients, at least 80 in the sum, m = 1000, C = 1, 20 bits.
fn plan_input(z: f64, colluders: usize) -> PlanInput {
    let mut input =
        PlanInput::new(Mechanism::DiscreteGaussian, NoiseTarget::Multiplier(z), 1e-5, 10, 1.0, 100, 80, 1000, 1.0, 20);
    input.colluders = colluders;
    input
}

fn check(settings: &RoundSettings, params: &RoundParams) -> Result<Option<DpEvent>, PrivacyRefusal> {
    PrivacyPolicy::default().check(settings, params, CORRUPT)
}

fn set_variance(settings: &mut RoundSettings, variance: Ratio) {
    settings.encoding.noise = NoiseSpec::DiscreteGaussian { variance };
}

#[test]
fn an_honest_round_passes_with_the_event_the_server_accounts() {
    let (settings, params, plan) = honest();
    assert_eq!(check(&settings, &params), Ok(Some(plan.dp_event_with_rate(1.0))));
}

#[test]
fn a_round_without_dp_needs_the_clients_consent() {
    let (mut settings, params, _) = honest();
    settings.mode = AggregationMode::Weighted { value_range: 1.0, max_weight: 1.0 };
    assert_eq!(check(&settings, &params), Err(PrivacyRefusal::NoDp));
    let consenting = PrivacyPolicy { allow_no_dp: true, ..PrivacyPolicy::default() };
    assert_eq!(consenting.check(&settings, &params, CORRUPT), Ok(None));
}

#[test]
fn a_dp_round_without_noise_or_norm_check_is_refused() {
    let (mut settings, params, _) = honest();
    settings.encoding.noise = NoiseSpec::None;
    assert_eq!(check(&settings, &params), Err(PrivacyRefusal::NoNoise));
    let (mut settings, params, _) = honest();
    settings.encoding.rounding = Rounding::Unbiased;
    assert_eq!(check(&settings, &params), Err(PrivacyRefusal::NoNoise));
}

#[test]
fn an_inflated_n_min_does_not_buy_a_smaller_noise_share() {
    // The server claims n_min = 10⁸ and sends a share variance 10⁶ times too small; the
    // client counts the protocol's min_clients (80) instead.
    let (mut settings, params, plan) = honest();
    if let AggregationMode::Dp { n_min, .. } = &mut settings.mode {
        *n_min = 100_000_000;
    }
    let s2 = plan.local_variance.to_f64() / 1e6;
    set_variance(&mut settings, Ratio::from_f64_ceil(s2).unwrap());
    assert!(matches!(check(&settings, &params), Err(PrivacyRefusal::BelowFloor { floor: 0.5, .. })));
}

#[test]
fn claiming_no_colluders_does_not_count_the_corrupt_clients_noise() {
    // The server plans for 0 colluders among 80 while the client assumes ⌈5 % · 80⌉ = 4:
    // at a noise multiplier right at the client's floor, the 4 missing shares put the
    // round below it.
    let (mut settings, params, _) = honest();
    let mut input = plan_input(0.5, 0);
    let p = plan(&input).unwrap();
    settings.encoding = p.encoding_params([3; 32]);
    if let AggregationMode::Dp { colluders, .. } = &mut settings.mode {
        *colluders = 0;
    }
    assert!(matches!(check(&settings, &params), Err(PrivacyRefusal::BelowFloor { .. })));
    // Counting them, the same server passes.
    input.colluders = 4;
    settings.encoding = plan(&input).unwrap().encoding_params([3; 32]);
    assert!(check(&settings, &params).is_ok());
}

#[test]
fn tiny_discrete_gaussian_shares_are_accounted_with_their_tau_term() {
    // The DP audit's τ regime: share parameter s² = 0.1 with a norm bound that makes the
    // Gaussian formula read z = 1 across h honest shares (h·s² = Δ₂²). The full
    // accountant sees the τ term and refuses.
    let (mut settings, mut params, _) = honest();
    params.min_clients = 84;
    if let AggregationMode::Dp { n_min, colluders, .. } = &mut settings.mode {
        (*n_min, *colluders) = (84, 5);
    }
    // h = 79 honest shares of 0.1 (h·s² = 7.9); a clip of 1.81 at γ = 1 in one dimension
    // bounds the rounded norm by Δ₂ = 2.81, so Δ₂² ≈ 7.9 and the Gaussian formula reads
    // z ≈ 1, double the client's floor.
    set_variance(&mut settings, Ratio::new(1, 10).unwrap());
    settings.encoding.gamma = 1.0;
    settings.encoding.clipping = privagg_dp::encoding::Clipping::L2(1.81);
    settings.encoding.dim = 1;
    settings.encoding.padded_dim = 1;
    settings.encoding.rotation_seed = None;
    settings.model = vec![0.0];
    if let Rounding::Conditional { norm_bound_sq, beta, .. } = &mut settings.encoding.rounding {
        *beta = 0.0;
        *norm_bound_sq = 7;
    }
    assert!(settings.effective_noise_multiplier().unwrap() >= 1.0, "what a Gaussian reading says");
    let refused = check(&settings, &params);
    assert!(matches!(refused, Err(PrivacyRefusal::BelowFloor { .. })), "{refused:?}");
}

#[test]
fn a_norm_check_looser_or_shorter_than_safe_is_refused() {
    // A norm bound below ⌊Δ₂²⌋ makes rounding fail for some updates (a bit the server
    // sees); so do too few attempts.
    let (mut settings, params, _) = honest();
    if let Rounding::Conditional { norm_bound_sq, .. } = &mut settings.encoding.rounding {
        *norm_bound_sq /= 2;
    }
    assert!(matches!(check(&settings, &params), Err(PrivacyRefusal::UnsafeEncoding(_))));
    let (mut settings, params, _) = honest();
    if let Rounding::Conditional { max_attempts, .. } = &mut settings.encoding.rounding {
        *max_attempts = 3;
    }
    assert!(matches!(check(&settings, &params), Err(PrivacyRefusal::UnsafeEncoding(_))));
    // A bound far above Δ₂ passes the check but is accounted at its own size.
    let (mut settings, params, _) = honest();
    if let Rounding::Conditional { norm_bound_sq, .. } = &mut settings.encoding.rounding {
        *norm_bound_sq *= 100;
    }
    assert!(matches!(check(&settings, &params), Err(PrivacyRefusal::BelowFloor { .. })));
}

#[test]
fn a_floor_above_the_servers_noise_refuses_and_zero_accepts_any_noise() {
    let (settings, params, _) = honest();
    let picky = PrivacyPolicy { min_noise_multiplier: 2.0, ..PrivacyPolicy::default() };
    assert!(matches!(picky.check(&settings, &params, CORRUPT), Err(PrivacyRefusal::BelowFloor { floor: 2.0, .. })));
    let lax = PrivacyPolicy { min_noise_multiplier: 0.0, ..PrivacyPolicy::default() };
    assert!(lax.check(&settings, &params, CORRUPT).is_ok());
}

#[test]
fn a_spent_budget_keeps_the_client_out_and_every_input_sent_is_charged() {
    let (settings, params, _) = honest();
    let policy = PrivacyPolicy { max_epsilon: Some(10.0), ..PrivacyPolicy::default() };
    let event = policy.check(&settings, &params, CORRUPT).unwrap().unwrap();
    let mut spent = PrivacySpent::default();
    let mut sent = 0u64;
    while policy.check_budget(&spent, Some(&event)).is_ok() {
        spent.charge(Some(&event));
        sent += 1;
    }
    // What was charged is what the accountant says `sent` such rounds cost.
    let charged = spent.epsilon_with(None, 1e-5).unwrap();
    let expected = privagg_dp::accountant::epsilon(&event, sent, 1e-5).unwrap();
    assert!((charged - expected).abs() < 1e-9 * expected, "{charged} vs {expected}");
    assert!(charged <= 10.0 && sent >= 2, "{sent} inputs, ε {charged}");
    assert!(matches!(
        policy.check_budget(&spent, Some(&event)),
        Err(PrivacyRefusal::BudgetExhausted { max_epsilon: 10.0, .. })
    ));
    // A round without DP costs no ε, but counts against the participation cap.
    let capped = PrivacyPolicy { max_participations: Some(sent), ..policy.clone() };
    assert_eq!(capped.check_budget(&spent, None), Err(PrivacyRefusal::ParticipationCap(sent)));
    assert!(policy.check_budget(&spent, None).is_ok());
    // The memory survives a round trip through its JSON.
    let stored: PrivacySpent = serde_json::from_str(&serde_json::to_string(&spent).unwrap()).unwrap();
    assert_eq!(stored, spent);
}

#[test]
fn a_new_session_of_the_same_server_does_not_reset_the_budget() {
    // The server picks the session id: a fresh one must not buy a fresh budget.
    let (settings, params, _) = honest();
    let policy = PrivacyPolicy { max_epsilon: Some(10.0), ..PrivacyPolicy::default() };
    let event = policy.check(&settings, &params, CORRUPT).unwrap().unwrap();
    let mut one_session = PrivacySpent::default();
    while policy.check_budget(&one_session.and(&one_session), Some(&event)).is_ok() {
        one_session.charge(Some(&event));
    }
    // Within budget alone, over it together with an identical second session.
    assert!(policy.check_budget(&one_session, Some(&event)).is_ok());
    let spent = serde_json::to_value(&one_session).unwrap();
    let memory: RoundMemory = serde_json::from_value(serde_json::json!({
        "sessions": {
            "aa": { "finished": 3, "attempts": {}, "spent": spent },
            "bb": { "finished": 0, "attempts": {}, "spent": spent },
        }
    }))
    .unwrap();
    assert_eq!(memory.spent(), one_session.and(&one_session));
    assert!(matches!(policy.check_budget(&memory.spent(), Some(&event)), Err(PrivacyRefusal::BudgetExhausted { .. })));
}

#[test]
fn a_clip_indicator_is_accounted_and_one_that_outweighs_the_noise_is_refused() {
    // Adaptive clipping adds one coordinate, (b − ½)·κ: the client accounts the round
    // with the combined sensitivity, so a server cannot hide the indicator's cost, nor
    // make the indicator loud enough to reveal b (κ far above the noise).
    let (mut settings, params, plan) = honest();
    let total_stddev = (plan.local_variance.to_f64() * plan.honest_shares as f64).sqrt();
    let modest = privagg_dp::adaptive_clip::indicator_scale(total_stddev, 4.0); // σ_b = n/20 at n = 80
    for (scale, passes) in [(modest, true), (1_000 * modest, false)] {
        if let AggregationMode::Dp { clip_indicator, .. } = &mut settings.mode {
            *clip_indicator = Some(scale);
        }
        let expected = privagg_dp::adaptive_clip::with_indicator(&plan.dp_event_with_rate(1.0), scale);
        match check(&settings, &params) {
            Ok(Some(event)) => {
                assert!(passes, "κ = {scale} passed");
                assert_eq!(event, expected);
            }
            Err(PrivacyRefusal::BelowFloor { .. }) => assert!(!passes, "κ = {scale} refused"),
            other => panic!("{other:?}"),
        }
    }
}

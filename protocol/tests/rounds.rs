//! Whole rounds in memory: the recovered sum is exactly the sum of the inputs of the
//! clients in it, whoever drops out when, as long as enough remain; otherwise the round
//! aborts with a typed reason. A client that vanishes before revealing its nonce leaves
//! the graph unlabelled: that attempt aborts, and the service runs the next without it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Enrollment, id, params, simulation};
use privagg_protocol::graph_params::{AdversaryClass, ThreatModel, find_graph_parameters};
use privagg_protocol::simulator::{DropKind, DropPoint, Simulation, simulate};
use privagg_protocol::{ClientPolicy, DropReason, Phase, PrgKind, RoundAbort};

/// Runs a round and checks the sum; returns the number of inputs in it (0 when a
/// client vanished before revealing its nonce, which aborts the attempt).
fn assert_exact(p: privagg_protocol::RoundParams, seed: u64, dropouts: &[(u32, DropPoint, DropKind)]) -> usize {
    let sim = simulation(p, seed, dropouts);
    let out = simulate(&sim).unwrap();
    let unrevealed = dropouts.iter().filter(|d| d.1 == DropPoint::BeforeAdvertiseKeys).count();
    if unrevealed > 0 {
        assert_eq!(out.result, Err(RoundAbort::CohortIncomplete { missing: unrevealed }), "{dropouts:?}");
        assert!(out.expected_sum.is_empty());
        return 0;
    }
    let output = out.result.as_ref().unwrap_or_else(|e| panic!("round aborted: {e} (dropouts {dropouts:?})"));
    assert_eq!(output.sum, out.expected_sum, "seed {seed}, dropouts {dropouts:?}");
    assert!(out.client_errors.is_empty(), "{:?}", out.client_errors);
    // Exactly the clients that sent their masked input are in the sum.
    for c in sim.params.client_ids() {
        let in_sum = match sim.dropouts.get(&c).map(|d| d.point) {
            None
            | Some(DropPoint::BeforeSignature | DropPoint::BeforeUnmaskResponse | DropPoint::AfterUnmaskResponse) => {
                true
            }
            Some(_) => false,
        };
        assert_eq!(output.included.contains(&c), in_sum, "{c}");
    }
    output.included.len()
}

#[test]
fn exact_sum_without_dropouts_for_every_size_graph_and_width() {
    for &(n, k, t) in &[(2, 1, 2), (3, 2, 2), (10, 9, 6), (10, 4, 3), (100, 99, 51), (100, 20, 11)] {
        for bits in [16u8, 32, 64] {
            let seeds = if n == 100 && k == 99 { 1 } else { 3 };
            for seed in 0..seeds {
                assert_eq!(assert_exact(params(n, k, t, 24, bits), seed, &[]), n as usize);
            }
        }
    }
}

#[test]
fn exact_sum_with_odd_widths_and_chacha() {
    for bits in [1u8, 7, 13, 31, 33, 63] {
        assert_exact(params(5, 4, 3, 17, bits), u64::from(bits), &[]);
    }
    let mut p = params(6, 4, 3, 40, 32);
    p.prg = PrgKind::ChaCha20;
    assert_exact(p, 9, &[(2, DropPoint::BeforeMaskedInput, DropKind::Silent)]);
}

#[test]
fn exact_sum_with_a_dropout_at_every_phase() {
    for &(n, k, t) in &[(3, 2, 2), (10, 9, 6), (10, 4, 3), (100, 20, 11)] {
        for bits in [16u8, 32, 64] {
            for (i, point) in DropPoint::ALL.into_iter().enumerate() {
                for kind in [DropKind::Silent, DropKind::ConnectionLost] {
                    let seed = 100 + i as u64;
                    let dropped = 1 + (i as u32 * 7) % n;
                    assert_exact(params(n, k, t, 16, bits), seed, &[(dropped, point, kind)]);
                }
            }
        }
    }
}

#[test]
fn exact_sum_with_many_dropouts_spread_over_phases_and_seeds() {
    // 100 clients, sparse graph, 10% dropping at mixed points after revealing their nonce.
    for seed in 0..6u64 {
        let dropouts: Vec<_> = (0..10u32)
            .map(|i| {
                let point = DropPoint::ALL[1 + ((i as u64 + seed) % 5) as usize];
                let kind = if i % 2 == 0 { DropKind::Silent } else { DropKind::ConnectionLost };
                (1 + i * 10 + (seed as u32 % 10), point, kind)
            })
            .collect();
        assert_exact(params(100, 20, 11, 32, 32), seed, &dropouts);
    }
    // Complete graph, several clients dropping after ShareKeys (the expensive case).
    let dropouts: Vec<_> = (1..=4).map(|c| (c, DropPoint::BeforeMaskedInput, DropKind::Silent)).collect();
    assert_exact(params(10, 9, 6, 64, 32), 77, &dropouts);
}

#[test]
fn exactly_t_survivors_complete_the_round_and_t_minus_one_abort() {
    // Complete graph of 10 with t = 6: four may drop after sharing keys, five may not.
    let four: Vec<_> = (1..=4).map(|c| (c, DropPoint::BeforeMaskedInput, DropKind::Silent)).collect();
    assert_eq!(assert_exact(params(10, 9, 6, 8, 32), 1, &four), 6);

    let five: Vec<_> = (1..=5).map(|c| (c, DropPoint::BeforeMaskedInput, DropKind::Silent)).collect();
    let out = simulate(&simulation(params(10, 9, 6, 8, 32), 1, &five)).unwrap();
    assert!(matches!(
        out.result,
        Err(RoundAbort::TooFewClients { phase: Phase::MaskedInput, remaining: 5, required: 6 })
    ));
    assert!(out.expected_sum.is_empty());
    // The survivors were told, with a typed abort.
    assert_eq!(out.client_errors.len(), 5);

    // The same boundary before ShareKeys.
    let five: Vec<_> = (1..=5).map(|c| (c, DropPoint::BeforeShareKeys, DropKind::ConnectionLost)).collect();
    let out = simulate(&simulation(params(10, 9, 6, 8, 32), 2, &five)).unwrap();
    assert!(matches!(out.result, Err(RoundAbort::TooFewClients { remaining: 5, .. })));
    let four: Vec<_> = (1..=4).map(|c| (c, DropPoint::BeforeShareKeys, DropKind::ConnectionLost)).collect();
    assert_eq!(assert_exact(params(10, 9, 6, 8, 32), 2, &four), 6);
    // Before the nonces are revealed, one client missing is one too many.
    let one = [(3, DropPoint::BeforeAdvertiseKeys, DropKind::ConnectionLost)];
    let out = simulate(&simulation(params(10, 9, 6, 8, 32), 2, &one)).unwrap();
    assert_eq!(out.result, Err(RoundAbort::CohortIncomplete { missing: 1 }));
}

#[test]
fn unmasking_needs_t_responders_not_t_inputs() {
    // 10 clients, t = 6: all inputs arrive, then five vanish before sending shares;
    // only five holders answer, so the self masks cannot be rebuilt.
    let five: Vec<_> = (1..=5).map(|c| (c, DropPoint::BeforeUnmaskResponse, DropKind::Silent)).collect();
    let out = simulate(&simulation(params(10, 9, 6, 8, 32), 3, &five)).unwrap();
    assert!(matches!(out.result, Err(RoundAbort::TooFewShares { available: 5, threshold: 6, .. })));
    // With four vanishing, six holders answer: their inputs stay in the sum.
    let four: Vec<_> = (1..=4).map(|c| (c, DropPoint::BeforeUnmaskResponse, DropKind::Silent)).collect();
    assert_eq!(assert_exact(params(10, 9, 6, 8, 32), 3, &four), 10);
}

#[test]
fn min_clients_above_threshold_is_enforced() {
    let mut p = params(10, 9, 4, 8, 32);
    p.min_clients = 8;
    let two: Vec<_> = (1..=2).map(|c| (c, DropPoint::BeforeMaskedInput, DropKind::Silent)).collect();
    assert_eq!(assert_exact(p.clone(), 4, &two), 8);
    let three: Vec<_> = (1..=3).map(|c| (c, DropPoint::BeforeMaskedInput, DropKind::Silent)).collect();
    let out = simulate(&simulation(p, 4, &three)).unwrap();
    assert!(matches!(out.result, Err(RoundAbort::TooFewClients { remaining: 7, required: 8, .. })));
}

#[test]
fn dropped_clients_are_recorded_with_phase_and_reason() {
    let out = simulate(&simulation(
        params(6, 5, 3, 8, 32),
        5,
        &[
            (2, DropPoint::BeforeShareKeys, DropKind::Silent),
            (4, DropPoint::BeforeMaskedInput, DropKind::ConnectionLost),
        ],
    ))
    .unwrap();
    assert!(out.result.is_ok());
    assert_eq!(out.dropped.len(), 2);
    assert_eq!(out.dropped[0].client, id(2));
    assert_eq!(out.dropped[0].phase, Phase::ShareKeys);
    assert_eq!(out.dropped[0].reason, DropReason::MissedDeadline);
    assert_eq!(out.dropped[1].client, id(4));
    assert_eq!(out.dropped[1].phase, Phase::MaskedInput);
    assert_eq!(out.dropped[1].reason, DropReason::ConnectionLost);
    assert!(!out.dropped[1].in_sum);
}

#[test]
fn traffic_is_bit_packed() {
    // 4 clients, 1000 words of 20 bits: each masked input is 2500 bytes, not 4000.
    let out = simulate(&simulation(params(4, 3, 2, 1000, 20), 6, &[])).unwrap();
    assert!(out.result.is_ok());
    let per_client = out.traffic.to_server / 4;
    assert!(per_client < 2500 + 1000, "{per_client} bytes per client");
    assert!(per_client >= 2500);
}

#[test]
fn certified_rounds_with_ten_percent_dropping_at_each_phase_are_exact() {
    // The default mode: certified clients with the default policy, sized for a server
    // that lies about dropouts, so the consistency round runs too.
    let enrollment = Enrollment::new();
    let n = 40;
    let threat =
        ThreatModel { corrupt_fraction: 0.05, dropout_fraction: 0.1, adversary: AdversaryClass::SemiMaliciousServer };
    let sized = find_graph_parameters(n, &threat).unwrap();
    let mut p = params(n, sized.neighbours, sized.threshold, 16, 32);
    p.min_clients = sized.threshold.max(n * 9 / 10);
    let identities: Vec<_> = p.client_ids().map(|c| enrollment.identity(&format!("client-{}", c.get()))).collect();
    let certified = |seed: u64, dropouts: &[(u32, DropPoint, DropKind)]| {
        let sim = Simulation {
            policy: ClientPolicy::default(),
            identities: identities.clone(),
            ..simulation(p.clone(), seed, dropouts)
        };
        simulate(&sim).unwrap()
    };
    let mut mixed = Vec::new();
    for (i, point) in DropPoint::ALL[1..].iter().copied().enumerate() {
        let kind = if i % 2 == 0 { DropKind::Silent } else { DropKind::ConnectionLost };
        let dropouts: Vec<_> = (0..4).map(|j| (3 + 10 * j + i as u32, point, kind)).collect();
        mixed.push(dropouts[i % 4]);
        let out = certified(i as u64, &dropouts);
        let output = out.result.unwrap_or_else(|e| panic!("{point:?}: {e}"));
        assert_eq!(output.sum, out.expected_sum, "{point:?}");
        assert!(out.client_errors.is_empty(), "{point:?}: {:?}", out.client_errors);
        let in_sum = !matches!(point, DropPoint::BeforeShareKeys | DropPoint::BeforeMaskedInput);
        assert_eq!(output.included.len(), if in_sum { 40 } else { 36 }, "{point:?}");
        let phases: Vec<Phase> = out.dropped.iter().map(|d| d.phase).collect();
        let expected = match point {
            DropPoint::BeforeShareKeys => vec![Phase::ShareKeys; 4],
            DropPoint::BeforeMaskedInput => vec![Phase::MaskedInput; 4],
            DropPoint::BeforeSignature => vec![Phase::Consistency; 4],
            DropPoint::BeforeUnmaskResponse => vec![Phase::Unmask; 4],
            _ => vec![],
        };
        assert_eq!(phases, expected, "{point:?}");
    }
    // One client dropping at each phase, in the same round.
    let out = certified(9, &mixed);
    assert_eq!(out.result.unwrap().sum, out.expected_sum);
}

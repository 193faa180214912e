//! A server that lies about who dropped out (a *split view*), played against real honest
//! clients. It runs the protocol up to the unmask phase, then tells some of a target's
//! holders that the target dropped (they reveal shares of its mask key s_u) and the
//! others that it survived (they reveal shares of its self-mask secret b_u). With t
//! shares of both it strips every mask from the target's masked input.
//!
//! At the thresholds privagg's server used to pick (sized for a curious server) the
//! attack recovered an honest client's exact input with every client honest; clients now
//! refuse such rounds. At the thresholds they accept (2t ≥ k + 2 + c) no split gathers t
//! shares of both secrets, and the masked input stays masked. The lying server also
//! splits the survivor set each side signs in the consistency round, and forwards to
//! each holder only the signatures over the set it signed: at the accepted thresholds
//! that stops the truth side too; at the old ones it does not, which is why clients rely
//! on the thresholds.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::collections::BTreeMap;

use common::{Enrollment, Harness, any_threshold, id};
use privagg_crypto::{
    KeyContext, MaskSign, Scalar, SecretKey, derive_pairwise_mask_seed, derive_self_mask_seed,
    lagrange_coefficients_at_zero,
};
use privagg_protocol::graph_params::{AdversaryClass, ThreatModel, find_graph_parameters};
use privagg_protocol::{
    AdvertisedKeys, ClientError, ClientId, ClientMessage, ClientPolicy, NeighbourGraph, Outgoing, Phase, PrgKind,
    RoundParams, ServerMessage, SurvivorSignature, UnmaskRequest, cohort, masking,
};

/// What the lying server got.
struct Outcome {
    /// Why clients refused the round's parameters.
    refused: Vec<ClientError>,
    /// Why holders refused to reveal anything.
    refused_unmask: Vec<ClientError>,
    /// Shares of the target's mask key and of its self-mask secret revealed to it.
    mask_key_shares: usize,
    self_mask_shares: usize,
    /// The target's input as the server reconstructs it, if it had t shares of both.
    recovered: Option<Vec<u64>>,
    /// The target's real input.
    input: Vec<u64>,
}

fn params(n: u32, k: u32, t: u32) -> RoundParams {
    RoundParams {
        round: 1,
        num_clients: n,
        neighbours: k,
        threshold: t,
        min_clients: t.max(n * 9 / 10),
        dim: 16,
        bits: 32,
        prg: PrgKind::default(),
    }
}

/// Runs the honest protocol with `policy` clients (certified by `enrollment`, if given),
/// splitting the view of `target`'s holders so that as many as possible reveal each kind
/// of share.
fn split_view(params: RoundParams, policy: ClientPolicy, target: ClientId, enrollment: Option<&Enrollment>) -> Outcome {
    let t = params.threshold as usize;
    let mut h = match enrollment {
        Some(enrollment) => Harness::certified(params.clone(), 7, policy, enrollment),
        None => Harness::with_clients(params.clone(), 7, |_| (policy.clone(), None), &[]),
    };
    let (mut refused, mut refused_unmask) = (Vec::new(), Vec::new());
    let (mut cohort_hash, mut session_id, mut masked) = ([0u8; 32], [0u8; 32], None);
    let (mut keys, mut told_dropped, mut graph) = (BTreeMap::new(), Vec::new(), None);
    // Survivor-set signatures of the holders told the target dropped: the honest server
    // would refuse them (they sign another set), so the liar keeps them to itself.
    let mut dropped_view_signatures = BTreeMap::new();
    // Shares of the target's two secrets, as (holder, value).
    let mut mask_key: Vec<(u32, Scalar)> = Vec::new();
    let mut self_mask: Vec<(u32, Scalar)> = Vec::new();
    for _ in 0..16 {
        let mut outgoing = h.server.drain_outgoing();
        if outgoing.iter().any(|o| matches!(o.message, ServerMessage::UnmaskRequest(_))) {
            // The liar writes the requests of the holders it lies to itself.
            let graph: &NeighbourGraph = graph.as_ref().unwrap();
            outgoing.retain(|o| !told_dropped.contains(&o.to));
            for &v in &told_dropped {
                outgoing.push(Outgoing {
                    to: v,
                    message: dropped_view_request(graph, v, target, &dropped_view_signatures),
                });
            }
        }
        if outgoing.is_empty() {
            if matches!(h.server.phase(), Phase::Reconstruct | Phase::Aborted) {
                break;
            }
            h.server.close_phase();
            continue;
        }
        for out in outgoing {
            let mut message = out.message;
            match &mut message {
                ServerMessage::Config(config) => cohort_hash = config.cohort,
                ServerMessage::KeyList(list) if out.to == target => {
                    // The graph follows from the revealed nonces, which the server sees
                    // too: the target's holders are its neighbours (and itself). t of
                    // them, never the target itself (it must see itself survive), will
                    // hear that it dropped; the rest that it survived.
                    let labelling = cohort::labelling(&cohort_hash, list.cohort.iter().map(|s| &s.nonce));
                    session_id = labelling.session_id;
                    let g = NeighbourGraph::new(params.num_clients, params.neighbours, &labelling.graph_seed);
                    told_dropped = lie_targets(&g, target, t);
                    graph = Some(g);
                    keys = list.entries.iter().map(|e| (e.id, e.keys)).collect::<BTreeMap<ClientId, AdvertisedKeys>>();
                }
                // The honest state machine drops the holders it never heard from; the liar
                // keeps that to itself.
                ServerMessage::Abort(_) if told_dropped.contains(&out.to) => continue,
                // The survivor set to sign is split the same way.
                ServerMessage::ConsistencyCheck(survivors) if told_dropped.contains(&out.to) => {
                    survivors.retain(|&c| c != target);
                }
                _ => {}
            }
            let (is_config, is_unmask) =
                (matches!(message, ServerMessage::Config(_)), matches!(message, ServerMessage::UnmaskRequest(_)));
            let (client, rng) = &mut h.clients[out.to.get() as usize - 1];
            let reply = match client.receive(message, rng) {
                Ok(reply) => reply,
                Err(e) => {
                    // After the split, the honest server drops the clients whose answers it
                    // did not ask for; only refusals of the round itself count here.
                    if is_config {
                        refused.push(e);
                    } else if is_unmask {
                        refused_unmask.push(e);
                    }
                    continue;
                }
            };
            match &reply {
                Some(ClientMessage::MaskedInput(v)) if out.to == target => masked = Some(v.unpack()),
                Some(ClientMessage::UnmaskResponse(r)) => {
                    let holder = out.to.get();
                    mask_key.extend(r.mask_key_shares.iter().filter(|s| s.owner == target).map(|s| (holder, s.value)));
                    self_mask
                        .extend(r.self_mask_shares.iter().filter(|s| s.owner == target).map(|s| (holder, s.value)));
                }
                _ => {}
            }
            match reply {
                Some(ClientMessage::SurvivorsSigned(signature)) if told_dropped.contains(&out.to) => {
                    dropped_view_signatures.insert(out.to, signature);
                }
                Some(reply) => {
                    let _ = h.server.receive(out.to, reply);
                }
                None => {}
            }
        }
    }
    let input = h.inputs[target.get() as usize - 1].clone();
    let (mask_key_shares, self_mask_shares) = (mask_key.len(), self_mask.len());
    let recovered = (mask_key_shares >= t && self_mask_shares >= t).then(|| {
        let ctx = KeyContext { session_id, round: params.round };
        let (s, b) = (interpolate(&mask_key[..t]), interpolate(&self_mask[..t]));
        unmask(&params, &ctx, target, &keys, s, b, masked.unwrap())
    });
    Outcome { refused, refused_unmask, mask_key_shares, self_mask_shares, recovered, input }
}

/// The t holders of `target` to lie to: if it can, the server picks t that all neighbour
/// each other, so that each of them sees t signatures over the false survivor set (in a
/// ring lattice, holders close together on the ring); otherwise the first t.
fn lie_targets(graph: &NeighbourGraph, target: ClientId, t: usize) -> Vec<ClientId> {
    let holders = graph.neighbours(target);
    let clique = holders.iter().find_map(|&seed| {
        let mut chosen = vec![seed];
        for &v in &holders {
            if chosen.len() < t && !chosen.contains(&v) && chosen.iter().all(|&c| graph.are_neighbours(c, v)) {
                chosen.push(v);
            }
        }
        (chosen.len() == t).then_some(chosen)
    });
    clique.unwrap_or_else(|| holders.into_iter().take(t).collect())
}

/// The unmask request a holder `v` told that `target` dropped gets: every other holder
/// survived, the target did not, with the signatures over the same (false) survivor set.
fn dropped_view_request(
    graph: &NeighbourGraph,
    v: ClientId,
    target: ClientId,
    signatures: &BTreeMap<ClientId, Option<[u8; 64]>>,
) -> ServerMessage {
    let mut holders = graph.neighbours(v);
    holders.push(v);
    holders.sort_unstable();
    let signatures = holders
        .iter()
        .filter_map(|signer| Some(SurvivorSignature { signer: *signer, signature: (*signatures.get(signer)?)? }))
        .collect();
    holders.retain(|&c| c != target);
    ServerMessage::UnmaskRequest(UnmaskRequest { survivors: holders, dropped: vec![target], signatures })
}

fn interpolate(shares: &[(u32, Scalar)]) -> Scalar {
    let xs: Vec<u32> = shares.iter().map(|s| s.0).collect();
    lagrange_coefficients_at_zero(&xs).unwrap().iter().zip(shares).map(|(c, s)| c * s.1).sum()
}

/// Removes the target's self mask and pairwise masks from its masked input.
fn unmask(
    params: &RoundParams,
    ctx: &KeyContext,
    target: ClientId,
    keys: &BTreeMap<ClientId, AdvertisedKeys>,
    mask_key: Scalar,
    self_secret: Scalar,
    mut masked: Vec<u64>,
) -> Vec<u64> {
    let s = SecretKey::from_scalar(mask_key);
    let mut masks = vec![(derive_self_mask_seed(&self_secret, ctx, target.get()), MaskSign::Subtract)];
    for (&v, k) in keys.iter().filter(|(v, _)| **v != target) {
        let seed = derive_pairwise_mask_seed(&s.diffie_hellman(&k.mask).unwrap(), ctx, target.get(), v.get());
        // The target added the mask shared with a lower id and subtracted the other.
        masks.push((seed, if v < target { MaskSign::Subtract } else { MaskSign::Add }));
    }
    masking::apply_all(params.prg, &mut masked, params.bits, &masks).unwrap();
    masked
}

/// The (k, t) that privagg's server picked before it sized graphs for a lying server
/// (the parameter finder for a curious server, 5 % corrupt, 10 % dropout).
fn curious_sizing(n: u32) -> RoundParams {
    let threat =
        ThreatModel { corrupt_fraction: 0.05, dropout_fraction: 0.1, adversary: AdversaryClass::CuriousServer };
    let p = find_graph_parameters(n, &threat).unwrap();
    params(n, p.neighbours, p.threshold)
}

#[test]
fn the_split_view_recovers_an_input_from_clients_that_accept_any_threshold() {
    // The attack as it worked: 100 honest clients, k = 16, t = 6, clients accepting it.
    let p = curious_sizing(100);
    assert_eq!((p.neighbours, p.threshold), (16, 6));
    let outcome = split_view(p, any_threshold(), id(37), None);
    assert!(outcome.refused.is_empty());
    assert_eq!(outcome.recovered, Some(outcome.input), "the lying server should have the input");
}

#[test]
fn clients_refuse_the_thresholds_that_let_a_split_view_through() {
    for n in [100, 1000, 10_000] {
        let p = curious_sizing(n);
        let outcome = split_view(p.clone(), ClientPolicy::default(), id(2), None);
        assert_eq!(outcome.refused.len(), n as usize, "n = {n}: every client refuses");
        assert!(
            outcome
                .refused
                .iter()
                .all(|e| matches!(e, ClientError::UnsafeThreshold { threshold, .. } if *threshold == p.threshold)),
            "n = {n}: {:?}",
            outcome.refused.first()
        );
        assert_eq!((outcome.mask_key_shares, outcome.self_mask_shares), (0, 0));
    }
    // The complete graph with a minimum of half the cohort: 2t = n is not enough.
    let complete = params(10, 9, 5);
    let outcome = split_view(complete, ClientPolicy::default(), id(2), None);
    assert!(matches!(outcome.refused[0], ClientError::UnsafeThreshold { threshold: 5, required: 6, .. }));
}

/// (k, t) the server picks now: sized for a server that lies about dropouts.
fn semi_malicious_sizing(n: u32) -> RoundParams {
    let threat =
        ThreatModel { corrupt_fraction: 0.05, dropout_fraction: 0.1, adversary: AdversaryClass::SemiMaliciousServer };
    let p = find_graph_parameters(n, &threat).unwrap();
    params(n, p.neighbours, p.threshold)
}

#[test]
fn at_the_thresholds_clients_accept_no_split_view_gets_both_secrets() {
    // Even with clients that check no survivor-set signatures (anonymous, in the curious
    // mode), the thresholds alone leave the split one share short: t holders reveal the
    // mask key, the other k + 1 − t fall short for b_u.
    for n in [20, 100] {
        let p = semi_malicious_sizing(n);
        let (k, t) = (p.neighbours as usize, p.threshold as usize);
        let outcome = split_view(p, any_threshold(), id(5), None);
        assert!(outcome.refused.is_empty(), "n = {n}: {:?}", outcome.refused.first());
        assert_eq!(outcome.mask_key_shares, t, "n = {n}");
        assert_eq!(outcome.self_mask_shares, k + 1 - t, "n = {n}");
        assert!(outcome.self_mask_shares < t, "n = {n}: k = {k}, t = {t}");
        assert_eq!(outcome.recovered, None);
    }
}

#[test]
fn the_consistency_round_stops_a_split_view_before_any_share_of_the_target_leaves() {
    // Certified clients with the default policy sign the survivor set they are shown and
    // reveal only when t of their holders signed the same one. The server lies to t of
    // the target's holders that neighbour each other, so they do see t signatures over
    // the false set; but the target's own holders left to sign the true set are
    // k + 1 − t < t: the target itself refuses, and b_u stays out of reach.
    let enrollment = Enrollment::new();
    for n in [20, 100] {
        let p = semi_malicious_sizing(n);
        let (k, t) = (p.neighbours as usize, p.threshold as usize);
        let outcome = split_view(p, ClientPolicy::default(), id(5), Some(&enrollment));
        let case = format!("n = {n}");
        assert!(outcome.refused.is_empty(), "{case}: {:?}", outcome.refused.first());
        assert!(k + 1 - t < t, "{case}");
        assert!(!outcome.refused_unmask.is_empty(), "{case}");
        assert!(
            outcome.refused_unmask.iter().all(|e| matches!(e, ClientError::TooFewSurvivorSignatures { .. })),
            "{case}: {:?}",
            outcome.refused_unmask
        );
        assert!(outcome.self_mask_shares < t, "{case}");
        assert_eq!(outcome.recovered, None, "{case}");
    }
}

#[test]
fn the_consistency_round_alone_does_not_stop_a_split_view_at_the_old_thresholds() {
    // Why clients enforce the thresholds and do not rely on the signatures: on a sparse
    // graph at k = 16, t = 6 the server lies to t holders that neighbour each other. Each
    // of them sees t signatures over the false set, the other k + 1 − t ≥ t holders see
    // t over the true one, and the input falls out — with every signature valid.
    let p = curious_sizing(100);
    let outcome = split_view(p, any_threshold(), id(37), Some(&Enrollment::new()));
    assert!(outcome.refused.is_empty() && outcome.refused_unmask.is_empty());
    assert_eq!(outcome.recovered, Some(outcome.input));
}

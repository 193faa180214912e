//! A server that lies about who dropped out (a *split view*), played against real honest
//! clients. It runs the protocol up to the unmask phase, then tells some of a target's
//! holders that the target dropped (they reveal shares of its mask key s_u) and the
//! others that it survived (they reveal shares of its self-mask secret b_u). With t
//! shares of both it strips every mask from the target's masked input.
//!
//! At the thresholds privagg's server used to pick (sized for a curious server) the
//! attack recovered an honest client's exact input with every client honest; clients now
//! refuse such rounds. At the thresholds they accept (2t ≥ k + 2 + c) no split gathers t
//! shares of both secrets, and the masked input stays masked.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{any_threshold, id, random_inputs};
use privagg_crypto::{
    KeyContext, MaskSign, Scalar, SecretKey, derive_pairwise_mask_seed, derive_self_mask_seed,
    lagrange_coefficients_at_zero,
};
use privagg_protocol::graph_params::{AdversaryClass, ThreatModel, find_graph_parameters};
use privagg_protocol::{
    AdvertisedKeys, ClientError, ClientId, ClientMessage, ClientPolicy, ClientRound, NeighbourGraph, PrgKind,
    RoundParams, ServerMessage, ServerRound, masking,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// What the lying server got.
struct Outcome {
    /// Why clients refused the round's parameters.
    refused: Vec<ClientError>,
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
        graph_seed: [3; 32],
    }
}

/// Runs the honest protocol with `policy` clients, splitting the view of `target`'s
/// holders so that as many as possible reveal each kind of share.
fn split_view(params: RoundParams, policy: ClientPolicy, target: ClientId) -> Outcome {
    let t = params.threshold as usize;
    let inputs = random_inputs(&params, 7);
    let mut server = ServerRound::new(params.clone(), Arc::from(&b""[..])).unwrap();
    let mut clients: Vec<(ClientRound, ChaCha20Rng)> = params
        .client_ids()
        .map(|c| {
            let mut round = ClientRound::new(policy.clone());
            round.set_input(inputs[c.get() as usize - 1].clone()).unwrap();
            (round, ChaCha20Rng::seed_from_u64(u64::from(c.get())))
        })
        .collect();
    // The target's holders (itself and its neighbours): t of them, never the target
    // itself (it must see itself survive), hear that it dropped; the rest that it survived.
    let neighbours = NeighbourGraph::for_round(&params).neighbours(target);
    let told_dropped: Vec<ClientId> = neighbours.iter().copied().take(t).collect();
    let mut refused = Vec::new();
    let (mut keys, mut session_id, mut masked) = (BTreeMap::new(), [0u8; 32], None);
    // Shares of the target's two secrets, as (holder, value).
    let mut mask_key: Vec<(u32, Scalar)> = Vec::new();
    let mut self_mask: Vec<(u32, Scalar)> = Vec::new();
    for _ in 0..16 {
        let outgoing = server.drain_outgoing();
        if outgoing.is_empty() {
            if server.phase() == privagg_protocol::Phase::Reconstruct
                || server.phase() == privagg_protocol::Phase::Aborted
            {
                break;
            }
            server.close_phase();
            continue;
        }
        for out in outgoing {
            let mut message = out.message;
            match &mut message {
                ServerMessage::KeyList(list) if out.to == target => {
                    session_id = list.session_id;
                    keys = list.entries.iter().copied().collect::<BTreeMap<ClientId, AdvertisedKeys>>();
                }
                ServerMessage::UnmaskRequest(request) if told_dropped.contains(&out.to) => {
                    request.survivors.retain(|&c| c != target);
                    request.dropped.push(target);
                    request.dropped.sort_unstable();
                }
                _ => {}
            }
            let is_config = matches!(message, ServerMessage::Config(_));
            let (client, rng) = &mut clients[out.to.get() as usize - 1];
            let reply = match client.receive(message, rng) {
                Ok(reply) => reply,
                Err(e) => {
                    // After the split, the honest server drops the clients whose answers it
                    // did not ask for; only refusals of the round itself count here.
                    if is_config {
                        refused.push(e);
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
            if let Some(reply) = reply {
                let _ = server.receive(out.to, reply);
            }
        }
    }
    let input = inputs[target.get() as usize - 1].clone();
    let (mask_key_shares, self_mask_shares) = (mask_key.len(), self_mask.len());
    let recovered = (mask_key_shares >= t && self_mask_shares >= t).then(|| {
        let ctx = KeyContext { session_id, round: params.round };
        let (s, b) = (interpolate(&mask_key[..t]), interpolate(&self_mask[..t]));
        unmask(&params, &ctx, target, &keys, s, b, masked.unwrap())
    });
    Outcome { refused, mask_key_shares, self_mask_shares, recovered, input }
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
    let outcome = split_view(p, any_threshold(), id(37));
    assert!(outcome.refused.is_empty());
    assert_eq!(outcome.recovered, Some(outcome.input), "the lying server should have the input");
}

#[test]
fn clients_refuse_the_thresholds_that_let_a_split_view_through() {
    for n in [100, 1000, 10_000] {
        let p = curious_sizing(n);
        let outcome = split_view(p.clone(), ClientPolicy::default(), id(2));
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
    let outcome = split_view(complete, ClientPolicy::default(), id(2));
    assert!(matches!(outcome.refused[0], ClientError::UnsafeThreshold { threshold: 5, required: 6, .. }));
}

#[test]
fn at_the_thresholds_clients_accept_no_split_view_gets_both_secrets() {
    for n in [20, 100] {
        let threat = ThreatModel {
            corrupt_fraction: 0.05,
            dropout_fraction: 0.1,
            adversary: AdversaryClass::SemiMaliciousServer,
        };
        let sized = find_graph_parameters(n, &threat).unwrap();
        let p = params(n, sized.neighbours, sized.threshold);
        let (k, t) = (p.neighbours as usize, p.threshold as usize);
        let outcome = split_view(p, ClientPolicy::default(), id(5));
        assert!(outcome.refused.is_empty(), "n = {n}: {:?}", outcome.refused.first());
        // t holders revealed the mask key; the other k + 1 − t fall short for b_u.
        assert_eq!(outcome.mask_key_shares, t, "n = {n}");
        assert_eq!(outcome.self_mask_shares, k + 1 - t, "n = {n}");
        assert!(outcome.self_mask_shares < t, "n = {n}: k = {k}, t = {t}");
        assert_eq!(outcome.recovered, None);
    }
}

//! An in-memory round: n [`ClientRound`]s and a [`ServerRound`] exchanging encoded
//! messages, with clients vanishing on a schedule. Tests use it to check exact sums under
//! dropouts; benchmarks use it to time whole rounds without a network.
//!
//! Every message goes through the wire codec both ways, so a simulated round also
//! exercises encoding and decoding, and the byte counts are what a network would carry.
//! Clients are anonymous (no certificates), so the policy must assume a curious server.
//! When no message is in flight and the server still waits, the simulator plays the
//! driver: it closes the phase (its deadline passed) or finalizes the round.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::client::{ClientPolicy, ClientRound, Identity};
use crate::cohort::Member;
use crate::error::{ClientError, DecodeError, ParamsError, RoundAbort};
use crate::message::{ClientMessage, Limits, ServerMessage};
use crate::round_params::{ClientId, RoundParams};
use crate::server::{DropReason, DroppedClient, Phase, RoundOutput, ServerRound};

/// When a client vanishes: on receiving the message it would answer next, without
/// answering it (or, for the last point, after sending its shares). The simulator, the
/// service harness and the SDK's testing hook all use these points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropPoint {
    /// On receiving the config (never advertises keys).
    BeforeAdvertiseKeys,
    /// On receiving the key list (never shares keys).
    BeforeShareKeys,
    /// On receiving the envelopes (never sends its masked input).
    BeforeMaskedInput,
    /// On receiving the survivor set (its input is in the sum; never signs it).
    BeforeSignature,
    /// On receiving the unmask request (its input is in the sum; never sends shares).
    BeforeUnmaskResponse,
    /// After sending its shares (never hears the result).
    AfterUnmaskResponse,
}

impl DropPoint {
    /// Every drop point, in protocol order.
    pub const ALL: [DropPoint; 6] = [
        Self::BeforeAdvertiseKeys,
        Self::BeforeShareKeys,
        Self::BeforeMaskedInput,
        Self::BeforeSignature,
        Self::BeforeUnmaskResponse,
        Self::AfterUnmaskResponse,
    ];
}

/// How the server learns of a vanished client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropKind {
    /// Its connection closes: the driver drops it at once.
    ConnectionLost,
    /// It goes silent: it is dropped when the phase's deadline passes.
    Silent,
}

/// One client's scheduled disappearance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropout {
    /// When.
    pub point: DropPoint,
    /// How the server notices.
    pub kind: DropKind,
}

/// A round to simulate.
#[derive(Clone, Debug)]
pub struct Simulation {
    /// The round's parameters.
    pub params: RoundParams,
    /// Each client's input (`num_clients` vectors of `dim` words below 2^bits).
    pub inputs: Vec<Vec<u64>>,
    /// Clients that vanish, and when.
    pub dropouts: BTreeMap<ClientId, Dropout>,
    /// Seed of the clients' randomness (each client gets its own stream).
    pub seed: u64,
    /// What the clients accept (their threshold rule decides which (k, t) they take part
    /// with).
    pub policy: ClientPolicy,
    /// Each client's certified identity, in id order, or none for an anonymous cohort
    /// (which the policy must then accept).
    pub identities: Vec<Identity>,
}

/// Bytes carried in each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes sent by clients.
    pub to_server: u64,
    /// Bytes sent by the server.
    pub from_server: u64,
}

/// What happened in a simulated round.
#[derive(Clone, Debug)]
pub struct SimulationOutcome {
    /// The recovered sum, or why the round aborted.
    pub result: Result<RoundOutput, RoundAbort>,
    /// Σ of the inputs of the clients the server reports in the sum (empty on abort).
    pub expected_sum: Vec<u64>,
    /// The server's record of dropped clients.
    pub dropped: Vec<DroppedClient>,
    /// Errors clients hit (honest rounds have none, unless a neighbourhood thins out).
    pub client_errors: Vec<(ClientId, ClientError)>,
    /// Bytes on the wire.
    pub traffic: Traffic,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulationError {
    /// The parameters are invalid.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// The inputs do not match the parameters.
    #[error("expected {expected} inputs, got {got}")]
    Inputs {
        /// num_clients.
        expected: u32,
        /// Inputs given.
        got: usize,
    },
    /// Some clients have identities and others not.
    #[error("expected {expected} identities or none, got {got}")]
    Identities {
        /// num_clients.
        expected: u32,
        /// Identities given.
        got: usize,
    },
    /// An encoded message did not decode: a codec bug.
    #[error("codec round trip failed: {0}")]
    Codec(#[from] DecodeError),
    /// The round did not end (a state-machine bug).
    #[error("the round did not terminate")]
    Stuck,
}

/// Runs one round in memory.
pub fn simulate(sim: &Simulation) -> Result<SimulationOutcome, SimulationError> {
    let params = &sim.params;
    params.validate()?;
    if sim.inputs.len() != params.num_clients as usize {
        return Err(SimulationError::Inputs { expected: params.num_clients, got: sim.inputs.len() });
    }
    if !sim.identities.is_empty() && sim.identities.len() != params.num_clients as usize {
        return Err(SimulationError::Identities { expected: params.num_clients, got: sim.identities.len() });
    }
    let limits = Limits::default();
    let mut clients: Vec<(ClientRound, ChaCha20Rng, bool)> = params
        .client_ids()
        .map(|id| {
            let mut rng = ChaCha20Rng::seed_from_u64(sim.seed ^ (u64::from(id.get()) << 32));
            let identity = sim.identities.get(id.index()).cloned();
            let mut round = ClientRound::new(sim.policy.clone(), identity, &mut rng);
            // Setting the input before the config is allowed; it is checked on arrival.
            let _ = round.set_input(sim.inputs[id.index()].clone());
            (round, rng, false)
        })
        .collect();
    let members = clients.iter().enumerate().map(|(i, (round, _, _))| Member {
        commitment: round.commitment(),
        certificate: sim.identities.get(i).map(|identity| identity.certificate.clone()),
    });
    let mut server = ServerRound::new(params.clone(), members.collect(), Arc::from(&b"app"[..]))?;
    let mut traffic = Traffic::default();
    let mut client_errors = Vec::new();

    // Each step either delivers messages or moves a phase on; a round has few phases.
    for _ in 0..64 {
        let outgoing = server.drain_outgoing();
        if outgoing.is_empty() {
            match server.phase() {
                Phase::Completed | Phase::Aborted => {
                    return Ok(outcome(sim, server, client_errors, traffic));
                }
                Phase::Reconstruct => {
                    let _ = server.finalize();
                }
                _ => server.close_phase(),
            }
            continue;
        }
        for out in outgoing {
            let bytes = out.message.encode();
            traffic.from_server += bytes.len() as u64;
            let message = ServerMessage::decode(&bytes, &limits)?;
            let id = out.to;
            let (client, rng, vanished) = &mut clients[id.index()];
            if *vanished {
                continue;
            }
            if let Some(dropout) = sim.dropouts.get(&id)
                && drop_point_of(&message) == Some(dropout.point)
            {
                *vanished = true;
                if dropout.kind == DropKind::ConnectionLost {
                    server.drop_client(id, DropReason::ConnectionLost);
                }
                continue;
            }
            let reply = match client.receive(message, rng) {
                Ok(reply) => reply,
                Err(e) => {
                    let aborted = matches!(e, ClientError::Aborted { .. });
                    client_errors.push((id, e));
                    (!aborted).then(|| client.leave("client refused a message"))
                }
            };
            // Complaints are followed at once by the masked input (if the input is set).
            let follow_up = match &reply {
                Some(ClientMessage::Complaints(_)) => client.follow_up().unwrap_or_else(|e| {
                    client_errors.push((id, e));
                    Some(client.leave("client refused a message"))
                }),
                _ => None,
            };
            for reply in reply.into_iter().chain(follow_up) {
                let bytes = reply.encode();
                traffic.to_server += bytes.len() as u64;
                let reply = ClientMessage::decode(&bytes, &limits)?;
                let sent_shares = matches!(reply, ClientMessage::UnmaskResponse(_));
                // Honest clients' messages are accepted; a refusal shows up in `dropped`.
                let _ = server.receive(id, reply);
                if sent_shares && sim.dropouts.get(&id).map(|d| d.point) == Some(DropPoint::AfterUnmaskResponse) {
                    *vanished = true;
                }
            }
        }
    }
    Err(SimulationError::Stuck)
}

/// The drop point at which a client would vanish on receiving `message`.
fn drop_point_of(message: &ServerMessage) -> Option<DropPoint> {
    match message {
        ServerMessage::Config(_) => Some(DropPoint::BeforeAdvertiseKeys),
        ServerMessage::KeyList(_) => Some(DropPoint::BeforeShareKeys),
        ServerMessage::ForwardedShares(_) => Some(DropPoint::BeforeMaskedInput),
        ServerMessage::ConsistencyCheck(_) => Some(DropPoint::BeforeSignature),
        ServerMessage::UnmaskRequest(_) => Some(DropPoint::BeforeUnmaskResponse),
        _ => None,
    }
}

fn outcome(
    sim: &Simulation,
    mut server: ServerRound,
    client_errors: Vec<(ClientId, ClientError)>,
    traffic: Traffic,
) -> SimulationOutcome {
    let dropped = server.dropped();
    let result = match server.take_output() {
        Some(output) => Ok(output),
        None => Err(server.abort_reason().cloned().unwrap_or_else(|| RoundAbort::Cancelled("no result".into()))),
    };
    let expected_sum = match &result {
        Ok(output) => plain_sum(&sim.params, output.included.iter().map(|id| &sim.inputs[id.index()])),
        Err(_) => Vec::new(),
    };
    SimulationOutcome { result, expected_sum, dropped, client_errors, traffic }
}

/// Σ of `inputs` mod 2^bits.
pub fn plain_sum<'a>(params: &RoundParams, inputs: impl Iterator<Item = &'a Vec<u64>>) -> Vec<u64> {
    let mask = params.word_mask();
    let mut sum = vec![0u64; params.dim as usize];
    for input in inputs {
        for (s, x) in sum.iter_mut().zip(input) {
            *s = s.wrapping_add(*x) & mask;
        }
    }
    sum
}

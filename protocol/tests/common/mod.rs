//! Helpers shared by the protocol's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use privagg_protocol::simulator::{DropKind, DropPoint, Dropout, Simulation};
use privagg_protocol::{AdversaryClass, ClientId, PrgKind, RoundParams};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

pub fn id(raw: u32) -> ClientId {
    ClientId::new(raw).unwrap()
}

pub fn params(n: u32, k: u32, t: u32, dim: u32, bits: u8) -> RoundParams {
    RoundParams {
        round: 3,
        num_clients: n,
        neighbours: k,
        threshold: t,
        min_clients: t,
        dim,
        bits,
        prg: PrgKind::default(),
        graph_seed: [5; 32],
    }
}

/// Random inputs below 2^bits, one per client.
pub fn random_inputs(p: &RoundParams, seed: u64) -> Vec<Vec<u64>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mask = p.word_mask();
    (0..p.num_clients).map(|_| (0..p.dim).map(|_| rng.random::<u64>() & mask).collect()).collect()
}

/// A policy that takes part at any valid (k, t): for tests of the protocol's mechanics.
/// Which thresholds are safe is tested as attacks (`attacks.rs`).
pub fn any_threshold() -> ClientPolicy {
    ClientPolicy { server: AdversaryClass::CuriousServer, corrupt_fraction: 0.0, ..ClientPolicy::default() }
}

pub fn simulation(p: RoundParams, seed: u64, dropouts: &[(u32, DropPoint, DropKind)]) -> Simulation {
    Simulation {
        inputs: random_inputs(&p, seed),
        params: p,
        dropouts: dropouts.iter().map(|&(c, point, kind)| (id(c), Dropout { point, kind })).collect::<BTreeMap<_, _>>(),
        seed,
        policy: any_threshold(),
    }
}

use privagg_protocol::{
    ClientError, ClientMessage, ClientPolicy, ClientRound, Limits, Phase, ServerError, ServerMessage, ServerRound,
};
use std::sync::Arc;

/// A server and honest clients exchanging encoded messages, with hooks to tamper with
/// what clients send.
pub struct Harness {
    pub server: ServerRound,
    pub clients: Vec<(ClientRound, ChaCha20Rng)>,
    pub inputs: Vec<Vec<u64>>,
    /// Every error the server returned, by sender.
    pub server_errors: Vec<(u32, ServerError)>,
    pub client_errors: Vec<(ClientId, ClientError)>,
}

impl Harness {
    pub fn new(p: RoundParams, seed: u64) -> Self {
        let inputs = random_inputs(&p, seed);
        let clients = p
            .client_ids()
            .map(|c| {
                let mut round = ClientRound::new(any_threshold());
                round.set_input(inputs[(c.get() - 1) as usize].clone()).unwrap();
                (round, ChaCha20Rng::seed_from_u64(seed * 1000 + u64::from(c.get())))
            })
            .collect();
        Self {
            server: ServerRound::new(p, Arc::from(&b"model"[..])).unwrap(),
            clients,
            inputs,
            server_errors: Vec::new(),
            client_errors: Vec::new(),
        }
    }

    /// Delivers the server's queued messages; returns the clients' replies, unsent.
    pub fn deliver(&mut self) -> Vec<(ClientId, ClientMessage)> {
        let limits = Limits::default();
        let mut replies = Vec::new();
        for out in self.server.drain_outgoing() {
            let msg = ServerMessage::decode(&out.message.encode(), &limits).unwrap();
            let (client, rng) = &mut self.clients[(out.to.get() - 1) as usize];
            match client.receive(msg, rng) {
                Ok(Some(reply)) => replies.push((out.to, reply)),
                Ok(None) => {}
                Err(e) => self.client_errors.push((out.to, e)),
            }
        }
        replies
    }

    /// Sends a message to the server through the codec.
    pub fn send(&mut self, from: u32, msg: ClientMessage) -> Result<(), ServerError> {
        let msg = ClientMessage::decode(&msg.encode(), &Limits::default()).unwrap();
        let result = self.server.receive(ClientId::new(from).expect("ids start at 1"), msg);
        if let Err(e) = &result {
            self.server_errors.push((from, e.clone()));
        }
        result
    }

    /// Runs the round to its end. `tamper` sees every client message and returns what to
    /// send instead (`None`: send nothing). Idle phases are closed as if their deadline passed.
    pub fn run(&mut self, mut tamper: impl FnMut(&mut Self, ClientId, ClientMessage) -> Option<ClientMessage>) {
        for _ in 0..64 {
            let replies = self.deliver();
            if replies.is_empty() {
                match self.server.phase() {
                    Phase::Completed | Phase::Aborted => return,
                    Phase::Reconstruct => {
                        let _ = self.server.finalize();
                    }
                    _ => self.server.close_phase(),
                }
                continue;
            }
            for (from, msg) in replies {
                if let Some(msg) = tamper(self, from, msg) {
                    let _ = self.send(from.get(), msg);
                }
            }
        }
        panic!("round did not end");
    }

    /// The plain sum of the inputs of `included`.
    pub fn expected_sum(&self, included: &[ClientId]) -> Vec<u64> {
        privagg_protocol::simulator::plain_sum(
            self.server.params(),
            included.iter().map(|c| &self.inputs[(c.get() - 1) as usize]),
        )
    }

    /// Asserts the round completed with the exact sum of the clients it names, and
    /// returns those clients.
    pub fn assert_exact(&self) -> Vec<ClientId> {
        let out = self.server.output().unwrap_or_else(|| panic!("aborted: {:?}", self.server.abort_reason()));
        let expected = self.expected_sum(&out.included);
        let first_difference = out.sum.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "the sum differs from the inputs' sum");
        out.included.clone()
    }
}

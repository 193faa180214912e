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
    ClientPolicy {
        server: AdversaryClass::CuriousServer,
        corrupt_fraction: 0.0,
        min_neighbour_fraction: 0.0,
        ..ClientPolicy::default()
    }
}

pub fn simulation(p: RoundParams, seed: u64, dropouts: &[(u32, DropPoint, DropKind)]) -> Simulation {
    Simulation {
        inputs: random_inputs(&p, seed),
        params: p,
        dropouts: dropouts.iter().map(|&(c, point, kind)| (id(c), Dropout { point, kind })).collect::<BTreeMap<_, _>>(),
        seed,
        policy: any_threshold(),
        identities: Vec::new(),
    }
}

use privagg_protocol::cohort::Member;
use privagg_protocol::{
    ClientError, ClientMessage, ClientPolicy, ClientRound, Identity, Limits, Phase, ServerError, ServerMessage,
    ServerRound,
};
use std::sync::Arc;

/// The current time, in seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// An enrollment authority for tests, and the identities it issues.
pub struct Enrollment {
    pub authority: privagg_ca::Authority,
}

impl Enrollment {
    pub fn new() -> Self {
        Self { authority: privagg_ca::Authority::create("test authority", 30).unwrap() }
    }

    /// An identity valid for 30 days, checking peers now.
    pub fn identity(&self, name: &str) -> Identity {
        self.identity_for(name, 30, now())
    }

    /// An identity valid for `days` days, checking peers at `now`.
    pub fn identity_for(&self, name: &str, days: u32, now: u64) -> Identity {
        let credential = self.authority.issue(name, days).unwrap();
        Identity::from_der(&credential.cert, &credential.key, self.authority.root_der(), now).unwrap()
    }
}

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
    /// Anonymous clients that accept any valid (k, t): the protocol's mechanics.
    pub fn new(p: RoundParams, seed: u64) -> Self {
        Self::with_clients(p, seed, |_| (any_threshold(), None), &[])
    }

    /// Clients certified by `enrollment`, with `policy`.
    pub fn certified(p: RoundParams, seed: u64, policy: ClientPolicy, enrollment: &Enrollment) -> Self {
        let identity = |c: ClientId| Some(enrollment.identity(&format!("client-{}", c.get())));
        Self::with_clients(p, seed, |c| (policy.clone(), identity(c)), &[])
    }

    /// Clients with the policy and identity `client` gives each; those in `parked` get
    /// no input yet.
    pub fn with_clients(
        p: RoundParams,
        seed: u64,
        mut client: impl FnMut(ClientId) -> (ClientPolicy, Option<Identity>),
        parked: &[ClientId],
    ) -> Self {
        let inputs = random_inputs(&p, seed);
        let mut members = Vec::new();
        let clients = p
            .client_ids()
            .map(|c| {
                let (policy, identity) = client(c);
                let mut rng = ChaCha20Rng::seed_from_u64(seed * 1000 + u64::from(c.get()));
                let certificate = identity.as_ref().map(|i| i.certificate.clone());
                let mut round = ClientRound::new(policy, identity, &mut rng);
                members.push(Member { commitment: round.commitment(), certificate });
                if !parked.contains(&c) {
                    round.set_input(inputs[(c.get() - 1) as usize].clone()).unwrap();
                }
                (round, rng)
            })
            .collect();
        Self {
            server: ServerRound::new(p, members, Arc::from(&b"model"[..])).unwrap(),
            clients,
            inputs,
            server_errors: Vec::new(),
            client_errors: Vec::new(),
        }
    }

    /// Delivers the server's queued messages; returns the clients' replies, unsent.
    pub fn deliver(&mut self) -> Vec<(ClientId, ClientMessage)> {
        self.deliver_with(&mut |_, _| {})
    }

    /// [`Harness::deliver`], letting `on_way` change each message on its way to a client.
    pub fn deliver_with(
        &mut self,
        on_way: &mut dyn FnMut(ClientId, &mut ServerMessage),
    ) -> Vec<(ClientId, ClientMessage)> {
        let limits = Limits::default();
        let mut replies = Vec::new();
        for out in self.server.drain_outgoing() {
            let mut msg = ServerMessage::decode(&out.message.encode(), &limits).unwrap();
            on_way(out.to, &mut msg);
            let (client, rng) = &mut self.clients[(out.to.get() - 1) as usize];
            match client.receive(msg, rng) {
                Ok(Some(reply)) => {
                    let complained = matches!(reply, ClientMessage::Complaints(_));
                    replies.push((out.to, reply));
                    // Complaints are followed at once by the masked input.
                    match complained.then(|| client.follow_up()) {
                        Some(Ok(Some(next))) => replies.push((out.to, next)),
                        Some(Err(e)) => self.client_errors.push((out.to, e)),
                        _ => {}
                    }
                }
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
    pub fn run(&mut self, tamper: impl FnMut(&mut Self, ClientId, ClientMessage) -> Option<ClientMessage>) {
        self.run_with(|_, _| {}, tamper);
    }

    /// [`Harness::run`], with `on_way` changing the server's messages on their way.
    pub fn run_with(
        &mut self,
        mut on_way: impl FnMut(ClientId, &mut ServerMessage),
        mut tamper: impl FnMut(&mut Self, ClientId, ClientMessage) -> Option<ClientMessage>,
    ) {
        for _ in 0..64 {
            let replies = self.deliver_with(&mut on_way);
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

/// Runs `h` honestly until client 1 is about to receive a message matching `stop`;
/// returns the harness and that message (not yet delivered).
pub fn until(mut h: Harness, mut stop: impl FnMut(&ServerMessage) -> bool) -> (Harness, ServerMessage) {
    for _ in 0..16 {
        let mut queued = h.server.drain_outgoing();
        let stopped = queued.iter().position(|o| o.to == id(1) && stop(&o.message)).map(|pos| queued.remove(pos));
        // Deliver the rest so that the round state stays consistent.
        for out in queued {
            let (client, rng) = &mut h.clients[(out.to.get() - 1) as usize];
            if let Ok(Some(reply)) = client.receive(out.message, rng) {
                let _ = h.server.receive(out.to, reply);
            }
        }
        if let Some(out) = stopped {
            return (h, out.message);
        }
    }
    panic!("message never came");
}

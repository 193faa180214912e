//! The round driver: one task that owns the lobby, the current round's protocol state
//! machine and the global model. Connection tasks send it decoded frames; it feeds them
//! to [`ServerRound`], sends what the state machine queues, enforces each phase's
//! deadline, grants upload slots, and after each round decodes the sum, applies the
//! FedAvg step and commits the checkpoint. Nothing else touches the protocol state, so
//! it needs no lock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use privagg_client::RoundSettings;
use privagg_client::wire::{FromClient, MAX_CONTROL_FRAME, ServiceMessage};
use privagg_dp::ledger::{PrivacyLedger, RoundRecord as LedgerEntry};
use privagg_protocol::{
    ClientId, ClientMessage, DropReason, DroppedClient, Phase, PrgKind, RoundOutput, RoundParams, ServerMessage,
    ServerRound, Violation, packed_len,
};
use rand::RngExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant as TokioInstant;

use crate::admission::Identity;
use crate::aggregation::{Aggregation, graph_for};
use crate::config::ServeConfig;
use crate::connection::{ConnHandle, ConnId, Event, Outbound};
use crate::error::ServeError;
use crate::record::{DroppedRecord, PrivacyRecord, RoundRecord};
use crate::storage::StateDir;

/// What the server reports while it runs (for progress displays and tests).
#[derive(Clone, Debug)]
pub enum ServerEvent {
    /// A round started with this many clients.
    RoundStarted {
        /// Round number.
        round: u64,
        /// Attempt (1 for the first).
        attempt: u32,
        /// Clients seated.
        participants: u32,
    },
    /// The current round moved to a new phase.
    PhaseChanged {
        /// Round number.
        round: u64,
        /// The new phase.
        phase: Phase,
    },
    /// A round completed and was committed.
    RoundCompleted(Box<RoundRecord>),
    /// A round attempt aborted; it will be retried.
    RoundAborted {
        /// Round number.
        round: u64,
        /// Attempt.
        attempt: u32,
        /// Why.
        reason: String,
    },
}

/// Where a session stands when the server starts: after `completed` rounds.
#[derive(Clone, Debug, Default)]
pub struct Resume {
    /// Rounds already completed.
    pub completed: u64,
    /// The model after them.
    pub model: Vec<f32>,
    /// The server-momentum buffer, if momentum is on.
    pub momentum: Option<Vec<f32>>,
    /// The privacy ledger so far.
    pub ledger: PrivacyLedger,
}

/// What a finished session leaves.
#[derive(Clone, Debug)]
pub struct SessionSummary {
    /// Rounds completed in total (including earlier runs on the same state).
    pub completed_rounds: u64,
    /// The final model.
    pub model: Vec<f32>,
    /// ε spent at the configured δ (DP on).
    pub epsilon: Option<f64>,
}

struct Conn {
    identity: Identity,
    handle: ConnHandle,
    seat: Option<ClientId>,
}

struct ActiveRound {
    server: ServerRound,
    settings: RoundSettings,
    /// Connection of each seat (index: id − 1); stale while its client reconnects.
    seats: Vec<ConnId>,
    /// Who holds each seat, so that a client that reconnects gets its seat back.
    identities: Vec<Identity>,
    /// The last message sent to each seat, resent when its client reconnects.
    last_sent: HashMap<ClientId, Outbound>,
    /// Seats whose client reconnected and may resend the message it sent last.
    resumed: HashSet<ClientId>,
    /// Every seat that reconnected during the round.
    reconnected: std::collections::BTreeSet<u32>,
    phase: Phase,
    phase_started: Instant,
    started: Instant,
    deadline: TokioInstant,
    timings: BTreeMap<String, f64>,
    ready: VecDeque<ClientId>,
    granted: HashSet<ClientId>,
    upload_frame: usize,
    bytes_at_start: HashMap<ConnId, (u64, u64)>,
}

/// The driver's state.
pub struct Driver {
    config: Arc<ServeConfig>,
    aggregation: Aggregation,
    storage: StateDir,
    events: mpsc::Receiver<Event>,
    observer: Option<mpsc::UnboundedSender<ServerEvent>>,
    shutdown: watch::Receiver<bool>,
    conns: HashMap<ConnId, Conn>,
    by_identity: HashMap<Identity, ConnId>,
    lobby: VecDeque<ConnId>,
    lobby_since: Option<Instant>,
    round: Option<ActiveRound>,
    next_round: u64,
    attempt: u32,
    model: Vec<f32>,
    momentum: Option<Vec<f32>>,
    ledger: PrivacyLedger,
}

impl Driver {
    /// A driver that carries on from `resume`.
    pub fn new(
        config: Arc<ServeConfig>,
        aggregation: Aggregation,
        storage: StateDir,
        events: mpsc::Receiver<Event>,
        observer: Option<mpsc::UnboundedSender<ServerEvent>>,
        shutdown: watch::Receiver<bool>,
        resume: Resume,
    ) -> Self {
        let Resume { completed, model, momentum, ledger } = resume;
        Self {
            config,
            aggregation,
            storage,
            events,
            observer,
            shutdown,
            conns: HashMap::new(),
            by_identity: HashMap::new(),
            lobby: VecDeque::new(),
            lobby_since: None,
            round: None,
            next_round: completed + 1,
            attempt: 0,
            model,
            momentum,
            ledger,
        }
    }

    /// Runs rounds until the session ends, then tells every client and returns.
    pub async fn run(mut self) -> Result<SessionSummary, ServeError> {
        let result = self.run_rounds().await;
        let completed_rounds = self.next_round - 1;
        let reason = match &result {
            Ok(()) => "the session is complete".to_owned(),
            Err(e) => e.to_string(),
        };
        if let Some(round) = &mut self.round {
            round.server.cancel(&reason);
        }
        self.flush();
        for conn in self.conns.values() {
            conn.handle.send(ServiceMessage::SessionEnd { completed_rounds, reason: reason.clone() }.encode());
            let _ = conn.handle.outbox.send(Outbound::Close("session ended".into()));
        }
        // Let the goodbyes leave before the endpoint goes away.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        result?;
        let epsilon = self.aggregation.plan().and_then(|p| self.ledger.epsilon(p.input.delta).ok());
        Ok(SessionSummary { completed_rounds, model: self.model, epsilon })
    }

    async fn run_rounds(&mut self) -> Result<(), ServeError> {
        if self.next_round > self.config.rounds {
            tracing::info!(rounds = self.config.rounds, "every round is already complete");
            return Ok(());
        }
        loop {
            if self.round.is_none() {
                if self.next_round > self.config.rounds {
                    return Ok(());
                }
                self.maybe_start_round()?;
                self.flush();
            }
            let deadline = self.next_deadline();
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => return Err(ServeError::Shutdown { completed_rounds: self.next_round - 1 }),
                },
                () = sleep_until(deadline) => self.on_deadline(),
                _ = self.shutdown.changed() => {
                    return Err(ServeError::Shutdown { completed_rounds: self.next_round - 1 });
                }
            }
            self.flush();
            if self.round.as_ref().is_some_and(|r| r.server.phase() == Phase::Reconstruct) {
                self.finalize().await?;
            }
            self.finish_round_if_over()?;
        }
    }

    fn notify(&self, event: ServerEvent) {
        if let Some(observer) = &self.observer {
            let _ = observer.send(event);
        }
    }

    fn next_deadline(&self) -> Option<TokioInstant> {
        match &self.round {
            Some(round) => Some(round.deadline),
            None if self.lobby.len() >= self.config.min_clients as usize => {
                self.lobby_since.map(|since| TokioInstant::from_std(since + self.config.lobby_timeout()))
            }
            None => None,
        }
    }

    fn on_deadline(&mut self) {
        match &mut self.round {
            Some(round) => {
                tracing::info!(phase = ?round.server.phase(), "phase deadline passed");
                round.server.close_phase();
            }
            None => {
                // A partial cohort waited long enough.
                let _ = self.start_round(self.lobby.len().min(self.config.clients as usize));
            }
        }
    }

    fn maybe_start_round(&mut self) -> Result<(), ServeError> {
        if self.lobby.len() >= self.config.clients as usize {
            self.start_round(self.config.clients as usize)?;
        }
        Ok(())
    }

    fn start_round(&mut self, size: usize) -> Result<(), ServeError> {
        if size < self.config.min_clients as usize {
            return Ok(());
        }
        if let (Some(event), Some(budget)) = (self.aggregation.dp_event(), self.config.dp.max_epsilon) {
            self.ledger
                .check_budget(&event, budget, self.config.dp.delta)
                .map_err(|e| ServeError::Budget(e.to_string()))?;
        }
        let n = size as u32;
        let (neighbours, threshold) =
            graph_for(n, self.config.min_clients, self.config.neighbors, self.config.corrupt_fraction)?;
        let epsilon_spent =
            self.aggregation.plan().and_then(|p| self.ledger.epsilon(p.input.delta).ok()).unwrap_or(0.0);
        let settings = self.aggregation.round_settings(self.next_round, self.config.rounds, &self.model, epsilon_spent);
        let params = RoundParams {
            round: self.next_round,
            num_clients: n,
            neighbours,
            threshold,
            min_clients: self.config.min_clients,
            dim: settings.encoding.padded_dim as u32,
            bits: self.aggregation.bits(),
            prg: PrgKind::default(),
            graph_seed: rand::rng().random(),
        };
        let app_data: Arc<[u8]> =
            Arc::from(settings.encode().map_err(|e| ServeError::Model(e.to_string()))?.into_boxed_slice());
        let server = ServerRound::new(params.clone(), app_data).map_err(|e| ServeError::Config(e.to_string()))?;
        let seats: Vec<ConnId> = self.lobby.drain(..size).collect();
        let identities = seats.iter().map(|c| self.conns.get(c).map(|c| c.identity).unwrap_or_default()).collect();
        self.lobby_since = (!self.lobby.is_empty()).then(Instant::now);
        let mut bytes_at_start = HashMap::new();
        for (i, conn) in seats.iter().enumerate() {
            if let Some(c) = self.conns.get_mut(conn) {
                c.seat = ClientId::new(i as u32 + 1);
                let h = &c.handle;
                bytes_at_start.insert(*conn, (h.bytes_in.load(Ordering::Relaxed), h.bytes_out.load(Ordering::Relaxed)));
            }
        }
        self.attempt += 1;
        tracing::info!(
            round = self.next_round,
            attempt = self.attempt,
            participants = n,
            neighbours,
            threshold,
            bits = params.bits,
            "round started"
        );
        self.notify(ServerEvent::RoundStarted { round: self.next_round, attempt: self.attempt, participants: n });
        let now = Instant::now();
        self.round = Some(ActiveRound {
            server,
            settings,
            seats,
            identities,
            last_sent: HashMap::new(),
            resumed: HashSet::new(),
            reconnected: Default::default(),
            phase: Phase::AdvertiseKeys,
            phase_started: now,
            started: now,
            deadline: TokioInstant::now() + self.config.phase_timeout(),
            timings: BTreeMap::new(),
            ready: VecDeque::new(),
            granted: HashSet::new(),
            upload_frame: 4 + 5 + packed_len(params.dim, params.bits) + 2,
            bytes_at_start,
        });
        Ok(())
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Joined { conn, identity, handle } => {
                if self.rebind_seat(conn, identity, &handle) {
                    return;
                }
                if let Some(old) = self.by_identity.insert(identity, conn) {
                    // One identity, one seat: the newer connection replaces the older.
                    if let Some(previous) = self.conns.get(&old) {
                        tracing::info!(conn = old, "replaced by a new connection with the same identity");
                        let _ = previous.handle.outbox.send(Outbound::Close("replaced by a newer connection".into()));
                    }
                    self.forget(old, "replaced by a newer connection", false);
                }
                self.conns.insert(conn, Conn { identity, handle, seat: None });
                self.lobby.push_back(conn);
                if self.lobby_since.is_none() {
                    self.lobby_since = Some(Instant::now());
                }
            }
            Event::Closed { conn, reason, transient } => self.forget(conn, &reason, transient),
            Event::Frame { conn, frame } => self.on_frame(conn, frame),
        }
    }

    /// Removes a connection: from the lobby, or from its seat. A seated client whose
    /// connection timed out keeps its seat until the phase deadline, in case it
    /// reconnects; one that closed its connection is dropped from the round at once.
    fn forget(&mut self, conn: ConnId, reason: &str, transient: bool) {
        let Some(c) = self.conns.remove(&conn) else { return };
        if self.by_identity.get(&c.identity) == Some(&conn) {
            self.by_identity.remove(&c.identity);
        }
        self.lobby.retain(|&l| l != conn);
        if let (Some(seat), Some(round)) = (c.seat, &mut self.round) {
            if transient {
                tracing::info!(client = seat.get(), %reason, "connection lost; the seat waits for a reconnection until the phase deadline");
                return;
            }
            tracing::info!(client = seat.get(), %reason, "client disconnected");
            round.server.drop_client(seat, DropReason::ConnectionLost);
            release_slot(round, seat, &self.conns, self.config.upload_slots);
        }
    }

    /// Gives a reconnecting client its seat back in the running round and resends the
    /// last message it was sent. Returns false if the identity holds no active seat.
    fn rebind_seat(&mut self, conn: ConnId, identity: Identity, handle: &ConnHandle) -> bool {
        let Some(round) = &mut self.round else { return false };
        let Some(index) = round.identities.iter().position(|i| *i == identity) else { return false };
        let Some(seat) = ClientId::new(index as u32 + 1) else { return false };
        if !round.server.is_active(seat) {
            return false;
        }
        let old = round.seats[index];
        if let Some(previous) = self.conns.remove(&old) {
            let _ = previous.handle.outbox.send(Outbound::Close("replaced by a newer connection".into()));
        }
        tracing::info!(client = seat.get(), conn, "client reconnected to its seat");
        round.seats[index] = conn;
        round.resumed.insert(seat);
        round.reconnected.insert(seat.get());
        if round.granted.contains(&seat) {
            handle.frame_limit.store(round.upload_frame.max(MAX_CONTROL_FRAME), Ordering::Release);
        }
        if let Some(last) = round.last_sent.get(&seat) {
            let _ = handle.outbox.send(last.clone());
        }
        round.bytes_at_start.insert(conn, (0, 0));
        self.by_identity.insert(identity, conn);
        self.conns.insert(conn, Conn { identity, handle: handle.clone(), seat: Some(seat) });
        true
    }

    fn on_frame(&mut self, conn: ConnId, frame: Result<FromClient, Violation>) {
        let Some(c) = self.conns.get(&conn) else { return };
        let (Some(seat), Some(round)) = (c.seat, &mut self.round) else {
            // Clients in the lobby have nothing to say.
            tracing::warn!(conn, "message from a client outside any round; closing it");
            let _ = c.handle.outbox.send(Outbound::Close("unexpected message".into()));
            return;
        };
        if round.resumed.remove(&seat) && handle_resent(round, seat, &frame, &self.conns) {
            return;
        }
        match frame {
            Ok(FromClient::Protocol(msg)) => {
                let is_upload = matches!(msg, ClientMessage::MaskedInput(_));
                if is_upload && !round.granted.contains(&seat) {
                    let violation = Violation::Transport("masked input sent without an upload grant".into());
                    round.server.drop_client(seat, DropReason::Violation(violation));
                    return;
                }
                if let Err(e) = round.server.receive(seat.get(), msg) {
                    tracing::warn!(client = seat.get(), error = %e, "message refused");
                }
                if is_upload {
                    release_slot(round, seat, &self.conns, self.config.upload_slots);
                }
            }
            Ok(FromClient::Service(ServiceMessage::UploadReady))
                if round.server.phase() == Phase::MaskedInput
                    && round.server.is_active(seat)
                    && !round.ready.contains(&seat)
                    && !round.granted.contains(&seat) =>
            {
                round.ready.push_back(seat);
                grant_slots(round, self.config.upload_slots, &self.conns);
            }
            Ok(FromClient::Service(other)) => {
                let violation = Violation::Transport(format!("unexpected {other:?}"));
                tracing::warn!(client = seat.get(), %violation, "client dropped");
                round.server.drop_client(seat, DropReason::Violation(violation));
            }
            Err(violation) => {
                tracing::warn!(client = seat.get(), %violation, "client dropped");
                round.server.drop_client(seat, DropReason::Violation(violation));
                release_slot(round, seat, &self.conns, self.config.upload_slots);
            }
        }
    }

    /// Sends what the state machine queued and notes phase changes.
    fn flush(&mut self) {
        let Some(round) = &mut self.round else { return };
        for out in round.server.drain_outgoing() {
            let Some(conn) = round.seats.get(out.to.get() as usize - 1).and_then(|c| self.conns.get(c)) else {
                continue;
            };
            let outbound = match &out.message {
                ServerMessage::Config(config) => {
                    let (head, tail) = config.encode_split();
                    Outbound::Shared { head, tail }
                }
                message => Outbound::Frame(message.encode()),
            };
            let _ = conn.handle.outbox.send(outbound.clone());
            round.last_sent.insert(out.to, outbound);
        }
        let phase = round.server.phase();
        if phase != round.phase {
            let now = Instant::now();
            round.timings.insert(phase_name(round.phase).into(), (now - round.phase_started).as_secs_f64());
            round.phase = phase;
            round.phase_started = now;
            round.deadline = TokioInstant::now() + self.config.phase_timeout();
            for seat in round.granted.drain() {
                if let Some(c) = round.seats.get(seat.get() as usize - 1).and_then(|c| self.conns.get(c)) {
                    c.handle.frame_limit.store(MAX_CONTROL_FRAME, Ordering::Release);
                }
            }
            round.ready.clear();
            tracing::debug!(?phase, "phase changed");
            let round_number = self.next_round;
            self.notify(ServerEvent::PhaseChanged { round: round_number, phase });
        }
    }

    /// Removes the masks (CPU-heavy, so off the async runtime's threads).
    async fn finalize(&mut self) -> Result<(), ServeError> {
        let Some(mut round) = self.round.take() else { return Ok(()) };
        let round = tokio::task::spawn_blocking(move || {
            if let Err(abort) = round.server.finalize() {
                tracing::warn!(%abort, "unmasking failed");
            }
            round
        })
        .await
        .map_err(|e| ServeError::Model(format!("unmasking task failed: {e}")))?;
        self.round = Some(round);
        self.flush();
        Ok(())
    }

    fn finish_round_if_over(&mut self) -> Result<(), ServeError> {
        let Some(phase) = self.round.as_ref().map(|r| r.server.phase()) else { return Ok(()) };
        match phase {
            Phase::Completed => {
                let Some(mut round) = self.round.take() else { return Ok(()) };
                let output = round.server.take_output().ok_or_else(|| ServeError::Model("no output".into()))?;
                self.complete(round, output)
            }
            Phase::Aborted => {
                let Some(mut round) = self.round.take() else { return Ok(()) };
                let reason = round.server.abort_reason().map_or_else(|| "unknown".into(), ToString::to_string);
                tracing::warn!(round = self.next_round, attempt = self.attempt, %reason, "round aborted");
                self.notify(ServerEvent::RoundAborted {
                    round: self.next_round,
                    attempt: self.attempt,
                    reason: reason.clone(),
                });
                self.return_to_lobby(&mut round);
                if self.attempt >= self.config.max_round_attempts {
                    return Err(ServeError::RoundFailed { round: self.next_round, attempts: self.attempt, reason });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn complete(&mut self, mut round: ActiveRound, output: RoundOutput) -> Result<(), ServeError> {
        let applied = self.aggregation.apply(
            &output.sum,
            &round.settings,
            &mut self.model,
            self.momentum.as_mut(),
            (self.config.server_lr, self.config.server_momentum),
        )?;
        let privacy = match (self.aggregation.dp_event(), self.aggregation.plan()) {
            (Some(event), Some(plan)) => {
                self.ledger
                    .record(LedgerEntry {
                        round: self.next_round,
                        event,
                        n_min: self.config.min_clients as usize,
                        survivors: output.included.len(),
                        effective_noise_multiplier: plan.effective_noise_multiplier,
                    })
                    .map_err(|e| ServeError::Model(format!("privacy ledger: {e}")))?;
                Some(PrivacyRecord {
                    epsilon: self.ledger.epsilon(plan.input.delta).map_err(|e| ServeError::Model(e.to_string()))?,
                    delta: plan.input.delta,
                    effective_noise_multiplier: plan.effective_noise_multiplier,
                    ledger: self.ledger.clone(),
                })
            }
            _ => None,
        };
        round.timings.insert("total".into(), round.started.elapsed().as_secs_f64());
        let (mut bytes_in, mut bytes_out) = (0, 0);
        for (conn, (i0, o0)) in &round.bytes_at_start {
            if let Some(c) = self.conns.get(conn) {
                bytes_in += c.handle.bytes_in.load(Ordering::Relaxed) - i0;
                bytes_out += c.handle.bytes_out.load(Ordering::Relaxed) - o0;
            }
        }
        let params = round.server.params();
        let record = RoundRecord {
            round: self.next_round,
            attempt: self.attempt,
            participants: params.num_clients,
            included: output.included.iter().map(|c| c.get()).collect(),
            dropped: round.server.dropped().iter().map(dropped_record).collect(),
            reconnected: round.reconnected.iter().copied().collect(),
            neighbours: params.neighbours,
            threshold: params.threshold,
            bits: params.bits,
            denominator: applied.denominator,
            update_norm: applied.update_norm,
            privacy,
            timings: round.timings.clone(),
            bytes_in,
            bytes_out,
        };
        self.storage.commit(&record, &self.model, self.momentum.as_deref())?;
        tracing::info!(
            round = record.round,
            included = record.included.len(),
            dropped = record.dropped.len(),
            epsilon = record.privacy.as_ref().map(|p| p.epsilon),
            seconds = record.timings.get("total").copied().unwrap_or_default(),
            "round completed"
        );
        self.notify(ServerEvent::RoundCompleted(Box::new(record)));
        self.return_to_lobby(&mut round);
        self.next_round += 1;
        self.attempt = 0;
        Ok(())
    }

    /// Seats become free: clients still connected wait for the next round, first in line.
    fn return_to_lobby(&mut self, round: &mut ActiveRound) {
        for conn in round.seats.iter().rev() {
            if let Some(c) = self.conns.get_mut(conn) {
                c.seat = None;
                c.handle.frame_limit.store(MAX_CONTROL_FRAME, Ordering::Release);
                self.lobby.push_front(*conn);
            }
        }
        self.lobby_since = (!self.lobby.is_empty()).then(Instant::now);
    }
}

/// Grants upload slots to ready clients while slots are free.
fn grant_slots(round: &mut ActiveRound, slots: usize, conns: &HashMap<ConnId, Conn>) {
    while round.granted.len() < slots {
        let Some(seat) = round.ready.pop_front() else { return };
        let Some(c) = round.seats.get(seat.get() as usize - 1).and_then(|c| conns.get(c)) else { continue };
        c.handle.frame_limit.store(round.upload_frame.max(MAX_CONTROL_FRAME), Ordering::Release);
        let grant = Outbound::Frame(ServiceMessage::UploadGrant.encode());
        let _ = c.handle.outbox.send(grant.clone());
        round.last_sent.insert(seat, grant);
        round.granted.insert(seat);
    }
}

/// Frees `seat`'s upload slot, if it held one, and grants free slots to waiting clients.
fn release_slot(round: &mut ActiveRound, seat: ClientId, conns: &HashMap<ConnId, Conn>, slots: usize) {
    round.ready.retain(|&s| s != seat);
    if round.granted.remove(&seat) {
        if let Some(c) = round.seats.get(seat.get() as usize - 1).and_then(|c| conns.get(c)) {
            c.handle.frame_limit.store(MAX_CONTROL_FRAME, Ordering::Release);
        }
        grant_slots(round, slots, conns);
    }
}

/// Handles the first frame of a client that just reconnected, if it repeats what the
/// server already has (the client resends its last message because it cannot know
/// whether it arrived): ignores it, or grants the upload again if the upload itself was
/// lost. Returns whether the frame was handled.
fn handle_resent(
    round: &mut ActiveRound,
    seat: ClientId,
    frame: &Result<FromClient, Violation>,
    conns: &HashMap<ConnId, Conn>,
) -> bool {
    let server = &round.server;
    let repeated = match frame {
        Ok(FromClient::Protocol(msg)) => msg.phase().is_some_and(|p| server.has_answered(seat, p)),
        Ok(FromClient::Service(ServiceMessage::UploadReady)) => {
            if !server.has_answered(seat, Phase::MaskedInput) && round.granted.contains(&seat) {
                if let Some(c) = round.seats.get(seat.get() as usize - 1).and_then(|c| conns.get(c)) {
                    c.handle.send(ServiceMessage::UploadGrant.encode());
                }
                return true;
            }
            server.has_answered(seat, Phase::MaskedInput) || round.ready.contains(&seat)
        }
        _ => false,
    };
    if repeated {
        tracing::debug!(client = seat.get(), "ignoring a message resent after reconnecting");
    }
    repeated
}

fn dropped_record(d: &DroppedClient) -> DroppedRecord {
    DroppedRecord {
        client: d.client.get(),
        phase: phase_name(d.phase).into(),
        reason: match &d.reason {
            DropReason::MissedDeadline => "missed the phase deadline".into(),
            DropReason::ConnectionLost => "connection lost".into(),
            DropReason::Left(detail) => format!("left: {detail}"),
            DropReason::Violation(v) => format!("protocol violation: {v}"),
        },
        in_sum: d.in_sum,
    }
}

/// Snake-case name of a phase, for records.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::AdvertiseKeys => "advertise_keys",
        Phase::ShareKeys => "share_keys",
        Phase::MaskedInput => "masked_input",
        Phase::Unmask => "unmask",
        Phase::Reconstruct => "reconstruct",
        Phase::Completed => "completed",
        Phase::Aborted => "aborted",
    }
}

async fn sleep_until(deadline: Option<TokioInstant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

//! Connections and identities: who is connected, who is admitted as whom, and who waits
//! for a seat.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use privagg_protocol::ClientId;
use privagg_protocol::cohort::Member;

use super::ConnId;
use crate::admission::ClientIdentity;
use crate::message::IDENTITY_LEN;
use crate::round_log::LogRequest;

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ConnState {
    /// Connected; its `Hello` is due.
    AwaitingHello,
    /// Admitted as `identity`; in the lobby (`seat` = `None`) or seated in the round.
    Admitted {
        /// Who it is.
        identity: ClientIdentity,
        /// The random client identity its `Hello` carried: the same client reconnecting
        /// presents it again.
        instance: [u8; IDENTITY_LEN],
        /// Its seat in the current round.
        seat: Option<ClientId>,
        /// Back in the lobby from a round whose last frames may still be on their way.
        returning: bool,
    },
    /// Told to close; whatever it sends is ignored.
    Closing,
}

/// A client given a seat.
pub(super) struct Seated {
    pub conn: ConnId,
    pub identity: ClientIdentity,
    /// The random client identity of its `Hello`.
    pub instance: [u8; IDENTITY_LEN],
    /// Its commitment and certificate, as the round's protocol needs them.
    pub member: Member,
    /// What its `Ready` asked of the round log.
    pub log_request: LogRequest,
}

/// Every connection the session knows, the identity each admitted one holds, and the
/// queue of admitted clients that asked for a seat (`Ready`).
#[derive(Default)]
pub(super) struct Lobby {
    conns: HashMap<ConnId, ConnState>,
    by_identity: HashMap<ClientIdentity, ConnId>,
    /// The certificate each connection presented in the TLS handshake, if it did.
    certificates: HashMap<ConnId, Arc<[u8]>>,
    /// The commitment of each waiting client's latest `Ready`.
    commitments: HashMap<ConnId, [u8; 32]>,
    /// What each waiting client's latest `Ready` asked of the round log.
    log_requests: HashMap<ConnId, LogRequest>,
    /// Connections awaiting their `Hello`, with their deadline, in arrival order (so in
    /// deadline order).
    hellos_due: VecDeque<(Instant, ConnId)>,
    /// Admitted clients that asked for a seat, in the order they will be seated.
    queue: VecDeque<ConnId>,
    /// Since when the clients in the queue have been waiting (`None`: nobody waits).
    waiting_since: Option<Instant>,
    /// Connections that asked for the model after each round they complete.
    followers: HashSet<ConnId>,
}

impl Lobby {
    pub(super) fn state(&self, conn: ConnId) -> Option<ConnState> {
        self.conns.get(&conn).copied()
    }

    /// Every connection, with its state.
    pub(super) fn conns(&self) -> impl Iterator<Item = (ConnId, ConnState)> + '_ {
        self.conns.iter().map(|(c, s)| (*c, *s))
    }

    pub(super) fn connected(&mut self, conn: ConnId, hello_deadline: Instant, certificate: Option<Arc<[u8]>>) {
        self.conns.insert(conn, ConnState::AwaitingHello);
        if let Some(certificate) = certificate {
            self.certificates.insert(conn, certificate);
        }
        self.hellos_due.push_back((hello_deadline, conn));
    }

    /// The certificate `conn` presented, if any.
    pub(super) fn certificate(&self, conn: ConnId) -> Option<Arc<[u8]>> {
        self.certificates.get(&conn).cloned()
    }

    /// Marks `conn` as closing: it holds no identity and no place in the queue any more.
    pub(super) fn closing(&mut self, conn: ConnId) {
        self.forget_identity(conn);
        self.dequeue(conn);
        if let Some(state) = self.conns.get_mut(&conn) {
            *state = ConnState::Closing;
        }
    }

    /// Forgets `conn`; returns what it was.
    pub(super) fn remove(&mut self, conn: ConnId) -> Option<ConnState> {
        self.forget_identity(conn);
        self.dequeue(conn);
        self.certificates.remove(&conn);
        self.commitments.remove(&conn);
        self.log_requests.remove(&conn);
        self.followers.remove(&conn);
        self.conns.remove(&conn)
    }

    fn dequeue(&mut self, conn: ConnId) {
        self.queue.retain(|&c| c != conn);
        if self.queue.is_empty() {
            self.waiting_since = None;
        }
    }

    fn forget_identity(&mut self, conn: ConnId) {
        if let Some(ConnState::Admitted { identity, .. }) = self.conns.get(&conn)
            && self.by_identity.get(identity) == Some(&conn)
        {
            self.by_identity.remove(identity);
        }
    }

    /// The connection that holds `identity`, if any.
    pub(super) fn holder(&self, identity: &ClientIdentity) -> Option<ConnId> {
        self.by_identity.get(identity).copied()
    }

    /// Records `conn` as admitted as `identity`, seated (reconnected to its seat) or in
    /// the lobby.
    pub(super) fn admit(
        &mut self,
        conn: ConnId,
        identity: ClientIdentity,
        instance: [u8; IDENTITY_LEN],
        seat: Option<ClientId>,
    ) {
        self.conns.insert(conn, ConnState::Admitted { identity, instance, seat, returning: false });
        self.by_identity.insert(identity, conn);
    }

    /// A client in the lobby asked for a seat with `commitment`: it joins the queue (once;
    /// a later `Ready` only replaces the commitment). Returns whether it was in the lobby.
    pub(super) fn ready(&mut self, now: Instant, conn: ConnId, commitment: [u8; 32], log: LogRequest) -> bool {
        let Some(ConnState::Admitted { seat: None, returning, .. }) = self.conns.get_mut(&conn) else { return false };
        *returning = false;
        self.commitments.insert(conn, commitment);
        self.log_requests.insert(conn, log);
        if !self.queue.contains(&conn) {
            self.queue.push_back(conn);
            self.waiting_since.get_or_insert(now);
        }
        true
    }

    /// `conn` asked for the model after each round it completes.
    pub(super) fn follow(&mut self, conn: ConnId) {
        self.followers.insert(conn);
    }

    /// Whether `conn` asked for the model after each round.
    pub(super) fn follows(&self, conn: ConnId) -> bool {
        self.followers.contains(&conn)
    }

    /// Connections not yet admitted (their `Hello` is due).
    pub(super) fn unadmitted(&self) -> usize {
        self.conns.values().filter(|s| matches!(s, ConnState::AwaitingHello)).count()
    }

    /// Connections whose `Hello` deadline passed before `now` and that still owe one.
    pub(super) fn overdue_hellos(&mut self, now: Instant) -> Vec<ConnId> {
        let mut overdue = Vec::new();
        while let Some(&(deadline, conn)) = self.hellos_due.front() {
            if deadline > now {
                break;
            }
            self.hellos_due.pop_front();
            if self.state(conn) == Some(ConnState::AwaitingHello) {
                overdue.push(conn);
            }
        }
        overdue
    }

    /// The earliest `Hello` deadline of a connection that still owes one.
    pub(super) fn next_hello_deadline(&mut self) -> Option<Instant> {
        while let Some(&(deadline, conn)) = self.hellos_due.front() {
            if self.state(conn) == Some(ConnState::AwaitingHello) {
                return Some(deadline);
            }
            self.hellos_due.pop_front();
        }
        None
    }

    /// Clients waiting for a seat.
    pub(super) fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// When a partial cohort of at least `min` may start: `timeout` after the queue
    /// began waiting, if at least `min` clients wait.
    pub(super) fn partial_cohort_deadline(&self, min: usize, timeout: std::time::Duration) -> Option<Instant> {
        if self.queue.len() < min {
            return None;
        }
        self.waiting_since.map(|since| since + timeout)
    }

    /// The waiting clients, in queue order.
    pub(super) fn queued(&self) -> Vec<ConnId> {
        self.queue.iter().copied().collect()
    }

    /// Seats the waiting clients among `conns`, in that order: returns their connections
    /// and identities, seat 1 first.
    pub(super) fn seat_these(&mut self, now: Instant, conns: &[ConnId]) -> Vec<Seated> {
        let mut seated = Vec::with_capacity(conns.len());
        let waiting: HashSet<ConnId> = self.queue.iter().copied().collect();
        let chosen: Vec<ConnId> = conns.iter().copied().filter(|c| waiting.contains(c)).collect();
        let taken: HashSet<ConnId> = chosen.iter().copied().collect();
        self.queue.retain(|c| !taken.contains(c));
        for conn in chosen {
            if let Some(ConnState::Admitted { identity, instance, seat, returning }) = self.conns.get_mut(&conn) {
                *seat = ClientId::new(seated.len() as u32 + 1);
                *returning = false;
                let member = Member {
                    commitment: self.commitments.remove(&conn).unwrap_or_default(),
                    certificate: self.certificates.get(&conn).cloned(),
                };
                let log_request = self.log_requests.remove(&conn).unwrap_or_default();
                seated.push(Seated { conn, identity: *identity, instance: *instance, member, log_request });
            }
        }
        self.waiting_since = (!self.queue.is_empty()).then_some(now);
        seated
    }

    /// Returns seated clients to the lobby. They are seated again only once they ask
    /// (`Ready`); until then, late frames of their round are ignored.
    pub(super) fn unseat(&mut self, conns: impl Iterator<Item = ConnId>) {
        for conn in conns {
            if let Some(ConnState::Admitted { seat, returning, .. }) = self.conns.get_mut(&conn)
                && seat.take().is_some()
            {
                *returning = true;
            }
        }
    }
}

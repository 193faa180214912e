//! Random check-ins (Balle, Kairouz, McMahan, Thakkar, Thakurta 2020), in their Poisson
//! form: before each round the server asks the waiting population whether it takes part;
//! each decides with its own CSPRNG, with the same probability q, and only those that
//! say yes are seated. The server chooses nobody, so to whoever sees only the released
//! models each client's participation is an independent coin of bias q — the Poisson
//! sampling that the subsampled accounting assumes. The server itself sees the cohort:
//! against it, no amplification holds.

use std::collections::HashSet;
use std::time::Instant;

use super::ConnId;

/// One round's check-in: who was asked, who joined.
pub(super) struct CheckInWindow {
    /// The round and attempt it is for.
    pub attempt: (u64, u32),
    /// Clients asked that have not answered.
    asked: HashSet<ConnId>,
    /// Clients that joined, in the order they answered.
    joined: Vec<ConnId>,
    /// When the window closes whoever has not answered.
    pub deadline: Instant,
}

impl CheckInWindow {
    /// A window for `attempt` (round, attempt), asking `conns`, open until `deadline`.
    pub fn open(attempt: (u64, u32), conns: impl IntoIterator<Item = ConnId>, deadline: Instant) -> Self {
        Self { attempt, asked: conns.into_iter().collect(), joined: Vec::new(), deadline }
    }

    /// `conn` answered for `attempt`; returns whether the answer was expected (asked, for
    /// this window, and not answered before).
    pub fn reply(&mut self, conn: ConnId, attempt: (u64, u32), join: bool) -> bool {
        if attempt != self.attempt || !self.asked.remove(&conn) {
            return false;
        }
        if join {
            self.joined.push(conn);
        }
        true
    }

    /// `conn` is gone: it neither answers nor takes part.
    pub fn forget(&mut self, conn: ConnId) {
        self.asked.remove(&conn);
        self.joined.retain(|&c| c != conn);
    }

    /// Whether every client answered or the deadline passed.
    pub fn is_over(&self, now: Instant) -> bool {
        self.asked.is_empty() || self.deadline <= now
    }

    /// The clients that joined, in the order they answered.
    pub fn into_joined(self) -> Vec<ConnId> {
        self.joined
    }
}

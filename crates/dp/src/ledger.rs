//! The privacy ledger: one DP event per release, persisted by the server.
//!
//! A release is an attempt of a round whose survivors were asked for their unmasking
//! shares: from then on the server can compute the sum, so the attempt is charged
//! whether or not the round commits. The server writes the ledger (JSON via serde)
//! atomically *before* the first unmask request, so that a crash, an abort or a retry
//! after it is still charged; a round retried after such an attempt appears once per
//! release. Attempts that never reached the unmask phase released nothing and are not
//! recorded.
//!
//! ε is never stored, only recomputed from the recorded events at whatever δ is asked
//! for, so a changed δ or an improved accountant re-reads the same history. The server
//! calls [`PrivacyLedger::check_budget`] before starting each attempt.

use serde::{Deserialize, Serialize};

use crate::accountant::{DpEvent, RdpAccountant};
use crate::error::{DpError, invalid};

/// What one release cost.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// Round number; never decreasing along the ledger (a round released more than
    /// once — a retry, or a restart after a crash — appears once per release).
    pub round: u64,
    /// Which attempt of the round, as the server numbered it (1 for the first; the
    /// numbering starts again after a restart).
    pub attempt: u32,
    /// The release, as the accountant sees it.
    pub event: DpEvent,
    /// Smallest survivor count the round accepted.
    pub n_min: usize,
    /// Clients whose masked inputs were in the sum when it was released (≥ `n_min`).
    pub survivors: usize,
    /// Effective noise multiplier (noise std of the honest shares / inflated sensitivity).
    pub effective_noise_multiplier: f64,
}

/// The persisted history of DP events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PrivacyLedger {
    /// Releases, in order.
    pub releases: Vec<Release>,
    /// Attempts that aborted after their cohort was seated (whether or not they were
    /// released): with random check-ins, each voids the amplified ε
    /// ([`crate::sampling`]).
    #[serde(default)]
    pub seated_aborts: u64,
}

impl PrivacyLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a release. Rejects an invalid event, `survivors < n_min`, and a round
    /// number below the last one.
    pub fn record(&mut self, record: Release) -> Result<(), DpError> {
        record.event.validate()?;
        if record.survivors < record.n_min {
            return Err(invalid(
                "survivors",
                format!("{} < n_min {}: such a round releases nothing", record.survivors, record.n_min),
            ));
        }
        if let Some(last) = self.releases.last()
            && record.round < last.round
        {
            return Err(invalid("round", format!("{} comes before {}", record.round, last.round)));
        }
        self.releases.push(record);
        Ok(())
    }

    fn accountant_with(&self, next: Option<&DpEvent>) -> Result<RdpAccountant, DpError> {
        let mut acc = RdpAccountant::new();
        // Consecutive rounds usually repeat the same event: compute its curve once.
        let events = self.releases.iter().map(|r| &r.event).chain(next);
        let mut run: Option<(&DpEvent, u64)> = None;
        for e in events {
            run = match run {
                Some((prev, count)) if prev == e => Some((prev, count + 1)),
                Some((prev, count)) => {
                    acc.compose(prev, count)?;
                    Some((e, 1))
                }
                None => Some((e, 1)),
            };
        }
        if let Some((prev, count)) = run {
            acc.compose(prev, count)?;
        }
        Ok(acc)
    }

    /// ε spent so far at `delta`.
    pub fn epsilon(&self, delta: f64) -> Result<f64, DpError> {
        self.accountant_with(None)?.epsilon(delta)
    }

    /// ε at `delta` if `next` were released as well.
    pub fn epsilon_after(&self, next: &DpEvent, delta: f64) -> Result<f64, DpError> {
        self.accountant_with(Some(next))?.epsilon(delta)
    }

    /// Refuses the next round ([`DpError::BudgetExceeded`]) if releasing `next` would take
    /// ε at `delta` above `max_epsilon`. Rejects a `max_epsilon` that is not ≥ 0.
    pub fn check_budget(&self, next: &DpEvent, max_epsilon: f64, delta: f64) -> Result<(), DpError> {
        if max_epsilon.is_nan() || max_epsilon < 0.0 {
            return Err(invalid("max_epsilon", "must be ≥ 0"));
        }
        let projected = self.epsilon_after(next, delta)?;
        if projected > max_epsilon {
            return Err(DpError::BudgetExceeded { projected, max_epsilon });
        }
        Ok(())
    }
}

//! The privacy ledger: one DP event per released round, persisted by the server.
//!
//! ε is never stored, only recomputed from the recorded events at whatever δ is asked
//! for, so a changed δ or an improved accountant re-reads the same history. The server
//! writes the ledger (JSON via serde) atomically together with the model after every
//! round, and calls [`PrivacyLedger::check_budget`] before starting the next one. Rounds
//! that released nothing (fewer than `n_min` survivors) are not recorded.

use serde::{Deserialize, Serialize};

use crate::accountant::{DpEvent, RdpAccountant};
use crate::error::{DpError, invalid};

/// What one released round cost.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Round number; strictly increasing along the ledger.
    pub round: u64,
    /// The release, as the accountant sees it.
    pub event: DpEvent,
    /// Smallest survivor count the round accepted.
    pub n_min: usize,
    /// Clients whose updates were summed (≥ `n_min`).
    pub survivors: usize,
    /// Effective noise multiplier (noise std of the honest shares / inflated sensitivity).
    pub effective_noise_multiplier: f64,
}

/// The persisted history of DP events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PrivacyLedger {
    /// Released rounds, in order.
    pub rounds: Vec<RoundRecord>,
}

impl PrivacyLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a released round. Rejects an invalid event, `survivors < n_min`, and a
    /// round number not above the last one (a round is never applied twice).
    pub fn record(&mut self, record: RoundRecord) -> Result<(), DpError> {
        record.event.validate()?;
        if record.survivors < record.n_min {
            return Err(invalid(
                "survivors",
                format!("{} < n_min {}: such a round releases nothing", record.survivors, record.n_min),
            ));
        }
        if let Some(last) = self.rounds.last()
            && record.round <= last.round
        {
            return Err(invalid("round", format!("{} does not follow {}", record.round, last.round)));
        }
        self.rounds.push(record);
        Ok(())
    }

    fn accountant_with(&self, next: Option<&DpEvent>) -> Result<RdpAccountant, DpError> {
        let mut acc = RdpAccountant::new();
        // Consecutive rounds usually repeat the same event: compute its curve once.
        let events = self.rounds.iter().map(|r| &r.event).chain(next);
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

//! Amplification by random check-ins, and what it claims against whom.
//!
//! With random check-ins (Balle, Kairouz, McMahan, Thakkar, Thakurta, NeurIPS 2020) in
//! their Poisson form, before each round every client of a population of `N` decides
//! with its own CSPRNG, independently and with the same probability `q`, whether it
//! takes part; the round runs if at least `n_min` did, otherwise the check-in is tried
//! again and nothing is released.
//!
//! **Against whom.** The server sees who checked in: against it (and anyone who sees
//! the cohort) there is no amplification, and the headline ε is the one at `q = 1`.
//! Against those who see only the released models — users of the trained model, or
//! anyone who reads the checkpoints — each client's participation in each release is a
//! hidden coin of bias `q`, the Poisson subsampling of DP-FedAvg's accounting, provided
//! the FedAvg denominator is the public constant `q·N` (it is) and the server follows
//! the protocol (honest-but-curious at most).
//!
//! **Adjacency and accounting.** Add/remove adjacency of one client (for Poisson
//! sampling with a fixed denominator the same bound holds for zero-out, a client's
//! update replaced by zero), with the client's coins independent of everything else. A check-in that collected fewer than
//! `n_min` would change what is released (no model) in a way that depends on the
//! target's coin and is not covered by the noise; it is folded into δ: let `β` be the
//! probability that fewer than `n_min` of the *other* `N − 1` clients check in. On the
//! event that this never happens in the first `T` releases (probability ≥ 1 − T·β,
//! independent of the target's coin and data), the released sequence is exactly `T`
//! Poisson-subsampled rounds of the mechanism; so the whole session is
//! `(ε_q(δ), δ + T·β)`-DP against model consumers, where `ε_q` composes the subsampled
//! events (Zhu–Wang bound for the discrete mechanisms, as [`crate::accountant`] does).

use crate::accountant::DpEvent;
use crate::error::{DpError, invalid};
use crate::ledger::PrivacyLedger;

/// A check-in regime: each of `population` clients takes part with probability `rate`;
/// a round needs `min_clients`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CheckIns {
    rate: f64,
    population: u64,
    min_clients: u64,
}

impl CheckIns {
    /// Rejects `rate ∉ (0, 1]`, `min_clients = 0` and `population < min_clients`.
    pub fn new(rate: f64, population: u64, min_clients: u64) -> Result<Self, DpError> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(invalid("check-in rate", format!("must be in (0, 1], got {rate}")));
        }
        if min_clients == 0 || population < min_clients {
            return Err(invalid("population", format!("{population} cannot give rounds of {min_clients}")));
        }
        Ok(Self { rate, population, min_clients })
    }

    /// The check-in rate q.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// β: the probability that fewer than `min_clients` of the other `population − 1`
    /// clients check in (a Binomial tail, summed exactly in log space).
    pub fn shortfall(&self) -> f64 {
        let others = (self.population - 1) as f64;
        if self.rate >= 1.0 {
            return if others >= self.min_clients as f64 { 0.0 } else { 1.0 };
        }
        let (ln_q, ln_1q) = (self.rate.ln(), (-self.rate).ln_1p());
        let ln_choose = |k: f64| libm::lgamma(others + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(others - k + 1.0);
        let tail: f64 = (0..self.min_clients.min(self.population))
            .map(|k| k as f64)
            .map(|k| (ln_choose(k) + k * ln_q + (others - k) * ln_1q).exp())
            .sum();
        tail.min(1.0)
    }

    /// `(ε, δ_total)` against model consumers after `releases` releases of `event`
    /// (its sampling rate replaced by the check-in rate), at `delta`:
    /// `δ_total = delta + releases·β`.
    pub fn epsilon(&self, event: &DpEvent, releases: u64, delta: f64) -> Result<(f64, f64), DpError> {
        let epsilon = crate::accountant::tightest_epsilon(&self.sampled(event), releases, delta)?;
        Ok((epsilon, self.total_delta(releases, delta)))
    }

    /// `(ε, δ_total)` against model consumers for every release in `ledger`.
    pub fn ledger_epsilon(&self, ledger: &PrivacyLedger, delta: f64) -> Result<(f64, f64), DpError> {
        let mut sampled = ledger.clone();
        for release in &mut sampled.releases {
            release.event = self.sampled(&release.event);
        }
        Ok((sampled.epsilon(delta)?, self.total_delta(ledger.releases.len() as u64, delta)))
    }

    fn total_delta(&self, releases: u64, delta: f64) -> f64 {
        delta + releases as f64 * self.shortfall()
    }

    fn sampled(&self, event: &DpEvent) -> DpEvent {
        with_sampling_rate(event, self.rate)
    }
}

/// `event` with its sampling rate replaced by `rate`.
pub fn with_sampling_rate(event: &DpEvent, rate: f64) -> DpEvent {
    let mut event = *event;
    match &mut event {
        DpEvent::Gaussian { sampling_rate, .. }
        | DpEvent::DistributedDiscreteGaussian { sampling_rate, .. }
        | DpEvent::DistributedSkellam { sampling_rate, .. } => *sampling_rate = rate,
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortfall_is_the_binomial_tail() {
        // N − 1 = 9 others at q = 0.5, fewer than 3: (1 + 9 + 36) / 2⁹.
        let c = CheckIns::new(0.5, 10, 3).unwrap();
        assert!((c.shortfall() - 46.0 / 512.0).abs() < 1e-12);
        assert_eq!(CheckIns::new(1.0, 10, 3).unwrap().shortfall(), 0.0);
        // A large population far above n_min: negligible.
        assert!(CheckIns::new(0.1, 100_000, 900).unwrap().shortfall() < 1e-50);
    }

    #[test]
    fn sampling_lowers_epsilon_and_adds_the_shortfall_to_delta() {
        let event = DpEvent::Gaussian { noise_multiplier: 1.0, sampling_rate: 1.0 };
        let full = crate::accountant::epsilon(&event, 100, 1e-5).unwrap();
        let c = CheckIns::new(0.01, 100_000, 500).unwrap();
        let (eps, delta) = c.epsilon(&event, 100, 1e-5).unwrap();
        assert!(eps < full / 10.0, "{eps} vs {full}");
        assert!((1e-5..1.0001e-5).contains(&delta));
        let tight = CheckIns::new(0.5, 10, 3).unwrap();
        assert!((tight.epsilon(&event, 4, 1e-5).unwrap().1 - (1e-5 + 4.0 * 46.0 / 512.0)).abs() < 1e-12);
    }

    #[test]
    fn impossible_regimes_are_refused() {
        for (rate, population, min) in [(0.0, 10, 2), (1.5, 10, 2), (f64::NAN, 10, 2), (0.5, 1, 2), (0.5, 10, 0)] {
            assert!(CheckIns::new(rate, population, min).is_err(), "{rate} {population} {min}");
        }
    }
}

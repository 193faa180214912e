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
//! **Adjacency and accounting.** This is the standard DP-FedAvg accounting of Poisson
//! subsampling (McMahan et al. 2018; Balle et al. 2020), applied to what privagg runs; the
//! argument, not a machine-checked proof, is this. Zero-out adjacency: the target is in
//! the population either way (membership is public; only the first `N` waiting are
//! asked, so adding a client would displace another) and its data is replaced by zeros,
//! its noise share and coins unchanged and independent of everything else. Each honest
//! client asked answers with its coin (a client not ready to train answers no: count it
//! among the corrupt for the lower edge). Each attempt at a round is a
//! *window*: the server asks at most `N` clients, each flips a fresh coin, and the round
//! runs only if the number that joined is within `[n_min, n_max]` (`n_max` the largest
//! cohort planned for); otherwise nothing is released. Whether a window runs can depend
//! on the target's coin only when the *others'* count is at an edge; let `β` bound the
//! probability of `others ∉ [n_min, n_max − 1]`. For the lower edge the `⌈c·N⌉` corrupt
//! clients are assumed to stay out (as they may drop out) and only the `N − 1 − ⌈c·N⌉`
//! honest others flip coins. For the upper edge the `k` colluders the noise already
//! allows in a cohort (`⌈c·n_min⌉`) are assumed to join always, the others to flip their
//! coins: more corrupt clients joining than that would break the premise of the noise,
//! which both figures rest on. Over `W` windows
//! (at most rounds × attempts per round) the event that no window hits an edge has
//! probability ≥ 1 − W·β, independent of the target's coin and data; on it the released
//! sequence is exactly the charged releases, each a Poisson-subsampled release of the
//! mechanism. So the session is `(ε_q(δ), δ + W·β)`-DP against model consumers, where
//! `ε_q` composes the subsampled events over the releases (Zhu–Wang bound for the
//! discrete mechanisms, as [`crate::accountant`] does). Premises: the server follows the
//! protocol and keeps the cohort to itself, and the distributed noise is there (enough
//! honest shares, as the headline figure already assumes).
//!
//! **Seated attempts that abort void the figure.** Once seated, every client learns the
//! cohort's size, which counts the target's coin; an attempt that then aborts (a
//! colluder leaving when the count suits it, or honest dropouts near `n_min`) and is
//! retried with fresh coins makes whether a round releases depend on the target's coin
//! in a way `β` does not bound. So once any seated attempt aborted, or a release was
//! charged for an attempt that did not commit (an abort after unmasking, a crash),
//! [`CheckIns::ledger_epsilon`] claims nothing and only the headline (no amplification)
//! holds.

use crate::accountant::DpEvent;
use crate::error::{DpError, invalid};
use crate::ledger::PrivacyLedger;

/// Who checks in: a population of `clients`, of which `corrupt` answer as they like; a
/// round runs with `min_cohort ..= max_cohort` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Population {
    /// `N`: the clients asked in each window.
    pub clients: u64,
    /// `n_min`: fewest that must join for the round to run.
    pub min_cohort: u64,
    /// `n_max`: most that may join for the round to run.
    pub max_cohort: u64,
    /// Clients assumed corrupt (`⌈c·N⌉`): for the lower edge, they stay out.
    pub corrupt: u64,
    /// Colluders the noise allows in a cohort (`⌈c·n_min⌉`): for the upper edge, they
    /// always join.
    pub colluders: u64,
}

/// A check-in regime: each client of the population takes part in each window with
/// probability `rate`, for at most `windows` windows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CheckIns {
    rate: f64,
    population: Population,
    windows: u64,
}

impl CheckIns {
    /// Rejects `rate ∉ (0, 1]`, `min_cohort = 0`, `max_cohort < min_cohort`, a
    /// population without `min_cohort` honest clients, and `max_cohort > clients`.
    pub fn new(rate: f64, population: Population, windows: u64) -> Result<Self, DpError> {
        let Population { clients, min_cohort, max_cohort, corrupt, .. } = population;
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(invalid("check-in rate", format!("must be in (0, 1], got {rate}")));
        }
        if min_cohort == 0 || max_cohort < min_cohort || max_cohort > clients {
            return Err(invalid("cohort", format!("{min_cohort} ..= {max_cohort} of {clients} clients")));
        }
        if clients.saturating_sub(corrupt) < min_cohort {
            return Err(invalid(
                "population",
                format!("{clients} clients, {corrupt} corrupt, cannot give rounds of {min_cohort}"),
            ));
        }
        Ok(Self { rate, population, windows })
    }

    /// The check-in rate q.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// β: the probability, per window, that the others' count is at an edge where the
    /// target's coin decides whether the round runs — fewer than `min_cohort` honest
    /// others join (corrupt ones staying out), or at least `max_cohort` others do (the
    /// colluders always joining). Binomial tails, summed in log space.
    pub fn shortfall(&self) -> f64 {
        let Population { clients, min_cohort, max_cohort, corrupt, colluders } = self.population;
        let others = clients.saturating_sub(1);
        let low = Binomial { trials: others.saturating_sub(corrupt), rate: self.rate }.below(min_cohort);
        let coins = Binomial { trials: others.saturating_sub(colluders), rate: self.rate };
        let high = coins.at_least(max_cohort.saturating_sub(colluders));
        (low + high).min(1.0)
    }

    /// `(ε, δ_total)` against model consumers after `releases` releases of `event`
    /// (its sampling rate replaced by the check-in rate), at `delta`:
    /// `δ_total = delta + windows·β`.
    pub fn epsilon(&self, event: &DpEvent, releases: u64, delta: f64) -> Result<(f64, f64), DpError> {
        let epsilon = crate::accountant::tightest_epsilon(&self.sampled(event), releases, delta)?;
        Ok((epsilon, self.total_delta(delta)))
    }

    /// `(ε, δ_total)` against model consumers for every release in `ledger`, after
    /// `committed` rounds; `None` once a seated attempt aborted or a release did not
    /// commit (the module docs say why).
    pub fn ledger_epsilon(
        &self,
        ledger: &PrivacyLedger,
        committed: u64,
        delta: f64,
    ) -> Result<Option<(f64, f64)>, DpError> {
        if ledger.seated_aborts > 0 || ledger.releases.len() as u64 > committed {
            return Ok(None);
        }
        let mut sampled = ledger.clone();
        for release in &mut sampled.releases {
            release.event = self.sampled(&release.event);
        }
        Ok(Some((sampled.epsilon(delta)?, self.total_delta(delta))))
    }

    /// `delta + windows·β`: the δ of the second figure.
    pub fn total_delta(&self, delta: f64) -> f64 {
        delta + self.windows as f64 * self.shortfall()
    }

    fn sampled(&self, event: &DpEvent) -> DpEvent {
        with_sampling_rate(event, self.rate)
    }
}

/// Tails of Binomial(`trials`, `rate`).
struct Binomial {
    trials: u64,
    rate: f64,
}

impl Binomial {
    fn ln_pmf(&self, k: u64) -> f64 {
        let (n, k) = (self.trials as f64, k as f64);
        let ln_choose = libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0);
        let ln_q = self.rate.ln();
        let ln_1q = if self.rate < 1.0 { (-self.rate).ln_1p() } else { f64::NEG_INFINITY };
        // 0·ln 0 = 0: the certain outcomes at q = 1 (k = n) and k = 0.
        let term = |count: f64, ln: f64| if count == 0.0 { 0.0 } else { count * ln };
        ln_choose + term(k, ln_q) + term(n - k, ln_1q)
    }

    /// P(X < `k`).
    fn below(&self, k: u64) -> f64 {
        (0..k.min(self.trials + 1)).map(|i| self.ln_pmf(i).exp()).sum::<f64>().min(1.0)
    }

    /// P(X ≥ `k`), summed upward until the terms past the mean stop counting.
    fn at_least(&self, k: u64) -> f64 {
        let mean = self.trials as f64 * self.rate;
        let mut sum = 0.0;
        for i in k..=self.trials {
            let term = self.ln_pmf(i).exp();
            sum += term;
            if i as f64 > mean && term <= sum * 1e-17 {
                break;
            }
        }
        sum.min(1.0)
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

    fn population(clients: u64, min_cohort: u64, max_cohort: u64, corrupt: u64) -> Population {
        Population { clients, min_cohort, max_cohort, corrupt, colluders: 0 }
    }

    #[test]
    fn the_shortfall_is_both_binomial_tails() {
        // N − 1 = 9 others at q = 0.5: fewer than 3 is (1 + 9 + 36) / 2⁹; all 9 is 1 / 2⁹.
        let c = CheckIns::new(0.5, population(10, 3, 9, 0), 1).unwrap();
        assert!((c.shortfall() - 47.0 / 512.0).abs() < 1e-12, "{}", c.shortfall());
        // A cohort bound the others cannot reach adds nothing.
        let c = CheckIns::new(0.5, population(10, 3, 10, 0), 1).unwrap();
        assert!((c.shortfall() - 46.0 / 512.0).abs() < 1e-12);
        assert_eq!(CheckIns::new(1.0, population(10, 3, 10, 0), 1).unwrap().shortfall(), 0.0);
        // Everyone joins at q = 1, so 9 others reach a bound of 9: the edge every time.
        assert_eq!(CheckIns::new(1.0, population(10, 3, 9, 0), 1).unwrap().shortfall(), 1.0);
        // A large population far from both edges: negligible.
        let far = CheckIns::new(0.1, population(100_000, 900, 12_000, 0), 1).unwrap();
        assert!(far.shortfall() < 1e-50, "{}", far.shortfall());
    }

    #[test]
    fn corrupt_clients_are_assumed_to_stay_out() {
        // 2 of 10 corrupt: fewer than 3 of the 7 honest others join with probability
        // (1 + 7 + 21) / 2⁷; all 9 others with 1 / 2⁹.
        let c = CheckIns::new(0.5, population(10, 3, 9, 2), 1).unwrap();
        assert!((c.shortfall() - (29.0 / 128.0 + 1.0 / 512.0)).abs() < 1e-12, "{}", c.shortfall());
        let honest = CheckIns::new(0.5, population(10, 3, 9, 0), 1).unwrap();
        assert!(c.shortfall() > honest.shortfall());
        // 2 colluders always join: 9 others reach 9 when all 7 others' coins come up.
        let joining = CheckIns::new(0.5, Population { colluders: 2, ..population(10, 3, 9, 0) }, 1).unwrap();
        assert!((joining.shortfall() - (46.0 / 512.0 + 1.0 / 128.0)).abs() < 1e-12, "{}", joining.shortfall());
    }

    #[test]
    fn sampling_lowers_epsilon_and_every_window_adds_the_shortfall_to_delta() {
        let event = DpEvent::Gaussian { noise_multiplier: 1.0, sampling_rate: 1.0 };
        let full = crate::accountant::epsilon(&event, 100, 1e-5).unwrap();
        let c = CheckIns::new(0.01, population(100_000, 500, 1_500, 0), 300).unwrap();
        let (eps, delta) = c.epsilon(&event, 100, 1e-5).unwrap();
        assert!(eps < full / 10.0, "{eps} vs {full}");
        assert!((1e-5..1.0001e-5).contains(&delta));
        let tight = CheckIns::new(0.5, population(10, 3, 10, 0), 12).unwrap();
        assert!((tight.epsilon(&event, 4, 1e-5).unwrap().1 - (1e-5 + 12.0 * 46.0 / 512.0)).abs() < 1e-12);
    }

    #[test]
    fn a_seated_abort_or_an_uncommitted_release_voids_the_amplified_figure() {
        use crate::ledger::Release;
        let event = DpEvent::Gaussian { noise_multiplier: 1.0, sampling_rate: 1.0 };
        let release =
            |round| Release { round, attempt: 1, event, n_min: 500, survivors: 900, effective_noise_multiplier: 1.0 };
        let c = CheckIns::new(0.01, population(100_000, 500, 1_500, 0), 30).unwrap();
        let mut ledger = PrivacyLedger { releases: vec![release(1), release(2)], seated_aborts: 0 };
        let (eps, _) = c.ledger_epsilon(&ledger, 2, 1e-5).unwrap().unwrap();
        assert!(eps < ledger.epsilon(1e-5).unwrap());
        // Round 2 released twice (an abort after unmasking, or a crash) but committed once.
        assert_eq!(c.ledger_epsilon(&ledger, 1, 1e-5).unwrap(), None);
        ledger.seated_aborts = 1;
        assert_eq!(c.ledger_epsilon(&ledger, 2, 1e-5).unwrap(), None);
    }

    #[test]
    fn impossible_regimes_are_refused() {
        for (rate, p) in [
            (0.0, population(10, 2, 10, 0)),
            (1.5, population(10, 2, 10, 0)),
            (f64::NAN, population(10, 2, 10, 0)),
            (0.5, population(1, 2, 2, 0)),
            (0.5, population(10, 0, 10, 0)),
            (0.5, population(10, 5, 4, 0)),
            (0.5, population(10, 2, 11, 0)),
            (0.5, population(10, 3, 10, 8)),
        ] {
            assert!(CheckIns::new(rate, p, 1).is_err(), "{rate} {p:?}");
        }
    }
}

//! Choosing the neighbour count k and the Shamir threshold t for a cohort, in the manner
//! of Bell et al. (CCS 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic
//! Overhead") and of Google's production parameter finder.
//!
//! # The conditions
//!
//! The server labels the n clients of a Harary graph H(k, n) by a random permutation, so
//! the ⌊a·n⌋ corrupt and ⌊d·n⌋ dropped clients (a: tolerated corrupt fraction, d:
//! tolerated dropout fraction) land on uniformly random nodes. A client's k neighbours
//! are then a uniform sample without replacement from the other nodes, and the number of
//! bad ones is hypergeometric. Three bad events must be unlikely:
//!
//! 1. **The honest survivors' graph splits** (the server would learn the sums of its
//!    parts). Removing nodes disconnects a Harary ring only if two disjoint runs of k/2
//!    consecutive nodes are all removed. There are n(n − k − 1)/2 such pairs of runs,
//!    and a fixed set of k nodes is all bad with probability B!(n − k)! / (n!(B − k)!)
//!    where B = ⌊a·n⌋ + ⌊d·n⌋; the union bound must be below 2^−(σ+1).
//! 2. **A client has t or more corrupt neighbours** (they could rebuild its secrets
//!    without the server's help). t1 is the smallest value with
//!    P(corrupt neighbours > t1) < 2^−(σ+1)/n, X ~ Hypergeometric(n, ⌊a·n⌋, k); a union
//!    bound over the n clients then bounds the event by 2^−(σ+1). Any t > t1 is safe.
//! 3. **A client keeps fewer than t surviving neighbours** (its masks could not be
//!    removed). t2 is the smallest value with P(S ≤ t2) ≥ 2^−η/n,
//!    S ~ Hypergeometric(n, ⌈(1 − d)·n⌉, k); any t ≤ t2 has P(S < t) < 2^−η/n.
//!
//! Against a semi-malicious server, which may send different survivor lists to different
//! clients (a *split view*), the server must not gather t shares of a client's mask key
//! from holders told it dropped and t shares of its self-mask secret from the others. A
//! client's k + 1 holders (itself included) hold one share of each; with c corrupt
//! holders, which give both, the server gets both secrets iff 2t ≤ k + 1 + c. So the
//! threshold must satisfy **2t ≥ k + 2 + c** ([`split_view_threshold`]), with c = t1 for a
//! sparse graph and c = ⌊a·n⌋ for the complete one (k = n − 1: 2t > n + c). A client checks
//! the same rule against the parameters it is sent ([`corrupt_neighbour_bound`]).
//!
//! The finder tries k = 2, 4, 6, … below n − 1 and returns the first k where condition 1
//! holds and max(t1 + 1, 2) ≤ t2, with t = max(t1 + 1, 2) (the smallest safe threshold, which
//! tolerates the most dropouts and makes reconstruction cheapest). σ = 40 bits of
//! statistical security and η = 20 bits of correctness, as in Google's `fcp/secagg`.
//! When no sparse graph works it falls back to the complete graph (k = n − 1), where the
//! conditions become t > ⌊a·n⌋ (curious server) or 2t > n + ⌊a·n⌋ (semi-malicious
//! server) and t ≤ n − ⌊d·n⌋. (Google's full-graph check also demands t ≥ ⌈(1 − d)·n⌉,
//! which would leave no room for dropouts below the expected rate; privagg keeps the
//! smallest secure t and lets `min_clients` set how many inputs the sum must cover.) Rates get 1e−14 added before rounding so float error can
//! never round in the insecure direction. Like Google's finder, instances with
//! a + d > 0.9 (curious) or a + 2d > 0.9 (semi-malicious) are refused as infeasible.
//!
//! The tails are summed term by term from the tail's own end (never as 1 − CDF), with
//! log-factorials from an exact sum below 32 and the Stirling series above, so tail
//! probabilities of 10^−20 keep their relative precision.

use crate::error::ParameterError;

/// Statistical security σ, in bits.
pub const SECURITY_BITS: f64 = 40.0;
/// Correctness η, in bits: the round fails with probability below 2^−η.
pub const CORRECTNESS_BITS: f64 = 20.0;
/// Largest cohort the finder handles.
pub const MAX_FINDER_CLIENTS: u32 = 1_000_000;

const SMALL: f64 = 1e-14;

/// What the server is assumed to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdversaryClass {
    /// Follows the protocol but tries to learn from what it sees (with corrupt clients).
    CuriousServer,
    /// May also lie about who dropped, sending different views to different clients.
    SemiMaliciousServer,
}

/// The threat and failure model a cohort is sized for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThreatModel {
    /// Fraction of clients that may be corrupt and collude with the server, in [0, 1).
    pub corrupt_fraction: f64,
    /// Fraction of clients that may drop out during a round, in [0, 1).
    pub dropout_fraction: f64,
    /// The server's adversary class.
    pub adversary: AdversaryClass,
}

/// A neighbour count and threshold for a cohort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphParameters {
    /// Number of clients n.
    pub num_clients: u32,
    /// Neighbours per client k, not counting itself; n − 1 means the complete graph.
    pub neighbours: u32,
    /// Shamir threshold t among a client's neighbours and itself.
    pub threshold: u32,
}

impl GraphParameters {
    /// Whether these parameters use the complete graph (original SecAgg).
    pub fn is_complete(&self) -> bool {
        self.neighbours + 1 == self.num_clients
    }
}

/// The smallest k, and the smallest safe t for it, for `n` clients under `threat`.
pub fn find_graph_parameters(n: u32, threat: &ThreatModel) -> Result<GraphParameters, ParameterError> {
    let model = Model::new(n, threat)?;
    for k in (2..n.saturating_sub(1)).step_by(2) {
        if let Ok(range) = model.sparse_threshold_range(k) {
            return Ok(GraphParameters { num_clients: n, neighbours: k, threshold: range.0 });
        }
    }
    let (lowest, highest) = model.complete_threshold_range()?;
    debug_assert!(lowest <= highest);
    Ok(GraphParameters { num_clients: n, neighbours: n - 1, threshold: lowest })
}

/// The smallest threshold that keeps a client's two secrets from a server that tells
/// different holders different stories about who dropped (a split view), helped by
/// `corrupt` corrupt holders among the client's `k` neighbours: 2t ≥ k + 2 + corrupt.
pub fn split_view_threshold(k: u32, corrupt: u32) -> u32 {
    (k + 2 + corrupt).div_ceil(2)
}

/// The smallest threshold at which a client with `k` neighbours among `n` clients keeps
/// its secrets from `adversary` when a fraction `corrupt_fraction` of the clients is
/// corrupt: above the corrupt neighbours, and against a semi-malicious server above the
/// split view ([`split_view_threshold`]). Returns it with the corrupt neighbours assumed.
pub fn lowest_safe_threshold(
    n: u32,
    k: u32,
    corrupt_fraction: f64,
    adversary: AdversaryClass,
) -> Result<(u32, u32), ParameterError> {
    let corrupt = corrupt_neighbour_bound(n, k, corrupt_fraction)?;
    Ok((threshold_against(adversary, k, corrupt), corrupt))
}

fn threshold_against(adversary: AdversaryClass, k: u32, corrupt: u32) -> u32 {
    let lowest = match adversary {
        AdversaryClass::CuriousServer => corrupt + 1,
        AdversaryClass::SemiMaliciousServer => split_view_threshold(k, corrupt),
    };
    lowest.max(2)
}

/// How many of a client's `k` neighbours may be corrupt when a fraction
/// `corrupt_fraction` of the `n` clients is: the bound the hypergeometric tail exceeds
/// with probability below 2^−(σ+1)/n for a sparse graph, ⌊a·n⌋ for the complete graph.
pub fn corrupt_neighbour_bound(n: u32, k: u32, corrupt_fraction: f64) -> Result<u32, ParameterError> {
    let threat = ThreatModel { corrupt_fraction, dropout_fraction: 0.0, adversary: AdversaryClass::CuriousServer };
    let model = Model::new(n, &threat)?;
    if k + 1 >= n {
        return Ok(model.corrupt);
    }
    Ok(model.corrupt_neighbours(k))
}

/// The thresholds `(lowest, highest)` that are safe and correct for `n` clients with
/// `k` neighbours each under `threat`; the error says which condition rules out every t.
pub fn safe_thresholds(n: u32, k: u32, threat: &ThreatModel) -> Result<(u32, u32), ParameterError> {
    let model = Model::new(n, threat)?;
    if k + 1 == n {
        return model.complete_threshold_range();
    }
    if k < 2 || k >= n || !k.is_multiple_of(2) {
        return Err(ParameterError::InvalidDegree { neighbours: k, num_clients: n });
    }
    model.sparse_threshold_range(k)
}

/// Checks user-chosen `k` and `t` for `n` clients under `threat`; the error says which
/// condition fails.
pub fn check_graph_parameters(n: u32, k: u32, t: u32, threat: &ThreatModel) -> Result<(), ParameterError> {
    let (lowest, highest) = safe_thresholds(n, k, threat)?;
    if t < lowest {
        return Err(ParameterError::ThresholdTooLow { threshold: t, lowest });
    }
    if t > highest {
        return Err(ParameterError::ThresholdTooHigh { threshold: t, highest });
    }
    Ok(())
}

struct Model {
    n: u32,
    adversary: AdversaryClass,
    corrupt: u32,
    dropped: u32,
    survivors: u32,
}

impl Model {
    fn new(n: u32, threat: &ThreatModel) -> Result<Self, ParameterError> {
        if !(2..=MAX_FINDER_CLIENTS).contains(&n) {
            return Err(ParameterError::NumClients(n));
        }
        let (a, d) = (threat.corrupt_fraction, threat.dropout_fraction);
        for (what, value) in [("corrupt fraction", a), ("dropout fraction", d)] {
            if !(0.0..1.0).contains(&value) {
                return Err(ParameterError::InvalidFraction { what, value });
            }
        }
        let (load, bound) = match threat.adversary {
            AdversaryClass::CuriousServer => (a + d, "corrupt + dropout fractions must be at most 0.9"),
            AdversaryClass::SemiMaliciousServer => (a + 2.0 * d, "corrupt + 2 × dropout fractions must be at most 0.9"),
        };
        if load > 0.9 {
            return Err(ParameterError::Infeasible(bound));
        }
        let nf = f64::from(n);
        Ok(Self {
            n,
            adversary: threat.adversary,
            corrupt: ((a + SMALL) * nf).floor() as u32,
            dropped: ((d + SMALL) * nf).floor() as u32,
            survivors: ((1.0 - d - SMALL) * nf).ceil() as u32,
        })
    }

    /// The safe thresholds `(lowest, highest)` for a Harary graph of degree `k`.
    fn sparse_threshold_range(&self, k: u32) -> Result<(u32, u32), ParameterError> {
        let log_target = -(SECURITY_BITS + 1.0) * std::f64::consts::LN_2;
        if self.log_prob_disconnected(k) >= log_target {
            return Err(ParameterError::Disconnected { neighbours: k });
        }
        let per_client_correctness = CORRECTNESS_BITS.exp2().recip() / f64::from(self.n);
        let lowest = threshold_against(self.adversary, k, self.corrupt_neighbours(k));
        let t2 = Hypergeometric::new(self.n, self.survivors, k).smallest_cdf_at_least(per_client_correctness) as u32;
        if lowest > t2 {
            return Err(ParameterError::NoSafeThreshold { neighbours: k });
        }
        Ok((lowest, t2))
    }

    /// t1: the corrupt neighbours a client has with probability above 2^−(σ+1)/n.
    fn corrupt_neighbours(&self, k: u32) -> u32 {
        let per_client_security = (SECURITY_BITS + 1.0).exp2().recip() / f64::from(self.n);
        Hypergeometric::new(self.n, self.corrupt, k).smallest_upper_tail_below(per_client_security) as u32
    }

    /// The safe thresholds `(lowest, highest)` for the complete graph.
    fn complete_threshold_range(&self) -> Result<(u32, u32), ParameterError> {
        let lowest = threshold_against(self.adversary, self.n - 1, self.corrupt);
        let highest = self.n - self.dropped;
        if lowest > highest {
            return Err(ParameterError::NoSafeThreshold { neighbours: self.n - 1 });
        }
        Ok((lowest, highest))
    }

    /// Union bound (natural log) on the honest survivors' Harary graph splitting.
    fn log_prob_disconnected(&self, k: u32) -> f64 {
        let bad = self.corrupt + self.dropped;
        if k > bad {
            return f64::NEG_INFINITY;
        }
        let n = u64::from(self.n);
        let (k, bad) = (u64::from(k), u64::from(bad));
        let gap_pairs = (n as f64).ln() + ((n - k - 1) as f64).ln() - std::f64::consts::LN_2;
        gap_pairs + ln_factorial(bad) + ln_factorial(n - k) - ln_factorial(n) - ln_factorial(bad - k)
    }
}

/// The number of marked items among `draws` drawn without replacement from `population`
/// items of which `marked` are marked.
struct Hypergeometric {
    population: u64,
    marked: u64,
    draws: u64,
}

impl Hypergeometric {
    fn new(population: u32, marked: u32, draws: u32) -> Self {
        Self {
            population: population.into(),
            marked: u64::from(marked).min(population.into()),
            draws: u64::from(draws).min(population.into()),
        }
    }

    fn support(&self) -> (u64, u64) {
        let unmarked = self.population - self.marked;
        (self.draws.saturating_sub(unmarked), self.draws.min(self.marked))
    }

    fn ln_pmf(&self, x: u64) -> f64 {
        ln_binomial(self.marked, x) + ln_binomial(self.population - self.marked, self.draws - x)
            - ln_binomial(self.population, self.draws)
    }

    /// The smallest x with P[X > x] < p.
    fn smallest_upper_tail_below(&self, p: f64) -> f64 {
        let (lo, hi) = self.support();
        let mut tail = 0.0; // P[X > x], starting at x = hi.
        let mut x = hi;
        while x >= lo {
            let with_x = tail + self.ln_pmf(x).exp(); // P[X > x − 1]
            if with_x >= p {
                return x as f64;
            }
            tail = with_x;
            if x == 0 {
                break;
            }
            x -= 1;
        }
        lo as f64 - 1.0
    }

    /// The smallest x with P[X ≤ x] ≥ p.
    fn smallest_cdf_at_least(&self, p: f64) -> f64 {
        let (lo, hi) = self.support();
        let mut cdf = 0.0;
        for x in lo..=hi {
            cdf += self.ln_pmf(x).exp();
            if cdf >= p {
                return x as f64;
            }
        }
        hi as f64
    }
}

fn ln_binomial(n: u64, k: u64) -> f64 {
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

/// ln(n!): an exact sum below 32, the Stirling series (error below 10^−17) above.
fn ln_factorial(n: u64) -> f64 {
    if n < 32 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    let inv = x.recip();
    let inv2 = inv * inv;
    x * x.ln() - x
        + 0.5 * (std::f64::consts::TAU * x).ln()
        + inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 / 1680.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threat(a: f64, d: f64, adversary: AdversaryClass) -> ThreatModel {
        ThreatModel { corrupt_fraction: a, dropout_fraction: d, adversary }
    }

    use AdversaryClass::{CuriousServer as Curious, SemiMaliciousServer as SemiMalicious};

    /// (n, a, d, class, k, t) from Google's `graph_parameter_finder_test.cc`, where the
    /// degree must match and the threshold must not exceed the listed one.
    const GOOGLE_TABLE: &[(u32, f64, f64, AdversaryClass, u32, u32)] = &[
        (100, 0.45, 0.45, Curious, 92, 46),
        (1000, 0.45, 0.45, Curious, 822, 417),
        (10, 0.33, 0.33, Curious, 8, 4),
        (100, 0.33, 0.33, Curious, 68, 34),
        (1000, 0.33, 0.33, Curious, 286, 150),
        (10000, 0.33, 0.33, Curious, 422, 221),
        (100, 0.3, 0.3, SemiMalicious, 92, 62),
        // Google returns k = 4, t = 2 here: it checks t1 < t2 (0 < 1) and then raises t to
        // Shamir's minimum of 2, past t2 = 1, so P[fewer than t surviving neighbours] is
        // 7/210, far above 2^-20/n. privagg requires max(t1 + 1, 2) ≤ t2 and so needs k = 6.
        (10, 0.05, 0.33, Curious, 6, 2),
        (100, 0.05, 0.33, Curious, 28, 6),
        (1000, 0.05, 0.33, Curious, 72, 24),
        (10000, 0.05, 0.33, Curious, 86, 29),
        (100000, 0.05, 0.33, Curious, 96, 32),
        (10, 0.05, 0.33, SemiMalicious, 8, 5),
        (1000, 0.05, 0.33, SemiMalicious, 398, 223),
        (10, 0.33, 0.05, Curious, 4, 4),
        (100, 0.33, 0.05, Curious, 34, 29),
        (1000, 0.33, 0.05, Curious, 78, 60),
        (10000, 0.33, 0.05, Curious, 92, 70),
    ];

    /// Rows of the same table where Google's semi-malicious threshold is one short: with
    /// t1 odd it gives 2t = k + t1 + 1, so t1 corrupt neighbours complete a split view.
    /// (n, a, d, Google's k, Google's t, privagg's k, privagg's t.)
    const SPLIT_VIEW_FIXES: &[(u32, f64, f64, u32, u32, u32, u32)] = &[
        (1000, 0.3, 0.3, 872, 584, 876, 587),
        (100, 0.05, 0.33, 72, 39, 74, 41),
        (10, 0.33, 0.05, 4, 4, 6, 6),
        (100, 0.33, 0.05, 42, 37, 44, 39),
        (1000, 0.33, 0.05, 132, 109, 138, 114),
    ];

    #[test]
    fn googles_semi_malicious_thresholds_are_one_short_where_t1_is_odd() {
        for &(n, a, d, google_k, google_t, k, t) in SPLIT_VIEW_FIXES {
            let th = threat(a, d, SemiMalicious);
            let t1 = Model::new(n, &th).unwrap().corrupt_neighbours(google_k);
            assert_eq!(2 * google_t, google_k + t1 + 1, "n={n} a={a} d={d}: Google's t");
            let p = find_graph_parameters(n, &th).unwrap();
            assert_eq!((p.neighbours, p.threshold), (k, t), "n={n} a={a} d={d}");
            let t1 = Model::new(n, &th).unwrap().corrupt_neighbours(k);
            assert!(2 * t >= k + 2 + t1, "n={n} a={a} d={d}");
        }
    }

    #[test]
    fn agrees_with_googles_finder() {
        for &(n, a, d, class, k, t) in GOOGLE_TABLE {
            let p = find_graph_parameters(n, &threat(a, d, class)).unwrap();
            assert_eq!(p.neighbours, k, "degree for n={n} a={a} d={d} {class:?}");
            assert!(p.threshold <= t, "threshold {} > {t} for n={n} a={a} d={d} {class:?}", p.threshold);
            check_graph_parameters(n, p.neighbours, p.threshold, &threat(a, d, class)).unwrap();
        }
    }

    #[test]
    fn found_parameters_are_minimal() {
        let th = threat(0.05, 0.1, Curious);
        let p = find_graph_parameters(1000, &th).unwrap();
        assert!(!p.is_complete());
        // No smaller even degree admits any threshold.
        for k in (2..p.neighbours).step_by(2) {
            assert!((1..=k + 1).all(|t| check_graph_parameters(1000, k, t, &th).is_err()));
        }
        assert!(matches!(
            check_graph_parameters(1000, p.neighbours, p.threshold - 1, &th),
            Err(ParameterError::ThresholdTooLow { .. })
        ));
    }

    #[test]
    fn small_cohorts_use_the_complete_graph() {
        let p = find_graph_parameters(5, &threat(0.2, 0.2, Curious)).unwrap();
        assert!(p.is_complete());
        assert_eq!(p.threshold, 2); // > ⌈0.2·5⌉ = 1 and ≤ 5 − 1 survivors
        let p = find_graph_parameters(3, &threat(0.0, 0.0, Curious)).unwrap();
        assert_eq!((p.neighbours, p.threshold), (2, 2));
    }

    #[test]
    fn refusals_name_the_broken_condition() {
        assert!(matches!(find_graph_parameters(100, &threat(0.5, 0.5, Curious)), Err(ParameterError::Infeasible(_))));
        assert!(matches!(
            find_graph_parameters(100, &threat(0.3, 0.35, SemiMalicious)),
            Err(ParameterError::Infeasible(_))
        ));
        assert!(matches!(
            find_graph_parameters(100, &threat(-0.1, 0.0, Curious)),
            Err(ParameterError::InvalidFraction { .. })
        ));
        assert!(matches!(find_graph_parameters(1, &threat(0.0, 0.0, Curious)), Err(ParameterError::NumClients(1))));
        let th = threat(0.1, 0.1, Curious);
        assert!(matches!(check_graph_parameters(1000, 3, 2, &th), Err(ParameterError::InvalidDegree { .. })));
        assert!(matches!(check_graph_parameters(1000, 4, 3, &th), Err(ParameterError::Disconnected { .. })));
        let p = find_graph_parameters(1000, &th).unwrap();
        assert!(matches!(
            check_graph_parameters(1000, p.neighbours, p.neighbours + 1, &th),
            Err(ParameterError::ThresholdTooHigh { .. })
        ));
        // Complete graph with 10 clients, 30% corrupt: t must exceed 3.
        let th = threat(0.3, 0.1, Curious);
        assert!(matches!(
            check_graph_parameters(10, 9, 3, &th),
            Err(ParameterError::ThresholdTooLow { lowest: 4, .. })
        ));
        assert!(matches!(
            check_graph_parameters(10, 9, 10, &th),
            Err(ParameterError::ThresholdTooHigh { highest: 9, .. })
        ));
        check_graph_parameters(10, 9, 4, &th).unwrap();
    }

    #[test]
    fn ln_factorial_is_accurate() {
        let exact: f64 = (2..=40u64).map(|i| (i as f64).ln()).sum();
        assert!((ln_factorial(40) - exact).abs() < 1e-12);
        assert_eq!(ln_factorial(0), 0.0);
        assert_eq!(ln_factorial(1), 0.0);
    }

    #[test]
    fn hypergeometric_tails_sum_to_one() {
        let h = Hypergeometric::new(50, 20, 10);
        let (lo, hi) = h.support();
        let total: f64 = (lo..=hi).map(|x| h.ln_pmf(x).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        // P[X > 10] = 0 < p for any p > 0, so the smallest x is at most hi.
        assert!(h.smallest_upper_tail_below(1e-300) <= hi as f64);
        assert_eq!(h.smallest_cdf_at_least(1.0 - 1e-12), hi as f64);
    }
}

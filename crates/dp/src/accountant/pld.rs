//! Privacy-loss-distribution (PLD) accountant for the Poisson-subsampled Gaussian,
//! reproducing Google's `dp_accounting` 0.6.0 `pld.PLDAccountant` (connect-the-dots,
//! pessimistic estimate).
//!
//! **The PLD.** For a pair of output distributions `(P, Q)` the privacy loss is
//! `L = ln(P(o)/Q(o))`, `o ∼ P`, and the mechanism is `(ε, δ(ε))`-DP with
//! `δ(ε) = E[(1 − e^{ε−L})₊]` (plus the mass at `L = ∞`). Composition of mechanisms
//! convolves their PLDs (Meiser and Mohammadi, CCS 2018; Koskela, Jälkö, Honkela,
//! AISTATS 2020), so `T` rounds are the `T`-fold self-convolution, done here by FFT.
//!
//! **Discretisation.** Losses live on the grid `h·Z` (`h` =
//! `value_discretization_interval`). We use the pessimistic *connect-the-dots* PMF of
//! Doroshenko, Ghazi, Kamath, Kumar, Manurangsi ("Connect the Dots: Tighter Discrete
//! Approximations of Privacy Loss Distributions", PETS 2022, Alg. 1 with fixed gap):
//! evaluate the mechanism's exact `δ(ε)` at every grid point `ε_i = i·h` between the
//! losses of the `e^{−50}`-quantiles of the noise, and pick the unique PMF on those
//! points whose `δ` curve passes through all of them. Its hockey-stick curve dominates
//! the true one (their Thm. 4.3), composition preserves domination, so every ε read
//! off is a valid upper bound. Mass beyond the outermost grid points goes to `L = ∞`.
//!
//! **Adjacency.** Add/remove one client. For `q < 1` the two directions differ: removal
//! compares `P = (1−q)N(0, z²) + qN(−1, z²)` against `Q = N(0, z²)`, addition compares
//! `Q` against `P` (`dp_accounting`'s `AdjacencyType.REMOVE`/`ADD`). As there, we
//! compose each direction separately and report the maximum of the two ε (a worst case
//! over directions is needed because a neighbouring pair of datasets is one or the
//! other for all rounds). For `q = 1` the two coincide and `T` rounds are exactly one
//! Gaussian with multiplier `z/√T`, which `dp_accounting` uses without convolution; so
//! do we, and we read ε off that connect-the-dots PMF in closed form by bisection on the
//! grid ([`epsilon_gaussian`]), without materialising it.
//!
//! **Self-composition.** As `dp_accounting`'s `common.self_convolve`: the output window
//! is cut by Chernoff bounds on the composed PLD's MGF so that at most
//! [`TAIL_MASS_TRUNCATION`] lies outside, that mass is counted at `L = ∞`
//! (pessimistic), and the `T`-th power is taken pointwise in the Fourier domain. After a
//! composition both tails are truncated at `1e-15/2` each, the right one into `L = ∞`
//! and the left one onto the smallest kept loss (pessimistic), as `PLDAccountant` does.
//!
//! **Deviations from `dp_accounting`.** (1) Reading ε off a PMF, `dp_accounting` adds
//! `e^{−L}·p` in double precision, which underflows for losses above ~745; it then
//! returns the loss where the upper tail mass reaches δ, larger than the true value. We
//! carry that sum scaled by `e^{L}` and get the exact ε of the same PMF (e.g. `z = 0.8`,
//! `q = 1`, 1000 rounds, `δ = 1e-5`: 948.885 against `dp_accounting`'s 949.835; the
//! analytic Gaussian gives 948.885). (2) Our FFT uses power-of-two lengths, not
//! `next_fast_len`: only the `≤ 1e-15` mass outside the window folds differently.
//!
//! **Soundness of discrete mechanisms** ([`epsilon`] returns `None` for them).
//! * *Distributed discrete Gaussian.* The sum of `n` discrete Gaussian shares is not a
//!   discrete Gaussian, and a `d`-dimensional discrete Gaussian is not a continuous one.
//!   For a dominating pair with linear privacy loss, domination by the Gaussian PLD at
//!   the effective multiplier `z_eff = √n·s/Δ₂` is equivalent to the likelihood ratio
//!   `e^{⟨Y,v⟩/σ² − ‖v‖²/(2σ²)}`, `Y` the lattice noise, being smaller in convex order
//!   than its continuous counterpart (because `δ(ε) = E_Q[(Λ − e^ε)₊]`). Canonne,
//!   Kamath, Steinke (NeurIPS 2020) prove the discrete Gaussian has the continuous one's
//!   *zCDP/RDP* and give its exact one-dimensional `δ(ε)` (Thm. 7); they show
//!   numerically, not in general, that its `δ(ε)` is close to the continuous one.
//!   Kairouz, Liu, Steinke (ICML 2021) bound the distributed sum only in RDP/zCDP (the τ
//!   terms). We found no published result that the Gaussian PLD at `z_eff` dominates the
//!   `d`-dimensional distributed discrete Gaussian, so reporting it would be a heuristic,
//!   not a bound: the accountant returns `None` and callers use RDP (which at realistic
//!   share sizes, `τ` underflowing to 0, equals the Gaussian's RDP at `z_eff`).
//! * *Distributed Skellam.* Skellam noise is not Gaussian at all; Agarwal, Kairouz, Liu
//!   (NeurIPS 2021) give only an RDP bound, whose correction term exceeds the Gaussian's
//!   RDP, so the Gaussian PLD cannot be claimed to dominate it. `None`.
//!
//! Numerics: like `dp_accounting`, the bound holds up to floating-point round-off in
//! `δ` (of order `T·1e-16` from the FFT power), far below any δ of interest.

use super::DpEvent;
use super::fft::{self, Complex};
use super::special::{log_add, log_ndtr, ndtr};
use crate::error::{DpError, invalid};

/// `dp_accounting`'s default grid step `h` of the privacy loss (nats).
pub const DEFAULT_VALUE_DISCRETIZATION_INTERVAL: f64 = 1e-4;

/// Probability mass a composition may move to `L = ∞` by truncating tails (as
/// `dp_accounting`).
pub const TAIL_MASS_TRUNCATION: f64 = 1e-15;

/// Largest number of grid points a PMF or a convolution window may have (8 Mi points,
/// 128 MiB of FFT buffer); beyond it [`DpError::PldGridTooLarge`].
pub const MAX_GRID_LEN: u64 = 1 << 23;

/// `Φ⁻¹(e^{−50}/2)`: the noise is truncated at this many standard deviations, as
/// `dp_accounting`'s `log_mass_truncation_bound = −50` (scipy `norm.ppf`).
const TRUNCATION_QUANTILE: f64 = -9.745474864965935;

/// Largest `|i|` of a grid index we evaluate (integers exact in `f64`).
const MAX_GRID_INDEX: f64 = 4.0e15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Adjacency {
    Remove,
    Add,
}

/// The privacy loss of the (subsampled) Gaussian with sensitivity 1, std `sigma`,
/// sampling rate `q ∈ (0, 1]` (`dp_accounting`'s `GaussianPrivacyLoss`).
struct GaussianLoss {
    sigma: f64,
    q: f64,
    adjacency: Adjacency,
}

fn is_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

impl GaussianLoss {
    fn loss_remove(&self, x: f64) -> f64 {
        let l0 = (-0.5 - x) / (self.sigma * self.sigma);
        if self.q == 1.0 { l0 } else { log_add(self.q.ln() + l0, (-self.q).ln_1p()) }
    }

    fn loss(&self, x: f64) -> f64 {
        match self.adjacency {
            Adjacency::Remove => self.loss_remove(x),
            Adjacency::Add => -self.loss_remove(-x),
        }
    }

    /// The `x` with `loss(x) = eps`; callers keep `eps` inside the loss's range.
    fn inverse(&self, eps: f64) -> f64 {
        let (s2, q) = (self.sigma * self.sigma, self.q);
        let l1q = (-q).ln_1p();
        match self.adjacency {
            Adjacency::Remove if q == 1.0 => -0.5 - eps * s2,
            Adjacency::Remove if is_close(eps, l1q) => f64::INFINITY,
            // Unsubsampled loss ln((e^ε − (1−q))/q), without cancellation.
            Adjacency::Remove => -0.5 - (eps - q.ln() + (-(l1q - eps).exp()).ln_1p()) * s2,
            Adjacency::Add if q == 1.0 => 0.5 - eps * s2,
            Adjacency::Add if is_close(eps, -l1q) => f64::NEG_INFINITY,
            Adjacency::Add => 0.5 + (-eps - q.ln() + (-(l1q + eps).exp()).ln_1p()) * s2,
        }
    }

    /// CDF of the distribution the loss is measured under (`P`).
    fn upper_cdf(&self, x: f64) -> f64 {
        let s = self.sigma;
        match self.adjacency {
            Adjacency::Add => ndtr(x / s),
            Adjacency::Remove if self.q == 1.0 => ndtr((x + 1.0) / s),
            Adjacency::Remove => (1.0 - self.q) * ndtr(x / s) + self.q * ndtr((x + 1.0) / s),
        }
    }

    /// Log-CDF of the other distribution (`Q`).
    fn lower_log_cdf(&self, x: f64) -> f64 {
        let s = self.sigma;
        match self.adjacency {
            Adjacency::Remove => log_ndtr(x / s),
            Adjacency::Add if self.q == 1.0 => log_ndtr((x - 1.0) / s),
            Adjacency::Add => log_add((-self.q).ln_1p() + log_ndtr(x / s), self.q.ln() + log_ndtr((x - 1.0) / s)),
        }
    }

    /// The exact `δ(ε)` of one release (hockey-stick divergence of `P` from `Q`).
    fn delta(&self, eps: f64) -> f64 {
        if self.q < 1.0 {
            let l1q = (-self.q).ln_1p();
            match self.adjacency {
                Adjacency::Remove if eps <= l1q && !is_close(eps, l1q) => return (-eps.exp_m1()).clamp(0.0, 1.0),
                Adjacency::Add if eps >= -l1q && !is_close(eps, -l1q) => return 0.0,
                _ => {}
            }
        }
        let x = self.inverse(eps);
        (self.upper_cdf(x) - (eps + self.lower_log_cdf(x)).exp()).clamp(0.0, 1.0)
    }

    /// Grid indices `[⌊ε_lower/h⌋, ⌈ε_upper/h⌉]` spanning the losses of the truncated
    /// noise.
    fn grid(&self, h: f64) -> Result<(i64, i64), DpError> {
        let c = TRUNCATION_QUANTILE * self.sigma;
        let (lower_x, upper_x) = match self.adjacency {
            Adjacency::Add => (c, -c + 1.0),
            Adjacency::Remove => (c - 1.0, -c),
        };
        let (lo, hi) = ((self.loss(upper_x) / h).floor(), (self.loss(lower_x) / h).ceil());
        if !(lo.abs() <= MAX_GRID_INDEX && hi.abs() <= MAX_GRID_INDEX) {
            return Err(DpError::PldGridTooLarge { len: u64::MAX, max: MAX_GRID_LEN });
        }
        Ok((lo as i64, hi as i64))
    }

    /// The pessimistic connect-the-dots PMF (`create_pmf_pessimistic_connect_dots_fixed_gap`).
    fn pmf(&self, h: f64) -> Result<Pmf, DpError> {
        let (lo, hi) = self.grid(h)?;
        let len = (hi - lo) as u64 + 1;
        if len > MAX_GRID_LEN {
            return Err(DpError::PldGridTooLarge { len, max: MAX_GRID_LEN });
        }
        let mut deltas: Vec<f64> = (lo..=hi).map(|i| self.delta(i as f64 * h)).collect();
        // δ is non-increasing; remove round-off wiggles as dp_accounting does.
        for i in 1..deltas.len() {
            deltas[i] = deltas[i].min(deltas[i - 1]);
        }
        Ok(connect_dots(lo, &deltas, h))
    }
}

/// The PMF on `lo, lo+1, …` (times `h`) whose δ curve interpolates `deltas`.
fn connect_dots(lo: i64, d: &[f64], h: f64) -> Pmf {
    let n = d.len();
    let last = d[n - 1];
    if n == 1 {
        return Pmf { lower: lo, probs: vec![1.0 - last], infinity_mass: last };
    }
    let (em1, eh, em1n) = (h.exp_m1(), h.exp(), (-h).exp_m1());
    let mut probs = vec![0.0; n];
    probs[0] = 1.0 - d[0] + (d[1] - d[0]) / em1;
    for k in 1..n - 1 {
        probs[k] = ((d[k + 1] - d[k]) - (d[k] - d[k - 1]) * eh) / em1;
    }
    probs[n - 1] = (d[n - 1] - d[n - 2]) / em1n;
    for p in &mut probs {
        *p = p.max(0.0);
    }
    Pmf { lower: lo, probs, infinity_mass: last }
}

/// A dense PLD on the grid: `probs[k]` is the mass at loss `(lower + k)·h`.
#[derive(Clone, Debug, PartialEq)]
struct Pmf {
    lower: i64,
    probs: Vec<f64>,
    infinity_mass: f64,
}

fn checked_len(len: i64) -> Result<usize, DpError> {
    let l = u64::try_from(len).unwrap_or(u64::MAX);
    if l > MAX_GRID_LEN {
        return Err(DpError::PldGridTooLarge { len: l, max: MAX_GRID_LEN });
    }
    Ok(l as usize)
}

impl Pmf {
    /// `dp_accounting`'s `_truncate_tails`, pessimistic: drop up to `tail/2` from each
    /// end, the left mass onto the first kept loss, the right mass to `L = ∞`.
    fn truncate_tails(mut self, tail: f64) -> Self {
        let half = tail / 2.0;
        let prefix = |it: &mut dyn Iterator<Item = &f64>| {
            let mut s = 0.0;
            let mut count = 0usize;
            for &v in it {
                s += v;
                if s > half {
                    return count;
                }
                count += 1;
            }
            count
        };
        let n = self.probs.len();
        let left = prefix(&mut self.probs.iter());
        let right = (n - prefix(&mut self.probs.iter().rev())).max(left + 1).min(n);
        if left >= n {
            return self;
        }
        let left_mass: f64 = self.probs[..left].iter().sum();
        let right_mass: f64 = self.probs[right..].iter().sum();
        self.probs.truncate(right);
        self.probs.drain(..left);
        self.probs[0] += left_mass;
        self.lower += left as i64;
        self.infinity_mass += right_mass;
        self
    }

    /// Composition with another PMF on the same grid (FFT convolution), then tail
    /// truncation.
    fn compose(&self, other: &Pmf) -> Result<Pmf, DpError> {
        checked_len((self.probs.len() + other.probs.len()) as i64 - 1)?;
        let probs = fft::convolve(&self.probs, &other.probs);
        let infinity_mass = self.infinity_mass + other.infinity_mass - self.infinity_mass * other.infinity_mass;
        Ok(Pmf { lower: self.lower + other.lower, probs, infinity_mass }.truncate_tails(TAIL_MASS_TRUNCATION))
    }

    /// `t`-fold self-composition (`common.self_convolve`, `DensePLDPmf.self_compose`).
    fn self_compose(&self, t: u64) -> Result<Pmf, DpError> {
        if t == 1 {
            return Ok(self.clone());
        }
        let len = self.probs.len();
        let (lo, hi) = self.self_convolve_bounds(t, TAIL_MASS_TRUNCATION);
        let out_len = checked_len(hi - lo + 1)?;
        let n = out_len.max(len).next_power_of_two();
        let mut buf = vec![Complex::default(); n];
        for (c, &p) in buf.iter_mut().zip(&self.probs) {
            c.re = p;
        }
        fft::fft(&mut buf, false);
        for c in &mut buf {
            *c = c.powu(t);
        }
        fft::fft(&mut buf, true);
        // Cyclic result: the window [lo, hi] starts at index lo mod n.
        let start = lo.rem_euclid(n as i64) as usize;
        let probs: Vec<f64> = (0..out_len).map(|k| buf[(start + k) % n].re).collect();
        let lower = i64::try_from(t)
            .ok()
            .and_then(|t| self.lower.checked_mul(t))
            .and_then(|l| l.checked_add(lo))
            .ok_or(DpError::PldGridTooLarge { len: u64::MAX, max: MAX_GRID_LEN })?;
        let infinity_mass = TAIL_MASS_TRUNCATION - (t as f64 * (-self.infinity_mass).ln_1p()).exp_m1();
        Ok(Pmf { lower, probs, infinity_mass })
    }

    /// Index window of the `t`-fold convolution outside which at most `tail` mass lies
    /// (Chernoff bounds at 40 orders, `common.compute_self_convolve_bounds`).
    fn self_convolve_bounds(&self, t: u64, tail: f64) -> (i64, i64) {
        let len = self.probs.len();
        let tf = t as f64;
        let mut upper = (len as f64 - 1.0) * tf;
        let mut lower = 0.0f64;
        let log_tail = (2.0 / tail).ln();
        for k in (-20i32..=20).filter(|&k| k != 0) {
            let order = f64::from(k) / len as f64;
            let max = self
                .probs
                .iter()
                .enumerate()
                .filter(|&(_, &p)| p > 0.0)
                .map(|(i, _)| i as f64 * order)
                .fold(f64::NEG_INFINITY, f64::max);
            // Σ p_i e^{iλ − max}, the exponential by recurrence (one multiply per term;
            // relative drift ~len·ε, irrelevant to a window bound that is then rounded).
            let (step, mut w) = (order.exp(), (-max).exp());
            let mut sum = 0.0;
            for &p in &self.probs {
                sum += p * w;
                w *= step;
            }
            let bound = (tf * (sum.ln() + max) + log_tail) / order;
            if !bound.is_finite() {
                continue;
            }
            if order > 0.0 {
                upper = upper.min(bound.ceil());
            } else {
                lower = lower.max(bound.floor());
            }
        }
        (lower as i64, upper as i64)
    }

    /// The smallest ε with `δ(ε) ≤ delta` (`_get_epsilon_for_delta`), with the lower
    /// mass carried scaled by `e^{L}` so that it cannot underflow.
    fn epsilon_for_delta(&self, delta: f64, h: f64) -> f64 {
        if self.infinity_mass > delta {
            return f64::INFINITY;
        }
        let decay = (-h).exp();
        // upper = Σ p over losses above the current one (+ ∞ mass); m = e^{L}·Σ p e^{−L'}.
        let (mut upper, mut m) = (self.infinity_mass, 0.0f64);
        for (k, &p) in self.probs.iter().enumerate().rev() {
            let loss = (self.lower + k as i64) as f64 * h;
            m *= decay;
            if upper > delta && m > 0.0 && upper - delta >= m {
                return (loss + ((upper - delta) / m).ln()).max(0.0);
            }
            upper += p;
            m += p;
            if upper >= delta && m == 0.0 {
                return loss.max(0.0);
            }
        }
        if upper <= delta || m <= 0.0 {
            return 0.0;
        }
        (self.lower as f64 * h + ((upper - delta) / m).ln()).max(0.0)
    }
}

/// ε of one Gaussian release with multiplier `sigma` read off its connect-the-dots PMF
/// without building it: the PMF's `δ` equals the exact `δ` at grid points, so the
/// answer lies in the grid interval `[ε_j, ε_{j+1})` with `δ(ε_j) ≥ delta > δ(ε_{j+1})`,
/// found by bisection, and inside it `δ_PMF(ε) = δ_j + M − e^{ε−ε_j}M` with
/// `M = (δ_j − δ_{j+1})/(e^h − 1)`.
fn gaussian_grid_epsilon(sigma: f64, delta: f64, h: f64) -> Result<f64, DpError> {
    let loss = GaussianLoss { sigma, q: 1.0, adjacency: Adjacency::Remove };
    let (lo, hi) = loss.grid(h)?;
    let d = |i: i64| loss.delta(i as f64 * h);
    let top = d(hi);
    if top > delta {
        return Ok(f64::INFINITY);
    }
    if top == delta {
        return Ok((hi as f64 * h).max(0.0));
    }
    let d_lo = d(lo);
    if d_lo < delta {
        // Below the grid all mass counts: δ(ε) = 1 − e^{ε−ε_lo}(1 − δ_lo).
        return Ok((lo as f64 * h + ((1.0 - delta) / (1.0 - d_lo)).ln()).max(0.0));
    }
    let (mut a, mut b) = (lo, hi);
    while b - a > 1 {
        let mid = a + (b - a) / 2;
        if d(mid) >= delta {
            a = mid;
        } else {
            b = mid;
        }
    }
    let (da, db) = (d(a), d(a + 1));
    let m = (da - db) / h.exp_m1();
    // Round-off never yields NaN for valid σ; if it did, fail closed.
    if m.is_nan() {
        return Ok(f64::INFINITY);
    }
    // A flat step (equal δ at both ends) leaves ε at the grid point.
    if m <= 0.0 {
        return Ok((a as f64 * h).max(0.0));
    }
    Ok((a as f64 * h + ((da - delta) / m).ln_1p()).max(0.0))
}

fn check_interval(h: f64) -> Result<(), DpError> {
    if h.is_finite() && h > 0.0 {
        Ok(())
    } else {
        Err(invalid("value_discretization_interval", format!("must be finite and > 0, got {h}")))
    }
}

fn check_delta(delta: f64) -> Result<(), DpError> {
    if delta > 0.0 && delta < 1.0 { Ok(()) } else { Err(invalid("delta", format!("must be in (0, 1), got {delta}"))) }
}

fn check_rounds(rounds: u64) -> Result<(), DpError> {
    if rounds == 0 { Err(invalid("rounds", "must be ≥ 1")) } else { Ok(()) }
}

/// ε at `delta` after `rounds` rounds of the Poisson-subsampled Gaussian with noise
/// multiplier `noise_multiplier` (`z = σ/Δ₂`) and sampling rate `sampling_rate`, by the
/// connect-the-dots PLD with grid step `value_discretization_interval` (nats;
/// [`DEFAULT_VALUE_DISCRETIZATION_INTERVAL`] is `dp_accounting`'s). Same value as
/// `dp_accounting`'s `PLDAccountant` (see the module docs for the two deviations).
///
/// `z = 0` gives ∞ (for `q > 0`), `q = 0` gives 0, `z = ∞` gives 0. Rejects `z < 0` or
/// NaN, `q ∉ [0, 1]`, `rounds = 0`, `delta ∉ (0, 1)`, a non-positive or non-finite
/// interval ([`DpError::InvalidParameter`]), and grids beyond [`MAX_GRID_LEN`]
/// ([`DpError::PldGridTooLarge`]: use a coarser interval, which is still a valid bound).
pub fn epsilon_gaussian(
    noise_multiplier: f64,
    sampling_rate: f64,
    rounds: u64,
    delta: f64,
    value_discretization_interval: f64,
) -> Result<f64, DpError> {
    let event = DpEvent::Gaussian { noise_multiplier, sampling_rate };
    event.validate()?;
    let mut acc = PldAccountant::new(value_discretization_interval)?;
    check_rounds(rounds)?;
    acc.compose(&event, rounds)?;
    acc.epsilon(delta)
}

/// ε at `delta` after `rounds` occurrences of `event` by the PLD, where a PLD analysis is
/// sound: `Some` for [`DpEvent::Gaussian`], `None` for the distributed discrete Gaussian
/// and Skellam (see the module docs for why). Rejects what [`epsilon_gaussian`] rejects
/// and invalid events, whatever the mechanism.
pub fn epsilon(
    event: &DpEvent,
    rounds: u64,
    delta: f64,
    value_discretization_interval: f64,
) -> Result<Option<f64>, DpError> {
    event.validate()?;
    check_rounds(rounds)?;
    check_delta(delta)?;
    check_interval(value_discretization_interval)?;
    match *event {
        DpEvent::Gaussian { noise_multiplier, sampling_rate } => {
            epsilon_gaussian(noise_multiplier, sampling_rate, rounds, delta, value_discretization_interval).map(Some)
        }
        DpEvent::DistributedDiscreteGaussian { .. } | DpEvent::DistributedSkellam { .. } => Ok(None),
    }
}

/// A PLD accountant over add/remove adjacency, as `dp_accounting`'s `PLDAccountant`:
/// compose Gaussian events (any sampling rate), then read ε(δ).
///
/// Full-participation Gaussians are kept exactly (multipliers combine as
/// `z⁻² = Σ zᵢ⁻²`) and discretised only once, when ε is asked for; subsampled Gaussians
/// are discretised on composition, one PMF per adjacency direction.
#[derive(Clone, Debug)]
pub struct PldAccountant {
    h: f64,
    /// `Σ count/z²` of the full-participation Gaussians composed so far.
    gaussian_mu2: f64,
    /// Composed subsampled PMFs (remove, add), if any.
    subsampled: Option<(Pmf, Pmf)>,
    non_private: bool,
}

impl PldAccountant {
    /// An empty accountant with grid step `value_discretization_interval` (nats, finite
    /// and > 0; smaller is tighter and slower).
    pub fn new(value_discretization_interval: f64) -> Result<Self, DpError> {
        check_interval(value_discretization_interval)?;
        Ok(Self { h: value_discretization_interval, gaussian_mu2: 0.0, subsampled: None, non_private: false })
    }

    /// The grid step.
    pub fn value_discretization_interval(&self) -> f64 {
        self.h
    }

    /// Adds `count` occurrences of `event`. Rejects invalid events, and the distributed
    /// discrete Gaussian and Skellam with [`DpError::PldUnsupported`] (no sound PLD; see
    /// the module docs). Fails with [`DpError::PldGridTooLarge`] when the grid would be
    /// too fine for the mechanism.
    pub fn compose(&mut self, event: &DpEvent, count: u64) -> Result<(), DpError> {
        event.validate()?;
        let (z, q) = match *event {
            DpEvent::Gaussian { noise_multiplier, sampling_rate } => (noise_multiplier, sampling_rate),
            DpEvent::DistributedDiscreteGaussian { .. } => {
                return Err(DpError::PldUnsupported { mechanism: "distributed discrete Gaussian" });
            }
            DpEvent::DistributedSkellam { .. } => {
                return Err(DpError::PldUnsupported { mechanism: "distributed Skellam" });
            }
        };
        if count == 0 || q == 0.0 || z == f64::INFINITY {
            return Ok(());
        }
        if z == 0.0 {
            self.non_private = true;
            return Ok(());
        }
        if q == 1.0 {
            self.gaussian_mu2 += count as f64 / (z * z);
            return Ok(());
        }
        let pmf = |adjacency| -> Result<Pmf, DpError> {
            GaussianLoss { sigma: z, q, adjacency }
                .pmf(self.h)?
                .self_compose(count)
                .map(|p| p.truncate_tails(TAIL_MASS_TRUNCATION))
        };
        // The two directions are independent: build them on two threads.
        let (remove, add) = rayon::join(|| pmf(Adjacency::Remove), || pmf(Adjacency::Add));
        let (remove, add) = (remove?, add?);
        self.subsampled = Some(match self.subsampled.take() {
            None => (remove, add),
            Some((r, a)) => (r.compose(&remove)?, a.compose(&add)?),
        });
        Ok(())
    }

    /// The smallest ε such that everything composed is `(ε, delta)`-DP (upper bound).
    /// Rejects `delta ∉ (0, 1)`.
    pub fn epsilon(&self, delta: f64) -> Result<f64, DpError> {
        check_delta(delta)?;
        if self.non_private {
            return Ok(f64::INFINITY);
        }
        let sigma = if self.gaussian_mu2 > 0.0 { Some(1.0 / self.gaussian_mu2.sqrt()) } else { None };
        match (&self.subsampled, sigma) {
            (None, None) => Ok(0.0),
            (None, Some(sigma)) => gaussian_grid_epsilon(sigma, delta, self.h),
            (Some((r, a)), sigma) => {
                let (r, a) = match sigma {
                    None => (r.clone(), a.clone()),
                    Some(sigma) => {
                        // Symmetric: the same PMF serves both directions.
                        let g = GaussianLoss { sigma, q: 1.0, adjacency: Adjacency::Remove }.pmf(self.h)?;
                        (r.compose(&g)?, a.compose(&g)?)
                    }
                };
                Ok(r.epsilon_for_delta(delta, self.h).max(a.epsilon_for_delta(delta, self.h)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_quantile_is_the_e50_quantile() {
        let p = 0.5 * (-50.0f64).exp();
        assert!((ndtr(TRUNCATION_QUANTILE) / p - 1.0).abs() < 1e-9);
    }

    #[test]
    fn inverse_inverts_the_loss() {
        for adjacency in [Adjacency::Remove, Adjacency::Add] {
            for q in [1.0, 0.3, 0.01] {
                let l = GaussianLoss { sigma: 0.9, q, adjacency };
                for x in [-3.0, -0.5, 0.0, 0.7, 2.5] {
                    let y = l.inverse(l.loss(x));
                    assert!((x - y).abs() < 1e-8, "{adjacency:?} q={q} x={x}: {y}");
                }
            }
        }
    }

    #[test]
    fn connect_dots_pmf_reproduces_delta_at_grid_points() {
        let h = 1e-2;
        let l = GaussianLoss { sigma: 1.0, q: 0.2, adjacency: Adjacency::Remove };
        let pmf = l.pmf(h).unwrap_or_else(|e| panic!("{e}"));
        let total: f64 = pmf.probs.iter().sum::<f64>() + pmf.infinity_mass;
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        for i in [pmf.lower + 3, 0, 50, 120] {
            let eps = i as f64 * h;
            let from_pmf: f64 = pmf.infinity_mass
                + pmf
                    .probs
                    .iter()
                    .enumerate()
                    .map(|(k, &p)| ((pmf.lower + k as i64) as f64 * h, p))
                    .filter(|&(loss, _)| loss > eps)
                    .map(|(loss, p)| -p * (eps - loss).exp_m1())
                    .sum::<f64>();
            assert!((from_pmf - l.delta(eps)).abs() < 1e-12, "ε={eps}: {from_pmf} vs {}", l.delta(eps));
        }
    }

    #[test]
    fn closed_form_matches_the_scan_of_the_materialised_pmf() {
        for (sigma, delta) in [(1.0, 1e-5), (0.3, 1e-6), (4.0, 1e-3)] {
            let h = 1e-3;
            let pmf =
                GaussianLoss { sigma, q: 1.0, adjacency: Adjacency::Remove }.pmf(h).unwrap_or_else(|e| panic!("{e}"));
            let scan = pmf.epsilon_for_delta(delta, h);
            let closed = gaussian_grid_epsilon(sigma, delta, h).unwrap_or_else(|e| panic!("{e}"));
            assert!((scan - closed).abs() < 1e-9 * scan.max(1.0), "σ={sigma}: {scan} vs {closed}");
        }
    }
}

//! A table-driven exact sampler for the discrete Gaussian: rejection from a binned
//! envelope, sampled with an alias table of integer weights.
//!
//! Target: `P(y) ∝ f(|y|)` on the integers with `f(a) = e^{−a²/(2σ²)}`,
//! `σ² = num/den`. Draw `a = |y| ≥ 0` with weight `f(a)` and a fair sign, and start over
//! on `(0, −)`, so that 0 is not counted twice.
//!
//! **Envelope.** Cut `a ≥ 0` into `J` bins of `B = 2^β` integers (`B ≈ σ/16`) and a
//! tail `a ≥ A = J·B`. In integer units (`S` units per unit of `f`):
//! * bin `j` gets weight `W_j = ⌈f(jB)·B·S⌉`, spread evenly over its `B` points; as `f`
//!   decreases, each point's share `W_j/B ≥ f(a)·S`;
//! * the tail `a ≥ A` continues in bins of `B`: its `g`-th bin gets `c·r^g` per point,
//!   with `c ≥ f(A)·S` and `r = 1 − 2^{−t} ≥ e^{−(2J+1)B²/(2σ²)}` (the largest ratio
//!   `f((j+1)B)/f(jB)` for `j ≥ J`), so again `≥ f(a)·S`; total `c·B·2^t`;
//! * a *retry* entry takes the rest of `T = n·2^24` (`n` columns, a power of two), so
//!   the alias table has exact integer columns of `2^24`.
//!
//! **Sampling.** `log2 n` fair bits pick a column and 24 more its alias coin: entry `i`
//! comes out with probability exactly `w_i/T`. In bin `j`
//! the offset is `β` fair bits; the proposal `a` is accepted with probability
//! `f(a)·S·B/W_j = e^{−(a² − (jB)²)/(2σ²)} · θ_j`, `θ_j = f(jB)·B·S/W_j`, as two
//! independent exact Bernoulli draws: the first has a rational exponent (the
//! Canonne–Kamath–Steinke series of [`super::exact::bernoulli_exp`], ≈ one 64-bit draw,
//! since the exponent is ≈ 1/16 in the bulk), the second compares a uniform real with
//! `θ_j` ([`super::interval`]): the table stores the 64-bit verdicts, and only a
//! uniform that lands within a unit or two of `θ_j·2^64` (probability ≈ 2^−63) needs
//! more bits and a finer bound. A tail proposal draws its bin `g` geometric with ratio
//! `r` (fair bits) and an offset, and compares a uniform with `f(a)·S/(c·r^g)` the same
//! way (tail proposals come about once in 2^25 draws and are almost all rejected). Accepted
//! values have probability `∝ (proposal weight) × (acceptance) = f(a)·S`: exactly the
//! discrete Gaussian. No float decides anything (floats only pick `S` and `B`, which
//! change the speed, not the distribution).
//!
//! Cost: about two 64-bit draws and a few bits per sample, against a dozen draws and
//! several series evaluations for the Canonne–Kamath–Steinke rejection from the
//! discrete Laplace. The table has `J + 2 ≈ 170` entries whatever `σ`.

use num_bigint::BigUint;
use rand_core::CryptoRng;

use super::exact::{bernoulli_exp, bernoulli_ratio};
use super::interval::{ScaledExp, exp_neg_bounds, uniform_below_threshold};
use crate::error::{DpError, invalid};
use crate::rng::BitSource;

/// Bits of the alias coin; a column holds `2^COIN_BITS` weight units.
const COIN_BITS: u32 = 24;

/// Width of one alias column in weight units.
const COLUMN: u64 = 1 << COIN_BITS;

/// Knobs of the binned table. Every setting yields exactly the same distribution; they
/// only move work between the fast and the slow paths, which is what the tests use them
/// for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinnedTuning {
    /// The tail starts at `A ≈ tail_sigmas · σ` (default 10; `e^{−50}` of the mass lies
    /// beyond).
    pub tail_sigmas: u32,
    /// Bits of each 64-bit bin threshold the fast path may use (default 64). Fewer bits
    /// send more draws down the exact slow path.
    pub fast_bits: u32,
    /// Bins per `σ` (default 16): the bin width is the largest power of two
    /// `≤ σ / bins_per_sigma` (at least 1).
    pub bins_per_sigma: u32,
}

impl Default for BinnedTuning {
    fn default() -> Self {
        Self { tail_sigmas: 10, fast_bits: 64, bins_per_sigma: 16 }
    }
}

/// One entry of the proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Entry {
    /// Bin `j`: `a ∈ [jB, (j+1)B)`.
    Bin(u32),
    /// The geometric tail `a ≥ A`.
    Tail,
    /// Nothing: start over.
    Retry,
}

/// One alias column: keep `entry` if the coin is below `keep`, else take `alias`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Column {
    keep: u64,
    entry: Entry,
    alias: Entry,
}

/// The 64-bit verdicts on `θ_j` for bin `j`: a first word `v` of the uniform accepts if
/// `v < accept_below`, rejects if `v ≥ reject_from`, and needs more bits otherwise.
#[derive(Clone, Debug)]
struct BinThreshold {
    accept_below: u64,
    reject_from: u128,
    theta: ScaledExp,
}

/// Table sampler for the discrete Gaussian `N_Z(0, num/den)` (see the module comment).
#[derive(Clone, Debug)]
pub struct BinnedGaussian {
    columns: Vec<Column>,
    bins: Vec<BinThreshold>,
    /// `β`: the bin width is `2^β`.
    log2_width: u32,
    /// `σ² = num/den`.
    num: u64,
    den: u64,
    /// Tail start `A`, and the tail's envelope `c·r^g` in its bin `g`, `r = 1 − 2^{−t}`.
    tail_start: u64,
    tail_c: u64,
    tail_t: u32,
    /// Scale `S` of the weights.
    scale: u64,
}

/// The exponent `a²·den / (2·num)` of `f(a)`, as a fraction.
fn exponent(a: u64, num: u64, den: u64) -> (BigUint, BigUint) {
    (BigUint::from(a) * a * den, BigUint::from(num) * 2u32)
}

fn too_large() -> DpError {
    invalid("variance", "outside the range of the binned discrete Gaussian table")
}

impl BinnedGaussian {
    /// Builds the table for `σ² = num/den` with the default tuning.
    pub fn new(num: u64, den: u64) -> Result<Self, DpError> {
        Self::with_tuning(num, den, BinnedTuning::default())
    }

    /// Builds the table for `σ² = num/den`. Rejects zero parameters, tunings out of
    /// range (`tail_sigmas ≥ 1`, `fast_bits ∈ 1..=64`, `bins_per_sigma ≥ 1`) and variances
    /// whose integers would not fit the sampler's 128-bit arithmetic (`σ` above about
    /// 2^40, or a denominator that large); callers then use the Canonne–Kamath–Steinke
    /// sampler.
    pub fn with_tuning(num: u64, den: u64, tuning: BinnedTuning) -> Result<Self, DpError> {
        if num == 0 || den == 0 {
            return Err(invalid("variance", format!("{num}/{den} must be positive")));
        }
        if tuning.tail_sigmas == 0 || !(1..=64).contains(&tuning.fast_bits) || tuning.bins_per_sigma == 0 {
            return Err(invalid("tuning", format!("{tuning:?} out of range")));
        }
        let sigma_floor = (num / den).isqrt();
        let width = (sigma_floor / u64::from(tuning.bins_per_sigma)).max(1);
        let log2_width = width.ilog2();
        let width = 1u64 << log2_width;
        let reach = (sigma_floor + 1).checked_mul(u64::from(tuning.tail_sigmas)).ok_or_else(too_large)?;
        let bin_count = reach.div_ceil(width);
        let tail_start = bin_count.checked_mul(width).ok_or_else(too_large)?;
        // The in-bin exponents (a² − (jB)²)·den ≤ 2A·B·den must fit in u128.
        if tail_start >= 1 << 40
            || (u128::from(2 * tail_start) * u128::from(width)).checked_mul(u128::from(den)).is_none()
        {
            return Err(too_large());
        }
        let bins = usize::try_from(bin_count).map_err(|_| too_large())?;
        // Bins, tail and retry, padded to a power of two with empty retry entries.
        let entries = (bins + 2).next_power_of_two();
        let total = u128::from(u64::try_from(entries).map_err(|_| too_large())?) * u128::from(COLUMN);

        // Tail ratio r = 1 − 2^−t ≥ ρ = e^{−(2J+1)·B²·den/(2num)}: the smallest t with
        // 2^{64−t} ≤ 2^64 − ⌈ρ·2^64⌉.
        let rho_num = BigUint::from(2 * bin_count + 1) * width * width * den;
        let (_, rho_hi) = exp_neg_bounds(&rho_num, &(BigUint::from(num) * 2u32), 64);
        let gap = (BigUint::from(1u32) << 64u32) - rho_hi;
        let tail_t = (1..=62u32).find(|&t| BigUint::from(1u32) << (64 - t) <= gap).ok_or_else(too_large)?;

        // Pick S from a float estimate of Σ_j f(jB)·B, then check exactly that the
        // weights fit in T (shrinking S if rounding says otherwise).
        let sigma2 = num as f64 / den as f64;
        let estimate: f64 =
            (0..bin_count).map(|j| (-((j * width) as f64).powi(2) / (2.0 * sigma2)).exp() * width as f64).sum();
        let mut scale = ((total as f64) * (1.0 - 1.0 / 4096.0) / estimate).floor().min(2f64.powi(62)).max(1.0) as u64;
        loop {
            let (weights, tail_c) = Self::weights(num, den, width, bin_count, tail_start, scale)?;
            let tail_weight = (u128::from(tail_c) * u128::from(width)) << tail_t;
            let used = weights.iter().map(|&w| u128::from(w)).sum::<u128>() + tail_weight;
            if used <= total {
                let retry = total - used;
                let mut all: Vec<(Entry, u128)> =
                    weights.iter().enumerate().map(|(j, &w)| (Entry::Bin(j as u32), u128::from(w))).collect();
                all.push((Entry::Tail, tail_weight));
                all.push((Entry::Retry, retry));
                all.resize(entries, (Entry::Retry, 0));
                let columns = alias_columns(&all)?;
                let bins = weights
                    .iter()
                    .enumerate()
                    .map(|(j, &w)| bin_threshold(num, den, j as u64 * width, width, scale, w, tuning.fast_bits))
                    .collect();
                return Ok(Self { columns, bins, log2_width, num, den, tail_start, tail_c, tail_t, scale });
            }
            if scale == 1 {
                return Err(too_large());
            }
            scale -= scale / 64 + 1;
        }
    }

    /// Bin weights `⌈f(jB)·B·S⌉` and the tail constant `c = ⌈f(A)·S⌉`.
    fn weights(
        num: u64,
        den: u64,
        width: u64,
        bin_count: u64,
        tail_start: u64,
        scale: u64,
    ) -> Result<(Vec<u64>, u64), DpError> {
        let factor = BigUint::from(width) * scale;
        let prec = 64 + factor.bits();
        let ceil_weight = |a: u64, factor: &BigUint| -> Result<u64, DpError> {
            let (e_num, e_den) = exponent(a, num, den);
            let (_, hi) = exp_neg_bounds(&e_num, &e_den, prec);
            let product = hi * factor;
            let w = (&product >> prec) + u32::from(product.trailing_zeros().is_none_or(|z| z < prec));
            u64::try_from(w).map_err(|_| too_large())
        };
        let weights = (0..bin_count).map(|j| ceil_weight(j * width, &factor)).collect::<Result<Vec<u64>, _>>()?;
        let tail_c = ceil_weight(tail_start, &BigUint::from(scale))?.max(1);
        Ok((weights, tail_c))
    }

    /// One exact sample. Fails closed with [`DpError::SamplerOverflow`] only if the
    /// geometric tail runs past 2^32 bins or 2^62 (probability far below 2^−1000).
    pub fn sample<R: CryptoRng + ?Sized>(&self, rng: &mut R) -> Result<i64, DpError> {
        self.draw(&mut BitSource::unbuffered(rng))
    }

    /// Fills `out` with independent exact samples; faster than repeated
    /// [`sample`](Self::sample) since the random words are generated in bulk.
    pub fn fill<R: CryptoRng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) -> Result<(), DpError> {
        let mut bits = BitSource::new(rng);
        out.iter_mut().try_for_each(|x| {
            *x = self.draw(&mut bits)?;
            Ok(())
        })
    }

    fn draw<R: CryptoRng + ?Sized>(&self, bits: &mut BitSource<'_, R>) -> Result<i64, DpError> {
        let column_bits = self.columns.len().trailing_zeros();
        loop {
            // Column and coin from one draw of the reservoir when they fit in 32 bits.
            let (index, coin) = if column_bits + COIN_BITS <= 32 {
                let pick = bits.take(column_bits + COIN_BITS);
                (pick >> COIN_BITS, pick & (COLUMN - 1))
            } else {
                (bits.take(column_bits), bits.take(COIN_BITS))
            };
            let column = &self.columns[index as usize];
            let entry = if coin < column.keep { column.entry } else { column.alias };
            let (magnitude, negative) = match entry {
                Entry::Retry => continue,
                Entry::Bin(j) => {
                    // The offset (β bits), the first 8 bits of the two uniforms of the
                    // acceptance, and the sign: one read of the reservoir when they fit.
                    let spare = if self.log2_width + 17 <= 32 {
                        bits.take(self.log2_width + 17)
                    } else {
                        (bits.take(self.log2_width) << 17) | bits.take(17)
                    };
                    match self.try_bin(bits, j, spare) {
                        Some(a) => (a, spare & 1 == 1),
                        None => continue,
                    }
                }
                Entry::Tail => match self.try_tail(bits)? {
                    Some(a) => (a, bits.take(1) == 1),
                    None => continue,
                },
            };
            if negative && magnitude == 0 {
                continue;
            }
            // magnitude < 2^62 (bins end below 2^40, the tail checks).
            let value = magnitude as i64;
            return Ok(if negative { -value } else { value });
        }
    }

    /// A proposal from bin `j`, accepted or not. `spare` holds fresh bits: the offset
    /// above bit 17, then the first 8 bits of the uniform compared with `θ_j`, then the
    /// first 8 of the uniform of the exponent's Bernoulli (bit 0 is the caller's sign).
    fn try_bin<R: CryptoRng + ?Sized>(&self, bits: &mut BitSource<'_, R>, j: u32, spare: u64) -> Option<u64> {
        let start = u64::from(j) << self.log2_width;
        let offset = spare >> 17;
        let bin = &self.bins[j as usize];
        // U < θ_j, looking at 8 bits of U first: they settle it unless they reach the
        // first 8 bits of θ_j·2^64 (θ_j is close to 1: about once in 256).
        let prefix = (spare >> 9) & 0xff;
        let theta_ok = if prefix < bin.accept_below >> 56 {
            true
        } else {
            let first = (prefix << 56) | (bits.word() >> 8);
            if first < bin.accept_below {
                true
            } else if u128::from(first) >= bin.reject_from {
                false
            } else {
                uniform_below_threshold(bits, first, &bin.theta)
            }
        };
        if !theta_ok || offset == 0 {
            return theta_ok.then_some(start);
        }
        // e^{−(a² − start²)/(2σ²)} with a² − start² = offset·(2·start + offset).
        let rise = u128::from(offset) * u128::from(2 * start + offset) * u128::from(self.den);
        let accepted = bernoulli_exp_lazy(bits, (spare >> 1) & 0xff, rise, 2 * u128::from(self.num));
        accepted.then_some(start + offset)
    }

    /// A proposal from the geometric tail, accepted or not.
    fn try_tail<R: CryptoRng + ?Sized>(&self, bits: &mut BitSource<'_, R>) -> Result<Option<u64>, DpError> {
        // The tail bin g ~ Geometric: successes of Bernoulli(1 − 2^−t) (t fair bits, not
        // all zero) before the first failure; then a fair offset in the bin.
        let mask = (1u64 << self.tail_t) - 1;
        let mut g = 0u64;
        while bits.word() & mask != 0 {
            g += 1;
        }
        let offset = bits.take(self.log2_width);
        let a = g
            .checked_mul(1 << self.log2_width)
            .and_then(|x| x.checked_add(self.tail_start + offset))
            .filter(|&a| a < 1 << 62)
            .ok_or(DpError::SamplerOverflow)?;
        let g32 = u32::try_from(g).map_err(|_| DpError::SamplerOverflow)?;
        // θ = f(a)·S / (c·r^g) = e^{−a²den/(2num)} · S·2^{tg} / (c·(2^t − 1)^g) ≤ 1.
        let (exp_num, exp_den) = exponent(a, self.num, self.den);
        let theta = ScaledExp {
            exp_num,
            exp_den,
            factor_num: BigUint::from(self.scale) << (u64::from(self.tail_t) * g),
            factor_den: BigUint::from(self.tail_c) * BigUint::from((1u64 << self.tail_t) - 1).pow(g32),
        };
        let first = bits.word();
        Ok(uniform_below_threshold(bits, first, &theta).then_some(a))
    }
}

/// Bin `j`'s threshold `θ = f(start)·B·S/W` with its 64-bit verdicts (kept to the top
/// `fast_bits` bits: fewer bits widen the undecided window, never the verdicts' truth).
fn bin_threshold(num: u64, den: u64, start: u64, width: u64, scale: u64, weight: u64, fast_bits: u32) -> BinThreshold {
    let (exp_num, exp_den) = exponent(start, num, den);
    let theta =
        ScaledExp { exp_num, exp_den, factor_num: BigUint::from(width) * scale, factor_den: BigUint::from(weight) };
    let (lo, hi) = theta.bounds(64);
    let drop = 64 - fast_bits;
    // Rounding lo down and hi up to multiples of 2^drop keeps both verdicts sound.
    let lo = (lo >> drop) << drop;
    let hi = ((hi + ((BigUint::from(1u32) << drop) - 1u32)) >> drop) << drop;
    let accept_below = u64::try_from(lo).unwrap_or(u64::MAX);
    let reject_from = u128::try_from(hi).unwrap_or(u128::MAX);
    BinThreshold { accept_below, reject_from, theta }
}

/// Vose's alias method on exact integer weights summing to `n·COLUMN`: every column is
/// filled to exactly `COLUMN` by one entry and at most one alias.
fn alias_columns(weights: &[(Entry, u128)]) -> Result<Vec<Column>, DpError> {
    let column = u128::from(COLUMN);
    let mut left: Vec<u128> = weights.iter().map(|&(_, w)| w).collect();
    let mut columns: Vec<Column> = weights.iter().map(|&(e, _)| Column { keep: COLUMN, entry: e, alias: e }).collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..weights.len()).partition(|&i| left[i] < column);
    while let Some(s) = small.pop() {
        let Some(&l) = large.last() else {
            return Err(invalid("weights", "do not fill the alias columns exactly"));
        };
        columns[s].keep = u64::try_from(left[s]).map_err(|_| too_large())?;
        columns[s].alias = weights[l].0;
        left[l] -= column - left[s];
        if left[l] < column {
            large.pop();
            small.push(l);
        }
    }
    // The rest hold exactly COLUMN each (the total is n·COLUMN), so they keep themselves.
    if large.iter().any(|&l| left[l] != column) {
        return Err(invalid("weights", "do not fill the alias columns exactly"));
    }
    Ok(columns)
}

/// Bernoulli(`e^{−num/den}`), exact. For exponents up to 1 it runs the
/// Canonne–Kamath–Steinke series (continue while Bernoulli(γ/k), return whether the
/// count is odd) with the first Bernoulli(γ) decided by the 8 fresh bits `first8` when
/// they suffice; larger exponents go to [`bernoulli_exp`] (and `first8` goes unused).
fn bernoulli_exp_lazy<R: CryptoRng + ?Sized>(bits: &mut BitSource<'_, R>, first8: u64, num: u128, den: u128) -> bool {
    if num > den || den >= 1 << 100 {
        return bernoulli_exp(bits, num, den);
    }
    if !bernoulli_ratio_lazy(bits, first8, num, den) {
        return true; // the series stopped at k = 1
    }
    // Bernoulli(γ) succeeded: finish the series from k = 1 exactly as `bernoulli_exp`.
    let mut k: u64 = 1;
    while super::exact::uniform_below(bits, k + 1) == 0 && bernoulli_ratio(bits, num, den) {
        k += 1;
    }
    k.is_multiple_of(2)
}

/// Bernoulli(`num/den`) for `num ≤ den < 2^100`, exact: the first 8 bits `b` (fresh,
/// `< 2^8`) of a uniform `U` decide `U < num/den` unless `num/den` lies in
/// `[b/2^8, (b+1)/2^8)`; then `U = (b + V)/2^8` with `V` uniform, and `U < num/den` iff
/// `V < (num·2^8 − b·den)/den`, itself an exact rational Bernoulli.
fn bernoulli_ratio_lazy<R: CryptoRng + ?Sized>(bits: &mut BitSource<'_, R>, first8: u64, num: u128, den: u128) -> bool {
    let b = u128::from(first8);
    let target = num << 8;
    if (b + 1) * den <= target {
        return true;
    }
    if b * den >= target {
        return false;
    }
    bernoulli_ratio(bits, target - b * den, den)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Each entry's probability mass, read back from the alias columns.
    fn masses(columns: &[Column]) -> HashMap<Entry, u128> {
        let mut mass = HashMap::new();
        for c in columns {
            *mass.entry(c.entry).or_insert(0) += u128::from(c.keep);
            *mass.entry(c.alias).or_insert(0) += u128::from(COLUMN - c.keep);
        }
        mass.retain(|_, m| *m > 0);
        mass
    }

    fn summed(weights: &[(Entry, u128)]) -> HashMap<Entry, u128> {
        let mut mass = HashMap::new();
        for &(e, w) in weights {
            *mass.entry(e).or_insert(0) += w;
        }
        mass.retain(|_, m| *m > 0);
        mass
    }

    #[test]
    fn the_alias_columns_hold_exactly_the_weights() {
        // Uneven weights, one entry larger than several columns, padding entries of 0.
        let column = u128::from(COLUMN);
        let weights = vec![
            (Entry::Bin(0), 3 * column + 5),
            (Entry::Bin(1), column - 7),
            (Entry::Bin(2), 1),
            (Entry::Tail, column / 3),
            (Entry::Retry, 0),
            (Entry::Retry, 0),
            (Entry::Retry, 0),
            (Entry::Retry, 0),
        ];
        let rest = 8 * column - weights.iter().map(|w| w.1).sum::<u128>();
        let mut weights = weights;
        weights[4].1 = rest;
        assert_eq!(masses(&alias_columns(&weights).unwrap()), summed(&weights));
        // Weights that do not fill the columns are refused, not silently rescaled.
        weights[4].1 -= 1;
        assert!(alias_columns(&weights).is_err());
    }

    #[test]
    fn every_table_holds_its_bins_tail_and_retry_exactly_and_bins_bound_the_density() {
        for (num, den) in [(1u64, 1u64), (7, 3), (170_336_716, 1), (1_000_000, 1), (4_000_000_000_000, 7)] {
            let table = BinnedGaussian::new(num, den).unwrap();
            let width = 1u64 << table.log2_width;
            let (weights, tail_c) =
                BinnedGaussian::weights(num, den, width, table.bins.len() as u64, table.tail_start, table.scale)
                    .unwrap();
            let mass = masses(&table.columns);
            let total = u128::from(COLUMN) * table.columns.len() as u128;
            assert_eq!(mass.values().sum::<u128>(), total);
            for (j, &w) in weights.iter().enumerate() {
                assert_eq!(
                    mass.get(&Entry::Bin(j as u32)).copied().unwrap_or(0),
                    u128::from(w),
                    "σ² = {num}/{den}, bin {j}"
                );
                // w_j = ⌈f(jB)·B·S⌉: at least the density, at most one above it.
                let exact = (-((j as u64 * width) as f64).powi(2) * den as f64 / (2.0 * num as f64)).exp()
                    * width as f64
                    * table.scale as f64;
                assert!(w as f64 >= exact * (1.0 - 1e-9) && (w as f64) <= exact * (1.0 + 1e-9) + 1.0, "bin {j}");
            }
            let tail = (u128::from(tail_c) * u128::from(width)) << table.tail_t;
            assert_eq!(mass.get(&Entry::Tail).copied().unwrap_or(0), tail, "σ² = {num}/{den}: tail");
            assert_eq!(table.tail_c, tail_c);
        }
    }
}

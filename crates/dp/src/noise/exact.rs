//! Exact building blocks on uniform random integers (Canonne, Kamath, Steinke 2020, §5).
//!
//! Everything here uses only uniform draws from the RNG and integer comparisons:
//! * uniform integers in `[0, n)` by rejection (Lemire's method for 64 bits, masking
//!   for 128 bits), so there is no modulo bias;
//! * Bernoulli(p/q) as `U < p` with `U` uniform in `[0, q)`;
//! * Bernoulli(exp(−γ)) for rational `γ = p/q ∈ [0, 1]`: set `K = 1`, draw
//!   Bernoulli(γ/K) until the first failure, incrementing `K` after each success, and
//!   return whether the final `K` is odd (the alternating series of `e^−γ`). For `γ > 1`,
//!   require `⌊γ⌋` successes of Bernoulli(e^−1) and one of Bernoulli(e^−(γ−⌊γ⌋)).
//!   Bernoulli(γ/K) is drawn as Bernoulli(p/q) ∧ Bernoulli(1/K), so no product `qK`
//!   can overflow.

use rand_core::CryptoRng;

/// Uniform integer in `[0, n)`; `n` must be positive (returns 0 for `n = 0`).
pub fn uniform_below<R: CryptoRng + ?Sized>(rng: &mut R, n: u64) -> u64 {
    // [0, 1) holds only 0: no draw needed (the alternating series asks for it often).
    if n <= 1 {
        return 0;
    }
    // Lemire, "Fast random integer generation in an interval", 2019. Ranges that fit in
    // 32 bits use 32-bit draws: half the keystream per draw.
    if let Ok(n32) = u32::try_from(n) {
        let mut m = u64::from(rng.next_u32()) * u64::from(n32);
        if (m as u32) < n32 {
            let threshold = n32.wrapping_neg() % n32;
            while (m as u32) < threshold {
                m = u64::from(rng.next_u32()) * u64::from(n32);
            }
        }
        return m >> 32;
    }
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
        }
    }
    (m >> 64) as u64
}

/// Uniform integer in `[0, n)` for 128-bit `n`; `n` must be positive (returns 0 for 0).
pub fn uniform_below_u128<R: CryptoRng + ?Sized>(rng: &mut R, n: u128) -> u128 {
    if let Ok(small) = u64::try_from(n) {
        return u128::from(uniform_below(rng, small));
    }
    let mask = u128::MAX >> (n - 1).leading_zeros();
    loop {
        let v = ((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())) & mask;
        if v < n {
            return v;
        }
    }
}

/// Bernoulli(`num/den`) for `num ≤ den`, `den > 0` (true with probability `num/den`).
pub fn bernoulli_ratio<R: CryptoRng + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    // Certain outcomes need no draw.
    if num >= den {
        return true;
    }
    num != 0 && uniform_below_u128(rng, den) < num
}

/// Bernoulli(exp(−num/den)) for `num ≤ den` (exponent in `[0, 1]`).
fn bernoulli_exp_unit<R: CryptoRng + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    let mut k: u64 = 1;
    while bernoulli_ratio(rng, num, den) && uniform_below(rng, k) == 0 {
        k += 1;
    }
    k % 2 == 1
}

/// Bernoulli(exp(−1)).
pub fn bernoulli_exp_minus_one<R: CryptoRng + ?Sized>(rng: &mut R) -> bool {
    bernoulli_exp_unit(rng, 1, 1)
}

/// Bernoulli(exp(−num/den)) for any `num ≥ 0`, `den > 0` (returns true for `den = 0`
/// only if `num = 0`; callers never pass `den = 0`).
pub fn bernoulli_exp<R: CryptoRng + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    if den == 0 {
        return num == 0;
    }
    if num <= den {
        return bernoulli_exp_unit(rng, num, den); // the common case: no 128-bit division
    }
    let whole = num / den;
    let mut i = 0u128;
    while i < whole {
        if !bernoulli_exp_minus_one(rng) {
            return false;
        }
        i += 1;
    }
    bernoulli_exp_unit(rng, num % den, den)
}

/// Number of successes of Bernoulli(num/den) before the first failure (a geometric
/// variable with ratio `num/den < 1`).
pub(crate) fn geometric_ratio<R: CryptoRng + ?Sized>(rng: &mut R, num: u128, den: u128) -> u64 {
    let mut g = 0u64;
    while bernoulli_ratio(rng, num, den) {
        g += 1;
    }
    g
}

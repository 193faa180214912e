//! A small iterative radix-2 FFT, for the PLD accountant's convolutions.
//!
//! Written here rather than taken from `rustfft` because the accountant needs one
//! operation (cyclic convolution of real sequences, length a power of two) and a
//! dependency would bring four crates (`rustfft`, `strength_reduce`, `transpose`,
//! `primal-check`) into a crate whose supply chain is part of the privacy argument.
//! Accuracy is what matters: twiddles are computed directly with `sin`/`cos` (no
//! recurrence), so the round-off is `O(ε·log n)` as for any Cooley–Tukey FFT; the unit
//! tests compare with a direct DFT and a direct convolution.

/// A complex number, just enough for the FFT.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Complex {
    pub re: f64,
    pub im: f64,
}

impl Complex {
    pub(crate) fn new(re: f64, im: f64) -> Self {
        Self { re, im }
    }

    fn mul(self, o: Self) -> Self {
        Self::new(self.re * o.re - self.im * o.im, self.re * o.im + self.im * o.re)
    }

    /// `self^t` by binary exponentiation (`O(log t)` multiplications, about ten times
    /// cheaper than the polar form). As for numpy's complex power, the relative error
    /// grows like `t·ε`, inherent to raising a rounded number to a large power.
    pub(crate) fn powu(self, mut t: u64) -> Self {
        let (mut base, mut acc) = (self, Self::new(1.0, 0.0));
        while t > 0 {
            if t & 1 == 1 {
                acc = acc.mul(base);
            }
            base = base.mul(base);
            t >>= 1;
        }
        acc
    }
}

/// In-place FFT of `buf` (length a power of two). `inverse` computes the inverse
/// transform including the `1/n` factor.
pub(crate) fn fft(buf: &mut [Complex], inverse: bool) {
    let n = buf.len();
    if n <= 1 {
        return;
    }
    debug_assert!(n.is_power_of_two());
    // Bit-reversal permutation.
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if i < j {
            buf.swap(i, j);
        }
    }
    // Twiddles e^{∓2πik/n}, k < n/2, each computed directly.
    let sign = if inverse { 1.0 } else { -1.0 };
    let twiddles: Vec<Complex> = (0..n / 2)
        .map(|k| {
            let a = sign * 2.0 * std::f64::consts::PI * k as f64 / n as f64;
            Complex::new(a.cos(), a.sin())
        })
        .collect();
    let mut len = 2;
    while len <= n {
        let half = len / 2;
        let stride = n / len;
        for start in (0..n).step_by(len) {
            for k in 0..half {
                let w = twiddles[k * stride];
                let a = buf[start + k];
                let b = buf[start + k + half].mul(w);
                buf[start + k] = Complex::new(a.re + b.re, a.im + b.im);
                buf[start + k + half] = Complex::new(a.re - b.re, a.im - b.im);
            }
        }
        len *= 2;
    }
    if inverse {
        let scale = 1.0 / n as f64;
        for c in buf.iter_mut() {
            c.re *= scale;
            c.im *= scale;
        }
    }
}

/// The linear convolution of two real sequences (length `a.len() + b.len() − 1`).
pub(crate) fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let out_len = a.len() + b.len() - 1;
    let n = out_len.next_power_of_two();
    let load = |x: &[f64]| {
        let mut v = vec![Complex::default(); n];
        for (c, &r) in v.iter_mut().zip(x) {
            c.re = r;
        }
        fft(&mut v, false);
        v
    };
    let mut fa = load(a);
    let fb = load(b);
    for (x, y) in fa.iter_mut().zip(&fb) {
        *x = x.mul(*y);
    }
    fft(&mut fa, true);
    fa.truncate(out_len);
    fa.into_iter().map(|c| c.re).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_matches_direct_dft() {
        let n = 64;
        let x: Vec<Complex> = (0..n).map(|i| Complex::new((i as f64 * 0.37).sin(), (i as f64).cos() * 0.5)).collect();
        let mut y = x.clone();
        fft(&mut y, false);
        for (k, yk) in y.iter().enumerate() {
            let mut s = Complex::default();
            for (j, xj) in x.iter().enumerate() {
                let a = -2.0 * std::f64::consts::PI * (j * k) as f64 / n as f64;
                let w = Complex::new(a.cos(), a.sin());
                let t = xj.mul(w);
                s = Complex::new(s.re + t.re, s.im + t.im);
            }
            assert!((s.re - yk.re).abs() < 1e-12 && (s.im - yk.im).abs() < 1e-12);
        }
        fft(&mut y, true);
        for (a, b) in x.iter().zip(&y) {
            assert!((a.re - b.re).abs() < 1e-14 && (a.im - b.im).abs() < 1e-14);
        }
    }

    #[test]
    fn convolve_matches_direct() {
        let a: Vec<f64> = (0..37).map(|i| 1.0 / (1.0 + i as f64)).collect();
        let b: Vec<f64> = (0..11).map(|i| (i as f64 * 0.3).exp()).collect();
        let c = convolve(&a, &b);
        assert_eq!(c.len(), 47);
        for (k, ck) in c.iter().enumerate() {
            let direct: f64 = (0..a.len()).filter(|&i| k >= i && k - i < b.len()).map(|i| a[i] * b[k - i]).sum();
            assert!((ck - direct).abs() < 1e-12 * direct.abs().max(1.0), "{k}: {ck} vs {direct}");
        }
    }

    #[test]
    fn powu_is_repeated_multiplication() {
        let z = Complex::new(0.6, -0.7);
        let mut p = Complex::new(1.0, 0.0);
        for _ in 0..13 {
            p = p.mul(z);
        }
        let q = z.powu(13);
        assert!((p.re - q.re).abs() < 1e-14 && (p.im - q.im).abs() < 1e-14);
        assert_eq!(Complex::default().powu(5), Complex::default());
    }
}

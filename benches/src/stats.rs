//! Median, minimum and maximum of repeated measurements: the machine is shared, so
//! every table quotes medians with their range, never a single run.

use serde::Serialize;

/// Median and range of a sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// The median (mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` if empty or if any value is NaN.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        Some(Self { median, min: sorted[0], max: sorted[n - 1] })
    }

    /// `median (min–max)` with `digits` decimals after scaling by `scale`.
    pub fn format(&self, scale: f64, digits: usize) -> String {
        if self.min == self.max {
            return format!("{:.digits$}", self.median * scale);
        }
        format!("{:.digits$} ({:.digits$}–{:.digits$})", self.median * scale, self.min * scale, self.max * scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(s.format(1000.0, 0), "2000 (1000–3000)");
        assert_eq!(Spread::of(&[5.0]).unwrap().format(1.0, 1), "5.0");
    }

    #[test]
    fn empty_or_nan_has_no_spread() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[1.0, f64::NAN]), None);
    }
}

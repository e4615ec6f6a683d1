//! Median and spread of repeated measurements.

use serde::Serialize;

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    /// `None` for no values.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        Some(Self {
            median,
            min: v[0],
            max: v[v.len() - 1],
            runs: v.len(),
        })
    }

    /// `median (min–max, n)` with `decimals` places; a single run is shown as `value (1)`.
    pub fn show(&self, decimals: usize) -> String {
        if self.runs == 1 {
            format!("{:.decimals$} (1)", self.median)
        } else {
            format!(
                "{:.decimals$} ({:.decimals$}–{:.decimals$}, {})",
                self.median, self.min, self.max, self.runs
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        let s = Spread::of([3.0, 1.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        let s = Spread::of([4.0, 1.0, 2.0, 3.0]).expect("values");
        assert_eq!(s.median, 2.5);
        assert!(Spread::of([]).is_none());
        assert_eq!(
            Spread::of([1.0, 2.0, 4.0]).expect("values").show(1),
            "2.0 (1.0–4.0, 3)"
        );
    }
}

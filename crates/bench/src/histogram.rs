//! Latency histograms: HDR histograms in microseconds, 1 µs to 1 hour at 3
//! significant digits, summarised as p50/p90/p99/p99.9/p99.99/max.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency recorded exactly; longer ones are recorded as this.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

/// Percentiles of a histogram, in microseconds (each the highest value
/// equivalent to the true one at 3 significant digits).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest value.
    pub max: u64,
    /// Mean, for reference (percentiles are the figures to compare).
    pub mean: f64,
    /// How many latencies were recorded.
    pub count: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> LatencyHistogram {
        // Bounds 1..=LATENCY_US_MAX with 3 digits are valid constants, so
        // this cannot fail.
        let histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
            .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"));
        LatencyHistogram { histogram }
    }

    /// Records one latency; 0 counts as 1 µs and anything above
    /// [`LATENCY_US_MAX`] as that.
    pub fn record_us(&mut self, latency_us: u64) {
        let clamped = latency_us.clamp(1, LATENCY_US_MAX);
        self.histogram.saturating_record(clamped);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The percentiles, or `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.histogram.is_empty() {
            return None;
        }
        let at = |quantile: f64| self.histogram.value_at_quantile(quantile);
        Some(LatencySummary {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            p9999: at(0.9999),
            max: self.histogram.max(),
            mean: self.histogram.mean(),
            count: self.histogram.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_ten_thousand() {
        let mut histogram = LatencyHistogram::new();
        for latency_us in 1..=10_000 {
            histogram.record_us(latency_us);
        }
        let summary = histogram.summary().expect("values were recorded");
        assert_eq!(summary.count, 10_000);
        // 3 significant digits: within 0.1 % of the exact rank.
        let close =
            |value: u64, exact: u64| value.abs_diff(exact) as f64 <= exact as f64 * 0.001 + 1.0;
        assert!(close(summary.p50, 5_000), "{summary:?}");
        assert!(close(summary.p90, 9_000), "{summary:?}");
        assert!(close(summary.p99, 9_900), "{summary:?}");
        assert!(close(summary.p999, 9_990), "{summary:?}");
        assert!(close(summary.p9999, 9_999), "{summary:?}");
        assert!(close(summary.max, 10_000), "{summary:?}");
        assert!((summary.mean - 5_000.5).abs() < 10.0, "{summary:?}");
    }

    #[test]
    fn one_outlier_shows_only_in_the_tail() {
        let mut histogram = LatencyHistogram::new();
        for _ in 0..9_999 {
            histogram.record_us(100);
        }
        histogram.record_us(1_000_000);
        let summary = histogram.summary().expect("values were recorded");
        assert_eq!(summary.p50, 100);
        assert_eq!(summary.p999, 100);
        assert!(summary.p9999 <= 100 || summary.p9999 >= 999_000);
        assert!(summary.max >= 999_000 && summary.max <= 1_001_000);
    }

    #[test]
    fn merge_adds_counts_and_empty_has_no_summary() {
        let mut left = LatencyHistogram::new();
        assert_eq!(left.summary(), None);
        let mut right = LatencyHistogram::new();
        left.record_us(0);
        right.record_us(LATENCY_US_MAX * 2);
        left.merge(&right);
        let summary = left.summary().expect("values were recorded");
        assert_eq!(summary.count, 2);
        assert_eq!(summary.p50, 1);
        assert!(summary.max >= LATENCY_US_MAX * 999 / 1000);
    }
}

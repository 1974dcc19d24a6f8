//! Latency recording: an HDR histogram at microsecond resolution, one per
//! client task, merged at the end of a run.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency the histogram tells apart; anything slower is
/// recorded as this value (and still counted).
const HIGHEST_TRACKABLE_MICROS: u64 = 3_600_000_000;
/// Three significant digits: 1 µs apart at 1 ms, 1 ms apart at 1 s.
const SIGNIFICANT_DIGITS: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("cannot create latency histogram: {0}")]
    Create(#[from] hdrhistogram::CreationError),
    #[error("cannot merge latency histograms: {0}")]
    Merge(#[from] hdrhistogram::AdditionError),
}

#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    micros: Histogram<u64>,
}

impl LatencyHistogram {
    pub fn new() -> Result<LatencyHistogram, HistogramError> {
        let micros = Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_MICROS, SIGNIFICANT_DIGITS)?;
        Ok(LatencyHistogram { micros })
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.micros.saturating_record(micros);
    }

    pub fn merge(&mut self, other: &LatencyHistogram) -> Result<(), HistogramError> {
        self.micros.add(&other.micros)?;
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.micros.len()
    }

    /// The latency at `quantile` (0.0..=1.0) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        micros_to_ms(self.micros.value_at_quantile(quantile))
    }

    pub fn max_ms(&self) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        micros_to_ms(self.micros.max())
    }

    pub fn mean_ms(&self) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        self.micros.mean() / 1000.0
    }
}

fn micros_to_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut histogram = LatencyHistogram::new().unwrap();
        for millis in 1..=100 {
            histogram.record(Duration::from_millis(millis));
        }
        assert_eq!(histogram.count(), 100);
        // Within the 3-significant-digit resolution of the histogram.
        assert!((histogram.quantile_ms(0.50) - 50.0).abs() < 0.1);
        assert!((histogram.quantile_ms(0.95) - 95.0).abs() < 0.1);
        assert!((histogram.quantile_ms(0.99) - 99.0).abs() < 0.1);
        assert!((histogram.max_ms() - 100.0).abs() < 0.1);
        assert!((histogram.mean_ms() - 50.5).abs() < 0.1);
    }

    #[test]
    fn microsecond_resolution_below_one_millisecond() {
        let mut histogram = LatencyHistogram::new().unwrap();
        histogram.record(Duration::from_micros(250));
        assert_eq!(histogram.max_ms(), 0.25);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_max() {
        let mut first = LatencyHistogram::new().unwrap();
        let mut second = LatencyHistogram::new().unwrap();
        first.record(Duration::from_millis(2));
        second.record(Duration::from_millis(7));
        second.record(Duration::from_millis(3));
        first.merge(&second).unwrap();
        assert_eq!(first.count(), 3);
        assert!((first.max_ms() - 7.0).abs() < 0.01);
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let histogram = LatencyHistogram::new().unwrap();
        assert_eq!(histogram.count(), 0);
        assert_eq!(histogram.quantile_ms(0.99), 0.0);
        assert_eq!(histogram.max_ms(), 0.0);
        assert_eq!(histogram.mean_ms(), 0.0);
    }

    #[test]
    fn latencies_beyond_the_range_saturate_but_count() {
        let mut histogram = LatencyHistogram::new().unwrap();
        histogram.record(Duration::from_secs(10_000));
        assert_eq!(histogram.count(), 1);
        assert!(histogram.max_ms() >= 3_600_000.0 * 0.999);
    }
}

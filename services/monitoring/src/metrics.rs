//! Per-version metrics of an endpoint over a window: counts, error rate,
//! nearest-rank latency percentiles and token sums, of the answers callers
//! got (shadow answers are left out). The database does the
//! counting, summing and sorting; a window's rows never come into memory.

#[derive(Debug, Clone, PartialEq)]
pub struct VersionMetrics {
    pub served_model: String,
    pub served_version: u32,
    pub request_count: u64,
    pub error_count: u64,
    pub error_rate: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_p99_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// The 0-based position, in ascending order, of the nearest-rank
/// `percent`-th percentile of `count` values: rank ceil(percent / 100 *
/// count), 1-based. `None` for no values.
pub fn nearest_rank_offset(count: u64, percent: u64) -> Option<u64> {
    if count == 0 {
        return None;
    }
    // Integer arithmetic, so 95% of 100 values is exactly rank 95.
    let rank = (percent * count).div_ceil(100).max(1);
    Some(rank - 1)
}

pub fn error_rate(error_count: u64, request_count: u64) -> f64 {
    if request_count == 0 {
        return 0.0;
    }
    error_count as f64 / request_count as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        assert_eq!(nearest_rank_offset(100, 50), Some(49));
        assert_eq!(nearest_rank_offset(100, 95), Some(94));
        assert_eq!(nearest_rank_offset(100, 99), Some(98));
        assert_eq!(nearest_rank_offset(100, 100), Some(99));
    }

    #[test]
    fn nearest_rank_on_small_sets() {
        assert_eq!(nearest_rank_offset(0, 50), None);
        assert_eq!(nearest_rank_offset(1, 50), Some(0));
        assert_eq!(nearest_rank_offset(1, 99), Some(0));
        // Ten values: p50 is rank 5, p95 and p99 are rank 10.
        assert_eq!(nearest_rank_offset(10, 50), Some(4));
        assert_eq!(nearest_rank_offset(10, 95), Some(9));
        assert_eq!(nearest_rank_offset(10, 99), Some(9));
    }

    #[test]
    fn error_rates() {
        assert_eq!(error_rate(1, 4), 0.25);
        assert_eq!(error_rate(0, 0), 0.0);
        assert_eq!(error_rate(3, 3), 1.0);
    }
}

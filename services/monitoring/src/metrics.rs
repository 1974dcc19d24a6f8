//! Per-version metrics of an endpoint over a window: counts, error rate,
//! nearest-rank latency percentiles and token sums.

use std::collections::BTreeMap;

/// What one request contributes to the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSample {
    pub served_model: String,
    pub served_version: u32,
    pub is_error: bool,
    pub latency_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

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

#[derive(Default)]
struct VersionAccumulator {
    latencies: Vec<f64>,
    error_count: u64,
    input_tokens: u64,
    output_tokens: u64,
}

/// Groups the samples by served (model, version), ordered by model then
/// version. CPU-bound on large windows: call it off the async threads.
pub fn summarize(samples: Vec<MetricsSample>) -> Vec<VersionMetrics> {
    let mut groups: BTreeMap<(String, u32), VersionAccumulator> = BTreeMap::new();
    for sample in samples {
        let group = groups
            .entry((sample.served_model, sample.served_version))
            .or_default();
        group.latencies.push(sample.latency_ms);
        if sample.is_error {
            group.error_count += 1;
        }
        group.input_tokens = group.input_tokens.saturating_add(sample.input_tokens);
        group.output_tokens = group.output_tokens.saturating_add(sample.output_tokens);
    }
    let mut summaries = Vec::with_capacity(groups.len());
    for ((served_model, served_version), mut group) in groups {
        group.latencies.sort_by(f64::total_cmp);
        let request_count = group.latencies.len() as u64;
        let error_rate = if request_count == 0 {
            0.0
        } else {
            group.error_count as f64 / request_count as f64
        };
        summaries.push(VersionMetrics {
            served_model,
            served_version,
            request_count,
            error_count: group.error_count,
            error_rate,
            latency_p50_ms: nearest_rank(&group.latencies, 50),
            latency_p95_ms: nearest_rank(&group.latencies, 95),
            latency_p99_ms: nearest_rank(&group.latencies, 99),
            input_tokens: group.input_tokens,
            output_tokens: group.output_tokens,
        });
    }
    summaries
}

/// The nearest-rank percentile of ascending `sorted`: the value at rank
/// ceil(percent / 100 * n), 1-based; 0 for no values.
pub fn nearest_rank(sorted: &[f64], percent: u64) -> f64 {
    let count = sorted.len() as u64;
    // Integer arithmetic, so 95% of 100 values is exactly rank 95.
    let rank = (percent * count).div_ceil(100).max(1);
    let index = usize::try_from(rank - 1).unwrap_or(usize::MAX);
    sorted.get(index).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(model: &str, version: u32, latency_ms: f64, is_error: bool) -> MetricsSample {
        MetricsSample {
            served_model: model.to_string(),
            served_version: version,
            is_error,
            latency_ms,
            input_tokens: 10,
            output_tokens: 3,
        }
    }

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 50), 50.0);
        assert_eq!(nearest_rank(&values, 95), 95.0);
        assert_eq!(nearest_rank(&values, 99), 99.0);
        assert_eq!(nearest_rank(&values, 100), 100.0);
    }

    #[test]
    fn nearest_rank_on_small_sets() {
        assert_eq!(nearest_rank(&[], 50), 0.0);
        assert_eq!(nearest_rank(&[7.5], 50), 7.5);
        assert_eq!(nearest_rank(&[7.5], 99), 7.5);
        // Ten values: p50 is rank 5, p95 and p99 are rank 10.
        let values: Vec<f64> = (1..=10).map(|v| f64::from(v) * 10.0).collect();
        assert_eq!(nearest_rank(&values, 50), 50.0);
        assert_eq!(nearest_rank(&values, 95), 100.0);
        assert_eq!(nearest_rank(&values, 99), 100.0);
    }

    #[test]
    fn summarize_groups_by_model_then_version() {
        let mut samples = Vec::new();
        // Shuffled latencies: the summary sorts them.
        for latency in [30.0, 10.0, 20.0, 40.0] {
            samples.push(sample("zeta", 1, latency, latency == 40.0));
        }
        samples.push(sample("alpha", 2, 5.0, false));
        samples.push(sample("alpha", 10, 6.0, true));
        let summaries = summarize(samples);
        let keys: Vec<(&str, u32)> = summaries
            .iter()
            .map(|summary| (summary.served_model.as_str(), summary.served_version))
            .collect();
        assert_eq!(keys, vec![("alpha", 2), ("alpha", 10), ("zeta", 1)]);
        let zeta = &summaries[2];
        assert_eq!(zeta.request_count, 4);
        assert_eq!(zeta.error_count, 1);
        assert_eq!(zeta.error_rate, 0.25);
        assert_eq!(zeta.latency_p50_ms, 20.0);
        assert_eq!(zeta.latency_p95_ms, 40.0);
        assert_eq!(zeta.input_tokens, 40);
        assert_eq!(zeta.output_tokens, 12);
        assert_eq!(summaries[1].error_rate, 1.0);
    }
}

//! serving's own series on `/metrics`, beside the per-call ones every
//! service has: queries by outcome, latency, tokens and cost per endpoint
//! and served version, and serving's own overhead per query (its total
//! time minus the time spent waiting on retrieval and generation, as
//! TensorZero's `inference_latency_overhead`).

use std::collections::BTreeMap;
use std::time::Duration;

use keel_core::metrics::{MetricsError, ServiceMetrics};
use prometheus::{CounterVec, Histogram, HistogramVec, IntCounterVec, Opts};
use serde::{Deserialize, Serialize};

/// What a generator costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_million_tokens: f64,
    pub output_per_million_tokens: f64,
}

impl ModelPrice {
    pub fn cost_usd(&self, input_tokens: u32, output_tokens: u32) -> f64 {
        (f64::from(input_tokens) * self.input_per_million_tokens
            + f64::from(output_tokens) * self.output_per_million_tokens)
            / 1_000_000.0
    }
}

/// One finished query, as the metrics see it.
pub struct QueryObservation<'a> {
    pub endpoint: &'a str,
    /// Empty when the query failed before its route resolved.
    pub served_model: &'a str,
    pub served_version: u32,
    /// The generator that answered; its price sets the cost.
    pub generator: &'a str,
    pub succeeded: bool,
    pub total: Duration,
    /// Waiting on the vector index, and on generation (a worker, the model).
    pub waited_on_dependencies: Duration,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// What a generation by `generator` costs by `prices`; 0 without a price.
pub fn cost_usd(
    prices: &BTreeMap<String, ModelPrice>,
    generator: &str,
    input_tokens: u32,
    output_tokens: u32,
) -> f64 {
    prices
        .get(generator)
        .map_or(0.0, |price| price.cost_usd(input_tokens, output_tokens))
}

pub struct QueryMetrics {
    queries: IntCounterVec,
    latency: HistogramVec,
    tokens: IntCounterVec,
    cost_usd: CounterVec,
    overhead: Histogram,
    prices: BTreeMap<String, ModelPrice>,
}

impl QueryMetrics {
    pub fn new(
        registry: &ServiceMetrics,
        prices: BTreeMap<String, ModelPrice>,
    ) -> Result<QueryMetrics, MetricsError> {
        let version_labels = ["endpoint", "model", "version"];
        let cost_usd = CounterVec::new(
            Opts::new(
                "keel_serving_cost_usd_total",
                "What the answers cost, by the prices of [serving.prices].",
            ),
            &version_labels,
        )?;
        registry.register(Box::new(cost_usd.clone()))?;
        Ok(QueryMetrics {
            queries: registry.counter_vec(
                "keel_serving_queries_total",
                "Queries answered, by endpoint and outcome.",
                &["endpoint", "status"],
            )?,
            latency: registry.latency_vec(
                "keel_serving_query_seconds",
                "Query latency, by endpoint and served version.",
                &version_labels,
            )?,
            tokens: registry.counter_vec(
                "keel_serving_tokens_total",
                "Tokens read and written by the generators, by endpoint and served version.",
                &["endpoint", "model", "version", "direction"],
            )?,
            cost_usd,
            overhead: registry.latency(
                "keel_serving_overhead_seconds",
                "serving's own time per query: total minus waiting on retrieval and generation.",
            )?,
            prices,
        })
    }

    pub fn observe(&self, query: &QueryObservation<'_>) {
        let status = if query.succeeded { "ok" } else { "error" };
        self.queries
            .with_label_values(&[query.endpoint, status])
            .inc();
        let overhead = query.total.saturating_sub(query.waited_on_dependencies);
        self.overhead.observe(overhead.as_secs_f64());
        if query.served_model.is_empty() {
            return;
        }
        let version = query.served_version.to_string();
        let labels = [query.endpoint, query.served_model, version.as_str()];
        self.latency
            .with_label_values(&labels)
            .observe(query.total.as_secs_f64());
        let input = [
            query.endpoint,
            query.served_model,
            version.as_str(),
            "input",
        ];
        let output = [
            query.endpoint,
            query.served_model,
            version.as_str(),
            "output",
        ];
        self.tokens
            .with_label_values(&input)
            .inc_by(u64::from(query.input_tokens));
        self.tokens
            .with_label_values(&output)
            .inc_by(u64::from(query.output_tokens));
        if let Some(price) = self.prices.get(query.generator) {
            self.cost_usd
                .with_label_values(&labels)
                .inc_by(price.cost_usd(query.input_tokens, query.output_tokens));
        }
    }

    /// What an answer by `generator` costs; 0 when it has no price.
    pub fn cost_usd(&self, generator: &str, input_tokens: u32, output_tokens: u32) -> f64 {
        cost_usd(&self.prices, generator, input_tokens, output_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(succeeded: bool) -> QueryObservation<'static> {
        QueryObservation {
            endpoint: "support",
            served_model: "bot",
            served_version: 2,
            generator: "gpt4o",
            succeeded,
            total: Duration::from_millis(300),
            waited_on_dependencies: Duration::from_millis(290),
            input_tokens: 1000,
            output_tokens: 500,
        }
    }

    #[test]
    fn a_query_counts_its_tokens_cost_and_overhead() {
        let registry = ServiceMetrics::new("serving");
        let prices = BTreeMap::from([(
            "gpt4o".to_string(),
            ModelPrice {
                input_per_million_tokens: 0.15,
                output_per_million_tokens: 0.60,
            },
        )]);
        let metrics = QueryMetrics::new(&registry, prices).unwrap();
        metrics.observe(&observation(true));
        metrics.observe(&observation(false));
        let text = registry.render();
        let labels = "endpoint=\"support\",model=\"bot\",version=\"2\"";
        assert!(
            text.contains(&format!(
                "keel_serving_tokens_total{{direction=\"input\",{labels},service=\"serving\"}} 2000\n"
            )),
            "{text}"
        );
        // 2 × (1000 × 0.15 + 500 × 0.60) / 1e6 = 0.0009
        assert!(
            text.contains(&format!(
                "keel_serving_cost_usd_total{{{labels},service=\"serving\"}} 0.0009\n"
            )),
            "{text}"
        );
        assert!(text.contains(
            "keel_serving_queries_total{endpoint=\"support\",status=\"error\",service=\"serving\"} 1\n"
        ));
        // 10 ms of overhead each time: both in the 0.01 bucket.
        assert!(
            text.contains(
                "keel_serving_overhead_seconds_bucket{service=\"serving\",le=\"0.01\"} 2\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_query_that_never_resolved_counts_only_its_outcome() {
        let registry = ServiceMetrics::new("serving");
        let metrics = QueryMetrics::new(&registry, BTreeMap::new()).unwrap();
        let mut unresolved = observation(false);
        unresolved.served_model = "";
        metrics.observe(&unresolved);
        let text = registry.render();
        assert!(!text.contains("keel_serving_tokens_total{"), "{text}");
        assert!(text.contains("status=\"error\",service=\"serving\"} 1\n"));
    }
}

//! The vector index's own series on `/metrics`, beside the per-call ones
//! every service has.

use keel_core::metrics::{MetricsError, ServiceMetrics};
use prometheus::IntCounter;

pub struct Metrics {
    pub searches: IntCounter,
    pub points_upserted: IntCounter,
    pub points_deleted: IntCounter,
    pub compactions: IntCounter,
}

impl Metrics {
    pub fn new(registry: &ServiceMetrics) -> Result<Metrics, MetricsError> {
        Ok(Metrics {
            searches: registry.counter("keel_vector_index_searches_total", "Searches served.")?,
            points_upserted: registry.counter(
                "keel_vector_index_points_upserted_total",
                "Points inserted or replaced.",
            )?,
            points_deleted: registry
                .counter("keel_vector_index_points_deleted_total", "Points deleted.")?,
            compactions: registry.counter(
                "keel_vector_index_compactions_total",
                "Graphs rebuilt without their tombstones and swapped in.",
            )?,
        })
    }
}

//! The feedback service's own series on `/metrics`, beside the per-call
//! ones every service has.

use keel_core::metrics::{MetricsError, ServiceMetrics};
use prometheus::IntCounter;

pub struct Counters {
    pub submitted: IntCounter,
    pub replayed: IntCounter,
    pub exported_lines: IntCounter,
    pub joined_late: IntCounter,
}

impl Counters {
    pub fn new(registry: &ServiceMetrics) -> Result<Counters, MetricsError> {
        Ok(Counters {
            submitted: registry
                .counter("keel_feedback_submitted_total", "Feedback records stored.")?,
            replayed: registry.counter(
                "keel_feedback_idempotent_replays_total",
                "Submissions answered with the record of an earlier one with the same idempotency key.",
            )?,
            exported_lines: registry
                .counter("keel_feedback_dataset_lines_total", "Dataset lines exported.")?,
            joined_late: registry.counter(
                "keel_feedback_joined_late_total",
                "Feedback joined with an inference record that arrived after it.",
            )?,
        })
    }
}

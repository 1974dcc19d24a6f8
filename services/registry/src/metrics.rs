//! The registry's own series on `/metrics`, beside the per-call ones every
//! service has.

use keel_core::metrics::{MetricsError, ServiceMetrics};
use prometheus::{IntCounter, IntGauge};

pub struct Metrics {
    pub models_created: IntCounter,
    pub versions_created: IntCounter,
    pub alias_moves: IntCounter,
    /// Open `WatchAliases` streams.
    pub watchers: IntGauge,
    pub watchers_lagged: IntCounter,
}

impl Metrics {
    pub fn new(registry: &ServiceMetrics) -> Result<Metrics, MetricsError> {
        Ok(Metrics {
            models_created: registry
                .counter("keel_registry_models_created_total", "Models created.")?,
            versions_created: registry
                .counter("keel_registry_versions_created_total", "Versions created.")?,
            alias_moves: registry.counter(
                "keel_registry_alias_moves_total",
                "Aliases set, moved or deleted.",
            )?,
            watchers: registry.gauge("keel_registry_watchers", "Open WatchAliases streams.")?,
            watchers_lagged: registry.counter(
                "keel_registry_watchers_lagged_total",
                "Watch streams ended because their subscriber fell behind.",
            )?,
        })
    }

    /// Series in a registry of their own, for tests of the domain.
    #[cfg(test)]
    pub fn unregistered() -> Metrics {
        Metrics::new(&ServiceMetrics::new("registry")).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_render_with_the_service_label() {
        let registry = ServiceMetrics::new("registry");
        let metrics = Metrics::new(&registry).unwrap();
        metrics.alias_moves.inc();
        metrics.watchers.inc();
        let text = registry.render();
        assert!(
            text.contains("keel_registry_alias_moves_total{service=\"registry\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("keel_registry_watchers{service=\"registry\"} 1\n"));
    }
}

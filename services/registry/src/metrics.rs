//! Counters rendered on the admin `/metrics` endpoint (Prometheus text).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub models_created: AtomicU64,
    pub versions_created: AtomicU64,
    pub alias_moves: AtomicU64,
    pub watchers: AtomicI64,
    pub watchers_lagged: AtomicU64,
}

impl Metrics {
    pub fn increment(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let counters = [
            (
                "keel_registry_models_created_total",
                "counter",
                self.models_created.load(Ordering::Relaxed) as i64,
            ),
            (
                "keel_registry_versions_created_total",
                "counter",
                self.versions_created.load(Ordering::Relaxed) as i64,
            ),
            (
                "keel_registry_alias_moves_total",
                "counter",
                self.alias_moves.load(Ordering::Relaxed) as i64,
            ),
            (
                "keel_registry_watchers",
                "gauge",
                self.watchers.load(Ordering::Relaxed),
            ),
            (
                "keel_registry_watchers_lagged_total",
                "counter",
                self.watchers_lagged.load(Ordering::Relaxed) as i64,
            ),
        ];
        let mut text = String::new();
        for (name, kind, value) in counters {
            text.push_str(&format!("# TYPE {name} {kind}\n{name} {value}\n"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        Metrics::increment(&metrics.alias_moves);
        let text = metrics.render();
        assert!(text.contains(
            "# TYPE keel_registry_alias_moves_total counter\nkeel_registry_alias_moves_total 1\n"
        ));
    }
}

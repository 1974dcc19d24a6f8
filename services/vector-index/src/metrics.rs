//! Counters for `/metrics`, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub searches: AtomicU64,
    pub points_upserted: AtomicU64,
    pub points_deleted: AtomicU64,
}

impl Metrics {
    /// Renders the counters plus the current collection and point counts.
    pub fn render(&self, collections: usize, points: u64) -> String {
        let mut text = String::new();
        let counters = [
            (
                "keel_vector_index_searches_total",
                "Searches served.",
                self.searches.load(Ordering::Relaxed),
            ),
            (
                "keel_vector_index_points_upserted_total",
                "Points inserted or replaced.",
                self.points_upserted.load(Ordering::Relaxed),
            ),
            (
                "keel_vector_index_points_deleted_total",
                "Points deleted.",
                self.points_deleted.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                text,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let gauges = [
            (
                "keel_vector_index_collections",
                "Collections.",
                collections as u64,
            ),
            (
                "keel_vector_index_points",
                "Live points in all collections.",
                points,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                text,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let metrics = Metrics::default();
        metrics.searches.fetch_add(3, Ordering::Relaxed);
        let text = metrics.render(2, 10);
        assert!(text.contains("keel_vector_index_searches_total 3\n"));
        assert!(
            text.contains("# TYPE keel_vector_index_points gauge\nkeel_vector_index_points 10\n")
        );
        assert!(text.contains("keel_vector_index_collections 2\n"));
    }
}

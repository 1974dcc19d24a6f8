//! A service's metrics, in its own Prometheus registry: under `keel up`
//! five services share a process, and each admin port answers `/metrics`
//! for its own service only. Every series carries `service="<name>"`.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use prometheus::Error as MetricsError;

/// Latency buckets in seconds, from a cache hit to a long generation.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Clone)]
pub struct ServiceMetrics {
    service: &'static str,
    registry: Registry,
}

impl ServiceMetrics {
    pub fn new(service: &'static str) -> ServiceMetrics {
        let labels = HashMap::from([("service".to_string(), service.to_string())]);
        // Infallible with a valid label name, which "service" is.
        let registry = Registry::new_custom(None, Some(labels)).unwrap_or_default();
        ServiceMetrics { service, registry }
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    pub fn register(&self, collector: Box<dyn Collector>) -> Result<(), MetricsError> {
        self.registry.register(collector)
    }

    pub fn counter(&self, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
        let counter = IntCounter::with_opts(Opts::new(name, help))?;
        self.registry.register(Box::new(counter.clone()))?;
        Ok(counter)
    }

    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        let counter = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(counter.clone()))?;
        Ok(counter)
    }

    pub fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
        let gauge = IntGauge::with_opts(Opts::new(name, help))?;
        self.registry.register(Box::new(gauge.clone()))?;
        Ok(gauge)
    }

    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, MetricsError> {
        let gauge = IntGaugeVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(gauge.clone()))?;
        Ok(gauge)
    }

    /// A gauge whose value `read` gives when the registry is scraped: for
    /// what the service already knows (queue lengths, point counts).
    pub fn gauge_fn(
        &self,
        name: &str,
        help: &str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) -> Result<(), MetricsError> {
        let gauge = IntGauge::new(name, help)?;
        let descriptions = gauge.desc().into_iter().cloned().collect();
        self.registry.register(Box::new(ScrapedGauge {
            gauge,
            read: Box::new(read),
            descriptions,
        }))
    }

    /// A counter that follows a count the service keeps itself (`read`
    /// must never go down), read when the registry is scraped.
    pub fn counter_fn(
        &self,
        name: &str,
        help: &str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Result<(), MetricsError> {
        let counter = IntCounter::new(name, help)?;
        let descriptions = counter.desc().into_iter().cloned().collect();
        self.registry.register(Box::new(ScrapedCounter {
            counter,
            read: Box::new(read),
            descriptions,
            catching_up: Mutex::new(()),
        }))
    }

    /// A histogram of seconds with [`LATENCY_BUCKETS`].
    pub fn latency(&self, name: &str, help: &str) -> Result<Histogram, MetricsError> {
        let histogram =
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))?;
        self.registry.register(Box::new(histogram.clone()))?;
        Ok(histogram)
    }

    pub fn latency_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<HistogramVec, MetricsError> {
        let histogram = HistogramVec::new(
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        )?;
        self.registry.register(Box::new(histogram.clone()))?;
        Ok(histogram)
    }

    /// The Prometheus text format of every registered series.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut text = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&families, &mut text) {
            tracing::warn!(service = self.service, %error, "metrics not rendered");
        }
        String::from_utf8(text).unwrap_or_default()
    }
}

struct ScrapedGauge {
    gauge: IntGauge,
    read: Box<dyn Fn() -> i64 + Send + Sync>,
    descriptions: Vec<Desc>,
}

impl Collector for ScrapedGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.descriptions.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.set((self.read)());
        self.gauge.collect()
    }
}

struct ScrapedCounter {
    counter: IntCounter,
    read: Box<dyn Fn() -> u64 + Send + Sync>,
    descriptions: Vec<Desc>,
    /// Two scrapes at once must not both add the same difference.
    catching_up: Mutex<()>,
}

impl Collector for ScrapedCounter {
    fn desc(&self) -> Vec<&Desc> {
        self.descriptions.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _alone = match self.catching_up.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = (self.read)();
        let reported = self.counter.get();
        if now > reported {
            self.counter.inc_by(now - reported);
        }
        self.counter.collect()
    }
}

/// The connections of a service's database pool, read when scraped.
pub struct PoolCollector {
    store: keel_store::Store,
    in_use: IntGauge,
    idle: IntGauge,
    max: IntGauge,
    descriptions: Vec<Desc>,
}

impl PoolCollector {
    pub fn new(store: keel_store::Store) -> Result<PoolCollector, MetricsError> {
        let in_use = IntGauge::new(
            "keel_db_pool_connections_in_use",
            "Connections running a query.",
        )?;
        let idle = IntGauge::new(
            "keel_db_pool_connections_idle",
            "Open connections waiting for a query.",
        )?;
        let max = IntGauge::new(
            "keel_db_pool_connections_max",
            "The pool's connection limit.",
        )?;
        let mut descriptions = Vec::new();
        for gauge in [&in_use, &idle, &max] {
            descriptions.extend(gauge.desc().into_iter().cloned());
        }
        Ok(PoolCollector {
            store,
            in_use,
            idle,
            max,
            descriptions,
        })
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descriptions.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let pool = self.store.pool();
        let open = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        self.in_use.set(open - idle);
        self.idle.set(idle);
        self.max
            .set(i64::from(pool.options().get_max_connections()));
        let mut families = Vec::new();
        for gauge in [&self.in_use, &self.idle, &self.max] {
            families.extend(gauge.collect());
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_names_its_service() {
        let metrics = ServiceMetrics::new("registry");
        let moves = metrics
            .counter("keel_registry_alias_moves_total", "Alias moves.")
            .unwrap();
        moves.inc();
        moves.inc();
        let text = metrics.render();
        assert!(
            text.contains("keel_registry_alias_moves_total{service=\"registry\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE keel_registry_alias_moves_total counter\n"));
    }

    #[test]
    fn scraped_gauges_read_their_value_at_each_render() {
        let metrics = ServiceMetrics::new("serving");
        let depth = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(3));
        let read_depth = depth.clone();
        metrics
            .gauge_fn("keel_queue_depth", "Queued.", move || {
                read_depth.load(std::sync::atomic::Ordering::Relaxed)
            })
            .unwrap();
        assert!(metrics
            .render()
            .contains("keel_queue_depth{service=\"serving\"} 3\n"));
        depth.store(5, std::sync::atomic::Ordering::Relaxed);
        assert!(metrics
            .render()
            .contains("keel_queue_depth{service=\"serving\"} 5\n"));
    }

    #[test]
    fn a_name_registered_twice_is_an_error() {
        let metrics = ServiceMetrics::new("serving");
        metrics.counter("keel_twice_total", "Once.").unwrap();
        assert!(metrics.counter("keel_twice_total", "Twice.").is_err());
    }

    #[test]
    fn latency_histograms_have_buckets_and_a_count() {
        let metrics = ServiceMetrics::new("serving");
        let latency = metrics
            .latency_vec("keel_query_seconds", "Query latency.", &["endpoint"])
            .unwrap();
        latency.with_label_values(&["support"]).observe(0.003);
        let text = metrics.render();
        assert!(
            text.contains("keel_query_seconds_bucket{endpoint=\"support\",service=\"serving\",le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("keel_query_seconds_count{endpoint=\"support\",service=\"serving\"} 1\n")
        );
    }
}

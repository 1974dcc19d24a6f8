use serde::{Deserialize, Serialize};

/// The `[serving]` section of the configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The default gRPC port; used only by whoever binds the listener.
    pub port: u16,
    /// Empty: the caller fills `sqlite://<data_dir>/serving.db`.
    pub database_url: String,
    pub registry_url: String,
    pub vector_index_url: String,
    pub monitoring_url: String,
    /// Where experiments read their arms' thumbs (SummarizeFeedback).
    pub feedback_url: String,
    /// Where inference records wait for monitoring: `spill` (a local,
    /// fsynced log; nothing answered is lost to an outage or a crash) or
    /// `memory` (a bounded queue, lost on a crash; for comparison).
    pub inference_log: InferenceLogKind,
    /// The spill log's directory. Empty: the caller fills
    /// `<data_dir>/serving-spill`.
    pub spill_dir: String,
    /// The longest a record waits for its fsync; one fsync covers every
    /// record of the window.
    pub spill_commit_window_ms: u64,
    /// The spill log's size limit; past it records are dropped and counted.
    pub spill_disk_budget_bytes: u64,
    /// Spill segments are this large; delivered ones are removed.
    pub spill_segment_bytes: u64,
    /// `memory` only: records waiting; beyond it they are dropped and
    /// counted.
    pub inference_queue_capacity: usize,
    /// Where records are delivered: `monitoring` (its RecordInferences) or
    /// `nats` (a NATS JetStream stream that monitoring drains, when one
    /// machine is not enough; see `nats`). Either way they wait in the
    /// inference log until delivered.
    pub inference_delivery: DeliveryTarget,
    /// The NATS server and stream for `inference_delivery = "nats"`.
    pub nats: keel_core::jetstream::JetStreamConfig,
    /// Records per RecordInferences call.
    pub inference_batch_size: usize,
    /// The longest a record waits for its batch to fill.
    pub inference_flush_interval_ms: u64,
    /// The time limit of one RecordInferences call.
    pub delivery_timeout_ms: u64,
    /// Retries back off exponentially up to this, for as long as
    /// monitoring is unreachable.
    pub delivery_max_backoff_ms: u64,
    /// Generations running at once.
    pub generation_workers: usize,
    /// Queries waiting for a generation worker; beyond it they are refused
    /// with RESOURCE_EXHAUSTED.
    pub generation_queue: usize,
    /// Deadline of each call to the registry and the vector index.
    pub dependency_timeout_ms: u64,
    /// A chain resolved through an alias is re-resolved after this long
    /// even when no alias move was announced (the watch is the fast path;
    /// this bounds how stale a missed announcement can leave it).
    pub resolver_ttl_ms: u64,
    /// How often running experiments are re-assessed: figures, verdict,
    /// Thompson shares, guards.
    pub experiment_refresh_ms: u64,
    /// What each generator costs, by its name in the catalog, for the cost
    /// series on `/metrics`; a generator without a price costs nothing.
    pub prices: std::collections::BTreeMap<String, crate::metrics::ModelPrice>,
    /// Rates and budgets per API key and per endpoint (`[serving.limits]`).
    pub limits: crate::limits::LimitsConfig,
    /// Answers kept and served again, per endpoint (`[serving.cache]`).
    pub cache: crate::cache::CacheConfig,
    /// Checks on questions and answers, per endpoint
    /// (`[serving.guardrails]`).
    pub guardrails: crate::guardrails::GuardrailsConfig,
    /// The `[auth]` section, shared by every service: filled by the binary
    /// and `keel up`, not read from this section.
    #[serde(skip)]
    pub auth: keel_core::auth::AuthConfig,
    /// The `[tls]` section, shared like `[auth]`.
    #[serde(skip)]
    pub tls: keel_core::tls::TlsConfig,
}

/// Where inference records wait on their way to monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InferenceLogKind {
    Spill,
    Memory,
}

/// Where delivered inference records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryTarget {
    Monitoring,
    Nats,
}

/// Monitoring takes at most this many records per call.
pub const MAX_INFERENCE_BATCH: usize = 1000;

impl Default for Config {
    fn default() -> Config {
        Config {
            auth: keel_core::auth::AuthConfig::default(),
            tls: keel_core::tls::TlsConfig::default(),
            port: 7102,
            database_url: String::new(),
            registry_url: "http://127.0.0.1:7101".to_string(),
            vector_index_url: "http://127.0.0.1:7103".to_string(),
            monitoring_url: "http://127.0.0.1:7105".to_string(),
            feedback_url: "http://127.0.0.1:7104".to_string(),
            inference_log: InferenceLogKind::Spill,
            spill_dir: String::new(),
            spill_commit_window_ms: 10,
            spill_disk_budget_bytes: 1 << 30,
            spill_segment_bytes: 64 << 20,
            inference_queue_capacity: 10_000,
            inference_delivery: DeliveryTarget::Monitoring,
            nats: keel_core::jetstream::JetStreamConfig::default(),
            inference_batch_size: 256,
            inference_flush_interval_ms: 200,
            delivery_timeout_ms: 2000,
            delivery_max_backoff_ms: 5000,
            generation_workers: 2,
            generation_queue: 64,
            dependency_timeout_ms: 5000,
            resolver_ttl_ms: 10_000,
            experiment_refresh_ms: 5000,
            prices: std::collections::BTreeMap::new(),
            limits: crate::limits::LimitsConfig::default(),
            cache: crate::cache::CacheConfig::default(),
            guardrails: crate::guardrails::GuardrailsConfig::default(),
        }
    }
}

impl Config {
    /// Gives the spill log its default home, `<data_dir>/serving-spill`,
    /// unless the configuration names one.
    pub fn fill_spill_dir(&mut self, data_dir: &std::path::Path) {
        if self.spill_dir.is_empty() {
            self.spill_dir = data_dir.join("serving-spill").display().to_string();
        }
    }

    /// Rejects settings the service cannot run with (a zero-sized queue or
    /// pool would deadlock or panic).
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            (
                "inference_queue_capacity",
                self.inference_queue_capacity as u64,
            ),
            ("inference_batch_size", self.inference_batch_size as u64),
            (
                "inference_flush_interval_ms",
                self.inference_flush_interval_ms,
            ),
            ("spill_commit_window_ms", self.spill_commit_window_ms),
            ("spill_disk_budget_bytes", self.spill_disk_budget_bytes),
            ("spill_segment_bytes", self.spill_segment_bytes),
            ("delivery_timeout_ms", self.delivery_timeout_ms),
            ("delivery_max_backoff_ms", self.delivery_max_backoff_ms),
            ("generation_workers", self.generation_workers as u64),
            ("dependency_timeout_ms", self.dependency_timeout_ms),
            ("resolver_ttl_ms", self.resolver_ttl_ms),
            ("experiment_refresh_ms", self.experiment_refresh_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(format!("serving.{field} must be positive"));
            }
        }
        if self.database_url.is_empty() {
            return Err("serving.database_url must be set".to_string());
        }
        if self.inference_log == InferenceLogKind::Spill && self.spill_dir.is_empty() {
            return Err("serving.spill_dir must be set".to_string());
        }
        if self.inference_batch_size > MAX_INFERENCE_BATCH {
            return Err(format!(
                "serving.inference_batch_size must be at most {MAX_INFERENCE_BATCH}, got {}",
                self.inference_batch_size
            ));
        }
        self.limits.check()?;
        self.cache.check()?;
        self.guardrails.check()?;
        for (generator, price) in &self.prices {
            for (field, value) in [
                ("input_per_million_tokens", price.input_per_million_tokens),
                ("output_per_million_tokens", price.output_per_million_tokens),
            ] {
                if !value.is_finite() || value < 0.0 {
                    return Err(format!(
                        "serving.prices.{generator}.{field} must be a non-negative number, got {value}"
                    ));
                }
            }
        }
        Ok(())
    }
}

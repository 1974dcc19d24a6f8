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
    /// Inference records waiting for delivery to monitoring; beyond it they
    /// are dropped and counted.
    pub inference_queue_capacity: usize,
    /// Records per RecordInferences call.
    pub inference_batch_size: usize,
    /// The longest a record waits for its batch to fill.
    pub inference_flush_interval_ms: u64,
    /// Tries per batch before it is given up and counted.
    pub delivery_attempts: u32,
    pub delivery_timeout_ms: u64,
    /// Generations running at once.
    pub generation_workers: usize,
    /// Queries waiting for a generation worker; beyond it they are refused
    /// with RESOURCE_EXHAUSTED.
    pub generation_queue: usize,
    /// Deadline of each call to the registry and the vector index.
    pub dependency_timeout_ms: u64,
    /// What each generator costs, by its name in the catalog, for the cost
    /// series on `/metrics`; a generator without a price costs nothing.
    pub prices: std::collections::BTreeMap<String, crate::metrics::ModelPrice>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            port: 7102,
            database_url: String::new(),
            registry_url: "http://127.0.0.1:7101".to_string(),
            vector_index_url: "http://127.0.0.1:7103".to_string(),
            monitoring_url: "http://127.0.0.1:7105".to_string(),
            inference_queue_capacity: 10_000,
            inference_batch_size: 256,
            inference_flush_interval_ms: 200,
            delivery_attempts: 3,
            delivery_timeout_ms: 2000,
            generation_workers: 2,
            generation_queue: 64,
            dependency_timeout_ms: 5000,
            prices: std::collections::BTreeMap::new(),
        }
    }
}

impl Config {
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
            ("delivery_attempts", u64::from(self.delivery_attempts)),
            ("delivery_timeout_ms", self.delivery_timeout_ms),
            ("generation_workers", self.generation_workers as u64),
            ("dependency_timeout_ms", self.dependency_timeout_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(format!("serving.{field} must be positive"));
            }
        }
        if self.database_url.is_empty() {
            return Err("serving.database_url must be set".to_string());
        }
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

//! The NATS JetStream path for inference records, for deployments where
//! one machine is not enough: serving publishes each record to a
//! work-queue stream and counts it delivered once JetStream acknowledged
//! it (stored on JetStream's disk); monitoring drains the stream with a
//! durable pull consumer and acknowledges a message only after its record
//! is committed. Both sides name the stream through this one config.

use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JetStreamConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The stream; its one subject is `<stream>.records`.
    pub stream: String,
}

impl Default for JetStreamConfig {
    fn default() -> JetStreamConfig {
        JetStreamConfig {
            url: "nats://127.0.0.1:4222".to_string(),
            stream: "KEEL_INFERENCES".to_string(),
        }
    }
}

impl JetStreamConfig {
    pub fn subject(&self) -> String {
        format!("{}.records", self.stream)
    }

    /// A work queue: a message leaves the stream once monitoring
    /// acknowledged it, so the stream holds only what is undelivered.
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.subject()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            ..stream::Config::default()
        }
    }

    /// A JetStream context whose client connects, and reconnects, in the
    /// background: a service starts while NATS is down and its calls fail
    /// (and are retried) until NATS is back.
    pub async fn connect(&self) -> Result<Context, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(self.url.as_str())
            .await?;
        Ok(async_nats::jetstream::new(client))
    }
}

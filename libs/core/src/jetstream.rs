//! The NATS JetStream path, for deployments where one machine is not
//! enough: serving publishes each inference record to a work-queue stream
//! and counts it delivered once JetStream acknowledged it (stored on
//! JetStream's disk); a service whose spans Keel's trace store does not
//! take publishes them to the same stream; monitoring drains the stream
//! with a durable pull consumer and acknowledges a message only after what
//! it carries is committed. Every side names the stream through this one
//! config.

use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

pub use prost::bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JetStreamConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The stream; its subjects are `<stream>.records` (one inference
    /// record per message) and `<stream>.spans` (one OTLP
    /// `ExportTraceServiceRequest` per message).
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
    pub fn records_subject(&self) -> String {
        format!("{}.records", self.stream)
    }

    pub fn spans_subject(&self) -> String {
        format!("{}.spans", self.stream)
    }

    /// A work queue: a message leaves the stream once monitoring
    /// acknowledged it, so the stream holds only what is undelivered.
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.records_subject(), self.spans_subject()],
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

    /// Makes the stream, or gives an existing one (a stream made before
    /// it carried spans) every subject of this config.
    pub async fn ensure_stream(&self, context: &Context) -> Result<(), String> {
        context
            .create_or_update_stream(self.stream_config())
            .await
            .map(|_| ())
            .map_err(|error| format!("cannot make the stream {}: {error}", self.stream))
    }
}

/// Publishes to the stream and waits until JetStream stored each message.
pub struct JetStreamPublisher {
    context: Context,
    config: JetStreamConfig,
    /// Set once the stream is known to exist.
    stream_ready: OnceCell<()>,
}

impl JetStreamPublisher {
    /// Returns at once; the client connects in the background (see
    /// [`JetStreamConfig::connect`]). Call on the runtime that will
    /// publish: the client's connection task runs there.
    pub async fn connect(
        config: &JetStreamConfig,
    ) -> Result<JetStreamPublisher, async_nats::ConnectError> {
        Ok(JetStreamPublisher {
            context: config.connect().await?,
            config: config.clone(),
            stream_ready: OnceCell::new(),
        })
    }

    /// Publishes every message to `subject` and waits for each
    /// acknowledgement; `Ok` means JetStream stored all of them. On an
    /// error some may be stored: the caller sends them all again, and the
    /// reader keeps each once.
    pub async fn publish_all(&self, subject: &str, messages: Vec<Bytes>) -> Result<(), String> {
        self.stream_ready
            .get_or_try_init(|| self.config.ensure_stream(&self.context))
            .await?;
        let mut acks = Vec::with_capacity(messages.len());
        for message in messages {
            let ack = self
                .context
                .publish(subject.to_string(), message)
                .await
                .map_err(|error| format!("cannot publish to {subject}: {error}"))?;
            acks.push(std::future::IntoFuture::into_future(ack));
        }
        futures::future::try_join_all(acks).await.map_err(|error| {
            format!("JetStream did not acknowledge a message on {subject}: {error}")
        })?;
        Ok(())
    }
}

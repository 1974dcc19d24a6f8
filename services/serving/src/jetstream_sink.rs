//! Delivery to NATS JetStream instead of monitoring (`inference_delivery =
//! "nats"`): each record of a batch is published to the inference stream,
//! and the batch counts as delivered once JetStream acknowledged every
//! record. Records still come from the spill log, so an unreachable NATS
//! is waited out like an unreachable monitoring.

use async_nats::jetstream::Context;
use keel_core::jetstream::JetStreamConfig;
use prost::bytes::Bytes;
use tokio::sync::OnceCell;
use tonic::Status;

pub struct JetStreamSink {
    context: Context,
    config: JetStreamConfig,
    subject: String,
    /// Set once the stream is known to exist.
    stream_ready: OnceCell<()>,
}

impl JetStreamSink {
    pub async fn connect(
        config: &JetStreamConfig,
    ) -> Result<JetStreamSink, async_nats::ConnectError> {
        Ok(JetStreamSink {
            context: config.connect().await?,
            config: config.clone(),
            subject: config.subject(),
            stream_ready: OnceCell::new(),
        })
    }

    /// Publishes every record and waits for each acknowledgement; an error
    /// reads as UNAVAILABLE, so the batch is retried.
    pub async fn publish(&self, records: Vec<Bytes>) -> Result<(), Status> {
        self.stream_ready
            .get_or_try_init(|| async {
                self.context
                    .get_or_create_stream(self.config.stream_config())
                    .await
                    .map(|_| ())
            })
            .await
            .map_err(|error| unavailable("cannot reach the inference stream", error))?;
        let mut acks = Vec::with_capacity(records.len());
        for record in records {
            let ack = self
                .context
                .publish(self.subject.clone(), record)
                .await
                .map_err(|error| unavailable("cannot publish an inference record", error))?;
            acks.push(std::future::IntoFuture::into_future(ack));
        }
        futures::future::try_join_all(acks)
            .await
            .map_err(|error| unavailable("JetStream did not acknowledge a record", error))?;
        Ok(())
    }
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("NATS JetStream: {what}: {error}"))
}

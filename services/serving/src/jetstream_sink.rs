//! Delivery to NATS JetStream instead of monitoring (`inference_delivery =
//! "nats"`): each record of a batch is published to the inference stream,
//! and the batch counts as delivered once JetStream acknowledged every
//! record. Records still come from the spill log, so an unreachable NATS
//! is waited out like an unreachable monitoring.

use keel_core::jetstream::{JetStreamConfig, JetStreamPublisher};
use prost::bytes::Bytes;
use tonic::Status;

pub struct JetStreamSink {
    publisher: JetStreamPublisher,
    subject: String,
}

impl JetStreamSink {
    pub async fn connect(
        config: &JetStreamConfig,
    ) -> Result<JetStreamSink, async_nats::ConnectError> {
        Ok(JetStreamSink {
            publisher: JetStreamPublisher::connect(config).await?,
            subject: config.records_subject(),
        })
    }

    /// Publishes every record and waits for each acknowledgement; an error
    /// reads as UNAVAILABLE, so the batch is retried.
    pub async fn publish(&self, records: Vec<Bytes>) -> Result<(), Status> {
        self.publisher
            .publish_all(&self.subject, records)
            .await
            .map_err(|error| Status::unavailable(format!("NATS JetStream: {error}")))
    }
}

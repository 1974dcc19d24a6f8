//! Where delivered inference records go: monitoring's RecordInferences, or
//! the NATS JetStream stream monitoring drains (`inference_delivery`).

use keel_core::channel::ServiceChannel;
use prost::bytes::Bytes;
use tonic::Status;

use crate::encoded_records::RecordInferencesClient;
use crate::jetstream_sink::JetStreamSink;

pub enum RecordSink {
    Monitoring(RecordInferencesClient),
    JetStream(JetStreamSink),
}

impl RecordSink {
    /// Monitoring's RecordInferences over `channel`.
    pub fn monitoring(channel: ServiceChannel) -> RecordSink {
        RecordSink::Monitoring(RecordInferencesClient::new(channel))
    }

    /// Sends one batch of encoded records; `Ok` once the destination
    /// acknowledged all of them (committed, or stored by JetStream).
    pub async fn send(&self, records: Vec<Bytes>) -> Result<(), Status> {
        match self {
            RecordSink::Monitoring(client) => client.clone().record(records).await.map(|_| ()),
            RecordSink::JetStream(sink) => sink.publish(records).await,
        }
    }
}

//! Monitoring's side of the NATS JetStream path: a durable pull consumer
//! drains the stream in batches. Inference records (`<stream>.records`)
//! are stored in one transaction per batch; span exports
//! (`<stream>.spans`, OTLP requests a service published when monitoring
//! could not take them) go to the span writer OTLP intake uses. A message
//! is acknowledged only after what it carries is committed; one whose store
//! failed is left unacknowledged and comes again, and the store keeps each
//! request_id, and each (trace id, span id), once, so a redelivery changes
//! nothing.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{AckKind, Message};
use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use keel_core::jetstream::JetStreamConfig;
use keel_proto::v1 as pb;
use keel_types::InferenceRecord;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::inferences::InferenceLog;
use crate::otlp;
use crate::span_writer::SpanWriter;

/// The consumer every monitoring replica shares: each message goes to one.
pub const CONSUMER: &str = "keel-monitoring";
const BATCH: usize = 256;
/// How long one fetch waits for messages.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// A message not acknowledged within this is delivered again.
const ACK_WAIT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Drains the stream into `log` and `spans` until `shutdown`.
pub async fn run(
    config: JetStreamConfig,
    log: InferenceLog,
    spans: SpanWriter,
    shutdown: CancellationToken,
) {
    let context = match config.connect().await {
        Ok(context) => context,
        Err(error) => {
            tracing::error!(%error, url = config.url, "cannot use NATS; inference records from JetStream are not read");
            return;
        }
    };
    tracing::info!(
        url = config.url,
        stream = config.stream,
        "reading inference records and spans from NATS JetStream"
    );
    let consumer = (|| async {
        config.ensure_stream(&context).await?;
        let stream = context.get_stream(&config.stream).await?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.to_string()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    ..pull::Config::default()
                },
            )
            .await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(consumer)
    })
    .retry(backoff())
    .notify(|error, delay| tracing::warn!(%error, ?delay, "NATS JetStream not ready; retrying"));
    let consumer = tokio::select! {
        _ = shutdown.cancelled() => return,
        consumer = consumer => match consumer {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::error!(%error, "cannot create the JetStream consumer");
                return;
            }
        },
    };
    let spans_subject = config.spans_subject();
    let mut failing = false;
    loop {
        let fetched = tokio::select! {
            _ = shutdown.cancelled() => return,
            fetched = fetch(&consumer) => fetched,
        };
        match fetched {
            Ok(messages) => {
                if failing {
                    tracing::info!("NATS JetStream reachable again");
                    failing = false;
                }
                let (span_exports, records): (Vec<Message>, Vec<Message>) = messages
                    .into_iter()
                    .partition(|message| message.subject.as_str() == spans_subject);
                store(&log, records).await;
                for export in span_exports {
                    store_spans(&spans, export).await;
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot fetch from NATS JetStream; retrying");
                    failing = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(MAX_BACKOFF) => {}
                }
            }
        }
    }
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
}

/// Up to a batch of messages, waiting at most FETCH_WAIT for them.
async fn fetch(
    consumer: &PullConsumer,
) -> Result<Vec<Message>, Box<dyn std::error::Error + Send + Sync>> {
    let mut batch = consumer
        .fetch()
        .max_messages(BATCH)
        .expires(FETCH_WAIT)
        .messages()
        .await?;
    let mut messages = Vec::with_capacity(BATCH);
    while let Some(message) = batch.next().await {
        messages.push(message?);
    }
    Ok(messages)
}

/// Stores the batch, then acknowledges it; a record that breaks the
/// record's rules is dropped (terminated) with an error, as
/// RecordInferences would refuse it.
async fn store(log: &InferenceLog, messages: Vec<Message>) {
    if messages.is_empty() {
        return;
    }
    let mut records = Vec::with_capacity(messages.len());
    let mut stored = Vec::with_capacity(messages.len());
    for message in messages {
        let record = pb::InferenceRecord::decode(message.payload.as_ref())
            .map_err(|error| error.to_string())
            .and_then(|record| {
                InferenceRecord::from_proto("record", record).map_err(|error| error.to_string())
            });
        match record {
            Ok(record) => {
                records.push(record);
                stored.push(message);
            }
            Err(error) => {
                tracing::error!(%error, "invalid inference record on the JetStream stream, dropped");
                if let Err(error) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(%error, "cannot terminate an invalid message");
                }
            }
        }
    }
    let count = records.len();
    match log.record(records).await {
        Ok(_) => {
            for message in stored {
                if let Err(error) = message.ack().await {
                    // Delivered again after ACK_WAIT; stored once anyway.
                    tracing::warn!(%error, "cannot acknowledge a stored inference record");
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, records = count, "cannot store inference records from JetStream; they come again");
            for message in stored {
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
        }
    }
}

/// Stores one OTLP export from the stream, then acknowledges it. Spans
/// that break the protocol's rules are counted and left out, as the OTLP
/// intake does; a message that is not an OTLP request is terminated.
async fn store_spans(writer: &SpanWriter, message: Message) {
    let request = match ExportTraceServiceRequest::decode(message.payload.as_ref()) {
        Ok(request) => request,
        Err(error) => {
            tracing::error!(%error, "invalid span export on the JetStream stream, dropped");
            if let Err(error) = message.ack_with(AckKind::Term).await {
                tracing::warn!(%error, "cannot terminate an invalid message");
            }
            return;
        }
    };
    match otlp::export(writer, request).await {
        Ok(_) => {
            if let Err(error) = message.ack().await {
                tracing::warn!(%error, "cannot acknowledge stored spans");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot store spans from JetStream; they come again");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

//! Spans Keel's trace store did not take go to NATS JetStream instead
//! (`[telemetry.nats]`): when an export to monitoring fails (monitoring
//! down, or its span store unreachable), the same batch is published as
//! one OTLP `ExportTraceServiceRequest` to `<stream>.spans`, the stream
//! monitoring drains with its inference records. JetStream keeps it until
//! monitoring has stored it, so an outage of monitoring loses no span.
//! After a failure the next batches go straight to JetStream for a while
//! (PRIMARY_PAUSE), so a monitoring that is down costs one failed attempt
//! per pause, not one per batch.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use prost::Message;
use tokio::sync::OnceCell;

use crate::jetstream::{Bytes, JetStreamConfig, JetStreamPublisher};

/// How long batches skip the primary after it failed.
const PRIMARY_PAUSE: Duration = Duration::from_secs(2);

/// `primary` first; what it fails to export goes to JetStream.
pub(crate) struct FallbackToJetStream<E> {
    primary: E,
    /// Until when the primary is skipped.
    primary_paused_until: Mutex<Option<Instant>>,
    config: JetStreamConfig,
    /// Connected on the first fallback, on the export runtime, so the
    /// client's connection task runs where the exports do.
    publisher: OnceCell<JetStreamPublisher>,
    resource: ResourceAttributesWithSchema,
}

impl<E> FallbackToJetStream<E> {
    pub(crate) fn new(primary: E, config: JetStreamConfig) -> FallbackToJetStream<E> {
        FallbackToJetStream {
            primary,
            primary_paused_until: Mutex::new(None),
            config,
            publisher: OnceCell::new(),
            resource: ResourceAttributesWithSchema::default(),
        }
    }

    fn primary_paused(&self) -> bool {
        let paused = self
            .primary_paused_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        paused.is_some_and(|until| Instant::now() < until)
    }

    fn pause_primary(&self) {
        let mut paused = self
            .primary_paused_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *paused = Some(Instant::now() + PRIMARY_PAUSE);
    }

    /// Publishes the batch; `primary_error` says why it came here.
    async fn fall_back(&self, batch: Vec<SpanData>, primary_error: String) -> OTelSdkResult {
        self.publish(batch).await.map_err(|fallback_error| {
            OTelSdkError::InternalFailure(format!(
                "{primary_error}; the NATS JetStream fallback failed too: {fallback_error}"
            ))
        })
    }

    async fn publish(&self, batch: Vec<SpanData>) -> Result<(), String> {
        let publisher = self
            .publisher
            .get_or_try_init(|| JetStreamPublisher::connect(&self.config))
            .await
            .map_err(|error| format!("cannot connect to NATS: {error}"))?;
        let request = export_request(batch, &self.resource);
        publisher
            .publish_all(
                &self.config.spans_subject(),
                vec![Bytes::from(request.encode_to_vec())],
            )
            .await
    }
}

/// The batch as the OTLP request an exporter would send.
fn export_request(
    batch: Vec<SpanData>,
    resource: &ResourceAttributesWithSchema,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(batch, resource),
    }
}

impl<E: std::fmt::Debug> std::fmt::Debug for FallbackToJetStream<E> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FallbackToJetStream")
            .field("primary", &self.primary)
            .field("stream", &self.config.stream)
            .finish()
    }
}

impl<E: SpanExporter> SpanExporter for FallbackToJetStream<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.primary_paused() {
            return self
                .fall_back(batch, "paused after a failed export".to_string())
                .await;
        }
        // The primary takes the batch; a copy waits for the fallback.
        let copy = batch.clone();
        match self.primary.export(batch).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.pause_primary();
                tracing::debug!(%error, "span export failed; using NATS JetStream");
                self.fall_back(copy, error.to_string()).await
            }
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.primary.set_resource(resource);
        self.resource = ResourceAttributesWithSchema::from(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::{Duration, UNIX_EPOCH};

    use async_nats::jetstream::consumer::pull;
    use futures::StreamExt;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::InstrumentationScope;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    /// An exporter that always fails, or always succeeds, as monitoring
    /// down or up would.
    #[derive(Debug, Default)]
    struct Primary {
        fails: bool,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Primary {
        fn failing() -> Primary {
            Primary {
                fails: true,
                ..Primary::default()
            }
        }
    }

    impl SpanExporter for Primary {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.fails {
                Err(OTelSdkError::InternalFailure("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    fn span(name: &'static str, span_id: u64) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(7_u128),
                SpanId::from(span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed(name),
            start_time: UNIX_EPOCH + Duration::from_millis(1),
            end_time: UNIX_EPOCH + Duration::from_millis(2),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("keel").build(),
        }
    }

    fn fresh_stream() -> JetStreamConfig {
        JetStreamConfig {
            stream: format!("KEEL_TEST_SPANS_{}", std::process::id()),
            ..JetStreamConfig::default()
        }
    }

    /// The span names of the OTLP requests on the stream's span subject.
    async fn published_span_names(config: &JetStreamConfig) -> Vec<String> {
        let context = config.connect().await.unwrap();
        config.ensure_stream(&context).await.unwrap();
        let stream = context.get_stream(&config.stream).await.unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                filter_subject: config.spans_subject(),
                ..pull::Config::default()
            })
            .await
            .unwrap();
        let mut messages = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        let mut names = Vec::new();
        while let Some(message) = messages.next().await {
            let request =
                ExportTraceServiceRequest::decode(message.unwrap().payload.as_ref()).unwrap();
            for resource in request.resource_spans {
                let attributes = resource.resource.unwrap().attributes;
                let service = attributes
                    .iter()
                    .find(|attribute| attribute.key == "service.name")
                    .and_then(|attribute| attribute.value.clone())
                    .and_then(|value| value.value);
                assert_eq!(
                    service,
                    Some(any_value::Value::StringValue("keel-serving".to_string()))
                );
                for scope in resource.scope_spans {
                    names.extend(scope.spans.into_iter().map(|span| span.name));
                }
            }
        }
        names
    }

    #[tokio::test]
    async fn a_failed_export_goes_to_the_stream_and_a_good_one_does_not() {
        let config = fresh_stream();
        let resource = Resource::builder()
            .with_service_name("keel-serving")
            .build();
        let mut down = FallbackToJetStream::new(Primary::failing(), config.clone());
        down.set_resource(&resource);
        down.export(vec![span("serving.query", 1), span("chat smollm2", 2)])
            .await
            .unwrap();
        // Within the pause the primary is not tried again.
        down.export(vec![span("retrieval docs", 3)]).await.unwrap();
        assert_eq!(
            down.primary
                .calls
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let mut up = FallbackToJetStream::new(Primary::default(), config.clone());
        up.set_resource(&resource);
        up.export(vec![span("served by monitoring", 4)])
            .await
            .unwrap();

        assert_eq!(
            published_span_names(&config).await,
            ["serving.query", "chat smollm2", "retrieval docs"]
        );
        let context = config.connect().await.unwrap();
        context.delete_stream(&config.stream).await.unwrap();
    }

    #[tokio::test]
    async fn both_failing_is_an_error_naming_both() {
        // Nothing listens on port 1: the client keeps reconnecting and the
        // stream request times out.
        let config = JetStreamConfig {
            url: "nats://127.0.0.1:1".to_string(),
            ..fresh_stream()
        };
        let exporter = FallbackToJetStream::new(Primary::failing(), config);
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            exporter.export(vec![span("lost", 1)]),
        )
        .await
        .expect("the fallback gives up in time");
        let message = result.unwrap_err().to_string();
        assert!(
            message.contains("connection refused")
                && message.contains("NATS JetStream fallback failed"),
            "{message}"
        );
    }
}

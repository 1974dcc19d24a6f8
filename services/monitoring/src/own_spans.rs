//! The spans of this process (`keel up` runs monitoring beside the services
//! whose spans it keeps): the telemetry pipeline hands each batch over as
//! the SDK's `SpanData`, and each span goes to the writer encoded straight
//! from it, stored exactly as an OTLP export of it would be.

use opentelemetry::trace::SpanId;
use opentelemetry::Value;
use opentelemetry_sdk::trace::SpanData;

use crate::otlp::clean_text;
use crate::span_encoding;
use crate::span_writer::SpanWriter;
use crate::traces::{self, PreparedSpan, SpanStatus, ENDPOINT_ATTRIBUTE, MODEL_ATTRIBUTE};

/// Stores this process's spans through the writer OTLP intake uses.
pub struct WriterSink {
    writer: SpanWriter,
}

impl WriterSink {
    pub fn new(writer: SpanWriter) -> WriterSink {
        WriterSink { writer }
    }
}

impl keel_core::telemetry::SpanSink for WriterSink {
    fn export(
        &self,
        service_name: &str,
        spans: Vec<SpanData>,
    ) -> futures::future::BoxFuture<'static, Result<(), String>> {
        let writer = self.writer.clone();
        let service_name = service_name.to_string();
        Box::pin(async move {
            let prepared = tokio::task::spawn_blocking(move || prepare(&service_name, &spans))
                .await
                .map_err(|error| error.to_string())?;
            writer
                .write(prepared)
                .await
                .map_err(|error| error.to_string())
        })
    }
}

/// The spans encoded for storage with what their traces' summaries need.
/// The SDK makes valid ids only, so none is refused.
pub fn prepare(service_name: &str, spans: &[SpanData]) -> Vec<PreparedSpan> {
    let resource = span_encoding::resource(service_name);
    let mut scopes: Vec<(&str, Vec<u8>)> = Vec::new();
    spans
        .iter()
        .map(|span| {
            let scope_name = span.instrumentation_scope.name();
            let scope = match scopes.iter().find(|(name, _)| *name == scope_name) {
                Some((_, scope)) => scope,
                None => {
                    let encoded = span_encoding::scope(scope_name);
                    scopes.push((scope_name, encoded));
                    &scopes[scopes.len() - 1].1
                }
            };
            prepare_span(
                service_name,
                span_encoding::encode_sdk_span(&resource, scope, span),
                span,
            )
        })
        .collect()
}

fn prepare_span(service_name: &str, encoded: Vec<u8>, span: &SpanData) -> PreparedSpan {
    // The last value of a key counts, as in OTLP intake.
    let string_attribute = |key: &str| {
        span.attributes
            .iter()
            .rev()
            .find(|attribute| attribute.key.as_str() == key)
            .and_then(|attribute| match &attribute.value {
                Value::String(text) => traces::indexed_text(text.as_str()),
                _ => None,
            })
    };
    let nanos = |time| i64::try_from(span_encoding::nanos(time)).unwrap_or(i64::MAX);
    let context = &span.span_context;
    PreparedSpan {
        trace_id: context.trace_id().to_string(),
        span_id: context.span_id().to_string(),
        is_root: span.parent_span_id == SpanId::INVALID,
        name: clean_text(span.name.to_string()),
        service_name: service_name.to_string(),
        start_time_unix_nano: nanos(span.start_time),
        end_time_unix_nano: nanos(span.end_time),
        status: SpanStatus::from_code(span_encoding::status_parts(&span.status).0 as i64),
        endpoint: string_attribute(ENDPOINT_ATTRIBUTE),
        model: string_attribute(MODEL_ATTRIBUTE),
        encoded,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::{Duration, UNIX_EPOCH};

    use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry::{InstrumentationScope as SdkScope, KeyValue as SdkKeyValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use opentelemetry_sdk::Resource as SdkResource;

    use super::*;
    use crate::otlp;

    fn span(trace: u128, span: u64, parent: u64, status: Status, scope: &'static str) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(span),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: Cow::Borrowed("chat smollm2"),
            start_time: UNIX_EPOCH + Duration::from_nanos(1_000 + u64::from(span as u8)),
            end_time: UNIX_EPOCH + Duration::from_nanos(9_000),
            attributes: vec![
                SdkKeyValue::new(ENDPOINT_ATTRIBUTE, "support"),
                SdkKeyValue::new(MODEL_ATTRIBUTE, "first"),
                SdkKeyValue::new(MODEL_ATTRIBUTE, "smollm2\0"),
                SdkKeyValue::new("gen_ai.usage.input_tokens", 12_i64),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: SdkScope::builder(scope).build(),
        }
    }

    /// This process's spans are prepared exactly as an OTLP export of them
    /// would be: same bytes stored, same summary facts.
    #[test]
    fn own_spans_are_prepared_as_their_otlp_export_would_be() {
        let spans = vec![
            span(7, 1, 0, Status::Ok, "keel"),
            span(7, 2, 1, Status::error("boom"), "keel"),
            span(8, 3, 9, Status::Unset, "otel::tracing"),
        ];
        let resource = SdkResource::builder().with_service_name("keel").build();
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans.clone(),
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        let mut expected = otlp::prepare(request).spans;
        let mut ours = prepare("keel", &spans);
        for prepared in [&mut expected, &mut ours] {
            prepared.sort_by(|a, b| (&a.trace_id, &a.span_id).cmp(&(&b.trace_id, &b.span_id)));
        }
        assert_eq!(ours, expected);
        assert_eq!(ours[0].trace_id, format!("{:032x}", 7));
        assert!(ours[0].is_root && !ours[1].is_root);
        assert_eq!(ours[1].status, SpanStatus::Error);
        // The last value of a key counts, cleaned of NUL.
        assert_eq!(ours[0].model.as_deref(), Some("smollm2\u{fffd}"));
        assert_eq!(ours[0].endpoint.as_deref(), Some("support"));
    }
}

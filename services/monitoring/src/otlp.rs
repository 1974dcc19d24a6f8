//! OTLP trace export (`ExportTraceServiceRequest`, from gRPC or HTTP, or
//! this process's own spans) into the trace store, and stored spans back
//! into what GetTrace answers. A span is stored as it came, encoded as a
//! one-span OTLP `TracesData` (with its resource's `service.name` and its
//! scope's name): no JSON on the way in, where every query's spans pass.
//! Reads convert to ids as lowercase hex and attribute values as JSON. A
//! span that breaks a rule of the protocol is counted and named in the
//! answer's partial success, never stored; the others of the same request
//! are.

use std::collections::HashSet;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::Event as OtlpEvent;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span as OtlpSpan, TracesData,
};
use prost::Message;
use serde_json::{Map, Number, Value};

use crate::error::Error;
use crate::span_encoding::{self, SERVICE_NAME_ATTRIBUTE};
use crate::span_writer::SpanWriter;
use crate::traces::{
    self, PreparedSpan, SpanKind, SpanStatus, StoredEvent, StoredSpan, ENDPOINT_ATTRIBUTE,
    MODEL_ATTRIBUTE,
};

/// A request's spans ready to store, and the ones refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub spans: Vec<StoredSpan>,
    pub rejected_spans: u64,
    /// Empty when nothing was rejected; else how many and why the first
    /// one was.
    pub error_message: String,
}

/// What an export answers: OTLP's partial success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOutcome {
    pub rejected_spans: i64,
    pub error_message: String,
}

/// A request's spans ready to store, and the ones refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// One per (trace id, span id), the first one sent winning, ordered
    /// by those ids.
    pub spans: Vec<PreparedSpan>,
    pub rejected_spans: u64,
    /// As in [`Converted`].
    pub error_message: String,
}

/// Prepares and stores one export request. Returns once its spans are
/// durable; the writer's queue being full or the store failing is an error
/// and nothing of the request can be assumed stored.
pub async fn export(
    writer: &SpanWriter,
    request: ExportTraceServiceRequest,
) -> Result<ExportOutcome, Error> {
    let prepared = tokio::task::spawn_blocking(move || prepare(request)).await?;
    writer.write(prepared.spans).await?;
    if prepared.rejected_spans > 0 {
        writer.count_rejected(prepared.rejected_spans);
        tracing::debug!(rejected = prepared.rejected_spans, reason = %prepared.error_message, "spans rejected");
    }
    Ok(ExportOutcome {
        rejected_spans: i64::try_from(prepared.rejected_spans).unwrap_or(i64::MAX),
        error_message: prepared.error_message,
    })
}

/// Every valid span of the request, encoded for storage; CPU-bound on
/// large requests.
pub fn prepare(request: ExportTraceServiceRequest) -> Prepared {
    let mut spans = Vec::new();
    let mut seen = HashSet::new();
    let mut rejections = Rejections::default();
    for (resource_index, resource_spans) in request.resource_spans.into_iter().enumerate() {
        let service_name = service_name(&resource_spans);
        let resource = span_encoding::resource(&service_name);
        for (scope_index, scope_spans) in resource_spans.scope_spans.into_iter().enumerate() {
            let scope_name = scope_name(&scope_spans);
            let scope = span_encoding::scope(&scope_name);
            for (span_index, span) in scope_spans.spans.into_iter().enumerate() {
                let checked = match check_span(&span) {
                    Ok(checked) => checked,
                    Err(rule) => {
                        rejections.add(resource_index, scope_index, span_index, rule);
                        continue;
                    }
                };
                if seen.insert((checked.trace_id.clone(), checked.span_id.clone())) {
                    let encoded = span_encoding::frame(&resource, &scope, &span.encode_to_vec());
                    spans.push(prepare_span(&span, checked, &service_name, encoded));
                }
            }
        }
    }
    spans.sort_by(|a, b| (&a.trace_id, &a.span_id).cmp(&(&b.trace_id, &b.span_id)));
    Prepared {
        spans,
        rejected_spans: rejections.count,
        error_message: rejections.message(),
    }
}

fn prepare_span(
    span: &OtlpSpan,
    checked: CheckedSpan,
    service_name: &str,
    encoded: Vec<u8>,
) -> PreparedSpan {
    let string_attribute = |key: &str| {
        span.attributes
            .iter()
            .rev()
            .find(|attribute| attribute.key == key)
            .and_then(|attribute| match &attribute.value {
                Some(AnyValue {
                    value: Some(OtlpValue::StringValue(text)),
                }) => traces::indexed_text(text),
                _ => None,
            })
    };
    PreparedSpan {
        is_root: checked.parent_span_id.is_empty(),
        trace_id: checked.trace_id,
        span_id: checked.span_id,
        name: clean_text(span.name.clone()),
        service_name: service_name.to_string(),
        start_time_unix_nano: checked.start_time_unix_nano,
        end_time_unix_nano: checked.end_time_unix_nano,
        status: span
            .status
            .as_ref()
            .map(|status| SpanStatus::from_code(i64::from(status.code)))
            .unwrap_or_default(),
        endpoint: string_attribute(ENDPOINT_ATTRIBUTE),
        model: string_attribute(MODEL_ATTRIBUTE),
        encoded,
    }
}

/// Every valid span of the request; CPU-bound on large requests.
pub fn convert(request: ExportTraceServiceRequest) -> Converted {
    let mut spans = Vec::new();
    let mut rejections = Rejections::default();
    for (resource_index, resource_spans) in request.resource_spans.into_iter().enumerate() {
        let service_name = service_name(&resource_spans);
        for (scope_index, scope_spans) in resource_spans.scope_spans.into_iter().enumerate() {
            let scope_name = scope_name(&scope_spans);
            for (span_index, span) in scope_spans.spans.into_iter().enumerate() {
                match convert_span(span, &service_name, &scope_name) {
                    Ok(stored) => spans.push(stored),
                    Err(rule) => rejections.add(resource_index, scope_index, span_index, rule),
                }
            }
        }
    }
    Converted {
        spans,
        rejected_spans: rejections.count,
        error_message: rejections.message(),
    }
}

/// The spans of a stored chunk (concatenated one-span `TracesData`).
pub fn decode_stored(bytes: &[u8]) -> Result<Vec<StoredSpan>, prost::DecodeError> {
    let data = TracesData::decode(bytes)?;
    Ok(convert(ExportTraceServiceRequest {
        resource_spans: data.resource_spans,
    })
    .spans)
}

/// How many spans a request had refused, and why the first one was.
#[derive(Default)]
struct Rejections {
    count: u64,
    first: Option<String>,
}

impl Rejections {
    fn add(&mut self, resource_index: usize, scope_index: usize, span_index: usize, rule: String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(format!(
                "resource_spans[{resource_index}].scope_spans[{scope_index}].spans[{span_index}]: {rule}"
            ));
        }
    }

    fn message(self) -> String {
        match self.first {
            Some(first) => format!("{} spans rejected; the first: {first}", self.count),
            None => String::new(),
        }
    }
}

fn service_name(resource_spans: &ResourceSpans) -> String {
    resource_spans
        .resource
        .as_ref()
        .and_then(|resource| {
            resource
                .attributes
                .iter()
                .find(|attribute| attribute.key == SERVICE_NAME_ATTRIBUTE)
        })
        .and_then(|attribute| match &attribute.value {
            Some(AnyValue {
                value: Some(OtlpValue::StringValue(name)),
            }) => Some(clean_text(name.clone())),
            _ => None,
        })
        .unwrap_or_default()
}

fn scope_name(scope_spans: &ScopeSpans) -> String {
    scope_spans
        .scope
        .as_ref()
        .map(|scope| clean_text(scope.name.clone()))
        .unwrap_or_default()
}

/// What the rules of OTLP say of a span's ids and times, checked.
struct CheckedSpan {
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent_span_id: String,
    start_time_unix_nano: i64,
    end_time_unix_nano: i64,
}

/// The span's ids and times, or the rule it broke.
fn check_span(span: &OtlpSpan) -> Result<CheckedSpan, String> {
    let trace_id = id_hex(&span.trace_id, 16)
        .ok_or_else(|| rule_broken("trace_id", "must be 16 bytes, not all zero", &span.trace_id))?;
    let span_id = id_hex(&span.span_id, 8)
        .ok_or_else(|| rule_broken("span_id", "must be 8 bytes, not all zero", &span.span_id))?;
    // Some exporters send eight zero bytes for "no parent".
    let parent_span_id = if span.parent_span_id.is_empty()
        || (span.parent_span_id.len() == 8 && span.parent_span_id.iter().all(|byte| *byte == 0))
    {
        String::new()
    } else {
        id_hex(&span.parent_span_id, 8).ok_or_else(|| {
            rule_broken(
                "parent_span_id",
                "must be empty or 8 bytes",
                &span.parent_span_id,
            )
        })?
    };
    let start_time_unix_nano = i64::try_from(span.start_time_unix_nano).map_err(|_| {
        format!(
            "start_time_unix_nano must be below 2^63, got {}",
            span.start_time_unix_nano
        )
    })?;
    let end_time_unix_nano = i64::try_from(span.end_time_unix_nano).map_err(|_| {
        format!(
            "end_time_unix_nano must be below 2^63, got {}",
            span.end_time_unix_nano
        )
    })?;
    Ok(CheckedSpan {
        trace_id,
        span_id,
        parent_span_id,
        start_time_unix_nano,
        end_time_unix_nano,
    })
}

/// The span, or the rule it broke.
fn convert_span(
    span: OtlpSpan,
    service_name: &str,
    scope_name: &str,
) -> Result<StoredSpan, String> {
    let checked = check_span(&span)?;
    let (status, status_message) = match &span.status {
        Some(status) => (
            SpanStatus::from_code(i64::from(status.code)),
            clean_text(status.message.clone()),
        ),
        None => (SpanStatus::Unset, String::new()),
    };
    Ok(StoredSpan {
        trace_id: checked.trace_id,
        span_id: checked.span_id,
        parent_span_id: checked.parent_span_id,
        name: clean_text(span.name),
        kind: SpanKind::from_code(i64::from(span.kind)),
        service_name: service_name.to_string(),
        scope_name: scope_name.to_string(),
        start_time_unix_nano: checked.start_time_unix_nano,
        end_time_unix_nano: checked.end_time_unix_nano,
        status,
        status_message,
        attributes: attributes_to_json(span.attributes),
        events: span.events.into_iter().map(event_to_stored).collect(),
    })
}

fn rule_broken(field: &str, rule: &str, bytes: &[u8]) -> String {
    format!("{field} {rule}, got {} bytes {:?}", bytes.len(), hex(bytes))
}

/// Lowercase hex of an id of exactly `len` bytes that are not all zero.
fn id_hex(bytes: &[u8], len: usize) -> Option<String> {
    (bytes.len() == len && bytes.iter().any(|byte| *byte != 0)).then(|| hex(bytes))
}

/// Lowercase hex, written digit by digit: three ids per span on the
/// ingestion path, where a formatted string per byte showed in profiles.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn event_to_stored(event: OtlpEvent) -> StoredEvent {
    StoredEvent {
        name: clean_text(event.name),
        // Beyond 2^63 ns (year 2262) is a broken clock; keep the event.
        time_unix_nano: i64::try_from(event.time_unix_nano).unwrap_or(i64::MAX),
        attributes: attributes_to_json(event.attributes),
    }
}

/// Attributes as a JSON object; a repeated key keeps its last value.
/// Takes the attributes by value: their strings move into the JSON, which
/// spares an allocation per key and per string value on span intake.
pub fn attributes_to_json(attributes: Vec<KeyValue>) -> Map<String, Value> {
    let mut object = Map::new();
    for attribute in attributes {
        let value = attribute
            .value
            .map(any_value_to_json)
            .unwrap_or(Value::Null);
        object.insert(clean_text(attribute.key), value);
    }
    object
}

/// An OTLP value as JSON: int64 stays an integer, bytes become base64 (as
/// in OTLP/JSON), non-finite doubles the strings "NaN", "Infinity" and
/// "-Infinity" (JSON has no such numbers), an empty value null.
pub fn any_value_to_json(value: AnyValue) -> Value {
    match value.value {
        None => Value::Null,
        Some(OtlpValue::StringValue(text)) => Value::String(clean_text(text)),
        Some(OtlpValue::BoolValue(flag)) => Value::Bool(flag),
        Some(OtlpValue::IntValue(number)) => Value::Number(Number::from(number)),
        Some(OtlpValue::DoubleValue(number)) => match Number::from_f64(number) {
            Some(finite) => Value::Number(finite),
            None if number.is_nan() => Value::String("NaN".to_string()),
            None if number > 0.0 => Value::String("Infinity".to_string()),
            None => Value::String("-Infinity".to_string()),
        },
        Some(OtlpValue::ArrayValue(array)) => {
            Value::Array(array.values.into_iter().map(any_value_to_json).collect())
        }
        Some(OtlpValue::KvlistValue(list)) => Value::Object(attributes_to_json(list.values)),
        Some(OtlpValue::BytesValue(bytes)) => Value::String(base64(&bytes)),
        // An index into the profiles signal's string table: meaningless
        // without that table, which trace exports do not carry.
        Some(OtlpValue::StringValueStrindex(_)) => Value::Null,
    }
}

/// Postgres refuses NUL in TEXT; one exporter's odd string must not fail
/// the group commit it shares with others.
pub(crate) fn clean_text(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    }
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let triple = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let bits = u32::from(triple[0]) << 16 | u32::from(triple[1]) << 8 | u32::from(triple[2]);
        for index in 0..4 {
            if index <= chunk.len() {
                let sextet = (bits >> (18 - 6 * index)) & 0x3f;
                encoded.push(char::from(ALPHABET[sextet as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    encoded
}

#[cfg(test)]
pub(crate) mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{status, Status};
    use serde_json::json;

    use super::*;

    pub(crate) fn string_value(text: &str) -> AnyValue {
        AnyValue {
            value: Some(OtlpValue::StringValue(text.to_string())),
        }
    }

    pub(crate) fn key_value(key: &str, value: AnyValue) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(value),
            ..Default::default()
        }
    }

    pub(crate) fn otlp_span(trace: u8, span: u8, parent: Option<u8>) -> OtlpSpan {
        OtlpSpan {
            trace_id: vec![trace; 16],
            span_id: vec![span; 8],
            parent_span_id: parent.map(|id| vec![id; 8]).unwrap_or_default(),
            name: format!("span {span}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_250_000_000,
            ..Default::default()
        }
    }

    pub(crate) fn request(service: &str, spans: Vec<OtlpSpan>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        key_value("host.name", string_value("box")),
                        key_value(SERVICE_NAME_ATTRIBUTE, string_value(service)),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "keel-serving".to_string(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn ids_times_kind_status_and_resource_are_converted() {
        let mut span = otlp_span(0xAB, 0x0C, Some(0x01));
        span.status = Some(Status {
            message: "boom".to_string(),
            code: status::StatusCode::Error as i32,
        });
        span.kind = 3;
        let converted = convert(request("serving", vec![span]));
        assert_eq!(converted.rejected_spans, 0);
        assert!(converted.error_message.is_empty());
        let stored = &converted.spans[0];
        assert_eq!(stored.trace_id, "ab".repeat(16));
        assert_eq!(stored.span_id, "0c".repeat(8));
        assert_eq!(stored.parent_span_id, "01".repeat(8));
        assert_eq!(stored.service_name, "serving");
        assert_eq!(stored.scope_name, "keel-serving");
        assert_eq!(stored.kind, SpanKind::Client);
        assert_eq!(stored.status, SpanStatus::Error);
        assert_eq!(stored.status_message, "boom");
        assert_eq!(stored.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(stored.duration_ms(), 250.0);

        // Eight zero bytes of parent mean "no parent"; no resource, no service.
        let mut root = otlp_span(1, 2, None);
        root.parent_span_id = vec![0; 8];
        let converted = convert(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![root],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        assert_eq!(converted.spans[0].parent_span_id, "");
        assert_eq!(converted.spans[0].service_name, "");
        assert_eq!(converted.spans[0].scope_name, "");
    }

    #[test]
    fn a_span_is_framed_exactly_as_prost_encodes_its_traces_data() {
        let mut span = otlp_span(1, 2, Some(3));
        // Long enough for two-byte lengths at every level.
        span.attributes = (0..20)
            .map(|index| key_value(&format!("key.{index}"), string_value(&"v".repeat(10))))
            .collect();
        let resource = Resource {
            attributes: vec![key_value(SERVICE_NAME_ATTRIBUTE, string_value("serving"))],
            ..Default::default()
        };
        let scope = InstrumentationScope {
            name: "keel".to_string(),
            ..Default::default()
        };
        let framed = span_encoding::frame(
            &resource.encode_to_vec(),
            &scope.encode_to_vec(),
            &span.encode_to_vec(),
        );
        let expected = TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope),
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert!(framed.len() > 300);
        assert_eq!(framed, expected.encode_to_vec());
        // Two framed spans concatenated decode as one message holding both.
        let mut two = framed.clone();
        two.extend_from_slice(&framed);
        assert_eq!(decode_stored(&two).unwrap().len(), 2);
    }

    #[test]
    fn invalid_spans_are_counted_named_and_left_out() {
        let good = otlp_span(1, 1, None);
        let mut short_trace = otlp_span(1, 2, None);
        short_trace.trace_id = vec![1; 15];
        let zero_trace = otlp_span(0, 3, None);
        let zero_span = otlp_span(1, 0, None);
        let mut long_span = otlp_span(1, 4, None);
        long_span.span_id = vec![4; 9];
        let mut bad_parent = otlp_span(1, 5, None);
        bad_parent.parent_span_id = vec![7; 4];
        let mut far_future = otlp_span(1, 6, None);
        far_future.end_time_unix_nano = u64::MAX;
        let mixed = request(
            "serving",
            vec![
                good,
                short_trace,
                zero_trace,
                zero_span,
                long_span,
                bad_parent,
                far_future,
            ],
        );
        // Intake refuses the same spans, for the same reasons.
        let prepared = prepare(mixed.clone());
        assert_eq!(prepared.spans.len(), 1);
        assert_eq!(prepared.rejected_spans, 6);
        let converted = convert(mixed);
        assert_eq!(prepared.error_message, converted.error_message);
        assert_eq!(converted.spans.len(), 1);
        assert_eq!(converted.spans[0].span_id, "01".repeat(8));
        assert_eq!(converted.rejected_spans, 6);
        assert!(
            converted.error_message.starts_with(
                "6 spans rejected; the first: resource_spans[0].scope_spans[0].spans[1]: \
                 trace_id must be 16 bytes, not all zero, got 15 bytes"
            ),
            "{}",
            converted.error_message
        );
        let rules: Vec<String> = [
            otlp_span(0, 3, None),
            otlp_span(1, 0, None),
            OtlpSpan {
                span_id: vec![4; 9],
                ..otlp_span(1, 4, None)
            },
            OtlpSpan {
                parent_span_id: vec![7; 4],
                ..otlp_span(1, 5, None)
            },
            OtlpSpan {
                end_time_unix_nano: u64::MAX,
                ..otlp_span(1, 6, None)
            },
        ]
        .into_iter()
        .map(|span| convert_span(span, "", "").unwrap_err())
        .collect();
        assert!(rules[0].starts_with("trace_id must be 16 bytes, not all zero"));
        assert!(rules[1].starts_with("span_id must be 8 bytes, not all zero, got 8 bytes"));
        assert!(rules[2].starts_with("span_id must be 8 bytes, not all zero, got 9 bytes"));
        assert!(rules[3].starts_with("parent_span_id must be empty or 8 bytes, got 4 bytes"));
        assert!(rules[4].starts_with("end_time_unix_nano must be below 2^63"));
    }

    #[test]
    fn every_any_value_kind_becomes_json() {
        let value = |value| AnyValue { value: Some(value) };
        let attributes = vec![
            key_value("s", string_value("text")),
            key_value("b", value(OtlpValue::BoolValue(true))),
            key_value("i", value(OtlpValue::IntValue(9_007_199_254_740_993))),
            key_value("neg", value(OtlpValue::IntValue(-5))),
            key_value("d", value(OtlpValue::DoubleValue(0.25))),
            key_value("nan", value(OtlpValue::DoubleValue(f64::NAN))),
            key_value("inf", value(OtlpValue::DoubleValue(f64::NEG_INFINITY))),
            key_value(
                "a",
                value(OtlpValue::ArrayValue(ArrayValue {
                    values: vec![string_value("x"), value(OtlpValue::IntValue(2))],
                })),
            ),
            key_value(
                "kv",
                value(OtlpValue::KvlistValue(KeyValueList {
                    values: vec![
                        key_value("inner", value(OtlpValue::BoolValue(false))),
                        key_value(
                            "deeper",
                            value(OtlpValue::KvlistValue(KeyValueList {
                                values: vec![key_value("n", value(OtlpValue::IntValue(1)))],
                            })),
                        ),
                    ],
                })),
            ),
            key_value("bytes", value(OtlpValue::BytesValue(b"hi!?".to_vec()))),
            key_value("empty", AnyValue { value: None }),
            KeyValue {
                key: "absent".to_string(),
                value: None,
                ..Default::default()
            },
            key_value("strindex", value(OtlpValue::StringValueStrindex(3))),
            key_value("s", string_value("last wins")),
        ];
        let json = Value::Object(attributes_to_json(attributes.clone()));
        assert_eq!(
            json,
            json!({
                "s": "last wins",
                "b": true,
                "i": 9_007_199_254_740_993_i64,
                "neg": -5,
                "d": 0.25,
                "nan": "NaN",
                "inf": "-Infinity",
                "a": ["x", 2],
                "kv": {"inner": false, "deeper": {"n": 1}},
                "bytes": "aGkhPw==",
                "empty": null,
                "absent": null,
                "strindex": null,
            })
        );
        // int64 beyond 2^53 survives as an exact JSON integer.
        assert_eq!(json["i"].as_i64(), Some(9_007_199_254_740_993));
    }

    #[test]
    fn events_and_nul_bytes() {
        let mut span = otlp_span(1, 1, None);
        span.name = "a\0b".to_string();
        span.events = vec![OtlpEvent {
            time_unix_nano: 42,
            name: "gen_ai.choice".to_string(),
            attributes: vec![key_value(
                "index",
                AnyValue {
                    value: Some(OtlpValue::IntValue(0)),
                },
            )],
            ..Default::default()
        }];
        let stored = convert(request("serving", vec![span])).spans.remove(0);
        assert_eq!(stored.name, "a\u{fffd}b");
        assert_eq!(
            stored.events,
            vec![StoredEvent {
                name: "gen_ai.choice".to_string(),
                time_unix_nano: 42,
                attributes: json!({"index": 0}).as_object().unwrap().clone(),
            }]
        );
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }
}

//! One span as a one-span OTLP `TracesData` message: the unit the trace
//! store concatenates into chunks. Spans from OTLP intake are encoded by
//! prost and only framed here; this process's own spans are encoded here
//! straight from the SDK's `SpanData`, field by field with prost's wire
//! primitives, because converting each to the generated `Span` first (its
//! ids, name, keys and values copied into new strings and vectors) cost
//! more than storing it. Tests check the bytes against prost's encoding of
//! that conversion.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, Status};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue as OtlpKeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_sdk::trace::SpanData;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;

/// The resource attribute naming the service that emitted the spans.
pub const SERVICE_NAME_ATTRIBUTE: &str = "service.name";

/// The resource a stored span keeps: its service's name, nothing else.
pub fn resource(service_name: &str) -> Vec<u8> {
    Resource {
        attributes: vec![OtlpKeyValue {
            key: SERVICE_NAME_ATTRIBUTE.to_string(),
            value: Some(AnyValue {
                value: Some(OtlpValue::StringValue(service_name.to_string())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

/// The instrumentation scope a stored span keeps: its name.
pub fn scope(name: &str) -> Vec<u8> {
    InstrumentationScope {
        name: name.to_string(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// `TracesData { resource_spans: [ResourceSpans { resource, scope_spans:
/// [ScopeSpans { scope, spans: [span] }] }] }` around the three encoded
/// messages (field 1 then field 2 at each level, as prost writes them).
/// Framed here because prost measures a nested message again at every
/// level it is nested in: building the `TracesData` and encoding it cost
/// three times the span's own encoding.
pub fn frame(resource: &[u8], scope: &[u8], span: &[u8]) -> Vec<u8> {
    frame_with(resource, scope, span.len(), |encoded| {
        encoded.extend_from_slice(span)
    })
}

/// A span of this process, framed as [`frame`] does with the encoded
/// `resource` and `scope` messages.
pub fn encode_sdk_span(resource: &[u8], scope: &[u8], span: &SpanData) -> Vec<u8> {
    frame_with(resource, scope, span_len(span), |encoded| {
        encode_span(span, encoded)
    })
}

fn frame_with(
    resource: &[u8],
    scope: &[u8],
    span_len: usize,
    write_span: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let scope_spans_len = field_len(1, scope.len()) + field_len(2, span_len);
    let resource_spans_len = field_len(1, resource.len()) + field_len(2, scope_spans_len);
    let mut encoded = Vec::with_capacity(field_len(1, resource_spans_len));
    // TracesData.resource_spans
    header(1, resource_spans_len, &mut encoded);
    // ResourceSpans.resource
    header(1, resource.len(), &mut encoded);
    encoded.extend_from_slice(resource);
    // ResourceSpans.scope_spans
    header(2, scope_spans_len, &mut encoded);
    // ScopeSpans.scope
    header(1, scope.len(), &mut encoded);
    encoded.extend_from_slice(scope);
    // ScopeSpans.spans
    header(2, span_len, &mut encoded);
    let before = encoded.len();
    write_span(&mut encoded);
    debug_assert_eq!(encoded.len() - before, span_len);
    encoded
}

/// The encoded length of a length-delimited field holding `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn header(tag: u32, len: usize, encoded: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, encoded);
    encode_varint(len as u64, encoded);
}

fn bytes_field(tag: u32, bytes: &[u8], encoded: &mut Vec<u8>) {
    header(tag, bytes.len(), encoded);
    encoded.extend_from_slice(bytes);
}

fn varint_field(tag: u32, value: u64, encoded: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, encoded);
    encode_varint(value, encoded);
}

fn varint_field_len(tag: u32, value: u64) -> usize {
    key_len(tag) + encoded_len_varint(value)
}

fn fixed64_field(tag: u32, value: u64, encoded: &mut Vec<u8>) {
    encode_key(tag, WireType::SixtyFourBit, encoded);
    encoded.extend_from_slice(&value.to_le_bytes());
}

fn fixed32_field(tag: u32, value: u32, encoded: &mut Vec<u8>) {
    encode_key(tag, WireType::ThirtyTwoBit, encoded);
    encoded.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos() as u64)
        .unwrap_or_default()
}

/// OTLP's span flags: the trace flags, and whether the parent is remote.
fn span_flags(trace_flags: u8, parent_is_remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    let mut flags = u32::from(trace_flags) | HAS_IS_REMOTE;
    if parent_is_remote {
        flags |= IS_REMOTE;
    }
    flags
}

/// Status code and message as OTLP numbers them.
pub(crate) fn status_parts(status: &Status) -> (u64, &str) {
    match status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    }
}

fn status_len(status: &Status) -> usize {
    let (code, message) = status_parts(status);
    let mut len = 0;
    if !message.is_empty() {
        len += field_len(2, message.len());
    }
    if code != 0 {
        len += varint_field_len(3, code);
    }
    len
}

fn span_kind_code(span: &SpanData) -> u64 {
    use opentelemetry::trace::SpanKind;
    match span.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// Field by field in tag order, leaving out proto3 defaults, as prost does.
fn span_len(span: &SpanData) -> usize {
    let context = &span.span_context;
    let trace_state = context.trace_state().header();
    let mut len = field_len(1, 16) + field_len(2, 8);
    if !trace_state.is_empty() {
        len += field_len(3, trace_state.len());
    }
    if span.parent_span_id != SpanId::INVALID {
        len += field_len(4, 8);
    }
    if !span.name.is_empty() {
        len += field_len(5, span.name.len());
    }
    len += varint_field_len(6, span_kind_code(span));
    if nanos(span.start_time) != 0 {
        len += key_len(7) + 8;
    }
    if nanos(span.end_time) != 0 {
        len += key_len(8) + 8;
    }
    len += attributes_len(9, &span.attributes);
    if span.dropped_attributes_count != 0 {
        len += varint_field_len(10, u64::from(span.dropped_attributes_count));
    }
    for event in span.events.iter() {
        len += field_len(11, event_len(event));
    }
    if span.events.dropped_count != 0 {
        len += varint_field_len(12, u64::from(span.events.dropped_count));
    }
    for link in span.links.iter() {
        len += field_len(13, link_len(link));
    }
    if span.links.dropped_count != 0 {
        len += varint_field_len(14, u64::from(span.links.dropped_count));
    }
    len += field_len(15, status_len(&span.status));
    len + key_len(16) + 4
}

fn encode_span(span: &SpanData, encoded: &mut Vec<u8>) {
    let context = &span.span_context;
    let trace_state = context.trace_state().header();
    bytes_field(1, &context.trace_id().to_bytes(), encoded);
    bytes_field(2, &context.span_id().to_bytes(), encoded);
    if !trace_state.is_empty() {
        bytes_field(3, trace_state.as_bytes(), encoded);
    }
    if span.parent_span_id != SpanId::INVALID {
        bytes_field(4, &span.parent_span_id.to_bytes(), encoded);
    }
    if !span.name.is_empty() {
        bytes_field(5, span.name.as_bytes(), encoded);
    }
    varint_field(6, span_kind_code(span), encoded);
    let (start, end) = (nanos(span.start_time), nanos(span.end_time));
    if start != 0 {
        fixed64_field(7, start, encoded);
    }
    if end != 0 {
        fixed64_field(8, end, encoded);
    }
    encode_attributes(9, &span.attributes, encoded);
    if span.dropped_attributes_count != 0 {
        varint_field(10, u64::from(span.dropped_attributes_count), encoded);
    }
    for event in span.events.iter() {
        header(11, event_len(event), encoded);
        let time = nanos(event.timestamp);
        if time != 0 {
            fixed64_field(1, time, encoded);
        }
        if !event.name.is_empty() {
            bytes_field(2, event.name.as_bytes(), encoded);
        }
        encode_attributes(3, &event.attributes, encoded);
        if event.dropped_attributes_count != 0 {
            varint_field(4, u64::from(event.dropped_attributes_count), encoded);
        }
    }
    if span.events.dropped_count != 0 {
        varint_field(12, u64::from(span.events.dropped_count), encoded);
    }
    for link in span.links.iter() {
        header(13, link_len(link), encoded);
        let context = &link.span_context;
        let trace_state = context.trace_state().header();
        bytes_field(1, &context.trace_id().to_bytes(), encoded);
        bytes_field(2, &context.span_id().to_bytes(), encoded);
        if !trace_state.is_empty() {
            bytes_field(3, trace_state.as_bytes(), encoded);
        }
        encode_attributes(4, &link.attributes, encoded);
        if link.dropped_attributes_count != 0 {
            varint_field(5, u64::from(link.dropped_attributes_count), encoded);
        }
        fixed32_field(
            6,
            span_flags(context.trace_flags().to_u8(), context.is_remote()),
            encoded,
        );
    }
    if span.links.dropped_count != 0 {
        varint_field(14, u64::from(span.links.dropped_count), encoded);
    }
    header(15, status_len(&span.status), encoded);
    let (code, message) = status_parts(&span.status);
    if !message.is_empty() {
        bytes_field(2, message.as_bytes(), encoded);
    }
    if code != 0 {
        varint_field(3, code, encoded);
    }
    fixed32_field(
        16,
        span_flags(context.trace_flags().to_u8(), span.parent_span_is_remote),
        encoded,
    );
}

fn event_len(event: &opentelemetry::trace::Event) -> usize {
    let mut len = 0;
    if nanos(event.timestamp) != 0 {
        len += key_len(1) + 8;
    }
    if !event.name.is_empty() {
        len += field_len(2, event.name.len());
    }
    len += attributes_len(3, &event.attributes);
    if event.dropped_attributes_count != 0 {
        len += varint_field_len(4, u64::from(event.dropped_attributes_count));
    }
    len
}

fn link_len(link: &opentelemetry::trace::Link) -> usize {
    let context = &link.span_context;
    let trace_state = context.trace_state().header();
    let mut len = field_len(1, 16) + field_len(2, 8);
    if !trace_state.is_empty() {
        len += field_len(3, trace_state.len());
    }
    len += attributes_len(4, &link.attributes);
    if link.dropped_attributes_count != 0 {
        len += varint_field_len(5, u64::from(link.dropped_attributes_count));
    }
    len + key_len(6) + 4
}

fn attributes_len(tag: u32, attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|attribute| field_len(tag, key_value_len(attribute)))
        .sum()
}

fn encode_attributes(tag: u32, attributes: &[KeyValue], encoded: &mut Vec<u8>) {
    for attribute in attributes {
        header(tag, key_value_len(attribute), encoded);
        let key = attribute.key.as_str();
        if !key.is_empty() {
            bytes_field(1, key.as_bytes(), encoded);
        }
        header(2, any_value_len(&attribute.value), encoded);
        encode_any_value(&attribute.value, encoded);
    }
}

fn key_value_len(attribute: &KeyValue) -> usize {
    let key = attribute.key.as_str();
    let key_len = if key.is_empty() {
        0
    } else {
        field_len(1, key.len())
    };
    key_len + field_len(2, any_value_len(&attribute.value))
}

/// A value as `AnyValue` holds it: a oneof, written even when it holds a
/// default. A kind of value newer than this code is written as its text.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(number) => varint_field_len(3, *number as u64),
        Value::F64(_) => key_len(4) + 8,
        Value::String(text) => field_len(1, text.as_str().len()),
        Value::Array(array) => field_len(5, array_len(array)),
        other => field_len(1, other.to_string().len()),
    }
}

fn encode_any_value(value: &Value, encoded: &mut Vec<u8>) {
    match value {
        Value::Bool(flag) => varint_field(2, u64::from(*flag), encoded),
        Value::I64(number) => varint_field(3, *number as u64, encoded),
        Value::F64(number) => fixed64_field(4, number.to_bits(), encoded),
        Value::String(text) => bytes_field(1, text.as_str().as_bytes(), encoded),
        Value::Array(array) => {
            header(5, array_len(array), encoded);
            for_each_element(array, |element| {
                header(1, any_value_len(&element), encoded);
                encode_any_value(&element, encoded);
            });
        }
        other => bytes_field(1, other.to_string().as_bytes(), encoded),
    }
}

/// `ArrayValue { values }`: each element as its own `AnyValue`.
fn array_len(array: &Array) -> usize {
    let mut len = 0;
    for_each_element(array, |element| {
        len += field_len(1, any_value_len(&element));
    });
    len
}

fn for_each_element(array: &Array, mut visit: impl FnMut(Value)) {
    match array {
        Array::Bool(values) => values.iter().for_each(|value| visit(Value::Bool(*value))),
        Array::I64(values) => values.iter().for_each(|value| visit(Value::I64(*value))),
        Array::F64(values) => values.iter().for_each(|value| visit(Value::F64(*value))),
        Array::String(values) => values
            .iter()
            .for_each(|value| visit(Value::String(value.clone()))),
        other => visit(Value::String(other.to_string().into())),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::trace::{
        Event, Link, SpanContext, SpanKind, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::{InstrumentationScope, StringValue};
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope as OtlpScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;

    use super::*;

    fn sdk_span(kind: SpanKind, status: Status, parent: SpanId) -> SpanData {
        let context = SpanContext::new(
            TraceId::from(0x0123_4567_89ab_cdef_0011_2233_4455_6677_u128),
            SpanId::from(0x1122_3344_5566_7788_u64),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("vendor", "value")]).unwrap(),
        );
        let attributes = vec![
            KeyValue::new("gen_ai.request.model", "smollm2"),
            KeyValue::new("gen_ai.usage.input_tokens", 0_i64),
            KeyValue::new("negative", -3_i64),
            KeyValue::new("gen_ai.request.temperature", 0.7),
            KeyValue::new("flag", false),
            KeyValue::new("", "empty key"),
            KeyValue::new(
                "gen_ai.response.finish_reasons",
                Value::Array(Array::String(vec![StringValue::from("stop")])),
            ),
            KeyValue::new("numbers", Value::Array(Array::I64(vec![1, -1, 0]))),
            KeyValue::new("ratios", Value::Array(Array::F64(vec![0.5]))),
            KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
        ];
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "retry",
            UNIX_EPOCH + Duration::from_nanos(5),
            vec![KeyValue::new("attempt", 2_i64)],
            1,
        ));
        events.dropped_count = 3;
        let mut links = SpanLinks::default();
        links.links.push(Link::with_context(SpanContext::new(
            TraceId::from(9_u128),
            SpanId::from(8_u64),
            TraceFlags::default(),
            true,
            TraceState::default(),
        )));
        SpanData {
            span_context: context,
            parent_span_id: parent,
            parent_span_is_remote: true,
            span_kind: kind,
            name: Cow::Borrowed("chat smollm2"),
            start_time: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_001),
            end_time: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_500_000_000),
            attributes,
            dropped_attributes_count: 2,
            events,
            links,
            status,
            instrumentation_scope: InstrumentationScope::builder("keel").build(),
        }
    }

    /// What prost writes for the same span through opentelemetry-proto's
    /// conversion.
    fn prost_encoding(resource: &Resource, scope: &OtlpScope, span: SpanData) -> Vec<u8> {
        TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans: vec![Span::from(span)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn sdk_spans_encode_exactly_as_prost_encodes_their_conversion() {
        let resource = Resource::default();
        let scope = OtlpScope {
            name: "keel".to_string(),
            ..Default::default()
        };
        let spans = [
            sdk_span(SpanKind::Client, Status::Unset, SpanId::from(7_u64)),
            sdk_span(SpanKind::Server, Status::Ok, SpanId::INVALID),
            sdk_span(
                SpanKind::Internal,
                Status::error("generator failed"),
                SpanId::from(1_u64),
            ),
            sdk_span(SpanKind::Producer, Status::error(""), SpanId::INVALID),
            sdk_span(SpanKind::Consumer, Status::Unset, SpanId::INVALID),
        ];
        for span in spans {
            let ours = encode_sdk_span(&resource.encode_to_vec(), &scope.encode_to_vec(), &span);
            assert_eq!(
                ours,
                prost_encoding(&resource, &scope, span.clone()),
                "{span:?}"
            );
        }
        // Empty events, links and attributes, a zero start time, no name.
        let mut bare = sdk_span(SpanKind::Internal, Status::Unset, SpanId::INVALID);
        bare.attributes.clear();
        bare.events = SpanEvents::default();
        bare.links = SpanLinks::default();
        bare.dropped_attributes_count = 0;
        bare.start_time = UNIX_EPOCH;
        bare.name = Cow::Borrowed("");
        let ours = encode_sdk_span(&resource.encode_to_vec(), &scope.encode_to_vec(), &bare);
        assert_eq!(ours, prost_encoding(&resource, &scope, bare));
    }
}

//! W3C trace context (`traceparent`) carried in gRPC metadata, so one
//! request is one trace across every hop.

use std::fmt;

use rand::Rng;
use tonic::metadata::{MetadataMap, MetadataValue};

pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceContext {
    /// A new root: random non-zero trace and span ids.
    pub fn new_root() -> TraceContext {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        while trace_id == [0u8; 16] {
            rng.fill(&mut trace_id);
        }
        while span_id == [0u8; 8] {
            rng.fill(&mut span_id);
        }
        TraceContext {
            trace_id,
            span_id,
            sampled: true,
        }
    }

    /// A child span of the same trace.
    pub fn child(&self) -> TraceContext {
        let mut child = TraceContext::new_root();
        child.trace_id = self.trace_id;
        child.sampled = self.sampled;
        child
    }

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids are invalid.
    pub fn parse(traceparent: &str) -> Option<TraceContext> {
        let mut parts = traceparent.trim().split('-');
        let version = parts.next()?;
        let trace_hex = parts.next()?;
        let span_hex = parts.next()?;
        let flags_hex = parts.next()?;
        if version != "00" || parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(trace_hex)?.try_into().ok()?;
        let span_id: [u8; 8] = decode_hex(span_hex)?.try_into().ok()?;
        let flags: [u8; 1] = decode_hex(flags_hex)?.try_into().ok()?;
        if trace_id == [0u8; 16] || span_id == [0u8; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    pub fn trace_id_hex(&self) -> String {
        encode_hex(&self.trace_id)
    }

    /// The context of an incoming call, when the caller sent a valid one.
    pub fn from_metadata(metadata: &MetadataMap) -> Option<TraceContext> {
        let value = metadata.get(TRACEPARENT)?.to_str().ok()?;
        TraceContext::parse(value)
    }

    /// Adds this context to an outgoing call.
    pub fn inject(&self, metadata: &mut MetadataMap) {
        if let Ok(value) = MetadataValue::try_from(self.to_string()) {
            metadata.insert(TRACEPARENT, value);
        }
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = if self.sampled { "01" } else { "00" };
        write!(
            formatter,
            "00-{}-{}-{flags}",
            encode_hex(&self.trace_id),
            encode_hex(&self.span_id)
        )
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2)
        || !text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let mut bytes = Vec::with_capacity(text.len() / 2);
    for index in (0..text.len()).step_by(2) {
        bytes.push(u8::from_str_radix(&text[index..index + 2], 16).ok()?);
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let context = TraceContext::new_root();
        let parsed = TraceContext::parse(&context.to_string()).unwrap();
        assert_eq!(parsed, context);
        assert_eq!(context.trace_id_hex().len(), 32);
    }

    #[test]
    fn parses_the_w3c_example_and_rejects_bad_ones() {
        let example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(example).unwrap();
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(parsed.sampled);
        assert!(
            TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
                .is_none()
        );
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .is_none()
        );
        assert!(
            TraceContext::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")
                .is_none()
        );
        assert!(TraceContext::parse("garbage").is_none());
    }

    #[test]
    fn child_keeps_the_trace() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
    }
}

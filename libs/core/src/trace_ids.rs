//! Trace ids that begin with the time, as a UUIDv7 does: 48 bits of
//! milliseconds since the Unix epoch, then 80 random bits. The trace
//! store keys its rows by trace id; with random ids every trace written
//! lands on a random page of each of those B-trees, with time-ordered ids
//! it lands at their right edge, which is the cheapest write a B-tree has.
//! Span ids stay random. Samplers and W3C trace context read randomness
//! from the right-most bytes (`TraceIdRatioBased` from the low 64 bits),
//! and those are random here.

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

/// The milliseconds fit 48 bits until the year 10889.
const RANDOM_BITS: u32 = 80;

#[derive(Debug, Default)]
pub(crate) struct TimeOrderedIds {
    random: RandomIdGenerator,
}

impl IdGenerator for TimeOrderedIds {
    fn new_trace_id(&self) -> TraceId {
        let random = u128::from_be_bytes(self.random.new_trace_id().to_bytes());
        TraceId::from(time_ordered(crate::time::now_ms(), random))
    }

    fn new_span_id(&self) -> SpanId {
        self.random.new_span_id()
    }
}

/// `millis` in the top 48 bits, the low 80 bits of `random` below.
fn time_ordered(millis: i64, random: u128) -> u128 {
    let millis = u128::try_from(millis).unwrap_or(0) & ((1 << 48) - 1);
    millis << RANDOM_BITS | random & ((1 << RANDOM_BITS) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_leads_and_the_random_bits_follow() {
        let id = time_ordered(0x0123_4567_89ab, u128::MAX);
        assert_eq!(format!("{id:032x}"), "0123456789abffffffffffffffffffff");
        assert_eq!(time_ordered(1, 0), 1 << 80);
        // Later milliseconds sort after, whatever the random bits.
        assert!(time_ordered(2, 0) > time_ordered(1, u128::MAX));
    }

    #[test]
    fn generated_ids_are_ordered_by_millisecond_and_differ_within_one() {
        let ids = TimeOrderedIds::default();
        let first = ids.new_trace_id();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let second = ids.new_trace_id();
        let third = ids.new_trace_id();
        assert!(first.to_bytes()[..6] < second.to_bytes()[..6]);
        assert_ne!(second, third);
        assert_ne!(first, TraceId::INVALID);
        assert_ne!(ids.new_span_id(), SpanId::INVALID);
    }
}

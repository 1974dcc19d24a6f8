//! When requests are meant to go out and which of them count.
//!
//! All times are offsets from the start of the run, so the math is plain
//! arithmetic that tests can drive without a clock.

use std::time::Duration;

/// The open-loop schedule: request `i` is due at `i / rate` seconds after
/// the start, whatever happened to the requests before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenLoopSchedule {
    interval_nanos: u64,
}

impl OpenLoopSchedule {
    /// `rate` in requests per second; `None` unless it is finite and
    /// between 0.001 and 1e9 (a 1 ns interval).
    pub fn new(rate: f64) -> Option<OpenLoopSchedule> {
        if !rate.is_finite() || !(0.001..=1e9).contains(&rate) {
            return None;
        }
        let interval_nanos = (1e9 / rate).round() as u64;
        Some(OpenLoopSchedule { interval_nanos })
    }

    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// The intended send time of request `index`.
    pub fn intended_offset(&self, index: u64) -> Duration {
        Duration::from_nanos(index.saturating_mul(self.interval_nanos))
    }
}

/// The latency a caller sees: from the moment the request was meant to be
/// sent to the moment its answer arrived. In the open loop the intended time
/// comes from the schedule, so a request held back by a stall (the
/// outstanding cap, a slow server) carries the stall in its latency instead
/// of hiding it (coordinated omission). In the closed loop intended = sent.
pub fn latency_from_intended(intended: Duration, completed: Duration) -> Duration {
    completed.saturating_sub(intended)
}

/// The measured part of a run: requests whose intended send time falls in
/// `[start, end)` are recorded, the warmup before `start` is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Duration,
    pub end: Duration,
}

impl Window {
    pub fn after_warmup(warmup: Duration, duration: Duration) -> Window {
        Window {
            start: warmup,
            end: warmup.saturating_add(duration),
        }
    }

    pub fn contains(&self, intended: Duration) -> bool {
        intended >= self.start && intended < self.end
    }

    /// How long the measured requests took as a whole: from the window's
    /// start until the later of its end and the last measured completion, so
    /// requests still in flight at the end stretch the window rather than
    /// inflate the rate.
    pub fn elapsed(&self, last_completion: Duration) -> Duration {
        last_completion.max(self.end).saturating_sub(self.start)
    }
}

/// Requests per second over the measured window; 0 for an empty window.
pub fn queries_per_second(requests: u64, window_elapsed: Duration) -> f64 {
    let seconds = window_elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return 0.0;
    }
    requests as f64 / seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn schedule_spaces_requests_evenly() {
        let schedule = OpenLoopSchedule::new(200.0).unwrap();
        assert_eq!(schedule.interval(), ms(5));
        assert_eq!(schedule.intended_offset(0), ms(0));
        assert_eq!(schedule.intended_offset(1), ms(5));
        assert_eq!(schedule.intended_offset(100), ms(500));
    }

    #[test]
    fn schedule_rejects_unusable_rates() {
        assert_eq!(OpenLoopSchedule::new(0.0), None);
        assert_eq!(OpenLoopSchedule::new(-5.0), None);
        assert_eq!(OpenLoopSchedule::new(f64::NAN), None);
        assert_eq!(OpenLoopSchedule::new(f64::INFINITY), None);
        assert!(OpenLoopSchedule::new(0.5).is_some());
    }

    #[test]
    fn stalled_request_latency_includes_the_stall() {
        // Rate 100/s: request 3 is due at 30 ms. The client was stalled and
        // sent it only at 530 ms; the answer came 10 ms later.
        let schedule = OpenLoopSchedule::new(100.0).unwrap();
        let intended = schedule.intended_offset(3);
        let actually_sent = ms(530);
        let completed = ms(540);
        assert_eq!(latency_from_intended(intended, completed), ms(510));
        // Measuring from the actual send would have reported 10 ms.
        assert_eq!(completed - actually_sent, ms(10));
    }

    #[test]
    fn latency_never_goes_negative() {
        assert_eq!(latency_from_intended(ms(10), ms(5)), Duration::ZERO);
    }

    #[test]
    fn window_counts_only_requests_due_after_warmup_and_before_end() {
        let window = Window::after_warmup(ms(100), ms(500));
        assert!(!window.contains(ms(99)));
        assert!(window.contains(ms(100)));
        assert!(window.contains(ms(599)));
        assert!(!window.contains(ms(600)));
        // Rate 200/s: the requests due at 100, 105, ..., 595 ms.
        let schedule = OpenLoopSchedule::new(200.0).unwrap();
        let measured = (0..1000)
            .filter(|index| window.contains(schedule.intended_offset(*index)))
            .count();
        assert_eq!(measured, 100);
    }

    #[test]
    fn window_stretches_to_the_last_completion() {
        let window = Window::after_warmup(ms(1000), ms(2000));
        assert_eq!(window.elapsed(ms(2500)), ms(2000));
        assert_eq!(window.elapsed(ms(3500)), ms(2500));
    }

    #[test]
    fn qps_is_requests_over_the_measured_window() {
        let window = Window::after_warmup(ms(5000), ms(30_000));
        // Warmup requests are not counted, and the last answer came 1 s late.
        let elapsed = window.elapsed(ms(36_000));
        assert_eq!(queries_per_second(9_300, elapsed), 300.0);
        assert_eq!(queries_per_second(10, Duration::ZERO), 0.0);
    }
}

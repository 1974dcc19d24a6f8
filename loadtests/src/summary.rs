//! What a run measured: the per-task tally, merged into one summary that
//! prints as a line, a markdown table row, or JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::latency::{HistogramError, LatencyHistogram};
use crate::schedule::{latency_from_intended, queries_per_second, Window};

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// `concurrency` clients, each sending its next request when the
    /// previous one returns.
    Closed { concurrency: u32 },
    /// Requests due every `1 / rate` seconds, at most `max_outstanding` in
    /// flight; latency counts from the due time.
    Open { rate: f64, max_outstanding: u32 },
}

/// One finished request, times as offsets from the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub intended: Duration,
    pub completed: Duration,
    /// The gRPC code's name ("Unavailable") when the request failed.
    pub error_code: Option<String>,
}

/// The measured requests of one client task (or of all, once merged).
#[derive(Debug, Clone)]
pub struct Tally {
    window: Window,
    latencies: LatencyHistogram,
    ok: u64,
    errors_by_code: BTreeMap<String, u64>,
    last_completion: Duration,
}

impl Tally {
    pub fn new(window: Window) -> Result<Tally, HistogramError> {
        Ok(Tally {
            window,
            latencies: LatencyHistogram::new()?,
            ok: 0,
            errors_by_code: BTreeMap::new(),
            last_completion: Duration::ZERO,
        })
    }

    /// Records `sample` if it was due inside the window; warmup requests are
    /// dropped. Latency is recorded for successful requests only, errors are
    /// counted by code.
    pub fn record(&mut self, sample: Sample) {
        if !self.window.contains(sample.intended) {
            return;
        }
        self.last_completion = self.last_completion.max(sample.completed);
        match sample.error_code {
            None => {
                self.ok += 1;
                self.latencies
                    .record(latency_from_intended(sample.intended, sample.completed));
            }
            Some(code) => *self.errors_by_code.entry(code).or_insert(0) += 1,
        }
    }

    pub fn merge(&mut self, other: &Tally) -> Result<(), HistogramError> {
        self.latencies.merge(&other.latencies)?;
        self.ok += other.ok;
        for (code, count) in &other.errors_by_code {
            *self.errors_by_code.entry(code.clone()).or_insert(0) += count;
        }
        self.last_completion = self.last_completion.max(other.last_completion);
        Ok(())
    }

    pub fn errors(&self) -> u64 {
        self.errors_by_code.values().sum()
    }

    pub fn requests(&self) -> u64 {
        self.ok + self.errors()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyMs {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// "closed" or "open".
    pub mode: String,
    pub concurrency: Option<u32>,
    pub rate: Option<f64>,
    pub max_outstanding: Option<u32>,
    pub target: String,
    pub endpoint: String,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// The measured window, stretched to the last measured answer.
    pub window_s: f64,
    /// Measured requests, successful or not.
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// `requests / window_s`.
    pub qps: f64,
    /// Of successful requests.
    pub latency_ms: LatencyMs,
}

/// What the summary says about the run besides the tally.
#[derive(Debug, Clone)]
pub struct RunLabel {
    pub load: Load,
    pub target: String,
    pub endpoint: String,
    pub warmup: Duration,
    pub duration: Duration,
}

impl Summary {
    pub fn new(label: &RunLabel, tally: &Tally) -> Summary {
        let window_elapsed = tally.window.elapsed(tally.last_completion);
        let (mode, concurrency, rate, max_outstanding) = match label.load {
            Load::Closed { concurrency } => ("closed", Some(concurrency), None, None),
            Load::Open {
                rate,
                max_outstanding,
            } => ("open", None, Some(rate), Some(max_outstanding)),
        };
        Summary {
            mode: mode.to_string(),
            concurrency,
            rate,
            max_outstanding,
            target: label.target.clone(),
            endpoint: label.endpoint.clone(),
            warmup_s: label.warmup.as_secs_f64(),
            duration_s: label.duration.as_secs_f64(),
            window_s: window_elapsed.as_secs_f64(),
            requests: tally.requests(),
            ok: tally.ok,
            errors: tally.errors(),
            errors_by_code: tally.errors_by_code.clone(),
            qps: queries_per_second(tally.requests(), window_elapsed),
            latency_ms: LatencyMs {
                p50: tally.latencies.quantile_ms(0.50),
                p95: tally.latencies.quantile_ms(0.95),
                p99: tally.latencies.quantile_ms(0.99),
                max: tally.latencies.max_ms(),
                mean: tally.latencies.mean_ms(),
            },
        }
    }

    /// "8" for a closed loop, "200/s" for an open one.
    fn load_cell(&self) -> String {
        match (self.concurrency, self.rate) {
            (Some(concurrency), _) => concurrency.to_string(),
            (None, Some(rate)) => format!("{rate}/s"),
            (None, None) => String::new(),
        }
    }

    /// "0", or "3 (Unavailable 2, DeadlineExceeded 1)".
    fn errors_cell(&self) -> String {
        if self.errors_by_code.is_empty() {
            return self.errors.to_string();
        }
        let by_code: Vec<String> = self
            .errors_by_code
            .iter()
            .map(|(code, count)| format!("{code} {count}"))
            .collect();
        format!("{} ({})", self.errors, by_code.join(", "))
    }

    pub fn one_line(&self) -> String {
        let load = match self.concurrency {
            Some(concurrency) => format!("concurrency {concurrency}"),
            None => format!("rate {}", self.load_cell()),
        };
        format!(
            "{} loop, {load}: {} requests in {:.1} s, errors {}, {:.1} qps, latency ms p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}",
            self.mode,
            self.requests,
            self.window_s,
            self.errors_cell(),
            self.qps,
            self.latency_ms.p50,
            self.latency_ms.p95,
            self.latency_ms.p99,
            self.latency_ms.max,
        )
    }

    pub fn markdown_header() -> &'static str {
        "| mode | concurrency/rate | requests | errors | QPS | p50 ms | p95 ms | p99 ms | max ms |\n\
         | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
    }

    pub fn markdown_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.mode,
            self.load_cell(),
            self.requests,
            self.errors_cell(),
            self.qps,
            self.latency_ms.p50,
            self.latency_ms.p95,
            self.latency_ms.p99,
            self.latency_ms.max,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn sample(intended: u64, completed: u64, error_code: Option<&str>) -> Sample {
        Sample {
            intended: ms(intended),
            completed: ms(completed),
            error_code: error_code.map(str::to_string),
        }
    }

    fn closed_label() -> RunLabel {
        RunLabel {
            load: Load::Closed { concurrency: 4 },
            target: "http://127.0.0.1:7102".to_string(),
            endpoint: "lt-endpoint".to_string(),
            warmup: ms(1000),
            duration: ms(2000),
        }
    }

    #[test]
    fn warmup_requests_are_not_counted() {
        let mut tally = Tally::new(Window::after_warmup(ms(1000), ms(2000))).unwrap();
        tally.record(sample(500, 900, None));
        tally.record(sample(999, 1005, Some("Unavailable")));
        tally.record(sample(1000, 1010, None));
        tally.record(sample(3000, 3010, None));
        assert_eq!(tally.requests(), 1);
        assert_eq!(tally.errors(), 0);
    }

    #[test]
    fn summary_counts_errors_by_code_and_latency_of_successes() {
        let mut first = Tally::new(Window::after_warmup(ms(1000), ms(2000))).unwrap();
        let mut second = Tally::new(Window::after_warmup(ms(1000), ms(2000))).unwrap();
        first.record(sample(1000, 1010, None));
        first.record(sample(1100, 1120, None));
        second.record(sample(1200, 1201, Some("Unavailable")));
        second.record(sample(1300, 1301, Some("DeadlineExceeded")));
        second.record(sample(1400, 1401, Some("Unavailable")));
        // The last answer arrives 1 s after the window's end.
        second.record(sample(2990, 4000, Some("Unavailable")));
        first.merge(&second).unwrap();

        let summary = Summary::new(&closed_label(), &first);
        assert_eq!(summary.requests, 6);
        assert_eq!(summary.ok, 2);
        assert_eq!(summary.errors, 4);
        assert_eq!(
            summary.errors_by_code,
            BTreeMap::from([
                ("DeadlineExceeded".to_string(), 1),
                ("Unavailable".to_string(), 3)
            ])
        );
        assert_eq!(summary.window_s, 3.0);
        assert_eq!(summary.qps, 2.0);
        // Within the histogram's 3 significant digits.
        assert!((summary.latency_ms.p50 - 10.0).abs() < 0.02);
        assert!((summary.latency_ms.max - 20.0).abs() < 0.02);
        assert!((summary.latency_ms.mean - 15.0).abs() < 0.02);
        let row = summary.markdown_row();
        assert!(row
            .starts_with("| closed | 4 | 6 | 4 (DeadlineExceeded 1, Unavailable 3) | 2.0 | 10.0"));
        assert_eq!(row.matches('|').count(), 10);
        assert!(summary
            .one_line()
            .starts_with("closed loop, concurrency 4: 6 requests in 3.0 s"));
    }

    #[test]
    fn open_summary_names_the_rate_and_serialises() {
        let label = RunLabel {
            load: Load::Open {
                rate: 250.0,
                max_outstanding: 64,
            },
            ..closed_label()
        };
        let tally = Tally::new(Window::after_warmup(ms(0), ms(1000))).unwrap();
        let summary = Summary::new(&label, &tally);
        assert_eq!(
            summary.markdown_row(),
            "| open | 250/s | 0 | 0 | 0.0 | 0.00 | 0.00 | 0.00 | 0.00 |"
        );
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["mode"], "open");
        assert_eq!(json["rate"], 250.0);
        assert_eq!(json["max_outstanding"], 64);
        assert_eq!(json["concurrency"], serde_json::Value::Null);
        assert_eq!(json["latency_ms"]["p99"], 0.0);
    }
}

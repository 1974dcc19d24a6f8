//! keel-loadtests: the `keel-loadtest` load generator for serving's `Query`.
//! `setup` creates what a run needs; `run` offers load in a closed loop
//! (N clients back to back) or an open loop (a fixed schedule, latency from
//! each request's due time) and summarises the measured window.
//! `keel-gateway-bench` drives the same loops over HTTP to compare Keel's
//! OpenAI-compatible path with another gateway in front of
//! `keel-openai-mock`.

pub mod ann_dataset;
pub mod ann_grpc;
pub mod client;
pub mod corpus;
pub mod error;
pub mod gateway_call;
pub mod gateway_compare;
pub mod gateway_report;
pub mod gateway_setup;
pub mod latency;
pub mod machine;
pub mod model_bench;
pub mod model_contention;
pub mod openai_mock;
pub mod progress;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod sender;
pub mod setup;
pub mod summary;
pub mod workload;

pub use error::Error;
pub use runner::{run, RunOptions};
pub use setup::{setup, CorpusSource, SetupOptions, SetupReport};
pub use summary::{Load, Summary};

/// Parses "30s", "500ms", "2m", "1h" or a bare number of seconds ("1.5").
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let trimmed = text.trim();
    let unit_start = trimmed
        .find(|character: char| character.is_ascii_alphabetic())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(unit_start);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 500ms or 2m"))?;
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m or h)"
            ))
        }
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(format!("`{text}`: must be between 0 and 1e9 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("fast")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("3d")
            .unwrap_err()
            .contains("unknown unit `d`"));
        assert!(parse_duration("-1s").unwrap_err().contains("between 0 and"));
    }
}

//! `keel-gateway-bench compare`: Keel and TensorZero in front of the same
//! mock OpenAI server, in the same run, in alternating rounds.
//!
//! Each round measures, for every target (the mock alone, Keel, TensorZero;
//! the order rotates from round to round so neither gateway always runs on
//! a warmer machine):
//!
//! - **sequential latency**: one client, back to back; a gateway's overhead
//!   is its p50 minus the mock's p50 of the same round;
//! - **saturation**: a short closed-loop probe per gateway estimates the
//!   rate it can answer, then an open loop offers both gateways the same
//!   rates (fractions of the larger probe), each step until the first one a
//!   gateway does not keep up with (answers below 95% of the offered rate,
//!   or any error). A gateway's saturated req/s is the most answers per
//!   second it sustained in any step.
//!
//! The figures are medians over rounds.

use std::time::Duration;

use serde::Serialize;

use crate::error::Error;
use crate::gateway_call::{Gateway, GatewayCall};
use crate::runner::drive;
use crate::schedule::Window;
use crate::summary::{Load, RunLabel, Summary};

/// A step keeps up when it answers at least this share of the offered rate.
const KEPT_UP: f64 = 0.95;

#[derive(Debug, Clone)]
pub struct Target {
    pub gateway: Gateway,
    /// The gateway's root URL.
    pub url: String,
    /// Keel: the endpoint; TensorZero: the function; the mock: a model name.
    pub model: String,
    pub api_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub mock: Target,
    pub gateways: Vec<Target>,
    pub rounds: u32,
    pub warmup: Duration,
    pub sequential: Duration,
    pub probe: Duration,
    pub probe_concurrency: u32,
    pub step: Duration,
    /// The open loop's rates, as fractions of the larger probe.
    pub fractions: Vec<f64>,
    pub max_outstanding: u32,
    pub timeout: Duration,
    pub show_progress: bool,
}

impl CompareOptions {
    fn validate(&self) -> Result<(), Error> {
        if self.rounds == 0 {
            return Err(Error::InvalidArgument {
                flag: "--rounds",
                rule: "must be at least 1, got 0".to_string(),
            });
        }
        if self.fractions.is_empty()
            || self
                .fractions
                .iter()
                .any(|fraction| !fraction.is_finite() || *fraction <= 0.0)
        {
            return Err(Error::InvalidArgument {
                flag: "--fractions",
                rule: format!("must be positive numbers, got {:?}", self.fractions),
            });
        }
        Ok(())
    }
}

/// One gateway's figures in one round.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayRound {
    pub gateway: String,
    pub sequential: Summary,
    /// Sequential p50 minus the mock's in the same round, in ms.
    pub overhead_p50_ms: f64,
    pub probe_qps: f64,
    pub steps: Vec<Summary>,
    /// The most answers per second of any step.
    pub saturated_qps: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub mock_sequential: Summary,
    pub gateways: Vec<GatewayRound>,
}

/// Runs the rounds; progress and each finished round go to the log.
pub async fn compare(options: &CompareOptions) -> Result<Vec<Round>, Error> {
    options.validate()?;
    let mut rounds = Vec::new();
    for round in 0..options.rounds {
        let mut order: Vec<&Target> = std::iter::once(&options.mock)
            .chain(&options.gateways)
            .collect();
        let turns = round as usize % order.len();
        order.rotate_left(turns);

        let mut sequential = Vec::new();
        for target in &order {
            let load = Load::Closed { concurrency: 1 };
            let summary = measure(options, target, load, options.sequential).await?;
            tracing::info!(
                round,
                gateway = target.gateway.label(),
                p50_ms = summary.latency_ms.p50,
                "sequential"
            );
            sequential.push((target.gateway, summary));
        }
        let mock_sequential = summary_of(&sequential, Gateway::Mock)?;

        let mut probes = Vec::new();
        for target in order
            .iter()
            .filter(|target| target.gateway != Gateway::Mock)
        {
            let load = Load::Closed {
                concurrency: options.probe_concurrency,
            };
            let summary = measure(options, target, load, options.probe).await?;
            tracing::info!(
                round,
                gateway = target.gateway.label(),
                qps = ok_per_second(&summary),
                "probe"
            );
            probes.push((target.gateway, ok_per_second(&summary)));
        }
        let ceiling = probes.iter().map(|(_, qps)| *qps).fold(0.0, f64::max);
        let rates = step_rates(ceiling, &options.fractions);

        let mut gateways = Vec::new();
        for target in order
            .iter()
            .filter(|target| target.gateway != Gateway::Mock)
        {
            let steps = sweep(options, target, &rates).await?;
            let saturated_qps = steps.iter().map(ok_per_second).fold(0.0, f64::max);
            let sequential = summary_of(&sequential, target.gateway)?;
            tracing::info!(
                round,
                gateway = target.gateway.label(),
                saturated_qps,
                "saturation"
            );
            gateways.push(GatewayRound {
                gateway: target.gateway.label().to_string(),
                overhead_p50_ms: sequential.latency_ms.p50 - mock_sequential.latency_ms.p50,
                sequential,
                probe_qps: probes
                    .iter()
                    .find(|(gateway, _)| *gateway == target.gateway)
                    .map_or(0.0, |(_, qps)| *qps),
                steps,
                saturated_qps,
            });
        }
        rounds.push(Round {
            mock_sequential,
            gateways,
        });
    }
    Ok(rounds)
}

/// The open loop at each rate, up to the first one the gateway does not
/// keep up with.
async fn sweep(
    options: &CompareOptions,
    target: &Target,
    rates: &[f64],
) -> Result<Vec<Summary>, Error> {
    let mut steps = Vec::new();
    for &rate in rates {
        let load = Load::Open {
            rate,
            max_outstanding: options.max_outstanding,
        };
        let summary = measure(options, target, load, options.step).await?;
        let kept_up = summary.errors == 0 && ok_per_second(&summary) >= KEPT_UP * rate;
        tracing::info!(
            gateway = target.gateway.label(),
            rate,
            qps = ok_per_second(&summary),
            kept_up,
            "open loop step"
        );
        steps.push(summary);
        if !kept_up {
            break;
        }
    }
    Ok(steps)
}

async fn measure(
    options: &CompareOptions,
    target: &Target,
    load: Load,
    duration: Duration,
) -> Result<Summary, Error> {
    let call = GatewayCall::new(
        target.gateway,
        &target.url,
        &target.model,
        target.api_key.as_deref(),
        options.timeout,
    )?;
    let window = Window::after_warmup(options.warmup, duration);
    let tally = drive(
        std::slice::from_ref(&call),
        load,
        window,
        options.show_progress,
    )
    .await?;
    let label = RunLabel {
        load,
        target: call.url().to_string(),
        endpoint: target.model.clone(),
        warmup: options.warmup,
        duration,
    };
    Ok(Summary::new(&label, &tally))
}

fn summary_of(measured: &[(Gateway, Summary)], gateway: Gateway) -> Result<Summary, Error> {
    measured
        .iter()
        .find(|(measured, _)| *measured == gateway)
        .map(|(_, summary)| summary.clone())
        .ok_or(Error::InvalidArgument {
            flag: "--gateway",
            rule: format!("{} was not measured", gateway.label()),
        })
}

/// Successful answers per second over the measured window.
pub fn ok_per_second(summary: &Summary) -> f64 {
    if summary.window_s <= 0.0 {
        return 0.0;
    }
    summary.ok as f64 / summary.window_s
}

/// `fractions` of `ceiling`, rounded to whole requests per second, each at
/// least 1, in increasing order.
pub fn step_rates(ceiling: f64, fractions: &[f64]) -> Vec<f64> {
    let mut rates: Vec<f64> = fractions
        .iter()
        .map(|fraction| (fraction * ceiling).round().max(1.0))
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    rates
}

/// The median of `values` (the mean of the middle two for an even count);
/// 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        count if count % 2 == 1 => sorted[count / 2],
        count => (sorted[count / 2 - 1] + sorted[count / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_fractions_of_the_ceiling_in_order() {
        assert_eq!(
            step_rates(4000.0, &[1.1, 0.5, 0.9, 0.5]),
            vec![2000.0, 3600.0, 4400.0]
        );
        assert_eq!(step_rates(0.0, &[0.5, 1.0]), vec![1.0]);
    }

    /// The whole comparison against the mock, with the mock itself standing
    /// in for Keel: every step keeps up, the overhead is about zero and the
    /// report carries both bars.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_comparison_runs_every_phase_and_reports_the_bars() {
        let mock = crate::openai_mock::MockOpenAi::default();
        let url = mock.serve_on_any_port().await.unwrap();
        let target = |gateway| Target {
            gateway,
            url: url.clone(),
            model: "gpt".to_string(),
            api_key: None,
        };
        let options = CompareOptions {
            mock: target(Gateway::Mock),
            gateways: vec![target(Gateway::Keel)],
            rounds: 2,
            warmup: Duration::from_millis(50),
            sequential: Duration::from_millis(200),
            probe: Duration::from_millis(200),
            probe_concurrency: 4,
            step: Duration::from_millis(200),
            fractions: vec![0.1, 0.2],
            max_outstanding: 16,
            timeout: Duration::from_secs(5),
            show_progress: false,
        };
        let rounds = compare(&options).await.unwrap();
        assert_eq!(rounds.len(), 2);
        for round in &rounds {
            assert!(round.mock_sequential.ok > 0);
            let keel = &round.gateways[0];
            assert_eq!(keel.gateway, "Keel");
            assert!(keel.sequential.ok > 0 && keel.sequential.errors == 0);
            assert!(keel.probe_qps > 0.0);
            assert_eq!(keel.steps.len(), 2, "both low rates keep up");
            assert!(keel.steps.iter().all(|step| step.errors == 0));
            assert!(keel.saturated_qps > 0.0);
        }
        // Every request of every phase reached the mock.
        assert!(mock.completions() > rounds.iter().map(|round| round.mock_sequential.ok).sum());
        let report = crate::gateway_report::markdown(&rounds, "test cpu", "Keel");
        assert!(report.contains("CPU: test cpu"), "{report}");
        assert!(report.contains("| Keel |"), "{report}");

        let refused = CompareOptions {
            rounds: 0,
            ..options.clone()
        };
        let error = compare(&refused).await.unwrap_err();
        assert!(error.to_string().contains("--rounds"), "{error}");
    }

    #[test]
    fn medians_take_the_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}

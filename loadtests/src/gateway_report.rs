//! The gateway comparison as markdown: every round's open-loop steps, then
//! the medians and the two bars (Keel's saturated req/s at least 1.2× the
//! other gateway's; Keel's sequential overhead p50 at most the other's).

use std::fmt::Write;

use crate::gateway_compare::{median, ok_per_second, GatewayRound, Round};

/// How much more than the other gateway Keel must answer at saturation.
pub const SATURATION_BAR: f64 = 1.2;

/// One gateway's medians over the rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayMedians {
    pub gateway: String,
    pub sequential_p50_ms: f64,
    pub sequential_p99_ms: f64,
    pub overhead_p50_ms: f64,
    pub saturated_qps: f64,
    pub overheads: Vec<f64>,
    pub saturated: Vec<f64>,
}

pub fn medians(rounds: &[Round]) -> Vec<GatewayMedians> {
    let mut names: Vec<String> = Vec::new();
    for round in rounds {
        for gateway in &round.gateways {
            if !names.contains(&gateway.gateway) {
                names.push(gateway.gateway.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let of: Vec<&GatewayRound> = rounds
                .iter()
                .flat_map(|round| &round.gateways)
                .filter(|gateway| gateway.gateway == name)
                .collect();
            let values = |pick: fn(&GatewayRound) -> f64| -> Vec<f64> {
                of.iter().map(|gateway| pick(gateway)).collect()
            };
            let overheads = values(|gateway| gateway.overhead_p50_ms);
            let saturated = values(|gateway| gateway.saturated_qps);
            GatewayMedians {
                gateway: name,
                sequential_p50_ms: median(&values(|gateway| gateway.sequential.latency_ms.p50)),
                sequential_p99_ms: median(&values(|gateway| gateway.sequential.latency_ms.p99)),
                overhead_p50_ms: median(&overheads),
                saturated_qps: median(&saturated),
                overheads,
                saturated,
            }
        })
        .collect()
}

/// The whole report: `keel` names Keel's row, the bars compare it with
/// every other gateway.
pub fn markdown(rounds: &[Round], cpu: &str, keel: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "CPU: {cpu}\n");
    for (index, round) in rounds.iter().enumerate() {
        let _ = writeln!(
            out,
            "Round {}: mock alone, sequential p50 {:.3} ms, p99 {:.3} ms",
            index + 1,
            round.mock_sequential.latency_ms.p50,
            round.mock_sequential.latency_ms.p99
        );
        let _ = writeln!(
            out,
            "\n| gateway | offered req/s | answered req/s | errors | p50 ms | p99 ms |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
        for gateway in &round.gateways {
            for step in &gateway.steps {
                let _ = writeln!(
                    out,
                    "| {} | {:.0} | {:.0} | {} | {:.2} | {:.2} |",
                    gateway.gateway,
                    step.rate.unwrap_or_default(),
                    ok_per_second(step),
                    step.errors,
                    step.latency_ms.p50,
                    step.latency_ms.p99
                );
            }
        }
        let _ = writeln!(out);
    }
    let medians = medians(rounds);
    let mock_p50 = median(
        &rounds
            .iter()
            .map(|round| round.mock_sequential.latency_ms.p50)
            .collect::<Vec<_>>(),
    );
    let _ = writeln!(
        out,
        "Medians over {} rounds (mock alone: sequential p50 {mock_p50:.3} ms):\n",
        rounds.len()
    );
    let _ = writeln!(
        out,
        "| gateway | sequential p50 ms | sequential p99 ms | overhead p50 ms (rounds) | saturated req/s (rounds) |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    for gateway in &medians {
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.3} | {:.3} ({}) | {:.0} ({}) |",
            gateway.gateway,
            gateway.sequential_p50_ms,
            gateway.sequential_p99_ms,
            gateway.overhead_p50_ms,
            list(&gateway.overheads, 3),
            gateway.saturated_qps,
            list(&gateway.saturated, 0),
        );
    }
    if let Some(ours) = medians.iter().find(|gateway| gateway.gateway == keel) {
        for other in medians.iter().filter(|gateway| gateway.gateway != keel) {
            let ratio = if other.saturated_qps > 0.0 {
                ours.saturated_qps / other.saturated_qps
            } else {
                f64::INFINITY
            };
            let _ = writeln!(
                out,
                "\nBar: {keel} saturated req/s ≥ {SATURATION_BAR}× {}: {:.2}× — {}",
                other.gateway,
                ratio,
                verdict(ratio >= SATURATION_BAR)
            );
            let _ = writeln!(
                out,
                "Bar: {keel} sequential overhead p50 ≤ {}'s: {:.3} ms vs {:.3} ms — {}",
                other.gateway,
                ours.overhead_p50_ms,
                other.overhead_p50_ms,
                verdict(ours.overhead_p50_ms <= other.overhead_p50_ms)
            );
        }
    }
    out
}

fn verdict(held: bool) -> &'static str {
    if held {
        "held"
    } else {
        "MISSED"
    }
}

fn list(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|value| format!("{value:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::gateway_compare::Round;
    use crate::summary::{LatencyMs, Summary};

    fn summary(p50: f64, ok: u64, rate: Option<f64>) -> Summary {
        Summary {
            mode: "open".to_string(),
            concurrency: None,
            rate,
            max_outstanding: None,
            target: String::new(),
            endpoint: String::new(),
            warmup_s: 0.0,
            duration_s: 1.0,
            window_s: 1.0,
            requests: ok,
            ok,
            errors: 0,
            errors_by_code: BTreeMap::new(),
            qps: ok as f64,
            latency_ms: LatencyMs {
                p50,
                p95: p50,
                p99: p50 * 2.0,
                max: p50 * 3.0,
                mean: p50,
            },
        }
    }

    fn gateway(name: &str, p50: f64, overhead: f64, saturated: f64) -> GatewayRound {
        GatewayRound {
            gateway: name.to_string(),
            sequential: summary(p50, 100, None),
            overhead_p50_ms: overhead,
            probe_qps: saturated,
            steps: vec![summary(p50, saturated as u64, Some(saturated))],
            saturated_qps: saturated,
        }
    }

    fn rounds(keel: [(f64, f64); 3], other: [(f64, f64); 3]) -> Vec<Round> {
        (0..3)
            .map(|index| Round {
                mock_sequential: summary(0.1, 100, None),
                gateways: vec![
                    gateway("Keel", 0.1 + keel[index].0, keel[index].0, keel[index].1),
                    gateway(
                        "TensorZero",
                        0.1 + other[index].0,
                        other[index].0,
                        other[index].1,
                    ),
                ],
            })
            .collect()
    }

    #[test]
    fn medians_are_per_gateway_over_rounds() {
        let rounds = rounds(
            [(0.2, 5000.0), (0.3, 4000.0), (0.25, 4500.0)],
            [(0.4, 3000.0), (0.35, 3500.0), (0.5, 3200.0)],
        );
        let medians = medians(&rounds);
        assert_eq!(medians.len(), 2);
        assert_eq!(medians[0].gateway, "Keel");
        assert_eq!(medians[0].saturated_qps, 4500.0);
        assert!((medians[0].overhead_p50_ms - 0.25).abs() < 1e-9);
        assert_eq!(medians[1].saturated_qps, 3200.0);
        assert_eq!(medians[1].saturated, vec![3000.0, 3500.0, 3200.0]);
    }

    #[test]
    fn the_bars_say_held_or_missed() {
        let held = markdown(
            &rounds(
                [(0.2, 5000.0), (0.3, 4000.0), (0.25, 4500.0)],
                [(0.4, 3000.0), (0.35, 3500.0), (0.5, 3200.0)],
            ),
            "cpu",
            "Keel",
        );
        assert!(held.contains("1.41× — held"), "{held}");
        assert!(held.contains("0.250 ms vs 0.400 ms — held"), "{held}");

        let missed = markdown(
            &rounds(
                [(0.5, 3300.0), (0.5, 3300.0), (0.5, 3300.0)],
                [(0.4, 3000.0), (0.4, 3000.0), (0.4, 3000.0)],
            ),
            "cpu",
            "Keel",
        );
        assert!(missed.contains("1.10× — MISSED"), "{missed}");
        assert!(missed.contains("0.500 ms vs 0.400 ms — MISSED"), "{missed}");
    }
}

//! `keel eval compare RUN_A RUN_B`: two runs side by side, scorer by
//! scorer, on the examples both answered: each mean, the mean of the paired
//! differences (B − A) with its 95% interval, and whether B is better,
//! worse, or not distinguishable from A at that confidence.

use std::collections::HashMap;
use std::path::PathBuf;

use keel_eval::Scorer;
use keel_proto::v1 as pb;
use serde::Serialize;

use crate::cli::error::rpc;
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The baseline run's id (e.g. the champion's)
    pub run_a: String,
    /// The run compared with it (e.g. the challenger's)
    pub run_b: String,
    /// Write the comparison as JSON to this file (`-`: standard output,
    /// instead of the table)
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSide {
    pub id: String,
    pub model: String,
    pub version: u32,
    pub dataset: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    BBetter,
    BWorse,
    NoSignificantDifference,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScorerComparison {
    pub scorer: String,
    /// Examples both runs scored.
    pub pairs: u64,
    pub mean_a: f64,
    pub mean_b: f64,
    /// Mean of B − A over the pairs, and its 95% interval.
    pub difference: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub a: RunSide,
    pub b: RunSide,
    /// "index" when both ran the same dataset file, else "question".
    pub paired_by: &'static str,
    pub scorers: Vec<ScorerComparison>,
}

pub async fn run(urls: &ServiceUrls, args: CompareArgs) -> Result<(), CliError> {
    let comparison = compare_runs(urls, &args.run_a, &args.run_b).await?;
    output::json_or(args.json.as_deref(), &comparison, output::comparison)
}

pub async fn compare_runs(
    urls: &ServiceUrls,
    run_a: &str,
    run_b: &str,
) -> Result<Comparison, CliError> {
    let mut registry = urls.registry().await?;
    let mut fetch =
        async |run_id: &str| -> Result<(pb::EvaluationRun, Vec<pb::EvaluationExample>), CliError> {
            let run = registry
                .get_evaluation_run(pb::GetEvaluationRunRequest {
                    run_id: run_id.to_string(),
                })
                .await
                .map_err(rpc("GetEvaluationRun"))?
                .into_inner();
            let mut examples = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = registry
                    .list_evaluation_examples(pb::ListEvaluationExamplesRequest {
                        run_id: run_id.to_string(),
                        page_size: 1000,
                        page_token,
                    })
                    .await
                    .map_err(rpc("ListEvaluationExamples"))?
                    .into_inner();
                examples.extend(page.examples);
                if page.next_page_token.is_empty() {
                    return Ok((run, examples));
                }
                page_token = page.next_page_token;
            }
        };
    let (a, examples_a) = fetch(run_a).await?;
    let (b, examples_b) = fetch(run_b).await?;
    Ok(compare(&a, &examples_a, &b, &examples_b))
}

/// The comparison of two runs' examples, on the scorers A names that B
/// scored too.
pub fn compare(
    a: &pb::EvaluationRun,
    examples_a: &[pb::EvaluationExample],
    b: &pb::EvaluationRun,
    examples_b: &[pb::EvaluationExample],
) -> Comparison {
    let digest =
        |run: &pb::EvaluationRun| run.dataset.as_ref().map(|dataset| dataset.digest.clone());
    let same_file =
        digest(a).is_some_and(|digest_a| !digest_a.is_empty() && Some(digest_a) == digest(b));
    let key = |example: &pb::EvaluationExample| {
        if same_file {
            example.index.to_string()
        } else {
            example.question.clone()
        }
    };
    let by_key: HashMap<String, &pb::EvaluationExample> = examples_b
        .iter()
        .map(|example| (key(example), example))
        .collect();
    let pairs: Vec<(&pb::EvaluationExample, &pb::EvaluationExample)> = examples_a
        .iter()
        .filter_map(|example| Some((example, *by_key.get(&key(example))?)))
        .collect();
    let mut scorers = Vec::new();
    for name in a.scorers.iter().filter(|name| b.scorers.contains(name)) {
        let values: Vec<(f64, f64)> = pairs
            .iter()
            .filter_map(|(x, y)| Some((*x.scores.get(name)?, *y.scores.get(name)?)))
            .collect();
        let Some(difference) = keel_eval::paired_difference(&values) else {
            continue;
        };
        let count = values.len() as f64;
        let higher_is_better = Scorer::parse(name).is_ok_and(Scorer::higher_is_better);
        let interval = difference.interval;
        // One pair says nothing about the spread: its "interval" is the
        // value itself, and no difference is significant on it.
        let verdict = if difference.count < 2 || interval.contains(0.0) {
            Verdict::NoSignificantDifference
        } else if (interval.low > 0.0) == higher_is_better {
            Verdict::BBetter
        } else {
            Verdict::BWorse
        };
        scorers.push(ScorerComparison {
            scorer: name.clone(),
            pairs: difference.count,
            mean_a: values.iter().map(|(x, _)| x).sum::<f64>() / count,
            mean_b: values.iter().map(|(_, y)| y).sum::<f64>() / count,
            difference: difference.mean,
            ci_low: interval.low,
            ci_high: interval.high,
            verdict,
        });
    }
    let side = |run: &pb::EvaluationRun| RunSide {
        id: run.id.clone(),
        model: run.model.clone(),
        version: run.version,
        dataset: run
            .dataset
            .as_ref()
            .map(|dataset| dataset.name.clone())
            .unwrap_or_default(),
    };
    Comparison {
        a: side(a),
        b: side(b),
        paired_by: if same_file { "index" } else { "question" },
        scorers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, digest: &str, scorers: &[&str]) -> pb::EvaluationRun {
        pb::EvaluationRun {
            id: id.to_string(),
            model: "chain".to_string(),
            version: 1,
            dataset: Some(pb::DatasetSource {
                name: "eval.jsonl".to_string(),
                digest: digest.to_string(),
                examples: 0,
            }),
            scorers: scorers.iter().map(|name| name.to_string()).collect(),
            ..Default::default()
        }
    }

    fn example(index: u32, question: &str, scores: &[(&str, f64)]) -> pb::EvaluationExample {
        pb::EvaluationExample {
            index,
            question: question.to_string(),
            scores: scores
                .iter()
                .map(|(name, value)| (name.to_string(), *value))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_consistent_gain_is_significant_and_latency_reads_lower_is_better() {
        let a = run("a", &"d".repeat(64), &["token_f1", "latency_ms", "exact"]);
        let b = run("b", &"d".repeat(64), &["token_f1", "latency_ms"]);
        let base = [0.2, 0.8, 0.4, 0.6, 0.3, 0.7];
        let examples_a: Vec<_> = base
            .iter()
            .enumerate()
            .map(|(i, f1)| {
                example(
                    i as u32,
                    "q",
                    &[("token_f1", *f1), ("latency_ms", 100.0 + i as f64)],
                )
            })
            .collect();
        let examples_b: Vec<_> = base
            .iter()
            .enumerate()
            .map(|(i, f1)| {
                let gain = [0.09, 0.11, 0.1, 0.1, 0.09, 0.11][i];
                example(
                    i as u32,
                    "q",
                    &[
                        ("token_f1", f1 + gain),
                        ("latency_ms", 150.0 + i as f64 * 2.0),
                    ],
                )
            })
            .collect();
        let comparison = compare(&a, &examples_a, &b, &examples_b);
        assert_eq!(comparison.paired_by, "index");
        let verdicts: Vec<(&str, u64, Verdict)> = comparison
            .scorers
            .iter()
            .map(|row| (row.scorer.as_str(), row.pairs, row.verdict))
            .collect();
        // `exact` is only in A: not compared.
        assert_eq!(
            verdicts,
            [
                ("token_f1", 6, Verdict::BBetter),
                ("latency_ms", 6, Verdict::BWorse)
            ]
        );
        assert!((comparison.scorers[0].difference - 0.1).abs() < 1e-9);
        assert!((comparison.scorers[0].mean_a - 0.5).abs() < 1e-9);
    }

    #[test]
    fn different_files_pair_by_question_and_noise_is_no_difference() {
        let a = run("a", &"a".repeat(64), &["contains"]);
        let b = run("b", &"b".repeat(64), &["contains"]);
        let examples_a = vec![
            example(0, "one", &[("contains", 1.0)]),
            example(1, "two", &[("contains", 0.0)]),
            example(2, "three", &[("contains", 1.0)]),
            example(3, "only in a", &[("contains", 1.0)]),
        ];
        let examples_b = vec![
            example(0, "three", &[("contains", 0.0)]),
            example(1, "two", &[("contains", 1.0)]),
            example(2, "one", &[("contains", 1.0)]),
        ];
        let comparison = compare(&a, &examples_a, &b, &examples_b);
        assert_eq!(comparison.paired_by, "question");
        let row = &comparison.scorers[0];
        assert_eq!(row.pairs, 3);
        assert_eq!((row.mean_a, row.mean_b), (2.0 / 3.0, 2.0 / 3.0));
        assert_eq!(row.verdict, Verdict::NoSignificantDifference);
    }

    #[test]
    fn one_pair_is_never_significant() {
        let a = run("a", &"d".repeat(64), &["latency_ms"]);
        let b = run("b", &"d".repeat(64), &["latency_ms"]);
        let comparison = compare(
            &a,
            &[example(0, "q", &[("latency_ms", 600.0)])],
            &b,
            &[example(0, "q", &[("latency_ms", 718.0)])],
        );
        let row = &comparison.scorers[0];
        assert_eq!((row.pairs, row.difference), (1, 118.0));
        assert_eq!(row.verdict, Verdict::NoSignificantDifference);
    }
}

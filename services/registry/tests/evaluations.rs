//! Evaluation runs and version lineage through the registry's gRPC API, on
//! SQLite and on Postgres: examples appended (retries change nothing),
//! summaries computed on finish, listing and filters, what survives a
//! restart, and every bad input refused with its field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use keel_proto::v1 as pb;
use keel_testkit::{assert_status, BACKENDS};
use tonic::Code;

use support::{create_model, prompt_version, Client, Registry};

const DIGEST: &str = "9f86d081884c7d659a2feb0c9ae2b9a1e3e0d3f5c0e8a6b1d2c3e4f5a6b7c8d9";

async fn with_prompt_versions(client: &mut Client, versions: u32) {
    create_model(client, "p", pb::ModelKind::Prompt).await;
    for _ in 0..versions {
        client
            .create_version(prompt_version("p", "{{ question }}"))
            .await
            .unwrap();
    }
}

fn new_run(version: u32, dataset: &str, scorers: &[&str]) -> pb::CreateEvaluationRunRequest {
    pb::CreateEvaluationRunRequest {
        model: "p".to_string(),
        version,
        endpoint: "support".to_string(),
        dataset: Some(pb::DatasetSource {
            name: dataset.to_string(),
            digest: DIGEST.to_string(),
            examples: 3,
        }),
        scorers: scorers.iter().map(|name| name.to_string()).collect(),
        actor: "ci".to_string(),
        tags: [("split".to_string(), "held-out".to_string())].into(),
    }
}

fn example(index: u32, scores: &[(&str, f64)]) -> pb::EvaluationExample {
    pb::EvaluationExample {
        index,
        question: format!("question {index}?"),
        reference: format!("reference {index}"),
        answer: format!("answer {index}"),
        expected_sources: vec![format!("doc-{index}")],
        retrieved_sources: vec![format!("doc-{index}"), "doc-x".to_string()],
        scores: scores
            .iter()
            .map(|(name, value)| (name.to_string(), *value))
            .collect(),
        request_id: "0190b5a0-0000-7000-8000-00000000000a".to_string(),
        latency_ms: 12.5,
        error: String::new(),
    }
}

async fn append(
    client: &mut Client,
    run_id: &str,
    examples: Vec<pb::EvaluationExample>,
) -> Result<u64, tonic::Status> {
    let request = pb::AppendEvaluationExamplesRequest {
        run_id: run_id.to_string(),
        examples,
    };
    client
        .append_evaluation_examples(request)
        .await
        .map(|response| response.into_inner().stored)
}

async fn examples(client: &mut Client, run_id: &str) -> Vec<pb::EvaluationExample> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_evaluation_examples(pb::ListEvaluationExamplesRequest {
                run_id: run_id.to_string(),
                page_size: 2,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.examples);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

async fn list_runs(client: &mut Client, model: &str, version: u32, dataset: &str) -> Vec<String> {
    let request = pb::ListEvaluationRunsRequest {
        model: model.to_string(),
        version,
        dataset: dataset.to_string(),
        page_size: 100,
        page_token: String::new(),
    };
    let runs = client.list_evaluation_runs(request).await.unwrap();
    runs.into_inner()
        .runs
        .into_iter()
        .map(|run| run.id)
        .collect()
}

#[tokio::test]
async fn a_run_keeps_its_examples_and_summarises_them_on_finish() {
    for backend in BACKENDS {
        let mut registry = Registry::start(backend).await;
        let client = &mut registry.client;
        with_prompt_versions(client, 2).await;
        let scorers = ["token_f1", "latency_ms", "retrieval_hit"];
        let run = client
            .create_evaluation_run(new_run(2, "eval.jsonl", &scorers))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(run.state(), pb::EvaluationRunState::Running, "{backend:?}");
        assert_eq!((run.model.as_str(), run.version), ("p", 2));
        assert_eq!(run.scorers, scorers);
        assert_eq!(run.actor, "ci");
        assert_eq!((run.example_count, run.finished_at_ms), (0, 0));
        uuid::Uuid::parse_str(&run.id).unwrap();

        let mut failed = example(1, &[]);
        failed.error = "serving: deadline exceeded".to_string();
        let first = example(0, &[("token_f1", 1.0), ("latency_ms", 10.0)]);
        let third = example(
            2,
            &[
                ("token_f1", 0.5),
                ("latency_ms", 30.0),
                ("retrieval_hit", 1.0),
            ],
        );
        let batch = vec![third.clone(), failed.clone(), first.clone()];
        assert_eq!(append(client, &run.id, batch).await.unwrap(), 3);
        // A retried append stores nothing, and the counts stay.
        assert_eq!(
            append(client, &run.id, vec![first.clone()]).await.unwrap(),
            0
        );
        let counted = client
            .get_evaluation_run(pb::GetEvaluationRunRequest {
                run_id: run.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((counted.example_count, counted.error_count), (3, 1));

        let finished = client
            .finish_evaluation_run(pb::FinishEvaluationRunRequest {
                run_id: run.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(finished.state(), pb::EvaluationRunState::Finished);
        assert!(finished.finished_at_ms >= finished.created_at_ms);
        let summaries: Vec<(&str, u64, f64)> = finished
            .summaries
            .iter()
            .map(|summary| (summary.scorer.as_str(), summary.count, summary.mean))
            .collect();
        assert_eq!(
            summaries,
            [
                ("token_f1", 2, 0.75),
                ("latency_ms", 2, 20.0),
                ("retrieval_hit", 1, 1.0)
            ]
        );
        // token F1 1.0 and 0.5: sd √0.125, t(0.975, 1) = 12.7062047, so
        // 0.75 ± 3.18, cut to F1's range [0, 1].
        let f1 = &finished.summaries[0];
        assert_eq!((f1.ci_low, f1.ci_high), (0.0, 1.0), "{f1:?}");
        // Latency 10 and 30: 20 ± 127.06, cut below at 0 only.
        let latency = &finished.summaries[1];
        let half = 12.706_204_736_174_698 * 200f64.sqrt() / 2f64.sqrt();
        assert_eq!(latency.ci_low, 0.0);
        assert!(
            (latency.ci_high - (20.0 + half)).abs() < 1e-6,
            "{latency:?}"
        );
        let single = &finished.summaries[2];
        assert_eq!((single.ci_low, single.ci_high), (1.0, 1.0));

        assert_status(
            "appending to a finished run",
            append(client, &run.id, vec![example(3, &[])]).await,
            Code::FailedPrecondition,
            &["is finished"],
        );
        let again = client
            .finish_evaluation_run(pb::FinishEvaluationRunRequest {
                run_id: run.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again, finished, "finishing twice changes nothing");

        let stored = examples(client, &run.id).await;
        assert_eq!(stored, vec![first.clone(), failed.clone(), third.clone()]);

        // What was acknowledged is there after a restart.
        let database = registry.stop().await;
        let mut registry = Registry::start_on(database).await;
        let client = &mut registry.client;
        let reread = client
            .get_evaluation_run(pb::GetEvaluationRunRequest {
                run_id: run.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reread, finished);
        assert_eq!(examples(client, &run.id).await, stored);
        registry.stop().await;
    }
}

#[tokio::test]
async fn runs_list_newest_first_and_versions_carry_their_lineage() {
    for backend in BACKENDS {
        let mut registry = Registry::start(backend).await;
        let client = &mut registry.client;
        with_prompt_versions(client, 2).await;
        let mut ids = Vec::new();
        for (version, dataset) in [(1, "a.jsonl"), (2, "a.jsonl"), (2, "b.jsonl")] {
            let run = client
                .create_evaluation_run(new_run(version, dataset, &["exact"]))
                .await
                .unwrap();
            ids.push(run.into_inner().id);
        }
        let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
        assert_eq!(
            list_runs(client, "", 0, "").await,
            newest_first,
            "{backend:?}"
        );
        assert_eq!(
            list_runs(client, "p", 2, "").await,
            [ids[2].clone(), ids[1].clone()]
        );
        assert_eq!(
            list_runs(client, "", 0, "a.jsonl").await,
            [ids[1].clone(), ids[0].clone()]
        );
        assert_eq!(list_runs(client, "q", 0, "").await, Vec::<String>::new());
        let mut paged = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_evaluation_runs(pb::ListEvaluationRunsRequest {
                    page_size: 1,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            paged.extend(page.runs.into_iter().map(|run| run.id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(paged, newest_first);

        let lineage = pb::Lineage {
            parent_version: 2,
            datasets: vec![pb::DatasetSource {
                name: "feedback:sft:support".to_string(),
                digest: DIGEST.to_string(),
                examples: 40,
            }],
            evaluation_runs: vec![ids[1].clone()],
        };
        let mut request = prompt_version("p", "Answer: {{ question }}");
        request.lineage = Some(lineage.clone());
        let created = client.create_version(request).await.unwrap().into_inner();
        assert_eq!(created.version, 3);
        assert_eq!(created.lineage.as_ref(), Some(&lineage));
        let read = client
            .get_version(pb::GetVersionRequest {
                model: "p".to_string(),
                selector: Some(pb::get_version_request::Selector::Version(3)),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read.lineage, Some(lineage.clone()));
        let plain = client
            .get_version(pb::GetVersionRequest {
                model: "p".to_string(),
                selector: Some(pb::get_version_request::Selector::Version(1)),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(plain.lineage, Some(pb::Lineage::default()));

        let refused = [
            (
                pb::Lineage {
                    parent_version: 9,
                    ..lineage.clone()
                },
                Code::FailedPrecondition,
                "lineage.parent_version",
            ),
            (
                pb::Lineage {
                    evaluation_runs: vec!["0190b5a0-0000-7000-8000-0000000000ff".to_string()],
                    ..lineage.clone()
                },
                Code::FailedPrecondition,
                "lineage.evaluation_runs",
            ),
            (
                pb::Lineage {
                    evaluation_runs: vec!["run-1".to_string()],
                    ..lineage.clone()
                },
                Code::InvalidArgument,
                "lineage.evaluation_runs[0]",
            ),
            (
                pb::Lineage {
                    datasets: vec![pb::DatasetSource::default()],
                    ..lineage.clone()
                },
                Code::InvalidArgument,
                "lineage.datasets[0].name",
            ),
        ];
        for (bad, code, field) in refused {
            let mut request = prompt_version("p", "{{ question }}");
            request.lineage = Some(bad);
            assert_status(field, client.create_version(request).await, code, &[field]);
        }
        let versions = client
            .list_versions(pb::ListVersionsRequest {
                model: "p".to_string(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            versions.versions.len(),
            3,
            "refused versions were not created"
        );
        registry.stop().await;
    }
}

#[tokio::test]
async fn bad_evaluation_inputs_name_the_field_and_change_nothing() {
    for backend in BACKENDS {
        let mut registry = Registry::start(backend).await;
        let client = &mut registry.client;
        with_prompt_versions(client, 1).await;
        let bad_runs = [
            (
                new_run(1, "d", &["exact", "bleu"]),
                Code::InvalidArgument,
                "scorers[1]",
            ),
            (
                new_run(1, "d", &["exact", "exact"]),
                Code::InvalidArgument,
                "named twice",
            ),
            (new_run(1, "d", &[]), Code::InvalidArgument, "scorers"),
            (
                new_run(0, "d", &["exact"]),
                Code::InvalidArgument,
                "version",
            ),
            (
                new_run(7, "d", &["exact"]),
                Code::NotFound,
                "version 7 of model `p`",
            ),
            (
                new_run(1, "", &["exact"]),
                Code::InvalidArgument,
                "dataset.name",
            ),
            (
                pb::CreateEvaluationRunRequest {
                    endpoint: "no spaces allowed".to_string(),
                    ..new_run(1, "d", &["exact"])
                },
                Code::InvalidArgument,
                "endpoint",
            ),
            (
                pb::CreateEvaluationRunRequest {
                    dataset: Some(pb::DatasetSource {
                        name: "d".to_string(),
                        digest: "abc".to_string(),
                        examples: 1,
                    }),
                    ..new_run(1, "d", &["exact"])
                },
                Code::InvalidArgument,
                "dataset.digest",
            ),
        ];
        for (request, code, field) in bad_runs {
            assert_status(
                field,
                client.create_evaluation_run(request).await,
                code,
                &[field],
            );
        }
        assert_eq!(list_runs(client, "", 0, "").await, Vec::<String>::new());

        let run = client
            .create_evaluation_run(new_run(1, "d", &["exact"]))
            .await
            .unwrap()
            .into_inner();
        let mut nan = example(0, &[("exact", f64::NAN)]);
        nan.index = 0;
        let mut failed_with_scores = example(0, &[("exact", 1.0)]);
        failed_with_scores.error = "boom".to_string();
        let mut no_question = example(0, &[]);
        no_question.question.clear();
        let mut bad_request_id = example(0, &[]);
        bad_request_id.request_id = "r-1".to_string();
        let bad_appends = [
            (vec![example(0, &[("rouge_l", 0.5)])], "examples[0].scores"),
            (vec![nan], "finite"),
            (vec![example(4, &[]), example(4, &[])], "examples[1].index"),
            (vec![failed_with_scores], "examples[0].scores"),
            (vec![no_question], "examples[0].question"),
            (vec![bad_request_id], "examples[0].request_id"),
            (Vec::new(), "examples"),
        ];
        for (batch, field) in bad_appends {
            assert_status(
                field,
                append(client, &run.id, batch).await,
                Code::InvalidArgument,
                &[field],
            );
        }
        assert_status(
            "a malformed run id",
            append(client, "run-1", vec![example(0, &[])]).await,
            Code::InvalidArgument,
            &["run_id"],
        );
        assert_status(
            "an unknown run",
            append(
                client,
                "0190b5a0-0000-7000-8000-0000000000ff",
                vec![example(0, &[])],
            )
            .await,
            Code::NotFound,
            &["evaluation run"],
        );
        assert_status(
            "finishing an unknown run",
            client
                .finish_evaluation_run(pb::FinishEvaluationRunRequest {
                    run_id: "0190b5a0-0000-7000-8000-0000000000ff".to_string(),
                })
                .await,
            Code::NotFound,
            &["evaluation run"],
        );
        assert_status(
            "version without model",
            client
                .list_evaluation_runs(pb::ListEvaluationRunsRequest {
                    version: 1,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            &["version"],
        );
        assert!(examples(client, &run.id).await.is_empty());
        registry.stop().await;
    }
}

//! (i) Evaluation runs: a dataset file through chain v1 and v2 of the
//! support bot by `keel eval run`'s code, scored and stored in the
//! registry, then compared by `keel eval compare`'s code; the run's queries
//! are in the inference log, pinned to the version and marked as the run's.
//! Then live traffic replayed through both versions, and only the requests
//! that got feedback.

use std::time::{Duration, SystemTime};

use keel::cli::eval_compare::{compare_runs, Verdict};
use keel::cli::eval_replay::{self, ReplayArgs};
use keel::cli::eval_run::{self, RunArgs, ScoringArgs, SESSION_PREFIX};
use keel::cli::ServiceUrls;
use keel_proto::v1::{
    EvaluationExample, EvaluationRunState, FeedbackKind, ListEvaluationExamplesRequest,
    ListEvaluationRunsRequest, SubmitFeedbackRequest,
};
use keel_tests::fixtures::{
    self, CHAIN_MODEL, ENDPOINT, LOYALTY_QUESTION, REFUND_QUESTION, SHIPPING_QUESTION,
    WARRANTY_QUESTION,
};
use keel_tests::{eventually, on_both_backends, Backend, Cluster, Storage};

use crate::streaming::inference_record;

on_both_backends!(evaluation_runs);

async fn evaluation_runs(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;
    let urls = ServiceUrls::of_cluster(&cluster.keel);

    let dataset_dir = tempfile::tempdir().unwrap();
    let dataset = dataset_dir.path().join("acme-eval.jsonl");
    let mut lines = Vec::new();
    for question in [
        REFUND_QUESTION,
        SHIPPING_QUESTION,
        WARRANTY_QUESTION,
        LOYALTY_QUESTION,
    ] {
        lines.push(serde_json::json!({
            "question": question.text,
            "reference": question.fact,
            "expected_sources": [question.passage_id],
            "pattern": regex_escape(question.fact),
        }));
    }
    // An example without reference or sources: only the scorers that need
    // neither score it.
    lines.push(serde_json::json!({"question": "Where is the Acme warehouse?"}));
    let text: Vec<String> = lines.iter().map(ToString::to_string).collect();
    std::fs::write(&dataset, text.join("\n") + "\n").unwrap();

    let scoring = ScoringArgs {
        scorers: [
            "contains",
            "regex",
            "token_f1",
            "retrieval_hit",
            "groundedness",
            "latency_ms",
        ]
        .map(String::from)
        .to_vec(),
        judge: None,
        concurrency: 2,
        actor: "e2e".to_string(),
    };
    let args = |version: &str| RunArgs {
        endpoint: ENDPOINT.to_string(),
        version: version.to_string(),
        dataset: dataset.clone(),
        limit: None,
        scoring: scoring.clone(),
    };
    let v1 = eval_run::evaluate(&urls, &args("1")).await.unwrap();
    assert_eq!(v1.state(), EvaluationRunState::Finished);
    assert_eq!((v1.model.as_str(), v1.version), (CHAIN_MODEL, 1));
    assert_eq!((v1.example_count, v1.error_count), (5, 0));
    assert_eq!(v1.dataset.as_ref().unwrap().examples, 5);
    assert_eq!(v1.dataset.as_ref().unwrap().name, "acme-eval.jsonl");
    let summary = |run: &keel_proto::v1::EvaluationRun, scorer: &str| {
        let found = run
            .summaries
            .iter()
            .find(|summary| summary.scorer == scorer);
        let found = found.unwrap_or_else(|| panic!("no {scorer} summary in {run:?}"));
        (found.count, found.mean)
    };
    // The extractive generator quotes the passage that holds each fact,
    // and that passage is retrieved.
    assert_eq!(summary(&v1, "contains"), (4, 1.0));
    assert_eq!(summary(&v1, "regex"), (4, 1.0));
    assert_eq!(summary(&v1, "retrieval_hit"), (4, 1.0));
    let (grounded, groundedness) = summary(&v1, "groundedness");
    assert_eq!(grounded, 5);
    assert!(
        groundedness > 0.9,
        "an extractive answer is worded from its passages: {groundedness}"
    );
    let (f1_count, f1) = summary(&v1, "token_f1");
    assert_eq!(f1_count, 4);
    assert!(
        f1 > 0.0 && f1 < 1.0,
        "a quoted sentence is longer than the fact: {f1}"
    );
    assert_eq!(summary(&v1, "latency_ms").0, 5);

    // The same dataset through v2, pinned by an alias-free reference.
    let v2 = eval_run::evaluate(&urls, &args(&format!("{CHAIN_MODEL}/2")))
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let comparison = compare_runs(&urls, &v1.id, &v2.id).await.unwrap();
    assert_eq!(comparison.paired_by, "index");
    let contains = comparison
        .scorers
        .iter()
        .find(|row| row.scorer == "contains")
        .unwrap();
    assert_eq!((contains.pairs, contains.difference), (4, 0.0));
    assert_eq!(contains.verdict, Verdict::NoSignificantDifference);

    // Each answer is in the inference log, pinned to v1, under the run.
    let examples = run_examples(&cluster, &v1.id).await;
    assert_eq!(
        examples
            .iter()
            .map(|example| example.index)
            .collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(examples[0].retrieved_sources[0], REFUND_QUESTION.passage_id);
    let record = inference_record(&cluster, &examples[0].request_id).await;
    assert_eq!(record.route_target, format!("{CHAIN_MODEL}/1"));
    assert_eq!(record.session_id, format!("{SESSION_PREFIX}{}", v1.id));
    assert_eq!(record.answer, examples[0].answer);

    // The registry lists both runs against their versions.
    let runs = cluster
        .registry
        .clone()
        .list_evaluation_runs(ListEvaluationRunsRequest {
            model: CHAIN_MODEL.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    let listed: Vec<(String, u32)> = runs
        .iter()
        .map(|run| (run.id.clone(), run.version))
        .collect();
    assert_eq!(listed, [(v2.id.clone(), 2), (v1.id.clone(), 1)]);

    // A bare version number on an endpoint routing to one model is that
    // model's; a scorer that does not exist is refused before anything runs.
    let mut unknown = args("1");
    unknown.scoring.scorers = vec!["bleu".to_string()];
    let error = eval_run::evaluate(&urls, &unknown).await.unwrap_err();
    assert!(
        error.to_string().contains("unknown scorer `bleu`"),
        "{error}"
    );
    let missing = eval_run::evaluate(&urls, &args("9")).await.unwrap_err();
    assert_eq!(
        missing.status().map(tonic::Status::code),
        Some(tonic::Code::NotFound),
        "{missing}"
    );

    replay_live_traffic(&cluster, &urls, &scoring).await;
    cluster.shutdown().await;
}

/// Three live questions, feedback on two; replayed through v1 and v2 (the
/// evaluation runs' own queries left out of the slice), and only the
/// requests with feedback, with the correction as the reference.
async fn replay_live_traffic(cluster: &Cluster, urls: &ServiceUrls, scoring: &ScoringArgs) {
    let started = SystemTime::now();
    let mut live = Vec::new();
    for question in [REFUND_QUESTION, SHIPPING_QUESTION, WARRANTY_QUESTION] {
        live.push(fixtures::query(cluster, ENDPOINT, question.text, "dana").await);
    }
    let mut feedback = cluster.feedback.clone();
    let verdicts = [
        (FeedbackKind::Thumbs, 1.0, ""),
        (FeedbackKind::Correction, 0.0, "Rotterdam."),
    ];
    for (response, (kind, value, correction)) in live.iter().zip(verdicts) {
        feedback
            .submit_feedback(SubmitFeedbackRequest {
                request_id: response.request_id.clone(),
                kind: kind as i32,
                value,
                correction: correction.to_string(),
                user_id: "dana".to_string(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for response in &live {
        inference_record(cluster, &response.request_id).await;
    }
    let until = SystemTime::now() + Duration::from_secs(1);
    let replay_args = |version: &str, with_feedback: bool| ReplayArgs {
        endpoint: ENDPOINT.to_string(),
        version: version.to_string(),
        since: Some(started - Duration::from_secs(1)),
        until: Some(until),
        last: None,
        with_feedback,
        limit: None,
        scoring: scoring.clone(),
    };

    let on_v1 = eval_replay::replay(urls, &replay_args("1", false))
        .await
        .unwrap();
    assert_eq!((on_v1.example_count, on_v1.error_count), (3, 0));
    let dataset = on_v1.dataset.clone().unwrap();
    assert!(
        dataset.name.starts_with(&format!("replay:{ENDPOINT}:")),
        "{}",
        dataset.name
    );
    let on_v2 = eval_replay::replay(urls, &replay_args("2", false))
        .await
        .unwrap();
    assert_eq!(
        on_v2.dataset,
        Some(dataset),
        "the same slice, the same dataset"
    );
    let comparison = compare_runs(urls, &on_v1.id, &on_v2.id).await.unwrap();
    assert_eq!(comparison.paired_by, "index");
    let groundedness = comparison
        .scorers
        .iter()
        .find(|row| row.scorer == "groundedness")
        .unwrap();
    assert_eq!(groundedness.pairs, 3);

    // Feedback that came before its record is exported once the two are
    // joined.
    let feedback_args = replay_args("2", true);
    eventually(
        "both judged requests in the feedback slice",
        Duration::from_secs(15),
        || async {
            let dataset = eval_replay::slice(urls, &feedback_args).await.ok()?;
            (dataset.examples.len() == 2).then_some(())
        },
    )
    .await;
    let judged = eval_replay::replay(urls, &feedback_args).await.unwrap();
    assert_eq!(judged.example_count, 2);
    assert!(judged.dataset.unwrap().name.ends_with(":feedback"));
    let examples = run_examples(cluster, &judged.id).await;
    let references: Vec<(&str, &str)> = examples
        .iter()
        .map(|example| (example.question.as_str(), example.reference.as_str()))
        .collect();
    // The liked answer is its own reference; the corrected one has the correction.
    assert!(
        references.contains(&(SHIPPING_QUESTION.text, "Rotterdam.")),
        "{references:?}"
    );
    assert!(
        references.contains(&(REFUND_QUESTION.text, live[0].answer.as_str())),
        "{references:?}"
    );
}

/// A run's examples as the registry stored them (fewer than a page here).
async fn run_examples(cluster: &Cluster, run_id: &str) -> Vec<EvaluationExample> {
    let request = ListEvaluationExamplesRequest {
        run_id: run_id.to_string(),
        page_size: 100,
        page_token: String::new(),
    };
    let mut registry = cluster.registry.clone();
    let page = registry.list_evaluation_examples(request).await.unwrap();
    page.into_inner().examples
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

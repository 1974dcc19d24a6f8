//! (h) The default loop with the real models: `samples/corpus` ingested by
//! `keel ingest`'s code into a collection that names no embedder (so the
//! service default, `minilm`, embeds it), the sample prompt and chain
//! (`smollm2`) registered from `samples/specs`, and questions whose answers
//! are in the corpus: the passage that holds the answer is the top citation
//! and SmolLM2 answers. Then a streamed SmolLM2 answer whose client leaves
//! after the first delta: generation stops within a few tokens.

use std::path::{Path, PathBuf};

use keel::cli::registry::ModelKindArg;
use keel::cli::{demo, eval_run, ingest, ServiceUrls};
use keel_proto::v1::{
    create_version_request, ChainSpec, FinishReason, GenerationParams, GeneratorSpec,
    InferenceStatus, ModelKind, PromptSpec,
};
use keel_tests::fixtures;
use keel_tests::{on_both_backends, real_model_catalog, Backend, Cluster, Storage};

use crate::streaming::{inference_record, leave_after_first_delta};

on_both_backends!(real_models);

/// The names `samples/specs/chain.yaml` refers to.
const COLLECTION: &str = "handbook";
const PROMPT_MODEL: &str = "support-prompt";
const CHAIN_MODEL: &str = "support-bot";
const ENDPOINT: &str = "support";

/// Questions whose answer sits in one file of `samples/corpus`.
const QUESTIONS: [(&str, &str); 8] = [
    (
        "How many days do customers have to request a refund on an annual plan?",
        "refund-policy.md",
    ),
    (
        "What is the API rate limit on the Team plan?",
        "api-rate-limits.md",
    ),
    (
        "How long is a password reset link valid?",
        "password-reset.md",
    ),
    (
        "Who is the escalation manager for the on-call rotation?",
        "on-call-rotation.md",
    ),
    (
        "Which identity providers are tested for single sign-on?",
        "single-sign-on.md",
    ),
    (
        "How long are request logs kept on the Enterprise plan?",
        "data-retention.md",
    ),
    (
        "On which days and hours is support staffed?",
        "support-hours.md",
    ),
    (
        "What does severity 1 mean for an incident?",
        "incident-severity.md",
    ),
];

/// A prompt and chain that make SmolLM2 write far more than the client
/// waits for.
const LONG_PROMPT_MODEL: &str = "counting-prompt";
const LONG_CHAIN_MODEL: &str = "counting-chain";
const LONG_ENDPOINT: &str = "counting";
const LONG_MAX_TOKENS: u32 = 400;
/// Tokens the generator may still make after the client left: the deltas in
/// flight between the generator and the closed stream.
const TOKENS_AFTER_LEAVING: u32 = 24;

async fn real_models(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start_with_catalog(storage.config(), real_model_catalog().await).await;
    let urls = ServiceUrls::of_cluster(&cluster.keel);

    // No embedder named: the service's default, minilm.
    let collection = fixtures::create_text_collection(&cluster, COLLECTION, "").await;
    assert_eq!(collection.embedder, "minilm");
    assert_eq!(collection.dimension, 384);
    let summary = ingest::ingest(
        &urls,
        &repo_path("samples/corpus"),
        COLLECTION,
        ingest::ChunkOptions::default(),
    )
    .await
    .expect("ingest samples/corpus");
    assert_eq!(summary.files, 8);

    let specs = repo_path("samples/specs");
    // As `keel model create`, `keel version create` and `keel alias set`.
    for (model, kind, file) in [
        (PROMPT_MODEL, ModelKindArg::Prompt, "prompt.yaml"),
        (CHAIN_MODEL, ModelKindArg::Chain, "chain.yaml"),
    ] {
        demo::register(&urls, model, kind, &specs.join(file))
            .await
            .unwrap_or_else(|error| panic!("register {model} from {file}: {error}"));
    }
    let target = format!("{CHAIN_MODEL}@champion");
    fixtures::create_endpoint(&cluster, ENDPOINT, &[(target.as_str(), 100)]).await;

    for (number, (question, source)) in QUESTIONS.iter().enumerate() {
        let user = format!("reader-{number}");
        let response = fixtures::query(&cluster, ENDPOINT, question, &user).await;
        let top = &response.citations[0].point_id;
        assert!(
            top.starts_with(&format!("{source}#")),
            "{question:?}: the top citation is {top}, not a passage of {source}; citations: {:?}",
            response
                .citations
                .iter()
                .map(|citation| citation.point_id.as_str())
                .collect::<Vec<_>>()
        );
        assert_eq!(response.generator, "smollm2");
        assert!(
            !response.answer.trim().is_empty(),
            "{question:?}: no answer"
        );
        assert!(
            !response.answer.contains("<|im_"),
            "{question:?}: a special token in {:?}",
            response.answer
        );
        let usage = response.usage.expect("usage");
        assert!(
            usage.input_tokens > 50,
            "{usage:?}: the passages are in the prompt"
        );
        assert!(
            usage.output_tokens > 0 && usage.output_tokens <= 120,
            "{usage:?}"
        );
    }

    evaluate_with_smollm2_as_judge(&urls).await;

    register_long_chain(&cluster).await;
    let request = fixtures::query_request(
        LONG_ENDPOINT,
        "Count from 1 to 500, writing every number in words.",
        "leaver",
    );
    let (request_id, first_delta) = leave_after_first_delta(&cluster, request).await;
    assert!(!first_delta.is_empty());
    let record = inference_record(&cluster, &request_id).await;
    assert_eq!(
        record.status,
        InferenceStatus::Ok as i32,
        "{}",
        record.error
    );
    assert_eq!(record.finish_reason, FinishReason::Cancelled as i32);
    assert_eq!(record.generator, "smollm2");
    let output_tokens = record.usage.expect("usage").output_tokens;
    assert!(
        (1..=1 + TOKENS_AFTER_LEAVING).contains(&output_tokens),
        "{output_tokens} tokens generated of {LONG_MAX_TOKENS}: the generator did not stop when \
         the client left; answer {:?}",
        record.answer
    );
    assert!(
        record.answer.starts_with(first_delta.as_str()),
        "{}",
        record.answer
    );

    cluster.shutdown().await;
}

/// The reference answer of each of `QUESTIONS`, in order, as the corpus
/// words it.
const REFERENCES: [&str; 8] = [
    "30 days",
    "600 requests per minute",
    "45 minutes",
    "Priya Raman",
    "Okta, Microsoft Entra ID, Google Workspace and Keycloak",
    "365 days",
    "Monday to Friday from 08:00 to 20:00",
    "the product is down or data is at risk for many customers",
];

/// `keel eval run` over the questions against the sample chain, with
/// SmolLM2 also grading each answer as the judge.
async fn evaluate_with_smollm2_as_judge(urls: &ServiceUrls) {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("handbook-eval.jsonl");
    let lines: Vec<String> = QUESTIONS
        .iter()
        .zip(REFERENCES)
        .map(|((question, _), reference)| {
            serde_json::json!({"question": question, "reference": reference}).to_string()
        })
        .collect();
    std::fs::write(&dataset, lines.join("\n") + "\n").unwrap();
    let args = eval_run::RunArgs {
        endpoint: ENDPOINT.to_string(),
        version: "1".to_string(),
        dataset,
        limit: None,
        scoring: eval_run::ScoringArgs {
            scorers: ["contains", "token_f1", "groundedness", "latency_ms"]
                .map(String::from)
                .to_vec(),
            judge: Some("smollm2".to_string()),
            concurrency: 2,
            actor: "e2e".to_string(),
        },
    };
    let run = eval_run::evaluate(urls, &args)
        .await
        .expect("keel eval run");
    assert_eq!((run.model.as_str(), run.version), (CHAIN_MODEL, 1));
    assert_eq!((run.example_count, run.error_count), (8, 0), "{run:?}");
    let summary = |scorer: &str| {
        run.summaries
            .iter()
            .find(|summary| summary.scorer == scorer)
            .map(|summary| (summary.count, summary.mean))
    };
    eprintln!("real-model evaluation run: {:?}", run.summaries);
    assert_eq!(summary("token_f1").map(|(count, _)| count), Some(8));
    assert_eq!(summary("latency_ms").map(|(count, _)| count), Some(8));
    let (grounded, groundedness) = summary("groundedness").expect("groundedness");
    assert_eq!(grounded, 8);
    assert!(
        groundedness > 0.5,
        "SmolLM2 answers mostly in the words of its passages: {groundedness}"
    );
    let (judged, _) = summary("judge").expect("SmolLM2 graded some answers");
    assert!((1..=8).contains(&judged), "{judged}");
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

async fn register_long_chain(cluster: &Cluster) {
    fixtures::create_model(cluster, LONG_PROMPT_MODEL, ModelKind::Prompt).await;
    fixtures::create_version(
        cluster,
        LONG_PROMPT_MODEL,
        create_version_request::Spec::Prompt(PromptSpec {
            template: "{{ question }}".to_string(),
        }),
    )
    .await;
    let chain = ChainSpec {
        collection: COLLECTION.to_string(),
        top_k: 1,
        filter: None,
        prompt: format!("{LONG_PROMPT_MODEL}/1"),
        generator: Some(GeneratorSpec {
            name: "smollm2".to_string(),
            params: Some(GenerationParams {
                temperature: Some(0.0),
                max_tokens: Some(LONG_MAX_TOKENS),
                ..Default::default()
            }),
            model: String::new(),
        }),
        fallbacks: Vec::new(),
        retrieval_mode: 0,
    };
    fixtures::register_chain_endpoint(cluster, LONG_CHAIN_MODEL, chain, LONG_ENDPOINT).await;
}

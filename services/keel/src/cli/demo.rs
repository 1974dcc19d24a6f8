//! `keel demo`: Keel's main job end to end in one command, through the same
//! client functions as the CLI commands. Every step tolerates what an
//! earlier run on the same data dir left behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_proto::v1::{GetInferenceRequest, GetTraceRequest, Trace};

use crate::cli::collection::{self, CreateCollectionArgs, MetricArg};
use crate::cli::endpoint::{self, CreateEndpointArgs, RouteArg};
use crate::cli::eval_run;
use crate::cli::feedback::{self, DatasetKindArg, Verdict};
use crate::cli::metrics::{self, MetricsArgs};
use crate::cli::query::{self, QueryArgs};
use crate::cli::registry::{self, CreateModelArgs, ModelKindArg, SetAliasArgs};
use crate::cli::{demo_improve, ingest, output, trace, up, CliError, ServiceUrls};
use crate::cluster::Service;

/// The repository's samples, found at compile time.
const SAMPLES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../samples");

const COLLECTION: &str = "handbook";
const PROMPT_MODEL: &str = "support-prompt";
const CHAIN_MODEL: &str = "support-bot";
const ENDPOINT: &str = "support";
const ALIAS: &str = "champion";

/// Questions whose answers are in the sample corpus.
const QUESTIONS: [&str; 4] = [
    "How many days do customers have to request a refund on an annual plan?",
    "What is the API rate limit on the Team plan?",
    "How long is a password reset link valid?",
    "Who is the escalation manager for the on-call rotation?",
];

/// The correction posted with the thumbs down on the second answer.
const CORRECTION: &str =
    "On the Team plan the API rate limit is 600 requests per minute per workspace.";

/// How long the demo waits for serving to deliver the inference records
/// that feedback joins with.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its data [default: a new directory under the system temp dir]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The documents to ingest [default: the repository's samples/corpus]
    #[arg(long, value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    /// Where prompt.yaml and chain.yaml are [default: the repository's samples/specs]
    #[arg(long, value_name = "DIR")]
    pub specs: Option<PathBuf>,
}

struct DemoPaths {
    data_dir: PathBuf,
    corpus: PathBuf,
    specs: PathBuf,
}

pub async fn run(args: DemoArgs) -> Result<(), CliError> {
    let samples = Path::new(SAMPLES_DIR);
    let paths = DemoPaths {
        data_dir: args.data_dir.unwrap_or_else(fresh_data_dir),
        corpus: readable_path(args.corpus.unwrap_or_else(|| samples.join("corpus"))).await,
        specs: readable_path(args.specs.unwrap_or_else(|| samples.join("specs"))).await,
    };
    let config = up::load_config(None, Some(paths.data_dir.clone()))?;
    // The services' logs would drown the demo's story (RUST_LOG brings them
    // back); their spans go to the trace store as with `keel up`.
    keel_core::telemetry::init_quiet("keel", &config.telemetry)
        .map_err(|error| CliError::Invalid(error.to_string()))?;
    let models_dir = config
        .models
        .clone()
        .with_default_dir(&config.common.data_dir)
        .dir;
    output::demo_note(&format!(
        "fetching the models (all-MiniLM-L6-v2, SmolLM2-135M-Instruct) into {}",
        models_dir.display()
    ));
    crate::cli::models::fetch_models(keel_models::model_files::FetchOptions::new(&models_dir))
        .await?;
    output::demo_step(
        1,
        &format!(
            "starting the five services, data in {}",
            paths.data_dir.display()
        ),
    );
    let running = up::start_cluster(config).await?;
    let urls = ServiceUrls::of_cluster(&running);
    for service in Service::ALL {
        output::listening(
            service.name(),
            &running.grpc_url(service),
            &running.admin_url(service),
        );
    }
    let outcome = run_steps(&urls, &paths).await;
    output::demo_step(15, "shutting down");
    let stopped = running.shutdown().await;
    outcome?;
    stopped?;
    output::demo_note(&format!(
        "done; the data and the exports stay in {}",
        paths.data_dir.display()
    ));
    Ok(())
}

async fn run_steps(urls: &ServiceUrls, paths: &DemoPaths) -> Result<(), CliError> {
    output::demo_step(
        2,
        &format!("creating collection {COLLECTION} (minilm embedder, cosine)"),
    );
    let collection_args = CreateCollectionArgs {
        name: COLLECTION.to_string(),
        embedder: keel_models::MINILM_EMBEDDER_NAME.to_string(),
        dimension: 0,
        metric: MetricArg::Cosine,
        // Ingest tags each chunk with its source file: filtering on it
        // needs no scan.
        indexed_keys: vec!["source".to_string()],
    };
    match already_exists_is_fine(collection::create(urls, &collection_args).await)? {
        Some(created) => output::collection(&created),
        None => output::demo_note("the collection exists from an earlier run; reusing it"),
    }

    output::demo_step(3, &format!("ingesting {}", paths.corpus.display()));
    let summary = ingest::ingest(
        urls,
        &paths.corpus,
        COLLECTION,
        ingest::ChunkOptions::default(),
    )
    .await?;
    output::ingested(COLLECTION, &summary);

    output::demo_step(
        4,
        &format!("registering the prompt {PROMPT_MODEL} and pointing @{ALIAS} at it"),
    );
    register(
        urls,
        PROMPT_MODEL,
        ModelKindArg::Prompt,
        &paths.specs.join("prompt.yaml"),
    )
    .await?;

    output::demo_step(
        5,
        &format!("registering the chain {CHAIN_MODEL} and pointing @{ALIAS} at it"),
    );
    register(
        urls,
        CHAIN_MODEL,
        ModelKindArg::Chain,
        &paths.specs.join("chain.yaml"),
    )
    .await?;

    output::demo_step(
        6,
        &format!("creating endpoint {ENDPOINT} -> {CHAIN_MODEL}@{ALIAS}"),
    );
    let endpoint_args = CreateEndpointArgs {
        name: ENDPOINT.to_string(),
        routes: vec![RouteArg {
            target: format!("{CHAIN_MODEL}@{ALIAS}"),
            weight: 100,
        }],
        description: "Keel support questions".to_string(),
        shadow: None,
    };
    let endpoint = match already_exists_is_fine(endpoint::create(urls, &endpoint_args).await)? {
        Some(created) => created,
        None => endpoint::update(urls, &endpoint_args).await?,
    };
    output::endpoint(&endpoint);

    output::demo_step(7, "asking questions");
    let mut request_ids = Vec::new();
    let mut trace_ids = Vec::new();
    let mut first_passages = Vec::new();
    for (number, question) in QUESTIONS.iter().enumerate() {
        let query_args = QueryArgs {
            endpoint: ENDPOINT.to_string(),
            question: question.to_string(),
            user: Some(format!("demo-user-{}", number + 1)),
            stream: false,
        };
        let response = query::query(urls, &query_args).await?;
        output::demo_answer(question, &response);
        if number == 0 {
            first_passages = response
                .citations
                .iter()
                .map(|citation| citation.point_id.clone())
                .collect();
        }
        request_ids.push(response.request_id);
        trace_ids.push(response.trace_id);
    }

    output::demo_step(8, "waiting for the inference records to reach monitoring");
    wait_for_inference_records(urls, &request_ids).await?;
    output::demo_note(&format!("{} records logged", request_ids.len()));

    output::demo_step(
        9,
        "the first question's trace, from monitoring's trace store (keel trace <id>)",
    );
    let first_trace = wait_for_trace(urls, &trace_ids[0]).await?;
    output::trace(&trace::render_trace(&first_trace));

    output::demo_step(
        10,
        "posting feedback: a thumbs up, a thumbs down with a correction, and the first \
         answer's best and worst passages judged relevant and not",
    );
    let mut posts = vec![
        (&request_ids[0], Verdict::Up),
        (&request_ids[1], Verdict::Down),
        (&request_ids[1], Verdict::Correction(CORRECTION.to_string())),
    ];
    if let (Some(best), Some(worst)) = (first_passages.first(), first_passages.last()) {
        posts.push((
            &request_ids[0],
            Verdict::Relevance {
                passage_id: best.clone(),
                relevant: true,
            },
        ));
        if worst != best {
            posts.push((
                &request_ids[0],
                Verdict::Relevance {
                    passage_id: worst.clone(),
                    relevant: false,
                },
            ));
        }
    }
    for (request_id, verdict) in posts {
        let request = feedback::submit_request(request_id, &verdict, "demo-reviewer", "");
        let record = feedback::submit(urls, request).await?;
        output::feedback_recorded(&record);
    }

    output::demo_step(11, "exporting datasets");
    let exports_dir = paths.data_dir.join("exports");
    tokio::fs::create_dir_all(&exports_dir)
        .await
        .map_err(CliError::io(&exports_dir))?;
    for kind in [
        DatasetKindArg::Sft,
        DatasetKindArg::Preference,
        DatasetKindArg::Eval,
        DatasetKindArg::Retrieval,
    ] {
        let out = exports_dir.join(format!("{}.jsonl", kind.name()));
        let summary =
            feedback::export(urls, feedback::export_request(kind, ENDPOINT), &out).await?;
        output::exported(kind.name(), &out, &summary);
    }

    output::demo_step(
        12,
        "evaluating the chain on the exported eval set (keel eval run), stored in the registry",
    );
    evaluate_on_export(urls, &exports_dir.join("eval.jsonl")).await?;

    output::demo_step(
        13,
        "closing the loop (keel improve): a few-shot challenger built from the feedback, \
         evaluated against the champion on a held-out example, then an experiment in which \
         simulated users prefer the challenger's answers, and its promotion",
    );
    demo_improve::close_the_loop(urls, ENDPOINT, &paths.data_dir.join("improve"), &QUESTIONS)
        .await?;

    output::demo_step(14, "metrics");
    let metrics_args = MetricsArgs {
        endpoint: ENDPOINT.to_string(),
        window: 3600,
    };
    let endpoint_metrics = metrics::metrics(urls, &metrics_args).await?;
    output::metrics(&endpoint_metrics);
    Ok(())
}

/// `keel eval run` of @champion on the eval export: the feedback's
/// corrections and liked answers become references, and the run is stored
/// against the version. An empty export (nothing judged) is said, not run.
async fn evaluate_on_export(urls: &ServiceUrls, dataset: &Path) -> Result<(), CliError> {
    let text = tokio::fs::read_to_string(dataset)
        .await
        .map_err(CliError::io(dataset))?;
    if text.trim().is_empty() {
        output::demo_note("the eval export is empty: nothing to evaluate");
        return Ok(());
    }
    let args = eval_run::RunArgs {
        endpoint: ENDPOINT.to_string(),
        version: format!("{CHAIN_MODEL}@{ALIAS}"),
        dataset: dataset.to_path_buf(),
        limit: None,
        scoring: eval_run::ScoringArgs {
            scorers: ["contains", "token_f1", "groundedness", "latency_ms"]
                .map(String::from)
                .to_vec(),
            judge: None,
            concurrency: 2,
            actor: "keel-demo".to_string(),
        },
    };
    let run = eval_run::evaluate(urls, &args).await?;
    output::evaluation_run(&run);
    Ok(())
}

/// Creates the model (unless it exists), a version from `spec`, and moves
/// `@champion` to that version, printing each step.
pub async fn register(
    urls: &ServiceUrls,
    model: &str,
    kind: ModelKindArg,
    spec: &Path,
) -> Result<(), CliError> {
    let model_args = CreateModelArgs {
        name: model.to_string(),
        kind,
        description: String::new(),
    };
    match already_exists_is_fine(registry::create_model(urls, &model_args).await)? {
        Some(created) => output::model(&created),
        None => output::demo_note(&format!(
            "model {model} exists from an earlier run; adding a version"
        )),
    }
    let version = registry::create_version(urls, model, spec).await?;
    output::version(&version);
    let alias_args = SetAliasArgs {
        model: model.to_string(),
        alias: ALIAS.to_string(),
        version: version.version,
        expect: None,
        actor: "keel-demo".to_string(),
        reason: "demo".to_string(),
        override_gate: false,
    };
    let event = registry::set_alias(urls, &alias_args).await?;
    output::alias_moved(&event);
    Ok(())
}

/// Feedback joins the inference record, which serving delivers off the
/// request path: poll monitoring until every record is there.
async fn wait_for_inference_records(
    urls: &ServiceUrls,
    request_ids: &[String],
) -> Result<(), CliError> {
    let mut client = urls.monitoring().await?;
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    for request_id in request_ids {
        loop {
            let request = GetInferenceRequest {
                request_id: request_id.clone(),
            };
            match client.get_inference(request).await {
                Ok(_) => break,
                Err(status)
                    if status.code() == tonic::Code::NotFound && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) if status.code() == tonic::Code::NotFound => {
                    return Err(CliError::Invalid(format!(
                        "the inference record of request {request_id} did not reach monitoring within {} s",
                        DELIVERY_DEADLINE.as_secs()
                    )));
                }
                Err(status) => {
                    return Err(crate::cli::error::rpc("monitoring GetInference")(status))
                }
            }
        }
    }
    Ok(())
}

/// Spans reach the trace store in batches, off the request path: poll
/// until the query's call and its generation are both there.
async fn wait_for_trace(urls: &ServiceUrls, trace_id: &str) -> Result<Trace, CliError> {
    let mut client = urls.monitoring().await?;
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    loop {
        let request = GetTraceRequest {
            trace_id: trace_id.to_string(),
        };
        let found = match client.get_trace(request).await {
            Ok(response) => Some(response.into_inner()),
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => return Err(crate::cli::error::rpc("monitoring GetTrace")(status)),
        };
        if let Some(trace) = found.filter(is_complete) {
            return Ok(trace);
        }
        if Instant::now() >= deadline {
            return Err(CliError::Invalid(format!(
                "the spans of trace {trace_id} did not reach monitoring within {} s",
                DELIVERY_DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The query's span (serving's server span of the call) ends last, after
/// the generation's.
fn is_complete(trace: &Trace) -> bool {
    let has = |prefix: &str| trace.spans.iter().any(|span| span.name.starts_with(prefix));
    has("query ") && has("chat ")
}

/// `Ok(None)` when the call failed only because the thing exists already.
fn already_exists_is_fine<T>(result: Result<T, CliError>) -> Result<Option<T>, CliError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(error)
            if error.status().map(tonic::Status::code) == Some(tonic::Code::AlreadyExists) =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

fn fresh_data_dir() -> PathBuf {
    std::env::temp_dir().join(format!("keel-demo-{}", uuid::Uuid::now_v7()))
}

/// `samples/corpus` rather than `services/keel/../../samples/corpus` in
/// what the demo prints.
async fn readable_path(path: PathBuf) -> PathBuf {
    tokio::fs::canonicalize(&path).await.unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_already_exists_is_tolerated() {
        let exists: Result<(), CliError> = Err(crate::cli::error::rpc("x")(
            tonic::Status::already_exists("x"),
        ));
        assert!(matches!(already_exists_is_fine(exists), Ok(None)));
        let missing: Result<(), CliError> =
            Err(crate::cli::error::rpc("x")(tonic::Status::not_found("x")));
        assert!(already_exists_is_fine(missing).is_err());
        assert!(matches!(already_exists_is_fine(Ok(7)), Ok(Some(7))));
    }

    #[test]
    fn the_samples_are_where_the_demo_looks() {
        let samples = Path::new(SAMPLES_DIR);
        assert!(samples.join("corpus/refund-policy.md").is_file());
        assert!(samples.join("specs/prompt.yaml").is_file());
        assert!(samples.join("specs/chain.yaml").is_file());
    }
}

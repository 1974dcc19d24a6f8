//! `keel eval run`: every example of a dataset through one version of an
//! endpoint's chain (served for real, pinned with the query's `target`),
//! each answer scored, and the run stored in the registry against the
//! version — per example and summarised.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use futures::StreamExt;
use keel_core::channel::ServiceChannel;
use keel_eval::{Scorer, ScorerInput};
use keel_proto::v1 as pb;
use keel_types::ModelRef;

use crate::cli::error::rpc;
use crate::cli::eval_dataset::{read_dataset, Dataset, Example};
use crate::cli::{output, CliError, ServiceUrls};

/// What a run scores when `--scorers` is not given: everything that needs
/// no generator of its own.
pub const DEFAULT_SCORERS: &str =
    "contains,token_f1,rouge_l,retrieval_hit,groundedness,latency_ms,cost_usd";
/// Examples sent to the registry per call.
const APPEND_BATCH: usize = 50;
/// Inference records of a run share this session id prefix, so the run's
/// traffic can be told from live traffic and found again.
pub const SESSION_PREFIX: &str = "keel-eval:";

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The endpoint the examples are sent through
    #[arg(long)]
    pub endpoint: String,
    /// The version to evaluate: N (of the model the endpoint routes to),
    /// MODEL/N or MODEL@ALIAS
    #[arg(long)]
    pub version: String,
    /// JSONL examples: {"question", "reference"?, "expected_sources"?,
    /// "pattern"?} per line (a feedback EVAL export reads as is)
    #[arg(long)]
    pub dataset: PathBuf,
    /// Only the first N examples
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub scoring: ScoringArgs,
}

/// How the answers are scored and sent, for `keel eval run` and `replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoringArgs {
    /// Comma-separated scorers: exact, contains, regex, token_f1, rouge_l,
    /// retrieval_hit, groundedness, latency_ms, cost_usd, judge
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_SCORERS)]
    pub scorers: Vec<String>,
    /// A generator of serving's catalog that grades each answer 1–5 (the
    /// `judge` scorer, added when this is given)
    #[arg(long)]
    pub judge: Option<String>,
    /// Examples in flight at once
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Who runs it, for the registry
    #[arg(long, default_value = "")]
    pub actor: String,
}

pub async fn run(urls: &ServiceUrls, args: RunArgs) -> Result<(), CliError> {
    let run = evaluate(urls, &args).await?;
    output::evaluation_run(&run);
    Ok(())
}

/// Runs the evaluation and returns the finished run as the registry
/// stored it.
pub async fn evaluate(urls: &ServiceUrls, args: &RunArgs) -> Result<pb::EvaluationRun, CliError> {
    // Checked before the file is read: a typo fails at once.
    parse_scorers(&args.scoring.scorers)?;
    let dataset = read_dataset(&args.dataset, args.limit)?;
    evaluate_dataset(urls, &args.endpoint, &args.version, &args.scoring, &dataset).await
}

/// Runs `dataset` through `version` (N, MODEL/N or MODEL@ALIAS) behind
/// `endpoint` and stores the run.
pub async fn evaluate_dataset(
    urls: &ServiceUrls,
    endpoint: &str,
    version: &str,
    args: &ScoringArgs,
    dataset: &Dataset,
) -> Result<pb::EvaluationRun, CliError> {
    let mut scorers = parse_scorers(&args.scorers)?;
    match (&args.judge, scorers.contains(&Scorer::Judge)) {
        (Some(_), false) => scorers.push(Scorer::Judge),
        (None, true) => {
            return Err(CliError::Invalid(
                "the `judge` scorer needs --judge GENERATOR".to_string(),
            ))
        }
        _ => {}
    }
    let mut registry = urls.registry().await?;
    let mut serving = urls.serving().await?;
    let reference = version_reference(&mut serving, endpoint, version).await?;
    let version = registry
        .resolve_reference(pb::ResolveReferenceRequest {
            reference: reference.clone(),
        })
        .await
        .map_err(rpc("ResolveReference"))?
        .into_inner();
    let run = registry
        .create_evaluation_run(pb::CreateEvaluationRunRequest {
            model: version.model.clone(),
            version: version.version,
            endpoint: endpoint.to_string(),
            dataset: Some(pb::DatasetSource {
                name: dataset.name.clone(),
                digest: dataset.digest.clone(),
                examples: dataset.examples.len() as u64,
            }),
            scorers: scorers
                .iter()
                .map(|scorer| scorer.name().to_string())
                .collect(),
            actor: args.actor.clone(),
            tags: [("target".to_string(), reference)].into(),
        })
        .await
        .map_err(rpc("CreateEvaluationRun"))?
        .into_inner();
    // Pinned to the number: an alias moving mid-run changes nothing.
    let target = format!("{}/{}", version.model, version.version);
    let session_id = format!("{SESSION_PREFIX}{}", run.id);
    let progress = output::progress_bar(dataset.examples.len() as u64, "examples");
    let answers = futures::stream::iter(&dataset.examples)
        .map(|example| {
            let mut serving = serving.clone();
            let request = pb::QueryRequest {
                endpoint: endpoint.to_string(),
                question: example.question.clone(),
                target: target.clone(),
                full_citation_text: true,
                user_id: "keel-eval".to_string(),
                session_id: session_id.clone(),
                ..Default::default()
            };
            let scorers = &scorers;
            async move {
                let answered = serving.query(request).await;
                let (mut stored, passages) = scored_example(example, scorers, answered);
                let mut judge_failure = None;
                if let Some(judge) = args.judge.as_deref().filter(|_| stored.error.is_empty()) {
                    match judge_score(&mut serving, judge, example, &stored, &passages).await {
                        Ok(Some(score)) => {
                            stored
                                .scores
                                .insert(Scorer::Judge.name().to_string(), score);
                        }
                        Ok(None) => {}
                        Err(error) => judge_failure = Some(error),
                    }
                }
                (stored, judge_failure)
            }
        })
        .buffered(args.concurrency as usize);
    let mut answers = std::pin::pin!(answers);
    let mut batch = Vec::with_capacity(APPEND_BATCH);
    let mut judge_failures = Vec::new();
    while let Some((stored, judge_failure)) = answers.next().await {
        judge_failures.extend(judge_failure);
        batch.push(stored);
        progress.inc(1);
        if batch.len() == APPEND_BATCH {
            append(&mut registry, &run.id, std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        append(&mut registry, &run.id, batch).await?;
    }
    progress.finish_and_clear();
    if let Some(first) = judge_failures.first() {
        output::warning(&format!(
            "the judge failed on {} examples (they have no judge score); the first: {first}",
            judge_failures.len()
        ));
    }
    let finished = registry
        .finish_evaluation_run(pb::FinishEvaluationRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .map_err(rpc("FinishEvaluationRun"))?
        .into_inner();
    Ok(finished)
}

/// The scorers by name, each once, in the order given.
pub fn parse_scorers(names: &[String]) -> Result<Vec<Scorer>, CliError> {
    let mut seen = BTreeSet::new();
    let mut scorers = Vec::new();
    for name in names {
        let scorer = Scorer::parse(name.trim()).map_err(CliError::Invalid)?;
        if seen.insert(scorer) {
            scorers.push(scorer);
        }
    }
    if scorers.is_empty() {
        return Err(CliError::Invalid("--scorers names no scorer".to_string()));
    }
    Ok(scorers)
}

/// `--version` as a reference: MODEL/N and MODEL@ALIAS as given; a bare N
/// is a version of the one model the endpoint routes to.
async fn version_reference(
    serving: &mut pb::serving_service_client::ServingServiceClient<ServiceChannel>,
    endpoint: &str,
    version: &str,
) -> Result<String, CliError> {
    if version.contains('/') || version.contains('@') {
        return ModelRef::parse("--version", version)
            .map(|reference| reference.to_string())
            .map_err(|error| CliError::Invalid(error.to_string()));
    }
    let number: u32 = version.parse().map_err(|_| {
        CliError::Invalid(format!(
            "--version must be N, MODEL/N or MODEL@ALIAS, got {version:?}"
        ))
    })?;
    let routes = serving
        .get_endpoint(pb::GetEndpointRequest {
            name: endpoint.to_string(),
        })
        .await
        .map_err(rpc("GetEndpoint"))?
        .into_inner()
        .routes;
    let mut models = BTreeSet::new();
    for route in &routes {
        let target = ModelRef::parse("route", &route.target)
            .map_err(|error| CliError::Invalid(error.to_string()))?;
        models.insert(target.model);
    }
    match models.len() {
        1 => Ok(format!(
            "{}/{number}",
            models.into_iter().next().unwrap_or_default()
        )),
        _ => Err(CliError::Invalid(format!(
            "endpoint `{endpoint}` routes to the models {}: say which, as --version MODEL/{number}",
            models.into_iter().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The example as the registry stores it — the answer and its scores (the
/// judge's aside), or the failure and no scores — and the retrieved
/// passages' texts.
fn scored_example(
    example: &Example,
    scorers: &[Scorer],
    answered: Result<tonic::Response<pb::QueryResponse>, tonic::Status>,
) -> (pb::EvaluationExample, Vec<String>) {
    let mut stored = pb::EvaluationExample {
        index: example.index,
        question: example.question.clone(),
        reference: example.reference.clone().unwrap_or_default(),
        expected_sources: example.expected_sources.clone(),
        ..Default::default()
    };
    let response = match answered {
        Ok(response) => response.into_inner(),
        Err(status) => {
            stored.error = format!("{:?}: {}", status.code(), status.message());
            return (stored, Vec::new());
        }
    };
    let passages: Vec<String> = response
        .citations
        .iter()
        .map(|citation| citation.text.clone())
        .collect();
    let retrieved: Vec<String> = response
        .citations
        .iter()
        .map(|citation| citation.point_id.clone())
        .collect();
    let input = ScorerInput {
        question: &example.question,
        answer: &response.answer,
        reference: example.reference.as_deref(),
        pattern: example.pattern.as_ref(),
        passages: &passages,
        retrieved_sources: &retrieved,
        expected_sources: &example.expected_sources,
        latency_ms: response.latency_ms,
        cost_usd: response.cost_usd,
    };
    let scores: HashMap<String, f64> = scorers
        .iter()
        .filter_map(|scorer| Some((scorer.name().to_string(), scorer.score(&input)?)))
        .collect();
    stored.scores = scores;
    stored.answer = response.answer;
    stored.retrieved_sources = retrieved;
    stored.request_id = response.request_id;
    stored.latency_ms = response.latency_ms;
    (stored, passages)
}

/// The judge's grade of a stored answer; `None` when its reply holds no
/// grade, an error when the generator failed.
async fn judge_score(
    serving: &mut pb::serving_service_client::ServingServiceClient<ServiceChannel>,
    judge: &str,
    example: &Example,
    stored: &pb::EvaluationExample,
    passages: &[String],
) -> Result<Option<f64>, String> {
    let input = ScorerInput {
        question: &example.question,
        answer: &stored.answer,
        reference: example.reference.as_deref(),
        pattern: None,
        passages,
        retrieved_sources: &stored.retrieved_sources,
        expected_sources: &example.expected_sources,
        latency_ms: stored.latency_ms,
        cost_usd: 0.0,
    };
    let messages = keel_eval::judge::judge_messages(&input)
        .into_iter()
        .map(|message| pb::ChatMessage {
            role: message.role.to_string(),
            content: message.content,
        })
        .collect();
    let request = pb::GenerateRequest {
        generator: judge.to_string(),
        messages,
        params: Some(pb::GenerationParams {
            temperature: Some(0.0),
            max_tokens: Some(keel_eval::judge::MAX_REPLY_TOKENS),
            ..Default::default()
        }),
    };
    let reply = serving
        .generate(request)
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
    Ok(keel_eval::judge::parse_verdict(&reply.into_inner().text))
}

async fn append(
    registry: &mut pb::registry_service_client::RegistryServiceClient<ServiceChannel>,
    run_id: &str,
    examples: Vec<pb::EvaluationExample>,
) -> Result<(), CliError> {
    registry
        .append_evaluation_examples(pb::AppendEvaluationExamplesRequest {
            run_id: run_id.to_string(),
            examples,
        })
        .await
        .map_err(rpc("AppendEvaluationExamples"))?;
    Ok(())
}

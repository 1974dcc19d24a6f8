//! `keel improve ENDPOINT`: the loop from feedback to a promoted challenger
//! in one command. It exports the endpoint's evaluation set from feedback,
//! builds a challenger (the champion's prompt with few-shot examples mined
//! from liked answers and corrections, as new PROMPT and CHAIN versions
//! whose lineage names the export), evaluates champion and challenger on
//! the held-out examples, and when the challenger is not worse, starts an
//! experiment that promotes it on a winning verdict. Every step leaves its
//! trace: versions with lineage, evaluation runs, alias moves in the audit
//! trail, the experiment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_eval::Scorer;
use keel_proto::v1 as pb;
use keel_types::{ModelRef, Selector};
use serde::Serialize;

use crate::cli::error::rpc;
use crate::cli::eval_compare::{compare_runs, Comparison};
use crate::cli::eval_dataset::{dataset_from_text, Dataset, Example};
use crate::cli::eval_run::{evaluate_dataset, ScoringArgs};
use crate::cli::experiment::AllocationArg;
use crate::cli::feedback::{export, export_request, DatasetKindArg};
use crate::cli::improve_fewshot::{split, template_with_examples};
use crate::cli::{gate, output, CliError, ServiceUrls};

/// How often a waiting `keel improve` re-reads the experiment.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, clap::Args)]
pub struct ImproveArgs {
    pub endpoint: String,
    /// Few-shot examples the challenger's prompt gets (at most half of the
    /// liked answers and corrections; the rest are held out)
    #[arg(long, default_value_t = 4)]
    pub examples: usize,
    /// Where the export, the few-shot and the held-out sets are written
    #[arg(long, default_value = ".keel-improve")]
    pub work_dir: PathBuf,
    /// The alias the challenger gets
    #[arg(long, default_value = "challenger")]
    pub challenger_alias: String,
    /// SCORER=X: on the held-out examples the challenger may fall behind
    /// the champion by at most X (repeatable)
    #[arg(
        long = "max-regression",
        value_name = "SCORER=X",
        default_value = "token_f1=0.05"
    )]
    pub max_regression: Vec<String>,
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// How the experiment splits traffic
    #[arg(long, value_enum, default_value = "thompson")]
    pub allocation: AllocationArg,
    /// Ratings each arm needs before the experiment's verdict
    #[arg(long, default_value_t = 100)]
    pub min_ratings: u64,
    /// The verdict's false-winner rate
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Stop the experiment when the challenger's thumbs-down rate passes this
    #[arg(long, default_value_t = 0.0)]
    pub max_thumbs_down: f64,
    /// Stop the experiment when the challenger's error rate passes this
    #[arg(long, default_value_t = 0.0)]
    pub max_error_rate: f64,
    /// Wait this long for the experiment's verdict (e.g. 2h); 0: start it
    /// and return (the challenger is still promoted when it wins)
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// Where the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Offline, the challenger fell behind the champion: no experiment.
    RejectedOffline,
    /// The experiment runs on; it promotes the challenger if it wins.
    ExperimentRunning,
    Promoted,
    /// The challenger won but its promotion was refused (a gate).
    PromotionRefused,
    ChampionKept,
    GuardBreached,
    /// Someone stopped the experiment.
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImproveReport {
    pub endpoint: String,
    /// `model@alias` the endpoint routes to.
    pub champion_target: String,
    pub champion_version: u32,
    pub prompt_model: String,
    pub prompt_version: u32,
    pub challenger_version: u32,
    pub few_shot_examples: usize,
    pub held_out_examples: usize,
    pub champion_run: String,
    pub challenger_run: String,
    pub comparison: Comparison,
    /// Why the challenger was rejected offline; empty otherwise.
    pub regressions: Vec<String>,
    pub experiment_id: String,
    pub verdict: String,
    pub outcome: Outcome,
}

pub async fn run(urls: &ServiceUrls, args: ImproveArgs) -> Result<(), CliError> {
    let report = improve(urls, &args).await?;
    output::improve_report(&report);
    Ok(())
}

/// The champion behind an endpoint: its heaviest route, which must be an
/// alias (promotion moves it), and the chain and prompt it serves.
struct Champion {
    target: ModelRef,
    version: pb::ModelVersion,
    chain: pb::ChainSpec,
    prompt: pb::ModelVersion,
    template: String,
}

pub async fn improve(urls: &ServiceUrls, args: &ImproveArgs) -> Result<ImproveReport, CliError> {
    let max_regression = gate::thresholds("--max-regression", &args.max_regression)?;
    for scorer in max_regression.keys() {
        Scorer::parse(scorer).map_err(CliError::Invalid)?;
    }
    let actor = if args.scoring.actor.is_empty() {
        "keel-improve".to_string()
    } else {
        args.scoring.actor.clone()
    };
    let champion = champion(urls, &args.endpoint).await?;
    output::step(&format!(
        "champion: {} → {}/{}",
        champion.target, champion.version.model, champion.version.version
    ));

    let (export, few_shot, held_out) = datasets(urls, args).await?;
    output::step(&format!(
        "exported {} rated requests: {} few-shot examples, {} held out",
        export.examples.len(),
        few_shot.examples.len(),
        held_out.examples.len()
    ));

    let (prompt_version, challenger_version) =
        build_challenger(urls, &champion, &export, &few_shot, &actor).await?;
    let model = champion.version.model.clone();
    set_alias(
        urls,
        &model,
        &args.challenger_alias,
        challenger_version,
        &actor,
        &format!(
            "keel improve: few-shot challenger from {} examples of {}",
            few_shot.examples.len(),
            export.name
        ),
    )
    .await?;
    output::step(&format!(
        "challenger: {model}/{challenger_version} (@{}), prompt {}/{prompt_version}",
        args.challenger_alias, champion.prompt.model
    ));

    let champion_run = evaluate_dataset(
        urls,
        &args.endpoint,
        &format!("{model}/{}", champion.version.version),
        &args.scoring,
        &held_out,
    )
    .await?;
    let challenger_run = evaluate_dataset(
        urls,
        &args.endpoint,
        &format!("{model}/{challenger_version}"),
        &args.scoring,
        &held_out,
    )
    .await?;
    let comparison = compare_runs(urls, &champion_run.id, &challenger_run.id).await?;
    let regressions = regressions(&comparison, &max_regression);
    output::step(&format!(
        "evaluated on {} held-out examples: runs {} (champion) and {} (challenger)",
        held_out.examples.len(),
        champion_run.id,
        challenger_run.id
    ));

    let mut report = ImproveReport {
        endpoint: args.endpoint.clone(),
        champion_target: champion.target.to_string(),
        champion_version: champion.version.version,
        prompt_model: champion.prompt.model.clone(),
        prompt_version,
        challenger_version,
        few_shot_examples: few_shot.examples.len(),
        held_out_examples: held_out.examples.len(),
        champion_run: champion_run.id,
        challenger_run: challenger_run.id,
        comparison,
        regressions,
        experiment_id: String::new(),
        verdict: String::new(),
        outcome: Outcome::RejectedOffline,
    };
    if !report.regressions.is_empty() {
        return Ok(report);
    }

    let started = urls
        .serving()
        .await?
        .start_experiment(pb::StartExperimentRequest {
            endpoint: args.endpoint.clone(),
            name: format!("keel improve: {model}/{challenger_version} against the champion"),
            control: champion.target.to_string(),
            challenger: format!("{model}@{}", args.challenger_alias),
            allocation: match args.allocation {
                AllocationArg::Fixed => pb::Allocation::Fixed,
                AllocationArg::Thompson => pb::Allocation::Thompson,
            } as i32,
            guards: Some(pb::ExperimentGuards {
                max_thumbs_down_rate: args.max_thumbs_down,
                max_error_rate: args.max_error_rate,
                ..Default::default()
            }),
            alpha: args.alpha,
            min_ratings_per_arm: args.min_ratings,
            promote_on_win: true,
            actor: actor.clone(),
            ..Default::default()
        })
        .await
        .map_err(rpc("serving StartExperiment"))?
        .into_inner();
    output::step(&format!("experiment {} started", started.id));
    report.experiment_id = started.id.clone();
    let experiment = wait_for_verdict(urls, &started.id, args.wait).await?;
    report.verdict = experiment.verdict.clone();
    report.outcome = outcome(&experiment);
    Ok(report)
}

async fn champion(urls: &ServiceUrls, endpoint: &str) -> Result<Champion, CliError> {
    let endpoint = urls
        .serving()
        .await?
        .get_endpoint(pb::GetEndpointRequest {
            name: endpoint.to_string(),
        })
        .await
        .map_err(rpc("serving GetEndpoint"))?
        .into_inner();
    let route = endpoint
        .routes
        .iter()
        .max_by_key(|route| route.weight)
        .ok_or_else(|| CliError::Invalid(format!("endpoint {} has no route", endpoint.name)))?;
    let target = ModelRef::parse("route", &route.target)
        .map_err(|error| CliError::Invalid(error.to_string()))?;
    if !matches!(target.selector, Selector::Alias(_)) {
        return Err(CliError::Invalid(format!(
            "endpoint {} routes to {target}, a fixed version: keel improve promotes by moving \
             an alias, so route the endpoint to MODEL@ALIAS",
            endpoint.name
        )));
    }
    let mut registry = urls.registry().await?;
    let mut resolve = async |reference: String| {
        registry
            .resolve_reference(pb::ResolveReferenceRequest { reference })
            .await
            .map_err(rpc("registry ResolveReference"))
            .map(tonic::Response::into_inner)
    };
    let version = resolve(target.to_string()).await?;
    let Some(pb::model_version::Spec::Chain(chain)) = version.spec.clone() else {
        return Err(CliError::Invalid(format!(
            "{target} is not a CHAIN version"
        )));
    };
    let prompt = resolve(chain.prompt.clone()).await?;
    let Some(pb::model_version::Spec::Prompt(prompt_spec)) = prompt.spec.clone() else {
        return Err(CliError::Invalid(format!(
            "{target}'s prompt {} is not a PROMPT version",
            chain.prompt
        )));
    };
    Ok(Champion {
        target,
        version,
        chain,
        prompt,
        template: prompt_spec.template,
    })
}

/// The EVAL export of the endpoint, and the few-shot and held-out sets cut
/// from it, each written to the work directory (what the lineage's digests
/// name).
async fn datasets(
    urls: &ServiceUrls,
    args: &ImproveArgs,
) -> Result<(Dataset, Dataset, Dataset), CliError> {
    let dir = &args.work_dir;
    std::fs::create_dir_all(dir).map_err(CliError::io(dir))?;
    let export_path = dir.join(format!("{}-eval.jsonl", args.endpoint));
    export(
        urls,
        export_request(DatasetKindArg::Eval, &args.endpoint),
        &export_path,
    )
    .await?;
    let text = std::fs::read_to_string(&export_path).map_err(CliError::io(&export_path))?;
    if text.trim().is_empty() {
        return Err(CliError::Invalid(format!(
            "endpoint {} has no rated requests yet: nothing to learn from",
            args.endpoint
        )));
    }
    let exported = dataset_from_text(
        &export_path.display().to_string(),
        format!("feedback:eval:{}", args.endpoint),
        &text,
        None,
    )?;
    let parts = split(&exported.examples, args.examples);
    if parts.few_shot.is_empty() {
        return Err(CliError::Invalid(format!(
            "endpoint {} needs at least two liked answers or corrections (one for the prompt, \
             one held out); it has {}",
            args.endpoint,
            exported
                .examples
                .iter()
                .filter(|example| example.reference.is_some())
                .count()
        )));
    }
    let few_shot = write_examples(dir, &args.endpoint, "few-shot", &parts.few_shot)?;
    let held_out = write_examples(dir, &args.endpoint, "held-out", &parts.held_out)?;
    Ok((exported, few_shot, held_out))
}

/// Writes `examples` as a dataset file `<endpoint>-<part>.jsonl` and reads
/// it back as the dataset evaluations and lineage name.
fn write_examples(
    dir: &Path,
    endpoint: &str,
    part: &str,
    examples: &[&Example],
) -> Result<Dataset, CliError> {
    let mut text = String::new();
    for example in examples {
        let line = serde_json::json!({
            "question": example.question,
            "reference": example.reference,
            "expected_sources": example.expected_sources,
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let path = dir.join(format!("{endpoint}-{part}.jsonl"));
    std::fs::write(&path, &text).map_err(CliError::io(&path))?;
    let name = format!("keel-improve:{part}:{endpoint}");
    dataset_from_text(&path.display().to_string(), name, &text, None)
}

fn source(dataset: &Dataset) -> pb::DatasetSource {
    pb::DatasetSource {
        name: dataset.name.clone(),
        digest: dataset.digest.clone(),
        examples: dataset.examples.len() as u64,
    }
}

/// Registers the few-shot prompt and the chain that uses it; returns their
/// version numbers.
async fn build_challenger(
    urls: &ServiceUrls,
    champion: &Champion,
    export: &Dataset,
    few_shot: &Dataset,
    actor: &str,
) -> Result<(u32, u32), CliError> {
    let shots: Vec<&Example> = few_shot.examples.iter().collect();
    let mut registry = urls.registry().await?;
    let tags: HashMap<String, String> = [
        ("source".to_string(), "keel-improve".to_string()),
        ("built_by".to_string(), actor.to_string()),
    ]
    .into();
    let prompt = registry
        .create_version(pb::CreateVersionRequest {
            model: champion.prompt.model.clone(),
            spec: Some(pb::create_version_request::Spec::Prompt(pb::PromptSpec {
                template: template_with_examples(&champion.template, &shots),
            })),
            description: format!(
                "{}/{} with {} few-shot examples from feedback",
                champion.prompt.model,
                champion.prompt.version,
                shots.len()
            ),
            tags: tags.clone(),
            lineage: Some(pb::Lineage {
                parent_version: champion.prompt.version,
                datasets: vec![source(few_shot)],
                evaluation_runs: Vec::new(),
            }),
        })
        .await
        .map_err(rpc("registry CreateVersion (prompt)"))?
        .into_inner();
    let chain = pb::ChainSpec {
        prompt: format!("{}/{}", prompt.model, prompt.version),
        ..champion.chain.clone()
    };
    let challenger = registry
        .create_version(pb::CreateVersionRequest {
            model: champion.version.model.clone(),
            spec: Some(pb::create_version_request::Spec::Chain(chain)),
            description: format!(
                "{}/{} with the few-shot prompt {}/{}",
                champion.version.model, champion.version.version, prompt.model, prompt.version
            ),
            tags,
            lineage: Some(pb::Lineage {
                parent_version: champion.version.version,
                datasets: vec![source(export), source(few_shot)],
                evaluation_runs: Vec::new(),
            }),
        })
        .await
        .map_err(rpc("registry CreateVersion (chain)"))?
        .into_inner();
    Ok((prompt.version, challenger.version))
}

async fn set_alias(
    urls: &ServiceUrls,
    model: &str,
    alias: &str,
    version: u32,
    actor: &str,
    reason: &str,
) -> Result<(), CliError> {
    urls.registry()
        .await?
        .set_alias(pb::SetAliasRequest {
            model: model.to_string(),
            alias: alias.to_string(),
            version,
            expected_current_version: None,
            actor: actor.to_string(),
            reason: reason.to_string(),
            override_gate: false,
        })
        .await
        .map_err(rpc("registry SetAlias"))?;
    Ok(())
}

/// The scorers on which the challenger fell behind by more than allowed,
/// in words.
fn regressions(comparison: &Comparison, max_regression: &HashMap<String, f64>) -> Vec<String> {
    let mut found = Vec::new();
    for (scorer_name, limit) in max_regression {
        let Some(scorer) = comparison
            .scorers
            .iter()
            .find(|scorer| &scorer.scorer == scorer_name)
        else {
            found.push(format!("{scorer_name}: not scored by both runs"));
            continue;
        };
        let higher_is_better = Scorer::parse(scorer_name).is_ok_and(Scorer::higher_is_better);
        let shortfall = if higher_is_better {
            -scorer.difference
        } else {
            scorer.difference
        };
        if shortfall > *limit {
            found.push(format!(
                "{scorer_name}: challenger {:.3} against champion {:.3}, behind by more than {limit}",
                scorer.mean_b, scorer.mean_a
            ));
        }
    }
    found.sort();
    found
}

/// Polls the experiment (computing its verdict each time) until it ends or
/// `wait` has passed.
async fn wait_for_verdict(
    urls: &ServiceUrls,
    id: &str,
    wait: Duration,
) -> Result<pb::Experiment, CliError> {
    let mut serving = urls.serving().await?;
    let spinner = output::waiting("waiting for the experiment's verdict");
    let deadline = Instant::now() + wait;
    loop {
        let experiment = serving
            .get_experiment(pb::GetExperimentRequest {
                id: id.to_string(),
                refresh: true,
            })
            .await
            .map_err(rpc("serving GetExperiment"))?
            .into_inner();
        spinner.set_message(experiment.verdict.clone());
        let running = experiment.state() == pb::ExperimentState::Running;
        if !running || Instant::now() >= deadline {
            spinner.finish_and_clear();
            return Ok(experiment);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn outcome(experiment: &pb::Experiment) -> Outcome {
    match experiment.state() {
        pb::ExperimentState::Running | pb::ExperimentState::Unspecified => {
            Outcome::ExperimentRunning
        }
        pb::ExperimentState::GuardBreached => Outcome::GuardBreached,
        pb::ExperimentState::Stopped => Outcome::Stopped,
        pb::ExperimentState::Concluded => match experiment.verdict_kind() {
            pb::VerdictKind::ChallengerWins
                if experiment
                    .stop_reason
                    .contains(keel_serving::experiments::PROMOTED) =>
            {
                Outcome::Promoted
            }
            pb::VerdictKind::ChallengerWins => Outcome::PromotionRefused,
            _ => Outcome::ChampionKept,
        },
    }
}

//! `keel improve ENDPOINT`: the loop from feedback to a promoted challenger
//! in one command. It exports the endpoint's evaluation set from feedback,
//! builds a challenger by a pluggable step — built in, the champion's
//! prompt with few-shot examples mined from liked answers and corrections;
//! external, a model fine-tuned on the SFT export through an
//! OpenAI-compatible API — registered with a lineage that names what it
//! came from, evaluates champion and challenger on the held-out examples,
//! and when the challenger is not worse, starts an experiment that
//! promotes it on a winning verdict. Every step leaves its trace: versions
//! with lineage, evaluation runs, alias moves in the audit trail, the
//! experiment.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel_eval::Scorer;
use keel_proto::v1 as pb;
use keel_types::{ModelRef, Selector};
use serde::Serialize;

use crate::cli::error::rpc;
use crate::cli::eval_compare::{compare_runs, Comparison};
use crate::cli::eval_run::{evaluate_dataset, ScoringArgs};
use crate::cli::experiment::AllocationArg;
use crate::cli::improve_datasets::eval_sets;
use crate::cli::improve_fewshot::register_few_shot;
use crate::cli::improve_fine_tune::{fine_tune_challenger, FineTuneArgs};
use crate::cli::{gate, output, CliError, ServiceUrls};

/// How often a waiting `keel improve` re-reads the experiment.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Where the challenger comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChallengerKind {
    /// The champion's prompt with few-shot examples from liked answers and
    /// corrections
    FewShot,
    /// A model fine-tuned on the SFT export through an OpenAI-compatible
    /// fine-tuning API (see --fine-tune-*)
    FineTune,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ImproveArgs {
    pub endpoint: String,
    /// How the challenger is built
    #[arg(long, value_enum, default_value = "few-shot")]
    pub challenger: ChallengerKind,
    #[command(flatten)]
    pub fine_tune: FineTuneArgs,
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
    pub challenger_kind: ChallengerKind,
    /// The challenger's prompt (a new version for a few-shot challenger).
    pub prompt_model: String,
    pub prompt_version: u32,
    pub challenger_version: u32,
    /// A fine-tuned challenger's job and model; empty otherwise.
    pub fine_tune_job: String,
    pub fine_tuned_model: String,
    /// Examples the challenger learnt from, and those it was evaluated on.
    pub training_examples: usize,
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
pub struct Champion {
    pub target: ModelRef,
    pub version: pb::ModelVersion,
    pub chain: pb::ChainSpec,
    pub prompt: pb::ModelVersion,
    pub template: String,
}

/// What the challenger step registered.
struct Built {
    prompt_version: u32,
    chain_version: u32,
    fine_tune_job: String,
    fine_tuned_model: String,
}

/// Registers `chain` as the challenger: a version of the champion's model
/// derived from the champion's version and `datasets`. Returns its number.
pub async fn register_challenger_chain(
    urls: &ServiceUrls,
    champion: &Champion,
    chain: pb::ChainSpec,
    description: String,
    tags: HashMap<String, String>,
    datasets: Vec<pb::DatasetSource>,
) -> Result<u32, CliError> {
    let challenger = urls
        .registry()
        .await?
        .create_version(pb::CreateVersionRequest {
            model: champion.version.model.clone(),
            spec: Some(pb::create_version_request::Spec::Chain(chain)),
            description,
            tags,
            lineage: Some(pb::Lineage {
                parent_version: champion.version.version,
                datasets,
                evaluation_runs: Vec::new(),
            }),
        })
        .await
        .map_err(rpc("registry CreateVersion (chain)"))?
        .into_inner();
    Ok(challenger.version)
}

/// The tags of a challenger version `keel improve` registers.
pub fn challenger_tags(actor: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut tags: HashMap<String, String> = [
        ("source".to_string(), "keel-improve".to_string()),
        ("built_by".to_string(), actor.to_string()),
    ]
    .into();
    for (key, value) in extra {
        tags.insert((*key).to_string(), (*value).to_string());
    }
    tags
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

    let training = match args.challenger {
        ChallengerKind::FewShot => ("few-shot", args.examples),
        ChallengerKind::FineTune => ("training", usize::MAX),
    };
    let sets = eval_sets(urls, &args.endpoint, &args.work_dir, training).await?;
    let held_out = &sets.held_out;
    output::step(&format!(
        "exported {} rated requests: {} to learn from, {} held out",
        sets.export.examples.len(),
        sets.training.examples.len(),
        held_out.examples.len()
    ));

    let model = champion.version.model.clone();
    let mut built = Built {
        prompt_version: champion.prompt.version,
        chain_version: 0,
        fine_tune_job: String::new(),
        fine_tuned_model: String::new(),
    };
    let how = match args.challenger {
        ChallengerKind::FewShot => {
            let (prompt_version, chain_version) =
                register_few_shot(urls, &champion, &sets.export, &sets.training, &actor).await?;
            built.prompt_version = prompt_version;
            built.chain_version = chain_version;
            format!(
                "few-shot prompt {}/{prompt_version} from {} examples of {}",
                champion.prompt.model,
                sets.training.examples.len(),
                sets.export.name
            )
        }
        ChallengerKind::FineTune => {
            let tuned = fine_tune_challenger(urls, args, &champion, &sets, &actor).await?;
            built.chain_version = tuned.chain_version;
            let how = format!("{} from fine-tuning job {}", tuned.model, tuned.job_id);
            built.fine_tune_job = tuned.job_id;
            built.fine_tuned_model = tuned.model;
            how
        }
    };
    let challenger_version = built.chain_version;
    set_alias(
        urls,
        &model,
        &args.challenger_alias,
        challenger_version,
        &actor,
        &format!("keel improve: challenger with {how}"),
    )
    .await?;
    output::step(&format!(
        "challenger: {model}/{challenger_version} (@{}) with {how}",
        args.challenger_alias
    ));

    let champion_run = evaluate_dataset(
        urls,
        &args.endpoint,
        &format!("{model}/{}", champion.version.version),
        &args.scoring,
        held_out,
    )
    .await?;
    let challenger_run = evaluate_dataset(
        urls,
        &args.endpoint,
        &format!("{model}/{challenger_version}"),
        &args.scoring,
        held_out,
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
        challenger_kind: args.challenger,
        prompt_model: champion.prompt.model.clone(),
        prompt_version: built.prompt_version,
        challenger_version,
        fine_tune_job: built.fine_tune_job,
        fine_tuned_model: built.fine_tuned_model,
        training_examples: sets.training.examples.len(),
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

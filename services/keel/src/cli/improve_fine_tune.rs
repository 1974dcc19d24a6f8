//! The external challenger of `keel improve`: the endpoint's SFT export
//! (held-out questions taken out) fine-tunes a model through an
//! OpenAI-compatible fine-tuning API, and the fine-tuned model is
//! registered as a CHAIN version whose generator — an OpenAI-compatible
//! generator of serving's catalog on the same server — asks for it.

use std::time::{Duration, Instant};

use keel_proto::v1 as pb;

use crate::cli::fine_tune_api::{FineTuneApi, FineTuneJob};
use crate::cli::improve::{challenger_tags, register_challenger_chain, Champion, ImproveArgs};
use crate::cli::improve_datasets::{sft_training_file, source, ImproveSets};
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Clone, clap::Args)]
pub struct FineTuneArgs {
    /// The fine-tuning API's base URL
    #[arg(long = "fine-tune-url", default_value = "https://api.openai.com/v1")]
    pub url: String,
    /// The environment variable that holds its API key
    #[arg(long = "fine-tune-key-env", default_value = "OPENAI_API_KEY")]
    pub key_env: String,
    /// The model to fine-tune
    #[arg(
        long = "fine-tune-base-model",
        default_value = "gpt-4o-mini-2024-07-18"
    )]
    pub base_model: String,
    /// The OpenAI-compatible generator of serving's catalog (on the same
    /// server) that serves the fine-tuned model
    #[arg(long = "fine-tune-generator", default_value = "openai")]
    pub generator: String,
    /// How often the job is read
    #[arg(long = "fine-tune-poll", default_value = "10s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// How long the job may take
    #[arg(long = "fine-tune-timeout", default_value = "4h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// A fine-tuned challenger, registered.
pub struct FineTuned {
    pub chain_version: u32,
    pub job_id: String,
    pub model: String,
}

pub async fn fine_tune_challenger(
    urls: &ServiceUrls,
    improve: &ImproveArgs,
    champion: &Champion,
    sets: &ImproveSets,
    actor: &str,
) -> Result<FineTuned, CliError> {
    let args = &improve.fine_tune;
    let endpoint = improve.endpoint.as_str();
    let training = sft_training_file(urls, endpoint, &improve.work_dir, &sets.held_out).await?;
    let api_key = std::env::var(&args.key_env)
        .ok()
        .filter(|key| !key.is_empty());
    let api = std::sync::Arc::new(FineTuneApi::new(&args.url, api_key));
    let path = training.path.clone();
    let base_model = args.base_model.clone();
    let suffix = format!("keel-{endpoint}");
    let started = blocking(&api, move |api| {
        let file_id = api.upload(&path)?;
        api.create_job(&file_id, &base_model, &suffix)
    })
    .await?;
    output::step(&format!(
        "fine-tuning job {} started on {} SFT lines",
        started.id, training.source.examples
    ));
    let job = wait_for_job(&api, started, args).await?;
    let Some(model) = job
        .fine_tuned_model
        .clone()
        .filter(|model| !model.is_empty())
    else {
        let why = job
            .error
            .as_ref()
            .map_or_else(String::new, |error| format!(": {}", error.message));
        return Err(CliError::Remote(format!(
            "fine-tuning job {} ended {}{why}",
            job.id, job.status
        )));
    };

    let generator = pb::GeneratorSpec {
        name: args.generator.clone(),
        params: champion
            .chain
            .generator
            .as_ref()
            .and_then(|generator| generator.params.clone()),
        model: model.clone(),
    };
    let chain = pb::ChainSpec {
        generator: Some(generator),
        ..champion.chain.clone()
    };
    let extra_tags = [
        ("fine_tune_job", job.id.as_str()),
        ("fine_tuned_model", model.as_str()),
    ];
    let description = format!(
        "{}/{} answered by {model}, fine-tuned from {} on the feedback's SFT export",
        champion.version.model, champion.version.version, args.base_model
    );
    let chain_version = register_challenger_chain(
        urls,
        champion,
        chain,
        description,
        challenger_tags(actor, &extra_tags),
        vec![source(&sets.export), training.source],
    )
    .await?;
    Ok(FineTuned {
        chain_version,
        job_id: job.id,
        model,
    })
}

/// Reads the job every `poll` until it has finished or `timeout` passed.
async fn wait_for_job(
    api: &std::sync::Arc<FineTuneApi>,
    mut job: FineTuneJob,
    args: &FineTuneArgs,
) -> Result<FineTuneJob, CliError> {
    let spinner = output::waiting(&format!("fine-tuning job {}: {}", job.id, job.status));
    let deadline = Instant::now() + args.timeout;
    while !job.is_finished() {
        if Instant::now() >= deadline {
            spinner.abandon();
            return Err(CliError::Remote(format!(
                "fine-tuning job {} still {} after {}",
                job.id,
                job.status,
                humantime::format_duration(args.timeout)
            )));
        }
        tokio::time::sleep(args.poll).await;
        let id = job.id.clone();
        job = blocking(api, move |api| api.job(&id)).await?;
        spinner.set_message(format!("fine-tuning job {}: {}", job.id, job.status));
    }
    spinner.finish_and_clear();
    Ok(job)
}

/// Runs a blocking call of the API off the async runtime.
async fn blocking<T: Send + 'static>(
    api: &std::sync::Arc<FineTuneApi>,
    call: impl FnOnce(&FineTuneApi) -> Result<T, CliError> + Send + 'static,
) -> Result<T, CliError> {
    let api = api.clone();
    tokio::task::spawn_blocking(move || call(&api))
        .await
        .map_err(|error| CliError::Remote(format!("fine-tuning call failed: {error}")))?
}

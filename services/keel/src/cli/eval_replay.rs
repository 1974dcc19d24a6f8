//! `keel eval replay`: a slice of the inference log run again through a
//! version, offline, as an evaluation run comparable with the others. The
//! slice is an endpoint's requests in a time range (evaluation and shadow
//! traffic left out), or with `--with-feedback` the requests that got feedback in
//! it, with the references feedback gives (corrections, liked answers) and
//! the passages judged relevant. The same slice gives the same dataset
//! (name and SHA-256), so two versions replayed on it pair by example.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use keel_proto::v1 as pb;

use crate::cli::error::rpc;
use crate::cli::eval_dataset::{dataset_from_text, Dataset};
use crate::cli::eval_run::{evaluate_dataset, ScoringArgs, SESSION_PREFIX};
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The endpoint whose traffic is replayed, and that answers the replay
    #[arg(long)]
    pub endpoint: String,
    /// The version that answers: N, MODEL/N or MODEL@ALIAS
    #[arg(long)]
    pub version: String,
    /// Start of the slice, RFC 3339 (e.g. 2026-11-30T08:00:00Z)
    #[arg(long, value_parser = humantime::parse_rfc3339_weak, conflicts_with = "last")]
    pub since: Option<SystemTime>,
    /// End of the slice (exclusive), RFC 3339; default now
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub until: Option<SystemTime>,
    /// The slice is the last DURATION before --until (e.g. 24h)
    #[arg(long, value_parser = humantime::parse_duration)]
    pub last: Option<Duration>,
    /// Only requests that got feedback (by the feedback's time)
    #[arg(long)]
    pub with_feedback: bool,
    /// Only the first N requests of the slice
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub scoring: ScoringArgs,
}

pub async fn run(urls: &ServiceUrls, args: ReplayArgs) -> Result<(), CliError> {
    let run = replay(urls, &args).await?;
    output::evaluation_run(&run);
    Ok(())
}

pub async fn replay(urls: &ServiceUrls, args: &ReplayArgs) -> Result<pb::EvaluationRun, CliError> {
    let dataset = slice(urls, args).await?;
    evaluate_dataset(urls, &args.endpoint, &args.version, &args.scoring, &dataset).await
}

/// The slice as a dataset named `replay:<endpoint>:<since>-<until>` (Unix
/// ms; `:feedback` for the feedback slice).
pub async fn slice(urls: &ServiceUrls, args: &ReplayArgs) -> Result<Dataset, CliError> {
    let until = args.until.unwrap_or_else(SystemTime::now);
    let since = match (args.since, args.last) {
        (Some(since), _) => Some(since),
        (None, Some(last)) => until.checked_sub(last),
        (None, None) => None,
    };
    let (since_ms, until_ms) = (since.map_or(0, unix_ms), unix_ms(until));
    if since_ms >= until_ms && since.is_some() {
        return Err(CliError::Invalid(
            "the slice is empty: --since is not before --until".to_string(),
        ));
    }
    let lines = if args.with_feedback {
        feedback_lines(urls, &args.endpoint, since_ms, until_ms).await?
    } else {
        request_lines(urls, &args.endpoint, since_ms, until_ms).await?
    };
    let kind = if args.with_feedback { ":feedback" } else { "" };
    let name = format!("replay:{}:{since_ms}-{until_ms}{kind}", args.endpoint);
    if lines.is_empty() {
        return Err(CliError::Invalid(format!(
            "{name}: the slice holds no request"
        )));
    }
    dataset_from_text(&name, name.clone(), &(lines.join("\n") + "\n"), args.limit)
}

/// The EVAL export of the endpoint's feedback in the range: each line has
/// the question, the reference and the relevant passages.
async fn feedback_lines(
    urls: &ServiceUrls,
    endpoint: &str,
    since_ms: i64,
    until_ms: i64,
) -> Result<Vec<String>, CliError> {
    let request = pb::ExportDatasetRequest {
        kind: pb::DatasetKind::Eval as i32,
        endpoint: endpoint.to_string(),
        since_ms,
        until_ms,
        ..Default::default()
    };
    let mut stream = urls
        .feedback()
        .await?
        .export_dataset(request)
        .await
        .map_err(rpc("feedback ExportDataset"))?
        .into_inner();
    let mut lines = Vec::new();
    while let Some(line) = stream.next().await {
        let line = line.map_err(rpc("feedback ExportDataset"))?;
        if !line.json.is_empty() {
            lines.push(line.json);
        }
    }
    Ok(lines)
}

/// The endpoint's logged requests in the range, newest first, without the
/// ones evaluation runs made and the shadow answers.
async fn request_lines(
    urls: &ServiceUrls,
    endpoint: &str,
    since_ms: i64,
    until_ms: i64,
) -> Result<Vec<String>, CliError> {
    let mut monitoring = urls.monitoring().await?;
    let mut lines = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = monitoring
            .list_inferences(pb::ListInferencesRequest {
                endpoint: endpoint.to_string(),
                since_ms,
                until_ms,
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .map_err(rpc("monitoring ListInferences"))?
            .into_inner();
        for record in page.records {
            let evaluation = record.session_id.starts_with(SESSION_PREFIX);
            let shadow = !record.shadow_of.is_empty();
            if evaluation || shadow || record.question.is_empty() {
                continue;
            }
            let line = serde_json::json!({
                "question": record.question,
                "request_id": record.request_id,
            });
            lines.push(line.to_string());
        }
        if page.next_page_token.is_empty() {
            return Ok(lines);
        }
        page_token = page.next_page_token;
    }
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    })
}

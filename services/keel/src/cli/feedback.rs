//! `keel feedback REQUEST_ID ...` posts feedback on a served answer;
//! `keel export --kind ...` streams a dataset built from feedback to a file.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use keel_proto::v1::{
    DatasetKind, ExportDatasetRequest, FeedbackKind, FeedbackRecord, SubmitFeedbackRequest,
};
use tokio::io::AsyncWriteExt;

use crate::cli::error::rpc;
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Clone, clap::Args)]
#[command(group(
    clap::ArgGroup::new("verdict")
        .required(true)
        .multiple(false)
        .args(["up", "down", "rating", "correction", "comment"])
))]
pub struct FeedbackArgs {
    /// The request_id a query returned
    pub request_id: String,
    /// Thumbs up
    #[arg(long)]
    pub up: bool,
    /// Thumbs down
    #[arg(long)]
    pub down: bool,
    /// A rating from 1 to 5
    #[arg(long, value_name = "N")]
    pub rating: Option<u32>,
    /// The answer the model should have given
    #[arg(long, value_name = "TEXT")]
    pub correction: Option<String>,
    /// A free-text comment
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// A retried submission with the same key is recorded once
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// What the user thinks of an answer: one feedback record.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Up,
    Down,
    Rating(u32),
    Correction(String),
    Comment(String),
}

impl FeedbackArgs {
    fn verdict(&self) -> Result<Verdict, CliError> {
        if self.up {
            return Ok(Verdict::Up);
        }
        if self.down {
            return Ok(Verdict::Down);
        }
        if let Some(rating) = self.rating {
            return Ok(Verdict::Rating(rating));
        }
        if let Some(correction) = &self.correction {
            return Ok(Verdict::Correction(correction.clone()));
        }
        if let Some(comment) = &self.comment {
            return Ok(Verdict::Comment(comment.clone()));
        }
        Err(CliError::Invalid(
            "one of --up, --down, --rating, --correction, --comment is required".to_string(),
        ))
    }
}

pub fn submit_request(
    request_id: &str,
    verdict: &Verdict,
    user: &str,
    idempotency_key: &str,
) -> SubmitFeedbackRequest {
    let mut request = SubmitFeedbackRequest {
        request_id: request_id.to_string(),
        user_id: user.to_string(),
        idempotency_key: idempotency_key.to_string(),
        ..SubmitFeedbackRequest::default()
    };
    match verdict {
        Verdict::Up => {
            request.kind = FeedbackKind::Thumbs as i32;
            request.value = 1.0;
        }
        Verdict::Down => {
            request.kind = FeedbackKind::Thumbs as i32;
            request.value = -1.0;
        }
        Verdict::Rating(rating) => {
            request.kind = FeedbackKind::Rating as i32;
            request.value = f64::from(*rating);
        }
        Verdict::Correction(correction) => {
            request.kind = FeedbackKind::Correction as i32;
            request.correction = correction.clone();
        }
        Verdict::Comment(comment) => {
            request.kind = FeedbackKind::Comment as i32;
            request.comment = comment.clone();
        }
    }
    request
}

pub async fn run_feedback(urls: &ServiceUrls, args: FeedbackArgs) -> Result<(), CliError> {
    let verdict = args.verdict()?;
    let request = submit_request(
        &args.request_id,
        &verdict,
        args.user.as_deref().unwrap_or_default(),
        args.idempotency_key.as_deref().unwrap_or_default(),
    );
    let record = submit(urls, request).await?;
    output::feedback_recorded(&record);
    Ok(())
}

pub async fn submit(
    urls: &ServiceUrls,
    request: SubmitFeedbackRequest,
) -> Result<FeedbackRecord, CliError> {
    let response = urls
        .feedback()
        .await?
        .submit_feedback(request)
        .await
        .map_err(rpc("feedback SubmitFeedback"))?;
    Ok(response.into_inner())
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    #[arg(long, value_enum)]
    pub kind: DatasetKindArg,
    /// Only feedback on this endpoint
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The JSONL file to write (replaced once the export is complete)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatasetKindArg {
    /// Supervised fine-tuning: OpenAI chat lines
    Sft,
    /// Preference pairs: prompt, chosen, rejected
    Preference,
    /// Evaluation set: question, answer, contexts, rating
    Eval,
}

impl DatasetKindArg {
    pub fn name(self) -> &'static str {
        match self {
            DatasetKindArg::Sft => "sft",
            DatasetKindArg::Preference => "preference",
            DatasetKindArg::Eval => "eval",
        }
    }

    fn to_proto(self) -> DatasetKind {
        match self {
            DatasetKindArg::Sft => DatasetKind::Sft,
            DatasetKindArg::Preference => DatasetKind::Preference,
            DatasetKindArg::Eval => DatasetKind::Eval,
        }
    }
}

pub async fn run_export(urls: &ServiceUrls, args: ExportArgs) -> Result<(), CliError> {
    let endpoint = args.endpoint.as_deref().unwrap_or_default();
    let lines = export(urls, args.kind, endpoint, &args.out).await?;
    output::exported(args.kind.name(), &args.out, lines);
    Ok(())
}

/// Streams the dataset into `out` and returns the number of lines. Lines
/// go to `<out>.partial` first, so a failed export never leaves a truncated
/// file under the requested name.
pub async fn export(
    urls: &ServiceUrls,
    kind: DatasetKindArg,
    endpoint: &str,
    out: &Path,
) -> Result<u64, CliError> {
    let request = ExportDatasetRequest {
        kind: kind.to_proto() as i32,
        endpoint: endpoint.to_string(),
        ..ExportDatasetRequest::default()
    };
    let mut stream = urls
        .feedback()
        .await?
        .export_dataset(request)
        .await
        .map_err(rpc("feedback ExportDataset"))?
        .into_inner();
    let partial_path = PathBuf::from(format!("{}.partial", out.display()));
    let file = tokio::fs::File::create(&partial_path)
        .await
        .map_err(CliError::io(&partial_path))?;
    let mut writer = tokio::io::BufWriter::new(file);
    let mut progress: Option<indicatif::ProgressBar> = None;
    let mut lines: u64 = 0;
    loop {
        let message = match stream.message().await {
            Ok(message) => message,
            Err(status) => {
                if let Some(bar) = &progress {
                    bar.abandon();
                }
                return Err(rpc("feedback ExportDataset")(status));
            }
        };
        let Some(line) = message else {
            break;
        };
        // The total is known only once the first line arrives.
        let bar = progress.get_or_insert_with(|| output::progress_bar(line.total_lines, "lines"));
        writer
            .write_all(line.json.as_bytes())
            .await
            .map_err(CliError::io(&partial_path))?;
        writer
            .write_all(b"\n")
            .await
            .map_err(CliError::io(&partial_path))?;
        lines += 1;
        bar.inc(1);
    }
    writer.flush().await.map_err(CliError::io(&partial_path))?;
    writer
        .into_inner()
        .sync_all()
        .await
        .map_err(CliError::io(&partial_path))?;
    tokio::fs::rename(&partial_path, out)
        .await
        .map_err(CliError::io(out))?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_become_feedback_requests() {
        let up = submit_request("r1", &Verdict::Up, "ann", "k1");
        assert_eq!((up.kind, up.value), (FeedbackKind::Thumbs as i32, 1.0));
        assert_eq!(
            (
                up.request_id.as_str(),
                up.user_id.as_str(),
                up.idempotency_key.as_str()
            ),
            ("r1", "ann", "k1")
        );
        let down = submit_request("r1", &Verdict::Down, "", "");
        assert_eq!((down.kind, down.value), (FeedbackKind::Thumbs as i32, -1.0));
        let rating = submit_request("r1", &Verdict::Rating(4), "", "");
        assert_eq!(
            (rating.kind, rating.value),
            (FeedbackKind::Rating as i32, 4.0)
        );
        let correction = submit_request("r1", &Verdict::Correction("30 days".to_string()), "", "");
        assert_eq!(correction.kind, FeedbackKind::Correction as i32);
        assert_eq!(correction.correction, "30 days");
        let comment = submit_request("r1", &Verdict::Comment("vague".to_string()), "", "");
        assert_eq!(
            (comment.kind, comment.comment.as_str()),
            (FeedbackKind::Comment as i32, "vague")
        );
    }
}

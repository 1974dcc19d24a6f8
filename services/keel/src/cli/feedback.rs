//! `keel feedback REQUEST_ID ...` posts feedback on a served answer, one of
//! its passages, or (`--session`) a whole conversation; `keel export --kind
//! ...` streams a dataset built from feedback to a file.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use keel_proto::v1::{
    DatasetKind, ExportDatasetRequest, ExportSummary, FeedbackKind, FeedbackRecord,
    SubmitFeedbackRequest,
};
use tokio::io::AsyncWriteExt;

use crate::cli::error::rpc;
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Clone, clap::Args)]
#[command(group(
    clap::ArgGroup::new("verdict")
        .required(true)
        .multiple(false)
        .args(["up", "down", "rating", "correction", "comment", "flag", "relevant", "not_relevant"])
))]
#[command(group(
    clap::ArgGroup::new("target")
        .required(true)
        .multiple(false)
        .args(["request_id", "session"])
))]
pub struct FeedbackArgs {
    /// The request_id a query returned
    pub request_id: Option<String>,
    /// Feedback on a whole conversation: the session_id sent with its queries
    #[arg(long, value_name = "SESSION")]
    pub session: Option<String>,
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
    /// Flag the answer, saying why ("harmful", "hallucination", ...)
    #[arg(long, value_name = "REASON")]
    pub flag: Option<String>,
    /// A retrieved passage (its citation id) was relevant
    #[arg(long, value_name = "PASSAGE_ID")]
    pub relevant: Option<String>,
    /// A retrieved passage (its citation id) was not relevant
    #[arg(long, value_name = "PASSAGE_ID")]
    pub not_relevant: Option<String>,
    /// A free-form label; repeat for several
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
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
    Flag(String),
    /// A retrieved passage judged relevant (true) or not.
    Relevance {
        passage_id: String,
        relevant: bool,
    },
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
        if let Some(reason) = &self.flag {
            return Ok(Verdict::Flag(reason.clone()));
        }
        if let Some(passage_id) = &self.relevant {
            return Ok(Verdict::Relevance {
                passage_id: passage_id.clone(),
                relevant: true,
            });
        }
        if let Some(passage_id) = &self.not_relevant {
            return Ok(Verdict::Relevance {
                passage_id: passage_id.clone(),
                relevant: false,
            });
        }
        Err(CliError::Invalid(
            "one of --up, --down, --rating, --correction, --comment, --flag, --relevant, \
             --not-relevant is required"
                .to_string(),
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
        Verdict::Flag(reason) => {
            request.kind = FeedbackKind::Flag as i32;
            request.reason = reason.clone();
        }
        Verdict::Relevance {
            passage_id,
            relevant,
        } => {
            request.kind = FeedbackKind::Relevance as i32;
            request.passage_id = passage_id.clone();
            request.value = if *relevant { 1.0 } else { -1.0 };
        }
    }
    request
}

pub async fn run_feedback(urls: &ServiceUrls, args: FeedbackArgs) -> Result<(), CliError> {
    let verdict = args.verdict()?;
    let mut request = submit_request(
        args.request_id.as_deref().unwrap_or_default(),
        &verdict,
        args.user.as_deref().unwrap_or_default(),
        args.idempotency_key.as_deref().unwrap_or_default(),
    );
    request.session_id = args.session.clone().unwrap_or_default();
    request.tags = args.tags.clone();
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
    /// Replace e-mail addresses, phone and card numbers with [EMAIL], [PHONE], [CARD]
    #[arg(long)]
    pub mask_pii: bool,
    /// Keep lines equal to an earlier one in (prompt, answer)
    #[arg(long)]
    pub keep_duplicates: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatasetKindArg {
    /// Supervised fine-tuning: OpenAI chat lines
    Sft,
    /// Preference pairs: prompt, chosen, rejected
    Preference,
    /// Evaluation set: question, answer, contexts, rating
    Eval,
    /// Retrieval set: query, relevant passages, hard negatives
    Retrieval,
}

impl DatasetKindArg {
    pub fn name(self) -> &'static str {
        match self {
            DatasetKindArg::Sft => "sft",
            DatasetKindArg::Preference => "preference",
            DatasetKindArg::Eval => "eval",
            DatasetKindArg::Retrieval => "retrieval",
        }
    }

    fn to_proto(self) -> DatasetKind {
        match self {
            DatasetKindArg::Sft => DatasetKind::Sft,
            DatasetKindArg::Preference => DatasetKind::Preference,
            DatasetKindArg::Eval => DatasetKind::Eval,
            DatasetKindArg::Retrieval => DatasetKind::Retrieval,
        }
    }
}

pub async fn run_export(urls: &ServiceUrls, args: ExportArgs) -> Result<(), CliError> {
    let request = ExportDatasetRequest {
        kind: args.kind.to_proto() as i32,
        endpoint: args.endpoint.clone().unwrap_or_default(),
        mask_pii: args.mask_pii,
        keep_duplicates: args.keep_duplicates,
        ..ExportDatasetRequest::default()
    };
    let summary = export(urls, request, &args.out).await?;
    output::exported(args.kind.name(), &args.out, &summary);
    Ok(())
}

/// The export of one kind of dataset of `endpoint`, with the defaults.
pub fn export_request(kind: DatasetKindArg, endpoint: &str) -> ExportDatasetRequest {
    ExportDatasetRequest {
        kind: kind.to_proto() as i32,
        endpoint: endpoint.to_string(),
        ..ExportDatasetRequest::default()
    }
}

/// Streams the dataset into `out`, showing progress, and returns the
/// export's summary. Lines go to `<out>.partial` first, so a failed export
/// never leaves a truncated file under the requested name.
pub async fn export(
    urls: &ServiceUrls,
    request: ExportDatasetRequest,
    out: &Path,
) -> Result<ExportSummary, CliError> {
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
    let mut summary = None;
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
        // The total is known once the first message arrives.
        let bar =
            progress.get_or_insert_with(|| output::progress_bar(line.requests_total, "requests"));
        bar.set_position(line.requests_done);
        if line.summary.is_some() {
            summary = line.summary;
            break;
        }
        if line.json.is_empty() {
            continue;
        }
        writer
            .write_all(line.json.as_bytes())
            .await
            .map_err(CliError::io(&partial_path))?;
        writer
            .write_all(b"\n")
            .await
            .map_err(CliError::io(&partial_path))?;
    }
    let Some(summary) = summary else {
        if let Some(bar) = &progress {
            bar.abandon();
        }
        return Err(CliError::Invalid(
            "feedback ExportDataset ended without its summary: the export is incomplete"
                .to_string(),
        ));
    };
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
    Ok(summary)
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
        let flag = submit_request("r1", &Verdict::Flag("harmful".to_string()), "", "");
        assert_eq!(
            (flag.kind, flag.reason.as_str()),
            (FeedbackKind::Flag as i32, "harmful")
        );
        let not_relevant = Verdict::Relevance {
            passage_id: "doc-2".to_string(),
            relevant: false,
        };
        let relevance = submit_request("r1", &not_relevant, "", "");
        assert_eq!(
            (
                relevance.kind,
                relevance.passage_id.as_str(),
                relevance.value
            ),
            (FeedbackKind::Relevance as i32, "doc-2", -1.0)
        );
    }
}

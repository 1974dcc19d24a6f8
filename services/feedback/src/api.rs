//! The gRPC edge: validates requests, converts protobuf <-> domain and maps
//! errors. The only module, besides the monitoring client, that sees
//! generated types.

use keel_proto::v1 as pb;
use keel_proto::v1::feedback_service_server::FeedbackService;
use keel_types::{validate, FieldError, RequestId};
use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::dataset_export::{ExportEvent, ExportRequest, ExportSummary, Progress};
use crate::export::DatasetKind;
use crate::feedback::{ExportFilter, FeedbackBook, FeedbackFilter, PageCursor, Submission};
use crate::record::{FeedbackKind, FeedbackRecord};

/// Pages of lines (up to 1000 each) an export may build ahead of a slow
/// reader.
const EXPORT_BUFFER_PAGES: usize = 2;

pub struct FeedbackApi {
    book: FeedbackBook,
}

impl FeedbackApi {
    pub fn new(book: FeedbackBook) -> FeedbackApi {
        FeedbackApi { book }
    }
}

#[tonic::async_trait]
impl FeedbackService for FeedbackApi {
    async fn submit_feedback(
        &self,
        request: Request<pb::SubmitFeedbackRequest>,
    ) -> Result<Response<pb::FeedbackRecord>, Status> {
        let record = self
            .book
            .submit(submission_from_proto(request.into_inner()))
            .await?;
        Ok(Response::new(record_to_proto(record)))
    }

    async fn submit_feedback_batch(
        &self,
        request: Request<pb::SubmitFeedbackBatchRequest>,
    ) -> Result<Response<pb::SubmitFeedbackBatchResponse>, Status> {
        let submissions = request
            .into_inner()
            .items
            .into_iter()
            .map(submission_from_proto)
            .collect();
        let records = self.book.submit_batch(submissions).await?;
        Ok(Response::new(pb::SubmitFeedbackBatchResponse {
            records: records.into_iter().map(record_to_proto).collect(),
        }))
    }

    async fn list_feedback(
        &self,
        request: Request<pb::ListFeedbackRequest>,
    ) -> Result<Response<pb::ListFeedbackResponse>, Status> {
        let list = request.into_inner();
        let mut filter = FeedbackFilter::default();
        if !list.request_id.is_empty() {
            filter.request_id = Some(RequestId::parse("request_id", &list.request_id)?);
        }
        if !list.session_id.is_empty() {
            validate::max_len("session_id", &list.session_id, validate::MAX_ID_BYTES)?;
            filter.session_id = Some(list.session_id);
        }
        if !list.endpoint.is_empty() {
            validate::name("endpoint", &list.endpoint)?;
            filter.endpoint = Some(list.endpoint);
        }
        let page_size = validate::page_size("page_size", list.page_size)?;
        let after = if list.page_token.is_empty() {
            None
        } else {
            Some(PageCursor::decode("page_token", &list.page_token)?)
        };
        let page = self.book.list(&filter, after, page_size).await?;
        Ok(Response::new(pb::ListFeedbackResponse {
            records: page.records.into_iter().map(record_to_proto).collect(),
            next_page_token: page.next.map(|cursor| cursor.encode()).unwrap_or_default(),
        }))
    }

    async fn list_orphaned_feedback(
        &self,
        request: Request<pb::ListOrphanedFeedbackRequest>,
    ) -> Result<Response<pb::ListFeedbackResponse>, Status> {
        let list = request.into_inner();
        let page_size = validate::page_size("page_size", list.page_size)?;
        let after = if list.page_token.is_empty() {
            None
        } else {
            Some(PageCursor::decode("page_token", &list.page_token)?)
        };
        let page = self.book.orphaned(after, page_size).await?;
        Ok(Response::new(pb::ListFeedbackResponse {
            records: page.records.into_iter().map(record_to_proto).collect(),
            next_page_token: page.next.map(|cursor| cursor.encode()).unwrap_or_default(),
        }))
    }

    type ExportDatasetStream = Pin<Box<dyn Stream<Item = Result<pb::DatasetLine, Status>> + Send>>;

    /// Checks the request, then streams: the export runs in its own task
    /// and stops when the caller leaves; an error after the first line
    /// ends the stream with its status.
    async fn summarize_feedback(
        &self,
        request: Request<pb::SummarizeFeedbackRequest>,
    ) -> Result<Response<pb::SummarizeFeedbackResponse>, Status> {
        let summary = request.into_inner();
        let filter = export_filter(
            &summary.endpoint,
            &summary.served_model,
            summary.served_version,
            summary.since_ms,
            summary.until_ms,
        )?;
        let versions = self.book.summarise(&filter).await?;
        Ok(Response::new(pb::SummarizeFeedbackResponse {
            versions: versions
                .into_iter()
                .map(|version| pb::VersionFeedback {
                    served_model: version.served_model,
                    served_version: version.served_version,
                    requests: version.requests,
                    liked: version.liked,
                    disliked: version.disliked,
                    neutral: version.neutral,
                    flagged: version.flagged,
                })
                .collect(),
        }))
    }

    async fn export_dataset(
        &self,
        request: Request<pb::ExportDatasetRequest>,
    ) -> Result<Response<Self::ExportDatasetStream>, Status> {
        let export = request.into_inner();
        let kind = match pb::DatasetKind::try_from(export.kind) {
            Ok(pb::DatasetKind::Sft) => DatasetKind::Sft,
            Ok(pb::DatasetKind::Preference) => DatasetKind::Preference,
            Ok(pb::DatasetKind::Eval) => DatasetKind::Eval,
            Ok(pb::DatasetKind::Retrieval) => DatasetKind::Retrieval,
            Ok(pb::DatasetKind::Unspecified) | Err(_) => {
                return Err(FieldError::new(
                    "kind",
                    format!(
                        "must be one of SFT, PREFERENCE, EVAL, RETRIEVAL, got {}",
                        export.kind
                    ),
                )
                .into())
            }
        };
        let request = ExportRequest {
            kind,
            filter: export_filter(
                &export.endpoint,
                &export.served_model,
                export.served_version,
                export.since_ms,
                export.until_ms,
            )?,
            keep_duplicates: export.keep_duplicates,
            mask_pii: export.mask_pii,
        };
        let (events, received) = mpsc::channel(EXPORT_BUFFER_PAGES);
        let book = self.book.clone();
        tokio::spawn(async move { book.export(&request, events).await });
        let mut last = Progress::default();
        let messages = futures::StreamExt::flat_map(ReceiverStream::new(received), move |event| {
            let messages: Vec<Result<pb::DatasetLine, Status>> = match event {
                Err(error) => vec![Err(error.into())],
                Ok(ExportEvent::Lines(lines)) => {
                    if let Some(line) = lines.last() {
                        last = line.progress;
                    }
                    lines
                        .into_iter()
                        .map(|line| {
                            Ok(dataset_line(
                                line.json,
                                line.line_number,
                                line.progress,
                                None,
                            ))
                        })
                        .collect()
                }
                Ok(ExportEvent::Progress(progress)) => {
                    last = progress;
                    vec![Ok(dataset_line(String::new(), 0, progress, None))]
                }
                Ok(ExportEvent::Done(summary)) => vec![Ok(dataset_line(
                    String::new(),
                    summary.lines,
                    last,
                    Some(summary_to_proto(&summary)),
                ))],
            };
            futures::stream::iter(messages)
        });
        Ok(Response::new(Box::pin(messages)))
    }
}

fn dataset_line(
    json: String,
    line_number: u64,
    progress: Progress,
    summary: Option<pb::ExportSummary>,
) -> pb::DatasetLine {
    pb::DatasetLine {
        json,
        line_number,
        requests_done: progress.requests_done,
        requests_total: progress.requests_total,
        summary,
    }
}

fn summary_to_proto(summary: &ExportSummary) -> pb::ExportSummary {
    pb::ExportSummary {
        lines: summary.lines,
        requests: summary.requests,
        skipped_unjoined: summary.skipped_unjoined,
        skipped_missing_record: summary.skipped_missing_record,
        skipped_no_signal: summary.skipped_no_signal,
        skipped_duplicate: summary.skipped_duplicate,
        masked_lines: summary.masked_lines,
    }
}

/// The filter an export or a summary reads feedback by; empty and 0
/// fields match everything.
fn export_filter(
    endpoint: &str,
    served_model: &str,
    served_version: u32,
    since_ms: i64,
    until_ms: i64,
) -> Result<ExportFilter, FieldError> {
    let mut filter = ExportFilter::default();
    if !endpoint.is_empty() {
        validate::name("endpoint", endpoint)?;
        filter.endpoint = Some(endpoint.to_string());
    }
    if !served_model.is_empty() {
        validate::name("served_model", served_model)?;
        filter.served_model = Some(served_model.to_string());
    }
    if served_version != 0 {
        filter.served_version = Some(served_version);
    }
    if since_ms < 0 {
        return Err(FieldError::new(
            "since_ms",
            format!("must be >= 0 (0: unbounded), got {since_ms}"),
        ));
    }
    if until_ms < 0 {
        return Err(FieldError::new(
            "until_ms",
            format!("must be >= 0 (0: unbounded), got {until_ms}"),
        ));
    }
    if since_ms != 0 && until_ms != 0 && until_ms < since_ms {
        return Err(FieldError::new(
            "until_ms",
            format!("must be >= since_ms ({since_ms}), got {until_ms}"),
        ));
    }
    if since_ms != 0 {
        filter.since_ms = Some(since_ms);
    }
    if until_ms != 0 {
        filter.until_ms = Some(until_ms);
    }
    Ok(filter)
}

/// A submission as the feedback book takes it; the book checks it.
fn submission_from_proto(wire: pb::SubmitFeedbackRequest) -> Submission {
    let kind = match pb::FeedbackKind::try_from(wire.kind) {
        Ok(pb::FeedbackKind::Thumbs) => Some(FeedbackKind::Thumbs),
        Ok(pb::FeedbackKind::Rating) => Some(FeedbackKind::Rating),
        Ok(pb::FeedbackKind::Correction) => Some(FeedbackKind::Correction),
        Ok(pb::FeedbackKind::Comment) => Some(FeedbackKind::Comment),
        Ok(pb::FeedbackKind::Flag) => Some(FeedbackKind::Flag),
        Ok(pb::FeedbackKind::Relevance) => Some(FeedbackKind::Relevance),
        Ok(pb::FeedbackKind::Unspecified) | Err(_) => None,
    };
    Submission {
        request_id: wire.request_id,
        session_id: wire.session_id,
        passage_id: wire.passage_id,
        kind,
        value: wire.value,
        correction: wire.correction,
        comment: wire.comment,
        reason: wire.reason,
        tags: wire.tags,
        user_id: wire.user_id,
        idempotency_key: wire.idempotency_key,
    }
}

fn record_to_proto(record: FeedbackRecord) -> pb::FeedbackRecord {
    let kind = match record.kind {
        FeedbackKind::Thumbs => pb::FeedbackKind::Thumbs,
        FeedbackKind::Rating => pb::FeedbackKind::Rating,
        FeedbackKind::Correction => pb::FeedbackKind::Correction,
        FeedbackKind::Comment => pb::FeedbackKind::Comment,
        FeedbackKind::Flag => pb::FeedbackKind::Flag,
        FeedbackKind::Relevance => pb::FeedbackKind::Relevance,
    };
    pb::FeedbackRecord {
        id: record.id,
        request_id: record
            .request_id
            .map(|request_id| request_id.to_string())
            .unwrap_or_default(),
        session_id: record.session_id,
        passage_id: record.passage_id,
        reason: record.reason,
        tags: record.tags,
        kind: kind as i32,
        value: record.value,
        correction: record.correction,
        comment: record.comment,
        user_id: record.user_id,
        idempotency_key: record.idempotency_key,
        created_at_ms: record.created_at_ms,
        endpoint: record.endpoint,
        served_model: record.served_model,
        served_version: record.served_version,
        joined: record.joined,
    }
}

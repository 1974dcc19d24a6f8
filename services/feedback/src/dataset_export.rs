//! ExportDataset's engine. It reads the matching feedback a page at a time
//! in request order (a request's feedback together, oldest first), joins
//! each page with its inference records in one call to monitoring, builds
//! the lines off the async threads and sends them through a bounded
//! channel as they are made: memory does not grow with the export, except
//! for the duplicate filter (a few bytes per line) and, for preference
//! pairs, the liked answers per distinct question.

use std::collections::HashMap;
use std::sync::Arc;

use fastbloom::BloomFilter;
use tokio::sync::mpsc;

use keel_store::Store;
use keel_types::{InferenceRecord, RequestId};

use crate::error::Error;
use crate::export::{self, DatasetKind, LikedAnswers, Line, Verdict};
use crate::feedback::{record_from_row, ExportFilter};
use crate::monitoring_client::{MonitoringClient, BATCH_LIMIT};
use crate::pii::PiiMasker;
use crate::record::FeedbackRecord;
use crate::store::{self, ExportPosition, ExportQuery};

/// Feedback rows read per page; a page's requests are joined in one call.
const PAGE_ROWS: usize = BATCH_LIMIT;

/// The chance that a line is wrongly taken for a duplicate.
const DUPLICATE_FALSE_POSITIVE: f64 = 1e-7;

#[derive(Debug, Clone, PartialEq)]
pub struct ExportRequest {
    pub kind: DatasetKind,
    pub filter: ExportFilter,
    pub keep_duplicates: bool,
    pub mask_pii: bool,
}

/// What an export read, wrote and left out, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub lines: u64,
    pub requests: u64,
    pub skipped_unjoined: u64,
    pub skipped_missing_record: u64,
    pub skipped_no_signal: u64,
    pub skipped_duplicate: u64,
    pub masked_lines: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExportEvent {
    Line {
        json: String,
        line_number: u64,
        progress: Progress,
    },
    /// Sent once per page while nothing else is (the first pass of a
    /// preference export).
    Progress(Progress),
    /// The last event of a complete export.
    Done(ExportSummary),
}

/// What the export's channel carries: events, or the error that ended it.
pub type ExportResult = Result<ExportEvent, Error>;

/// Requests read of those the export reads (twice for preference pairs:
/// one pass collects the liked answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub requests_done: u64,
    pub requests_total: u64,
}

/// Runs the export, sending its lines and progress to `events`; `None`
/// when the receiver left before the end.
pub async fn run(
    store: &Store,
    monitoring: &MonitoringClient,
    request: &ExportRequest,
    events: &mpsc::Sender<ExportResult>,
) -> Result<Option<ExportSummary>, Error> {
    let query = export_query(&request.filter);
    let counts = store::export_counts(store, &query).await?;
    let passes = if request.kind == DatasetKind::Preference {
        2
    } else {
        1
    };
    let mut progress = Progress {
        requests_done: 0,
        requests_total: counts.requests * passes,
    };
    let mut summary = ExportSummary {
        requests: counts.requests,
        skipped_unjoined: counts.unjoined,
        ..ExportSummary::default()
    };
    let masker = if request.mask_pii {
        Some(Arc::new(PiiMasker::new()?))
    } else {
        None
    };

    let mut liked = LikedAnswers::default();
    if request.kind == DatasetKind::Preference {
        let mut pages = RequestPages::new(store, &query);
        while let Some(page) = pages.next().await? {
            progress.requests_done += page.len() as u64;
            let (joined, _) = join(monitoring, page, masker.clone()).await?;
            liked = tokio::task::spawn_blocking(move || {
                for request in &joined {
                    liked.add(&request.inference, &request.verdict);
                }
                liked
            })
            .await?;
            if events
                .send(Ok(ExportEvent::Progress(progress)))
                .await
                .is_err()
            {
                return Ok(None);
            }
        }
    }

    let liked = Arc::new(liked);
    let mut seen = (!request.keep_duplicates).then(|| {
        BloomFilter::with_false_pos(DUPLICATE_FALSE_POSITIVE).expected_items(
            usize::try_from(counts.requests)
                .unwrap_or(usize::MAX)
                .max(1024),
        )
    });
    let mut pages = RequestPages::new(store, &query);
    while let Some(page) = pages.next().await? {
        let asked = page.len() as u64;
        let (joined, missing) = join(monitoring, page, masker.clone()).await?;
        summary.skipped_missing_record += missing;
        let kind = request.kind;
        let liked = Arc::clone(&liked);
        let built =
            tokio::task::spawn_blocking(move || build_page(kind, &joined, &liked)).await??;
        for (index, built_line) in built.into_iter().enumerate() {
            let Some((line, masked)) = built_line else {
                summary.skipped_no_signal += 1;
                continue;
            };
            if let Some(seen) = &mut seen {
                if seen.insert(&line.dedup_key) {
                    summary.skipped_duplicate += 1;
                    continue;
                }
            }
            summary.lines += 1;
            summary.masked_lines += u64::from(masked);
            let event = ExportEvent::Line {
                json: line.json,
                line_number: summary.lines,
                progress: Progress {
                    requests_done: progress.requests_done + index as u64 + 1,
                    ..progress
                },
            };
            if events.send(Ok(event)).await.is_err() {
                return Ok(None);
            }
        }
        progress.requests_done += asked;
    }
    Ok(Some(summary))
}

fn export_query(filter: &ExportFilter) -> ExportQuery {
    ExportQuery {
        endpoint: filter.endpoint.clone(),
        served_model: filter.served_model.clone(),
        served_version: filter.served_version.map(i64::from),
        since_ms: filter.since_ms,
        until_ms: filter.until_ms,
    }
}

/// The feedback on one request, oldest first.
struct RequestFeedback {
    request_id: RequestId,
    feedback: Vec<FeedbackRecord>,
}

/// One request's record and what its feedback amounts to.
struct JoinedRequest {
    inference: InferenceRecord,
    verdict: Verdict,
    /// Personal data was masked in the record or the correction.
    masked: bool,
}

/// Each request's line (or `None`: nothing for this kind), in order.
fn build_page(
    kind: DatasetKind,
    joined: &[JoinedRequest],
    liked: &LikedAnswers,
) -> Result<Vec<Option<(Line, bool)>>, serde_json::Error> {
    let mut lines = Vec::with_capacity(joined.len());
    for request in joined {
        let line = export::build_line(kind, &request.inference, &request.verdict, liked)?;
        lines.push(line.map(|line| (line, request.masked)));
    }
    Ok(lines)
}

/// The page's requests whose record monitoring holds, in page order, with
/// their verdicts (masked when asked), and how many had no record.
async fn join(
    monitoring: &MonitoringClient,
    page: Vec<RequestFeedback>,
    masker: Option<Arc<PiiMasker>>,
) -> Result<(Vec<JoinedRequest>, u64), Error> {
    let request_ids: Vec<RequestId> = page.iter().map(|request| request.request_id).collect();
    let inferences = monitoring.batch_get_inferences(&request_ids, None).await?;
    tokio::task::spawn_blocking(move || {
        let mut by_id: HashMap<RequestId, InferenceRecord> = inferences
            .into_iter()
            .map(|inference| (inference.request_id, inference))
            .collect();
        let mut joined = Vec::with_capacity(page.len());
        let mut missing = 0;
        for request in page {
            let Some(mut inference) = by_id.remove(&request.request_id) else {
                missing += 1;
                continue;
            };
            let mut verdict = Verdict::of(&request.feedback);
            let mut masked = false;
            if let Some(masker) = &masker {
                masked = masker.mask_record(&mut inference);
                if let Some(correction) = verdict.correction_mut() {
                    masked |= masker.mask_in_place(correction);
                }
            }
            joined.push(JoinedRequest {
                inference,
                verdict,
                masked,
            });
        }
        (joined, missing)
    })
    .await
    .map_err(Error::from)
}

/// Pages of whole requests: a page's last request is held back until the
/// next page shows whether more of its feedback follows.
struct RequestPages<'a> {
    store: &'a Store,
    query: &'a ExportQuery,
    after: Option<ExportPosition>,
    held_back: Vec<FeedbackRecord>,
    read_all: bool,
}

impl<'a> RequestPages<'a> {
    fn new(store: &'a Store, query: &'a ExportQuery) -> RequestPages<'a> {
        RequestPages {
            store,
            query,
            after: None,
            held_back: Vec::new(),
            read_all: false,
        }
    }

    async fn next(&mut self) -> Result<Option<Vec<RequestFeedback>>, Error> {
        loop {
            if self.read_all {
                let rest = std::mem::take(&mut self.held_back);
                return Ok((!rest.is_empty()).then(|| group_by_request(rest)));
            }
            let rows = store::export_page(
                self.store,
                self.query,
                self.after.as_ref(),
                PAGE_ROWS as i64,
            )
            .await?;
            self.read_all = rows.len() < PAGE_ROWS;
            if let Some(last) = rows.last() {
                self.after = Some(ExportPosition {
                    request_id: last.request_id.clone(),
                    created_at_ms: last.created_at_ms,
                    id: last.id.clone(),
                });
            }
            let mut records = std::mem::take(&mut self.held_back);
            for row in rows {
                records.push(record_from_row(row)?);
            }
            if self.read_all {
                return Ok((!records.is_empty()).then(|| group_by_request(records)));
            }
            let last_request = records.last().and_then(|record| record.request_id);
            let split = records
                .iter()
                .position(|record| record.request_id == last_request)
                .unwrap_or(records.len());
            self.held_back = records.split_off(split);
            if !records.is_empty() {
                return Ok(Some(group_by_request(records)));
            }
            // One request filled the whole page: read on.
        }
    }
}

/// `records` in request order, grouped; session feedback (no request) is
/// never in an export page.
fn group_by_request(records: Vec<FeedbackRecord>) -> Vec<RequestFeedback> {
    let mut groups: Vec<RequestFeedback> = Vec::new();
    for record in records {
        let Some(request_id) = record.request_id else {
            continue;
        };
        match groups.last_mut() {
            Some(group) if group.request_id == request_id => group.feedback.push(record),
            _ => groups.push(RequestFeedback {
                request_id,
                feedback: vec![record],
            }),
        }
    }
    groups
}

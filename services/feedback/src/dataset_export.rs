//! ExportDataset's engine. It reads the matching feedback a page at a time
//! in request order (a request's feedback together, oldest first), joins
//! each page with its inference records in one call to monitoring, builds
//! the lines off the async threads and sends them through a bounded
//! channel, a page of lines per message, as they are made. Reading and
//! joining the next pages overlaps building this one (a reader task a
//! few pages ahead). Memory does not grow with the export, except for the
//! duplicate filter (a few bytes per line) and, for preference pairs, the
//! liked answers per distinct question.

use std::collections::HashMap;
use std::sync::Arc;

use fastbloom::BloomFilter;
use futures::{StreamExt, TryStreamExt};
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

/// One line of the dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportLine {
    pub json: String,
    /// 1-based.
    pub line_number: u64,
    pub progress: Progress,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExportEvent {
    /// The next lines, in order: a page's worth at most.
    Lines(Vec<ExportLine>),
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
        Some(Arc::new(PiiMasker::new()))
    } else {
        None
    };

    let mut liked = LikedAnswers::default();
    if request.kind == DatasetKind::Preference {
        let mut pages = JoinedPages::start(store, monitoring, &query, masker.clone());
        while let Some(page) = pages.next().await? {
            progress.requests_done += page.asked;
            let joined = page.joined;
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
    let mut pages = JoinedPages::start(store, monitoring, &query, masker);
    while let Some(page) = pages.next().await? {
        summary.skipped_missing_record += page.missing;
        let kind = request.kind;
        let liked = Arc::clone(&liked);
        let joined = page.joined;
        let built =
            tokio::task::spawn_blocking(move || build_page(kind, &joined, &liked)).await??;
        let mut lines = Vec::with_capacity(built.len());
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
            lines.push(ExportLine {
                json: line.json,
                line_number: summary.lines,
                progress: Progress {
                    requests_done: progress.requests_done + index as u64 + 1,
                    ..progress
                },
            });
        }
        progress.requests_done += page.asked;
        if !lines.is_empty() && events.send(Ok(ExportEvent::Lines(lines))).await.is_err() {
            return Ok(None);
        }
    }
    Ok(Some(summary))
}

pub(crate) fn export_query(filter: &ExportFilter) -> ExportQuery {
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
pub(crate) struct JoinedRequest {
    pub(crate) inference: InferenceRecord,
    pub(crate) verdict: Verdict,
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

/// A page of requests joined with their records.
pub(crate) struct JoinedPage {
    /// Requests read.
    asked: u64,
    /// Those whose record monitoring holds, in page order.
    pub(crate) joined: Vec<JoinedRequest>,
    /// Those whose record it does not.
    missing: u64,
}

/// Joined pages, read and joined by a task of their own ahead of the
/// caller, so the database and monitoring work on the next pages while the
/// caller builds lines from this one. The task reads the next page of
/// feedback while earlier pages wait for monitoring, and has two pages at
/// monitoring at once: each step waits on another thread (SQLite's worker,
/// monitoring's store), so one at a time left the CPUs idle about half the
/// time.
pub(crate) struct JoinedPages {
    pages: mpsc::Receiver<Result<JoinedPage, Error>>,
    /// `None` once it ended and was checked.
    reader: Option<tokio::task::JoinHandle<()>>,
}

/// Pages waiting for the caller: one ready while the next are made.
const PAGES_AHEAD: usize = 1;

/// Pages being joined by monitoring at once, in page order.
const JOINS_IN_FLIGHT: usize = 2;

impl JoinedPages {
    pub(crate) fn start(
        store: &Store,
        monitoring: &MonitoringClient,
        query: &ExportQuery,
        masker: Option<Arc<PiiMasker>>,
    ) -> JoinedPages {
        let (sender, pages) = mpsc::channel(PAGES_AHEAD);
        let requests = RequestPages::new(store.clone(), query.clone());
        let monitoring = monitoring.clone();
        let reader = tokio::spawn(async move {
            let feedback_pages = futures::stream::try_unfold(requests, |mut requests| async move {
                Ok(requests.next().await?.map(|page| (page, requests)))
            });
            let joined = feedback_pages
                .map_ok(|page| {
                    let monitoring = monitoring.clone();
                    let masker = masker.clone();
                    async move {
                        let asked = page.len() as u64;
                        let (joined, missing) = join(&monitoring, page, masker).await?;
                        Ok(JoinedPage {
                            asked,
                            joined,
                            missing,
                        })
                    }
                })
                .try_buffered(JOINS_IN_FLIGHT);
            futures::pin_mut!(joined);
            while let Some(page) = joined.next().await {
                let failed = page.is_err();
                // The caller left, or the export ends with this error.
                if sender.send(page).await.is_err() || failed {
                    return;
                }
            }
        });
        JoinedPages {
            pages,
            reader: Some(reader),
        }
    }

    pub(crate) async fn next(&mut self) -> Result<Option<JoinedPage>, Error> {
        match self.pages.recv().await {
            Some(page) => page.map(Some),
            None => {
                // The reader ended: every page was read, unless it
                // panicked, which must not pass for a complete export.
                if let Some(reader) = self.reader.take() {
                    reader.await?;
                }
                Ok(None)
            }
        }
    }
}

impl Drop for JoinedPages {
    /// An export that ends early (its reader left) stops reading ahead.
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

/// Pages of whole requests: a page's last request is held back until the
/// next page shows whether more of its feedback follows.
struct RequestPages {
    store: Store,
    query: ExportQuery,
    after: Option<ExportPosition>,
    held_back: Vec<FeedbackRecord>,
    read_all: bool,
}

impl RequestPages {
    fn new(store: Store, query: ExportQuery) -> RequestPages {
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
                &self.store,
                &self.query,
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

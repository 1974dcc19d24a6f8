//! Feedback on served answers: checked, tied to the inference record it is
//! about, stored once per idempotency key, listed, and turned into datasets.

use std::collections::BTreeSet;
use std::sync::Arc;

use keel_store::Store;
use keel_types::{validate, FieldError, RequestId};
use uuid::Uuid;

use tokio::sync::mpsc;

use crate::dataset_export::{self, ExportEvent, ExportRequest, ExportResult};
use crate::error::Error;
use crate::ingest::{FeedbackIngest, Stored};
use crate::metrics::Counters;
use crate::monitoring_client::{MonitoringClient, BATCH_LIMIT};
use crate::record::{FeedbackKind, FeedbackRecord};
use crate::store::{self, FeedbackRow, Join, ListQuery};
use crate::summary::{self, VersionFeedback};

pub const MAX_TEXT_BYTES: usize = 32 * 1024;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;
pub const MAX_REASON_BYTES: usize = 256;
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG_BYTES: usize = 64;
/// Submissions in one SubmitFeedbackBatch: one group commit's worth.
pub const MAX_BATCH: usize = crate::ingest::MAX_GROUP;

/// A submission as the caller sent it (over gRPC or HTTP), not yet checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Submission {
    pub request_id: String,
    pub session_id: String,
    pub passage_id: String,
    /// `None`: unset or unknown.
    pub kind: Option<FeedbackKind>,
    pub value: f64,
    pub correction: String,
    pub comment: String,
    pub reason: String,
    pub tags: Vec<String>,
    pub user_id: String,
    pub idempotency_key: String,
}

/// What a piece of feedback judges.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Request(RequestId),
    /// RELEVANCE: one retrieved passage of a request.
    Passage {
        request_id: RequestId,
        passage_id: String,
    },
    /// A whole multi-turn conversation.
    Session(String),
}

/// A submission that passed every rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedSubmission {
    pub target: Target,
    pub kind: FeedbackKind,
    pub value: f64,
    pub correction: String,
    pub comment: String,
    pub reason: String,
    pub tags: Vec<String>,
    pub user_id: String,
    pub idempotency_key: Option<String>,
}

/// Exactly one of request and session, and a passage only for RELEVANCE.
fn check_target(submission: &Submission, kind: FeedbackKind) -> Result<Target, FieldError> {
    let judges_one_answer = matches!(kind, FeedbackKind::Correction | FeedbackKind::Relevance);
    let target = match (
        submission.request_id.is_empty(),
        submission.session_id.is_empty(),
    ) {
        (true, true) => {
            return Err(FieldError::new(
                "request_id",
                "must be set, or session_id for feedback on a whole session",
            ))
        }
        (false, false) => {
            return Err(FieldError::new(
                "session_id",
                "must be empty when request_id is set: feedback targets one request or one session",
            ))
        }
        (true, false) => {
            validate::not_empty("session_id", &submission.session_id)?;
            validate::max_len("session_id", &submission.session_id, validate::MAX_ID_BYTES)?;
            if judges_one_answer {
                return Err(FieldError::new(
                    "session_id",
                    format!(
                        "{} feedback needs request_id: it judges one answer or passage",
                        kind.as_str().to_uppercase()
                    ),
                ));
            }
            Target::Session(submission.session_id.clone())
        }
        (false, true) => {
            let request_id = RequestId::parse("request_id", &submission.request_id)?;
            if kind == FeedbackKind::Relevance {
                validate::not_empty("passage_id", &submission.passage_id)?;
                validate::max_len("passage_id", &submission.passage_id, validate::MAX_ID_BYTES)?;
                Target::Passage {
                    request_id,
                    passage_id: submission.passage_id.clone(),
                }
            } else {
                Target::Request(request_id)
            }
        }
    };
    if kind != FeedbackKind::Relevance && !submission.passage_id.is_empty() {
        return Err(FieldError::new(
            "passage_id",
            "must be empty unless kind is RELEVANCE",
        ));
    }
    Ok(target)
}

/// At most 16 tags of 1..=64 bytes without control characters; repeats
/// are dropped, the first order kept.
fn check_tags(tags: Vec<String>) -> Result<Vec<String>, FieldError> {
    if tags.len() > MAX_TAGS {
        return Err(FieldError::new(
            "tags",
            format!("must hold at most {MAX_TAGS} tags, got {}", tags.len()),
        ));
    }
    let mut kept: Vec<String> = Vec::with_capacity(tags.len());
    for (index, tag) in tags.into_iter().enumerate() {
        let field = format!("tags[{index}]");
        validate::not_empty(&field, &tag)?;
        validate::max_len(&field, &tag, MAX_TAG_BYTES)?;
        if tag.chars().any(char::is_control) {
            return Err(FieldError::new(
                field,
                "must not contain control characters",
            ));
        }
        if !kept.contains(&tag) {
            kept.push(tag);
        }
    }
    Ok(kept)
}

/// The rules of a submission, shared by the gRPC and HTTP edges.
/// A checked submission as a new record, not joined yet (session feedback
/// waits for no record; the ingest joins the others whose record
/// monitoring holds).
fn new_record(checked: CheckedSubmission) -> FeedbackRecord {
    let (request_id, passage_id, session_id) = match &checked.target {
        Target::Request(request_id) => (Some(*request_id), String::new(), String::new()),
        Target::Passage {
            request_id,
            passage_id,
        } => (Some(*request_id), passage_id.clone(), String::new()),
        Target::Session(session_id) => (None, String::new(), session_id.clone()),
    };
    FeedbackRecord {
        id: Uuid::now_v7().hyphenated().to_string(),
        request_id,
        session_id,
        passage_id,
        kind: checked.kind,
        value: checked.value,
        correction: checked.correction,
        comment: checked.comment,
        reason: checked.reason,
        tags: checked.tags,
        user_id: checked.user_id,
        idempotency_key: checked.idempotency_key.unwrap_or_default(),
        created_at_ms: keel_core::time::now_ms(),
        endpoint: String::new(),
        served_model: String::new(),
        served_version: 0,
        joined: request_id.is_none(),
    }
}

pub fn check_submission(submission: Submission) -> Result<CheckedSubmission, FieldError> {
    let Some(kind) = submission.kind else {
        return Err(FieldError::new(
            "kind",
            "must be one of THUMBS, RATING, CORRECTION, COMMENT, FLAG, RELEVANCE",
        ));
    };
    let target = check_target(&submission, kind)?;
    validate::max_len("correction", &submission.correction, MAX_TEXT_BYTES)?;
    validate::max_len("comment", &submission.comment, MAX_TEXT_BYTES)?;
    validate::max_len("user_id", &submission.user_id, validate::MAX_ID_BYTES)?;
    if kind == FeedbackKind::Flag {
        validate::not_empty("reason", &submission.reason)?;
        validate::max_len("reason", &submission.reason, MAX_REASON_BYTES)?;
    } else if !submission.reason.is_empty() {
        return Err(FieldError::new(
            "reason",
            "must be empty unless kind is FLAG",
        ));
    }
    let tags = check_tags(submission.tags)?;
    let key_chars = submission.idempotency_key.chars().count();
    if key_chars > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(FieldError::new(
            "idempotency_key",
            format!("must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters, got {key_chars}"),
        ));
    }
    let value = match kind {
        FeedbackKind::Thumbs => {
            if submission.value != 1.0 && submission.value != -1.0 {
                return Err(FieldError::new(
                    "value",
                    format!("must be 1 or -1 for THUMBS, got {}", submission.value),
                ));
            }
            submission.value
        }
        FeedbackKind::Relevance => {
            if submission.value != 1.0 && submission.value != -1.0 {
                return Err(FieldError::new(
                    "value",
                    format!(
                        "must be 1 (relevant) or -1 (not relevant) for RELEVANCE, got {}",
                        submission.value
                    ),
                ));
            }
            submission.value
        }
        FeedbackKind::Flag => 0.0,
        FeedbackKind::Rating => {
            let whole = submission.value.fract() == 0.0;
            if !whole || !(1.0..=5.0).contains(&submission.value) {
                return Err(FieldError::new(
                    "value",
                    format!(
                        "must be an integer in 1..=5 for RATING, got {}",
                        submission.value
                    ),
                ));
            }
            submission.value
        }
        FeedbackKind::Correction => {
            validate::not_empty("correction", &submission.correction)?;
            0.0
        }
        FeedbackKind::Comment => {
            validate::not_empty("comment", &submission.comment)?;
            0.0
        }
    };
    let idempotency_key = if submission.idempotency_key.is_empty() {
        None
    } else {
        Some(submission.idempotency_key)
    };
    Ok(CheckedSubmission {
        target,
        kind,
        value,
        correction: submission.correction,
        comment: submission.comment,
        reason: submission.reason,
        tags,
        user_id: submission.user_id,
        idempotency_key,
    })
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedbackFilter {
    pub request_id: Option<RequestId>,
    pub session_id: Option<String>,
    pub endpoint: Option<String>,
}

/// Where the next page starts: after the record at (created_at_ms, id) in
/// newest-first order.
pub type PageCursor = keel_types::page_cursor::PageCursor<Uuid>;

#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackPage {
    pub records: Vec<FeedbackRecord>,
    pub next: Option<PageCursor>,
}

/// Which feedback an export reads; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportFilter {
    pub endpoint: Option<String>,
    pub served_model: Option<String>,
    pub served_version: Option<u32>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// The feedback service's domain: the store plus the monitoring client.
#[derive(Clone)]
pub struct FeedbackBook {
    store: Store,
    monitoring: MonitoringClient,
    counters: Arc<Counters>,
    /// How long feedback waits for its inference record before it is
    /// reported as orphaned.
    orphan_grace_ms: i64,
    /// How long feedback is kept; `None`: forever.
    retention_ms: Option<i64>,
    ingest: FeedbackIngest,
}

impl FeedbackBook {
    pub fn new(
        store: Store,
        monitoring: MonitoringClient,
        counters: Counters,
        orphan_grace_ms: u64,
        retention_ms: Option<i64>,
        ingest: FeedbackIngest,
    ) -> FeedbackBook {
        FeedbackBook {
            store,
            monitoring,
            counters: Arc::new(counters),
            orphan_grace_ms: i64::try_from(orphan_grace_ms).unwrap_or(i64::MAX),
            retention_ms,
            ingest,
        }
    }

    /// Until when monitoring must keep a record that feedback joined now
    /// refers to.
    fn keep_records_until(&self) -> i64 {
        keep_records_until(self.retention_ms)
    }

    /// Deletes the feedback older than the retention period, in batches of
    /// `batch` rows; returns how many rows it deleted.
    pub async fn expire(&self, now_ms: i64, batch: u32) -> Result<u64, Error> {
        let Some(retention_ms) = self.retention_ms else {
            return Ok(0);
        };
        let before_ms = now_ms.saturating_sub(retention_ms);
        let deleted = keel_core::periodic::delete_in_batches(u64::from(batch), || {
            store::delete_expired_feedback(&self.store, before_ms, i64::from(batch))
        })
        .await?;
        if deleted > 0 {
            tracing::info!(deleted, "retention deleted expired feedback");
        }
        Ok(deleted)
    }

    /// Checks and stores a submission (in the ingest's next group commit).
    /// A submission whose idempotency key was seen returns the first record
    /// unchanged. Feedback on a request monitoring does not know yet (its
    /// record may still wait in serving's spill log, or monitoring is down)
    /// is kept unjoined and joined when the record arrives.
    pub async fn submit(&self, submission: Submission) -> Result<FeedbackRecord, Error> {
        // A taken idempotency key is found by the group's insert, which
        // skips the row and answers with the key's holder: no lookup per
        // submission, and none that depends on monitoring.
        let record = new_record(check_submission(submission)?);
        let stored = self.ingest.submit(record).await?;
        self.answer(stored)
    }

    /// Checks every submission of a batch (at most MAX_BATCH), then stores
    /// them in one group commit: all of them, or, when one is refused
    /// (named `items[i].…`), none. Answers in the batch's order, each as
    /// `submit` would.
    pub async fn submit_batch(
        &self,
        submissions: Vec<Submission>,
    ) -> Result<Vec<FeedbackRecord>, Error> {
        if submissions.is_empty() || submissions.len() > MAX_BATCH {
            return Err(FieldError::new(
                "items",
                format!(
                    "must hold 1..={MAX_BATCH} submissions, got {}",
                    submissions.len()
                ),
            )
            .into());
        }
        let mut records = Vec::with_capacity(submissions.len());
        for (index, submission) in submissions.into_iter().enumerate() {
            let checked = check_submission(submission).map_err(|error| {
                FieldError::new(format!("items[{index}].{}", error.field), error.rule)
            })?;
            records.push(new_record(checked));
        }
        let stored = self.ingest.submit_batch(records).await?;
        stored
            .into_iter()
            .map(|stored| self.answer(stored))
            .collect()
    }

    /// The answer to a stored submission.
    fn answer(&self, stored: Stored) -> Result<FeedbackRecord, Error> {
        match stored {
            Stored::Inserted(record) => {
                self.counters.submitted.inc();
                tracing::debug!(
                    id = %record.id,
                    request_id = ?record.request_id,
                    session_id = %record.session_id,
                    kind = record.kind.as_str(),
                    joined = record.joined,
                    "feedback stored"
                );
                Ok(record)
            }
            // A concurrent submission with the same key won the race:
            // answer with its record.
            Stored::KeyTaken(winner) => {
                self.counters.replayed.inc();
                record_from_row(winner)
            }
        }
    }

    /// One page, newest first by (created_at_ms, id).
    pub async fn list(
        &self,
        filter: &FeedbackFilter,
        after: Option<PageCursor>,
        page_size: u32,
    ) -> Result<FeedbackPage, Error> {
        let page_len = page_size as usize;
        let list = ListQuery {
            request_id: filter.request_id.map(|request_id| request_id.to_string()),
            session_id: filter.session_id.clone(),
            endpoint: filter.endpoint.clone(),
            before: after.map(|cursor| (cursor.position, cursor.key.to_string())),
            // One more than asked tells whether another page follows.
            limit: i64::from(page_size) + 1,
        };
        let mut rows = store::list_feedback(&self.store, &list).await?;
        let has_more = rows.len() > page_len;
        rows.truncate(page_len);
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            records.push(record_from_row(row)?);
        }
        let next = match records.last() {
            Some(last) if has_more => Some(cursor_after(last.created_at_ms, &last.id)?),
            _ => None,
        };
        Ok(FeedbackPage { records, next })
    }

    /// Joins the feedback of the last grace period that still waits for its
    /// inference record with the records monitoring holds now, a page of
    /// up to 1000 at a time (one BatchGetInferences each). Returns for how
    /// many requests feedback was joined.
    pub async fn join_waiting(&self) -> Result<u64, Error> {
        let now = keel_core::time::now_ms();
        let since = now.saturating_sub(self.orphan_grace_ms);
        let page_len = BATCH_LIMIT as i64;
        let mut after = None;
        let mut joined = 0;
        loop {
            let rows =
                store::unjoined_feedback(&self.store, since, i64::MAX, after, page_len).await?;
            joined += self.join_rows(&rows).await?.len() as u64;
            if rows.len() < BATCH_LIMIT {
                return Ok(joined);
            }
            after = rows.last().map(|row| (row.created_at_ms, row.id.clone()));
        }
    }

    /// Feedback whose record has not arrived within the grace period,
    /// oldest first; those whose record came meanwhile are joined first
    /// and left out.
    pub async fn orphaned(
        &self,
        after: Option<PageCursor>,
        page_size: u32,
    ) -> Result<FeedbackPage, Error> {
        let page_len = page_size as usize;
        let until = keel_core::time::now_ms().saturating_sub(self.orphan_grace_ms);
        let mut rows = store::unjoined_feedback(
            &self.store,
            0,
            until,
            after.map(|cursor| (cursor.position, cursor.key.to_string())),
            i64::from(page_size) + 1,
        )
        .await?;
        let has_more = rows.len() > page_len;
        rows.truncate(page_len);
        let next = match rows.last() {
            Some(last) if has_more => Some(cursor_after(last.created_at_ms, &last.id)?),
            _ => None,
        };
        // Monitoring down: nothing can be joined now, and the rows stand.
        let joined = match self.join_rows(&rows).await {
            Ok(joined) => joined,
            Err(Error::MonitoringUnavailable { .. }) => BTreeSet::new(),
            Err(error) => return Err(error),
        };
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            if !joined.contains(&row.request_id) {
                records.push(record_from_row(row)?);
            }
        }
        Ok(FeedbackPage { records, next })
    }

    /// Joins `rows` with the records monitoring has for their requests;
    /// returns the request ids it found.
    async fn join_rows(&self, rows: &[FeedbackRow]) -> Result<BTreeSet<String>, Error> {
        let request_ids: BTreeSet<RequestId> = rows
            .iter()
            .filter_map(|row| RequestId::parse("request_id", &row.request_id).ok())
            .collect();
        if request_ids.is_empty() {
            return Ok(BTreeSet::new());
        }
        let request_ids: Vec<RequestId> = request_ids.into_iter().collect();
        let inferences = self
            .monitoring
            .batch_get_inferences(&request_ids, Some(self.keep_records_until()))
            .await?;
        let joins: Vec<Join> = inferences
            .into_iter()
            .map(|inference| Join {
                request_id: inference.request_id.to_string(),
                endpoint: inference.endpoint,
                served_model: inference.served_model,
                served_version: i64::from(inference.served_version),
            })
            .collect();
        if joins.is_empty() {
            return Ok(BTreeSet::new());
        }
        let joined = store::join_feedback(&self.store, &joins, keel_core::time::now_ms()).await?;
        self.counters.joined_late.inc_by(joined);
        if joined > 0 {
            tracing::info!(
                joined,
                "feedback joined with inference records that came after it"
            );
        }
        Ok(joins.into_iter().map(|join| join.request_id).collect())
    }

    /// Per served version, the requests the matching feedback judged.
    pub async fn summarise(&self, filter: &ExportFilter) -> Result<Vec<VersionFeedback>, Error> {
        summary::summarise(&self.store, &self.monitoring, filter).await
    }

    /// Streams the dataset `request` asks for to `events`, line by line,
    /// then its summary, or the error that stopped it. Stops early when
    /// the receiver leaves.
    pub async fn export(&self, request: &ExportRequest, events: mpsc::Sender<ExportResult>) {
        match dataset_export::run(&self.store, &self.monitoring, request, &events).await {
            Ok(Some(summary)) => {
                self.counters.exported_lines.inc_by(summary.lines);
                tracing::info!(kind = ?request.kind, ?summary, "dataset exported");
                let _ = events.send(Ok(ExportEvent::Done(summary))).await;
            }
            Ok(None) => tracing::info!(kind = ?request.kind, "export abandoned by its reader"),
            Err(error) => {
                tracing::warn!(kind = ?request.kind, %error, "export failed");
                let _ = events.send(Err(error)).await;
            }
        }
    }
}

/// Until when monitoring must keep a record that feedback joined now refers
/// to: as long as that feedback lives (`retention_ms`; `None`: forever).
pub fn keep_records_until(retention_ms: Option<i64>) -> i64 {
    match retention_ms {
        Some(retention_ms) => keel_core::time::now_ms().saturating_add(retention_ms),
        None => i64::MAX,
    }
}

/// The cursor of the next page, which starts after the row at
/// (`created_at_ms`, `id`).
fn cursor_after(created_at_ms: i64, id: &str) -> Result<PageCursor, Error> {
    let key = Uuid::parse_str(id).map_err(|_| Error::CorruptRow {
        id: id.to_string(),
        reason: "its id is not a UUID".to_string(),
    })?;
    Ok(PageCursor {
        position: created_at_ms,
        key,
    })
}

pub(crate) fn row_from_record(record: &FeedbackRecord) -> Result<FeedbackRow, Error> {
    let idempotency_key = if record.idempotency_key.is_empty() {
        None
    } else {
        Some(record.idempotency_key.clone())
    };
    Ok(FeedbackRow {
        id: record.id.clone(),
        request_id: record
            .request_id
            .map(|request_id| request_id.to_string())
            .unwrap_or_default(),
        session_id: record.session_id.clone(),
        passage_id: record.passage_id.clone(),
        kind: record.kind.as_str().to_string(),
        value: record.value,
        correction: record.correction.clone(),
        comment: record.comment.clone(),
        reason: record.reason.clone(),
        tags: serde_json::to_string(&record.tags)?,
        user_id: record.user_id.clone(),
        idempotency_key,
        created_at_ms: record.created_at_ms,
        endpoint: record.endpoint.clone(),
        served_model: record.served_model.clone(),
        served_version: i64::from(record.served_version),
        joined_at_ms: record.joined.then_some(record.created_at_ms),
    })
}

pub(crate) fn record_from_row(row: FeedbackRow) -> Result<FeedbackRecord, Error> {
    let Some(kind) = FeedbackKind::parse(&row.kind) else {
        return Err(Error::CorruptRow {
            id: row.id,
            reason: format!("unknown kind {:?}", row.kind),
        });
    };
    let request_id = if row.request_id.is_empty() {
        None
    } else {
        let Ok(request_id) = RequestId::parse("request_id", &row.request_id) else {
            return Err(Error::CorruptRow {
                id: row.id,
                reason: format!("its request_id {:?} is not a UUID", row.request_id),
            });
        };
        Some(request_id)
    };
    let Ok(tags) = serde_json::from_str(&row.tags) else {
        return Err(Error::CorruptRow {
            id: row.id,
            reason: format!("its tags {:?} are not a JSON array of strings", row.tags),
        });
    };
    Ok(FeedbackRecord {
        id: row.id,
        request_id,
        session_id: row.session_id,
        passage_id: row.passage_id,
        kind,
        value: row.value,
        correction: row.correction,
        comment: row.comment,
        reason: row.reason,
        tags,
        user_id: row.user_id,
        idempotency_key: row.idempotency_key.unwrap_or_default(),
        created_at_ms: row.created_at_ms,
        endpoint: row.endpoint,
        served_model: row.served_model,
        served_version: u32::try_from(row.served_version).unwrap_or_default(),
        joined: row.joined_at_ms.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(kind: FeedbackKind, value: f64) -> Submission {
        Submission {
            request_id: "0190C3E5-8A2B-7C4D-9E1F-2A3B4C5D6E7F".to_string(),
            kind: Some(kind),
            value,
            ..Submission::default()
        }
    }

    #[test]
    fn accepted_submissions_are_normalised() {
        let checked = check_submission(submission(FeedbackKind::Thumbs, -1.0)).unwrap();
        let Target::Request(request_id) = checked.target else {
            panic!("a request target, got {:?}", checked.target);
        };
        assert_eq!(
            request_id.to_string(),
            "0190c3e5-8a2b-7c4d-9e1f-2a3b4c5d6e7f"
        );
        assert_eq!(checked.value, -1.0);
        assert_eq!(checked.idempotency_key, None);
        let correction = Submission {
            correction: "the right answer".to_string(),
            value: 3.0,
            idempotency_key: "k".to_string(),
            ..submission(FeedbackKind::Correction, 0.0)
        };
        let checked = check_submission(correction).unwrap();
        assert_eq!(checked.value, 0.0);
        assert_eq!(checked.idempotency_key.as_deref(), Some("k"));

        let flag = Submission {
            reason: "harmful".to_string(),
            tags: vec!["safety".into(), "billing".into(), "safety".into()],
            ..submission(FeedbackKind::Flag, 7.0)
        };
        let checked = check_submission(flag).unwrap();
        assert_eq!((checked.value, checked.reason.as_str()), (0.0, "harmful"));
        assert_eq!(checked.tags, vec!["safety", "billing"]);

        let relevance = Submission {
            passage_id: "doc-3".to_string(),
            ..submission(FeedbackKind::Relevance, -1.0)
        };
        let checked = check_submission(relevance).unwrap();
        assert!(matches!(
            checked.target,
            Target::Passage { ref passage_id, .. } if passage_id == "doc-3"
        ));
        assert_eq!(checked.value, -1.0);

        let on_session = Submission {
            request_id: String::new(),
            session_id: "chat-42".to_string(),
            ..submission(FeedbackKind::Rating, 2.0)
        };
        let checked = check_submission(on_session).unwrap();
        assert_eq!(checked.target, Target::Session("chat-42".to_string()));
    }

    #[test]
    fn rejected_submissions_name_the_field_and_rule() {
        let cases: Vec<(Submission, &str)> = vec![
            (
                Submission {
                    request_id: "abc".to_string(),
                    ..submission(FeedbackKind::Thumbs, 1.0)
                },
                "field `request_id`: must be a UUID, got \"abc\"",
            ),
            (
                Submission {
                    kind: None,
                    ..submission(FeedbackKind::Thumbs, 1.0)
                },
                "field `kind`: must be one of THUMBS, RATING, CORRECTION, COMMENT, FLAG, RELEVANCE",
            ),
            (
                Submission {
                    request_id: String::new(),
                    ..submission(FeedbackKind::Thumbs, 1.0)
                },
                "field `request_id`: must be set, or session_id for feedback on a whole session",
            ),
            (
                Submission {
                    session_id: "chat-1".to_string(),
                    ..submission(FeedbackKind::Thumbs, 1.0)
                },
                "field `session_id`: must be empty when request_id is set: feedback targets one request or one session",
            ),
            (
                Submission {
                    request_id: String::new(),
                    session_id: "chat-1".to_string(),
                    correction: "better".to_string(),
                    ..submission(FeedbackKind::Correction, 0.0)
                },
                "field `session_id`: CORRECTION feedback needs request_id: it judges one answer or passage",
            ),
            (
                Submission {
                    request_id: String::new(),
                    session_id: "s".repeat(257),
                    ..submission(FeedbackKind::Thumbs, 1.0)
                },
                "field `session_id`: must be at most 256 bytes, got 257",
            ),
            (
                submission(FeedbackKind::Relevance, 1.0),
                "field `passage_id`: must not be empty",
            ),
            (
                Submission {
                    passage_id: "doc-1".to_string(),
                    ..submission(FeedbackKind::Relevance, 0.5)
                },
                "field `value`: must be 1 (relevant) or -1 (not relevant) for RELEVANCE, got 0.5",
            ),
            (
                Submission {
                    passage_id: "doc-1".to_string(),
                    ..submission(FeedbackKind::Thumbs, 1.0)
                },
                "field `passage_id`: must be empty unless kind is RELEVANCE",
            ),
            (
                submission(FeedbackKind::Flag, 0.0),
                "field `reason`: must not be empty",
            ),
            (
                Submission {
                    reason: "r".repeat(257),
                    ..submission(FeedbackKind::Flag, 0.0)
                },
                "field `reason`: must be at most 256 bytes, got 257",
            ),
            (
                Submission {
                    reason: "harmful".to_string(),
                    ..submission(FeedbackKind::Thumbs, 1.0)
                },
                "field `reason`: must be empty unless kind is FLAG",
            ),
            (
                Submission {
                    tags: (0..17).map(|n| format!("t{n}")).collect(),
                    ..submission(FeedbackKind::Thumbs, 1.0)
                },
                "field `tags`: must hold at most 16 tags, got 17",
            ),
            (
                Submission {
                    tags: vec!["ok".into(), " ".into()],
                    ..submission(FeedbackKind::Thumbs, 1.0)
                },
                "field `tags[1]`: must not be empty",
            ),
            (
                Submission {
                    tags: vec!["x".repeat(65)],
                    ..submission(FeedbackKind::Thumbs, 1.0)
                },
                "field `tags[0]`: must be at most 64 bytes, got 65",
            ),
            (
                Submission {
                    tags: vec!["a\nb".into()],
                    ..submission(FeedbackKind::Thumbs, 1.0)
                },
                "field `tags[0]`: must not contain control characters",
            ),
            (
                submission(FeedbackKind::Thumbs, 0.0),
                "field `value`: must be 1 or -1 for THUMBS, got 0",
            ),
            (
                submission(FeedbackKind::Rating, 6.0),
                "field `value`: must be an integer in 1..=5 for RATING, got 6",
            ),
            (
                submission(FeedbackKind::Rating, 2.5),
                "field `value`: must be an integer in 1..=5 for RATING, got 2.5",
            ),
            (
                submission(FeedbackKind::Rating, f64::NAN),
                "field `value`: must be an integer in 1..=5 for RATING, got NaN",
            ),
            (
                submission(FeedbackKind::Correction, 0.0),
                "field `correction`: must not be empty",
            ),
            (
                Submission {
                    comment: "  ".to_string(),
                    ..submission(FeedbackKind::Comment, 0.0)
                },
                "field `comment`: must not be empty",
            ),
            (
                Submission {
                    correction: "x".repeat(MAX_TEXT_BYTES + 1),
                    ..submission(FeedbackKind::Correction, 0.0)
                },
                "field `correction`: must be at most 32768 bytes, got 32769",
            ),
            (
                Submission {
                    idempotency_key: "k".repeat(129),
                    ..submission(FeedbackKind::Thumbs, 1.0)
                },
                "field `idempotency_key`: must be at most 128 characters, got 129",
            ),
        ];
        for (bad, expected) in cases {
            assert_eq!(check_submission(bad).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn page_cursor_round_trips() {
        let cursor = PageCursor {
            position: 5,
            key: Uuid::from_u128(9),
        };
        assert_eq!(
            PageCursor::decode("page_token", &cursor.encode()).unwrap(),
            cursor
        );
        assert!(PageCursor::decode("page_token", "5_nope").is_err());
        assert!(PageCursor::decode("page_token", "nope").is_err());
    }
}

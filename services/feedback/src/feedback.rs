//! Feedback on served answers: checked, tied to the inference record it is
//! about, stored once per idempotency key, listed, and turned into datasets.

use std::collections::BTreeSet;
use std::sync::Arc;

use keel_store::Store;
use keel_types::{validate, FieldError, RequestId};
use uuid::Uuid;

use crate::error::Error;
use crate::export::{self, DatasetKind};
use crate::metrics::Counters;
use crate::monitoring_client::{MonitoringClient, BATCH_LIMIT};
use crate::record::{FeedbackKind, FeedbackRecord};
use crate::store::{self, ExportQuery, FeedbackRow, Join, ListQuery};

pub const MAX_TEXT_BYTES: usize = 32 * 1024;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;
pub const MAX_USER_ID_BYTES: usize = 256;

/// A submission as the caller sent it (over gRPC or HTTP), not yet checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Submission {
    pub request_id: String,
    /// `None`: unset or unknown.
    pub kind: Option<FeedbackKind>,
    pub value: f64,
    pub correction: String,
    pub comment: String,
    pub user_id: String,
    pub idempotency_key: String,
}

/// A submission that passed every rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedSubmission {
    pub request_id: RequestId,
    pub kind: FeedbackKind,
    pub value: f64,
    pub correction: String,
    pub comment: String,
    pub user_id: String,
    pub idempotency_key: Option<String>,
}

/// The rules of a submission, shared by the gRPC and HTTP edges.
pub fn check_submission(submission: Submission) -> Result<CheckedSubmission, FieldError> {
    let request_id = RequestId::parse("request_id", &submission.request_id)?;
    let Some(kind) = submission.kind else {
        return Err(FieldError::new(
            "kind",
            "must be one of THUMBS, RATING, CORRECTION, COMMENT",
        ));
    };
    validate::max_len("correction", &submission.correction, MAX_TEXT_BYTES)?;
    validate::max_len("comment", &submission.comment, MAX_TEXT_BYTES)?;
    validate::max_len("user_id", &submission.user_id, MAX_USER_ID_BYTES)?;
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
        request_id,
        kind,
        value,
        correction: submission.correction,
        comment: submission.comment,
        user_id: submission.user_id,
        idempotency_key,
    })
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedbackFilter {
    pub request_id: Option<RequestId>,
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
}

impl FeedbackBook {
    pub fn new(
        store: Store,
        monitoring: MonitoringClient,
        counters: Counters,
        orphan_grace_ms: u64,
    ) -> FeedbackBook {
        FeedbackBook {
            store,
            monitoring,
            counters: Arc::new(counters),
            orphan_grace_ms: i64::try_from(orphan_grace_ms).unwrap_or(i64::MAX),
        }
    }

    /// Checks and stores a submission. A submission whose idempotency key
    /// was seen returns the first record unchanged, without asking
    /// monitoring, so a retry does not depend on monitoring being up.
    /// Feedback on a request monitoring does not know yet (its record may
    /// still wait in serving's spill log, or monitoring is down) is kept
    /// unjoined and joined when the record arrives.
    pub async fn submit(&self, submission: Submission) -> Result<FeedbackRecord, Error> {
        let checked = check_submission(submission)?;
        if let Some(key) = &checked.idempotency_key {
            if let Some(existing) = store::get_by_idempotency_key(&self.store, key).await? {
                self.counters.replayed.inc();
                return record_from_row(existing);
            }
        }
        let inference = match self.monitoring.get_inference(checked.request_id).await {
            Ok(found) => found,
            Err(Error::MonitoringUnavailable { .. }) => None,
            Err(error) => return Err(error),
        };
        let joined = inference.is_some();
        let (endpoint, served_model, served_version) = match inference {
            Some(inference) => (
                inference.endpoint,
                inference.served_model,
                inference.served_version,
            ),
            None => (String::new(), String::new(), 0),
        };
        let record = FeedbackRecord {
            id: Uuid::now_v7().hyphenated().to_string(),
            request_id: checked.request_id,
            kind: checked.kind,
            value: checked.value,
            correction: checked.correction,
            comment: checked.comment,
            user_id: checked.user_id,
            idempotency_key: checked.idempotency_key.clone().unwrap_or_default(),
            created_at_ms: keel_core::time::now_ms(),
            endpoint,
            served_model,
            served_version,
            joined,
        };
        let inserted = store::insert_feedback(&self.store, &row_from_record(&record)).await?;
        if inserted {
            self.counters.submitted.inc();
            tracing::info!(
                id = %record.id,
                request_id = %record.request_id,
                kind = record.kind.as_str(),
                joined = record.joined,
                "feedback stored"
            );
            return Ok(record);
        }
        // A concurrent submission with the same key won the race: answer
        // with its record.
        let key = checked.idempotency_key.unwrap_or_default();
        let Some(winner) = store::get_by_idempotency_key(&self.store, &key).await? else {
            return Err(Error::CorruptRow {
                id: record.id,
                reason: format!("idempotency key {key:?} conflicted but no record holds it"),
            });
        };
        self.counters.replayed.inc();
        record_from_row(winner)
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
        let inferences = self.monitoring.batch_get_inferences(&request_ids).await?;
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

    /// The dataset lines (JSON objects without newlines) of the feedback
    /// that matches `filter`, joined with the inference records.
    pub async fn export(
        &self,
        kind: DatasetKind,
        filter: &ExportFilter,
    ) -> Result<Vec<String>, Error> {
        let export_query = ExportQuery {
            endpoint: filter.endpoint.clone(),
            served_model: filter.served_model.clone(),
            served_version: filter.served_version.map(i64::from),
            since_ms: filter.since_ms,
            until_ms: filter.until_ms,
        };
        let rows = store::export_feedback(&self.store, &export_query).await?;
        let mut feedback = Vec::with_capacity(rows.len());
        for row in rows {
            feedback.push(record_from_row(row)?);
        }
        let request_ids: BTreeSet<RequestId> =
            feedback.iter().map(|record| record.request_id).collect();
        let request_ids: Vec<RequestId> = request_ids.into_iter().collect();
        let inferences = self.monitoring.batch_get_inferences(&request_ids).await?;
        let lines =
            tokio::task::spawn_blocking(move || export::build_lines(kind, &feedback, &inferences))
                .await??;
        self.counters.exported_lines.inc_by(lines.len() as u64);
        tracing::info!(kind = ?kind, lines = lines.len(), "dataset exported");
        Ok(lines)
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

fn row_from_record(record: &FeedbackRecord) -> FeedbackRow {
    let idempotency_key = if record.idempotency_key.is_empty() {
        None
    } else {
        Some(record.idempotency_key.clone())
    };
    FeedbackRow {
        id: record.id.clone(),
        request_id: record.request_id.to_string(),
        kind: record.kind.as_str().to_string(),
        value: record.value,
        correction: record.correction.clone(),
        comment: record.comment.clone(),
        user_id: record.user_id.clone(),
        idempotency_key,
        created_at_ms: record.created_at_ms,
        endpoint: record.endpoint.clone(),
        served_model: record.served_model.clone(),
        served_version: i64::from(record.served_version),
        joined_at_ms: record.joined.then_some(record.created_at_ms),
    }
}

fn record_from_row(row: FeedbackRow) -> Result<FeedbackRecord, Error> {
    let Some(kind) = FeedbackKind::parse(&row.kind) else {
        return Err(Error::CorruptRow {
            id: row.id,
            reason: format!("unknown kind {:?}", row.kind),
        });
    };
    let Ok(request_id) = RequestId::parse("request_id", &row.request_id) else {
        return Err(Error::CorruptRow {
            id: row.id,
            reason: format!("its request_id {:?} is not a UUID", row.request_id),
        });
    };
    Ok(FeedbackRecord {
        id: row.id,
        request_id,
        kind,
        value: row.value,
        correction: row.correction,
        comment: row.comment,
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
        assert_eq!(
            checked.request_id.to_string(),
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
                "field `kind`: must be one of THUMBS, RATING, CORRECTION, COMMENT",
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

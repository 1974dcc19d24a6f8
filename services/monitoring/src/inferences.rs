//! The inference log: every served request with its response, stored once
//! per request id, read back by id or newest first, and summarised into
//! metrics.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_core::FieldError;
use keel_store::Store;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;
use crate::metrics::{self, MetricsSample, VersionMetrics};
use crate::store::{self, InferenceRow, ListQuery};

/// A request id: a UUID, always written in its canonical lowercase
/// hyphenated form so lookups and orderings agree on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(Uuid);

impl RequestId {
    pub fn parse(field: &str, text: &str) -> Result<RequestId, FieldError> {
        Uuid::parse_str(text).map(RequestId).map_err(|_| {
            let shown: String = text.chars().take(64).collect();
            FieldError::new(field, format!("must be a UUID, got {shown:?}"))
        })
    }

    pub fn from_uuid(uuid: Uuid) -> RequestId {
        RequestId(uuid)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(formatter)
    }
}

impl TryFrom<String> for RequestId {
    type Error = FieldError;

    fn try_from(text: String) -> Result<RequestId, FieldError> {
        RequestId::parse("request_id", &text)
    }
}

impl From<RequestId> for String {
    fn from(request_id: RequestId) -> String {
        request_id.to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferenceStatus {
    Ok,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A retrieved passage with its whole text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub point_id: String,
    /// Finite: checked at the boundary, because JSON cannot hold NaN.
    pub score: f32,
    pub text: String,
}

/// One served request and its response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceRecord {
    pub request_id: RequestId,
    pub trace_id: String,
    pub endpoint: String,
    pub route_target: String,
    pub served_model: String,
    pub served_version: u32,
    pub user_id: String,
    pub session_id: String,
    pub question: String,
    pub input_messages: Vec<ChatMessage>,
    pub contexts: Vec<Context>,
    pub prompt_messages: Vec<ChatMessage>,
    pub answer: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Finite and >= 0.
    pub latency_ms: f64,
    pub status: InferenceStatus,
    pub error: String,
    pub started_at_ms: i64,
    pub generator: String,
}

/// Which records a listing returns; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferenceFilter {
    pub endpoint: Option<String>,
    pub served_model: Option<String>,
    pub served_version: Option<u32>,
    /// Inclusive.
    pub since_ms: Option<i64>,
    /// Exclusive.
    pub until_ms: Option<i64>,
}

/// Where the next page starts: after this record in newest-first order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    pub started_at_ms: i64,
    pub request_id: RequestId,
}

impl PageCursor {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.started_at_ms, self.request_id)
    }

    pub fn decode(field: &str, token: &str) -> Result<PageCursor, FieldError> {
        let invalid =
            || FieldError::new(field, "must be a next_page_token returned by this service");
        let (time_part, id_part) = token.split_once('_').ok_or_else(invalid)?;
        let started_at_ms: i64 = time_part.parse().map_err(|_| invalid())?;
        let request_id = RequestId::parse(field, id_part).map_err(|_| invalid())?;
        Ok(PageCursor {
            started_at_ms,
            request_id,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InferencePage {
    pub records: Vec<InferenceRecord>,
    pub next: Option<PageCursor>,
}

/// The inference log over its store, with the counter `/metrics` reports.
#[derive(Clone)]
pub struct InferenceLog {
    store: Store,
    records_stored: Arc<AtomicU64>,
}

impl InferenceLog {
    pub fn new(store: Store) -> InferenceLog {
        InferenceLog {
            store,
            records_stored: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records stored by this process since it started.
    pub fn records_stored(&self) -> Arc<AtomicU64> {
        self.records_stored.clone()
    }

    /// Stores the records in one transaction; a request id already stored is
    /// left as it is. Returns how many records were new.
    pub async fn record(&self, records: Vec<InferenceRecord>) -> Result<u64, Error> {
        let rows = tokio::task::spawn_blocking(move || encode_rows(&records)).await??;
        let inserted = store::insert_inferences(&self.store, &rows).await?;
        self.records_stored.fetch_add(inserted, Ordering::Relaxed);
        tracing::debug!(received = rows.len(), inserted, "inference records stored");
        Ok(inserted)
    }

    pub async fn get(&self, request_id: RequestId) -> Result<InferenceRecord, Error> {
        let key = request_id.to_string();
        let Some(json) = store::get_inference(&self.store, &key).await? else {
            return Err(Error::InferenceNotFound { request_id: key });
        };
        decode_record(&key, &json)
    }

    /// The records of the ids that exist, in the order asked, each once.
    pub async fn batch_get(
        &self,
        request_ids: &[RequestId],
    ) -> Result<Vec<InferenceRecord>, Error> {
        let mut unique_keys: Vec<String> = Vec::with_capacity(request_ids.len());
        for request_id in request_ids {
            let key = request_id.to_string();
            if !unique_keys.contains(&key) {
                unique_keys.push(key);
            }
        }
        let found = store::get_inferences(&self.store, &unique_keys).await?;
        tokio::task::spawn_blocking(move || {
            let by_id: HashMap<String, String> = found.into_iter().collect();
            let mut records = Vec::with_capacity(by_id.len());
            for key in &unique_keys {
                if let Some(json) = by_id.get(key) {
                    records.push(decode_record(key, json)?);
                }
            }
            Ok(records)
        })
        .await?
    }

    /// One page, newest first by (started_at_ms, request_id).
    pub async fn list(
        &self,
        filter: &InferenceFilter,
        after: Option<PageCursor>,
        page_size: u32,
    ) -> Result<InferencePage, Error> {
        let page_len = page_size as usize;
        let list = ListQuery {
            endpoint: filter.endpoint.clone(),
            served_model: filter.served_model.clone(),
            served_version: filter.served_version.map(i64::from),
            since_ms: filter.since_ms,
            until_ms: filter.until_ms,
            before: after.map(|cursor| (cursor.started_at_ms, cursor.request_id.to_string())),
            // One more than asked tells whether another page follows.
            limit: i64::from(page_size) + 1,
        };
        let mut rows = store::list_inferences(&self.store, &list).await?;
        let has_more = rows.len() > page_len;
        rows.truncate(page_len);
        tokio::task::spawn_blocking(move || {
            let mut records = Vec::with_capacity(rows.len());
            for (_, request_id, json) in &rows {
                records.push(decode_record(request_id, json)?);
            }
            let next = match records.last() {
                Some(last) if has_more => Some(PageCursor {
                    started_at_ms: last.started_at_ms,
                    request_id: last.request_id,
                }),
                _ => None,
            };
            Ok(InferencePage { records, next })
        })
        .await?
    }

    /// Metrics per served (model, version) of `endpoint` over the requests
    /// that started at or after `since_ms`.
    pub async fn metrics(
        &self,
        endpoint: &str,
        since_ms: i64,
    ) -> Result<Vec<VersionMetrics>, Error> {
        let rows = store::metrics_rows(&self.store, endpoint, since_ms).await?;
        let summaries = tokio::task::spawn_blocking(move || {
            let mut samples = Vec::with_capacity(rows.len());
            for row in rows {
                samples.push(MetricsSample {
                    served_model: row.served_model,
                    served_version: u32::try_from(row.served_version).unwrap_or_default(),
                    is_error: row.status == store::STATUS_ERROR,
                    latency_ms: row.latency_ms,
                    input_tokens: u64::try_from(row.input_tokens).unwrap_or_default(),
                    output_tokens: u64::try_from(row.output_tokens).unwrap_or_default(),
                });
            }
            metrics::summarize(samples)
        })
        .await?;
        Ok(summaries)
    }
}

fn encode_rows(records: &[InferenceRecord]) -> Result<Vec<InferenceRow>, Error> {
    let mut rows = Vec::with_capacity(records.len());
    for record in records {
        let request_id = record.request_id.to_string();
        let record_json = serde_json::to_string(record).map_err(|source| Error::Encode {
            request_id: request_id.clone(),
            source,
        })?;
        let status = match record.status {
            InferenceStatus::Ok => store::STATUS_OK,
            InferenceStatus::Error => store::STATUS_ERROR,
        };
        rows.push(InferenceRow {
            request_id,
            trace_id: record.trace_id.clone(),
            endpoint: record.endpoint.clone(),
            served_model: record.served_model.clone(),
            served_version: i64::from(record.served_version),
            route_target: record.route_target.clone(),
            user_id: record.user_id.clone(),
            session_id: record.session_id.clone(),
            status,
            latency_ms: record.latency_ms,
            input_tokens: i64::from(record.input_tokens),
            output_tokens: i64::from(record.output_tokens),
            started_at_ms: record.started_at_ms,
            record_json,
        });
    }
    Ok(rows)
}

fn decode_record(request_id: &str, json: &str) -> Result<InferenceRecord, Error> {
    serde_json::from_str(json).map_err(|source| Error::CorruptRecord {
        request_id: request_id.to_string(),
        source,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A complete record with request id `n` (as a UUID).
    pub(crate) fn sample_record(
        n: u128,
        endpoint: &str,
        started_at_ms: i64,
        latency_ms: f64,
    ) -> InferenceRecord {
        InferenceRecord {
            request_id: RequestId::from_uuid(Uuid::from_u128(n)),
            trace_id: format!("{n:032x}"),
            endpoint: endpoint.to_string(),
            route_target: "support-chain@champion".to_string(),
            served_model: "support-chain".to_string(),
            served_version: 1,
            user_id: "user-1".to_string(),
            session_id: "session-1".to_string(),
            question: format!("question {n}?"),
            input_messages: vec![ChatMessage {
                role: "user".to_string(),
                content: format!("question {n}?"),
            }],
            contexts: vec![Context {
                point_id: "doc-1".to_string(),
                score: 0.75,
                text: "the passage".to_string(),
            }],
            prompt_messages: vec![
                ChatMessage {
                    role: "system".to_string(),
                    content: "answer from the context".to_string(),
                },
                ChatMessage {
                    role: "user".to_string(),
                    content: format!("question {n}?"),
                },
            ],
            answer: format!("answer {n}"),
            input_tokens: 12,
            output_tokens: 4,
            latency_ms,
            status: InferenceStatus::Ok,
            error: String::new(),
            started_at_ms,
            generator: "extractive".to_string(),
        }
    }

    async fn sqlite_log(dir: &tempfile::TempDir) -> InferenceLog {
        let url = keel_store::default_sqlite_url(dir.path(), "monitoring");
        InferenceLog::new(Store::open(&url, store::MIGRATIONS).await.unwrap())
    }

    async fn postgres_log() -> InferenceLog {
        let url = keel_store::testing::fresh_postgres_database()
            .await
            .expect("postgres must run at postgres://postgres@127.0.0.1:5432/test");
        InferenceLog::new(Store::open(&url, store::MIGRATIONS).await.unwrap())
    }

    fn ids(records: &[InferenceRecord]) -> Vec<RequestId> {
        records.iter().map(|record| record.request_id).collect()
    }

    fn id(n: u128) -> RequestId {
        RequestId::from_uuid(Uuid::from_u128(n))
    }

    async fn record_get_and_idempotency(log: &InferenceLog) {
        let first = sample_record(1, "support", 1_000, 5.0);
        let second = sample_record(2, "support", 2_000, 6.0);
        assert_eq!(
            log.record(vec![first.clone(), second.clone()])
                .await
                .unwrap(),
            2
        );
        // A re-sent record is not duplicated nor changed; the new one is stored.
        let mut resent = first.clone();
        resent.answer = "changed".to_string();
        let third = sample_record(3, "support", 3_000, 7.0);
        assert_eq!(
            log.record(vec![resent, third.clone(), third.clone()])
                .await
                .unwrap(),
            1
        );
        assert_eq!(log.records_stored().load(Ordering::Relaxed), 3);

        assert_eq!(log.get(id(1)).await.unwrap(), first);
        let missing = log.get(id(99)).await.unwrap_err();
        assert!(
            matches!(missing, Error::InferenceNotFound { ref request_id } if *request_id == id(99).to_string())
        );

        let batch = log.batch_get(&[id(3), id(99), id(1), id(3)]).await.unwrap();
        assert_eq!(batch, vec![third, first]);
        let all = log
            .list(&InferenceFilter::default(), None, 10)
            .await
            .unwrap();
        assert_eq!(ids(&all.records), vec![id(3), id(2), id(1)]);
        assert_eq!(all.next, None);
    }

    async fn ordering_filters_and_pagination(log: &InferenceLog) {
        // Two records share a start time: the larger request id comes first.
        let mut records = vec![
            sample_record(10, "support", 1_000, 1.0),
            sample_record(12, "support", 2_000, 1.0),
            sample_record(11, "support", 2_000, 1.0),
            sample_record(13, "sales", 3_000, 1.0),
            sample_record(14, "support", 4_000, 1.0),
        ];
        records[4].served_version = 2;
        log.record(records).await.unwrap();

        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = log
                .list(&InferenceFilter::default(), cursor, 2)
                .await
                .unwrap();
            pages += 1;
            assert!(page.records.len() <= 2);
            seen.extend(ids(&page.records));
            let Some(next) = page.next else { break };
            cursor = Some(next);
        }
        assert_eq!(seen, vec![id(14), id(13), id(12), id(11), id(10)]);
        assert_eq!(pages, 3);

        let support = InferenceFilter {
            endpoint: Some("support".to_string()),
            ..InferenceFilter::default()
        };
        let page = log.list(&support, None, 100).await.unwrap();
        assert_eq!(ids(&page.records), vec![id(14), id(12), id(11), id(10)]);

        let window = InferenceFilter {
            since_ms: Some(2_000),
            until_ms: Some(4_000),
            ..InferenceFilter::default()
        };
        let page = log.list(&window, None, 100).await.unwrap();
        assert_eq!(ids(&page.records), vec![id(13), id(12), id(11)]);

        let version_two = InferenceFilter {
            served_model: Some("support-chain".to_string()),
            served_version: Some(2),
            ..InferenceFilter::default()
        };
        let page = log.list(&version_two, None, 100).await.unwrap();
        assert_eq!(ids(&page.records), vec![id(14)]);
    }

    async fn metrics_over_a_window(log: &InferenceLog) {
        let now = 10_000_000;
        let mut records = Vec::new();
        for latency in 1..=100u32 {
            let mut record = sample_record(
                u128::from(1_000 + latency),
                "metered",
                now - i64::from(latency),
                f64::from(latency),
            );
            if latency % 10 == 0 {
                record.status = InferenceStatus::Error;
            }
            records.push(record);
        }
        let mut challenger = sample_record(2_000, "metered", now, 42.0);
        challenger.served_version = 2;
        records.push(challenger);
        // Outside the window, and on another endpoint: neither counts.
        records.push(sample_record(3_000, "metered", now - 60_000, 1_000.0));
        records.push(sample_record(3_001, "other", now, 1_000.0));
        log.record(records).await.unwrap();

        let summaries = log.metrics("metered", now - 1_000).await.unwrap();
        assert_eq!(summaries.len(), 2);
        let champion = &summaries[0];
        assert_eq!(
            (champion.served_model.as_str(), champion.served_version),
            ("support-chain", 1)
        );
        assert_eq!(champion.request_count, 100);
        assert_eq!(champion.error_count, 10);
        assert_eq!(champion.error_rate, 0.1);
        assert_eq!(champion.latency_p50_ms, 50.0);
        assert_eq!(champion.latency_p95_ms, 95.0);
        assert_eq!(champion.latency_p99_ms, 99.0);
        assert_eq!(champion.input_tokens, 1_200);
        assert_eq!(champion.output_tokens, 400);
        assert_eq!(summaries[1].served_version, 2);
        assert_eq!(summaries[1].request_count, 1);
        assert_eq!(summaries[1].latency_p99_ms, 42.0);
        assert!(log.metrics("unknown", 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn sqlite_record_get_and_idempotency() {
        let dir = tempfile::tempdir().unwrap();
        record_get_and_idempotency(&sqlite_log(&dir).await).await;
    }

    #[tokio::test]
    async fn postgres_record_get_and_idempotency() {
        record_get_and_idempotency(&postgres_log().await).await;
    }

    #[tokio::test]
    async fn sqlite_ordering_filters_and_pagination() {
        let dir = tempfile::tempdir().unwrap();
        ordering_filters_and_pagination(&sqlite_log(&dir).await).await;
    }

    #[tokio::test]
    async fn postgres_ordering_filters_and_pagination() {
        ordering_filters_and_pagination(&postgres_log().await).await;
    }

    #[tokio::test]
    async fn sqlite_metrics_over_a_window() {
        let dir = tempfile::tempdir().unwrap();
        metrics_over_a_window(&sqlite_log(&dir).await).await;
    }

    #[tokio::test]
    async fn postgres_metrics_over_a_window() {
        metrics_over_a_window(&postgres_log().await).await;
    }

    #[tokio::test]
    async fn sqlite_restart_keeps_acknowledged_records() {
        let dir = tempfile::tempdir().unwrap();
        let record = sample_record(7, "support", 1_000, 3.5);
        let before = sqlite_log(&dir).await;
        before.record(vec![record.clone()]).await.unwrap();
        before.store.close().await;
        drop(before);
        let after = sqlite_log(&dir).await;
        assert_eq!(after.get(id(7)).await.unwrap(), record);
        // Re-sent after the restart: still not duplicated.
        assert_eq!(after.record(vec![record]).await.unwrap(), 0);
    }

    #[test]
    fn request_ids_are_canonical() {
        let upper = RequestId::parse("request_id", "0190C3E5-8A2B-7C4D-9E1F-2A3B4C5D6E7F").unwrap();
        assert_eq!(upper.to_string(), "0190c3e5-8a2b-7c4d-9e1f-2a3b4c5d6e7f");
        let error = RequestId::parse("request_id", "nope").unwrap_err();
        assert_eq!(
            error.to_string(),
            "field `request_id`: must be a UUID, got \"nope\""
        );
    }

    #[test]
    fn page_cursor_round_trips_and_rejects_garbage() {
        let cursor = PageCursor {
            started_at_ms: 1_700_000_000_000,
            request_id: id(5),
        };
        assert_eq!(
            PageCursor::decode("page_token", &cursor.encode()).unwrap(),
            cursor
        );
        for garbage in [
            "",
            "abc",
            "12_nope",
            "x_00000000-0000-0000-0000-000000000005",
        ] {
            let error = PageCursor::decode("page_token", garbage).unwrap_err();
            assert_eq!(error.field, "page_token");
        }
    }
}

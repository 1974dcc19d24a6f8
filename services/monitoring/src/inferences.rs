//! The inference log: every served request with its response, stored once
//! per request id, read back by id or newest first, and summarised into
//! metrics.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_store::Store;
use keel_types::{InferenceRecord, InferenceStatus, PageCursor, RequestId};

use crate::error::Error;
use crate::metrics::{self, VersionMetrics};
use crate::store::{self, InferenceRow, ListQuery};

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
    /// Only the shadow answers of this live request.
    pub shadow_of: Option<RequestId>,
}

/// Where the next page of inferences starts: `position` is the last
/// record's `started_at_ms`.
pub type InferenceCursor = PageCursor<RequestId>;

#[derive(Debug, Clone, PartialEq)]
pub struct InferencePage {
    pub records: Vec<InferenceRecord>,
    pub next: Option<InferenceCursor>,
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

    /// The records of the ids that exist, in the order asked, each once;
    /// those found are kept by retention at least until `keep_until_ms`
    /// when it is set.
    pub async fn batch_get(
        &self,
        request_ids: &[RequestId],
        keep_until_ms: Option<i64>,
    ) -> Result<Vec<InferenceRecord>, Error> {
        let mut seen = HashSet::with_capacity(request_ids.len());
        let unique_keys: Vec<String> = request_ids
            .iter()
            .filter(|request_id| seen.insert(**request_id))
            .map(ToString::to_string)
            .collect();
        if let Some(until_ms) = keep_until_ms {
            store::keep_inferences(&self.store, &unique_keys, until_ms).await?;
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
        after: Option<InferenceCursor>,
        page_size: u32,
    ) -> Result<InferencePage, Error> {
        let page_len = page_size as usize;
        let list = ListQuery {
            endpoint: filter.endpoint.clone(),
            served_model: filter.served_model.clone(),
            served_version: filter.served_version.map(i64::from),
            since_ms: filter.since_ms,
            until_ms: filter.until_ms,
            shadow_of: filter.shadow_of.map(|live| live.to_string()),
            before: after.map(|cursor| (cursor.position, cursor.key.to_string())),
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
                Some(last) if has_more => Some(InferenceCursor {
                    position: last.started_at_ms,
                    key: last.request_id,
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
        let totals = store::version_totals(&self.store, endpoint, since_ms).await?;
        let mut summaries = Vec::with_capacity(totals.len());
        for version in totals {
            let request_count = u64::try_from(version.request_count).unwrap_or_default();
            let mut percentiles = [0.0; 3];
            for (slot, percent) in percentiles.iter_mut().zip([50, 95, 99]) {
                let Some(offset) = metrics::nearest_rank_offset(request_count, percent) else {
                    continue;
                };
                let offset = i64::try_from(offset).unwrap_or(i64::MAX);
                let latency = store::latency_at(
                    &self.store,
                    endpoint,
                    since_ms,
                    &version.served_model,
                    version.served_version,
                    offset,
                )
                .await?;
                *slot = latency.unwrap_or_default();
            }
            let error_count = u64::try_from(version.error_count).unwrap_or_default();
            summaries.push(VersionMetrics {
                served_model: version.served_model,
                served_version: u32::try_from(version.served_version).unwrap_or_default(),
                request_count,
                error_count,
                error_rate: metrics::error_rate(error_count, request_count),
                latency_p50_ms: percentiles[0],
                latency_p95_ms: percentiles[1],
                latency_p99_ms: percentiles[2],
                input_tokens: u64::try_from(version.input_tokens).unwrap_or_default(),
                output_tokens: u64::try_from(version.output_tokens).unwrap_or_default(),
            });
        }
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
            shadow_of: record
                .shadow_of
                .map(|live| live.to_string())
                .unwrap_or_default(),
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
    use keel_types::{ChatMessage, FinishReason, Passage, Role};
    use uuid::Uuid;

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
            span_id: format!("{n:016x}"),
            endpoint: endpoint.to_string(),
            route_target: "support-chain@champion".to_string(),
            served_model: "support-chain".to_string(),
            served_version: 1,
            user_id: "user-1".to_string(),
            session_id: "session-1".to_string(),
            question: format!("question {n}?"),
            input_messages: vec![ChatMessage::new(Role::User, format!("question {n}?"))],
            contexts: vec![Passage {
                id: "doc-1".to_string(),
                score: 0.75,
                text: "the passage".to_string(),
            }],
            prompt_messages: vec![
                ChatMessage::new(Role::System, "answer from the context"),
                ChatMessage::new(Role::User, format!("question {n}?")),
            ],
            answer: format!("answer {n}"),
            input_tokens: 12,
            output_tokens: 4,
            latency_ms,
            status: InferenceStatus::Ok,
            error: String::new(),
            started_at_ms,
            generator: "extractive".to_string(),
            finish_reason: FinishReason::Stop,
            shadow_of: None,
            cache_hit: keel_types::CacheHit::None,
            guardrails: Vec::new(),
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

        let batch = log
            .batch_get(&[id(3), id(99), id(1), id(3)], None)
            .await
            .unwrap();
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
    fn page_cursor_round_trips_and_rejects_garbage() {
        let cursor = InferenceCursor {
            position: 1_700_000_000_000,
            key: id(5),
        };
        assert_eq!(
            InferenceCursor::decode("page_token", &cursor.encode()).unwrap(),
            cursor
        );
        for garbage in [
            "",
            "abc",
            "12_nope",
            "x_00000000-0000-0000-0000-000000000005",
        ] {
            let error = InferenceCursor::decode("page_token", garbage).unwrap_err();
            assert_eq!(error.field, "page_token");
        }
    }
}

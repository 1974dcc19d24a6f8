//! Retention: deletes inference records and traces older than their
//! configured periods, in bounded batches. A record that feedback refers
//! to carries a keep-until time (set when feedback joins it) and stays
//! until then.

use keel_store::{Store, StoreError};

/// Nanoseconds per millisecond: traces are timed in Unix nanoseconds.
const NANOS_PER_MS: i64 = 1_000_000;

#[derive(Clone)]
pub struct Retention {
    store: Store,
    /// 0: kept forever.
    inference_ms: u64,
    span_ms: u64,
    batch: u32,
}

/// What one run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub inferences: u64,
    pub traces: u64,
}

impl Retention {
    pub fn new(store: Store, inference_ms: u64, span_ms: u64, batch: u32) -> Retention {
        Retention {
            store,
            inference_ms,
            span_ms,
            batch: batch.max(1),
        }
    }

    /// Whether any period is set: otherwise nothing ever expires.
    pub fn is_enabled(&self) -> bool {
        self.inference_ms > 0 || self.span_ms > 0
    }

    /// Deletes everything expired at `now_ms`.
    pub async fn run_once(&self, now_ms: i64) -> Result<RetentionReport, StoreError> {
        let batch = u64::from(self.batch);
        let limit = i64::from(self.batch);
        let mut report = RetentionReport::default();
        if self.inference_ms > 0 {
            let before_ms = now_ms.saturating_sub(to_i64(self.inference_ms));
            report.inferences = keel_core::periodic::delete_in_batches(batch, || {
                crate::store::delete_expired_inferences(&self.store, before_ms, now_ms, limit)
            })
            .await?;
        }
        if self.span_ms > 0 {
            let before_nanos = now_ms
                .saturating_sub(to_i64(self.span_ms))
                .saturating_mul(NANOS_PER_MS);
            report.traces = keel_core::periodic::delete_in_batches(batch, || {
                crate::store::delete_expired_traces(&self.store, before_nanos, limit)
            })
            .await?;
        }
        if report != RetentionReport::default() {
            tracing::info!(
                inferences = report.inferences,
                traces = report.traces,
                "retention deleted expired data"
            );
        }
        Ok(report)
    }
}

fn to_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use keel_types::RequestId;
    use uuid::Uuid;

    use super::*;
    use crate::inferences::tests::sample_record;
    use crate::inferences::InferenceLog;
    use crate::traces::tests::{prepare_spans, span, with_attribute};
    use crate::traces::{write_spans, TraceStore, MODEL_ATTRIBUTE};

    const HOUR_MS: i64 = 3_600_000;
    const NOW_MS: i64 = 100 * HOUR_MS;

    fn id(n: u128) -> RequestId {
        RequestId::from_uuid(Uuid::from_u128(n))
    }

    /// Records 1..=5 started 5..=1 hours ago; 1 and 2 are kept by feedback
    /// (1 until an hour from now, 2 until an hour ago). Traces 1..=3 started
    /// 3..=1 hours ago. Retention keeps 2.5 hours of both, 2 rows per batch.
    async fn expires_what_is_old_and_unreferenced(store: Store) {
        let log = InferenceLog::new(store.clone());
        let records = (1..=5)
            .map(|n| sample_record(n, "support", NOW_MS - (6 - n as i64) * HOUR_MS, 1.0))
            .collect();
        log.record(records).await.unwrap();
        log.batch_get(&[id(1)], Some(NOW_MS + HOUR_MS))
            .await
            .unwrap();
        log.batch_get(&[id(2)], Some(NOW_MS - HOUR_MS))
            .await
            .unwrap();
        for trace in 1..=3_u128 {
            let start_ns = (NOW_MS - (4 - trace as i64) * HOUR_MS) * 1_000_000;
            let model = |name: &str| serde_json::Value::String(name.to_string());
            let prepared = prepare_spans(vec![
                with_attribute(
                    span(trace, 1, None, start_ns),
                    MODEL_ATTRIBUTE,
                    model("minilm"),
                ),
                with_attribute(
                    span(trace, 2, Some(1), start_ns + 10),
                    MODEL_ATTRIBUTE,
                    model(&format!("smollm2-{trace}")),
                ),
            ])
            .unwrap();
            let prepared: Vec<_> = prepared.iter().collect();
            write_spans(&store, &prepared).await.unwrap();
        }

        let period_ms = (5 * HOUR_MS / 2) as u64;
        let retention = Retention::new(store.clone(), period_ms, period_ms, 2);
        let report = retention.run_once(NOW_MS).await.unwrap();
        // Record 1 is kept by feedback; 2 (its keep has passed) and 3 go.
        assert_eq!(
            report,
            RetentionReport {
                inferences: 2,
                traces: 1
            }
        );
        let left = log
            .batch_get(&(1..=5).map(id).collect::<Vec<_>>(), None)
            .await
            .unwrap();
        let left: Vec<RequestId> = left.iter().map(|record| record.request_id).collect();
        assert_eq!(left, vec![id(1), id(4), id(5)]);
        let traces = TraceStore::new(store.clone());
        for (trace, spans) in [(1_u128, 0), (2, 2), (3, 2)] {
            let trace_id =
                crate::traces::TraceId::parse("trace_id", &format!("{trace:032x}")).unwrap();
            assert_eq!(
                traces.get(&trace_id).await.map(|s| s.len()).unwrap_or(0),
                spans
            );
        }
        // The expired trace's model rows went with it, by their key.
        let model_rows: Vec<(String, String)> =
            sqlx::query_as("SELECT model, trace_id FROM trace_models ORDER BY trace_id, model")
                .fetch_all(store.pool())
                .await
                .unwrap();
        let trace = |n: u128| format!("{n:032x}");
        assert_eq!(
            model_rows,
            [
                ("minilm".to_string(), trace(2)),
                ("smollm2-2".to_string(), trace(2)),
                ("minilm".to_string(), trace(3)),
                ("smollm2-3".to_string(), trace(3)),
            ]
        );
        // Nothing more to do: a second run deletes nothing.
        assert_eq!(
            retention.run_once(NOW_MS).await.unwrap(),
            RetentionReport::default()
        );
    }

    #[tokio::test]
    async fn sqlite_retention() {
        let dir = tempfile::tempdir().unwrap();
        let url = keel_store::default_sqlite_url(dir.path(), "monitoring");
        let store = Store::open(&url, crate::store::MIGRATIONS).await.unwrap();
        expires_what_is_old_and_unreferenced(store).await;
    }

    #[tokio::test]
    async fn postgres_retention() {
        let url = keel_store::testing::fresh_postgres_database()
            .await
            .expect("postgres must run at postgres://postgres@127.0.0.1:5432/test");
        let store = Store::open(&url, crate::store::MIGRATIONS).await.unwrap();
        expires_what_is_old_and_unreferenced(store).await;
    }
}

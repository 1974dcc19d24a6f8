//! GetMetrics through the real monitoring server, on SQLite and on
//! Postgres: per served version, counted, summed and sorted by the
//! database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use keel_proto::v1 as pb;
use keel_testkit::TestDatabase;
use support::start;

#[tokio::test]
async fn sqlite_metrics_per_version() {
    metrics_per_version(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn postgres_metrics_per_version() {
    metrics_per_version(TestDatabase::postgres().await).await;
}

fn record(n: u128, model: &str, version: u32, latency_ms: f64, error: bool) -> pb::InferenceRecord {
    let status = if error {
        pb::InferenceStatus::Error
    } else {
        pb::InferenceStatus::Ok
    };
    pb::InferenceRecord {
        request_id: uuid::Uuid::from_u128(n).to_string(),
        endpoint: "support".to_string(),
        served_model: model.to_string(),
        served_version: version,
        question: "q".to_string(),
        usage: Some(pb::TokenUsage {
            input_tokens: 10,
            output_tokens: 3,
        }),
        latency_ms,
        status: status as i32,
        started_at_ms: keel_core::time::now_ms() - 1_000,
        ..Default::default()
    }
}

async fn metrics_per_version(database: TestDatabase) {
    let mut running = start(&database).await;
    let mut records = Vec::new();
    // Shuffled latencies: the database sorts them.
    for (n, latency) in [30.0, 10.0, 20.0, 40.0].into_iter().enumerate() {
        records.push(record(n as u128 + 1, "zeta", 1, latency, latency == 40.0));
    }
    records.push(record(10, "alpha", 2, 5.0, false));
    records.push(record(11, "alpha", 10, 6.0, true));
    // Another endpoint, and a record outside the window: neither counts.
    let mut elsewhere = record(12, "zeta", 1, 99.0, false);
    elsewhere.endpoint = "other".to_string();
    let mut old = record(13, "zeta", 1, 99.0, false);
    old.started_at_ms = keel_core::time::now_ms() - 7_200_000;
    records.extend([elsewhere, old]);
    running
        .monitoring
        .record_inferences(pb::RecordInferencesRequest { records })
        .await
        .unwrap();

    let metrics = running
        .monitoring
        .get_metrics(pb::GetMetricsRequest {
            endpoint: "support".to_string(),
            window_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<(&str, u32)> = metrics
        .versions
        .iter()
        .map(|version| (version.served_model.as_str(), version.served_version))
        .collect();
    assert_eq!(keys, [("alpha", 2), ("alpha", 10), ("zeta", 1)]);
    let zeta = &metrics.versions[2];
    assert_eq!(zeta.request_count, 4);
    assert_eq!(zeta.error_count, 1);
    assert_eq!(zeta.error_rate, 0.25);
    // Nearest rank of 4 values: p50 is the 2nd, p95 and p99 the 4th.
    assert_eq!(zeta.latency_p50_ms, 20.0);
    assert_eq!(zeta.latency_p95_ms, 40.0);
    assert_eq!(zeta.latency_p99_ms, 40.0);
    assert_eq!(zeta.input_tokens, 40);
    assert_eq!(zeta.output_tokens, 12);
    assert_eq!(metrics.versions[1].error_rate, 1.0);
    assert_eq!(metrics.versions[1].latency_p50_ms, 6.0);

    let empty = running
        .monitoring
        .get_metrics(pb::GetMetricsRequest {
            endpoint: "nobody".to_string(),
            window_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.versions.is_empty());
    running.stop().await;
}

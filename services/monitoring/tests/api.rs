//! Inference records through the real monitoring server on port 0: round
//! trips, metrics, the admin port, and input validation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use keel_proto::v1 as pb;
use keel_testkit::{assert_status, http_get, TestDatabase};
use tonic::Code;

#[tokio::test]
async fn records_round_trip_and_metrics_over_grpc() {
    let database = TestDatabase::sqlite();
    let mut running = support::start(&database).await;
    let now = keel_core::time::now_ms();
    let mut records = Vec::new();
    for latency in 1..=100u32 {
        records.push(support::wire_record(
            u128::from(latency),
            "support",
            now - 1_000,
            f64::from(latency),
        ));
    }
    let stored = running
        .monitoring
        .record_inferences(pb::RecordInferencesRequest {
            records: records.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stored;
    assert_eq!(stored, 100);
    // Re-sent: nothing new.
    let again = running
        .monitoring
        .record_inferences(pb::RecordInferencesRequest {
            records: records[..3].to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.stored, 0);

    let fetched = running
        .monitoring
        .get_inference(pb::GetInferenceRequest {
            request_id: records[4].request_id.to_uppercase(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, records[4]);

    let unknown = uuid::Uuid::from_u128(999_999).to_string();
    let missing = running
        .monitoring
        .get_inference(pb::GetInferenceRequest {
            request_id: unknown.clone(),
        })
        .await;
    assert_status(
        "an unknown request id",
        missing,
        Code::NotFound,
        &[&unknown],
    );

    let batch = running
        .monitoring
        .batch_get_inferences(pb::BatchGetInferencesRequest {
            request_ids: vec![
                records[9].request_id.clone(),
                unknown,
                records[0].request_id.clone(),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.records, vec![records[9].clone(), records[0].clone()]);

    let page = running
        .monitoring
        .list_inferences(pb::ListInferencesRequest {
            endpoint: "support".to_string(),
            page_size: 60,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.records.len(), 60);
    // Same start time everywhere: ordered by request id, largest first.
    assert_eq!(page.records[0].request_id, records[99].request_id);
    let rest = running
        .monitoring
        .list_inferences(pb::ListInferencesRequest {
            endpoint: "support".to_string(),
            page_size: 60,
            page_token: page.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.records.len(), 40);
    assert_eq!(rest.records[39].request_id, records[0].request_id);
    assert!(rest.next_page_token.is_empty());

    let metrics = running
        .monitoring
        .get_metrics(pb::GetMetricsRequest {
            endpoint: "support".to_string(),
            window_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metrics.window_seconds, 3600);
    assert_eq!(metrics.versions.len(), 1);
    let version = &metrics.versions[0];
    assert_eq!(version.request_count, 100);
    assert_eq!(version.error_count, 0);
    assert_eq!(
        (
            version.latency_p50_ms,
            version.latency_p95_ms,
            version.latency_p99_ms
        ),
        (50.0, 95.0, 99.0)
    );
    assert_eq!(version.input_tokens, 1_200);
    let unknown_endpoint = running
        .monitoring
        .get_metrics(pb::GetMetricsRequest {
            endpoint: "nobody".to_string(),
            window_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(unknown_endpoint.versions.is_empty());

    let health = http_get(running.admin(), "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let exposition = http_get(running.admin(), "/metrics").await;
    assert!(
        exposition.contains("keel_monitoring_records_stored_total{service=\"monitoring\"} 100\n"),
        "{exposition}"
    );

    running.stop().await;
}

#[tokio::test]
async fn bad_input_is_rejected_before_anything_is_stored() {
    let database = TestDatabase::sqlite();
    let mut running = support::start(&database).await;
    let client = &mut running.monitoring;
    let good = support::wire_record(1, "support", 1_000, 5.0);

    let cases: Vec<(pb::InferenceRecord, &str)> = vec![
        (
            pb::InferenceRecord {
                request_id: "not-a-uuid".to_string(),
                ..good.clone()
            },
            "field `records[1].request_id`: must be a UUID",
        ),
        (
            pb::InferenceRecord {
                endpoint: String::new(),
                ..good.clone()
            },
            "field `records[1].endpoint`: must not be empty",
        ),
        (
            pb::InferenceRecord {
                endpoint: "has space".to_string(),
                ..good.clone()
            },
            "field `records[1].endpoint`: must match",
        ),
        (
            pb::InferenceRecord {
                prompt_messages: vec![pb::ChatMessage {
                    role: "robot".to_string(),
                    content: "hi".to_string(),
                }],
                ..good.clone()
            },
            "field `records[1].prompt_messages[0].role`: must be system, user or assistant",
        ),
        (
            pb::InferenceRecord {
                latency_ms: -1.0,
                ..good.clone()
            },
            "field `records[1].latency_ms`: must be finite and >= 0",
        ),
        (
            pb::InferenceRecord {
                latency_ms: f64::NAN,
                ..good.clone()
            },
            "field `records[1].latency_ms`",
        ),
        (
            pb::InferenceRecord {
                status: pb::InferenceStatus::Unspecified as i32,
                ..good.clone()
            },
            "field `records[1].status`",
        ),
        (
            pb::InferenceRecord {
                status: 42,
                ..good.clone()
            },
            "field `records[1].status`",
        ),
        (
            pb::InferenceRecord {
                started_at_ms: -5,
                ..good.clone()
            },
            "field `records[1].started_at_ms`",
        ),
        (
            pb::InferenceRecord {
                finish_reason: 9,
                ..good.clone()
            },
            "field `records[1].finish_reason`",
        ),
    ];
    for (bad, expected) in cases {
        let valid_first = support::wire_record(2, "support", 1_000, 5.0);
        let result = client
            .record_inferences(pb::RecordInferencesRequest {
                records: vec![valid_first, bad],
            })
            .await;
        assert_status(expected, result, Code::InvalidArgument, &[expected]);
    }
    let too_many = vec![good.clone(); 1001];
    assert_status(
        "field `records`: must hold at most 1000 records, got 1001",
        client
            .record_inferences(pb::RecordInferencesRequest { records: too_many })
            .await,
        Code::InvalidArgument,
        &["field `records`: must hold at most 1000 records, got 1001"],
    );
    // Nothing of the rejected batches was stored.
    let listed = client
        .list_inferences(pb::ListInferencesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.records.is_empty());

    assert_status(
        "field `request_id`: must be a UUID, got \"42\"",
        client
            .get_inference(pb::GetInferenceRequest {
                request_id: "42".to_string(),
            })
            .await,
        Code::InvalidArgument,
        &["field `request_id`: must be a UUID, got \"42\""],
    );
    assert_status(
        "field `request_ids`: must hold 1..=1000 ids, got 0",
        client
            .batch_get_inferences(pb::BatchGetInferencesRequest {
                request_ids: vec![],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["field `request_ids`: must hold 1..=1000 ids, got 0"],
    );
    assert_status(
        "field `request_ids[1]`: must be a UUID",
        client
            .batch_get_inferences(pb::BatchGetInferencesRequest {
                request_ids: vec![good.request_id.clone(), "x".to_string()],
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["field `request_ids[1]`: must be a UUID"],
    );
    assert_status(
        "field `keep_until_ms`: must be >= 0",
        client
            .batch_get_inferences(pb::BatchGetInferencesRequest {
                request_ids: vec![good.request_id.clone()],
                keep_until_ms: -1,
            })
            .await,
        Code::InvalidArgument,
        &["field `keep_until_ms`: must be >= 0 (0: not set), got -1"],
    );
    let list_cases: Vec<(pb::ListInferencesRequest, &str)> = vec![
        (
            pb::ListInferencesRequest {
                since_ms: 2_000,
                until_ms: 1_000,
                ..Default::default()
            },
            "field `until_ms`: must be >= since_ms (2000), got 1000",
        ),
        (
            pb::ListInferencesRequest {
                since_ms: -1,
                ..Default::default()
            },
            "field `since_ms`",
        ),
        (
            pb::ListInferencesRequest {
                page_size: 1001,
                ..Default::default()
            },
            "field `page_size`: must be in 1..=1000, got 1001",
        ),
        (
            pb::ListInferencesRequest {
                page_token: "garbage".to_string(),
                ..Default::default()
            },
            "field `page_token`",
        ),
        (
            pb::ListInferencesRequest {
                endpoint: "bad endpoint".to_string(),
                ..Default::default()
            },
            "field `endpoint`",
        ),
    ];
    for (list, expected) in list_cases {
        assert_status(
            expected,
            client.list_inferences(list).await,
            Code::InvalidArgument,
            &[expected],
        );
    }
    assert_status(
        "field `endpoint`: must not be empty",
        client
            .get_metrics(pb::GetMetricsRequest {
                endpoint: String::new(),
                window_seconds: 60,
            })
            .await,
        Code::InvalidArgument,
        &["field `endpoint`: must not be empty"],
    );
    assert_status(
        "field `window_seconds`: must be in 1..=2592000, got 2592001",
        client
            .get_metrics(pb::GetMetricsRequest {
                endpoint: "support".to_string(),
                window_seconds: 2_592_001,
            })
            .await,
        Code::InvalidArgument,
        &["field `window_seconds`: must be in 1..=2592000, got 2592001"],
    );
    running.stop().await;
}

//! The feedback service through its gRPC API and admin HTTP port, on port
//! 0, joined with a real monitoring or with none running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use keel_proto::v1 as pb;
use keel_testkit::{
    assert_status, dead_address, eventually, http_exchange, http_get, http_request,
};
use prost::Message;
use tonic::Code;

use support::*;

#[tokio::test]
async fn feedback_joins_monitoring_and_survives_it_going_down() {
    let mut monitoring = Running::monitoring().await;
    monitoring
        .client
        .record_inferences(pb::RecordInferencesRequest {
            records: vec![
                inference(1, 1_000, "How do I reset?", "Use the link."),
                inference(2, 2_000, "how do i reset", "Call us."),
            ],
        })
        .await
        .unwrap();
    let mut feedback = Running::feedback(monitoring.server.url()).await;
    let client = &mut feedback.client;

    let liked = client
        .submit_feedback(thumbs(1, 1.0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(liked.request_id, request_id(1));
    assert_eq!(liked.kind, pb::FeedbackKind::Thumbs as i32);
    assert_eq!(
        (
            liked.endpoint.as_str(),
            liked.served_model.as_str(),
            liked.served_version
        ),
        ("support", "chain", 4)
    );

    // Feedback on a request whose record has not reached monitoring yet is
    // kept, unjoined, and stays out of the datasets until the record lands.
    let early = client
        .submit_feedback(thumbs(77, 1.0, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(!early.joined);
    assert_eq!((early.endpoint.as_str(), early.served_version), ("", 0));

    // The same key returns the first record unchanged.
    let first = client
        .submit_feedback(thumbs(2, -1.0, "retry-1"))
        .await
        .unwrap()
        .into_inner();
    let retried = client
        .submit_feedback(thumbs(2, 1.0, "retry-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, first);
    assert_eq!(first.value, -1.0);

    // Two racing submissions with one key store one record.
    let mut racer = client.clone();
    let (left, right) = tokio::join!(
        client.submit_feedback(pb::SubmitFeedbackRequest {
            kind: pb::FeedbackKind::Comment as i32,
            comment: "left".to_string(),
            ..thumbs(1, 0.0, "race")
        }),
        racer.submit_feedback(pb::SubmitFeedbackRequest {
            kind: pb::FeedbackKind::Comment as i32,
            comment: "right".to_string(),
            ..thumbs(1, 0.0, "race")
        })
    );
    assert_eq!(left.unwrap().into_inner(), right.unwrap().into_inner());

    let page = client
        .list_feedback(pb::ListFeedbackRequest {
            request_id: request_id(1),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].idempotency_key, "race");
    let rest = client
        .list_feedback(pb::ListFeedbackRequest {
            request_id: request_id(1),
            page_size: 10,
            page_token: page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.records, vec![liked.clone()]);
    assert!(rest.next_page_token.is_empty());

    // Request 2 was disliked; request 1 liked with the same question.
    let preference = export(client, pb::DatasetKind::Preference).await.unwrap();
    assert_eq!(preference.len(), 1);
    assert_eq!(
        preference[0].json,
        format!(
            r#"{{"prompt":[{{"role":"user","content":"how do i reset"}}],"chosen":"Use the link.","rejected":"Call us.","request_id":"{}"}}"#,
            request_id(2)
        )
    );
    let eval = export(client, pb::DatasetKind::Eval).await.unwrap();
    let positions: Vec<(u64, u64)> = eval
        .iter()
        .map(|line| (line.line_number, line.requests_total))
        .collect();
    assert_eq!(positions, vec![(1, 2), (2, 2)]);
    assert!(eval[0].json.contains(&request_id(1)));

    // The HTTP endpoint: same rules, JSON in and out.
    let body = format!(
        r#"{{"request_id":"{}","kind":"rating","value":5}}"#,
        request_id(2)
    );
    let (code, record) = http_post(feedback.server.admin_address(), "/v1/feedback", &body).await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(record["kind"], "rating");
    assert_eq!(record["value"], 5.0);
    assert_eq!(record["served_version"], 4);
    let body = format!(
        r#"{{"request_id":"{}","kind":"stars","value":5}}"#,
        request_id(2)
    );
    let (code, error) = http_post(feedback.server.admin_address(), "/v1/feedback", &body).await;
    assert_eq!(code, 400);
    assert_eq!(
        error["error"],
        "field `kind`: must be one of THUMBS, RATING, CORRECTION, COMMENT, FLAG, RELEVANCE"
    );
    let body = format!(
        r#"{{"request_id":"{}","kind":"thumbs","value":1}}"#,
        request_id(78)
    );
    let (code, never_joined) =
        http_post(feedback.server.admin_address(), "/v1/feedback", &body).await;
    assert_eq!(code, 200, "{never_joined}");
    assert_eq!(never_joined["joined"], false);
    let (code, _) = http_post(feedback.server.admin_address(), "/v1/feedback", "{not json").await;
    assert_eq!(code, 400);
    let exposition = http_get(feedback.server.admin_address(), "/metrics").await;
    assert!(
        exposition.contains("keel_feedback_submitted_total{service=\"feedback\"} 6\n"),
        "{exposition}"
    );
    assert!(
        exposition.contains("keel_feedback_idempotent_replays_total{service=\"feedback\"} 2\n"),
        "{exposition}"
    );
    assert!(
        exposition.contains("keel_feedback_dataset_lines_total{service=\"feedback\"} 3\n"),
        "{exposition}"
    );
    assert!(http_get(monitoring.server.admin_address(), "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));

    // Request 77's record arrives: its feedback is joined and exported.
    monitoring
        .client
        .record_inferences(pb::RecordInferencesRequest {
            records: vec![inference(77, 3_000, "Where is my parcel?", "On its way.")],
        })
        .await
        .unwrap();
    let joined = eventually("feedback on 77 joined", PATIENCE, async || {
        let page = client
            .clone()
            .list_feedback(pb::ListFeedbackRequest {
                request_id: request_id(77),
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        page.records.into_iter().find(|record| record.joined)
    })
    .await;
    assert_eq!(joined.id, early.id);
    assert_eq!(
        (joined.endpoint.as_str(), joined.served_version),
        ("support", 4)
    );
    let eval = export(client, pb::DatasetKind::Eval).await.unwrap();
    assert_eq!(eval.len(), 3);
    // Request 78's never does: past the grace period it is reported.
    let orphans = eventually("feedback on 78 reported", PATIENCE, async || {
        let page = client
            .clone()
            .list_orphaned_feedback(pb::ListOrphanedFeedbackRequest {
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (!page.records.is_empty()).then_some(page.records)
    })
    .await;
    let orphan_requests: Vec<&str> = orphans
        .iter()
        .map(|record| record.request_id.as_str())
        .collect();
    assert_eq!(orphan_requests, vec![request_id(78).as_str()]);

    // Monitoring goes down: a retry still answers, and new feedback is
    // kept, to be joined when monitoring (and the record) is back.
    monitoring.server.stop().await.unwrap();
    let retried = client
        .submit_feedback(thumbs(2, 1.0, "retry-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried, first);
    let during_outage = client
        .submit_feedback(thumbs(1, 1.0, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(!during_outage.joined);
    assert_status(
        "monitoring",
        export(client, pb::DatasetKind::Sft).await,
        Code::Unavailable,
        &["monitoring"],
    );
    let body = format!(
        r#"{{"request_id":"{}","kind":"thumbs","value":1}}"#,
        request_id(1)
    );
    let (code, _) = http_post(feedback.server.admin_address(), "/v1/feedback", &body).await;
    assert_eq!(code, 200);

    feedback.server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_rejected_and_changes_nothing() {
    // Monitoring never runs: the service still starts.
    let mut feedback = Running::feedback(format!("http://{}", dead_address())).await;
    let client = &mut feedback.client;
    let good = thumbs(1, 1.0, "");
    let submit_cases: Vec<(pb::SubmitFeedbackRequest, &str)> = vec![
        (
            pb::SubmitFeedbackRequest {
                request_id: "nope".to_string(),
                ..good.clone()
            },
            "field `request_id`: must be a UUID, got \"nope\"",
        ),
        (
            pb::SubmitFeedbackRequest {
                kind: pb::FeedbackKind::Unspecified as i32,
                ..good.clone()
            },
            "field `kind`",
        ),
        (
            pb::SubmitFeedbackRequest {
                kind: 99,
                ..good.clone()
            },
            "field `kind`",
        ),
        (
            pb::SubmitFeedbackRequest {
                value: 0.0,
                ..good.clone()
            },
            "field `value`: must be 1 or -1 for THUMBS, got 0",
        ),
        (
            pb::SubmitFeedbackRequest {
                kind: pb::FeedbackKind::Rating as i32,
                value: 0.0,
                ..good.clone()
            },
            "field `value`: must be an integer in 1..=5 for RATING, got 0",
        ),
        (
            pb::SubmitFeedbackRequest {
                kind: pb::FeedbackKind::Correction as i32,
                ..good.clone()
            },
            "field `correction`: must not be empty",
        ),
        (
            pb::SubmitFeedbackRequest {
                kind: pb::FeedbackKind::Comment as i32,
                ..good.clone()
            },
            "field `comment`: must not be empty",
        ),
        (
            pb::SubmitFeedbackRequest {
                kind: pb::FeedbackKind::Comment as i32,
                comment: "x".repeat(32 * 1024 + 1),
                ..good.clone()
            },
            "field `comment`: must be at most 32768 bytes",
        ),
        (
            pb::SubmitFeedbackRequest {
                idempotency_key: "k".repeat(129),
                ..good.clone()
            },
            "field `idempotency_key`: must be at most 128 characters, got 129",
        ),
    ];
    for (bad, expected) in submit_cases {
        assert_status(
            expected,
            client.submit_feedback(bad).await,
            Code::InvalidArgument,
            &[expected],
        );
    }
    let list_cases: Vec<(pb::ListFeedbackRequest, &str)> = vec![
        (
            pb::ListFeedbackRequest {
                request_id: "x".to_string(),
                ..Default::default()
            },
            "field `request_id`",
        ),
        (
            pb::ListFeedbackRequest {
                endpoint: "bad endpoint".to_string(),
                ..Default::default()
            },
            "field `endpoint`",
        ),
        (
            pb::ListFeedbackRequest {
                page_size: 1001,
                ..Default::default()
            },
            "field `page_size`: must be in 1..=1000, got 1001",
        ),
        (
            pb::ListFeedbackRequest {
                page_token: "garbage".to_string(),
                ..Default::default()
            },
            "field `page_token`",
        ),
    ];
    for (bad, expected) in list_cases {
        assert_status(
            expected,
            client.list_feedback(bad).await,
            Code::InvalidArgument,
            &[expected],
        );
    }
    let export_cases: Vec<(pb::ExportDatasetRequest, &str)> = vec![
        (pb::ExportDatasetRequest::default(), "field `kind`"),
        (
            pb::ExportDatasetRequest {
                kind: pb::DatasetKind::Sft as i32,
                since_ms: 10,
                until_ms: 5,
                ..Default::default()
            },
            "field `until_ms`: must be >= since_ms (10), got 5",
        ),
        (
            pb::ExportDatasetRequest {
                kind: pb::DatasetKind::Eval as i32,
                served_model: "bad model".to_string(),
                ..Default::default()
            },
            "field `served_model`",
        ),
    ];
    for (bad, expected) in export_cases {
        assert_status(
            expected,
            client.export_dataset(bad).await,
            Code::InvalidArgument,
            &[expected],
        );
    }
    let body = format!(
        r#"{{"request_id":"{}","kind":"thumbs","value":2}}"#,
        request_id(1)
    );
    let (code, error) = http_post(feedback.server.admin_address(), "/v1/feedback", &body).await;
    assert_eq!(code, 400);
    assert_eq!(
        error["error"],
        "field `value`: must be 1 or -1 for THUMBS, got 2"
    );
    // No feedback was stored by any of it.
    let listed = client
        .list_feedback(pb::ListFeedbackRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.records.is_empty());
    feedback.server.stop().await.unwrap();
}

#[tokio::test]
async fn browsers_on_an_allowed_origin_post_feedback_as_json_and_grpc_web() {
    let feedback = Running::feedback(format!("http://{}", dead_address())).await;
    let admin = feedback.server.admin_address();

    // The preflight a browser sends before a cross-origin JSON POST.
    let preflight = |origin: &str| {
        http_request(
            "OPTIONS",
            "/v1/feedback",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        )
    };
    let answer = http_exchange(admin, preflight(CHAT_ORIGIN)).await;
    let head = answer.headers;
    assert_eq!(answer.status, 200, "{head}");
    assert!(
        head.contains(&format!("access-control-allow-origin: {CHAT_ORIGIN}")),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-methods: post"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-headers: content-type"),
        "{head}"
    );
    let refused = http_exchange(admin, preflight("http://evil.example")).await;
    assert!(
        !refused.headers.contains("access-control-allow-origin"),
        "{}",
        refused.headers
    );

    // The POST itself, from the allowed origin: accepted (the record has
    // not arrived, monitoring being down) and readable by the page.
    let body = format!(
        r#"{{"request_id":"{}","kind":"thumbs","value":1}}"#,
        request_id(5)
    );
    let post = http_request(
        "POST",
        "/v1/feedback",
        &[
            ("Origin", CHAT_ORIGIN),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    let answer = http_exchange(admin, post).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        answer
            .headers
            .contains(&format!("access-control-allow-origin: {CHAT_ORIGIN}")),
        "{}",
        answer.headers
    );
    let record: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(record["joined"], false);
    // A malformed one is refused, naming the field.
    let (code, error) = http_post(
        admin,
        "/v1/feedback",
        r#"{"request_id":"x","kind":"thumbs","value":1}"#,
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        error["error"],
        "field `request_id`: must be a UUID, got \"x\""
    );

    // gRPC-Web over HTTP/1.1 on the gRPC port, as a browser sends it.
    let message = pb::ListFeedbackRequest {
        page_size: 10,
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let request = http_request(
        "POST",
        "/keel.v1.FeedbackService/ListFeedback",
        &[
            ("Origin", CHAT_ORIGIN),
            ("Content-Type", "application/grpc-web+proto"),
            ("X-Grpc-Web", "1"),
        ],
        &frame,
    );
    let answer = http_exchange(feedback.server.address(), request).await;
    let (head, body) = (answer.headers, answer.body);
    assert_eq!(answer.status, 200, "{head}");
    assert!(
        head.contains("content-type: application/grpc-web+proto"),
        "{head}"
    );
    assert!(
        head.contains(&format!("access-control-allow-origin: {CHAT_ORIGIN}")),
        "{head}"
    );
    // A data frame with the page (the one record posted above), then the
    // trailers frame with the status.
    assert_eq!(body[0], 0x00);
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let page = pb::ListFeedbackResponse::decode(&body[5..5 + len]).unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].request_id, request_id(5));
    let trailers = &body[5 + len..];
    assert_eq!(trailers[0], 0x80);
    assert!(
        String::from_utf8_lossy(&trailers[5..]).contains("grpc-status:0"),
        "{trailers:?}"
    );
}

//! Feedback on passages, flags, tags and sessions, the datasets streamed
//! from it, and retention: through the gRPC APIs of a real feedback and
//! monitoring service, on SQLite and on Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use keel_core::time::now_ms;
use keel_proto::v1 as pb;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use keel_testkit::{assert_status, eventually, TestDatabase, BACKENDS};
use tonic::transport::Channel;
use tonic::Code;

use support::*;

const HOUR_MS: i64 = 3_600_000;

fn with_passages(mut record: pb::InferenceRecord, ids: &[&str]) -> pb::InferenceRecord {
    record.contexts = ids
        .iter()
        .map(|id| pb::Citation {
            point_id: id.to_string(),
            score: 0.5,
            text: format!("text of {id}"),
        })
        .collect();
    record
}

fn relevance(n: u128, passage_id: &str, value: f64) -> pb::SubmitFeedbackRequest {
    pb::SubmitFeedbackRequest {
        kind: pb::FeedbackKind::Relevance as i32,
        passage_id: passage_id.to_string(),
        ..thumbs(n, value, "")
    }
}

async fn is_stored(client: &MonitoringServiceClient<Channel>, n: u128) -> bool {
    let request = pb::GetInferenceRequest {
        request_id: request_id(n),
    };
    match client.clone().get_inference(request).await {
        Ok(_) => true,
        Err(status) if status.code() == Code::NotFound => false,
        Err(status) => panic!("GetInference failed: {status:?}"),
    }
}

#[tokio::test]
async fn passage_flag_tag_and_session_feedback_make_streamed_datasets() {
    for backend in BACKENDS {
        let (monitoring, mut feedback) = monitoring_and_feedback(backend).await;
        let question = "How long do refunds take? Mail me at ann@example.com";
        monitoring
            .client
            .clone()
            .record_inferences(pb::RecordInferencesRequest {
                records: vec![
                    with_passages(
                        inference(1, 1_000, question, "30 days."),
                        &["p1", "p2", "p3"],
                    ),
                    inference(2, 2_000, "Opening hours?", "9 to 5."),
                    inference(3, 3_000, "Opening hours?", "9 to 5."),
                ],
            })
            .await
            .unwrap();
        let client = &mut feedback.client;
        let submissions = vec![
            relevance(1, "p1", 1.0),
            relevance(1, "p3", -1.0),
            pb::SubmitFeedbackRequest {
                kind: pb::FeedbackKind::Flag as i32,
                reason: "leaks an address".to_string(),
                tags: vec!["privacy".to_string(), "refunds".to_string()],
                ..thumbs(1, 0.0, "")
            },
            thumbs(2, 1.0, ""),
            thumbs(3, 1.0, ""),
        ];
        for submission in submissions {
            let record = client
                .submit_feedback(submission)
                .await
                .unwrap()
                .into_inner();
            assert!(record.joined, "{backend:?}: {record:?}");
        }
        // A passage the request did not retrieve is refused, naming it.
        assert_status(
            "unknown passage",
            client.submit_feedback(relevance(1, "p9", 1.0)).await,
            Code::InvalidArgument,
            &["field `passage_id`", "3 passages", "\"p9\""],
        );
        // Feedback on a whole conversation, listed by its session.
        let on_session = client
            .submit_feedback(pb::SubmitFeedbackRequest {
                request_id: String::new(),
                session_id: "chat-7".to_string(),
                kind: pb::FeedbackKind::Rating as i32,
                value: 2.0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (on_session.request_id.as_str(), on_session.joined),
            ("", true)
        );
        let listed = client
            .list_feedback(pb::ListFeedbackRequest {
                session_id: "chat-7".to_string(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.records, vec![on_session]);

        let export_of = |kind: pb::DatasetKind| pb::ExportDatasetRequest {
            kind: kind as i32,
            ..Default::default()
        };
        let (lines, summary) = export_with(client, export_of(pb::DatasetKind::Retrieval))
            .await
            .unwrap();
        let retrieval: Vec<&str> = lines.iter().map(|line| line.json.as_str()).collect();
        assert_eq!(
            retrieval,
            vec![format!(
                r#"{{"request_id":"{}","query":"{question}","positives":[{{"id":"p1","text":"text of p1"}}],"negatives":[{{"id":"p3","text":"text of p3"}}],"endpoint":"support","served_model":"chain","served_version":4}}"#,
                request_id(1)
            )],
            "{backend:?}"
        );
        assert_eq!(
            summary,
            pb::ExportSummary {
                lines: 1,
                requests: 3,
                skipped_no_signal: 2,
                ..Default::default()
            },
            "{backend:?}"
        );

        // Requests 2 and 3 are the same (prompt, answer): one SFT line.
        // Request 1 is flagged: never a fine-tuning target.
        let (lines, summary) = export_with(client, export_of(pb::DatasetKind::Sft))
            .await
            .unwrap();
        assert_eq!(lines.len(), 1, "{backend:?}");
        assert!(lines[0].json.contains("9 to 5."));
        assert_eq!(
            (
                summary.lines,
                summary.skipped_duplicate,
                summary.skipped_no_signal
            ),
            (1, 1, 1),
            "{backend:?}"
        );
        let keep_all = pb::ExportDatasetRequest {
            keep_duplicates: true,
            ..export_of(pb::DatasetKind::Sft)
        };
        assert_eq!(export_with(client, keep_all).await.unwrap().0.len(), 2);

        // Masked evaluation lines carry flags and tags.
        let masked = pb::ExportDatasetRequest {
            mask_pii: true,
            ..export_of(pb::DatasetKind::Eval)
        };
        let (lines, summary) = export_with(client, masked).await.unwrap();
        assert_eq!((summary.lines, summary.masked_lines), (2, 1), "{backend:?}");
        let first = &lines[0].json;
        assert!(first.contains("Mail me at [EMAIL]"), "{first}");
        assert!(!first.contains("ann@example.com"), "{first}");
        assert!(
            first.contains(r#""flags":["leaks an address"],"tags":["privacy","refunds"]"#),
            "{first}"
        );
        assert_eq!(
            lines
                .iter()
                .map(|line| (line.line_number, line.requests_done, line.requests_total))
                .collect::<Vec<_>>(),
            vec![(1, 1, 3), (2, 2, 3)]
        );
        feedback.server.stop().await.unwrap();
        monitoring.server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn retention_deletes_what_expired_and_keeps_what_feedback_references() {
    /// Feedback lives this long; the records it refers to as long.
    const FEEDBACK_RETENTION_MS: u64 = 4_000;
    for backend in BACKENDS {
        let monitoring = Running::monitoring_on(TestDatabase::fresh(backend).await, |_| {}).await;
        let two_hours_ago = now_ms() - 2 * HOUR_MS;
        monitoring
            .client
            .clone()
            .record_inferences(pb::RecordInferencesRequest {
                records: vec![
                    inference(1, two_hours_ago, "old, with feedback", "a"),
                    inference(2, two_hours_ago, "old, without", "b"),
                    inference(3, now_ms(), "recent", "c"),
                ],
            })
            .await
            .unwrap();
        let mut feedback = Running::feedback_on(
            TestDatabase::fresh(backend).await,
            monitoring.server.url(),
            |config| {
                config.feedback_retention_ms = FEEDBACK_RETENTION_MS;
                config.retention_interval_ms = 50;
            },
        )
        .await;
        feedback
            .client
            .submit_feedback(thumbs(1, 1.0, ""))
            .await
            .unwrap();

        // Monitoring comes back keeping one hour of records.
        let database = {
            let Running {
                server, database, ..
            } = monitoring;
            server.stop().await.unwrap();
            database
        };
        let monitoring = Running::monitoring_on(database, |config| {
            config.inference_retention_ms = HOUR_MS as u64;
            config.retention_interval_ms = 50;
            config.retention_batch = 1;
        })
        .await;
        let client = &monitoring.client;
        eventually("record 2 expired", PATIENCE, async || {
            (!is_stored(client, 2).await).then_some(())
        })
        .await;
        assert!(
            is_stored(client, 1).await,
            "{backend:?}: feedback refers to record 1"
        );
        assert!(
            is_stored(client, 3).await,
            "{backend:?}: record 3 is recent"
        );

        // The feedback expires, and then so does the record it kept.
        eventually("feedback expired", PATIENCE, async || {
            let listed = feedback
                .client
                .clone()
                .list_feedback(pb::ListFeedbackRequest::default())
                .await
                .unwrap()
                .into_inner();
            listed.records.is_empty().then_some(())
        })
        .await;
        eventually("record 1 expired", PATIENCE, async || {
            (!is_stored(client, 1).await).then_some(())
        })
        .await;
        assert!(is_stored(client, 3).await, "{backend:?}");
        feedback.server.stop().await.unwrap();
        monitoring.server.stop().await.unwrap();
    }
}

/// SummarizeFeedback: per served version, each request counted once by its
/// latest thumbs or rating, flags apart; filters refuse bad input.
#[tokio::test]
async fn feedback_is_summarised_per_served_version_by_each_requests_latest_verdict() {
    for backend in BACKENDS {
        let (monitoring, mut feedback) = monitoring_and_feedback(backend).await;
        let mut challenger = inference(5, 5_000, "q5?", "a5");
        challenger.served_version = 5;
        let mut other_endpoint = inference(6, 6_000, "q6?", "a6");
        other_endpoint.endpoint = "billing".to_string();
        monitoring
            .client
            .clone()
            .record_inferences(pb::RecordInferencesRequest {
                records: vec![
                    inference(1, 1_000, "q1?", "a1"),
                    inference(2, 2_000, "q2?", "a2"),
                    inference(3, 3_000, "q3?", "a3"),
                    inference(4, 4_000, "q4?", "a4"),
                    challenger,
                    other_endpoint,
                ],
            })
            .await
            .unwrap();
        let rating = |n: u128, stars: f64| pb::SubmitFeedbackRequest {
            kind: pb::FeedbackKind::Rating as i32,
            ..thumbs(n, stars, "")
        };
        let flag = pb::SubmitFeedbackRequest {
            kind: pb::FeedbackKind::Flag as i32,
            value: 0.0,
            reason: "harmful".to_string(),
            ..thumbs(4, 0.0, "")
        };
        let client = &mut feedback.client;
        // r1: down then up (latest wins: liked); r2: down; r3: 3 stars;
        // r4: 5 stars and flagged; r5 (v5): down; r6: another endpoint.
        for submission in [
            thumbs(1, -1.0, ""),
            thumbs(1, 1.0, ""),
            thumbs(2, -1.0, ""),
            rating(3, 3.0),
            rating(4, 5.0),
            flag,
            thumbs(5, -1.0, ""),
            thumbs(6, 1.0, ""),
        ] {
            client.submit_feedback(submission).await.unwrap();
        }
        let request = pb::SummarizeFeedbackRequest {
            endpoint: "support".to_string(),
            ..Default::default()
        };
        let versions = eventually("every request joined", PATIENCE, async || {
            let versions = client
                .summarize_feedback(request.clone())
                .await
                .unwrap()
                .into_inner()
                .versions;
            let requests: u64 = versions.iter().map(|version| version.requests).sum();
            (requests == 5).then_some(versions)
        })
        .await;
        let counts: Vec<(u32, u64, u64, u64, u64, u64)> = versions
            .iter()
            .map(|v| {
                (
                    v.served_version,
                    v.requests,
                    v.liked,
                    v.disliked,
                    v.neutral,
                    v.flagged,
                )
            })
            .collect();
        assert_eq!(
            counts,
            [(4, 4, 2, 1, 1, 1), (5, 1, 0, 1, 0, 0)],
            "{backend:?}"
        );
        assert!(versions
            .iter()
            .all(|version| version.served_model == "chain"));

        let only_v5 = client
            .summarize_feedback(pb::SummarizeFeedbackRequest {
                served_model: "chain".to_string(),
                served_version: 5,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .versions;
        assert_eq!(only_v5.len(), 1);
        assert_eq!(only_v5[0].disliked, 1);
        assert_status(
            "until before since",
            client
                .summarize_feedback(pb::SummarizeFeedbackRequest {
                    since_ms: 10,
                    until_ms: 5,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            &["until_ms"],
        );
        assert_status(
            "a malformed endpoint",
            client
                .summarize_feedback(pb::SummarizeFeedbackRequest {
                    endpoint: "no spaces".to_string(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            &["endpoint"],
        );
    }
}

//! SubmitFeedbackBatch through a real feedback and monitoring service, on
//! SQLite and on Postgres: a batch is stored whole, answered in order and
//! joined like single submissions; a batch with one bad item, whether the
//! rules or the inference record refuse it, stores nothing and names the
//! item.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use keel_proto::v1 as pb;
use keel_proto::v1::feedback_service_client::FeedbackServiceClient;
use keel_testkit::{assert_status, BACKENDS};
use tonic::transport::Channel;
use tonic::Code;

use support::*;

fn relevance(n: u128, passage_id: &str) -> pb::SubmitFeedbackRequest {
    pb::SubmitFeedbackRequest {
        kind: pb::FeedbackKind::Relevance as i32,
        passage_id: passage_id.to_string(),
        ..thumbs(n, 1.0, "")
    }
}

fn batch(items: Vec<pb::SubmitFeedbackRequest>) -> pb::SubmitFeedbackBatchRequest {
    pb::SubmitFeedbackBatchRequest { items }
}

async fn stored_count(client: &FeedbackServiceClient<Channel>) -> usize {
    client
        .clone()
        .list_feedback(pb::ListFeedbackRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records
        .len()
}

#[tokio::test]
async fn a_batch_is_stored_whole_in_order_or_not_at_all() {
    for backend in BACKENDS {
        let (monitoring, feedback) = monitoring_and_feedback(backend).await;
        monitoring
            .client
            .clone()
            .record_inferences(pb::RecordInferencesRequest {
                records: vec![inference(1, 1_000, "Refunds?", "30 days.")],
            })
            .await
            .unwrap();
        let mut client = feedback.client.clone();

        let session = pb::SubmitFeedbackRequest {
            request_id: String::new(),
            session_id: "chat-1".to_string(),
            kind: pb::FeedbackKind::Rating as i32,
            value: 4.0,
            ..Default::default()
        };
        let records = client
            .submit_feedback_batch(batch(vec![
                thumbs(1, 1.0, "first"),
                relevance(1, "doc-1"),
                // Its record has not arrived: kept, joined later.
                thumbs(9, -1.0, ""),
                session,
                // The same idempotency key again: the first record answers.
                thumbs(1, -1.0, "first"),
            ]))
            .await
            .unwrap()
            .into_inner()
            .records;
        let summary: Vec<(String, i32, f64, bool)> = records
            .iter()
            .map(|record| {
                (
                    record.request_id.clone(),
                    record.kind,
                    record.value,
                    record.joined,
                )
            })
            .collect();
        let thumbs_kind = pb::FeedbackKind::Thumbs as i32;
        assert_eq!(
            summary,
            vec![
                (request_id(1), thumbs_kind, 1.0, true),
                (request_id(1), pb::FeedbackKind::Relevance as i32, 1.0, true),
                (request_id(9), thumbs_kind, -1.0, false),
                (String::new(), pb::FeedbackKind::Rating as i32, 4.0, true),
                (request_id(1), thumbs_kind, 1.0, true),
            ],
            "{backend:?}"
        );
        assert_eq!(records[4].id, records[0].id, "{backend:?}");
        assert_eq!(records[0].endpoint, "support");
        assert_eq!(stored_count(&client).await, 4, "{backend:?}");

        // A rule broken by one item: nothing of the batch is stored.
        let mut broken = thumbs(1, 1.0, "");
        broken.value = 0.0;
        assert_status(
            "a bad item",
            client
                .submit_feedback_batch(batch(vec![thumbs(1, 1.0, ""), thumbs(1, -1.0, ""), broken]))
                .await,
            Code::InvalidArgument,
            &["field `items[2].value`", "must be 1 or -1"],
        );
        // A passage the request did not retrieve, found only once the
        // record is looked up: still nothing stored.
        assert_status(
            "an unretrieved passage",
            client
                .submit_feedback_batch(batch(vec![thumbs(1, 1.0, ""), relevance(1, "doc-7")]))
                .await,
            Code::InvalidArgument,
            &["field `items[1].passage_id`", "\"doc-7\""],
        );
        assert_status(
            "an empty batch",
            client.submit_feedback_batch(batch(Vec::new())).await,
            Code::InvalidArgument,
            &["field `items`: must hold 1..=512 submissions, got 0"],
        );
        assert_status(
            "a batch too large",
            client
                .submit_feedback_batch(batch(vec![thumbs(1, 1.0, ""); 513]))
                .await,
            Code::InvalidArgument,
            &["field `items`: must hold 1..=512 submissions, got 513"],
        );
        assert_eq!(stored_count(&client).await, 4, "{backend:?}");
    }
}

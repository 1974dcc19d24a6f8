//! Inference records published to the NATS JetStream stream (serving's
//! `inference_delivery = "nats"`) reach monitoring's store exactly once:
//! records published while monitoring is down wait in the stream, a
//! redelivered record is stored once, and an invalid one is dropped.
//! Needs the NATS server with JetStream at 127.0.0.1:4222.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use keel_core::jetstream::JetStreamConfig;
use keel_proto::v1 as pb;
use keel_testkit::{eventually, TestDatabase, BACKENDS};
use prost::Message;

const PATIENCE: Duration = Duration::from_secs(20);

/// A stream of its own, so tests and runs sharing the NATS server never
/// read each other's records.
fn fresh_stream() -> JetStreamConfig {
    JetStreamConfig {
        stream: format!("KEEL_TEST_{}", uuid::Uuid::new_v4().simple()),
        ..JetStreamConfig::default()
    }
}

async fn publish(context: &async_nats::jetstream::Context, subject: &str, payload: Vec<u8>) {
    context
        .publish(subject.to_string(), payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn stored_ids(running: &support::Running) -> Vec<String> {
    let page = running
        .monitoring
        .clone()
        .list_inferences(pb::ListInferencesRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = page
        .records
        .into_iter()
        .map(|record| record.request_id)
        .collect();
    ids.sort();
    ids
}

fn id(n: u128) -> String {
    uuid::Uuid::from_u128(n).hyphenated().to_string()
}

#[tokio::test]
async fn records_from_jetstream_are_stored_exactly_once() {
    for backend in BACKENDS {
        let nats = fresh_stream();
        let context = nats.connect().await.unwrap();
        let stream = context
            .get_or_create_stream(nats.stream_config())
            .await
            .unwrap();
        let subject = nats.subject();
        // Published before monitoring runs: they wait in the stream.
        for n in [1, 2, 3, 2] {
            let record = support::wire_record(n, "support", 1_000 * n as i64, 5.0);
            publish(&context, &subject, record.encode_to_vec()).await;
        }
        publish(&context, &subject, b"not a record".to_vec()).await;

        let database = TestDatabase::fresh(backend).await;
        let configure = |config: &mut keel_monitoring::Config| {
            config.nats_intake = true;
            config.nats = nats.clone();
        };
        let running = support::start_with(&database, configure).await;
        eventually("three records stored", PATIENCE, async || {
            (stored_ids(&running).await.len() == 3).then_some(())
        })
        .await;
        assert_eq!(stored_ids(&running).await, vec![id(1), id(2), id(3)]);
        // Acknowledged after the commit, so the work queue empties.
        eventually("the stream drained", PATIENCE, async || {
            let info = context
                .get_stream(&nats.stream)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .clone();
            (info.state.messages == 0).then_some(())
        })
        .await;
        running.stop().await;

        // While monitoring is down, more arrive, one of them again.
        for n in [3, 4] {
            let record = support::wire_record(n, "support", 1_000 * n as i64, 5.0);
            publish(&context, &subject, record.encode_to_vec()).await;
        }
        let running = support::start_with(&database, configure).await;
        eventually("the fourth record stored", PATIENCE, async || {
            (stored_ids(&running).await.len() == 4).then_some(())
        })
        .await;
        assert_eq!(
            stored_ids(&running).await,
            vec![id(1), id(2), id(3), id(4)],
            "{backend:?}"
        );
        running.stop().await;
        drop(stream);
        context.delete_stream(&nats.stream).await.unwrap();
    }
}

//! Inference records published to the NATS JetStream stream (serving's
//! `inference_delivery = "nats"`) reach monitoring's store exactly once:
//! records published while monitoring is down wait in the stream, a
//! redelivered record is stored once, and an invalid one is dropped. Span
//! exports a service published there (monitoring unreachable) land in the
//! trace store the same way.
//! Needs the NATS server with JetStream at 127.0.0.1:4222.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use keel_core::jetstream::JetStreamConfig;
use keel_proto::v1 as pb;
use keel_testkit::{eventually, TestDatabase, BACKENDS};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
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

/// Waits until the work queue is empty: every message acknowledged,
/// which monitoring does only after the commit.
async fn stream_drained(context: &async_nats::jetstream::Context, nats: &JetStreamConfig) {
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
        let subject = nats.records_subject();
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
        stream_drained(&context, &nats).await;
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

/// An OTLP export of a query's two spans, as serving's fallback publishes
/// it; the second span's trace id is invalid.
fn span_export(trace_id: [u8; 16]) -> ExportTraceServiceRequest {
    let span = |id: u8, parent: Vec<u8>, name: &str, trace_id: Vec<u8>| Span {
        trace_id,
        span_id: vec![id; 8],
        parent_span_id: parent,
        name: name.to_string(),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_050_000_000,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".to_string(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("keel-serving".to_string())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(
                        1,
                        Vec::new(),
                        "keel.v1.ServingService/Query",
                        trace_id.to_vec(),
                    ),
                    span(2, vec![1; 8], "chat smollm2", trace_id.to_vec()),
                    span(3, vec![1; 8], "broken", vec![0; 15]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn spans_from_jetstream_are_stored_once() {
    for backend in BACKENDS {
        let nats = fresh_stream();
        let context = nats.connect().await.unwrap();
        nats.ensure_stream(&context).await.unwrap();
        let trace_id = [0x5a; 16];
        let export = span_export(trace_id).encode_to_vec();
        // Published while monitoring is down, once again (a retried
        // publish), and a message that is no OTLP request.
        publish(&context, &nats.spans_subject(), export.clone()).await;
        publish(&context, &nats.spans_subject(), export).await;
        publish(&context, &nats.spans_subject(), b"not a request".to_vec()).await;

        let database = TestDatabase::fresh(backend).await;
        let running = support::start_with(&database, |config| {
            config.nats_intake = true;
            config.nats = nats.clone();
        })
        .await;
        let trace_hex: String = trace_id.iter().map(|byte| format!("{byte:02x}")).collect();
        let trace = eventually("the spans stored", PATIENCE, async || {
            let trace = running
                .monitoring
                .clone()
                .get_trace(pb::GetTraceRequest {
                    trace_id: trace_hex.clone(),
                })
                .await
                .ok()?
                .into_inner();
            (trace.spans.len() == 2).then_some(trace)
        })
        .await;
        let names: Vec<&str> = trace.spans.iter().map(|span| span.name.as_str()).collect();
        assert_eq!(names, ["keel.v1.ServingService/Query", "chat smollm2"]);
        assert!(trace
            .spans
            .iter()
            .all(|span| span.service_name == "keel-serving"));
        stream_drained(&context, &nats).await;
        running.stop().await;
        context.delete_stream(&nats.stream).await.unwrap();
    }
}

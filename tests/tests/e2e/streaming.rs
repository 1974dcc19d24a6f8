//! (g) Streaming over the real cluster: citations first, the answer as
//! deltas, then done; the inference record holds the whole answer; a client
//! that leaves after the first delta stops the generator, and the record
//! holds what was generated.
//!
//! `start_cluster` takes any catalog and `leave_after_first_delta` any
//! endpoint, so the same check runs with a real model by registering it in
//! the catalog and pointing a chain at it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keel_models::ModelCatalog;
use keel_proto::v1::query_stream_event::Event;
use keel_proto::v1::{
    FinishReason as WireFinishReason, GetInferenceRequest, InferenceRecord, InferenceStatus,
    QueryRequest,
};
use keel_testkit::fakes::SlowWords;
use keel_tests::fixtures::{self, CHAIN_MODEL, ENDPOINT, REFUND_QUESTION};
use keel_tests::{eventually, on_both_backends, Backend, Cluster, Storage};

on_both_backends!(streaming);

const SLOW_GENERATOR: &str = "slow-words";
const SLOW_CHAIN: &str = "acme-slow-chain";
const SLOW_ENDPOINT: &str = "acme-slow";
const SLOW_WORDS: usize = 2000;

async fn streaming(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    // A word every 10 ms, 20 s in all: long enough to leave mid-answer.
    let slow = SlowWords::new(SLOW_GENERATOR, SLOW_WORDS, Duration::from_millis(10));
    let produced = slow.produced();
    let mut catalog = ModelCatalog::builtin();
    catalog.add_generator(SLOW_GENERATOR, Arc::new(slow));
    let cluster = start_cluster(&storage, catalog).await;
    fixtures::setup_application(&cluster).await;

    // A whole answer, streamed by the extractive generator.
    let request = fixtures::query_request(ENDPOINT, REFUND_QUESTION.text, "streamer");
    let (events, ending) = stream_all(&cluster, request).await;
    assert!(ending.is_none(), "the stream ended with {ending:?}");
    let Some(Event::Citations(citations)) = events.first() else {
        panic!("the first event is not the citations: {events:?}");
    };
    assert_eq!(citations.citations[0].point_id, REFUND_QUESTION.passage_id);
    let Some(Event::Done(done)) = events.last() else {
        panic!("the last event is not done: {events:?}");
    };
    let mut answer = String::new();
    for event in &events[1..events.len() - 1] {
        let Event::Delta(delta) = event else {
            panic!("between citations and done only deltas, got {event:?}");
        };
        answer.push_str(&delta.text);
    }
    assert!(events.len() > 4, "a few deltas expected: {events:?}");
    assert!(answer.contains(REFUND_QUESTION.fact), "{answer}");
    assert_eq!(done.request_id, citations.request_id);
    assert_eq!(done.trace_id, citations.trace_id);
    assert_eq!(done.served_model, CHAIN_MODEL);
    assert_eq!(done.served_version, 1);
    assert_eq!(done.finish_reason, WireFinishReason::Stop as i32);
    assert_eq!(done.generator, "extractive");
    let unary = fixtures::query(&cluster, ENDPOINT, REFUND_QUESTION.text, "streamer").await;
    assert_eq!(answer, unary.answer);

    let record = inference_record(&cluster, &done.request_id).await;
    assert_eq!(record.answer, answer);
    assert_eq!(record.status, InferenceStatus::Ok as i32);
    assert_eq!(record.generator, "extractive");
    assert_eq!(record.finish_reason, WireFinishReason::Stop as i32);
    assert_eq!(record.trace_id, done.trace_id);

    // A client that leaves after the first delta.
    register_slow_chain(&cluster).await;
    let request = fixtures::query_request(SLOW_ENDPOINT, REFUND_QUESTION.text, "leaver");
    let (request_id, first_delta) = leave_after_first_delta(&cluster, request).await;
    assert_eq!(first_delta, "w0 ");
    let produced_at_drop = produced.load(Ordering::SeqCst);
    // Serving records the query once the generator has returned.
    let record = inference_record(&cluster, &request_id).await;
    let produced_in_all = produced.load(Ordering::SeqCst);
    assert!(
        produced_in_all - produced_at_drop <= 20,
        "the generator went on for {} words after the client left",
        produced_in_all - produced_at_drop
    );
    let recorded_words = record.answer.split_whitespace().count();
    assert_eq!(recorded_words, produced_in_all, "{}", record.answer);
    assert!(
        recorded_words < SLOW_WORDS,
        "{recorded_words} words: not cut short"
    );
    assert!(record.answer.starts_with("w0 w1 "), "{}", record.answer);
    assert_eq!(record.generator, SLOW_GENERATOR);
    assert_eq!(record.finish_reason, WireFinishReason::Cancelled as i32);

    cluster.shutdown().await;
}

/// A chain whose generator is the slow one, and an endpoint routing to it.
async fn register_slow_chain(cluster: &Cluster) {
    let mut spec = fixtures::chain_spec(fixtures::V1_TOP_K);
    if let Some(generator) = spec.generator.as_mut() {
        generator.name = SLOW_GENERATOR.to_string();
    }
    fixtures::register_chain_endpoint(cluster, SLOW_CHAIN, spec, SLOW_ENDPOINT).await;
}

/// Every event of a streamed query, and the status that ended it, if any.
async fn stream_all(
    cluster: &Cluster,
    request: QueryRequest,
) -> (Vec<Event>, Option<tonic::Status>) {
    let mut stream = cluster
        .serving
        .clone()
        .query_stream(request)
        .await
        .unwrap_or_else(|status| panic!("query stream refused: {status}"))
        .into_inner();
    let mut events = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(event)) => events.push(event.event.expect("an event with no content")),
            Ok(None) => return (events, None),
            Err(status) => return (events, Some(status)),
        }
    }
}

/// Reads the citations and the first delta, then drops the stream: the
/// request id and the first delta's text.
pub(crate) async fn leave_after_first_delta(
    cluster: &Cluster,
    request: QueryRequest,
) -> (String, String) {
    let mut stream = cluster
        .serving
        .clone()
        .query_stream(request)
        .await
        .unwrap_or_else(|status| panic!("query stream refused: {status}"))
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("first event")
        .expect("a first event");
    let Some(Event::Citations(citations)) = first.event else {
        panic!("the first event is not the citations: {first:?}");
    };
    let second = stream
        .message()
        .await
        .expect("second event")
        .expect("a second event");
    let Some(Event::Delta(delta)) = second.event else {
        panic!("the second event is not a delta: {second:?}");
    };
    drop(stream);
    (citations.request_id, delta.text)
}

pub(crate) async fn inference_record(cluster: &Cluster, request_id: &str) -> InferenceRecord {
    eventually(
        &format!("the inference record of {request_id}"),
        Duration::from_secs(15),
        || {
            let mut monitoring = cluster.monitoring.clone();
            let request = GetInferenceRequest {
                request_id: request_id.to_string(),
            };
            async move { Some(monitoring.get_inference(request).await.ok()?.into_inner()) }
        },
    )
    .await
}

/// A whole Keel with `catalog`'s models, ready to answer.
async fn start_cluster(storage: &Storage, catalog: ModelCatalog) -> Cluster {
    Cluster::start_with_catalog(storage.config(), catalog).await
}

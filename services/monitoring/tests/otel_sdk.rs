//! The OpenTelemetry SDK's own OTLP gRPC exporter against the monitoring
//! port: what a service instrumented with OpenTelemetry sends is stored
//! and read back whole.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_core::payload::struct_to_json;
use keel_proto::v1 as pb;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use keel_testkit::server::Ports;
use keel_testkit::{TestDatabase, TestServer};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue, StringValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_exported_by_the_sdk_read_back_whole() {
    let database = TestDatabase::sqlite();
    let config = keel_monitoring::Config {
        port: 0,
        database_url: database.url.clone(),
        ..keel_monitoring::Config::default()
    };
    let server = TestServer::start(Ports::GrpcOnly, |listeners, shutdown| {
        keel_monitoring::serve(config, listeners, shutdown)
    })
    .await;

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(server.url())
        .build()
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name("serving").build())
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("keel-serving");
    let root = tracer
        .span_builder("keel.v1.ServingService/Query")
        .with_kind(SpanKind::Server)
        .with_attributes(vec![KeyValue::new("keel.endpoint", "support")])
        .start(&tracer);
    let context = Context::current_with_span(root);
    let mut generate = tracer
        .span_builder("chat smollm2")
        .with_kind(SpanKind::Client)
        .start_with_context(&tracer, &context);
    generate.set_attribute(KeyValue::new("gen_ai.request.model", "smollm2"));
    generate.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", 12_i64));
    generate.set_attribute(KeyValue::new("gen_ai.request.temperature", 0.5));
    generate.set_attribute(KeyValue::new("gen_ai.request.stream", true));
    generate.set_attribute(KeyValue::new(
        "gen_ai.request.stop_sequences",
        Value::Array(vec![StringValue::from("END")].into()),
    ));
    generate.add_event("gen_ai.choice", vec![KeyValue::new("index", 0_i64)]);
    generate.set_status(Status::error("model overloaded"));
    let generate_id = generate.span_context().span_id().to_string();
    generate.end();
    let root_context = context.span().span_context().clone();
    context.span().end();
    let trace_id = root_context.trace_id().to_string();
    let root_id = root_context.span_id().to_string();

    // The batch processor exports on its own thread; flushing blocks.
    let flushed = tokio::task::spawn_blocking(move || {
        let flushed = provider.force_flush();
        (flushed, provider)
    })
    .await
    .unwrap();
    flushed.0.unwrap();

    let mut client = MonitoringServiceClient::connect(server.url())
        .await
        .unwrap();
    let trace = client
        .get_trace(pb::GetTraceRequest {
            trace_id: trace_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trace.spans.len(), 2);
    let (root, generate) = (&trace.spans[0], &trace.spans[1]);
    assert_eq!(root.span_id, root_id);
    assert_eq!(root.parent_span_id, "");
    assert_eq!(root.kind, pb::SpanKind::Server as i32);
    assert_eq!(root.service_name, "serving");
    assert_eq!(root.scope_name, "keel-serving");
    assert_eq!(generate.span_id, generate_id);
    assert_eq!(generate.parent_span_id, root_id);
    assert_eq!(generate.kind, pb::SpanKind::Client as i32);
    assert_eq!(generate.status, pb::SpanStatus::Error as i32);
    assert_eq!(generate.status_message, "model overloaded");
    assert_eq!(
        serde_json::Value::Object(
            struct_to_json("attributes", generate.attributes.as_ref().unwrap()).unwrap()
        ),
        json!({
            "gen_ai.request.model": "smollm2",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.request.temperature": 0.5,
            "gen_ai.request.stream": true,
            "gen_ai.request.stop_sequences": ["END"],
        })
    );
    assert_eq!(generate.events[0].name, "gen_ai.choice");
    let found = client
        .search_traces(pb::SearchTracesRequest {
            model: "smollm2".to_string(),
            endpoint: "support".to_string(),
            status: pb::TraceStatusFilter::Error as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.traces.len(), 1);
    assert_eq!(found.traces[0].trace_id, trace_id);
    assert_eq!(
        found.traces[0].root_span_name,
        "keel.v1.ServingService/Query"
    );

    let provider = flushed.1;
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
    server.stop().await.unwrap();
}

//! The trace store through the real monitoring server, on SQLite and on
//! Postgres: spans exported over OTLP gRPC and OTLP/HTTP (protobuf and
//! JSON), read back with GetTrace and SearchTraces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::net::SocketAddr;

use keel_core::payload::struct_to_json;
use keel_proto::v1 as pb;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::json;
use tonic::codec::CompressionEncoding;
use tonic::Code;

use keel_testkit::{
    assert_status, http_exchange, http_get, http_request, HttpResponse, TestDatabase,
};
use support::{start, Running};

// ---------------------------------------------------------------------------
// The server's trace calls.

impl Running {
    async fn export(&mut self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse {
        self.otlp.export(request).await.unwrap().into_inner()
    }

    async fn trace(&mut self, trace_id: &str) -> pb::Trace {
        self.monitoring
            .get_trace(pb::GetTraceRequest {
                trace_id: trace_id.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn search(&mut self, request: pb::SearchTracesRequest) -> pb::SearchTracesResponse {
        self.monitoring
            .search_traces(request)
            .await
            .unwrap()
            .into_inner()
    }

    /// The trace ids of every page of a search, in order, page by page.
    async fn search_pages(&mut self, request: pb::SearchTracesRequest) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .search(pb::SearchTracesRequest {
                    page_token: page_token.clone(),
                    ..request.clone()
                })
                .await;
            pages.push(page.traces.iter().map(|t| t.trace_id.clone()).collect());
            if page.next_page_token.is_empty() {
                return pages;
            }
            assert!(pages.len() < 100, "paging does not end");
            page_token = page.next_page_token;
        }
    }

    /// Every matching trace id, newest first, in one page.
    async fn search_ids(&mut self, request: pb::SearchTracesRequest) -> Vec<String> {
        let page = self.search(request).await;
        assert!(page.next_page_token.is_empty());
        page.traces.into_iter().map(|t| t.trace_id).collect()
    }
}

/// A plain HTTP/1.1 POST, on a blocking thread (tests only).
async fn http_post(
    address: SocketAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> HttpResponse {
    http_post_with(address, path, &[("Content-Type", content_type)], body).await
}

/// A POST with these headers besides `Content-Length`.
async fn http_post_with(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> HttpResponse {
    http_exchange(address, http_request("POST", path, headers, &body)).await
}

/// A POST whose `Content-Length` is `content_length`, whatever `body` holds.
async fn http_post_declaring(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    content_length: usize,
    body: Vec<u8>,
) -> HttpResponse {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    ));
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    http_exchange(address, request).await
}

// ---------------------------------------------------------------------------
// OTLP data.

fn trace_hex(trace: u128) -> String {
    format!("{trace:032x}")
}

fn span_hex(span: u64) -> String {
    format!("{span:016x}")
}

fn value(value: OtlpValue) -> AnyValue {
    AnyValue { value: Some(value) }
}

fn text(text: &str) -> AnyValue {
    value(OtlpValue::StringValue(text.to_string()))
}

fn attribute(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(value),
        ..Default::default()
    }
}

/// Unix ns of `ms` milliseconds after a fixed instant.
fn at_ms(ms: u64) -> u64 {
    1_700_000_000_000_000_000 + ms * 1_000_000
}

fn span(
    trace: u128,
    span: u64,
    parent: Option<u64>,
    name: &str,
    start_ms: u64,
    end_ms: u64,
) -> Span {
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: span.to_be_bytes().to_vec(),
        parent_span_id: parent
            .map(|id| id.to_be_bytes().to_vec())
            .unwrap_or_default(),
        name: name.to_string(),
        kind: 1,
        start_time_unix_nano: at_ms(start_ms),
        end_time_unix_nano: at_ms(end_ms),
        ..Default::default()
    }
}

fn with(mut span: Span, attributes: Vec<KeyValue>) -> Span {
    span.attributes.extend(attributes);
    span
}

fn with_status(mut span: Span, code: status::StatusCode, message: &str) -> Span {
    span.status = Some(Status {
        message: message.to_string(),
        code: code as i32,
    });
    span
}

fn resource_spans(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![attribute("service.name", text(service))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: format!("keel-{service}"),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn export_request(resources: Vec<ResourceSpans>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: resources,
    }
}

const QUERY_TRACE: u128 = 0x5b8e_fff7_9803_8103_d269_b633_813f_c60c;
const ROOT: u64 = 0x10;
const TIED: u64 = 0x20;
const RETRIEVE: u64 = 0x30;
const RERANK: u64 = 0x40;
const SEARCH: u64 = 0x50;
const GENERATE: u64 = 0x60;

/// One served query across two services, plus one span with a broken
/// trace id. Sent out of order: the store orders them.
fn query_trace() -> ExportTraceServiceRequest {
    let generate = {
        let mut generate = with(
            span(QUERY_TRACE, GENERATE, Some(ROOT), "chat smollm2", 30, 115),
            vec![
                attribute("gen_ai.request.model", text("smollm2")),
                attribute("gen_ai.usage.input_tokens", value(OtlpValue::IntValue(12))),
                attribute(
                    "gen_ai.request.temperature",
                    value(OtlpValue::DoubleValue(0.5)),
                ),
                attribute("gen_ai.request.stream", value(OtlpValue::BoolValue(true))),
                attribute(
                    "gen_ai.request.stop_sequences",
                    value(OtlpValue::ArrayValue(ArrayValue {
                        values: vec![text("\n\n"), text("END")],
                    })),
                ),
                attribute(
                    "gen_ai.request.extra",
                    value(OtlpValue::KvlistValue(KeyValueList {
                        values: vec![attribute("top_k", value(OtlpValue::IntValue(40)))],
                    })),
                ),
                attribute(
                    "gen_ai.prompt.hash",
                    value(OtlpValue::BytesValue(vec![1, 2, 3])),
                ),
            ],
        );
        generate.kind = 3;
        generate.events.push(Event {
            time_unix_nano: at_ms(110),
            name: "gen_ai.choice".to_string(),
            attributes: vec![attribute("finish_reason", text("stop"))],
            ..Default::default()
        });
        generate
    };
    let mut root = with_status(
        with(
            span(
                QUERY_TRACE,
                ROOT,
                None,
                "keel.v1.ServingService/Query",
                0,
                120,
            ),
            vec![
                attribute("keel.endpoint", text("support")),
                attribute("rpc.method", text("Query")),
            ],
        ),
        status::StatusCode::Ok,
        "",
    );
    root.kind = 2;
    let mut broken = span(QUERY_TRACE, 0x99, Some(ROOT), "broken", 1, 2);
    broken.trace_id.pop();
    export_request(vec![
        resource_spans(
            "serving",
            vec![
                generate,
                span(QUERY_TRACE, RETRIEVE, Some(ROOT), "retrieve", 5, 25),
                root,
                broken,
                with_status(
                    span(QUERY_TRACE, RERANK, Some(ROOT), "rerank", 26, 29),
                    status::StatusCode::Error,
                    "reranker timed out",
                ),
                // Starts with `retrieve`: the smaller span id comes first.
                span(QUERY_TRACE, TIED, Some(ROOT), "check cache", 5, 6),
            ],
        ),
        resource_spans(
            "vector-index",
            vec![with(
                span(QUERY_TRACE, SEARCH, Some(RETRIEVE), "hnsw search", 6, 24),
                vec![attribute("keel.collection", text("docs"))],
            )],
        ),
    ])
}

fn attributes(span: &pb::Span) -> serde_json::Value {
    serde_json::Value::Object(
        struct_to_json("attributes", span.attributes.as_ref().unwrap()).unwrap(),
    )
}

// ---------------------------------------------------------------------------
// The scenarios, each run on both backends.

async fn export_then_get_trace(database: TestDatabase) {
    let mut running = start(&database).await;
    let response = running.export(query_trace()).await;
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains(
            "resource_spans[0].scope_spans[0].spans[3]: trace_id must be 16 bytes, not all zero, got 15 bytes"
        ),
        "{}",
        partial.error_message
    );

    // Upper case is accepted and answered lowered.
    let trace = running.trace(&trace_hex(QUERY_TRACE).to_uppercase()).await;
    assert_eq!(trace.trace_id, trace_hex(QUERY_TRACE));
    let order: Vec<String> = trace.spans.iter().map(|s| s.span_id.clone()).collect();
    assert_eq!(
        order,
        [ROOT, TIED, RETRIEVE, SEARCH, RERANK, GENERATE].map(span_hex)
    );
    let parents: Vec<&str> = trace
        .spans
        .iter()
        .map(|s| s.parent_span_id.as_str())
        .collect();
    let root_hex = span_hex(ROOT);
    let retrieve_hex = span_hex(RETRIEVE);
    assert_eq!(
        parents,
        vec![
            "",
            root_hex.as_str(),
            root_hex.as_str(),
            retrieve_hex.as_str(),
            root_hex.as_str(),
            root_hex.as_str()
        ]
    );

    let root = &trace.spans[0];
    assert_eq!(root.trace_id, trace_hex(QUERY_TRACE));
    assert_eq!(root.name, "keel.v1.ServingService/Query");
    assert_eq!(root.kind, pb::SpanKind::Server as i32);
    assert_eq!(root.service_name, "serving");
    assert_eq!(root.scope_name, "keel-serving");
    assert_eq!(root.start_time_unix_nano, at_ms(0) as i64);
    assert_eq!(root.end_time_unix_nano, at_ms(120) as i64);
    assert_eq!(root.duration_ms, 120.0);
    assert_eq!(root.status, pb::SpanStatus::Ok as i32);
    assert_eq!(
        attributes(root),
        json!({"keel.endpoint": "support", "rpc.method": "Query"})
    );

    let search = &trace.spans[3];
    assert_eq!(search.service_name, "vector-index");
    assert_eq!(search.scope_name, "keel-vector-index");
    assert_eq!(search.duration_ms, 18.0);

    let rerank = &trace.spans[4];
    assert_eq!(rerank.status, pb::SpanStatus::Error as i32);
    assert_eq!(rerank.status_message, "reranker timed out");
    assert_eq!(rerank.kind, pb::SpanKind::Internal as i32);

    let generate = &trace.spans[5];
    assert_eq!(generate.kind, pb::SpanKind::Client as i32);
    assert_eq!(generate.status, pb::SpanStatus::Unset as i32);
    assert_eq!(
        attributes(generate),
        json!({
            "gen_ai.request.model": "smollm2",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.request.temperature": 0.5,
            "gen_ai.request.stream": true,
            "gen_ai.request.stop_sequences": ["\n\n", "END"],
            "gen_ai.request.extra": {"top_k": 40},
            "gen_ai.prompt.hash": "AQID",
        })
    );
    assert_eq!(generate.events.len(), 1);
    let event = &generate.events[0];
    assert_eq!(event.name, "gen_ai.choice");
    assert_eq!(event.time_unix_nano, at_ms(110) as i64);
    assert_eq!(
        serde_json::Value::Object(
            struct_to_json("attributes", event.attributes.as_ref().unwrap()).unwrap()
        ),
        json!({"finish_reason": "stop"})
    );

    // The summary SearchTraces answers.
    let found = running.search(pb::SearchTracesRequest::default()).await;
    assert_eq!(found.traces.len(), 1);
    let summary = &found.traces[0];
    assert_eq!(summary.trace_id, trace_hex(QUERY_TRACE));
    assert_eq!(summary.root_span_name, "keel.v1.ServingService/Query");
    assert_eq!(summary.service_name, "serving");
    assert_eq!(summary.start_time_unix_nano, at_ms(0) as i64);
    assert_eq!(summary.duration_ms, 120.0);
    assert_eq!(summary.span_count, 6);
    assert_eq!(summary.status, pb::SpanStatus::Error as i32);
    assert_eq!(summary.endpoint, "support");
    assert_eq!(summary.models, vec!["smollm2".to_string()]);

    // Re-sent (an exporter retrying after a lost answer), gzip-compressed
    // as the OpenTelemetry Collector sends by default: nothing twice.
    let resent = running
        .otlp
        .clone()
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip)
        .export(query_trace())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resent.partial_success.unwrap().rejected_spans, 1);
    assert_eq!(running.trace(&trace_hex(QUERY_TRACE)).await, trace);
    let again = running.search(pb::SearchTracesRequest::default()).await;
    assert_eq!(again.traces, found.traces);

    let exposition = http_get(running.admin(), "/metrics").await;
    assert!(
        exposition.contains("keel_monitoring_spans_stored_total{service=\"monitoring\"} 6\n")
            && exposition
                .contains("keel_monitoring_spans_rejected_total{service=\"monitoring\"} 2\n"),
        "{exposition}"
    );

    // A span of the same trace arriving later joins it.
    running
        .export(export_request(vec![resource_spans(
            "serving",
            vec![with(
                span(QUERY_TRACE, 0x70, Some(ROOT), "late", 118, 130),
                vec![attribute("gen_ai.request.model", text("minilm"))],
            )],
        )]))
        .await;
    assert_eq!(running.trace(&trace_hex(QUERY_TRACE)).await.spans.len(), 7);
    let grown = &running
        .search(pb::SearchTracesRequest::default())
        .await
        .traces[0];
    assert_eq!(grown.span_count, 7);
    assert_eq!(grown.duration_ms, 130.0);
    assert_eq!(
        grown.models,
        vec!["minilm".to_string(), "smollm2".to_string()]
    );
    assert_eq!(grown.root_span_name, "keel.v1.ServingService/Query");

    running.stop().await;
}

/// The OTLP/JSON example of the OpenTelemetry specification
/// (opentelemetry-proto `examples/trace.json`), as written there: upper
/// case hex ids and times as strings; plus an int64 attribute as a string.
const SPEC_JSON: &str = r#"{
  "resourceSpans": [
    {
      "resource": {
        "attributes": [
          {
            "key": "service.name",
            "value": {
              "stringValue": "my.service"
            }
          }
        ]
      },
      "scopeSpans": [
        {
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [
              {
                "key": "my.scope.attribute",
                "value": {
                  "stringValue": "some scope attribute"
                }
              }
            ]
          },
          "spans": [
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "parentSpanId": "EEE19B7EC3C1B173",
              "name": "I'm a server span",
              "startTimeUnixNano": "1544712660000000000",
              "endTimeUnixNano": "1544712661000000000",
              "kind": 2,
              "attributes": [
                {
                  "key": "my.span.attr",
                  "value": {
                    "stringValue": "some value"
                  }
                },
                {
                  "key": "my.count",
                  "value": {
                    "intValue": "42"
                  }
                }
              ],
              "status": {
                "code": 2,
                "message": "it failed"
              }
            }
          ]
        }
      ]
    }
  ]
}"#;

async fn otlp_http_protobuf_and_json(database: TestDatabase) {
    let mut running = start(&database).await;

    // Protobuf: the same messages as gRPC, answered in protobuf.
    let body = export_request(vec![resource_spans(
        "serving",
        vec![
            span(7, 1, None, "root", 0, 10),
            span(7, 2, Some(1), "child", 1, 9),
            span(0, 3, None, "zero trace id", 0, 1),
        ],
    )])
    .encode_to_vec();
    let response = http_post(
        running.admin(),
        "/v1/traces",
        "application/x-protobuf",
        body,
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(response
        .headers
        .contains("content-type: application/x-protobuf"));
    let answer = ExportTraceServiceResponse::decode(response.body.as_slice()).unwrap();
    assert_eq!(answer.partial_success.unwrap().rejected_spans, 1);
    let trace = running.trace(&trace_hex(7)).await;
    assert_eq!(
        trace
            .spans
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        vec!["root", "child"]
    );
    assert_eq!(trace.spans[1].parent_span_id, span_hex(1));

    // JSON, exactly as the specification writes it.
    let response = http_post(
        running.admin(),
        "/v1/traces",
        "application/json",
        SPEC_JSON.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(response.headers.contains("content-type: application/json"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&response.body).unwrap(),
        json!({})
    );
    let trace = running.trace("5b8efff798038103d269b633813fc60c").await;
    assert_eq!(trace.spans.len(), 1);
    let spec_span = &trace.spans[0];
    assert_eq!(spec_span.span_id, "eee19b7ec3c1b174");
    assert_eq!(spec_span.parent_span_id, "eee19b7ec3c1b173");
    assert_eq!(spec_span.name, "I'm a server span");
    assert_eq!(spec_span.kind, pb::SpanKind::Server as i32);
    assert_eq!(spec_span.service_name, "my.service");
    assert_eq!(spec_span.scope_name, "my.library");
    assert_eq!(spec_span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(spec_span.end_time_unix_nano, 1_544_712_661_000_000_000);
    assert_eq!(spec_span.duration_ms, 1000.0);
    assert_eq!(spec_span.status, pb::SpanStatus::Error as i32);
    assert_eq!(spec_span.status_message, "it failed");
    assert_eq!(
        attributes(spec_span),
        json!({"my.span.attr": "some value", "my.count": 42})
    );

    // gzip-compressed, as the OpenTelemetry Collector sends by default.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(
            &export_request(vec![resource_spans(
                "serving",
                vec![span(8, 1, None, "gzipped", 0, 10)],
            )])
            .encode_to_vec(),
        )
        .unwrap();
    let response = http_post_with(
        running.admin(),
        "/v1/traces",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        encoder.finish().unwrap(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(running.trace(&trace_hex(8)).await.spans[0].name, "gzipped");
    let response = http_post_with(
        running.admin(),
        "/v1/traces",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        b"not gzip".to_vec(),
    )
    .await;
    assert_eq!(response.status, 400);
    let response = http_post_with(
        running.admin(),
        "/v1/traces",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "br"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(response.status, 415);
    assert!(
        String::from_utf8_lossy(&response.body).contains("content-encoding must be gzip or none")
    );

    // JSON partial success: int64 as a string, as proto3 JSON has it.
    let rejected = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "", "spanId": "eee19b7ec3c1b175", "name": "no trace id"}
    ]}]}]});
    let response = http_post(
        running.admin(),
        "/v1/traces",
        "application/json; charset=utf-8",
        rejected.to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1");
    assert!(answer["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("trace_id must be 16 bytes"));

    // Bad bodies: 400 with a google.rpc.Status saying why.
    let response = http_post(
        running.admin(),
        "/v1/traces",
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(response.status, 400);
    let error: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(error["code"], Code::InvalidArgument as i32);
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("request body is not an OTLP/JSON ExportTraceServiceRequest"));
    let response = http_post(
        running.admin(),
        "/v1/traces",
        "application/x-protobuf",
        vec![0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(response.status, 400);
    assert!(response
        .headers
        .contains("content-type: application/x-protobuf"));
    let error = keel_monitoring::rpc_status::RpcStatus::decode(response.body.as_slice()).unwrap();
    assert_eq!(error.code, Code::InvalidArgument as i32);
    assert!(error
        .message
        .starts_with("request body is not a protobuf ExportTraceServiceRequest"));

    // Another encoding: 415.
    let response = http_post(
        running.admin(),
        "/v1/traces",
        "text/plain",
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(response.status, 415);
    assert!(String::from_utf8_lossy(&response.body).contains("content-type must be"));

    // Declared larger than the limit: refused before a byte of it is read.
    let response = http_post_declaring(
        running.admin(),
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        keel_monitoring::http::MAX_BODY_BYTES + 1,
        Vec::new(),
    )
    .await;
    assert_eq!(response.status, 413);
    let error = keel_monitoring::rpc_status::RpcStatus::decode(response.body.as_slice()).unwrap();
    assert_eq!(
        error.message,
        "request body must be at most 16777216 bytes: send smaller batches"
    );
    // Exactly at the limit is read (and refused as protobuf only for what
    // it holds).
    let response = http_post(
        running.admin(),
        "/v1/traces",
        "application/x-protobuf",
        vec![0xff; keel_monitoring::http::MAX_BODY_BYTES],
    )
    .await;
    assert_eq!(response.status, 400);

    // Nothing of the refused requests was stored.
    let all = running.search_ids(pb::SearchTracesRequest::default()).await;
    assert_eq!(
        all,
        vec![
            trace_hex(8),
            trace_hex(7),
            "5b8efff798038103d269b633813fc60c".to_string()
        ]
    );
    running.stop().await;
}

/// A trace of `spans` spans: a root with the endpoint, children with the
/// models, one child with `error` status; starting `start_ms` after the
/// fixed instant and lasting `duration_ms`.
#[allow(clippy::too_many_arguments)]
fn summary_trace(
    trace: u128,
    service: &str,
    endpoint: Option<&str>,
    models: &[&str],
    start_ms: u64,
    duration_ms: u64,
    error: bool,
    with_root: bool,
) -> ExportTraceServiceRequest {
    let mut spans = Vec::new();
    if with_root {
        let mut root = span(
            trace,
            1,
            None,
            &format!("query {trace}"),
            start_ms,
            start_ms + duration_ms,
        );
        if let Some(endpoint) = endpoint {
            root.attributes
                .push(attribute("keel.endpoint", text(endpoint)));
        }
        spans.push(with_status(root, status::StatusCode::Ok, ""));
    }
    for (index, model) in models.iter().enumerate() {
        spans.push(with(
            span(
                trace,
                10 + index as u64,
                Some(1),
                "generate",
                start_ms + 1,
                start_ms + 2,
            ),
            vec![attribute("gen_ai.request.model", text(model))],
        ));
    }
    let mut last = span(trace, 99, Some(1), "work", start_ms, start_ms + duration_ms);
    if error {
        last = with_status(last, status::StatusCode::Error, "failed");
    }
    spans.push(last);
    export_request(vec![resource_spans(service, spans)])
}

async fn search_filters_and_pages(database: TestDatabase) {
    let mut running = start(&database).await;
    let requests = [
        summary_trace(
            1,
            "serving",
            Some("support"),
            &["smollm2"],
            1_000,
            100,
            false,
            true,
        ),
        summary_trace(
            2,
            "serving",
            Some("support"),
            &["smollm2", "minilm"],
            2_000,
            900,
            true,
            true,
        ),
        summary_trace(
            3,
            "serving",
            Some("sales"),
            &["minilm"],
            3_000,
            50,
            false,
            true,
        ),
        summary_trace(4, "gateway", Some("support"), &[], 4_000, 300, false, true),
        // No root yet: it arrives below.
        summary_trace(5, "serving", None, &[], 5_000, 2_000, true, false),
    ];
    for request in requests {
        running.export(request).await;
    }
    let ids = |numbers: &[u128]| numbers.iter().map(|n| trace_hex(*n)).collect::<Vec<_>>();
    let all = pb::SearchTracesRequest::default();

    assert_eq!(running.search_ids(all.clone()).await, ids(&[5, 4, 3, 2, 1]));
    let by_endpoint = pb::SearchTracesRequest {
        endpoint: "support".to_string(),
        ..Default::default()
    };
    assert_eq!(
        running.search_ids(by_endpoint.clone()).await,
        ids(&[4, 2, 1])
    );
    for (model, expected) in [
        ("smollm2", &[2, 1][..]),
        ("minilm", &[3, 2][..]),
        ("gpt", &[][..]),
    ] {
        let found = running
            .search_ids(pb::SearchTracesRequest {
                model: model.to_string(),
                ..Default::default()
            })
            .await;
        assert_eq!(found, ids(expected), "model {model}");
    }
    for (min_duration_ms, expected) in [
        (300.0, &[5, 4, 2][..]),
        (300.5, &[5, 2][..]),
        (0.0, &[5, 4, 3, 2, 1][..]),
    ] {
        let found = running
            .search_ids(pb::SearchTracesRequest {
                min_duration_ms,
                ..Default::default()
            })
            .await;
        assert_eq!(found, ids(expected), "min_duration_ms {min_duration_ms}");
    }
    for (status, expected) in [
        (pb::TraceStatusFilter::Error, &[5, 2][..]),
        (pb::TraceStatusFilter::Ok, &[4, 3, 1][..]),
        (pb::TraceStatusFilter::Any, &[5, 4, 3, 2, 1][..]),
    ] {
        let found = running
            .search_ids(pb::SearchTracesRequest {
                status: status as i32,
                ..Default::default()
            })
            .await;
        assert_eq!(found, ids(expected), "status {status:?}");
    }
    let fixed_ms = 1_700_000_000_000i64;
    let window = pb::SearchTracesRequest {
        since_ms: fixed_ms + 2_000,
        until_ms: fixed_ms + 4_000,
        ..Default::default()
    };
    assert_eq!(running.search_ids(window).await, ids(&[3, 2]));
    let since_only = pb::SearchTracesRequest {
        since_ms: fixed_ms + 3_000,
        ..Default::default()
    };
    assert_eq!(running.search_ids(since_only).await, ids(&[5, 4, 3]));
    let until_only = pb::SearchTracesRequest {
        until_ms: fixed_ms + 2_000,
        ..Default::default()
    };
    assert_eq!(running.search_ids(until_only).await, ids(&[1]));
    let gateway = pb::SearchTracesRequest {
        service_name: "gateway".to_string(),
        ..Default::default()
    };
    assert_eq!(running.search_ids(gateway).await, ids(&[4]));
    let combined = pb::SearchTracesRequest {
        endpoint: "support".to_string(),
        model: "smollm2".to_string(),
        status: pb::TraceStatusFilter::Ok as i32,
        ..Default::default()
    };
    assert_eq!(running.search_ids(combined).await, ids(&[1]));

    // Paging: every trace once, in order, across pages.
    let pages = running
        .search_pages(pb::SearchTracesRequest {
            page_size: 3,
            ..Default::default()
        })
        .await;
    assert_eq!(pages, vec![ids(&[5, 4, 3]), ids(&[2, 1])]);
    let pages = running
        .search_pages(pb::SearchTracesRequest {
            page_size: 2,
            ..by_endpoint
        })
        .await;
    assert_eq!(pages, vec![ids(&[4, 2]), ids(&[1])]);

    // The summary of a trace with two models, and one whose root is missing.
    let page = running.search(all.clone()).await;
    let second = page
        .traces
        .iter()
        .find(|t| t.trace_id == trace_hex(2))
        .unwrap();
    assert_eq!(
        second.models,
        vec!["minilm".to_string(), "smollm2".to_string()]
    );
    assert_eq!(second.span_count, 4);
    assert_eq!(second.duration_ms, 900.0);
    assert_eq!(second.status, pb::SpanStatus::Error as i32);
    assert_eq!(second.root_span_name, "query 2");
    let first = page
        .traces
        .iter()
        .find(|t| t.trace_id == trace_hex(1))
        .unwrap();
    assert_eq!(first.status, pb::SpanStatus::Ok as i32);
    let rootless = &page.traces[0];
    assert_eq!(rootless.trace_id, trace_hex(5));
    assert_eq!(
        (
            rootless.root_span_name.as_str(),
            rootless.service_name.as_str()
        ),
        ("", "")
    );
    assert_eq!(rootless.endpoint, "");

    // The root arrives, earlier than the span already stored: the summary
    // takes its name, service and endpoint, and the earlier start.
    let mut late_root = summary_trace(5, "frontend", Some("sales"), &[], 4_500, 10, false, true);
    late_root.resource_spans[0].scope_spans[0].spans.truncate(1);
    running.export(late_root).await;
    let page = running.search(all).await;
    let completed = &page.traces[0];
    assert_eq!(completed.trace_id, trace_hex(5));
    assert_eq!(completed.root_span_name, "query 5");
    assert_eq!(completed.service_name, "frontend");
    assert_eq!(completed.endpoint, "sales");
    assert_eq!(completed.start_time_unix_nano, at_ms(4_500) as i64);
    assert_eq!(completed.duration_ms, 2_500.0);
    assert_eq!(completed.span_count, 2);
    assert_eq!(completed.status, pb::SpanStatus::Error as i32);
    let sales = running
        .search_ids(pb::SearchTracesRequest {
            endpoint: "sales".to_string(),
            ..Default::default()
        })
        .await;
    assert_eq!(sales, ids(&[5, 3]));

    running.stop().await;
}

async fn bad_input_is_refused(database: TestDatabase) {
    let mut running = start(&database).await;
    for (trace_id, expected) in [
        (
            "",
            "field `trace_id`: must be 32 hex digits, not all zero, got \"\"",
        ),
        ("xyz", "field `trace_id`: must be 32 hex digits"),
        (&"a".repeat(31), "field `trace_id`: must be 32 hex digits"),
        (
            &"0".repeat(32),
            "field `trace_id`: must be 32 hex digits, not all zero",
        ),
        (&"g".repeat(32), "field `trace_id`: must be 32 hex digits"),
    ] {
        let result = running
            .monitoring
            .get_trace(pb::GetTraceRequest {
                trace_id: trace_id.to_string(),
            })
            .await;
        assert_status(expected, result, Code::InvalidArgument, &[expected]);
    }
    let unknown = "0123456789ABCDEF0123456789ABCDEF";
    let missing = running
        .monitoring
        .get_trace(pb::GetTraceRequest {
            trace_id: unknown.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        missing.message(),
        "trace `0123456789abcdef0123456789abcdef` not found"
    );

    let search_cases: Vec<(pb::SearchTracesRequest, &str)> = vec![
        (
            pb::SearchTracesRequest {
                since_ms: -1,
                ..Default::default()
            },
            "field `since_ms`: must be in 0..=",
        ),
        (
            pb::SearchTracesRequest {
                until_ms: -5,
                ..Default::default()
            },
            "field `until_ms`: must be in 0..=",
        ),
        (
            pb::SearchTracesRequest {
                since_ms: i64::MAX,
                ..Default::default()
            },
            "field `since_ms`: must be in 0..=9223372036854 (Unix ms; 0: unbounded)",
        ),
        (
            pb::SearchTracesRequest {
                since_ms: 2_000,
                until_ms: 2_000,
                ..Default::default()
            },
            "field `until_ms`: must be > since_ms (2000), got 2000",
        ),
        (
            pb::SearchTracesRequest {
                since_ms: 3_000,
                until_ms: 2_000,
                ..Default::default()
            },
            "field `until_ms`: must be > since_ms (3000), got 2000",
        ),
        (
            pb::SearchTracesRequest {
                min_duration_ms: -1.0,
                ..Default::default()
            },
            "field `min_duration_ms`: must be finite and >= 0",
        ),
        (
            pb::SearchTracesRequest {
                min_duration_ms: f64::NAN,
                ..Default::default()
            },
            "field `min_duration_ms`: must be finite and >= 0",
        ),
        (
            pb::SearchTracesRequest {
                min_duration_ms: f64::INFINITY,
                ..Default::default()
            },
            "field `min_duration_ms`: must be finite and >= 0",
        ),
        (
            pb::SearchTracesRequest {
                page_token: "garbage".to_string(),
                ..Default::default()
            },
            "field `page_token`: must be a next_page_token returned by this service",
        ),
        (
            pb::SearchTracesRequest {
                page_token: format!("5_{}", "A".repeat(32)),
                ..Default::default()
            },
            "field `page_token`",
        ),
        (
            pb::SearchTracesRequest {
                page_size: 1001,
                ..Default::default()
            },
            "field `page_size`: must be in 1..=1000, got 1001",
        ),
        (
            pb::SearchTracesRequest {
                status: 7,
                ..Default::default()
            },
            "field `status`: must be TRACE_STATUS_FILTER_ANY, _OK or _ERROR, got 7",
        ),
        (
            pb::SearchTracesRequest {
                endpoint: "has space".to_string(),
                ..Default::default()
            },
            "field `endpoint`: must match",
        ),
        (
            pb::SearchTracesRequest {
                model: "m".repeat(257),
                ..Default::default()
            },
            "field `model`: must be at most 256 bytes, got 257",
        ),
        (
            pb::SearchTracesRequest {
                service_name: "s".repeat(300),
                ..Default::default()
            },
            "field `service_name`: must be at most 256 bytes, got 300",
        ),
    ];
    for (request, expected) in search_cases {
        let result = running.monitoring.search_traces(request).await;
        assert_status(expected, result, Code::InvalidArgument, &[expected]);
    }
    // The largest page and a page token of this service are fine.
    let fine = running
        .search(pb::SearchTracesRequest {
            page_size: 1000,
            page_token: format!("5_{}", "a".repeat(32)),
            ..Default::default()
        })
        .await;
    assert!(fine.traces.is_empty());
    running.stop().await;
}

async fn restart_keeps_spans(database: TestDatabase) {
    let mut running = start(&database).await;
    running.export(query_trace()).await;
    let before = running.trace(&trace_hex(QUERY_TRACE)).await;
    let summary_before = running.search(pb::SearchTracesRequest::default()).await;
    running.stop().await;

    let mut restarted = start(&database).await;
    assert_eq!(restarted.trace(&trace_hex(QUERY_TRACE)).await, before);
    assert_eq!(
        restarted.search(pb::SearchTracesRequest::default()).await,
        summary_before
    );
    // Re-sent after the restart: still stored once.
    restarted.export(query_trace()).await;
    assert_eq!(restarted.trace(&trace_hex(QUERY_TRACE)).await, before);
    restarted.stop().await;
}

#[tokio::test]
async fn sqlite_export_then_get_trace() {
    export_then_get_trace(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn postgres_export_then_get_trace() {
    export_then_get_trace(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn sqlite_otlp_http_protobuf_and_json() {
    otlp_http_protobuf_and_json(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn postgres_otlp_http_protobuf_and_json() {
    otlp_http_protobuf_and_json(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn sqlite_search_filters_and_pages() {
    search_filters_and_pages(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn postgres_search_filters_and_pages() {
    search_filters_and_pages(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn sqlite_bad_input_is_refused() {
    bad_input_is_refused(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn postgres_bad_input_is_refused() {
    bad_input_is_refused(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn sqlite_restart_keeps_spans() {
    restart_keeps_spans(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn postgres_restart_keeps_spans() {
    restart_keeps_spans(TestDatabase::postgres().await).await;
}

//! (i) Traces: one RAG query is one trace across serving, the registry, the
//! vector index and the generator, with W3C trace context on every hop; the
//! spans land in monitoring's trace store and in any OTLP receiver.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::telemetry::{ExporterConfig, OtlpProtocol};
use keel_proto::v1::{
    GetInferenceRequest, GetTraceRequest, QueryResponse, SearchTracesRequest, Span, SpanKind,
    Trace, TraceStatusFilter,
};
use keel_tests::cluster::Service;
use keel_tests::fixtures::{self, CHAIN_MODEL, COLLECTION, ENDPOINT, REFUND_QUESTION, V1_TOP_K};
use keel_tests::{eventually, on_both_backends, Backend, Cluster, Storage};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost_types::value::Kind;

on_both_backends!(one_query_is_one_trace);
on_both_backends!(spans_reach_an_otlp_receiver_and_otlp_http);

const SPAN_WAIT: Duration = Duration::from_secs(30);
/// serving's server span of a query call.
const QUERY_SPAN: &str = "query acme-support";

async fn one_query_is_one_trace(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start_with(&storage, |config| {
        config.telemetry.to_monitoring = true;
    })
    .await;
    fixtures::setup_application(&cluster).await;

    // A caller that sends its own trace context has its trace continued.
    let caller_trace = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let caller_span = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(fixtures::query_request(
        ENDPOINT,
        REFUND_QUESTION.text,
        "alice",
    ));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{caller_trace}-{caller_span}-01")
            .parse()
            .unwrap(),
    );
    let response = cluster
        .serving
        .clone()
        .query(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.trace_id, caller_trace);

    let trace = wait_for_spans(
        &cluster,
        &caller_trace,
        &[
            QUERY_SPAN,
            "keel.v1.RegistryService/ResolveReference",
            "retrieval acme-docs",
            "embeddings hashing",
            "chat extractive",
        ],
    )
    .await;
    for span in &trace.spans {
        assert_eq!(span.trace_id, caller_trace, "{}", span.name);
    }

    // The query's span is serving's server span for the call, continuing
    // the caller's; no second span times the same call.
    let query = server_span(&trace, QUERY_SPAN);
    assert_eq!(query.parent_span_id, caller_span);
    assert_eq!(
        string_attribute(query, "rpc.service"),
        "keel.v1.ServingService"
    );
    assert!(
        !trace
            .spans
            .iter()
            .any(|span| span.name.starts_with("keel.v1.ServingService")),
        "{:?}",
        span_names(&trace)
    );
    assert_eq!(string_attribute(query, "keel.endpoint"), ENDPOINT);
    assert_eq!(
        string_attribute(query, "keel.request_id"),
        response.request_id
    );
    assert_eq!(string_attribute(query, "keel.served_model"), CHAIN_MODEL);
    assert_eq!(number_attribute(query, "keel.served_version"), 1.0);

    // Resolving the chain (not cached yet) crossed to the registry.
    // Callers inject their context without a span of their own, so a
    // server span's parent is the caller's span.
    for call in trace
        .spans
        .iter()
        .filter(|span| span.name.starts_with("keel.v1."))
    {
        assert_eq!(call.kind, SpanKind::Server as i32, "{}", call.name);
    }
    let resolve = server_span(&trace, "keel.v1.RegistryService/ResolveReference");
    assert_eq!(resolve.parent_span_id, query.span_id);

    // Retrieval crossed to the vector index, whose server span for the
    // call is the retrieval span; it embedded the question.
    let retrieval = server_span(&trace, &format!("retrieval {COLLECTION}"));
    assert_eq!(retrieval.parent_span_id, query.span_id);
    assert_eq!(
        string_attribute(retrieval, "rpc.service"),
        "keel.v1.VectorIndexService"
    );
    assert!(!span_names(&trace).contains(&"keel.v1.VectorIndexService/Search"));
    assert_eq!(
        string_attribute(retrieval, "gen_ai.operation.name"),
        "retrieval"
    );
    assert_eq!(
        string_attribute(retrieval, "gen_ai.data_source.id"),
        COLLECTION
    );
    assert_eq!(
        number_attribute(retrieval, "gen_ai.request.top_k"),
        f64::from(V1_TOP_K)
    );
    assert_eq!(
        number_attribute(retrieval, "keel.retrieval.returned"),
        f64::from(V1_TOP_K)
    );
    let embeddings = only_span(&trace, "embeddings hashing");
    assert_eq!(embeddings.parent_span_id, retrieval.span_id);
    assert_eq!(
        string_attribute(embeddings, "gen_ai.operation.name"),
        "embeddings"
    );
    assert_eq!(
        string_attribute(embeddings, "gen_ai.request.model"),
        "hashing"
    );
    assert_eq!(string_attribute(embeddings, "gen_ai.provider.name"), "keel");

    // Generation ran in serving, under the query.
    let chat = only_span(&trace, "chat extractive");
    assert_eq!(chat.parent_span_id, query.span_id);
    assert_eq!(string_attribute(chat, "gen_ai.operation.name"), "chat");
    assert_eq!(string_attribute(chat, "gen_ai.provider.name"), "keel");
    assert_eq!(string_attribute(chat, "gen_ai.request.model"), "extractive");
    let usage = response.usage.unwrap();
    assert_eq!(
        number_attribute(chat, "gen_ai.usage.input_tokens"),
        f64::from(usage.input_tokens)
    );
    assert_eq!(
        number_attribute(chat, "gen_ai.usage.output_tokens"),
        f64::from(usage.output_tokens)
    );
    assert_eq!(
        list_attribute(chat, "gen_ai.response.finish_reasons"),
        ["stop"]
    );
    assert!(number_attribute(chat, "gen_ai.response.time_to_first_chunk") > 0.0);
    // Content stays off spans unless the config opts in.
    assert!(attribute(chat, "gen_ai.input.messages").is_none());
    for span in [retrieval, embeddings, chat] {
        assert!(span.start_time_unix_nano >= query.start_time_unix_nano);
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    }

    // The inference record points at the query's span.
    let record = eventually("the inference record", SPAN_WAIT, || {
        let mut monitoring = cluster.monitoring.clone();
        let request_id = response.request_id.clone();
        async move {
            monitoring
                .get_inference(GetInferenceRequest { request_id })
                .await
                .ok()
                .map(|record| record.into_inner())
        }
    })
    .await;
    assert_eq!(record.trace_id, caller_trace);
    assert_eq!(record.span_id, query.span_id);

    // A second query without a caller context is a trace of its own, and
    // the chain now comes from serving's cache: no registry hop.
    let second = fixtures::query(&cluster, ENDPOINT, REFUND_QUESTION.text, "bob").await;
    assert_ne!(second.trace_id, caller_trace);
    let second_trace =
        wait_for_spans(&cluster, &second.trace_id, &[QUERY_SPAN, "chat extractive"]).await;
    let root = server_span(&second_trace, QUERY_SPAN);
    assert_eq!(root.parent_span_id, "");
    assert!(
        !second_trace
            .spans
            .iter()
            .any(|span| span.name.contains("RegistryService")),
        "a cached chain crossed to the registry: {:?}",
        span_names(&second_trace)
    );

    // A failed query marks its trace as an error.
    let failed = cluster
        .serving
        .clone()
        .query(fixtures::query_request("no-such-endpoint", "hi", "carol"))
        .await;
    assert_eq!(failed.unwrap_err().code(), tonic::Code::NotFound);

    search_finds_the_traces(&cluster, &response, &second).await;
    cluster.shutdown().await;
}

/// SearchTraces by endpoint, model, duration and status.
async fn search_finds_the_traces(cluster: &Cluster, first: &QueryResponse, second: &QueryResponse) {
    let search = |request: SearchTracesRequest| {
        let mut monitoring = cluster.monitoring.clone();
        async move {
            let found = monitoring
                .search_traces(request)
                .await
                .unwrap()
                .into_inner();
            found
                .traces
                .into_iter()
                .map(|summary| summary.trace_id)
                .collect::<Vec<String>>()
        }
    };
    let by_endpoint = eventually("both traces under the endpoint", SPAN_WAIT, || async {
        let ids = search(SearchTracesRequest {
            endpoint: ENDPOINT.to_string(),
            ..Default::default()
        })
        .await;
        (ids.contains(&first.trace_id) && ids.contains(&second.trace_id)).then_some(ids)
    })
    .await;
    // Newest first.
    let first_position = by_endpoint.iter().position(|id| *id == first.trace_id);
    let second_position = by_endpoint.iter().position(|id| *id == second.trace_id);
    assert!(second_position < first_position, "{by_endpoint:?}");

    let by_model = search(SearchTracesRequest {
        model: "extractive".to_string(),
        ..Default::default()
    })
    .await;
    assert!(by_model.contains(&first.trace_id), "{by_model:?}");
    // Every span of this process reaches this store (the other scenarios'
    // too): a model no scenario uses finds nothing.
    let other_model = search(SearchTracesRequest {
        model: "no-such-model".to_string(),
        ..Default::default()
    })
    .await;
    assert!(other_model.is_empty(), "{other_model:?}");
    let too_long = search(SearchTracesRequest {
        endpoint: ENDPOINT.to_string(),
        min_duration_ms: 3_600_000.0,
        ..Default::default()
    })
    .await;
    assert!(too_long.is_empty(), "{too_long:?}");
    let errors = eventually("the failed query's trace", SPAN_WAIT, || async {
        let ids = search(SearchTracesRequest {
            endpoint: "no-such-endpoint".to_string(),
            status: TraceStatusFilter::Error as i32,
            ..Default::default()
        })
        .await;
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    assert!(!errors.contains(&first.trace_id));
    let ok = search(SearchTracesRequest {
        endpoint: ENDPOINT.to_string(),
        status: TraceStatusFilter::Ok as i32,
        ..Default::default()
    })
    .await;
    assert!(ok.contains(&first.trace_id), "{ok:?}");
}

/// Keel's spans go to every configured OTLP destination: a collector's
/// gRPC `TraceService` (here, one run by the test) and OTLP/HTTP
/// (here, monitoring's own `/v1/traces`).
async fn spans_reach_an_otlp_receiver_and_otlp_http(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;
    let receiver = Receiver::start().await;
    let _to_receiver = keel_core::telemetry::add_destination(&ExporterConfig {
        protocol: OtlpProtocol::Grpc,
        endpoint: format!("http://{}", receiver.address),
        headers: BTreeMap::from([("x-tenant".to_string(), "acme".to_string())]),
        timeout_ms: 5_000,
        ca_path: None,
    })
    .unwrap();
    let _to_http = keel_core::telemetry::add_destination(&ExporterConfig {
        protocol: OtlpProtocol::HttpProtobuf,
        endpoint: format!("{}/v1/traces", cluster.keel.admin_url(Service::Monitoring)),
        headers: BTreeMap::from(
            [keel_tests::master_key_header()].map(|(name, value)| (name.to_string(), value)),
        ),
        timeout_ms: 5_000,
        ca_path: None,
    })
    .unwrap();

    let response = fixtures::query(&cluster, ENDPOINT, REFUND_QUESTION.text, "dave").await;

    // A flush (what a process does before it exits) returns once the spans
    // finished so far are at every destination: the generation's span
    // ended before the answer was sent.
    tokio::task::spawn_blocking(keel_core::telemetry::shutdown)
        .await
        .unwrap();
    let flushed = receiver.spans_of(&response.trace_id);
    assert!(
        flushed.iter().any(|span| span.name == "chat extractive"),
        "not flushed: {:?}",
        flushed.iter().map(|span| &span.name).collect::<Vec<_>>()
    );

    let received = eventually("the query's spans at the receiver", SPAN_WAIT, || async {
        let spans = receiver.spans_of(&response.trace_id);
        let has_chat = spans.iter().any(|span| span.name == "chat extractive");
        let has_call = spans.iter().any(|span| span.name == QUERY_SPAN);
        (has_chat && has_call).then_some(spans)
    })
    .await;
    let chat = received
        .iter()
        .find(|span| span.name == "chat extractive")
        .unwrap();
    let model = chat
        .attributes
        .iter()
        .find(|attribute| attribute.key == "gen_ai.request.model")
        .and_then(|attribute| attribute.value.as_ref())
        .and_then(|value| value.value.clone());
    assert_eq!(
        model,
        Some(any_value::Value::StringValue("extractive".to_string()))
    );
    assert_eq!(receiver.service_names(), ["keel-e2e"]);
    assert_eq!(receiver.tenant_headers(), ["acme"]);

    // The same spans, over OTLP/HTTP protobuf, are in monitoring's store.
    wait_for_spans(
        &cluster,
        &response.trace_id,
        &[QUERY_SPAN, "chat extractive"],
    )
    .await;
    cluster.shutdown().await;
}

/// Each export the receiver got, with its `x-tenant` header.
type Received = Arc<Mutex<Vec<(ExportTraceServiceRequest, Option<String>)>>>;

/// An OTLP collector's gRPC intake that keeps what it receives.
struct Receiver {
    address: SocketAddr,
    received: Received,
    _shutdown: keel_core::CancellationToken,
}

#[derive(Clone)]
struct ReceiverService {
    received: Received,
}

#[tonic::async_trait]
impl TraceService for ReceiverService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let tenant = request
            .metadata()
            .get("x-tenant")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        self.received
            .lock()
            .unwrap()
            .push((request.into_inner(), tenant));
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let service = ReceiverService {
            received: received.clone(),
        };
        let shutdown = keel_core::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await
        });
        Receiver {
            address,
            received,
            _shutdown: shutdown,
        }
    }

    fn spans_of(&self, trace_id: &str) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        let mut spans = Vec::new();
        for (request, _) in self.received.lock().unwrap().iter() {
            for resource_spans in &request.resource_spans {
                for scope_spans in &resource_spans.scope_spans {
                    for span in &scope_spans.spans {
                        if hex(&span.trace_id) == trace_id {
                            spans.push(span.clone());
                        }
                    }
                }
            }
        }
        spans
    }

    /// The distinct `service.name`s of the exporting resources.
    fn service_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for (request, _) in self.received.lock().unwrap().iter() {
            for resource_spans in &request.resource_spans {
                let Some(resource) = &resource_spans.resource else {
                    continue;
                };
                for attribute in &resource.attributes {
                    let value = attribute
                        .value
                        .as_ref()
                        .and_then(|value| value.value.clone());
                    if let (true, Some(any_value::Value::StringValue(name))) =
                        (attribute.key == "service.name", value)
                    {
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                }
            }
        }
        names
    }

    fn tenant_headers(&self) -> Vec<String> {
        let mut tenants: Vec<String> = self
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, tenant)| tenant.clone().unwrap_or_default())
            .collect();
        tenants.dedup();
        tenants
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The trace once every span named in `names` is stored.
async fn wait_for_spans(cluster: &Cluster, trace_id: &str, names: &[&str]) -> Trace {
    eventually(
        &format!("spans {names:?} of trace {trace_id}"),
        SPAN_WAIT,
        || {
            let mut monitoring = cluster.monitoring.clone();
            let trace_id = trace_id.to_string();
            async move {
                let trace = monitoring
                    .get_trace(GetTraceRequest { trace_id })
                    .await
                    .ok()?
                    .into_inner();
                let present = names
                    .iter()
                    .all(|name| trace.spans.iter().any(|span| span.name == *name));
                present.then_some(trace)
            }
        },
    )
    .await
}

fn span_names(trace: &Trace) -> Vec<&str> {
    trace.spans.iter().map(|span| span.name.as_str()).collect()
}

fn only_span<'t>(trace: &'t Trace, name: &str) -> &'t Span {
    let matching: Vec<&Span> = trace
        .spans
        .iter()
        .filter(|span| span.name == name)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "spans named {name}: {:?}",
        span_names(trace)
    );
    matching[0]
}

fn server_span<'t>(trace: &'t Trace, name: &str) -> &'t Span {
    trace
        .spans
        .iter()
        .find(|span| span.name == name && span.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("no server span {name}: {:?}", span_names(trace)))
}

fn attribute<'s>(span: &'s Span, key: &str) -> Option<&'s Kind> {
    span.attributes.as_ref()?.fields.get(key)?.kind.as_ref()
}

fn string_attribute(span: &Span, key: &str) -> String {
    match attribute(span, key) {
        Some(Kind::StringValue(value)) => value.clone(),
        other => panic!("{}: {key} is {other:?}, not a string", span.name),
    }
}

fn number_attribute(span: &Span, key: &str) -> f64 {
    match attribute(span, key) {
        Some(Kind::NumberValue(value)) => *value,
        other => panic!("{}: {key} is {other:?}, not a number", span.name),
    }
}

fn list_attribute(span: &Span, key: &str) -> Vec<String> {
    let Some(Kind::ListValue(list)) = attribute(span, key) else {
        panic!("{}: {key} is not a list", span.name);
    };
    list.values
        .iter()
        .map(|value| match &value.kind {
            Some(Kind::StringValue(text)) => text.clone(),
            other => panic!("{}: {key} holds {other:?}", span.name),
        })
        .collect()
}

//! API keys over the real cluster: every service refuses a call without a
//! key (UNAUTHENTICATED, HTTP 401) and a key without the call's scope
//! (PERMISSION_DENIED, 403, naming the scope), and lets the right scope
//! through, on gRPC and on the admin HTTP ports; a revoked or expired key
//! stops working everywhere within a second; an audit trail names the key.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keel_core::channel::ServiceChannel;
use keel_proto::v1::feedback_service_client::FeedbackServiceClient;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use keel_proto::v1::registry_service_client::RegistryServiceClient;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_proto::v1::{
    ChatMessage, CreateApiKeyRequest, CreateModelRequest, DeleteEndpointRequest,
    DropCollectionRequest, GenerateRequest, GetMetricsRequest, GetModelRequest,
    ListAliasHistoryRequest, ListApiKeysRequest, ListCollectionsRequest, ListEndpointsRequest,
    ListFeedbackRequest, ModelKind, RecordInferencesRequest, RevokeApiKeyRequest, SetAliasRequest,
    SubmitFeedbackRequest,
};
use keel_tests::cluster::Service;
use keel_tests::fixtures::{self, CHAIN_MODEL, ENDPOINT, REFUND_QUESTION};
use keel_tests::{on_both_backends, Backend, Cluster, Storage};
use keel_types::Scope;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tonic::{Code, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

on_both_backends!(every_call_checks_its_key_and_scope);
on_both_backends!(revoked_and_expired_keys_stop_within_a_second);

/// One call of each kind the services serve, and the scope it needs.
#[derive(Debug, Clone, Copy)]
enum Call {
    GetModel,
    CreateModel,
    OverrideGate,
    ListApiKeys,
    ListEndpoints,
    QueryOurEndpoint,
    QueryAnotherEndpoint,
    Generate,
    DeleteEndpoint,
    ListCollections,
    DropCollection,
    GetMetrics,
    RecordInferences,
    ExportSpans,
    ListFeedback,
    SubmitFeedback,
}

const CALLS: [Call; 16] = [
    Call::GetModel,
    Call::CreateModel,
    Call::OverrideGate,
    Call::ListApiKeys,
    Call::ListEndpoints,
    Call::QueryOurEndpoint,
    Call::QueryAnotherEndpoint,
    Call::Generate,
    Call::DeleteEndpoint,
    Call::ListCollections,
    Call::DropCollection,
    Call::GetMetrics,
    Call::RecordInferences,
    Call::ExportSpans,
    Call::ListFeedback,
    Call::SubmitFeedback,
];

impl Call {
    fn needs(self) -> &'static str {
        match self {
            Call::GetModel
            | Call::ListEndpoints
            | Call::ListCollections
            | Call::GetMetrics
            | Call::ListFeedback => "read",
            Call::CreateModel
            | Call::OverrideGate
            | Call::ListApiKeys
            | Call::DeleteEndpoint
            | Call::DropCollection => "admin",
            Call::QueryOurEndpoint => "query:acme-support",
            Call::QueryAnotherEndpoint => "query:billing",
            Call::Generate => "query:*",
            Call::RecordInferences | Call::ExportSpans => "traces:write",
            Call::SubmitFeedback => "feedback:write",
        }
    }

    fn service(self) -> Service {
        match self {
            Call::GetModel | Call::CreateModel | Call::OverrideGate | Call::ListApiKeys => {
                Service::Registry
            }
            Call::ListEndpoints
            | Call::QueryOurEndpoint
            | Call::QueryAnotherEndpoint
            | Call::Generate
            | Call::DeleteEndpoint => Service::Serving,
            Call::ListCollections | Call::DropCollection => Service::VectorIndex,
            Call::GetMetrics | Call::RecordInferences | Call::ExportSpans => Service::Monitoring,
            Call::ListFeedback | Call::SubmitFeedback => Service::Feedback,
        }
    }

    /// Makes the call presenting `key`. Calls that would change something
    /// name what does not exist or carry bad input, so a call let through
    /// fails after the check (NOT_FOUND, INVALID_ARGUMENT) and changes
    /// nothing.
    async fn make(self, cluster: &Cluster, key: Option<&str>) -> Result<(), Status> {
        let channel = channel(cluster, self.service(), key);
        match self {
            Call::GetModel => RegistryServiceClient::new(channel)
                .get_model(GetModelRequest {
                    name: CHAIN_MODEL.to_string(),
                })
                .await
                .map(drop),
            Call::CreateModel => RegistryServiceClient::new(channel)
                .create_model(CreateModelRequest {
                    name: "bad name!".to_string(),
                    kind: ModelKind::Chain as i32,
                    ..Default::default()
                })
                .await
                .map(drop),
            Call::OverrideGate => RegistryServiceClient::new(channel)
                .set_alias(SetAliasRequest {
                    model: "no-such-model".to_string(),
                    alias: "champion".to_string(),
                    version: 1,
                    expected_current_version: None,
                    actor: "ops".to_string(),
                    reason: "hotfix".to_string(),
                    override_gate: true,
                })
                .await
                .map(drop),
            Call::ListApiKeys => RegistryServiceClient::new(channel)
                .list_api_keys(ListApiKeysRequest::default())
                .await
                .map(drop),
            Call::ListEndpoints => ServingServiceClient::new(channel)
                .list_endpoints(ListEndpointsRequest::default())
                .await
                .map(drop),
            Call::QueryOurEndpoint => ServingServiceClient::new(channel)
                .query(fixtures::query_request(
                    ENDPOINT,
                    REFUND_QUESTION.text,
                    "ana",
                ))
                .await
                .map(drop),
            Call::QueryAnotherEndpoint => ServingServiceClient::new(channel)
                .query(fixtures::query_request(
                    "billing",
                    "Where is my bill?",
                    "ana",
                ))
                .await
                .map(drop),
            Call::Generate => ServingServiceClient::new(channel)
                .generate(GenerateRequest {
                    generator: "no-such-generator".to_string(),
                    messages: vec![ChatMessage {
                        role: "user".to_string(),
                        content: "hello".to_string(),
                    }],
                    ..Default::default()
                })
                .await
                .map(drop),
            Call::DeleteEndpoint => ServingServiceClient::new(channel)
                .delete_endpoint(DeleteEndpointRequest {
                    name: "no-such-endpoint".to_string(),
                })
                .await
                .map(drop),
            Call::ListCollections => VectorIndexServiceClient::new(channel)
                .list_collections(ListCollectionsRequest::default())
                .await
                .map(drop),
            Call::DropCollection => VectorIndexServiceClient::new(channel)
                .drop_collection(DropCollectionRequest {
                    name: "no-such-collection".to_string(),
                })
                .await
                .map(drop),
            Call::GetMetrics => MonitoringServiceClient::new(channel)
                .get_metrics(GetMetricsRequest::default())
                .await
                .map(drop),
            Call::RecordInferences => MonitoringServiceClient::new(channel)
                .record_inferences(RecordInferencesRequest::default())
                .await
                .map(drop),
            Call::ExportSpans => TraceServiceClient::new(channel)
                .export(ExportTraceServiceRequest::default())
                .await
                .map(drop),
            Call::ListFeedback => FeedbackServiceClient::new(channel)
                .list_feedback(ListFeedbackRequest::default())
                .await
                .map(drop),
            Call::SubmitFeedback => FeedbackServiceClient::new(channel)
                .submit_feedback(SubmitFeedbackRequest::default())
                .await
                .map(drop),
        }
    }
}

fn channel(cluster: &Cluster, service: Service, key: Option<&str>) -> ServiceChannel {
    keel_tests::channel_presenting(&cluster.keel.grpc_url(service), key)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A key made with the master key; returns its id and secret.
async fn create_key(
    cluster: &Cluster,
    name: &str,
    scopes: &[&str],
    expires_at_ms: i64,
) -> (String, String) {
    let created = cluster
        .registry
        .clone()
        .create_api_key(CreateApiKeyRequest {
            name: name.to_string(),
            scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
            expires_at_ms,
            actor: "e2e".to_string(),
        })
        .await
        .unwrap_or_else(|status| panic!("creating key {name}: {status}"))
        .into_inner();
    (created.key.unwrap().id, created.secret)
}

fn grants(scopes: &[&str], needed: &str) -> bool {
    let needed = Scope::parse("needed", needed).unwrap();
    scopes
        .iter()
        .any(|held| Scope::parse("held", held).unwrap().grants(&needed))
}

fn is_refusal(code: Code) -> bool {
    matches!(code, Code::Unauthenticated | Code::PermissionDenied)
}

async fn every_call_checks_its_key_and_scope(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;

    let holders: [(&str, &[&str]); 8] = [
        ("reader", &["read"]),
        ("support-bot", &["query:acme-support"]),
        ("billing-bot", &["query:billing"]),
        ("any-bot", &["query:*"]),
        ("chat-ui", &["feedback:write"]),
        ("collector", &["traces:write"]),
        ("ops", &["admin"]),
        ("bot-and-reader", &["query:acme-support", "read"]),
    ];
    let mut keys = Vec::new();
    for (name, scopes) in holders {
        let (_, secret) = create_key(&cluster, name, scopes, 0).await;
        keys.push((name, scopes, secret));
    }
    let forged = format!("keel_0123456789ab_{}", "0".repeat(64));

    for call in CALLS {
        let context = format!("{backend:?} {call:?}");
        let missing = call.make(&cluster, None).await.unwrap_err();
        assert_eq!(
            missing.code(),
            Code::Unauthenticated,
            "{context} without a key"
        );
        assert!(
            missing.message().contains("missing API key"),
            "{context}: {missing:?}"
        );
        let invalid = call.make(&cluster, Some(&forged)).await.unwrap_err();
        assert_eq!(invalid.code(), Code::Unauthenticated, "{context} forged");
        assert!(
            invalid.message().contains("invalid API key"),
            "{context}: {invalid:?}"
        );

        for (name, scopes, secret) in &keys {
            let outcome = call.make(&cluster, Some(secret)).await;
            if grants(scopes, call.needs()) {
                if let Err(status) = &outcome {
                    assert!(
                        !is_refusal(status.code()),
                        "{context}: key {name} {scopes:?} was refused: {status:?}"
                    );
                }
            } else {
                let status = outcome.expect_err(&format!("{context}: key {name} let through"));
                assert_eq!(status.code(), Code::PermissionDenied, "{context}: {name}");
                let named = if call.needs().starts_with("query:")
                    && !scopes.iter().any(|scope| scope.starts_with("query:"))
                {
                    // The layer cannot read which endpoint the query names.
                    "query:".to_string()
                } else {
                    call.needs().to_string()
                };
                assert!(
                    status
                        .message()
                        .contains(&format!("api key `{name}` lacks scope `{named}")),
                    "{context}: {name}: {status:?}"
                );
            }
        }
    }

    // Health answers anyone: load balancers carry no key.
    for service in Service::ALL {
        let mut health = HealthClient::new(channel(&cluster, service, None));
        health
            .check(HealthCheckRequest::default())
            .await
            .unwrap_or_else(|status| panic!("{service} health without a key: {status}"));
    }

    http_routes_check_keys(&cluster, &keys).await;

    // An alias moved with a key is audited under the key's name, whatever
    // actor the request claims.
    let ops = &keys.iter().find(|(name, ..)| *name == "ops").unwrap().2;
    RegistryServiceClient::new(channel(&cluster, Service::Registry, Some(ops)))
        .set_alias(SetAliasRequest {
            model: CHAIN_MODEL.to_string(),
            alias: "champion".to_string(),
            version: 2,
            expected_current_version: Some(1),
            actor: "somebody-else".to_string(),
            reason: "v2 is better".to_string(),
            override_gate: false,
        })
        .await
        .unwrap();
    let history = cluster
        .registry
        .clone()
        .list_alias_history(ListAliasHistoryRequest {
            model: CHAIN_MODEL.to_string(),
            alias: "champion".to_string(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let last = history.iter().max_by_key(|event| event.sequence).unwrap();
    assert_eq!((last.new_version, last.actor.as_str()), (2, "key:ops"));
    cluster.shutdown().await;
}

/// The admin HTTP ports: `/healthz` open, `/metrics` needs `read`,
/// `POST /v1/feedback` needs `feedback:write`, `POST /v1/traces` needs
/// `traces:write`; CORS preflights pass without a key.
async fn http_routes_check_keys(cluster: &Cluster, keys: &[(&str, &[&str], String)]) {
    let secret = |wanted: &str| {
        keys.iter()
            .find(|(name, ..)| *name == wanted)
            .map(|(.., secret)| format!("Bearer {secret}"))
            .unwrap()
    };
    let exchange = |service: Service, method: &str, path: &str, key: Option<String>| {
        let address = cluster.keel.admin_addr(service);
        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(key) = key {
            headers.push(("authorization", key));
        }
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let request = keel_testkit::http_request(method, path, &headers, b"{}");
        keel_testkit::http_exchange(address, request)
    };
    for service in Service::ALL {
        let health = exchange(service, "GET", "/healthz", None).await;
        assert_eq!(health.status, 200, "{service} /healthz");
        let anonymous = exchange(service, "GET", "/metrics", None).await;
        assert_eq!(anonymous.status, 401, "{service} /metrics without a key");
        assert!(anonymous.headers.contains("www-authenticate: bearer"));
        assert!(
            anonymous.text().contains("missing API key"),
            "{}",
            anonymous.text()
        );
        let read = exchange(service, "GET", "/metrics", Some(secret("reader"))).await;
        assert_eq!(read.status, 200, "{service} /metrics with read");
        assert!(read.text().contains("keel_grpc_server_handled_total"));
        let wrong = exchange(service, "GET", "/metrics", Some(secret("chat-ui"))).await;
        assert_eq!(wrong.status, 403, "{service} /metrics with feedback:write");
        let error: serde_json::Value = serde_json::from_slice(&wrong.body).unwrap();
        assert_eq!(
            error["error"]["message"],
            "api key `chat-ui` lacks scope `read`"
        );
    }
    // Past the check, `{}` is bad input: 400, not a refusal.
    let posted = exchange(
        Service::Feedback,
        "POST",
        "/v1/feedback",
        Some(secret("chat-ui")),
    )
    .await;
    assert_eq!(posted.status, 400, "{}", posted.text());
    let posted = exchange(
        Service::Feedback,
        "POST",
        "/v1/feedback",
        Some(secret("reader")),
    )
    .await;
    assert_eq!(posted.status, 403, "{}", posted.text());
    let spans = exchange(
        Service::Monitoring,
        "POST",
        "/v1/traces",
        Some(secret("collector")),
    )
    .await;
    assert!(![401, 403].contains(&spans.status), "{}", spans.text());
    let spans = exchange(
        Service::Monitoring,
        "POST",
        "/v1/traces",
        Some(secret("chat-ui")),
    )
    .await;
    assert_eq!(spans.status, 403, "{}", spans.text());
    let preflight = keel_testkit::http_request(
        "OPTIONS",
        "/v1/feedback",
        &[
            ("origin", "https://chat.example.com"),
            ("access-control-request-method", "POST"),
        ],
        b"",
    );
    let answer =
        keel_testkit::http_exchange(cluster.keel.admin_addr(Service::Feedback), preflight).await;
    assert!(answer.status < 400, "preflight: {}", answer.status);
}

async fn revoked_and_expired_keys_stop_within_a_second(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;

    // A key in use on serving (cached there) and on the registry itself.
    let (id, secret) = create_key(&cluster, "to-revoke", &["query:acme-support", "read"], 0).await;
    Call::QueryOurEndpoint
        .make(&cluster, Some(&secret))
        .await
        .unwrap();
    Call::GetModel.make(&cluster, Some(&secret)).await.unwrap();
    cluster
        .registry
        .clone()
        .revoke_api_key(RevokeApiKeyRequest {
            id,
            actor: "e2e".to_string(),
        })
        .await
        .unwrap();
    let revoked_at = Instant::now();
    for call in [Call::QueryOurEndpoint, Call::GetModel] {
        refused_within_a_second(&cluster, call, &secret, revoked_at).await;
    }

    // A key that expires soon works until then, and not after.
    let lifetime_ms = 1_500;
    let (_, brief) = create_key(&cluster, "brief", &["read"], now_ms() + lifetime_ms).await;
    let created = Instant::now();
    Call::ListCollections
        .make(&cluster, Some(&brief))
        .await
        .unwrap();
    Call::ListFeedback
        .make(&cluster, Some(&brief))
        .await
        .unwrap();
    let expires = created + Duration::from_millis(lifetime_ms as u64);
    tokio::time::sleep_until(expires.into()).await;
    for call in [Call::ListCollections, Call::ListFeedback, Call::GetModel] {
        refused_within_a_second(&cluster, call, &brief, expires).await;
    }
    cluster.shutdown().await;
}

/// Polls `call` with `key` until it is refused as UNAUTHENTICATED, which
/// must happen within a second of `since`.
async fn refused_within_a_second(cluster: &Cluster, call: Call, key: &str, since: Instant) {
    loop {
        match call.make(cluster, Some(key)).await {
            Err(status) if status.code() == Code::Unauthenticated => break,
            Ok(()) => {}
            Err(status) => panic!("{call:?}: unexpected {status:?}"),
        }
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "{call:?} still accepted the key {:?} later",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(since.elapsed() < Duration::from_secs(1), "{call:?}");
}

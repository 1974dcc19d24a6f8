//! Service-level tests: the real server on port 0, talked to with the
//! generated client, in front of fake registry, vector index and monitoring.

use std::time::{Duration, Instant};

use keel_core::{CancellationToken, Listeners};
use keel_models::ModelCatalog;
use keel_proto::v1 as pb;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use crate::test_support::{
    chain_spec, dead_address, FakeMonitoring, FakeRegistry, FakeVectorIndex, RunningServer,
};
use crate::{serve, Config, Error};

const TEMPLATE: &str =
    "Q: {{ question }}\n{% for c in contexts %}[{{ c.id }}] {{ c.text }}\n{% endfor %}";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

pub(crate) struct Serving {
    pub(crate) client: ServingServiceClient<Channel>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), Error>>,
    _dir: tempfile::TempDir,
}

impl Serving {
    async fn start(
        registry_url: String,
        vector_index_url: String,
        monitoring_url: String,
    ) -> Serving {
        Serving::start_with_catalog(
            registry_url,
            vector_index_url,
            monitoring_url,
            ModelCatalog::builtin(),
        )
        .await
    }

    pub(crate) async fn start_with_catalog(
        registry_url: String,
        vector_index_url: String,
        monitoring_url: String,
        catalog: ModelCatalog,
    ) -> Serving {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            port: 0,
            database_url: keel_store::default_sqlite_url(dir.path(), "serving"),
            registry_url,
            vector_index_url,
            monitoring_url,
            inference_flush_interval_ms: 20,
            delivery_attempts: 2,
            delivery_timeout_ms: 500,
            dependency_timeout_ms: 2000,
            ..Config::default()
        };
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = grpc.local_addr().unwrap();
        let listeners = Listeners { grpc, admin: None };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(config, catalog, listeners, shutdown.clone()));
        let client = ServingServiceClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        Serving {
            client,
            shutdown,
            task,
            _dir: dir,
        }
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .unwrap();
        result.unwrap().unwrap();
    }

    async fn stats(&self) -> pb::ServingStats {
        self.client
            .clone()
            .get_serving_stats(pb::GetServingStatsRequest {})
            .await
            .unwrap()
            .into_inner()
    }
}

/// A registry with a chain `bot` (v1 top_k 2, v2 top_k 1, @champion -> 1),
/// a prompt `qa` (@champion -> 1), a chain `broken` whose generator does not
/// exist, and a prompt-only model `notes`; and a vector index with `docs`.
pub(crate) struct World {
    pub(crate) registry: FakeRegistry,
    vector_index: FakeVectorIndex,
    pub(crate) monitoring: FakeMonitoring,
    registry_server: RunningServer,
    vector_index_server: RunningServer,
}

impl World {
    pub(crate) async fn start() -> World {
        // Spans and W3C trace context, as a service's binary installs them;
        // no exporter: these tests read the context the calls carry.
        let telemetry = keel_core::telemetry::TelemetryConfig {
            to_monitoring: false,
            ..Default::default()
        };
        keel_core::telemetry::init_quiet("keel-serving-tests", &telemetry).unwrap();
        let registry = FakeRegistry::new();
        registry.add_model("qa", pb::ModelKind::Prompt);
        let qa_version = registry.add_prompt_version("qa", TEMPLATE);
        registry.set_alias("qa", "champion", qa_version);
        registry.add_model("bot", pb::ModelKind::Chain);
        registry.add_chain_version("bot", chain_spec("docs", 2, "qa@champion", "extractive"));
        registry.add_chain_version("bot", chain_spec("docs", 1, "qa/1", "extractive"));
        registry.set_alias("bot", "champion", 1);
        registry.add_model("broken", pb::ModelKind::Chain);
        registry.add_chain_version(
            "broken",
            chain_spec("docs", 2, "qa@champion", "no-such-generator"),
        );
        registry.set_alias("broken", "champion", 1);
        registry.add_model("notes", pb::ModelKind::Prompt);

        let vector_index = FakeVectorIndex::default();
        let long_text = format!(
            "Keel routes traffic by weight between chain versions. {}",
            "x".repeat(400)
        );
        vector_index.add_collection(
            "docs",
            &[
                ("p1", 0.9, long_text.as_str()),
                (
                    "p2",
                    0.7,
                    "Feedback is joined with inference records by request id.",
                ),
                ("p3", 0.1, "Unrelated text about the weather."),
            ],
        );
        let registry_server = registry.start().await;
        let vector_index_server = vector_index.start().await;
        let monitoring = FakeMonitoring::start().await;
        World {
            registry,
            vector_index,
            monitoring,
            registry_server,
            vector_index_server,
        }
    }

    async fn serving(&self) -> Serving {
        Serving::start(
            self.registry_server.url(),
            self.vector_index_server.url(),
            self.monitoring.url(),
        )
        .await
    }

    pub(crate) async fn serving_with(&self, catalog: ModelCatalog) -> Serving {
        Serving::start_with_catalog(
            self.registry_server.url(),
            self.vector_index_server.url(),
            self.monitoring.url(),
            catalog,
        )
        .await
    }
}

pub(crate) fn route(target: &str, weight: u32) -> pb::Route {
    pb::Route {
        target: target.to_string(),
        weight,
    }
}

pub(crate) fn create(name: &str, routes: Vec<pb::Route>) -> pb::CreateEndpointRequest {
    pb::CreateEndpointRequest {
        name: name.to_string(),
        routes,
        description: format!("{name} endpoint"),
    }
}

pub(crate) fn ask(endpoint: &str, question: &str) -> pb::QueryRequest {
    pb::QueryRequest {
        endpoint: endpoint.to_string(),
        question: question.to_string(),
        ..pb::QueryRequest::default()
    }
}

pub(crate) async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn endpoint_lifecycle_and_registry_checks() {
    let world = World::start().await;
    let serving = world.serving().await;
    let mut client = serving.client.clone();

    let created = client
        .create_endpoint(create(
            "support",
            vec![route("bot@champion", 90), route("bot/2", 10)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.name, "support");
    assert_eq!(
        created.routes,
        vec![route("bot@champion", 90), route("bot/2", 10)]
    );
    assert!(created.created_at_ms > 0);
    assert_eq!(created.created_at_ms, created.updated_at_ms);

    let again = client
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);

    let cases = [
        (
            vec![route("ghost@champion", 1)],
            Code::NotFound,
            "ghost@champion",
        ),
        (vec![route("bot/9", 1)], Code::NotFound, "bot/9"),
        (
            vec![route("notes@champion", 1)],
            Code::FailedPrecondition,
            "CHAIN",
        ),
        (
            vec![route("bot@champion", 0)],
            Code::InvalidArgument,
            "field `routes`",
        ),
        (
            vec![route("bot", 1)],
            Code::InvalidArgument,
            "field `routes[0].target`",
        ),
    ];
    for (routes, code, message_part) in cases {
        let error = client
            .create_endpoint(create("other", routes))
            .await
            .unwrap_err();
        assert_eq!(error.code(), code, "{}", error.message());
        assert!(
            error.message().contains(message_part),
            "{}",
            error.message()
        );
    }
    // None of the refused creates left anything behind.
    assert_eq!(
        client
            .get_endpoint(pb::GetEndpointRequest {
                name: "other".to_string()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    client
        .create_endpoint(create("billing", vec![route("bot/1", 1)]))
        .await
        .unwrap();
    let listed = client
        .list_endpoints(pb::ListEndpointsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed
        .endpoints
        .iter()
        .map(|endpoint| endpoint.name.as_str())
        .collect();
    assert_eq!(names, ["billing", "support"]);

    let updated = client
        .update_endpoint(pb::UpdateEndpointRequest {
            name: "support".to_string(),
            routes: vec![route("bot@challenger", 5)],
            description: "canary".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.routes, vec![route("bot@challenger", 5)]);
    assert_eq!(updated.description, "canary");
    assert_eq!(updated.created_at_ms, created.created_at_ms);
    let fetched = client
        .get_endpoint(pb::GetEndpointRequest {
            name: "support".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, updated);

    let missing = client
        .update_endpoint(pb::UpdateEndpointRequest {
            name: "missing".to_string(),
            routes: vec![route("bot@champion", 1)],
            description: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().contains("endpoint `missing`"),
        "{}",
        missing.message()
    );

    client
        .delete_endpoint(pb::DeleteEndpointRequest {
            name: "support".to_string(),
        })
        .await
        .unwrap();
    let deleted_again = client
        .delete_endpoint(pb::DeleteEndpointRequest {
            name: "support".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(deleted_again.code(), Code::NotFound);
    serving.stop().await;
}

#[tokio::test]
async fn query_answers_with_citations_and_records_the_inference() {
    let world = World::start().await;
    let serving = world.serving().await;
    let mut client = serving.client.clone();
    client
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await
        .unwrap();

    let mut request = tonic::Request::new(pb::QueryRequest {
        user_id: "user-7".to_string(),
        session_id: "session-1".to_string(),
        ..ask("support", "How does Keel route traffic?")
    });
    request
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    let response = client.query(request).await.unwrap().into_inner();

    assert!(
        response.answer.contains("Keel routes traffic by weight"),
        "{}",
        response.answer
    );
    assert!(response.answer.contains("[p1]"), "{}", response.answer);
    let cited: Vec<&str> = response
        .citations
        .iter()
        .map(|c| c.point_id.as_str())
        .collect();
    assert_eq!(cited, ["p1", "p2"]);
    assert_eq!(response.citations[0].text.chars().count(), 300);
    assert_eq!(response.citations[0].score, 0.9);
    assert_eq!(response.served_model, "bot");
    assert_eq!(response.served_version, 1);
    assert_eq!(response.route_target, "bot@champion");
    assert_eq!(response.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    let request_id = uuid::Uuid::parse_str(&response.request_id).unwrap();
    assert_eq!(request_id.get_version_num(), 7);
    let usage = response.usage.unwrap();
    assert!(
        usage.input_tokens > 0 && usage.output_tokens > 0,
        "{usage:?}"
    );
    assert!(response.latency_ms > 0.0);

    // The trace went on to the vector index as a child span of the same trace.
    let seen = world.vector_index.traceparents();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{}",
        seen[0]
    );
    assert_ne!(seen[0], TRACEPARENT);

    let record = eventually("the inference record", async || {
        world.monitoring.record(&response.request_id)
    })
    .await;
    assert_eq!(record.status, pb::InferenceStatus::Ok as i32);
    assert_eq!(record.endpoint, "support");
    assert_eq!(record.route_target, "bot@champion");
    assert_eq!(record.served_model, "bot");
    assert_eq!(record.served_version, 1);
    assert_eq!(record.user_id, "user-7");
    assert_eq!(record.session_id, "session-1");
    assert_eq!(record.question, "How does Keel route traffic?");
    assert_eq!(record.trace_id, response.trace_id);
    assert_eq!(record.generator, "extractive");
    assert_eq!(record.answer, response.answer);
    assert_eq!(record.error, "");
    // Records keep whole passages, responses only snippets.
    assert!(record.contexts[0].text.chars().count() > 400);
    assert_eq!(record.prompt_messages.len(), 1);
    assert_eq!(record.prompt_messages[0].role, "user");
    assert!(
        record.prompt_messages[0]
            .content
            .starts_with("Q: How does Keel route traffic?\n[p1] Keel routes"),
        "{}",
        record.prompt_messages[0].content
    );

    // A conversation: the last user message is the question.
    let conversation = client
        .query(pb::QueryRequest {
            endpoint: "support".to_string(),
            messages: vec![
                pb::ChatMessage {
                    role: "system".to_string(),
                    content: "Be brief.".to_string(),
                },
                pb::ChatMessage {
                    role: "user".to_string(),
                    content: "How are feedback and inference records joined?".to_string(),
                },
            ],
            ..pb::QueryRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        conversation.answer.contains("[p2]"),
        "{}",
        conversation.answer
    );
    assert_eq!(conversation.trace_id.len(), 32);
    assert_ne!(conversation.trace_id, response.trace_id);
    let conversation_record = eventually("the conversation record", async || {
        world.monitoring.record(&conversation.request_id)
    })
    .await;
    assert_eq!(conversation_record.input_messages.len(), 2);
    assert_eq!(
        conversation_record.question,
        "How are feedback and inference records joined?"
    );

    let invalid = client.query(ask("support", "")).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("field `question`"),
        "{}",
        invalid.message()
    );

    let stats = eventually("delivery of both records", async || {
        let stats = serving.stats().await;
        (stats.records_delivered == 2).then_some(stats)
    })
    .await;
    assert_eq!(stats.records_enqueued, 2);
    assert_eq!(stats.queue_depth, 0);
    serving.stop().await;
}

#[tokio::test]
async fn moving_champion_changes_the_answer_within_a_second() {
    let world = World::start().await;
    let serving = world.serving().await;
    let mut client = serving.client.clone();
    client
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await
        .unwrap();
    eventually("the alias watch", async || {
        (world.registry.watchers() > 0).then_some(())
    })
    .await;

    let first = client
        .query(ask("support", "How does Keel route traffic?"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.served_version, 1);
    assert_eq!(first.citations.len(), 2);
    // Served from the cache now: no further registry lookups.
    let lookups = world.registry.resolve_calls();
    client
        .query(ask("support", "How does Keel route traffic?"))
        .await
        .unwrap();
    assert_eq!(world.registry.resolve_calls(), lookups);

    world.registry.set_alias("bot", "champion", 2);
    let moved_at = Instant::now();
    let moved = eventually("the new champion", async || {
        let response = client
            .query(ask("support", "How does Keel route traffic?"))
            .await
            .unwrap()
            .into_inner();
        (response.served_version == 2).then_some(response)
    })
    .await;
    assert!(
        moved_at.elapsed() < Duration::from_secs(1),
        "took {:?}",
        moved_at.elapsed()
    );
    assert_eq!(moved.citations.len(), 1);
    assert_eq!(moved.route_target, "bot@champion");
    serving.stop().await;
}

#[tokio::test]
async fn failed_queries_are_recorded_with_their_error() {
    let world = World::start().await;
    let serving = world.serving().await;
    let mut client = serving.client.clone();
    client
        .create_endpoint(create("broken", vec![route("broken@champion", 1)]))
        .await
        .unwrap();
    client
        .create_endpoint(create("unaliased", vec![route("bot@staging", 1)]))
        .await
        .unwrap();

    let unknown = client.query(ask("nowhere", "hello?")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("endpoint `nowhere`"),
        "{}",
        unknown.message()
    );

    let no_generator = client.query(ask("broken", "hello?")).await.unwrap_err();
    assert_eq!(no_generator.code(), Code::FailedPrecondition);
    assert!(
        no_generator.message().contains("no-such-generator"),
        "{}",
        no_generator.message()
    );

    let no_alias = client.query(ask("unaliased", "hello?")).await.unwrap_err();
    assert_eq!(no_alias.code(), Code::NotFound);
    assert!(
        no_alias.message().contains("bot@staging"),
        "{}",
        no_alias.message()
    );

    let records = eventually("three error records", async || {
        let records = world.monitoring.records();
        (records.len() == 3).then_some(records)
    })
    .await;
    for record in &records {
        assert_eq!(record.status, pb::InferenceStatus::Error as i32);
        assert!(!record.error.is_empty());
        assert_eq!(record.question, "hello?");
    }
    let broken = records
        .iter()
        .find(|record| record.endpoint == "broken")
        .unwrap();
    assert_eq!(broken.route_target, "broken@champion");
    assert_eq!(broken.served_model, "broken");
    assert_eq!(broken.generator, "no-such-generator");
    assert!(
        broken.error.contains("no-such-generator"),
        "{}",
        broken.error
    );
    serving.stop().await;
}

#[tokio::test]
async fn a_dead_monitoring_never_fails_queries() {
    let world = World::start().await;
    let serving = Serving::start(
        world.registry_server.url(),
        world.vector_index_server.url(),
        format!("http://{}", dead_address()),
    )
    .await;
    let mut client = serving.client.clone();
    client
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await
        .unwrap();
    for _ in 0..5 {
        let response = client
            .query(ask("support", "How does Keel route traffic?"))
            .await
            .unwrap();
        assert_eq!(response.into_inner().served_version, 1);
    }
    let stats = eventually("failed deliveries", async || {
        let stats = serving.stats().await;
        (stats.records_failed_delivery == 5).then_some(stats)
    })
    .await;
    assert_eq!(stats.records_enqueued, 5);
    assert_eq!(stats.records_delivered, 0);
    assert_eq!(stats.queue_depth, 0);
    serving.stop().await;
}

#[tokio::test]
async fn unreachable_dependencies_are_unavailable() {
    let world = World::start().await;
    let without_registry = Serving::start(
        format!("http://{}", dead_address()),
        world.vector_index_server.url(),
        world.monitoring.url(),
    )
    .await;
    let error = without_registry
        .client
        .clone()
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{}", error.message());
    assert!(error.message().contains("registry"), "{}", error.message());
    without_registry.stop().await;

    let without_index = Serving::start(
        world.registry_server.url(),
        format!("http://{}", dead_address()),
        world.monitoring.url(),
    )
    .await;
    let mut client = without_index.client.clone();
    client
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await
        .unwrap();
    let error = client
        .query(ask("support", "How does Keel route traffic?"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{}", error.message());
    assert!(
        error.message().contains("vector-index"),
        "{}",
        error.message()
    );
    let record = eventually("the error record", async || {
        world.monitoring.records().pop()
    })
    .await;
    assert_eq!(record.status, pb::InferenceStatus::Error as i32);
    assert_eq!(record.served_version, 1);
    without_index.stop().await;
}

#[tokio::test]
async fn admin_serves_health_and_metrics() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        database_url: keel_store::default_sqlite_url(dir.path(), "serving"),
        registry_url: format!("http://{}", dead_address()),
        vector_index_url: format!("http://{}", dead_address()),
        monitoring_url: format!("http://{}", dead_address()),
        ..Config::default()
    };
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_address = grpc.local_addr().unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_address = admin.local_addr().unwrap();
    let listeners = Listeners {
        grpc,
        admin: Some(admin),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        config,
        ModelCatalog::builtin(),
        listeners,
        shutdown.clone(),
    ));
    let mut client = ServingServiceClient::connect(format!("http://{grpc_address}"))
        .await
        .unwrap();
    let missing = client.query(ask("nowhere", "hi?")).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let get = async |path: &str| -> String {
        let mut stream = tokio::net::TcpStream::connect(admin_address).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let health = get("/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = get("/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let expected = [
        // The failed query was recorded, and counted.
        "\nkeel_serving_inference_records_enqueued_total{service=\"serving\"} 1\n",
        // Under one label: names callers make up must not grow the series.
        "\nkeel_serving_queries_total{endpoint=\"unknown\",status=\"error\",service=\"serving\"} 1\n",
        // Every call, by method and status code, and timed.
        "\nkeel_grpc_server_handled_total{grpc_code=\"NotFound\",grpc_method=\"Query\",grpc_service=\"keel.v1.ServingService\",service=\"serving\"} 1\n",
        "\nkeel_grpc_server_handling_seconds_count{grpc_code=\"NotFound\",grpc_method=\"Query\",grpc_service=\"keel.v1.ServingService\",service=\"serving\"} 1\n",
        "\nkeel_serving_generation_queue_depth{service=\"serving\"} 0\n",
        "\nkeel_db_pool_connections_max{service=\"serving\"} 4\n",
    ];
    for series in expected {
        assert!(metrics.contains(series), "{series} missing from {metrics}");
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

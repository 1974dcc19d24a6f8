//! Endpoints and queries through the real serving server on port 0, in
//! front of fake registry, vector index and monitoring.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use keel_models::ModelCatalog;
use keel_proto::v1 as pb;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_serving::{serve, Config};
use keel_testkit::server::Ports;
use keel_testkit::{assert_status, dead_address, eventually, http_get, TestDatabase, TestServer};
use tonic::Code;

use support::{ask, create, route, Serving, World, PATIENCE};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

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
        assert_status(
            message_part,
            client.create_endpoint(create("other", routes)).await,
            code,
            &[message_part],
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
            shadow: None,
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
            shadow: None,
        })
        .await;
    assert_status(
        "update of a missing endpoint",
        missing,
        Code::NotFound,
        &["endpoint `missing`"],
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

    let record = eventually("the inference record", PATIENCE, async || {
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
    let conversation_record = eventually("the conversation record", PATIENCE, async || {
        world.monitoring.record(&conversation.request_id)
    })
    .await;
    assert_eq!(conversation_record.input_messages.len(), 2);
    assert_eq!(
        conversation_record.question,
        "How are feedback and inference records joined?"
    );

    assert_status(
        "an empty question",
        client.query(ask("support", "")).await,
        Code::InvalidArgument,
        &["field `question`"],
    );

    let stats = eventually("delivery of both records", PATIENCE, async || {
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
    eventually("the alias watch", PATIENCE, async || {
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
    let moved = eventually("the new champion", PATIENCE, async || {
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

/// Evaluation asks for one chain version whatever the endpoint's routes
/// say, and for whole passages; the answer's cost follows the configured
/// price.
#[tokio::test]
async fn a_query_can_name_its_target_and_ask_for_whole_passages() {
    let world = World::start().await;
    let price = keel_serving::metrics::ModelPrice {
        input_per_million_tokens: 2.0,
        output_per_million_tokens: 6.0,
    };
    let serving = world
        .serving_adjusted(|config| {
            config.prices.insert("extractive".to_string(), price);
        })
        .await;
    let mut client = serving.client.clone();
    client
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await
        .unwrap();
    let question = "How does Keel route traffic?";

    let routed = client
        .query(ask("support", question))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((routed.served_version, routed.citations.len()), (1, 2));
    assert_eq!(routed.citations[0].text.chars().count(), 300, "a snippet");

    let pinned = pb::QueryRequest {
        target: "bot/2".to_string(),
        full_citation_text: true,
        ..ask("support", question)
    };
    let answer = client.query(pinned).await.unwrap().into_inner();
    assert_eq!(answer.route_target, "bot/2");
    assert_eq!((answer.served_version, answer.citations.len()), (2, 1));
    assert!(
        answer.citations[0].text.chars().count() > 400,
        "the whole passage"
    );
    let usage = answer.usage.unwrap();
    let expected_cost =
        (f64::from(usage.input_tokens) * 2.0 + f64::from(usage.output_tokens) * 6.0) / 1_000_000.0;
    assert!(usage.input_tokens > 0);
    assert!(
        (answer.cost_usd - expected_cost).abs() < 1e-15,
        "{}",
        answer.cost_usd
    );

    let record = eventually("the pinned query's record", PATIENCE, async || {
        let records = world.monitoring.records();
        records
            .into_iter()
            .find(|record| record.request_id == answer.request_id)
    })
    .await;
    assert_eq!(record.route_target, "bot/2");
    assert_eq!(record.served_version, 2);

    let refused = [
        ("support", "bot@@2", Code::InvalidArgument, "target"),
        ("support", "bot/9", Code::NotFound, "bot/9"),
        ("nowhere", "bot/2", Code::NotFound, "endpoint `nowhere`"),
    ];
    for (endpoint, target, code, needle) in refused {
        let request = pb::QueryRequest {
            target: target.to_string(),
            ..ask(endpoint, question)
        };
        assert_status(needle, client.query(request).await, code, &[needle]);
    }
    serving.stop().await;
}

/// A chain without a collection is a gateway route to its generator: the
/// vector index is never asked, the prompt is rendered without passages
/// and the answer has no citations.
#[tokio::test]
async fn a_chain_without_retrieval_never_searches() {
    let world = World::start().await;
    let serving = world.serving().await;
    let mut client = serving.client.clone();
    client
        .create_endpoint(create("gateway", vec![route("direct@champion", 1)]))
        .await
        .unwrap();
    let searches_before = world.vector_index.searches();
    let answer = client
        .query(ask("gateway", "How does Keel route traffic?"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.route_target, "direct@champion");
    assert_eq!(answer.served_model, "direct");
    assert!(answer.citations.is_empty(), "{:?}", answer.citations);
    assert_eq!(
        answer.answer,
        "I could not find an answer in the retrieved documents."
    );
    assert_eq!(world.vector_index.searches(), searches_before);

    // The same question through a retrieving chain does search.
    client
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await
        .unwrap();
    client
        .query(ask("support", "How does Keel route traffic?"))
        .await
        .unwrap();
    assert_eq!(world.vector_index.searches(), searches_before + 1);
    serving.stop().await;
}

/// Shadow traffic in front of fakes: a pinned (evaluation) query is never
/// mirrored, an unknown shadow model is refused, and removing the shadow
/// stops the mirroring.
#[tokio::test]
async fn shadow_answers_are_recorded_never_returned_and_only_for_live_queries() {
    let world = World::start().await;
    let serving = world.serving().await;
    let mut client = serving.client.clone();
    let mut request = create("support", vec![route("bot@champion", 1)]);
    request.shadow = Some(pb::Shadow {
        target: "ghost/1".to_string(),
        percent: 100,
    });
    assert_status(
        "a shadow on an unknown model",
        client.create_endpoint(request.clone()).await,
        Code::NotFound,
        &["ghost"],
    );
    request.shadow = Some(pb::Shadow {
        target: "bot/2".to_string(),
        percent: 100,
    });
    let created = client.create_endpoint(request).await.unwrap().into_inner();
    assert_eq!(created.shadow.unwrap().target, "bot/2");
    let question = "How does Keel route traffic?";

    let live = client
        .query(ask("support", question))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(live.served_version, 1);
    let pinned = pb::QueryRequest {
        target: "bot/1".to_string(),
        ..ask("support", question)
    };
    let pinned = client.query(pinned).await.unwrap().into_inner();
    let records = eventually(
        "the live, shadow and pinned records",
        PATIENCE,
        async || {
            let records = world.monitoring.records();
            (records.len() == 3).then_some(records)
        },
    )
    .await;
    let shadows: Vec<&pb::InferenceRecord> = records
        .iter()
        .filter(|record| !record.shadow_of.is_empty())
        .collect();
    assert_eq!(shadows.len(), 1, "only the live query is mirrored");
    assert_eq!(shadows[0].shadow_of, live.request_id);
    assert_eq!(shadows[0].served_version, 2);
    assert!(records
        .iter()
        .any(|record| record.request_id == pinned.request_id && record.shadow_of.is_empty()));

    client
        .update_endpoint(pb::UpdateEndpointRequest {
            name: "support".to_string(),
            routes: vec![route("bot@champion", 1)],
            description: String::new(),
            shadow: None,
        })
        .await
        .unwrap();
    client.query(ask("support", question)).await.unwrap();
    eventually("the unmirrored query's record", PATIENCE, async || {
        (world.monitoring.records().len() == 4).then_some(())
    })
    .await;
    // Give a stray shadow answer time to show; none may.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(world.monitoring.records().len(), 4);
    serving.stop().await;
}

/// A move whose announcement never arrived (the watch is connected, but
/// the registry replica it follows missed the move) is picked up once the
/// cached resolution expires, and not before.
#[tokio::test]
async fn an_unannounced_alias_move_is_served_after_the_resolver_ttl() {
    let world = World::start().await;
    let serving = world
        .serving_adjusted(|config| config.resolver_ttl_ms = 1500)
        .await;
    let mut client = serving.client.clone();
    client
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await
        .unwrap();
    eventually("the alias watch", PATIENCE, async || {
        (world.registry.watchers() > 0).then_some(())
    })
    .await;
    let question = "How does Keel route traffic?";
    let first = client.query(ask("support", question)).await.unwrap();
    assert_eq!(first.into_inner().served_version, 1);

    world.registry.set_alias_silently("bot", "champion", 2);
    let moved_at = Instant::now();
    let still_cached = client.query(ask("support", question)).await.unwrap();
    if moved_at.elapsed() < Duration::from_millis(1000) {
        assert_eq!(still_cached.into_inner().served_version, 1);
    }
    eventually("the silently moved champion", PATIENCE, async || {
        let response = client.query(ask("support", question)).await.unwrap();
        (response.into_inner().served_version == 2).then_some(())
    })
    .await;
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

    assert_status(
        "an unknown endpoint",
        client.query(ask("nowhere", "hello?")).await,
        Code::NotFound,
        &["endpoint `nowhere`"],
    );

    assert_status(
        "an unknown generator",
        client.query(ask("broken", "hello?")).await,
        Code::FailedPrecondition,
        &["no-such-generator"],
    );

    assert_status(
        "an unset alias",
        client.query(ask("unaliased", "hello?")).await,
        Code::NotFound,
        &["bot@staging"],
    );

    let records = eventually("three error records", PATIENCE, async || {
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
async fn a_dead_monitoring_never_fails_queries_and_their_records_wait() {
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
    let stats = eventually("records spilled", PATIENCE, async || {
        let stats = serving.stats().await;
        (stats.spill_bytes > 100).then_some(stats)
    })
    .await;
    assert_eq!(stats.records_enqueued, 5);
    assert_eq!(stats.queue_depth, 5);
    assert_eq!(stats.records_delivered, 0);
    assert_eq!(
        stats.records_failed_delivery + stats.records_dropped_disk_budget,
        0
    );
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
    let created = without_registry
        .client
        .clone()
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await;
    assert_status(
        "a create without the registry",
        created,
        Code::Unavailable,
        &["registry"],
    );
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
    assert_status(
        "a query without the vector index",
        client
            .query(ask("support", "How does Keel route traffic?"))
            .await,
        Code::Unavailable,
        &["vector-index"],
    );
    let record = eventually("the error record", PATIENCE, async || {
        world.monitoring.records().pop()
    })
    .await;
    assert_eq!(record.status, pb::InferenceStatus::Error as i32);
    assert_eq!(record.served_version, 1);
    without_index.stop().await;
}

#[tokio::test]
async fn admin_serves_health_and_metrics() {
    let database = TestDatabase::sqlite();
    let spill = tempfile::tempdir().unwrap();
    let config = Config {
        database_url: database.url.clone(),
        spill_dir: spill.path().display().to_string(),
        registry_url: format!("http://{}", dead_address()),
        vector_index_url: format!("http://{}", dead_address()),
        monitoring_url: format!("http://{}", dead_address()),
        ..Config::default()
    };
    let server = TestServer::start(Ports::GrpcAndAdmin, |listeners, shutdown| {
        serve(config, ModelCatalog::builtin(), listeners, shutdown)
    })
    .await;
    let admin_address = server.admin_address();
    let mut client = ServingServiceClient::new(server.connect().await);
    let missing = client.query(ask("nowhere", "hi?")).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let get = async |path: &str| http_get(admin_address, path).await;
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

    server.stop().await.unwrap();
}

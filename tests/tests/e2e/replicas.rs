//! Scaled out on Postgres: two registry replicas and two serving replicas,
//! each serving following a different registry. An alias move made on
//! either registry changes what both servings answer within a second.

use std::time::{Duration, Instant};

use keel_core::channel::ServiceChannel;
use keel_proto::v1::registry_service_client::RegistryServiceClient;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_proto::v1::{QueryResponse, SetAliasRequest};
use keel_testkit::server::Ports;
use keel_testkit::TestServer;
use keel_tests::fixtures::{self, CHAIN_MODEL, ENDPOINT, REFUND_QUESTION};
use keel_tests::{auth_config, eventually, keyed_channel, Backend, Cluster, Storage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_move_on_either_registry_reaches_every_serving_replica() {
    let storage = Storage::fresh(Backend::Postgres).await;
    // Cluster one: registry A, and serving A following it.
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;

    // Registry B and serving B on the same databases; serving B follows B.
    let config = storage.config();
    let registry_config = keel_registry::Config {
        auth: auth_config(""),
        ..config.registry.clone()
    };
    let registry_b = TestServer::start(Ports::GrpcOnly, |listeners, shutdown| {
        keel_registry::serve(registry_config, listeners, shutdown)
    })
    .await;
    let spill = tempfile::tempdir().unwrap();
    let serving_config = keel_serving::Config {
        port: 0,
        registry_url: registry_b.url(),
        vector_index_url: cluster
            .keel
            .grpc_url(keel_tests::cluster::Service::VectorIndex),
        monitoring_url: cluster
            .keel
            .grpc_url(keel_tests::cluster::Service::Monitoring),
        spill_dir: spill.path().display().to_string(),
        auth: auth_config(&registry_b.url()),
        ..config.serving.clone()
    };
    let serving_b = TestServer::start(Ports::GrpcOnly, |listeners, shutdown| {
        keel_serving::serve(
            serving_config,
            keel_models::ModelCatalog::builtin(),
            listeners,
            shutdown,
        )
    })
    .await;
    let mut registry_b_client = RegistryServiceClient::new(keyed_channel(&registry_b.url()));
    let servings = [
        ("serving A", cluster.serving.clone()),
        (
            "serving B",
            ServingServiceClient::new(keyed_channel(&serving_b.url())),
        ),
    ];
    for (name, serving) in &servings {
        let answer = ask(serving.clone()).await;
        assert_eq!(answer.served_version, 1, "{name} before any move");
    }

    // Moved on registry B: serving A (following registry A) sees it too.
    let moved_at = Instant::now();
    registry_b_client
        .set_alias(champion(2, 1))
        .await
        .unwrap_or_else(|status| panic!("moving @champion on registry B: {status}"));
    wait_for_version(&servings, 2, moved_at).await;

    // And back, moved on registry A: serving B sees it.
    let moved_at = Instant::now();
    cluster
        .registry
        .clone()
        .set_alias(champion(1, 2))
        .await
        .unwrap_or_else(|status| panic!("moving @champion on registry A: {status}"));
    wait_for_version(&servings, 1, moved_at).await;

    // Both registries tell the same history, in the same order.
    let history = |mut client: RegistryServiceClient<ServiceChannel>| async move {
        client
            .list_alias_history(keel_proto::v1::ListAliasHistoryRequest {
                model: CHAIN_MODEL.to_string(),
                alias: "champion".to_string(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .iter()
            .map(|event| {
                (
                    event.previous_version,
                    event.new_version,
                    event.actor.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let expected = vec![
        (0, 1, "e2e".to_string()),
        (1, 2, "replica-test".to_string()),
        (2, 1, "replica-test".to_string()),
    ];
    assert_eq!(history(cluster.registry.clone()).await, expected);
    assert_eq!(history(registry_b_client).await, expected);

    serving_b.stop().await.expect("serving B stops cleanly");
    registry_b.stop().await.expect("registry B stops cleanly");
    cluster.shutdown().await;
}

fn champion(version: u32, expected: u32) -> SetAliasRequest {
    SetAliasRequest {
        model: CHAIN_MODEL.to_string(),
        alias: "champion".to_string(),
        version,
        expected_current_version: Some(expected),
        actor: "replica-test".to_string(),
        reason: format!("move to v{version}"),
        override_gate: false,
    }
}

async fn ask(mut serving: ServingServiceClient<ServiceChannel>) -> QueryResponse {
    serving
        .query(fixtures::query_request(
            ENDPOINT,
            REFUND_QUESTION.text,
            "dave",
        ))
        .await
        .unwrap_or_else(|status| panic!("query: {status}"))
        .into_inner()
}

/// Every serving answers `version` within a second of the move.
async fn wait_for_version(
    servings: &[(&str, ServingServiceClient<ServiceChannel>)],
    version: u32,
    moved_at: Instant,
) {
    for (name, serving) in servings {
        eventually(
            &format!("{name} to serve v{version} after the move"),
            Duration::from_secs(1).saturating_sub(moved_at.elapsed()),
            || {
                let serving = serving.clone();
                async move { (ask(serving).await.served_version == version).then_some(()) }
            },
        )
        .await;
    }
    assert!(
        moved_at.elapsed() < Duration::from_secs(1),
        "took {:?}",
        moved_at.elapsed()
    );
}

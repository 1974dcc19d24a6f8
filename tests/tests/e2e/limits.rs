//! Limits exact across replicas: three serving replicas share one counter
//! store (Redis, or Postgres), 50 clients per replica send queries with
//! one API key until they are refused. Admitted requests never exceed the
//! 600-per-minute rate (its burst plus what refilled while the test ran),
//! and the tokens answers used never exceed the day's budget by more than
//! one query's reservation. Counters in each process (the `memory` store)
//! would admit three times the rate: the test would catch that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_proto::v1::CreateApiKeyRequest;
use keel_serving::limits::{LimitRule, LimitStore, LimitsConfig};
use keel_testkit::server::Ports;
use keel_testkit::TestServer;
use keel_tests::cluster::Service;
use keel_tests::fixtures::{self, ENDPOINT, REFUND_QUESTION};
use keel_tests::{auth_config, channel_presenting, Backend, Cluster, Storage};
use tonic::Code;

const RATE_KEY: &str = "rate-client";
const BUDGET_KEY: &str = "budget-client";
const REQUESTS_PER_MINUTE: u64 = 600;
const TOKENS_PER_DAY: u64 = 30_000;
const REPLICAS: usize = 3;
const CLIENTS_PER_REPLICA: usize = 50;

fn limits(store: LimitStore, prefix: &str, postgres_url: &str) -> LimitsConfig {
    LimitsConfig {
        store,
        postgres_url: postgres_url.to_string(),
        redis_url: keel_testkit::database::test_redis_url(),
        // Redis keeps its keys across runs: each run counts afresh.
        prefix: prefix.to_string(),
        rules: vec![
            LimitRule {
                key: Some(RATE_KEY.to_string()),
                requests_per_minute: Some(REQUESTS_PER_MINUTE),
                ..LimitRule::default()
            },
            LimitRule {
                key: Some(BUDGET_KEY.to_string()),
                tokens_per_day: Some(TOKENS_PER_DAY),
                ..LimitRule::default()
            },
        ],
        ..LimitsConfig::default()
    }
}

/// What one key's clients saw.
#[derive(Debug, Default)]
struct Tally {
    /// Answered, or failed after the limits let them through (a
    /// dependency too slow under this load): either way charged.
    admitted: u64,
    /// Prompt plus answer tokens of the admitted queries, as answered.
    tokens_used: u64,
    refusals: u64,
    elapsed: Duration,
}

async fn limits_hold_across_replicas(store: LimitStore) {
    // The replicas share serving's SQLite file; only the counters are in
    // the store under test (so the test holds few Postgres connections).
    let storage = Storage::fresh(Backend::Sqlite).await;
    // Redis keeps its keys across runs: each run counts under its own prefix.
    let prefix = format!("keel-limits-test-{}", uuid::Uuid::new_v4().simple());
    let counters = keel_store::testing::fresh_postgres_database()
        .await
        .unwrap();
    let cluster = Cluster::start_with(&storage, |config| {
        config.serving.limits = limits(store, &prefix, &counters);
    })
    .await;
    fixtures::setup_application(&cluster).await;
    let mut urls = vec![cluster.keel.grpc_url(Service::Serving)];
    let mut replicas = Vec::new();
    let mut spill_dirs = Vec::new();
    for _ in 1..REPLICAS {
        let spill = tempfile::tempdir().unwrap();
        let config = keel_serving::Config {
            port: 0,
            database_url: keel_store::default_sqlite_url(
                &storage.config().common.data_dir,
                "serving",
            ),
            registry_url: cluster.keel.grpc_url(Service::Registry),
            vector_index_url: cluster.keel.grpc_url(Service::VectorIndex),
            monitoring_url: cluster.keel.grpc_url(Service::Monitoring),
            feedback_url: cluster.keel.grpc_url(Service::Feedback),
            spill_dir: spill.path().display().to_string(),
            auth: auth_config(&cluster.keel.grpc_url(Service::Registry)),
            ..storage.config().serving.clone()
        };
        let config = keel_serving::Config {
            limits: limits(store, &prefix, &counters),
            ..config
        };
        let replica = TestServer::start(Ports::GrpcOnly, |listeners, shutdown| {
            keel_serving::serve(
                config,
                keel_models::ModelCatalog::builtin(),
                listeners,
                shutdown,
            )
        })
        .await;
        urls.push(replica.url());
        replicas.push(replica);
        spill_dirs.push(spill);
    }
    let rate_secret = create_key(&cluster, RATE_KEY).await;
    let budget_secret = create_key(&cluster, BUDGET_KEY).await;

    let rate = run_clients(&urls, &rate_secret).await;
    let refill = (rate.elapsed.as_secs_f64() * REQUESTS_PER_MINUTE as f64 / 60.0).ceil() as u64;
    assert!(
        rate.admitted >= REQUESTS_PER_MINUTE && rate.admitted <= REQUESTS_PER_MINUTE + refill + 1,
        "{store:?}: {rate:?}: admitted must be the burst of {REQUESTS_PER_MINUTE} plus at most {refill} refilled"
    );
    assert_eq!(rate.refusals, (REPLICAS * CLIENTS_PER_REPLICA) as u64);

    let budget = run_clients(&urls, &budget_secret).await;
    // One query's reservation: its prompt's estimate plus the default cap
    // on the answer; every prompt here is under 2 KiB.
    let one_reservation = u64::from(keel_serving::limits::estimate_input_tokens(
        &"x".repeat(2048),
    )) + u64::from(LimitsConfig::default().default_max_output_tokens());
    assert!(
        budget.tokens_used <= TOKENS_PER_DAY + one_reservation,
        "{store:?}: {budget:?}: used beyond the budget by more than one reservation ({one_reservation})"
    );
    assert!(budget.admitted > 0 && budget.refusals > 0, "{budget:?}");

    for replica in replicas {
        replica.stop().await.expect("a replica stops cleanly");
    }
    cluster.shutdown().await;
}

async fn create_key(cluster: &Cluster, name: &str) -> String {
    cluster
        .registry
        .clone()
        .create_api_key(CreateApiKeyRequest {
            name: name.to_string(),
            scopes: vec!["query:*".to_string()],
            expires_at_ms: 0,
            actor: "e2e".to_string(),
        })
        .await
        .unwrap_or_else(|status| panic!("creating key {name}: {status}"))
        .into_inner()
        .secret
}

/// Every client queries until it is first refused, then stops.
async fn run_clients(urls: &[String], secret: &str) -> Tally {
    let admitted = Arc::new(AtomicU64::new(0));
    let tokens_used = Arc::new(AtomicU64::new(0));
    let refusals = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for url in urls {
        for client in 0..CLIENTS_PER_REPLICA {
            let mut serving = ServingServiceClient::new(channel_presenting(url, Some(secret)));
            let (admitted, tokens_used, refusals) =
                (admitted.clone(), tokens_used.clone(), refusals.clone());
            clients.push(tokio::spawn(async move {
                loop {
                    let request = fixtures::query_request(
                        ENDPOINT,
                        REFUND_QUESTION.text,
                        &format!("client-{client}"),
                    );
                    match serving.query(request).await {
                        Ok(response) => {
                            let response = response.into_inner();
                            admitted.fetch_add(1, Ordering::SeqCst);
                            tokens_used.fetch_add(
                                response.usage.map_or(0, |usage| {
                                    u64::from(usage.input_tokens + usage.output_tokens)
                                }),
                                Ordering::SeqCst,
                            );
                        }
                        Err(status) if status.message().contains("limits cannot be checked") => {
                            panic!("the counters' store failed: {status}");
                        }
                        Err(status)
                            if status.code() != Code::ResourceExhausted
                                || !status.message().starts_with("limit reached") =>
                        {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(status) => {
                            let retry_after: u64 = status
                                .metadata()
                                .get("retry-after")
                                .unwrap()
                                .to_str()
                                .unwrap()
                                .parse()
                                .unwrap();
                            assert!(retry_after >= 1, "{status}");
                            refusals.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }));
        }
    }
    for client in clients {
        tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .expect("a client is refused within two minutes")
            .expect("a client task panicked");
    }
    Tally {
        admitted: admitted.load(Ordering::SeqCst),
        tokens_used: tokens_used.load(Ordering::SeqCst),
        refusals: refusals.load(Ordering::SeqCst),
        elapsed: started.elapsed(),
    }
}

/// One store after the other: 300 clients at once would measure this
/// machine's two cores more than the counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_replicas_on_redis_and_on_postgres() {
    limits_hold_across_replicas(LimitStore::Redis).await;
    limits_hold_across_replicas(LimitStore::Postgres).await;
}

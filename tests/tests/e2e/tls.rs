//! TLS on every hop: a Keel whose listeners present a certificate from a
//! CA made for the test, whose services call each other over TLS trusting
//! only that CA, whose remote generator is an HTTPS server, and (on
//! Postgres) whose stores connect with `sslmode=verify-full`. Clients that
//! speak plaintext, or trust another CA, are turned away.

use std::sync::Arc;
use std::time::Duration;

use keel_core::tls::ClientTls;
use keel_models::{ModelCatalog, OpenAiConfig, OpenAiGenerator};
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_proto::v1::{
    FeedbackKind, GeneratorSpec, GetInferenceRequest, ListEndpointsRequest, SubmitFeedbackRequest,
};
use keel_testkit::fakes::FakeOpenAi;
use keel_testkit::{eventually, PostgresTlsFront, TestCa};
use keel_tests::cluster::Service;
use keel_tests::fixtures::{self, REFUND_QUESTION};
use keel_tests::{channel_trusting, on_both_backends, Backend, Cluster, Storage, MASTER_KEY};
use tonic::Code;

const REMOTE_ANSWER: &str = "Refunds are accepted within 30 days of purchase.";

async fn every_hop_speaks_tls(backend: Backend) {
    keel_core::crypto::install_default_tls_provider();
    let ca = TestCa::new();
    let storage = Storage::fresh(backend).await;
    let front = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(
            PostgresTlsFront::start(&ca.server(), &keel_store::testing::test_postgres_url()).await,
        ),
    };
    let remote = FakeOpenAi::answering_over_tls(REMOTE_ANSWER, ca.server()).await;
    assert!(remote.base_url().starts_with("https://"));
    let mut catalog = ModelCatalog::builtin();
    let generator = OpenAiGenerator::with_api_key(
        OpenAiConfig {
            base_url: remote.base_url(),
            model: "gpt-4o-mini".to_string(),
            ca_path: Some(ca.ca_path()),
            ..OpenAiConfig::default()
        },
        None,
    )
    .unwrap()
    .named("openai");
    catalog.add_generator("openai", Arc::new(generator));
    let mut config = storage.config();
    config.tls = ca.tls_config();
    if let Some(front) = &front {
        for url in config.database_urls_mut() {
            *url = front.url(url, "verify-full", &ca.ca_path());
        }
    }
    let cluster = Cluster::start_with_catalog(config, catalog).await;
    for service in Service::ALL {
        assert!(cluster.keel.grpc_url(service).starts_with("https://"));
        assert!(cluster.keel.admin_url(service).starts_with("https://"));
    }

    // serving → registry, vector-index (and its embedder), the remote
    // generator over HTTPS, and the record to monitoring, all over TLS.
    fixtures::setup_application(&cluster).await;
    let mut spec = fixtures::chain_spec(3);
    spec.generator = Some(GeneratorSpec {
        name: "openai".to_string(),
        ..GeneratorSpec::default()
    });
    fixtures::register_chain_endpoint(&cluster, "tls-chain", spec, "tls-answers").await;
    let response = fixtures::query(&cluster, "tls-answers", REFUND_QUESTION.text, "erin").await;
    assert_eq!(response.answer, REMOTE_ANSWER);
    assert_eq!(remote.requests(), 1);
    let record = eventually("the record in monitoring", Duration::from_secs(10), || {
        let mut monitoring = cluster.monitoring.clone();
        let request = GetInferenceRequest {
            request_id: response.request_id.clone(),
        };
        async move { monitoring.get_inference(request).await.ok() }
    })
    .await
    .into_inner();
    assert_eq!(record.answer, REMOTE_ANSWER);
    // feedback → monitoring (to join the record), over TLS.
    let feedback = cluster
        .feedback
        .clone()
        .submit_feedback(SubmitFeedbackRequest {
            request_id: response.request_id.clone(),
            kind: FeedbackKind::Thumbs as i32,
            value: 1.0,
            user_id: "erin".to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(feedback.request_id, response.request_id);

    // The admin ports answer HTTPS only: health, and the OpenAI API.
    let https = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(&std::fs::read(ca.ca_path()).unwrap()).unwrap(),
        ])
        .build()
        .unwrap();
    let serving_admin = cluster.keel.admin_url(Service::Serving);
    let health = https
        .get(format!("{serving_admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let chat = https
        .post(format!("{serving_admin}/v1/chat/completions"))
        .bearer_auth(MASTER_KEY)
        .json(&serde_json::json!({
            "model": "tls-answers",
            "messages": [{"role": "user", "content": REFUND_QUESTION.text}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let chat: serde_json::Value = chat.json().await.unwrap();
    assert_eq!(chat["choices"][0]["message"]["content"], REMOTE_ANSWER);
    let plain_http = serving_admin.replacen("https://", "http://", 1);
    assert!(
        https
            .get(format!("{plain_http}/healthz"))
            .send()
            .await
            .is_err(),
        "a plaintext request to the admin port is not answered"
    );
    let other_ca = TestCa::new();
    let distrusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            &std::fs::read(other_ca.ca_path()).unwrap(),
        )
        .unwrap()])
        .build()
        .unwrap();
    let refused = distrusting
        .get(format!("{serving_admin}/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");

    // gRPC: a client trusting another CA gets no connection, one
    // speaking plaintext no answer; the cluster's own clients (trusting
    // its CA) do.
    let serving_url = cluster.keel.grpc_url(Service::Serving);
    let distrusting = channel_trusting(&serving_url, Some(MASTER_KEY), &other_ca.client());
    let status = ServingServiceClient::new(distrusting)
        .list_endpoints(ListEndpointsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    let plaintext = channel_trusting(
        &serving_url.replacen("https://", "http://", 1),
        Some(MASTER_KEY),
        &ClientTls::public_roots(),
    );
    // The server hangs up on the cleartext preface. How the client words
    // that depends on timing (a broken pipe, a GOAWAY, a cancelled call);
    // what matters is that no answer comes.
    let refused = ServingServiceClient::new(plaintext)
        .list_endpoints(ListEndpointsRequest::default())
        .await;
    assert!(refused.is_err(), "a plaintext call was answered");
    let endpoints = cluster
        .serving
        .clone()
        .list_endpoints(ListEndpointsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(endpoints
        .endpoints
        .iter()
        .any(|endpoint| endpoint.name == "tls-answers"));

    if let Some(front) = &front {
        // Every service's pool connected through the TLS front.
        assert!(front.sessions() >= 5, "{} sessions", front.sessions());
    }
    cluster.shutdown().await;
}

on_both_backends!(every_hop_speaks_tls);

/// `verify-full` against a CA that did not sign the server's certificate
/// fails to open the store, and so does a plaintext connection to a
/// TLS-only server: neither falls back to something weaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_refuses_what_it_cannot_verify() {
    let ca = TestCa::new();
    let front =
        PostgresTlsFront::start(&ca.server(), &keel_store::testing::test_postgres_url()).await;
    let database = keel_store::testing::fresh_postgres_database()
        .await
        .unwrap();

    let verified =
        keel_store::Store::open(&front.url(&database, "verify-full", &ca.ca_path()), &[])
            .await
            .unwrap();
    let answer: i64 = sqlx::query_scalar("SELECT CAST(1 AS BIGINT)")
        .fetch_one(verified.pool())
        .await
        .unwrap();
    assert_eq!(answer, 1);
    verified.close().await;
    assert!(front.sessions() >= 1);

    let other_ca = TestCa::new();
    let unverified = keel_store::Store::open(
        &front.url(&database, "verify-full", &other_ca.ca_path()),
        &[],
    )
    .await
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        unverified.contains("certificate") || unverified.contains("UnknownIssuer"),
        "{unverified}"
    );
    let plaintext =
        keel_store::Store::open(&front.url(&database, "disable", &ca.ca_path()), &[]).await;
    assert!(
        plaintext.is_err(),
        "a plaintext connection to a TLS-only server"
    );
}

//! What the feedback tests share: the feedback and monitoring services on
//! port 0 with their databases, sample records, and export helpers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::SocketAddr;

use keel_proto::v1 as pb;
use keel_proto::v1::feedback_service_client::FeedbackServiceClient;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use keel_testkit::server::Ports;
use keel_testkit::{http_exchange, http_request, TestDatabase, TestServer};
use tonic::transport::Channel;

/// The chatbot front end's origin, allowed to post feedback.
pub const CHAT_ORIGIN: &str = "http://localhost:3000";

/// How long a test waits for something off the request path.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// A service on port 0 (gRPC and admin), its client, and its database.
pub struct Running<C, E> {
    pub client: C,
    pub server: TestServer<E>,
    pub database: TestDatabase,
}

pub type RunningMonitoring = Running<MonitoringServiceClient<Channel>, keel_monitoring::Error>;
pub type RunningFeedback = Running<FeedbackServiceClient<Channel>, keel_feedback::Error>;

/// Monitoring and a feedback service joining with it, each on a fresh
/// database of `backend`, with the test defaults.
pub async fn monitoring_and_feedback(
    backend: keel_testkit::Backend,
) -> (RunningMonitoring, RunningFeedback) {
    let monitoring = Running::monitoring_on(TestDatabase::fresh(backend).await, |_| {}).await;
    let feedback = Running::feedback_on(
        TestDatabase::fresh(backend).await,
        monitoring.server.url(),
        |_| {},
    )
    .await;
    (monitoring, feedback)
}

impl Running<MonitoringServiceClient<Channel>, keel_monitoring::Error> {
    pub async fn monitoring() -> Self {
        Self::monitoring_on(TestDatabase::sqlite(), |_| {}).await
    }

    /// Monitoring on `database`, with `configure` applied to its config.
    pub async fn monitoring_on(
        database: TestDatabase,
        configure: impl FnOnce(&mut keel_monitoring::Config),
    ) -> Self {
        let mut config = keel_monitoring::Config {
            port: 0,
            database_url: database.url.clone(),
            ..keel_monitoring::Config::default()
        };
        configure(&mut config);
        let server = TestServer::start(Ports::GrpcAndAdmin, |listeners, shutdown| {
            keel_monitoring::serve(config, listeners, shutdown)
        })
        .await;
        let client = MonitoringServiceClient::new(server.connect().await);
        Running {
            client,
            server,
            database,
        }
    }
}

impl Running<FeedbackServiceClient<Channel>, keel_feedback::Error> {
    pub async fn feedback(monitoring_url: String) -> Self {
        Self::feedback_on(TestDatabase::sqlite(), monitoring_url, |_| {}).await
    }

    /// Feedback on `database`, joined with the monitoring at
    /// `monitoring_url`, with `configure` applied to its config.
    pub async fn feedback_on(
        database: TestDatabase,
        monitoring_url: String,
        configure: impl FnOnce(&mut keel_feedback::Config),
    ) -> Self {
        let mut config = keel_feedback::Config {
            port: 0,
            database_url: database.url.clone(),
            monitoring_url,
            monitoring_timeout_ms: 2_000,
            join_interval_ms: 50,
            orphan_grace_ms: 300,
            cors_allowed_origins: vec![CHAT_ORIGIN.to_string()],
            ..keel_feedback::Config::default()
        };
        configure(&mut config);
        let server = TestServer::start(Ports::GrpcAndAdmin, |listeners, shutdown| {
            keel_feedback::serve(config, listeners, shutdown)
        })
        .await;
        let client = FeedbackServiceClient::new(server.connect().await);
        Running {
            client,
            server,
            database,
        }
    }
}

/// A POST of a JSON body; returns the status code and the body.
pub async fn http_post(address: SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let request = http_request(
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    let response = http_exchange(address, request).await;
    (
        response.status,
        serde_json::from_slice(&response.body).unwrap(),
    )
}

pub fn request_id(n: u128) -> String {
    uuid::Uuid::from_u128(n).hyphenated().to_string()
}

pub fn inference(n: u128, started_at_ms: i64, question: &str, answer: &str) -> pb::InferenceRecord {
    pb::InferenceRecord {
        request_id: request_id(n),
        endpoint: "support".to_string(),
        route_target: "chain@champion".to_string(),
        served_model: "chain".to_string(),
        served_version: 4,
        question: question.to_string(),
        prompt_messages: vec![pb::ChatMessage {
            role: "user".to_string(),
            content: question.to_string(),
        }],
        contexts: vec![pb::Citation {
            point_id: "doc-1".to_string(),
            score: 0.9,
            text: "passage".to_string(),
        }],
        answer: answer.to_string(),
        latency_ms: 12.0,
        status: pb::InferenceStatus::Ok as i32,
        started_at_ms,
        ..Default::default()
    }
}

pub fn thumbs(n: u128, value: f64, key: &str) -> pb::SubmitFeedbackRequest {
    pb::SubmitFeedbackRequest {
        request_id: request_id(n),
        kind: pb::FeedbackKind::Thumbs as i32,
        value,
        idempotency_key: key.to_string(),
        ..Default::default()
    }
}

pub async fn export(
    client: &mut FeedbackServiceClient<Channel>,
    kind: pb::DatasetKind,
) -> Result<Vec<pb::DatasetLine>, tonic::Status> {
    let request = pb::ExportDatasetRequest {
        kind: kind as i32,
        ..Default::default()
    };
    Ok(export_with(client, request).await?.0)
}

/// The lines of an export (progress-only messages left out) and its
/// summary, which must come last.
pub async fn export_with(
    client: &mut FeedbackServiceClient<Channel>,
    request: pb::ExportDatasetRequest,
) -> Result<(Vec<pb::DatasetLine>, pb::ExportSummary), tonic::Status> {
    let mut stream = client.export_dataset(request).await?.into_inner();
    let mut lines = Vec::new();
    while let Some(message) = stream.message().await? {
        if let Some(summary) = message.summary {
            assert!(stream.message().await?.is_none(), "the summary comes last");
            return Ok((lines, summary));
        }
        if !message.json.is_empty() {
            lines.push(message);
        }
    }
    panic!("the export ended without its summary");
}

//! The real monitoring server on a keel-testkit port 0, with its two
//! clients: Keel's MonitoringService and OTLP's TraceService share the
//! gRPC port.

// Each test binary uses part of this module.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use keel_monitoring::{serve, Config, Error};
use keel_proto::v1 as pb;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use keel_testkit::server::Ports;
use keel_testkit::{TestDatabase, TestServer};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tonic::transport::Channel;

pub struct Running {
    pub monitoring: MonitoringServiceClient<Channel>,
    pub otlp: TraceServiceClient<Channel>,
    server: TestServer<Error>,
}

/// Starts monitoring on `database`; a second start on the same database
/// is a restart.
pub async fn start(database: &TestDatabase) -> Running {
    start_with(database, |_| {}).await
}

/// Starts monitoring on `database` with `configure` applied to its config.
pub async fn start_with(database: &TestDatabase, configure: impl FnOnce(&mut Config)) -> Running {
    let mut config = Config {
        port: 0,
        database_url: database.url.clone(),
        ..Config::default()
    };
    configure(&mut config);
    let server = TestServer::start(Ports::GrpcAndAdmin, |listeners, shutdown| {
        serve(config, listeners, shutdown)
    })
    .await;
    let channel = server.connect().await;
    Running {
        monitoring: MonitoringServiceClient::new(channel.clone()),
        otlp: TraceServiceClient::new(channel),
        server,
    }
}

impl Running {
    /// The admin HTTP port: `/healthz`, `/metrics`, OTLP/HTTP.
    pub fn admin(&self) -> SocketAddr {
        self.server.admin_address()
    }

    /// Shuts down and checks the server drains and returns cleanly.
    pub async fn stop(self) {
        self.server.stop().await.unwrap();
    }
}

/// A complete record with request id `n` (as a UUID).
pub fn wire_record(
    n: u128,
    endpoint: &str,
    started_at_ms: i64,
    latency_ms: f64,
) -> pb::InferenceRecord {
    pb::InferenceRecord {
        request_id: uuid::Uuid::from_u128(n).hyphenated().to_string(),
        trace_id: format!("{n:032x}"),
        span_id: format!("{n:016x}"),
        endpoint: endpoint.to_string(),
        route_target: "support-chain@champion".to_string(),
        served_model: "support-chain".to_string(),
        served_version: 1,
        user_id: "user-1".to_string(),
        session_id: "session-1".to_string(),
        question: format!("question {n}?"),
        input_messages: vec![pb::ChatMessage {
            role: "user".to_string(),
            content: "hi".to_string(),
        }],
        contexts: vec![pb::Citation {
            point_id: "doc-1".to_string(),
            score: 0.5,
            text: "passage".to_string(),
        }],
        prompt_messages: vec![],
        answer: format!("answer {n}"),
        usage: Some(pb::TokenUsage {
            input_tokens: 12,
            output_tokens: 4,
        }),
        latency_ms,
        status: pb::InferenceStatus::Ok as i32,
        error: String::new(),
        started_at_ms,
        generator: "extractive".to_string(),
        finish_reason: pb::FinishReason::Stop as i32,
        shadow_of: String::new(),
        cache_hit: pb::CacheHit::None as i32,
        guardrails: Vec::new(),
    }
}

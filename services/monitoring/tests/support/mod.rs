//! The real monitoring server on a keel-testkit port 0, with its two
//! clients: Keel's MonitoringService and OTLP's TraceService share the
//! gRPC port.

// Each test binary uses part of this module.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use keel_monitoring::{serve, Config, Error};
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
    let config = Config {
        port: 0,
        database_url: database.url.clone(),
        ..Config::default()
    };
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

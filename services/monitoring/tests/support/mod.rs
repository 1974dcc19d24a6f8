//! The real monitoring server on port 0, on a fresh SQLite or Postgres
//! database, with its clients.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::SocketAddr;

use keel_core::{CancellationToken, Listeners};
use keel_monitoring::{serve, Config, Error};
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tonic::transport::Channel;

/// A database the server can be started (and restarted) on.
pub struct Database {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> Database {
    let dir = tempfile::tempdir().unwrap();
    Database {
        url: keel_store::default_sqlite_url(dir.path(), "monitoring"),
        _dir: Some(dir),
    }
}

pub async fn postgres() -> Database {
    let url = keel_store::testing::fresh_postgres_database().await.expect(
        "postgres must run at postgres://postgres@127.0.0.1:5432/test (KEEL_TEST_POSTGRES_URL)",
    );
    Database { url, _dir: None }
}

pub struct Running {
    pub monitoring: MonitoringServiceClient<Channel>,
    pub otlp: TraceServiceClient<Channel>,
    pub admin: SocketAddr,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), Error>>,
}

pub async fn start(database: &Database) -> Running {
    let config = Config {
        port: 0,
        database_url: database.url.clone(),
    };
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_address = grpc.local_addr().unwrap();
    let admin_address = admin.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let listeners = Listeners {
        grpc,
        admin: Some(admin),
    };
    let server = tokio::spawn(serve(config, listeners, shutdown.clone()));
    let url = format!("http://{grpc_address}");
    Running {
        monitoring: MonitoringServiceClient::connect(url.clone()).await.unwrap(),
        otlp: TraceServiceClient::connect(url).await.unwrap(),
        admin: admin_address,
        shutdown,
        server,
    }
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
    }
}

//! The serving service under test: the real server on port 0, talked to
//! with the generated client, in front of fake registry, vector index and
//! monitoring.

// Each test binary uses part of this module.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keel_models::ModelCatalog;
use keel_proto::v1 as pb;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_serving::{serve, Config, Error};
use keel_testkit::fakes::{chain_spec, FakeMonitoring, FakeRegistry, FakeVectorIndex};
use keel_testkit::server::Ports;
use keel_testkit::{TestDatabase, TestServer};
use tonic::transport::Channel;

pub const TEMPLATE: &str =
    "Q: {{ question }}\n{% for c in contexts %}[{{ c.id }}] {{ c.text }}\n{% endfor %}";

/// How long a test waits for something off the request path.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct Serving {
    pub client: ServingServiceClient<Channel>,
    server: TestServer<Error>,
    _database: TestDatabase,
    _spill: tempfile::TempDir,
}

impl Serving {
    pub async fn start(
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

    pub async fn start_with_catalog(
        registry_url: String,
        vector_index_url: String,
        monitoring_url: String,
        catalog: ModelCatalog,
    ) -> Serving {
        let spill = tempfile::tempdir().unwrap();
        Serving::start_with_spill(
            registry_url,
            vector_index_url,
            monitoring_url,
            catalog,
            spill,
        )
        .await
    }

    /// A serving whose spill log lives in `spill`: one an earlier serving
    /// left, to see what it recovers.
    pub async fn start_with_spill(
        registry_url: String,
        vector_index_url: String,
        monitoring_url: String,
        catalog: ModelCatalog,
        spill: tempfile::TempDir,
    ) -> Serving {
        Serving::start_adjusted(
            registry_url,
            vector_index_url,
            monitoring_url,
            catalog,
            spill,
            |_| {},
        )
        .await
    }

    /// A serving with the test config as `adjust` changes it.
    pub async fn start_adjusted(
        registry_url: String,
        vector_index_url: String,
        monitoring_url: String,
        catalog: ModelCatalog,
        spill: tempfile::TempDir,
        adjust: impl FnOnce(&mut Config),
    ) -> Serving {
        let database = TestDatabase::sqlite();
        let mut config = Config {
            port: 0,
            database_url: database.url.clone(),
            registry_url,
            vector_index_url,
            monitoring_url,
            spill_dir: spill.path().display().to_string(),
            inference_flush_interval_ms: 20,
            delivery_timeout_ms: 500,
            dependency_timeout_ms: 2000,
            ..Config::default()
        };
        adjust(&mut config);
        let server = TestServer::start(Ports::GrpcOnly, |listeners, shutdown| {
            serve(config, catalog, listeners, shutdown)
        })
        .await;
        let client = ServingServiceClient::new(server.connect().await);
        Serving {
            client,
            server,
            _database: database,
            _spill: spill,
        }
    }

    /// Shuts down and checks the server drains and returns cleanly; hands
    /// back the spill log's directory.
    pub async fn stop(self) -> tempfile::TempDir {
        self.server.stop().await.unwrap();
        self._spill
    }

    pub async fn stats(&self) -> pb::ServingStats {
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
pub struct World {
    pub registry: FakeRegistry,
    pub vector_index: FakeVectorIndex,
    pub monitoring: FakeMonitoring,
    pub registry_server: TestServer,
    pub vector_index_server: TestServer,
}

impl World {
    pub async fn start() -> World {
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
        registry.add_model("direct", pb::ModelKind::Chain);
        registry.add_chain_version("direct", chain_spec("", 0, "qa@champion", "extractive"));
        registry.set_alias("direct", "champion", 1);

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

    pub async fn serving(&self) -> Serving {
        Serving::start(
            self.registry_server.url(),
            self.vector_index_server.url(),
            self.monitoring.url(),
        )
        .await
    }

    /// A serving with the builtin models and the test config as `adjust`
    /// changes it.
    pub async fn serving_adjusted(&self, adjust: impl FnOnce(&mut Config)) -> Serving {
        Serving::start_adjusted(
            self.registry_server.url(),
            self.vector_index_server.url(),
            self.monitoring.url(),
            ModelCatalog::builtin(),
            tempfile::tempdir().unwrap(),
            adjust,
        )
        .await
    }

    pub async fn serving_with(&self, catalog: ModelCatalog) -> Serving {
        Serving::start_with_catalog(
            self.registry_server.url(),
            self.vector_index_server.url(),
            self.monitoring.url(),
            catalog,
        )
        .await
    }
}

pub fn route(target: &str, weight: u32) -> pb::Route {
    pb::Route {
        target: target.to_string(),
        weight,
    }
}

pub fn create(name: &str, routes: Vec<pb::Route>) -> pb::CreateEndpointRequest {
    pb::CreateEndpointRequest {
        name: name.to_string(),
        routes,
        description: format!("{name} endpoint"),
        shadow: None,
    }
}

pub fn ask(endpoint: &str, question: &str) -> pb::QueryRequest {
    pb::QueryRequest {
        endpoint: endpoint.to_string(),
        question: question.to_string(),
        ..pb::QueryRequest::default()
    }
}

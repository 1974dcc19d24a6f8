//! The end-to-end harness: a whole Keel (`keel::cluster::start`: five
//! servers on ephemeral loopback ports, wired by real gRPC clients) on a
//! fresh SQLite directory or fresh Postgres databases, plus the five
//! generated clients connected to it. The scenarios live in `tests/e2e/`.

// Test support: failing loudly, with the reason, is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fixtures;

use std::time::Duration;

use keel::cluster::{RunningKeel, Service};
use keel::config::KeelConfig;
use keel_core::channel::ServiceChannel;
use keel_core::tls::ClientTls;
use keel_proto::v1::feedback_service_client::FeedbackServiceClient;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use keel_proto::v1::registry_service_client::RegistryServiceClient;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub use keel::cluster;
pub use keel_testkit::{assert_status, eventually};

/// Every cluster of these tests checks keys, as a deployment reached over
/// the network must; the harness's clients present this master key.
pub const MASTER_KEY: &str = "e2e-master-key-0123456789abcdef0123456789";

/// `authorization: Bearer <master key>`, for the HTTP calls of a test.
pub fn master_key_header() -> (&'static str, String) {
    ("authorization", format!("Bearer {MASTER_KEY}"))
}

/// The master key's auth settings, for the services a test starts beside
/// a cluster; `registry_url`: where they check other keys.
pub fn auth_config(registry_url: &str) -> keel_core::auth::AuthConfig {
    keel_core::auth::AuthConfig {
        registry_url: registry_url.to_string(),
        ..keel_core::auth::AuthConfig::with_master_key(MASTER_KEY)
    }
}

/// A lazily connecting channel to `url` presenting the master key.
pub fn keyed_channel(url: &str) -> ServiceChannel {
    channel_presenting(url, Some(MASTER_KEY))
}

/// A lazily connecting channel to `url` whose calls present `key`.
pub fn channel_presenting(url: &str, key: Option<&str>) -> ServiceChannel {
    channel_trusting(url, key, &ClientTls::public_roots())
}

/// As `channel_presenting`, over TLS trusting `tls` for an `https://` url.
pub fn channel_trusting(url: &str, key: Option<&str>, tls: &ClientTls) -> ServiceChannel {
    ServiceChannel::lazy(url, Duration::from_secs(5), key, tls)
        .expect("a bound address and a test key make a channel")
}

/// Runs a scenario `async fn name(backend: Backend)` once per backend, as
/// the tests `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario($crate::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario($crate::Backend::Postgres).await;
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a cluster keeps its data. It outlives the cluster, so that a second
/// cluster can start on the same data (restart tests).
pub struct Storage {
    data_dir: tempfile::TempDir,
    /// One fresh database per service, in `Service::ALL` order; `None` on SQLite.
    postgres_urls: Option<Vec<String>>,
}

impl Storage {
    /// A fresh tempdir (SQLite) or five fresh Postgres databases. Panics when
    /// Postgres cannot be reached: a skipped backend must never look green.
    pub async fn fresh(backend: Backend) -> Storage {
        let data_dir = tempfile::tempdir().expect("cannot create a tempdir");
        let postgres_urls = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let mut urls = Vec::new();
                for service in Service::ALL {
                    let url = keel_store::testing::fresh_postgres_database()
                        .await
                        .unwrap_or_else(|error| {
                            panic!(
                                "cannot create a postgres database for {service} on {}: {error}",
                                keel_store::testing::test_postgres_url()
                            )
                        });
                    urls.push(url);
                }
                Some(urls)
            }
        };
        Storage {
            data_dir,
            postgres_urls,
        }
    }

    /// A config on ephemeral ports pointing at this storage. Its spans go
    /// to no trace store: the scenarios share one process, and each
    /// cluster's store would get every other cluster's spans. The trace
    /// scenarios turn `telemetry.to_monitoring` back on.
    pub fn config(&self) -> KeelConfig {
        let mut config = KeelConfig::default().with_ephemeral_ports();
        config.telemetry.to_monitoring = false;
        config.common.data_dir = self.data_dir.path().to_path_buf();
        config.auth = keel_core::auth::AuthConfig::with_master_key(MASTER_KEY);
        if let Some(urls) = &self.postgres_urls {
            for (url, fresh) in config.database_urls_mut().into_iter().zip(urls) {
                url.clone_from(fresh);
            }
        }
        config
    }
}

/// A running Keel and a client per service.
pub struct Cluster {
    pub keel: RunningKeel,
    pub registry: RegistryServiceClient<ServiceChannel>,
    pub vector_index: VectorIndexServiceClient<ServiceChannel>,
    pub serving: ServingServiceClient<ServiceChannel>,
    pub feedback: FeedbackServiceClient<ServiceChannel>,
    pub monitoring: MonitoringServiceClient<ServiceChannel>,
}

impl Cluster {
    pub async fn start(storage: &Storage) -> Cluster {
        Cluster::start_with(storage, |_| {}).await
    }

    /// Starts a cluster with the builtin models on `storage`, after `adjust`
    /// has changed the config, and waits until every service answers.
    pub async fn start_with(storage: &Storage, adjust: impl FnOnce(&mut KeelConfig)) -> Cluster {
        let mut config = storage.config();
        adjust(&mut config);
        Cluster::start_with_catalog(config, keel_models::ModelCatalog::builtin()).await
    }

    /// Starts a cluster with `catalog`'s models and waits until every
    /// service answers.
    pub async fn start_with_catalog(
        config: KeelConfig,
        catalog: keel_models::ModelCatalog,
    ) -> Cluster {
        // As `keel up` does, once per process: logs, spans, trace context.
        keel_core::telemetry::init_quiet("keel-e2e", &config.telemetry)
            .unwrap_or_else(|error| panic!("telemetry did not start: {error}"));
        let keel = keel::cluster::start(config, catalog)
            .await
            .unwrap_or_else(|error| panic!("cluster did not start: {error}"));
        let cluster = Cluster {
            registry: RegistryServiceClient::new(channel(&keel, Service::Registry)),
            vector_index: VectorIndexServiceClient::new(channel(&keel, Service::VectorIndex)),
            serving: ServingServiceClient::new(channel(&keel, Service::Serving)),
            feedback: FeedbackServiceClient::new(channel(&keel, Service::Feedback)),
            monitoring: MonitoringServiceClient::new(channel(&keel, Service::Monitoring)),
            keel,
        };
        cluster.wait_until_serving().await;
        cluster
    }

    /// Polls each service's gRPC health until it reports SERVING: a service
    /// whose store failed to open never does, and the test says which.
    async fn wait_until_serving(&self) {
        for service in Service::ALL {
            let channel = channel(&self.keel, service);
            eventually(
                &format!("{service} to report healthy"),
                Duration::from_secs(30),
                || {
                    let mut health = HealthClient::new(channel.clone());
                    async move {
                        let request = HealthCheckRequest {
                            service: String::new(),
                        };
                        let response = health.check(request).await.ok()?.into_inner();
                        (response.status() == ServingStatus::Serving).then_some(())
                    }
                },
            )
            .await;
        }
    }

    /// The service's `/metrics` exposition, read with the master key.
    pub async fn metrics(&self, service: Service) -> String {
        let (name, value) = master_key_header();
        let scrape = keel_testkit::http_request("GET", "/metrics", &[(name, value.as_str())], &[]);
        let response = keel_testkit::http_exchange(self.keel.admin_addr(service), scrape).await;
        assert_eq!(response.status, 200, "{service} /metrics");
        String::from_utf8_lossy(&response.body).into_owned()
    }

    /// Stops every service and asserts that they all stopped cleanly.
    pub async fn shutdown(self) {
        self.keel
            .shutdown()
            .await
            .unwrap_or_else(|error| panic!("cluster shutdown failed: {error}"));
    }
}

/// The real local models (`minilm`, `smollm2`) plus the built-ins, from
/// `KEEL_MODELS_DIR` (which `scripts/test` sets) or `<repo>/.models`.
/// Panics saying how to fetch them: a real-model test never passes by
/// skipping.
pub async fn real_model_catalog() -> keel_models::ModelCatalog {
    let dir = match std::env::var_os(keel_models::model_files::MODELS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => std::path::PathBuf::from(dir),
        _ => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.models"),
    };
    let config = keel_models::ModelsConfig::in_dir(dir);
    tokio::task::spawn_blocking(move || keel_models::ModelCatalog::load(&config))
        .await
        .expect("loading the models panicked")
        .unwrap_or_else(|error| panic!("the real models did not load: {error}"))
}

/// A channel to one of the cluster's services presenting its master key
/// (none when the cluster checks no keys).
pub fn channel(keel: &RunningKeel, service: Service) -> ServiceChannel {
    let tls = match keel.ca_path() {
        Some(path) => ClientTls::trusting_pem_file(path, "ca_path").expect("the cluster's CA"),
        None => ClientTls::public_roots(),
    };
    channel_trusting(&keel.grpc_url(service), keel.master_key(), &tls)
}

//! Keel's services as separate processes of the `keel` binary (`keel serve
//! <service>`), on free loopback ports, each with its own database, for the
//! tests that stop, restart and kill them one at a time as an operator (or
//! a crash) would.

// Each test binary uses part of this module.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod outage;

pub use keel_testkit::Backend;

/// The processes check keys, as a deployment reached over the network
/// must; the tests' clients present this master key.
pub const MASTER_KEY: &str = "process-master-key-0123456789abcdef0123456";

/// A lazily connecting channel to `url` presenting the master key, with a
/// five-second deadline per call.
pub fn keyed_channel(url: &str) -> keel_core::channel::ServiceChannel {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    keel_core::channel::ServiceChannel::new(channel, Some(MASTER_KEY)).unwrap()
}

/// How long a started service may take to answer its health check.
const START_PATIENCE: Duration = Duration::from_secs(60);

pub use keel::cluster::Service;

/// Serving last: it dials the others.
pub const START_ORDER: [Service; 5] = [
    Service::Registry,
    Service::VectorIndex,
    Service::Monitoring,
    Service::Feedback,
    Service::Serving,
];

/// A service's config section, as the `KEEL_<SECTION>__` environment
/// prefix.
fn section(service: Service) -> &'static str {
    match service {
        Service::Registry => "REGISTRY",
        Service::VectorIndex => "VECTOR_INDEX",
        Service::Serving => "SERVING",
        Service::Feedback => "FEEDBACK",
        Service::Monitoring => "MONITORING",
    }
}

/// The five services' ports, databases and data directory; each runs as a
/// process once `start`ed.
pub struct Deployment {
    pub data_dir: tempfile::TempDir,
    ports: BTreeMap<Service, u16>,
    databases: BTreeMap<Service, String>,
    processes: BTreeMap<Service, Child>,
    /// Extra `KEEL_*` settings for every process.
    settings: Vec<(String, String)>,
}

impl Deployment {
    pub async fn new(backend: Backend) -> Deployment {
        let data_dir = tempfile::tempdir().unwrap();
        let mut ports = BTreeMap::new();
        let mut databases = BTreeMap::new();
        for service in START_ORDER {
            ports.insert(
                service,
                keel_testkit::reserve_port_pair(keel_core::config::ADMIN_PORT_OFFSET),
            );
            let url = match backend {
                Backend::Sqlite => String::new(),
                Backend::Postgres => keel_store::testing::fresh_postgres_database()
                    .await
                    .unwrap(),
            };
            databases.insert(service, url);
        }
        // No model files: the built-in `hashing` embedder and `extractive`
        // generator serve, and a start takes a second, not a model load.
        let no_models = data_dir.path().join("no-models");
        std::fs::create_dir_all(&no_models).unwrap();
        let settings = vec![
            (
                "KEEL_MODELS__DIR".to_string(),
                no_models.display().to_string(),
            ),
            (
                "KEEL_MODELS__REQUIRE_LOCAL_MODELS".to_string(),
                "false".to_string(),
            ),
            ("KEEL_TELEMETRY__ENABLED".to_string(), "false".to_string()),
            ("KEEL_AUTH__ENABLED".to_string(), "true".to_string()),
            ("KEEL_MASTER_KEY".to_string(), MASTER_KEY.to_string()),
        ];
        Deployment {
            data_dir,
            ports,
            databases,
            processes: BTreeMap::new(),
            settings,
        }
    }

    /// A `KEEL_*` setting for every process started from now on.
    pub fn set(&mut self, key: &str, value: &str) {
        self.settings.push((key.to_string(), value.to_string()));
    }

    pub fn url(&self, service: Service) -> String {
        format!("http://127.0.0.1:{}", self.ports[&service])
    }

    /// A channel to `service` presenting the master key.
    pub fn channel(&self, service: Service) -> keel_core::channel::ServiceChannel {
        keyed_channel(&self.url(service))
    }

    pub fn admin_address(&self, service: Service) -> SocketAddr {
        SocketAddr::from((
            [127, 0, 0, 1],
            keel_core::config::admin_port(self.ports[&service]),
        ))
    }

    /// Where `keel serve` writes a service's log, appended across restarts.
    pub fn log_path(&self, service: Service) -> PathBuf {
        self.data_dir.path().join(format!("{}.log", service.name()))
    }

    /// Starts `service` and waits until its health check answers.
    pub async fn start(&mut self, service: Service) {
        assert!(!self.processes.contains_key(&service), "{service:?} runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(service))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .args(["serve", service.name()])
            .env_remove("KEEL_MODELS_DIR")
            .env("KEEL_DATA_DIR", self.data_dir.path())
            .env("RUST_LOG", "info,sqlx=warn,h2=warn,hyper=warn")
            .stdout(Stdio::null())
            .stderr(log);
        for (other, port) in &self.ports {
            command.env(format!("KEEL_{}__PORT", section(*other)), port.to_string());
        }
        let database = &self.databases[&service];
        if !database.is_empty() {
            command.env(format!("KEEL_{}__DATABASE_URL", section(service)), database);
        }
        for (key, url) in [
            ("KEEL_AUTH__REGISTRY_URL", self.url(Service::Registry)),
            ("KEEL_SERVING__REGISTRY_URL", self.url(Service::Registry)),
            (
                "KEEL_SERVING__VECTOR_INDEX_URL",
                self.url(Service::VectorIndex),
            ),
            (
                "KEEL_SERVING__MONITORING_URL",
                self.url(Service::Monitoring),
            ),
            (
                "KEEL_FEEDBACK__MONITORING_URL",
                self.url(Service::Monitoring),
            ),
        ] {
            command.env(key, url);
        }
        command.envs(self.settings.iter().map(|(key, value)| (key, value)));
        let child = command.spawn().unwrap();
        self.processes.insert(service, child);
        self.wait_healthy(service).await;
    }

    async fn wait_healthy(&mut self, service: Service) {
        let address = self.admin_address(service);
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(status) = self
                .processes
                .get_mut(&service)
                .unwrap()
                .try_wait()
                .unwrap()
            {
                panic!(
                    "{} exited with {status} while starting; its log:\n{}",
                    service.name(),
                    std::fs::read_to_string(self.log_path(service)).unwrap_or_default()
                );
            }
            if healthz(address).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became healthy",
                service.name()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for the process to drain and exit.
    pub async fn stop(&mut self, service: Service) {
        let mut child = self.processes.remove(&service).expect("the service runs");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(exited.success(), "{} exited with {exited}", service.name());
    }

    /// SIGKILL: no drain, no flush, as in a crash.
    pub fn kill(&mut self, service: Service) {
        let mut child = self.processes.remove(&service).expect("the service runs");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for child in self.processes.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether `GET /healthz` answers 200.
async fn healthz(address: SocketAddr) -> bool {
    let request = keel_testkit::http_request("GET", "/healthz", &[], b"");
    keel_testkit::try_http_exchange(address, request)
        .await
        .is_some_and(|answer| answer.status == 200)
}

/// The load test's application (a collection of synthetic passages with
/// the `hashing` embedder, a chain with the `extractive` generator at
/// @champion, and the endpoint `lt-endpoint`), created through the
/// running registry, vector index and serving.
pub async fn set_up_application(deployment: &Deployment) -> String {
    let options = keel_loadtests::SetupOptions {
        registry_url: deployment.url(Service::Registry),
        vector_index_url: deployment.url(Service::VectorIndex),
        serving_url: deployment.url(Service::Serving),
        corpus: keel_loadtests::CorpusSource::Synthetic,
        collection: "lt-docs".to_string(),
        endpoint: "lt-endpoint".to_string(),
        api_key: Some(MASTER_KEY.to_string()),
    };
    keel_loadtests::setup(&options).await.unwrap();
    options.endpoint
}

/// Which of `request_ids` monitoring holds; a call that fails (monitoring
/// restarting) counts its ids as not there yet.
pub async fn stored_request_ids(
    monitoring: &keel_proto::v1::monitoring_service_client::MonitoringServiceClient<
        keel_core::channel::ServiceChannel,
    >,
    request_ids: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    let ids: Vec<String> = request_ids.iter().cloned().collect();
    let mut stored = std::collections::BTreeSet::new();
    for chunk in ids.chunks(1000) {
        let request = keel_proto::v1::BatchGetInferencesRequest {
            request_ids: chunk.to_vec(),
            ..Default::default()
        };
        if let Ok(found) = monitoring.clone().batch_get_inferences(request).await {
            stored.extend(
                found
                    .into_inner()
                    .records
                    .into_iter()
                    .map(|record| record.request_id),
            );
        }
    }
    stored
}

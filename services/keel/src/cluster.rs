//! All five services in one process, each on its own loopback ports and
//! wired to the others by real gRPC clients, as they would be on a cluster.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use futures::future::{select_all, BoxFuture, FutureExt};
use keel_core::{CancellationToken, Listeners};
use keel_models::ModelCatalog;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::KeelConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Service {
    Registry,
    VectorIndex,
    Serving,
    Feedback,
    Monitoring,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Registry,
        Service::VectorIndex,
        Service::Serving,
        Service::Feedback,
        Service::Monitoring,
    ];

    /// The name in logs, errors and default database file names.
    pub fn name(self) -> &'static str {
        match self {
            Service::Registry => "registry",
            Service::VectorIndex => "vector-index",
            Service::Serving => "serving",
            Service::Feedback => "feedback",
            Service::Monitoring => "monitoring",
        }
    }

    fn index(self) -> usize {
        match self {
            Service::Registry => 0,
            Service::VectorIndex => 1,
            Service::Serving => 2,
            Service::Feedback => 3,
            Service::Monitoring => 4,
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{service}: address {address} is already in use")]
    PortInUse {
        service: &'static str,
        address: SocketAddr,
    },
    #[error(transparent)]
    Bind(#[from] keel_core::BindError),
    #[error(transparent)]
    Telemetry(#[from] keel_core::telemetry::TelemetryError),
    #[error(transparent)]
    Auth(#[from] keel_core::auth::AuthConfigError),
    #[error("{service} failed: {source}")]
    Service {
        service: &'static str,
        source: BoxError,
    },
    #[error("{service} task ended abnormally: {source}")]
    Task {
        service: &'static str,
        source: tokio::task::JoinError,
    },
}

struct RunningService {
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    token: CancellationToken,
    /// `None` once the task has been awaited; its outcome is then in `outcome`.
    task: Option<JoinHandle<Result<(), StartError>>>,
    outcome: Option<Result<(), StartError>>,
}

/// The five services of a running `keel up`.
pub struct RunningKeel {
    root: CancellationToken,
    /// Indexed by `Service::index`.
    services: Vec<RunningService>,
    /// Whether this process's spans go to this Keel's trace store, so
    /// shutdown flushes them there before monitoring stops.
    stores_own_spans: bool,
    /// The key every scope answers to, when one is set.
    master_key: Option<String>,
    /// `https` when the listeners speak TLS.
    scheme: &'static str,
    /// The CA the services trust, which a client in this process needs too.
    ca_path: Option<PathBuf>,
}

struct BoundService {
    listeners: Listeners,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
}

/// Starts the five services: binds every socket first (so a taken port fails
/// before anything runs), wires serving and feedback to the bound addresses,
/// then spawns the servers, serving last.
pub async fn start(config: KeelConfig, catalog: ModelCatalog) -> Result<RunningKeel, StartError> {
    let mut config = config;
    let host = config.common.host;
    let data_dir = config.common.data_dir.clone();
    for (url, service) in config.database_urls_mut().into_iter().zip(Service::ALL) {
        fill_database_url(url, &data_dir, service);
    }
    config.serving.fill_spill_dir(&data_dir);
    config.vector_index.fill_snapshot_dir(&data_dir);

    let registry = bind_service(Service::Registry, host, config.registry.port).await?;
    let vector_index = bind_service(Service::VectorIndex, host, config.vector_index.port).await?;
    let serving = bind_service(Service::Serving, host, config.serving.port).await?;
    let feedback = bind_service(Service::Feedback, host, config.feedback.port).await?;
    let monitoring = bind_service(Service::Monitoring, host, config.monitoring.port).await?;

    // With `[tls]`, every listener speaks TLS and every service dials the
    // others over it, trusting `tls.ca_path`.
    let scheme = config.tls.scheme();
    config.registry.tls = config.tls.clone();
    config.vector_index.tls = config.tls.clone();
    config.serving.tls = config.tls.clone();
    config.feedback.tls = config.tls.clone();
    config.monitoring.tls = config.tls.clone();
    config.serving.registry_url = client_url(scheme, registry.grpc_addr);
    config.serving.vector_index_url = client_url(scheme, vector_index.grpc_addr);
    config.serving.monitoring_url = client_url(scheme, monitoring.grpc_addr);
    config.serving.feedback_url = client_url(scheme, feedback.grpc_addr);
    config.feedback.monitoring_url = client_url(scheme, monitoring.grpc_addr);
    // One master key for the five services, read once; keys are checked by
    // this registry.
    let mut auth = config.auth.clone();
    auth.master_key = auth.read_master_key()?;
    auth.registry_url = client_url(scheme, registry.grpc_addr);
    config.registry.auth = auth.clone();
    config.vector_index.auth = auth.clone();
    config.serving.auth = auth.clone();
    config.feedback.auth = auth.clone();
    let master_key = auth.master_key.clone();
    config.monitoring.auth = auth;
    // Every request's trace is kept for evaluation out of the box: spans
    // go to this Keel's own monitoring, besides any configured exporter.
    // It runs in this process, so it takes them without OTLP's encoding
    // and network hop.
    let stores_own_spans = config.telemetry.enabled && config.telemetry.to_monitoring;
    config.monitoring.store_own_spans = stores_own_spans;

    let root = CancellationToken::new();
    let addresses = [
        (registry.grpc_addr, registry.admin_addr),
        (vector_index.grpc_addr, vector_index.admin_addr),
        (serving.grpc_addr, serving.admin_addr),
        (feedback.grpc_addr, feedback.admin_addr),
        (monitoring.grpc_addr, monitoring.admin_addr),
    ];
    let tokens: Vec<CancellationToken> = Service::ALL.iter().map(|_| root.child_token()).collect();
    let mut tasks: Vec<Option<JoinHandle<Result<(), StartError>>>> =
        Service::ALL.iter().map(|_| None).collect();

    // Every socket is bound, so whoever serving dials already accepts
    // connections (the kernel queues them until the server polls).
    let registry_future = keel_registry::serve(
        config.registry,
        registry.listeners,
        tokens[Service::Registry.index()].clone(),
    );
    tasks[Service::Registry.index()] =
        Some(spawn_service(Service::Registry, registry_future.boxed()));
    let vector_index_future = keel_vector_index::serve(
        config.vector_index,
        catalog.clone(),
        vector_index.listeners,
        tokens[Service::VectorIndex.index()].clone(),
    );
    tasks[Service::VectorIndex.index()] = Some(spawn_service(
        Service::VectorIndex,
        vector_index_future.boxed(),
    ));
    let monitoring_future = keel_monitoring::serve(
        config.monitoring,
        monitoring.listeners,
        tokens[Service::Monitoring.index()].clone(),
    );
    tasks[Service::Monitoring.index()] = Some(spawn_service(
        Service::Monitoring,
        monitoring_future.boxed(),
    ));
    let feedback_future = keel_feedback::serve(
        config.feedback,
        feedback.listeners,
        tokens[Service::Feedback.index()].clone(),
    );
    tasks[Service::Feedback.index()] =
        Some(spawn_service(Service::Feedback, feedback_future.boxed()));
    let serving_future = keel_serving::serve(
        config.serving,
        catalog,
        serving.listeners,
        tokens[Service::Serving.index()].clone(),
    );
    tasks[Service::Serving.index()] = Some(spawn_service(Service::Serving, serving_future.boxed()));

    let mut services = Vec::with_capacity(Service::ALL.len());
    for ((service, (grpc_addr, admin_addr)), (token, task)) in Service::ALL
        .into_iter()
        .zip(addresses)
        .zip(tokens.into_iter().zip(tasks))
    {
        tracing::info!(service = service.name(), grpc = %grpc_addr, admin = %admin_addr, "service started");
        services.push(RunningService {
            grpc_addr,
            admin_addr,
            token,
            task,
            outcome: None,
        });
    }
    Ok(RunningKeel {
        root,
        services,
        stores_own_spans,
        master_key,
        scheme,
        ca_path: config.tls.ca_path.clone(),
    })
}

impl RunningKeel {
    /// The master key the services were started with, if any: what an
    /// in-process client (the demo) presents.
    pub fn master_key(&self) -> Option<&str> {
        self.master_key.as_deref()
    }

    /// The CA certificates the services trust (`[tls] ca_path`): what an
    /// in-process client trusts too.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// The address the service's gRPC server is bound to.
    pub fn grpc_addr(&self, service: Service) -> SocketAddr {
        self.services[service.index()].grpc_addr
    }

    /// The address the service's admin HTTP server is bound to.
    pub fn admin_addr(&self, service: Service) -> SocketAddr {
        self.services[service.index()].admin_addr
    }

    /// `http(s)://<address>` a client dials to reach the service's gRPC server.
    pub fn grpc_url(&self, service: Service) -> String {
        client_url(self.scheme, self.grpc_addr(service))
    }

    /// `http(s)://<address>` of the service's admin HTTP server.
    pub fn admin_url(&self, service: Service) -> String {
        client_url(self.scheme, self.admin_addr(service))
    }

    /// Cancelling it stops every service (what `shutdown` does, for callers
    /// that only hold the token, e.g. a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.root.clone()
    }

    /// Stops one service and waits until it has drained, leaving the others
    /// running: for outage tests.
    pub async fn stop_service(&mut self, service: Service) {
        let running = &mut self.services[service.index()];
        running.token.cancel();
        if let Some(task) = running.task.take() {
            let outcome = join_outcome(service, task.await);
            if let Err(error) = &outcome {
                tracing::warn!(service = service.name(), %error, "service stopped with an error");
            }
            running.outcome = Some(outcome);
        }
    }

    /// Returns when any service exits (on its own or after an error) or the
    /// shutdown token is cancelled.
    pub async fn wait(&mut self) {
        let mut running_services = Vec::new();
        let mut handles = Vec::new();
        for (service, running) in Service::ALL.into_iter().zip(self.services.iter_mut()) {
            if let Some(task) = running.task.as_mut() {
                running_services.push(service);
                handles.push(task);
            }
        }
        if handles.is_empty() {
            return;
        }
        let finished = tokio::select! {
            _ = self.root.cancelled() => None,
            (result, position, _) = select_all(handles) => Some((running_services[position], result)),
        };
        let Some((service, result)) = finished else {
            return;
        };
        let outcome = join_outcome(service, result);
        match &outcome {
            Ok(()) => tracing::info!(service = service.name(), "service exited"),
            Err(error) => tracing::error!(service = service.name(), %error, "service failed"),
        }
        let running = &mut self.services[service.index()];
        running.task = None;
        running.outcome = Some(outcome);
    }

    /// Stops every service, waits for all of them to drain, and reports the
    /// first error any of them ended with.
    pub async fn shutdown(mut self) -> Result<(), StartError> {
        // The spans finished so far reach monitoring while it still runs.
        if self.stores_own_spans {
            let _flushed = tokio::task::spawn_blocking(keel_core::telemetry::shutdown).await;
        }
        self.root.cancel();
        let services = std::mem::take(&mut self.services);
        let mut first_error = None;
        for (service, running) in Service::ALL.into_iter().zip(services) {
            let outcome = match (running.task, running.outcome) {
                (Some(task), _) => join_outcome(service, task.await),
                (None, Some(outcome)) => outcome,
                (None, None) => Ok(()),
            };
            if let Err(error) = outcome {
                tracing::warn!(service = service.name(), %error, "service stopped with an error");
                if first_error.is_none() {
                    first_error = Some(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Dropping a running Keel without `shutdown` still stops its servers,
/// rather than leaving them detached on the runtime.
impl Drop for RunningKeel {
    fn drop(&mut self) {
        self.root.cancel();
    }
}

fn fill_database_url(database_url: &mut String, data_dir: &std::path::Path, service: Service) {
    if database_url.is_empty() {
        *database_url = keel_store::default_sqlite_url(data_dir, service.name());
    }
}

async fn bind_service(
    service: Service,
    host: IpAddr,
    grpc_port: u16,
) -> Result<BoundService, StartError> {
    let grpc = bind_one(service, SocketAddr::new(host, grpc_port)).await?;
    let admin_port = keel_core::config::admin_port(grpc_port);
    let admin = bind_one(service, SocketAddr::new(host, admin_port)).await?;
    let grpc_addr = local_addr(service, &grpc)?;
    let admin_addr = local_addr(service, &admin)?;
    Ok(BoundService {
        listeners: Listeners {
            grpc,
            admin: Some(admin),
        },
        grpc_addr,
        admin_addr,
    })
}

async fn bind_one(service: Service, address: SocketAddr) -> Result<TcpListener, StartError> {
    match keel_core::bind(service.name(), address).await {
        Ok(listener) => Ok(listener),
        Err(error) if error.is_address_in_use() => Err(StartError::PortInUse {
            service: service.name(),
            address,
        }),
        Err(error) => Err(StartError::Bind(error)),
    }
}

fn local_addr(service: Service, listener: &TcpListener) -> Result<SocketAddr, StartError> {
    let bound = listener
        .local_addr()
        .map_err(|source| keel_core::BindError {
            service: service.name().to_string(),
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            source,
        })?;
    Ok(bound)
}

/// A wildcard bind (0.0.0.0 or ::) is reachable on loopback; dial that.
fn client_url(scheme: &str, bound: SocketAddr) -> String {
    let dial_ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("{scheme}://{}", SocketAddr::new(dial_ip, bound.port()))
}

fn spawn_service<E>(
    service: Service,
    future: BoxFuture<'static, Result<(), E>>,
) -> JoinHandle<Result<(), StartError>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::spawn(async move {
        future.await.map_err(|error| StartError::Service {
            service: service.name(),
            source: Box::new(error),
        })
    })
}

fn join_outcome(
    service: Service,
    joined: Result<Result<(), StartError>, tokio::task::JoinError>,
) -> Result<(), StartError> {
    match joined {
        Ok(outcome) => outcome,
        Err(source) => Err(StartError::Task {
            service: service.name(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ephemeral_config(data_dir: &std::path::Path) -> KeelConfig {
        let mut config = KeelConfig::default().with_ephemeral_ports();
        config.common.data_dir = data_dir.to_path_buf();
        config
    }

    #[tokio::test]
    async fn starts_every_service_on_distinct_ports_and_shuts_down() {
        let dir = tempfile::tempdir().unwrap();
        let keel = start(ephemeral_config(dir.path()), ModelCatalog::builtin())
            .await
            .unwrap();
        let mut ports = Vec::new();
        for service in Service::ALL {
            ports.push(keel.grpc_addr(service).port());
            ports.push(keel.admin_addr(service).port());
            assert_eq!(
                keel.grpc_url(service),
                format!("http://127.0.0.1:{}", keel.grpc_addr(service).port())
            );
        }
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 10);
        assert!(!ports.contains(&0));
        keel.shutdown().await.unwrap();
        for name in [
            "registry",
            "vector-index",
            "serving",
            "feedback",
            "monitoring",
        ] {
            assert!(
                dir.path().join(format!("{name}.db")).exists(),
                "{name}.db missing"
            );
        }
    }

    #[tokio::test]
    async fn a_taken_port_fails_naming_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut config = ephemeral_config(dir.path());
        config.feedback.port = taken_port;
        let Err(error) = start(config, ModelCatalog::builtin()).await else {
            panic!("start succeeded on a taken port");
        };
        match error {
            StartError::PortInUse { service, address } => {
                assert_eq!(service, "feedback");
                assert_eq!(address.port(), taken_port);
            }
            other => panic!("unexpected error: {other}"),
        }
        // Nothing started: no database was created.
        assert!(!dir.path().join("registry.db").exists());
    }

    #[tokio::test]
    async fn stop_service_leaves_the_others_running_and_wait_returns() {
        let dir = tempfile::tempdir().unwrap();
        let mut keel = start(ephemeral_config(dir.path()), ModelCatalog::builtin())
            .await
            .unwrap();
        keel.stop_service(Service::Monitoring).await;
        assert!(
            tokio::net::TcpStream::connect(keel.grpc_addr(Service::Monitoring))
                .await
                .is_err(),
            "monitoring still accepts connections"
        );
        tokio::net::TcpStream::connect(keel.grpc_addr(Service::Registry))
            .await
            .unwrap();
        keel.shutdown_token().cancel();
        tokio::time::timeout(std::time::Duration::from_secs(10), keel.wait())
            .await
            .unwrap();
        keel.shutdown().await.unwrap();
    }
}

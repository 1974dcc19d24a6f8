//! The gRPC server bootstrap every service uses: its routes plus
//! `grpc.health.v1` and server reflection, served on a bound listener until
//! the shutdown token fires.

use std::net::SocketAddr;

use keel_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::auth::{Auth, AuthLayer, GrpcCalls, HttpRoutes};
use crate::grpc_metrics::GrpcMetricsLayer;
use crate::health::{Readiness, Warmup};
use crate::metrics::{PoolCollector, ServiceMetrics};
use crate::tls::ServerTls;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} for {service}: {source}")]
pub struct BindError {
    pub service: String,
    pub address: SocketAddr,
    pub source: std::io::Error,
}

impl BindError {
    pub fn is_address_in_use(&self) -> bool {
        self.source.kind() == std::io::ErrorKind::AddrInUse
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("metrics setup failed: {0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Cors(#[from] crate::cors::InvalidOrigin),
    #[error(
        "refusing to serve {service} on {address} without authentication: anyone who \
         reaches it could change or read everything. Set `[auth] enabled = true` and the \
         master key (KEEL_MASTER_KEY), or bind a loopback address (host = \"127.0.0.1\")"
    )]
    Unprotected {
        service: &'static str,
        address: SocketAddr,
    },
}

/// Refuses an unauthenticated listener on an address other hosts reach
/// (LiteLLM refuses to start without a master key for the same reason).
fn check_protected(
    service: &'static str,
    address: SocketAddr,
    auth: &Auth,
) -> Result<(), ServeError> {
    if auth.is_on() || address.ip().is_loopback() {
        Ok(())
    } else {
        Err(ServeError::Unprotected { service, address })
    }
}

/// Binds `address` for `service`, with an error that says which port is taken.
pub async fn bind(service: &str, address: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| BindError {
            service: service.to_string(),
            address,
            source,
        })
}

/// A service to serve: its routes and the gRPC service names health and
/// reflection report.
pub struct GrpcService {
    /// Used in logs, e.g. "registry".
    pub name: &'static str,
    /// Fully-qualified names, e.g. "keel.v1.RegistryService".
    pub grpc_names: Vec<&'static str>,
    pub routes: Routes,
    /// The service's database: health reports NOT_SERVING while it does
    /// not answer.
    pub store: Option<Store>,
    /// Descriptor sets of services outside `keel.v1` that the port serves
    /// (OTLP's on monitoring), for reflection.
    pub extra_descriptor_sets: Vec<&'static [u8]>,
    /// The service's registry: every call is counted and timed in it, and
    /// the admin port renders it on `/metrics`.
    pub metrics: ServiceMetrics,
    /// Web pages from these origins may call the port with gRPC-Web (CORS);
    /// same-origin callers and other clients need none.
    pub cors_allowed_origins: Vec<String>,
    /// Set when the service listens before it can answer: health says
    /// NOT_SERVING until it finishes.
    pub warmup: Option<Warmup>,
    /// Checks every call's key on both ports (off: loopback only).
    pub auth: Auth,
    /// Both ports speak TLS only, when set.
    pub tls: Option<ServerTls>,
}

/// Serves `service` on `listener` until `shutdown` is cancelled, then drains
/// in-flight calls and returns.
pub async fn serve_grpc(
    service: GrpcService,
    listener: TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let address = listener.local_addr()?;
    check_protected(service.name, address, &service.auth)?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let initial_status = if crate::health::is_warm(service.warmup.as_ref()) {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for grpc_name in &service.grpc_names {
        health_reporter
            .set_service_status(grpc_name, initial_status)
            .await;
    }
    health_reporter.set_service_status("", initial_status).await;
    let call_metrics = GrpcMetricsLayer::new(&service.metrics)?;
    if let Some(store) = &service.store {
        service
            .metrics
            .register(Box::new(PoolCollector::new(store.clone())?))?;
    }
    let watched = service.store.is_some() || service.warmup.is_some();
    let health_watch = watched.then(|| {
        tokio::spawn(crate::health::watch_health(
            service.name,
            service.store.clone(),
            service.warmup.clone(),
            service.grpc_names.clone(),
            health_reporter.clone(),
            readiness,
            shutdown.clone(),
        ))
    });
    let reflection_v1 = reflection_builder(&service, REFLECTION_V1).build_v1()?;
    let reflection_v1alpha = reflection_builder(&service, REFLECTION_V1ALPHA).build_v1alpha()?;
    let routes = service
        .routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // Without TCP_NODELAY a small response waits for the peer's delayed ACK
    // (about 40 ms on Linux): tonic sets it only on sockets it binds itself.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &service.tls {
        builder = builder.tls_config(tls.grpc())?;
        tracing::info!(service = service.name, %address, "grpc listening (tls)");
    } else {
        tracing::info!(service = service.name, %address, "grpc listening");
    }
    // Browsers speak gRPC-Web over HTTP/1.1: translated to gRPC before the
    // tracing and metrics layers, so a gRPC-Web call is traced and counted
    // like any other. Keys are checked last, so a refused call is traced
    // and counted with its status, and its refusal carries CORS headers a
    // page can read.
    let layers = tower::ServiceBuilder::new()
        .layer(crate::cors::grpc_web_layer(&service.cors_allowed_origins)?)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(crate::grpc_tracing::server_layer())
        .layer(call_metrics)
        .layer(AuthLayer::<GrpcCalls>::new(service.auth.authenticator()));
    let served = builder
        .accept_http1(true)
        .layer(layers)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await;
    if let Some(watch) = health_watch {
        watch.abort();
    }
    served?;
    tracing::info!(service = service.name, %address, "grpc stopped");
    Ok(())
}

const HEALTH: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// Reflection that lists what this port serves and nothing else: the
/// service's own names, health, and the reflection version itself.
fn reflection_builder(
    service: &GrpcService,
    reflection_name: &str,
) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(keel_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for descriptor_set in &service.extra_descriptor_sets {
        builder = builder.register_encoded_file_descriptor_set(descriptor_set);
    }
    for name in &service.grpc_names {
        builder = builder.with_service_name(*name);
    }
    builder
        .with_service_name(HEALTH)
        .with_service_name(reflection_name)
}

/// The sockets a service serves on, bound by the caller (the service's own
/// binary, `keel up`, or a test on port 0).
pub struct Listeners {
    pub grpc: TcpListener,
    /// The admin HTTP server (`/healthz`, `/metrics`, HTTP APIs); `None`
    /// serves no HTTP.
    pub admin: Option<TcpListener>,
}

/// Runs a service's gRPC server and, when it has a listener, its admin HTTP
/// server (`/healthz`, `/metrics` and the service's own `admin_routes`),
/// until `shutdown` is cancelled. If either fails, both stop.
pub async fn run_service(
    service: GrpcService,
    admin_routes: axum::Router,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let name = service.name;
    let metrics = service.metrics.clone();
    let auth = service.auth.clone();
    let tls = service.tls.clone();
    let cors = crate::cors::json_api_layer(&service.cors_allowed_origins)?;
    let stop_both = shutdown.child_token();
    let readiness = Readiness::new(crate::health::is_warm(service.warmup.as_ref()));
    let grpc = serve_grpc(
        service,
        listeners.grpc,
        readiness.clone(),
        stop_both.clone(),
    );
    let Some(admin_listener) = listeners.admin else {
        return grpc.await;
    };
    check_protected(name, admin_listener.local_addr()?, &auth)?;
    // CORS outside the key check: a preflight passes, and a refusal
    // carries the headers a page needs to read it.
    let admin_router = admin_routes
        .merge(crate::admin::router(metrics, readiness))
        .layer(AuthLayer::<HttpRoutes>::new(auth.authenticator()))
        .layer(cors);
    let admin =
        crate::admin::serve_admin(name, admin_router, admin_listener, tls, stop_both.clone());
    let (grpc_result, admin_result) = tokio::join!(
        async {
            let result = grpc.await;
            stop_both.cancel();
            result
        },
        async {
            let result = admin.await;
            stop_both.cancel();
            result
        }
    );
    grpc_result?;
    admin_result?;
    Ok(())
}

/// A token cancelled on Ctrl-C or SIGTERM, for the binaries.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received, draining");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut terminate) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

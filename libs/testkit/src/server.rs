//! A service under test on 127.0.0.1 port 0: its gRPC port and, when it has
//! one, its admin HTTP port, bound before the service starts so a client can
//! connect at once, and stopped when the test drops it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use keel_core::health::Readiness;
use keel_core::metrics::ServiceMetrics;
use keel_core::{CancellationToken, GrpcService, Listeners, ServeError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// How long a server may take to start answering or to drain on stop: a
/// slow CI machine, never a test's expected wait.
const PATIENCE: Duration = Duration::from_secs(30);

/// An address nothing listens on, for "the dependency is down" tests: the
/// port was free a moment ago and connecting to it is refused.
pub fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Which ports a service under test gets: services with an admin HTTP
/// server (`/healthz`, `/metrics`, HTTP APIs) get that port too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// Only gRPC: `Listeners::admin` is `None`.
    GrpcOnly,
    /// gRPC and the admin HTTP server.
    GrpcAndAdmin,
}

/// A running service: where it listens, and a stop that checks it drained
/// and returned cleanly. Dropping it without `stop` still shuts it down.
pub struct TestServer<E = ServeError> {
    address: SocketAddr,
    admin_address: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), E>>>,
}

impl<E: Send + 'static> TestServer<E> {
    /// Binds the ports, then spawns `serve(listeners, shutdown)` — a
    /// service's own `serve` with its config — so the test runs the same
    /// startup the binary does.
    pub async fn start<S, F>(ports: Ports, serve: S) -> TestServer<E>
    where
        S: FnOnce(Listeners, CancellationToken) -> F,
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = grpc.local_addr().unwrap();
        let admin = match ports {
            Ports::GrpcOnly => None,
            Ports::GrpcAndAdmin => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        };
        let admin_address = admin.as_ref().map(|admin| admin.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(Listeners { grpc, admin }, shutdown.clone()));
        TestServer {
            address,
            admin_address,
            shutdown,
            task: Some(task),
        }
    }

    /// The gRPC address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The gRPC address as the URL a client or a service config takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The admin HTTP address; panics for a server started without one,
    /// which is a mistake in the test.
    pub fn admin_address(&self) -> SocketAddr {
        self.admin_address
            .expect("this server was started without an admin port (Ports::GrpcOnly)")
    }

    /// A channel that connects on first use, as the services' own clients
    /// do, so handing it out never waits.
    pub fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy()
    }

    /// `channel`, its calls presenting `key` and the caller's trace
    /// context, as a Keel service's own clients' calls do.
    pub fn service_channel(&self, key: Option<&str>) -> keel_core::channel::ServiceChannel {
        keel_core::channel::ServiceChannel::new(self.channel(), key)
            .expect("a test key is a valid header")
    }

    /// A connected channel: the handshake waits in the listen backlog until
    /// the service has started (loaded its data) and serves.
    pub async fn connect(&self) -> Channel {
        let endpoint = Channel::from_shared(self.url()).unwrap();
        tokio::time::timeout(PATIENCE, endpoint.connect())
            .await
            .unwrap_or_else(|_| panic!("{} did not accept within {PATIENCE:?}", self.url()))
            .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", self.url()))
    }

    /// A token cancelled when the server stops, for a test that must stop it
    /// while something else still holds it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops the server and returns what its `serve` returned; panics if it
    /// does not drain within the patience or its task panicked.
    pub async fn stop(mut self) -> Result<(), E> {
        self.shutdown.cancel();
        let task = self.task.take().expect("a server is stopped once");
        tokio::time::timeout(PATIENCE, task)
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within {PATIENCE:?}", self.url()))
            .unwrap_or_else(|error| panic!("the server task of {} failed: {error}", self.url()))
    }
}

impl TestServer<ServeError> {
    /// Serves a bare `GrpcService` (a fake's routes) with the same bootstrap
    /// the services use, health and reflection included.
    pub async fn grpc(name: &'static str, routes: tonic::service::Routes) -> TestServer {
        let service = GrpcService {
            name,
            grpc_names: vec![],
            routes,
            store: None,
            extra_descriptor_sets: Vec::new(),
            metrics: ServiceMetrics::new(name),
            cors_allowed_origins: Vec::new(),
            warmup: None,
            auth: keel_core::auth::Auth::off(),
            tls: None,
        };
        TestServer::start(Ports::GrpcOnly, |listeners, shutdown| {
            keel_core::serve_grpc(service, listeners.grpc, Readiness::serving(), shutdown)
        })
        .await
    }
}

impl<E> Drop for TestServer<E> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

//! (j) Honest health and reflection: a service reports NOT_SERVING (gRPC
//! health and `/healthz`) while its database is unreachable and SERVING
//! again when it returns; each port's reflection, v1 and v1alpha, lists
//! exactly the services that port serves.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::channel::ServiceChannel;
use keel_proto::v1::ListModelsRequest;
use keel_tests::cluster::Service;
use keel_tests::{eventually, on_both_backends, Backend, Cluster, Storage};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::{v1, v1alpha};

on_both_backends!(reflection_lists_what_each_port_serves);

/// Postgres stops under the services (a proxy between them and Postgres is
/// cut: every connection closed, new ones refused) and comes back. SQLite
/// is a file in the service's own process: it has no outage to simulate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_postgres_going_away_and_coming_back() {
    let storage = Storage::fresh(Backend::Postgres).await;
    let upstream = postgres_address(&keel_store::testing::test_postgres_url());
    let mut proxy = Proxy::start(upstream).await;
    let proxy_address = proxy.address;
    let cluster = Cluster::start_with(&storage, |config| {
        for url in config.database_urls_mut() {
            *url = through(url, proxy_address);
        }
    })
    .await;
    for service in Service::ALL {
        assert_eq!(health(&cluster, service).await, ServingStatus::Serving);
    }

    proxy.stop();
    for service in Service::ALL {
        wait_for_health(&cluster, service, ServingStatus::NotServing).await;
    }
    assert_eq!(healthz(&cluster, Service::Registry).await, 503);
    let refused = cluster
        .registry
        .clone()
        .list_models(ListModelsRequest::default())
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unavailable);

    proxy.restart().await;
    for service in Service::ALL {
        wait_for_health(&cluster, service, ServingStatus::Serving).await;
    }
    assert_eq!(healthz(&cluster, Service::Registry).await, 200);
    cluster
        .registry
        .clone()
        .list_models(ListModelsRequest::default())
        .await
        .expect("the registry answers again once Postgres is back");
    cluster.shutdown().await;
}

async fn reflection_lists_what_each_port_serves(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    let own_services = [
        (Service::Registry, vec!["keel.v1.RegistryService"]),
        (Service::VectorIndex, vec!["keel.v1.VectorIndexService"]),
        (Service::Serving, vec!["keel.v1.ServingService"]),
        (Service::Feedback, vec!["keel.v1.FeedbackService"]),
        (
            Service::Monitoring,
            vec![
                "keel.v1.MonitoringService",
                "opentelemetry.proto.collector.trace.v1.TraceService",
            ],
        ),
    ];
    for (service, names) in own_services {
        let channel = channel(&cluster, service);
        let mut expected_v1: BTreeSet<String> = names.iter().map(|name| name.to_string()).collect();
        expected_v1.insert("grpc.health.v1.Health".to_string());
        let mut expected_v1alpha = expected_v1.clone();
        expected_v1.insert("grpc.reflection.v1.ServerReflection".to_string());
        expected_v1alpha.insert("grpc.reflection.v1alpha.ServerReflection".to_string());
        assert_eq!(
            list_services_v1(channel.clone()).await,
            expected_v1,
            "{service} (v1)"
        );
        assert_eq!(
            list_services_v1alpha(channel.clone()).await,
            expected_v1alpha,
            "{service} (v1alpha)"
        );
        // A client can describe what is listed (grpcurl describe).
        let file = file_containing_symbol_v1alpha(channel, names[0]).await;
        assert!(
            !file.is_empty(),
            "{service}: no descriptor for {}",
            names[0]
        );
    }
    cluster.shutdown().await;
}

/// Reflection, like every call but health, needs a key (`read`).
fn channel(cluster: &Cluster, service: Service) -> ServiceChannel {
    keel_tests::channel(&cluster.keel, service)
}

async fn list_services_v1(channel: ServiceChannel) -> BTreeSet<String> {
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    match answer.message_response {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("not a service list: {other:?}"),
    }
}

async fn list_services_v1alpha(channel: ServiceChannel) -> BTreeSet<String> {
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    match answer.message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) => {
            list.service
                .into_iter()
                .map(|service| service.name)
                .collect()
        }
        other => panic!("not a service list: {other:?}"),
    }
}

/// The encoded file descriptors that define `symbol`.
async fn file_containing_symbol_v1alpha(channel: ServiceChannel, symbol: &str) -> Vec<Vec<u8>> {
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                symbol.to_string(),
            ),
        ),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    match answer.message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(
            files,
        )) => files.file_descriptor_proto,
        other => panic!("{symbol}: not a descriptor: {other:?}"),
    }
}

async fn health(cluster: &Cluster, service: Service) -> ServingStatus {
    let mut client = HealthClient::new(channel(cluster, service));
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    response.status()
}

async fn wait_for_health(cluster: &Cluster, service: Service, wanted: ServingStatus) {
    eventually(
        &format!("{service} to report {wanted:?}"),
        Duration::from_secs(20),
        || async { (health(cluster, service).await == wanted).then_some(()) },
    )
    .await;
}

/// The status code of the admin port's `/healthz`.
async fn healthz(cluster: &Cluster, service: Service) -> u16 {
    let address = cluster.keel.admin_addr(service);
    let request = keel_testkit::http_request("GET", "/healthz", &[], b"");
    keel_testkit::http_exchange(address, request).await.status
}

/// `host:port` of a `postgres://user@host:port/db` URL.
fn postgres_address(url: &str) -> SocketAddr {
    let after_scheme = url.trim_start_matches("postgres://");
    let authority = after_scheme.split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    host_port
        .parse()
        .unwrap_or_else(|error| panic!("{host_port:?} in {url:?}: {error}"))
}

/// `url` with its host and port replaced by `address`.
fn through(url: &str, address: SocketAddr) -> String {
    let upstream = postgres_address(url).to_string();
    url.replacen(&upstream, &address.to_string(), 1)
}

/// A TCP proxy to Postgres that the test can cut and restore.
struct Proxy {
    address: SocketAddr,
    upstream: SocketAddr,
    accept_task: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut proxy = Proxy {
            address: listener.local_addr().unwrap(),
            upstream,
            accept_task: None,
            connections: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream;
        let connections = self.connections.clone();
        self.accept_task = Some(tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let relay = tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                connections.lock().unwrap().push(relay);
            }
        }));
    }

    /// Closes the listener and every relayed connection.
    fn stop(&mut self) {
        if let Some(task) = self.accept_task.take() {
            task.abort();
        }
        for relay in self.connections.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    /// Listens again on the same address.
    async fn restart(&mut self) {
        let listener = eventually(
            "the proxy's port to be free",
            Duration::from_secs(5),
            || async { TcpListener::bind(self.address).await.ok() },
        )
        .await;
        self.serve(listener);
    }
}

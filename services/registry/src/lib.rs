//! keel-registry: models (RAG chains and prompt templates), their immutable
//! versions, movable aliases with compare-and-set, the audit trail of every
//! alias move, and a live stream of moves for watchers.

pub mod alias_feed;
pub mod aliases;
pub mod api;
pub mod api_key_store;
pub mod api_keys;
pub mod config;
pub mod error;
pub mod evaluation_store;
pub mod evaluations;
pub mod gate_store;
pub mod gates;
pub mod lineage;
pub mod metrics;
pub mod pagination;
pub mod registry;
pub mod spec;
pub mod standalone;
pub mod store;

use std::sync::Arc;

use keel_core::metrics::ServiceMetrics;
use keel_core::{CancellationToken, GrpcService, Listeners};
use keel_proto::v1::registry_service_server::RegistryServiceServer;

pub use config::Config;
pub use error::Error;

/// Serves the registry on `listeners` until `shutdown` is cancelled, then
/// drains (open watch streams end) and returns.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let store = keel_store::Store::open(&config.database_url, store::MIGRATIONS).await?;
    let service_metrics = ServiceMetrics::new("registry");
    let registry = Arc::new(
        registry::Registry::open(
            store.clone(),
            config.watch_buffer,
            metrics::Metrics::new(&service_metrics)?,
            shutdown.clone(),
        )
        .await?,
    );
    let follower = {
        let registry = registry.clone();
        let database_url = config.database_url.clone();
        tokio::spawn(async move { registry.follow_alias_moves(&database_url).await })
    };
    let tls = config.tls.load()?;
    let auth = keel_core::auth::Auth::with_lookup(
        &config.auth,
        Arc::new(api_keys::LocalKeys(registry.clone())),
    )?;
    let service = GrpcService {
        name: "registry",
        grpc_names: vec!["keel.v1.RegistryService"],
        routes: tonic::service::Routes::new(RegistryServiceServer::new(api::RegistryApi::new(
            registry,
        ))),
        store: Some(store.clone()),
        extra_descriptor_sets: Vec::new(),
        metrics: service_metrics,
        cors_allowed_origins: Vec::new(),
        warmup: None,
        auth,
        tls: tls.server.clone(),
    };
    let served = keel_core::run_service(service, axum::Router::new(), listeners, shutdown).await;
    // Ended by shutdown already, unless the server failed on its own.
    follower.abort();
    let _ = follower.await;
    store.close().await;
    served?;
    Ok(())
}

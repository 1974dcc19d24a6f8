//! keel-vector-index: collections of points (id, vector, text, payload)
//! searched by vector or by text, with an in-memory HNSW graph per
//! collection (hnsw_rs) rebuilt at start-up from the service's database.

pub mod api;
pub mod collections;
pub mod config;
pub mod distance;
pub mod error;
pub mod filter;
pub mod index;
pub mod metrics;
pub mod store;

use std::sync::Arc;

use keel_core::{CancellationToken, GrpcService, Listeners};
use keel_proto::v1::vector_index_service_server::VectorIndexServiceServer;

pub use collections::VectorIndex;
pub use config::Config;
pub use error::Error;

/// Serves the vector index on `listeners` until `shutdown` is cancelled.
/// Every collection's graph is rebuilt before the listeners accept calls.
pub async fn serve(
    config: Config,
    catalog: keel_models::ModelCatalog,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let store = keel_store::Store::open(&config.database_url, store::MIGRATIONS).await?;
    let index = VectorIndex::open(store.clone(), catalog, config.exact_search_threshold).await?;
    tracing::info!(
        collections = index.collection_count(),
        points = index.point_count(),
        "vector index loaded"
    );
    let metrics_index = Arc::clone(&index);
    let metrics_renderer: keel_core::admin::MetricsRenderer = Arc::new(move || {
        metrics_index.metrics.render(
            metrics_index.collection_count(),
            metrics_index.point_count(),
        )
    });
    let admin_router = keel_core::admin::router(metrics_renderer);
    let service = GrpcService {
        name: "vector-index",
        grpc_names: vec!["keel.v1.VectorIndexService"],
        routes: tonic::service::Routes::new(VectorIndexServiceServer::new(api::Api::new(
            index,
            config.default_embedder.clone(),
        ))),
    };
    let result = keel_core::run_service(service, admin_router, listeners, shutdown).await;
    store.close().await;
    result?;
    Ok(())
}

#[cfg(test)]
mod tests;

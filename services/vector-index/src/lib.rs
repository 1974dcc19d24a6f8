//! keel-vector-index: collections of points (id, vector, text, payload)
//! searched by vector or by text, with an in-memory HNSW graph per
//! collection (hnsw_rs) rebuilt at start-up from the service's database.

pub mod api;
pub mod collections;
pub mod config;
pub mod distance;
pub mod error;
pub mod filter;
pub mod filter_proto;
pub mod index;
pub mod metrics;
pub mod payload_index;
pub mod standalone;
pub mod store;

use std::sync::Arc;

use keel_core::metrics::ServiceMetrics;
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
    let service_metrics = ServiceMetrics::new("vector-index");
    let index = VectorIndex::open(
        store.clone(),
        catalog,
        config.exact_search_threshold,
        metrics::Metrics::new(&service_metrics)?,
    )
    .await?;
    tracing::info!(
        collections = index.collection_count(),
        points = index.point_count(),
        "vector index loaded"
    );
    let counted = Arc::clone(&index);
    service_metrics.gauge_fn("keel_vector_index_collections", "Collections.", move || {
        i64::try_from(counted.collection_count()).unwrap_or(i64::MAX)
    })?;
    let counted = Arc::clone(&index);
    service_metrics.gauge_fn(
        "keel_vector_index_points",
        "Live points in all collections.",
        move || i64::try_from(counted.point_count()).unwrap_or(i64::MAX),
    )?;
    let service = GrpcService {
        name: "vector-index",
        grpc_names: vec!["keel.v1.VectorIndexService"],
        routes: tonic::service::Routes::new(VectorIndexServiceServer::new(api::Api::new(
            index,
            config.default_embedder.clone(),
        ))),
        store: Some(store.clone()),
        extra_descriptor_sets: Vec::new(),
        metrics: service_metrics,
        cors_allowed_origins: Vec::new(),
    };
    let result = keel_core::run_service(service, axum::Router::new(), listeners, shutdown).await;
    store.close().await;
    result?;
    Ok(())
}

//! keel-vector-index: collections of points (id, vector, text, payload)
//! searched by vector or by text, with an in-memory HNSW graph per
//! collection (our own, `graph*.rs`), restored at start-up from its snapshot and the
//! rows written since, or rebuilt from the service's database.

pub mod api;
pub mod collections;
mod compaction;
pub mod config;
pub mod distance;
pub mod error;
pub mod filter;
pub mod filter_proto;
pub mod graph;
mod graph_build;
pub mod graph_io;
pub mod graph_search;
pub mod hybrid;
pub mod index;
mod load;
pub mod metrics;
pub mod payload_index;
mod search;
pub mod snapshot;
mod snapshot_task;
pub mod standalone;
pub mod store;
pub mod text_index;

use std::sync::Arc;
use std::time::Duration;

use keel_core::health::Warmup;
use keel_core::metrics::ServiceMetrics;
use keel_core::{CancellationToken, GrpcService, Listeners};
use keel_proto::v1::vector_index_service_server::VectorIndexServiceServer;

pub use collections::VectorIndex;
pub use config::Config;
pub use error::Error;

/// Serves the vector index on `listeners` until `shutdown` is cancelled.
/// The listeners accept calls at once; each collection answers UNAVAILABLE
/// "loading" and gRPC health says NOT_SERVING until the collections are
/// loaded. Changed collections are snapshotted in the background and once
/// more at shutdown.
pub async fn serve(
    config: Config,
    catalog: keel_models::ModelCatalog,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let store = keel_store::Store::open(&config.database_url, store::MIGRATIONS).await?;
    let service_metrics = ServiceMetrics::new("vector-index");
    let snapshots = (!config.snapshot_dir.is_empty())
        .then(|| snapshot::SnapshotStore::new(&config.snapshot_dir));
    let index = VectorIndex::open(
        store.clone(),
        catalog,
        config.exact_search_threshold,
        snapshots,
        metrics::Metrics::new(&service_metrics)?,
    )
    .await?;
    tracing::info!(
        collections = index.collection_count(),
        snapshot_dir = %config.snapshot_dir,
        "vector index opened; loading collections"
    );
    let warmup = Warmup::pending();
    let loader = {
        let index = Arc::clone(&index);
        let warmup = warmup.clone();
        tokio::spawn(async move {
            index.load_all().await;
            warmup.finish();
        })
    };
    let snapshotter = {
        let index = Arc::clone(&index);
        let interval = Duration::from_millis(config.snapshot_interval_ms.max(1));
        let shutdown = shutdown.clone();
        tokio::spawn(async move { index.run_snapshots(interval, shutdown).await })
    };
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
    let tls = config.tls.load()?;
    let auth = keel_core::auth::Auth::through_registry(&config.auth, &tls.client)?;
    let service = GrpcService {
        name: "vector-index",
        grpc_names: vec!["keel.v1.VectorIndexService"],
        routes: tonic::service::Routes::new(VectorIndexServiceServer::new(api::Api::new(
            Arc::clone(&index),
            config.default_embedder.clone(),
        ))),
        store: Some(store.clone()),
        extra_descriptor_sets: Vec::new(),
        metrics: service_metrics,
        cors_allowed_origins: Vec::new(),
        warmup: Some(warmup.clone()),
        auth,
        tls: tls.server.clone(),
    };
    let result =
        keel_core::run_service(service, axum::Router::new(), listeners, shutdown.clone()).await;
    shutdown.cancel();
    loader.abort();
    let _ = snapshotter.await;
    if warmup.is_done() {
        // The next start restores what changed since the last snapshot
        // instead of replaying it.
        index.snapshot_changed().await;
    }
    store.close().await;
    result?;
    Ok(())
}

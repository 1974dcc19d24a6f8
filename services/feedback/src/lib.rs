//! keel-feedback: human feedback on served answers (thumbs, ratings,
//! corrections, comments, flags), on retrieved passages and on whole
//! sessions, tied to monitoring's inference records, and the datasets built
//! from it (SFT, preference pairs, evaluation and retrieval sets).

pub mod api;
pub mod config;
pub mod dataset_export;
pub mod error;
pub mod export;
pub mod feedback;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod monitoring_client;
pub mod pii;
pub mod record;
pub mod standalone;
pub mod store;
pub mod summary;

use std::time::Duration;

use keel_core::metrics::ServiceMetrics;
use keel_core::{CancellationToken, GrpcService, Listeners};
use keel_proto::v1::feedback_service_server::FeedbackServiceServer;

pub use config::Config;
pub use error::Error;

/// Serves the feedback service on `listeners` until `shutdown` is
/// cancelled. `config.database_url` must be set; monitoring may be down.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let timeout_ms = if config.monitoring_timeout_ms == 0 {
        Config::default().monitoring_timeout_ms
    } else {
        config.monitoring_timeout_ms
    };
    let tls = config.tls.load()?;
    let auth = keel_core::auth::Auth::through_registry(&config.auth, &tls.client)?;
    let monitoring = monitoring_client::MonitoringClient::connect_lazy(
        &config.monitoring_url,
        Duration::from_millis(timeout_ms),
        auth.own_key(),
        &tls.client,
    )?;
    let store = keel_store::Store::open(&config.database_url, store::MIGRATIONS).await?;
    let service_metrics = ServiceMetrics::new("feedback");
    let counters = metrics::Counters::new(&service_metrics)?;
    let retention_ms = (config.feedback_retention_ms > 0)
        .then(|| i64::try_from(config.feedback_retention_ms).unwrap_or(i64::MAX));
    let (ingest, ingest_writer) = ingest::FeedbackIngest::new(store.clone(), monitoring.clone());
    let ingest_stop = CancellationToken::new();
    let ingest_task = tokio::spawn(ingest_writer.run(
        move || feedback::keep_records_until(retention_ms),
        ingest_stop.clone(),
    ));
    let book = feedback::FeedbackBook::new(
        store.clone(),
        monitoring,
        counters,
        config.orphan_grace_ms,
        retention_ms,
        ingest,
    );
    let joiner = {
        let book = book.clone();
        tokio::spawn(keel_core::periodic::every(
            Duration::from_millis(config.join_interval_ms.max(1)),
            shutdown.clone(),
            move || {
                let book = book.clone();
                async move { join_waiting(&book).await }
            },
        ))
    };
    let retention = (config.feedback_retention_ms > 0).then(|| {
        let book = book.clone();
        let batch = config.retention_batch.max(1);
        tokio::spawn(keel_core::periodic::every(
            Duration::from_millis(config.retention_interval_ms.max(1)),
            shutdown.clone(),
            move || {
                let book = book.clone();
                async move {
                    if let Err(error) = book.expire(keel_core::time::now_ms(), batch).await {
                        tracing::warn!(%error, "retention failed; it runs again next interval");
                    }
                }
            },
        ))
    });
    let admin_routes = http::router(book.clone());
    let service = GrpcService {
        name: "feedback",
        grpc_names: vec!["keel.v1.FeedbackService"],
        routes: tonic::service::Routes::new(FeedbackServiceServer::new(api::FeedbackApi::new(
            book,
        ))),
        store: Some(store.clone()),
        extra_descriptor_sets: Vec::new(),
        metrics: service_metrics,
        cors_allowed_origins: config.cors_allowed_origins.clone(),
        warmup: None,
        auth,
        tls: tls.server.clone(),
    };
    let served = keel_core::run_service(service, admin_routes, listeners, shutdown).await;
    if let Err(error) = joiner.await {
        tracing::warn!(%error, "feedback join task failed");
    }
    // The server drained: what is queued is all there will be.
    ingest_stop.cancel();
    if let Err(error) = ingest_task.await {
        tracing::warn!(%error, "feedback ingest task failed");
    }
    if let Some(retention) = retention {
        if let Err(error) = retention.await {
            tracing::warn!(%error, "feedback retention task failed");
        }
    }
    store.close().await;
    served?;
    Ok(())
}

/// The join job: looks for the inference records of feedback that came
/// before them.
async fn join_waiting(book: &feedback::FeedbackBook) {
    match book.join_waiting().await {
        Ok(_) => {}
        // Monitoring down: its records come later, and so does the join.
        Err(Error::MonitoringUnavailable { .. }) => {}
        Err(error) => {
            tracing::warn!(%error, "joining feedback with late inference records failed")
        }
    }
}

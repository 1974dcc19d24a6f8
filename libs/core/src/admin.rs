//! The admin HTTP server (gRPC port + 100): `/healthz`, `/metrics` and the
//! service's own HTTP routes.

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Renders the service's metrics in the Prometheus text format.
pub type MetricsRenderer = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

pub fn router(metrics: MetricsRenderer) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(move || async move { metrics() }))
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub async fn serve_admin(
    service: &'static str,
    router: Router,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(service, %address, "admin http listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

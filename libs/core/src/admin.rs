//! The admin HTTP server (gRPC port + 100): `/healthz`, `/metrics` and the
//! service's own HTTP routes.

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Readiness;
use crate::metrics::ServiceMetrics;
use crate::tls::{ServerTls, TlsListener};

/// `/metrics` (Prometheus text) and `/healthz`: 200 while the service can
/// serve, 503 while its store is unreachable, as gRPC health says.
pub fn router(metrics: ServiceMetrics, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    metrics.render(),
                )
            }),
        )
        .route(
            "/healthz",
            get(move || async move {
                if readiness.is_serving() {
                    (StatusCode::OK, "ok\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not serving: store unreachable\n",
                    )
                }
            }),
        )
}

/// Serves `router` on `listener` until `shutdown` is cancelled; over TLS
/// when `tls` is set.
pub async fn serve_admin(
    service: &'static str,
    router: Router,
    listener: TcpListener,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    match tls {
        None => {
            tracing::info!(service, %address, "admin http listening");
            // Streamed answers are many small writes: without TCP_NODELAY
            // each would wait for the peer's delayed ACK.
            let listener = listener.tap_io(|stream| {
                let _ = stream.set_nodelay(true);
            });
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
        Some(tls) => {
            tracing::info!(service, %address, "admin https listening");
            axum::serve(TlsListener::new(listener, tls.http()), router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    }
}

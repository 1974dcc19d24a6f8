//! W3C trace context across every gRPC hop, through the tower layers of
//! `tonic-tracing-opentelemetry`: a server extracts `traceparent` before
//! any span of the call exists and makes the call's span its child; a
//! client opens a span per call and injects its context.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_tracing_opentelemetry::middleware::{client, server};
use tower::Layer;

/// A channel whose calls carry the caller's trace context.
pub type TracedChannel = client::OtelGrpcService<Channel>;

/// The layer every Keel gRPC server runs its calls through.
pub fn server_layer() -> server::OtelGrpcLayer {
    server::OtelGrpcLayer::default().filter(is_traced_path)
}

/// Health checks and reflection would bury the requests that matter, and a
/// span per OTLP export would make span intake export spans forever.
fn is_traced_path(path: &str) -> bool {
    const UNTRACED: [&str; 3] = [
        "/grpc.health.",
        "/grpc.reflection.",
        "/opentelemetry.proto.collector.",
    ];
    !UNTRACED.iter().any(|prefix| path.starts_with(prefix))
}

/// Wraps `channel` so its calls are traced.
pub fn traced(channel: Channel) -> TracedChannel {
    client::OtelGrpcLayer.layer(channel)
}

#[derive(Debug, thiserror::Error)]
#[error("invalid url `{url}`: {reason}")]
pub struct InvalidUrl {
    pub url: String,
    pub reason: String,
}

/// A channel to another service that connects on first use, so a service
/// starts while its dependencies are still down.
pub fn lazy_channel(url: &str, connect_timeout: Duration) -> Result<Channel, InvalidUrl> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|error| InvalidUrl {
            url: url.to_string(),
            reason: error.to_string(),
        })?
        .connect_timeout(connect_timeout)
        // Pings find a dependency that vanished without closing the
        // connection, which would otherwise hang a long-lived stream forever.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reflection_and_span_intake_are_not_traced() {
        assert!(is_traced_path("/keel.v1.ServingService/Query"));
        assert!(!is_traced_path("/grpc.health.v1.Health/Check"));
        assert!(!is_traced_path(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_traced_path(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        ));
    }

    #[tokio::test]
    async fn a_bad_url_is_named() {
        let error = lazy_channel("not a url", Duration::from_secs(1)).unwrap_err();
        assert_eq!(error.url, "not a url");
    }
}

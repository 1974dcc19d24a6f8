//! W3C trace context across every gRPC hop, through tower layers: a
//! server extracts `traceparent` before any span of the call exists and
//! makes the call's span its child (`tonic-tracing-opentelemetry`); a
//! client injects the context of the span it calls from.
//!
//! Clients open no span of their own: the server's span already times the
//! call, and a client span per hop would add a third of the spans of a
//! query for the few microseconds between the two.

use std::time::Duration;

use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tonic_tracing_opentelemetry::middleware::server;
use tower::util::MapRequest;
use tracing_opentelemetry_instrumentation_sdk::{find_current_context, http::inject_context};

/// A channel whose calls carry the caller's trace context.
pub type TracedChannel = MapRequest<Channel, fn(http::Request<Body>) -> http::Request<Body>>;

/// The layer every Keel gRPC server runs its calls through.
pub fn server_layer() -> server::OtelGrpcLayer {
    server::OtelGrpcLayer::default().filter(is_traced_path)
}

/// The calls whose handler opens the call's server span itself (the
/// `query {endpoint}` and `retrieval {collection}` spans, continuing the
/// caller's trace through `telemetry::CallerTrace`): a layer span around
/// them would time the same work twice, and the hot path of every RAG
/// query would carry a third more spans.
pub const HANDLER_TRACED_PATHS: [&str; 3] = [
    "/keel.v1.ServingService/Query",
    "/keel.v1.ServingService/QueryStream",
    "/keel.v1.VectorIndexService/Search",
];

/// Health checks and reflection would bury the requests that matter, a
/// span per OTLP export would make span intake export spans forever, and
/// the handler-traced calls have their own.
fn is_traced_path(path: &str) -> bool {
    const UNTRACED: [&str; 3] = [
        "/grpc.health.",
        "/grpc.reflection.",
        "/opentelemetry.proto.collector.",
    ];
    !UNTRACED.iter().any(|prefix| path.starts_with(prefix)) && !HANDLER_TRACED_PATHS.contains(&path)
}

/// Wraps `channel` so its calls carry the current span's trace context.
pub fn traced(channel: Channel) -> TracedChannel {
    MapRequest::new(channel, with_trace_context)
}

/// Adds `traceparent` (and `tracestate`) of the current span, through the
/// globally installed propagator; nothing when telemetry is off.
fn with_trace_context(mut request: http::Request<Body>) -> http::Request<Body> {
    inject_context(&find_current_context(), request.headers_mut());
    request
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
    fn health_reflection_span_intake_and_handler_traced_calls_have_no_layer_span() {
        assert!(is_traced_path("/keel.v1.ServingService/CreateEndpoint"));
        assert!(is_traced_path("/keel.v1.RegistryService/ResolveReference"));
        assert!(!is_traced_path("/keel.v1.ServingService/Query"));
        assert!(!is_traced_path("/keel.v1.ServingService/QueryStream"));
        assert!(!is_traced_path("/keel.v1.VectorIndexService/Search"));
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

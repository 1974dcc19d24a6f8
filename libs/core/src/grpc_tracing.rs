//! W3C trace context across every gRPC hop, through tower layers: a
//! server extracts `traceparent` before any span of the call exists and
//! makes the call's span its child (`tonic-tracing-opentelemetry`); a
//! client injects the context of the span it calls from
//! (`channel::ServiceChannel`).
//!
//! Clients open no span of their own: the server's span already times the
//! call, and a client span per hop would add a third of the spans of a
//! query for the few microseconds between the two.

use tonic_tracing_opentelemetry::middleware::server;

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
}

//! The scope every call needs: one table for every gRPC method of every
//! Keel service, and the rule for HTTP routes. A method missing from the
//! table needs `admin`, so a new RPC is closed until someone opens it (and
//! a test fails until it is listed).

use keel_types::Scope;

/// What a call needs from its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No key at all: health checks and CORS preflights.
    Open,
    Read,
    Admin,
    FeedbackWrite,
    TracesWrite,
    /// `query:<endpoint>` for the endpoint the request names: the layer
    /// checks the key may query some endpoint, the handler which one.
    SomeQuery,
    /// `query:*`: calls that name no endpoint (a bare model).
    AllQueries,
}

impl Need {
    /// The scope to ask for, for the layer's check; `None` for `Open`.
    pub fn scope(self) -> Option<Scope> {
        match self {
            Need::Open => None,
            Need::Read => Some(Scope::Read),
            Need::Admin => Some(Scope::Admin),
            Need::FeedbackWrite => Some(Scope::FeedbackWrite),
            Need::TracesWrite => Some(Scope::TracesWrite),
            Need::SomeQuery | Need::AllQueries => Some(Scope::Query(None)),
        }
    }
}

const REGISTRY: &str = "keel.v1.RegistryService";
const SERVING: &str = "keel.v1.ServingService";
const VECTOR_INDEX: &str = "keel.v1.VectorIndexService";
const MONITORING: &str = "keel.v1.MonitoringService";
const FEEDBACK: &str = "keel.v1.FeedbackService";
const OTLP_TRACES: &str = "opentelemetry.proto.collector.trace.v1.TraceService";

/// Every method of Keel's gRPC services and what it needs. Reads need
/// `read`; whatever changes models, aliases, gates, keys, endpoints,
/// experiments or collections needs `admin`.
pub const GRPC_METHODS: &[(&str, &str, Need)] = &[
    (REGISTRY, "CreateModel", Need::Admin),
    (REGISTRY, "GetModel", Need::Read),
    (REGISTRY, "ListModels", Need::Read),
    (REGISTRY, "CreateVersion", Need::Admin),
    (REGISTRY, "GetVersion", Need::Read),
    (REGISTRY, "ResolveReference", Need::Read),
    (REGISTRY, "ListVersions", Need::Read),
    (REGISTRY, "SetAlias", Need::Admin),
    (REGISTRY, "DeleteAlias", Need::Admin),
    (REGISTRY, "ListAliasHistory", Need::Read),
    (REGISTRY, "WatchAliases", Need::Read),
    (REGISTRY, "CreateEvaluationRun", Need::Admin),
    (REGISTRY, "AppendEvaluationExamples", Need::Admin),
    (REGISTRY, "FinishEvaluationRun", Need::Admin),
    (REGISTRY, "GetEvaluationRun", Need::Read),
    (REGISTRY, "ListEvaluationRuns", Need::Read),
    (REGISTRY, "ListEvaluationExamples", Need::Read),
    (REGISTRY, "SetPromotionGate", Need::Admin),
    (REGISTRY, "DeletePromotionGate", Need::Admin),
    (REGISTRY, "ListPromotionGates", Need::Read),
    (REGISTRY, "CreateApiKey", Need::Admin),
    (REGISTRY, "ListApiKeys", Need::Admin),
    (REGISTRY, "RevokeApiKey", Need::Admin),
    // The services holding a key check it here: 256 random bits leave
    // nothing to guess, and a service key needs no more than `read`.
    (REGISTRY, "AuthenticateApiKey", Need::Read),
    (SERVING, "CreateEndpoint", Need::Admin),
    (SERVING, "GetEndpoint", Need::Read),
    (SERVING, "ListEndpoints", Need::Read),
    (SERVING, "UpdateEndpoint", Need::Admin),
    (SERVING, "DeleteEndpoint", Need::Admin),
    (SERVING, "Query", Need::SomeQuery),
    (SERVING, "QueryStream", Need::SomeQuery),
    (SERVING, "GetServingStats", Need::Read),
    (SERVING, "Generate", Need::AllQueries),
    (SERVING, "StartExperiment", Need::Admin),
    (SERVING, "GetExperiment", Need::Read),
    (SERVING, "ListExperiments", Need::Read),
    (SERVING, "StopExperiment", Need::Admin),
    (VECTOR_INDEX, "CreateCollection", Need::Admin),
    (VECTOR_INDEX, "GetCollection", Need::Read),
    (VECTOR_INDEX, "ListCollections", Need::Read),
    (VECTOR_INDEX, "DropCollection", Need::Admin),
    (VECTOR_INDEX, "UpsertPoints", Need::Admin),
    (VECTOR_INDEX, "DeletePoints", Need::Admin),
    (VECTOR_INDEX, "Search", Need::Read),
    (VECTOR_INDEX, "GetPoints", Need::Read),
    (VECTOR_INDEX, "ScrollPoints", Need::Read),
    (VECTOR_INDEX, "CountPoints", Need::Read),
    (VECTOR_INDEX, "Embed", Need::Read),
    (VECTOR_INDEX, "CountTokens", Need::Read),
    (MONITORING, "RecordInferences", Need::TracesWrite),
    (MONITORING, "GetInference", Need::Read),
    (MONITORING, "BatchGetInferences", Need::Read),
    (MONITORING, "ListInferences", Need::Read),
    (MONITORING, "GetMetrics", Need::Read),
    (MONITORING, "GetTrace", Need::Read),
    (MONITORING, "SearchTraces", Need::Read),
    (OTLP_TRACES, "Export", Need::TracesWrite),
    (FEEDBACK, "SubmitFeedback", Need::FeedbackWrite),
    (FEEDBACK, "SubmitFeedbackBatch", Need::FeedbackWrite),
    (FEEDBACK, "ListFeedback", Need::Read),
    (FEEDBACK, "ListOrphanedFeedback", Need::Read),
    (FEEDBACK, "ExportDataset", Need::Read),
    (FEEDBACK, "SummarizeFeedback", Need::Read),
];

/// What a gRPC call to `path` (`/package.Service/Method`) needs.
pub fn grpc_need(path: &str) -> Need {
    if path.starts_with("/grpc.health.") {
        return Need::Open;
    }
    // The API is public (the .proto files ship with Keel); reflection
    // still answers only to a key, like every other call.
    if path.starts_with("/grpc.reflection.") {
        return Need::Read;
    }
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Need::Admin;
    };
    GRPC_METHODS
        .iter()
        .find(|(known_service, known_method, _)| {
            *known_service == service && *known_method == method
        })
        .map_or(Need::Admin, |(_, _, need)| *need)
}

/// What an HTTP request on an admin port needs.
pub fn http_need(method: &http::Method, path: &str) -> Need {
    // A browser's CORS preflight never carries credentials.
    if method == http::Method::OPTIONS || path == "/healthz" {
        return Need::Open;
    }
    match (method.as_str(), path) {
        ("POST", "/v1/chat/completions") => Need::SomeQuery,
        ("POST", "/v1/embeddings") => Need::Read,
        ("POST", "/v1/feedback") => Need::FeedbackWrite,
        ("POST", "/v1/traces") => Need::TracesWrite,
        ("GET" | "HEAD", _) => Need::Read,
        _ => Need::Admin,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;

    use super::*;

    /// Every method in Keel's descriptor set, as `Service/Method`.
    fn described_methods(descriptor_set: &[u8]) -> BTreeSet<String> {
        let set = prost_types::FileDescriptorSet::decode(descriptor_set).unwrap();
        set.file
            .iter()
            .flat_map(|file| {
                let package = file.package().to_string();
                file.service.iter().flat_map(move |service| {
                    let service_name = format!("{package}.{}", service.name());
                    service
                        .method
                        .iter()
                        .map(move |method| format!("{service_name}/{}", method.name()))
                })
            })
            .collect()
    }

    #[test]
    fn the_table_lists_every_method_keel_serves_and_nothing_else() {
        let mut served = described_methods(keel_proto::FILE_DESCRIPTOR_SET);
        served.extend(
            described_methods(keel_proto::OTLP_FILE_DESCRIPTOR_SET)
                .into_iter()
                .filter(|method| method.starts_with(OTLP_TRACES)),
        );
        let listed: BTreeSet<String> = GRPC_METHODS
            .iter()
            .map(|(service, method, _)| format!("{service}/{method}"))
            .collect();
        assert_eq!(listed.len(), GRPC_METHODS.len(), "a method listed twice");
        assert_eq!(listed, served);
    }

    #[test]
    fn reads_writes_queries_and_unknown_paths_need_what_they_should() {
        assert_eq!(grpc_need("/grpc.health.v1.Health/Check"), Need::Open);
        assert_eq!(grpc_need("/keel.v1.RegistryService/SetAlias"), Need::Admin);
        assert_eq!(grpc_need("/keel.v1.RegistryService/GetModel"), Need::Read);
        assert_eq!(grpc_need("/keel.v1.ServingService/Query"), Need::SomeQuery);
        assert_eq!(
            grpc_need("/keel.v1.FeedbackService/SubmitFeedback"),
            Need::FeedbackWrite
        );
        assert_eq!(
            grpc_need("/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
            Need::TracesWrite
        );
        assert_eq!(grpc_need("/keel.v1.RegistryService/Nope"), Need::Admin);
        assert_eq!(grpc_need("/nonsense"), Need::Admin);
    }

    #[test]
    fn http_routes_need_what_they_should() {
        use http::Method;
        assert_eq!(http_need(&Method::GET, "/healthz"), Need::Open);
        assert_eq!(http_need(&Method::OPTIONS, "/v1/feedback"), Need::Open);
        assert_eq!(http_need(&Method::GET, "/metrics"), Need::Read);
        assert_eq!(
            http_need(&Method::POST, "/v1/feedback"),
            Need::FeedbackWrite
        );
        assert_eq!(http_need(&Method::POST, "/v1/traces"), Need::TracesWrite);
        assert_eq!(
            http_need(&Method::POST, "/v1/chat/completions"),
            Need::SomeQuery
        );
        assert_eq!(http_need(&Method::POST, "/v1/embeddings"), Need::Read);
        assert_eq!(http_need(&Method::GET, "/v1/models"), Need::Read);
        assert_eq!(http_need(&Method::DELETE, "/anything"), Need::Admin);
    }
}

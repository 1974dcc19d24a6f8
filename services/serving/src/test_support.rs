//! In-test stand-ins for the registry, the vector index and monitoring,
//! served over real gRPC on ephemeral ports.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::{CancellationToken, GrpcService};
use keel_proto::v1 as pb;
use keel_proto::v1::monitoring_service_server::{MonitoringService, MonitoringServiceServer};
use keel_proto::v1::registry_service_server::{RegistryService, RegistryServiceServer};
use keel_proto::v1::vector_index_service_server::{VectorIndexService, VectorIndexServiceServer};
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// An address nothing listens on.
pub fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A gRPC server that stops when dropped.
pub struct RunningServer {
    pub address: SocketAddr,
    shutdown: CancellationToken,
}

impl RunningServer {
    async fn start(name: &'static str, routes: tonic::service::Routes) -> RunningServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let service = GrpcService {
            name,
            grpc_names: vec![],
            routes,
            store: None,
            extra_descriptor_sets: Vec::new(),
            metrics: keel_core::metrics::ServiceMetrics::new(name),
        };
        tokio::spawn(keel_core::serve_grpc(
            service,
            listener,
            keel_core::health::Readiness::serving(),
            shutdown.clone(),
        ));
        RunningServer { address, shutdown }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn channel(&self) -> Channel {
        crate::clients::lazy_channel(&self.url(), Duration::from_secs(2)).unwrap()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake"))
}

// ---------------------------------------------------------------- monitoring

#[derive(Clone, Default)]
struct MonitoringState {
    records: Arc<Mutex<Vec<pb::InferenceRecord>>>,
    batch_sizes: Arc<Mutex<Vec<usize>>>,
}

pub struct FakeMonitoring {
    state: MonitoringState,
    server: RunningServer,
}

impl FakeMonitoring {
    pub async fn start() -> FakeMonitoring {
        let state = MonitoringState::default();
        let routes = tonic::service::Routes::new(MonitoringServiceServer::new(state.clone()));
        let server = RunningServer::start("fake-monitoring", routes).await;
        FakeMonitoring { state, server }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn channel(&self) -> Channel {
        self.server.channel()
    }

    pub fn records(&self) -> Vec<pb::InferenceRecord> {
        self.state.records.lock().unwrap().clone()
    }

    pub fn batch_sizes(&self) -> Vec<usize> {
        self.state.batch_sizes.lock().unwrap().clone()
    }

    pub fn record(&self, request_id: &str) -> Option<pb::InferenceRecord> {
        self.records()
            .into_iter()
            .find(|record| record.request_id == request_id)
    }
}

#[tonic::async_trait]
impl MonitoringService for MonitoringState {
    async fn record_inferences(
        &self,
        request: Request<pb::RecordInferencesRequest>,
    ) -> Result<Response<pb::RecordInferencesResponse>, Status> {
        let records = request.into_inner().records;
        let stored = records.len() as u64;
        self.batch_sizes.lock().unwrap().push(records.len());
        self.records.lock().unwrap().extend(records);
        Ok(Response::new(pb::RecordInferencesResponse { stored }))
    }

    async fn get_inference(
        &self,
        _: Request<pb::GetInferenceRequest>,
    ) -> Result<Response<pb::InferenceRecord>, Status> {
        unimplemented()
    }

    async fn batch_get_inferences(
        &self,
        _: Request<pb::BatchGetInferencesRequest>,
    ) -> Result<Response<pb::BatchGetInferencesResponse>, Status> {
        unimplemented()
    }

    async fn list_inferences(
        &self,
        _: Request<pb::ListInferencesRequest>,
    ) -> Result<Response<pb::ListInferencesResponse>, Status> {
        unimplemented()
    }

    async fn get_metrics(
        &self,
        _: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        unimplemented()
    }

    async fn get_trace(
        &self,
        _: Request<pb::GetTraceRequest>,
    ) -> Result<Response<pb::Trace>, Status> {
        unimplemented()
    }

    async fn search_traces(
        &self,
        _: Request<pb::SearchTracesRequest>,
    ) -> Result<Response<pb::SearchTracesResponse>, Status> {
        unimplemented()
    }
}

// ------------------------------------------------------------------ registry

struct FakeModel {
    kind: pb::ModelKind,
    versions: Vec<pb::ModelVersion>,
    aliases: HashMap<String, u32>,
}

#[derive(Clone)]
pub struct FakeRegistry {
    models: Arc<Mutex<HashMap<String, FakeModel>>>,
    events: broadcast::Sender<pb::AliasEvent>,
    resolve_calls: Arc<AtomicUsize>,
}

pub fn chain_spec(collection: &str, top_k: u32, prompt: &str, generator: &str) -> pb::ChainSpec {
    pb::ChainSpec {
        collection: collection.to_string(),
        top_k,
        filter: None,
        prompt: prompt.to_string(),
        generator: Some(pb::GeneratorSpec {
            name: generator.to_string(),
            params: None,
        }),
        fallbacks: Vec::new(),
    }
}

impl FakeRegistry {
    pub fn new() -> FakeRegistry {
        let (events, _) = broadcast::channel(64);
        FakeRegistry {
            models: Arc::new(Mutex::new(HashMap::new())),
            events,
            resolve_calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub async fn start(&self) -> RunningServer {
        let routes = tonic::service::Routes::new(RegistryServiceServer::new(self.clone()));
        RunningServer::start("fake-registry", routes).await
    }

    pub fn add_model(&self, name: &str, kind: pb::ModelKind) {
        self.models.lock().unwrap().insert(
            name.to_string(),
            FakeModel {
                kind,
                versions: Vec::new(),
                aliases: HashMap::new(),
            },
        );
    }

    fn add_version(&self, model: &str, spec: pb::model_version::Spec) -> u32 {
        let mut models = self.models.lock().unwrap();
        let entry = models.get_mut(model).unwrap();
        let version = entry.versions.len() as u32 + 1;
        entry.versions.push(pb::ModelVersion {
            model: model.to_string(),
            version,
            kind: entry.kind as i32,
            spec: Some(spec),
            ..pb::ModelVersion::default()
        });
        version
    }

    pub fn add_chain_version(&self, model: &str, chain: pb::ChainSpec) -> u32 {
        self.add_version(model, pb::model_version::Spec::Chain(chain))
    }

    pub fn add_prompt_version(&self, model: &str, template: &str) -> u32 {
        self.add_version(
            model,
            pb::model_version::Spec::Prompt(pb::PromptSpec {
                template: template.to_string(),
            }),
        )
    }

    pub fn set_alias(&self, model: &str, alias: &str, version: u32) {
        let previous_version = {
            let mut models = self.models.lock().unwrap();
            let entry = models.get_mut(model).unwrap();
            entry
                .aliases
                .insert(alias.to_string(), version)
                .unwrap_or(0)
        };
        let _no_watchers_is_fine = self.events.send(pb::AliasEvent {
            model: model.to_string(),
            alias: alias.to_string(),
            previous_version,
            new_version: version,
            ..pb::AliasEvent::default()
        });
    }

    pub fn watchers(&self) -> usize {
        self.events.receiver_count()
    }

    pub fn resolve_calls(&self) -> usize {
        self.resolve_calls.load(Ordering::SeqCst)
    }

    fn lookup(&self, reference: &str) -> Option<pb::ModelVersion> {
        let models = self.models.lock().unwrap();
        if let Some((model, alias)) = reference.split_once('@') {
            let entry = models.get(model)?;
            let version = *entry.aliases.get(alias)?;
            return entry.versions.get(version as usize - 1).cloned();
        }
        let (model, version) = reference.split_once('/')?;
        let version: usize = version.parse().ok()?;
        models
            .get(model)?
            .versions
            .get(version.checked_sub(1)?)
            .cloned()
    }
}

type AliasStream = Pin<Box<dyn Stream<Item = Result<pb::AliasEvent, Status>> + Send>>;

#[tonic::async_trait]
impl RegistryService for FakeRegistry {
    async fn create_model(
        &self,
        _: Request<pb::CreateModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        unimplemented()
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let name = request.into_inner().name;
        let models = self.models.lock().unwrap();
        let model = models
            .get(&name)
            .ok_or_else(|| Status::not_found(format!("model `{name}` not found")))?;
        Ok(Response::new(pb::Model {
            name,
            kind: model.kind as i32,
            latest_version: model.versions.len() as u32,
            aliases: model.aliases.clone(),
            ..pb::Model::default()
        }))
    }

    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        unimplemented()
    }

    async fn create_version(
        &self,
        _: Request<pb::CreateVersionRequest>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        unimplemented()
    }

    async fn get_version(
        &self,
        _: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        unimplemented()
    }

    async fn resolve_reference(
        &self,
        request: Request<pb::ResolveReferenceRequest>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        self.resolve_calls.fetch_add(1, Ordering::SeqCst);
        let reference = request.into_inner().reference;
        let version = self
            .lookup(&reference)
            .ok_or_else(|| Status::not_found(format!("reference `{reference}` not found")))?;
        Ok(Response::new(version))
    }

    async fn list_versions(
        &self,
        _: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        unimplemented()
    }

    async fn set_alias(
        &self,
        _: Request<pb::SetAliasRequest>,
    ) -> Result<Response<pb::AliasEvent>, Status> {
        unimplemented()
    }

    async fn delete_alias(
        &self,
        _: Request<pb::DeleteAliasRequest>,
    ) -> Result<Response<pb::AliasEvent>, Status> {
        unimplemented()
    }

    async fn list_alias_history(
        &self,
        _: Request<pb::ListAliasHistoryRequest>,
    ) -> Result<Response<pb::ListAliasHistoryResponse>, Status> {
        unimplemented()
    }

    type WatchAliasesStream = AliasStream;

    async fn watch_aliases(
        &self,
        _: Request<pb::WatchAliasesRequest>,
    ) -> Result<Response<AliasStream>, Status> {
        let events = tokio_stream::wrappers::BroadcastStream::new(self.events.subscribe());
        let stream = events.filter_map(|event| event.ok().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }
}

// -------------------------------------------------------------- vector index

#[derive(Clone, Default)]
pub struct FakeVectorIndex {
    /// collection -> points, best first for every query.
    collections: Arc<Mutex<HashMap<String, Vec<pb::ScoredPoint>>>>,
    traceparents: Arc<Mutex<Vec<String>>>,
}

impl FakeVectorIndex {
    pub async fn start(&self) -> RunningServer {
        let routes = tonic::service::Routes::new(VectorIndexServiceServer::new(self.clone()));
        RunningServer::start("fake-vector-index", routes).await
    }

    pub fn add_collection(&self, name: &str, points: &[(&str, f32, &str)]) {
        let points = points
            .iter()
            .map(|(id, score, text)| pb::ScoredPoint {
                id: id.to_string(),
                score: *score,
                text: text.to_string(),
                payload: None,
            })
            .collect();
        self.collections
            .lock()
            .unwrap()
            .insert(name.to_string(), points);
    }

    pub fn traceparents(&self) -> Vec<String> {
        self.traceparents.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl VectorIndexService for FakeVectorIndex {
    async fn create_collection(
        &self,
        _: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::Collection>, Status> {
        unimplemented()
    }

    async fn get_collection(
        &self,
        _: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::Collection>, Status> {
        unimplemented()
    }

    async fn list_collections(
        &self,
        _: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        unimplemented()
    }

    async fn drop_collection(
        &self,
        _: Request<pb::DropCollectionRequest>,
    ) -> Result<Response<pb::DropCollectionResponse>, Status> {
        unimplemented()
    }

    async fn upsert_points(
        &self,
        _: Request<pb::UpsertPointsRequest>,
    ) -> Result<Response<pb::UpsertPointsResponse>, Status> {
        unimplemented()
    }

    async fn delete_points(
        &self,
        _: Request<pb::DeletePointsRequest>,
    ) -> Result<Response<pb::DeletePointsResponse>, Status> {
        unimplemented()
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        if let Some(value) = request.metadata().get("traceparent") {
            self.traceparents
                .lock()
                .unwrap()
                .push(value.to_str().unwrap_or_default().to_string());
        }
        let search = request.into_inner();
        if search.text.is_empty() {
            return Err(Status::invalid_argument("field `text`: must not be empty"));
        }
        let collections = self.collections.lock().unwrap();
        let points = collections.get(&search.collection).ok_or_else(|| {
            Status::not_found(format!("collection `{}` not found", search.collection))
        })?;
        let best = points.iter().take(search.top_k as usize).cloned().collect();
        Ok(Response::new(pb::SearchResponse { points: best }))
    }
}

// ------------------------------------------------- openai-compatible server

#[derive(Clone)]
struct OpenAiState {
    /// `None`: answer every request with this status instead.
    answer: Option<String>,
    status: u16,
    requests: Arc<AtomicUsize>,
}

/// A chat-completions server speaking the OpenAI wire format: it streams
/// its answer a word per server-sent event, or fails every request.
pub struct FakeOpenAi {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl FakeOpenAi {
    pub async fn answering(answer: &str) -> FakeOpenAi {
        FakeOpenAi::start(Some(answer.to_string()), 200).await
    }

    pub async fn failing(status: u16) -> FakeOpenAi {
        FakeOpenAi::start(None, status).await
    }

    async fn start(answer: Option<String>, status: u16) -> FakeOpenAi {
        let requests = Arc::new(AtomicUsize::new(0));
        let state = OpenAiState {
            answer,
            status,
            requests: requests.clone(),
        };
        let router = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(openai_chat))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stopped = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        FakeOpenAi {
            address,
            requests,
            shutdown,
        }
    }

    /// A generator talking to this server, with `max_retries` retries.
    pub fn generator(&self, max_retries: u32) -> keel_models::SharedGenerator {
        let config = keel_models::OpenAiConfig {
            base_url: format!("http://{}/v1", self.address),
            model: "fake-chat".to_string(),
            max_retries,
            initial_backoff_ms: 1,
            request_timeout_ms: 5_000,
            ..keel_models::OpenAiConfig::default()
        };
        Arc::new(keel_models::OpenAiGenerator::with_api_key(config, None).unwrap())
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn openai_chat(
    axum::extract::State(state): axum::extract::State<OpenAiState>,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    state.requests.fetch_add(1, Ordering::SeqCst);
    let request: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(request["stream"], true, "{request}");
    let Some(answer) = state.answer else {
        let status = axum::http::StatusCode::from_u16(state.status).unwrap();
        return (status, "scripted failure").into_response();
    };
    let mut events = String::new();
    for piece in answer.split_inclusive(' ') {
        let chunk = serde_json::json!({
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}],
        });
        events.push_str(&format!("data: {chunk}\n\n"));
    }
    let finish = serde_json::json!({
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": answer.split_whitespace().count()},
    });
    events.push_str(&format!("data: {finish}\n\ndata: [DONE]\n\n"));
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        events,
    )
        .into_response()
}

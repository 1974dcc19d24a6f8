//! A registry held in memory: models, versions and aliases a test sets up
//! directly, ResolveReference and WatchAliases answered from them, so a
//! service's alias handling is tested without the real registry.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use keel_proto::v1 as pb;
use keel_proto::v1::registry_service_server::{RegistryService, RegistryServiceServer};
use keel_types::{ModelRef, Selector};
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::TestServer;

struct FakeModel {
    kind: pb::ModelKind,
    versions: Vec<pb::ModelVersion>,
    aliases: HashMap<String, u32>,
}

/// The fake registry's state; clones share it, so a test keeps one to
/// change aliases while the server it started answers from it.
#[derive(Clone)]
pub struct FakeRegistry {
    models: Arc<Mutex<HashMap<String, FakeModel>>>,
    events: broadcast::Sender<pb::AliasEvent>,
    resolve_calls: Arc<AtomicUsize>,
}

/// A chain spec with no filter and no fallbacks, the shape most tests need.
pub fn chain_spec(collection: &str, top_k: u32, prompt: &str, generator: &str) -> pb::ChainSpec {
    pb::ChainSpec {
        collection: collection.to_string(),
        top_k,
        filter: None,
        prompt: prompt.to_string(),
        generator: Some(pb::GeneratorSpec {
            name: generator.to_string(),
            params: None,
            model: String::new(),
        }),
        fallbacks: Vec::new(),
        retrieval_mode: 0,
    }
}

impl Default for FakeRegistry {
    fn default() -> FakeRegistry {
        FakeRegistry::new()
    }
}

impl FakeRegistry {
    /// An empty registry.
    pub fn new() -> FakeRegistry {
        let (events, _) = broadcast::channel(64);
        FakeRegistry {
            models: Arc::new(Mutex::new(HashMap::new())),
            events,
            resolve_calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Serves this registry on port 0 until the returned server is dropped.
    pub async fn start(&self) -> TestServer {
        let routes = tonic::service::Routes::new(RegistryServiceServer::new(self.clone()));
        TestServer::grpc("fake-registry", routes).await
    }

    /// Adds a model with no versions and no aliases.
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

    /// Adds the model's next version, a chain; returns its number.
    pub fn add_chain_version(&self, model: &str, chain: pb::ChainSpec) -> u32 {
        self.add_version(model, pb::model_version::Spec::Chain(chain))
    }

    /// Adds the model's next version, a prompt template; returns its number.
    pub fn add_prompt_version(&self, model: &str, template: &str) -> u32 {
        self.add_version(
            model,
            pb::model_version::Spec::Prompt(pb::PromptSpec {
                template: template.to_string(),
            }),
        )
    }

    /// Points an alias at a version and tells every watcher, as a real
    /// alias move does.
    pub fn set_alias(&self, model: &str, alias: &str, version: u32) {
        let previous_version = self.set_alias_silently(model, alias, version);
        let _no_watchers_is_fine = self.events.send(pb::AliasEvent {
            model: model.to_string(),
            alias: alias.to_string(),
            previous_version,
            new_version: version,
            ..pb::AliasEvent::default()
        });
    }

    /// Points an alias at a version without telling the watchers, as when
    /// the announcement was lost on the way; returns the previous version.
    pub fn set_alias_silently(&self, model: &str, alias: &str, version: u32) -> u32 {
        {
            let mut models = self.models.lock().unwrap();
            let entry = models.get_mut(model).unwrap();
            entry
                .aliases
                .insert(alias.to_string(), version)
                .unwrap_or(0)
        }
    }

    /// How many WatchAliases streams are open.
    pub fn watchers(&self) -> usize {
        self.events.receiver_count()
    }

    /// How many ResolveReference calls were made, to check caching.
    pub fn resolve_calls(&self) -> usize {
        self.resolve_calls.load(Ordering::SeqCst)
    }

    fn lookup(&self, reference: &str) -> Option<pb::ModelVersion> {
        let reference = ModelRef::parse("reference", reference).ok()?;
        let models = self.models.lock().unwrap();
        let entry = models.get(&reference.model)?;
        let version = match &reference.selector {
            Selector::Alias(alias) => *entry.aliases.get(alias)?,
            Selector::Version(version) => *version,
        };
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        entry.versions.get(index).cloned()
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

    async fn create_evaluation_run(
        &self,
        _: Request<pb::CreateEvaluationRunRequest>,
    ) -> Result<Response<pb::EvaluationRun>, Status> {
        unimplemented()
    }

    async fn append_evaluation_examples(
        &self,
        _: Request<pb::AppendEvaluationExamplesRequest>,
    ) -> Result<Response<pb::AppendEvaluationExamplesResponse>, Status> {
        unimplemented()
    }

    async fn finish_evaluation_run(
        &self,
        _: Request<pb::FinishEvaluationRunRequest>,
    ) -> Result<Response<pb::EvaluationRun>, Status> {
        unimplemented()
    }

    async fn get_evaluation_run(
        &self,
        _: Request<pb::GetEvaluationRunRequest>,
    ) -> Result<Response<pb::EvaluationRun>, Status> {
        unimplemented()
    }

    async fn list_evaluation_runs(
        &self,
        _: Request<pb::ListEvaluationRunsRequest>,
    ) -> Result<Response<pb::ListEvaluationRunsResponse>, Status> {
        unimplemented()
    }

    async fn list_evaluation_examples(
        &self,
        _: Request<pb::ListEvaluationExamplesRequest>,
    ) -> Result<Response<pb::ListEvaluationExamplesResponse>, Status> {
        unimplemented()
    }

    async fn set_promotion_gate(
        &self,
        _: Request<pb::SetPromotionGateRequest>,
    ) -> Result<Response<pb::PromotionGate>, Status> {
        unimplemented()
    }

    async fn delete_promotion_gate(
        &self,
        _: Request<pb::DeletePromotionGateRequest>,
    ) -> Result<Response<pb::DeletePromotionGateResponse>, Status> {
        unimplemented()
    }

    async fn list_promotion_gates(
        &self,
        _: Request<pb::ListPromotionGatesRequest>,
    ) -> Result<Response<pb::ListPromotionGatesResponse>, Status> {
        unimplemented()
    }

    async fn create_api_key(
        &self,
        _: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        unimplemented()
    }

    async fn list_api_keys(
        &self,
        _: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        unimplemented()
    }

    async fn revoke_api_key(
        &self,
        _: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        unimplemented()
    }

    async fn authenticate_api_key(
        &self,
        _: Request<pb::AuthenticateApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        unimplemented()
    }
}

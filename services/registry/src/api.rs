//! The gRPC edge: validate and convert the wire types, call the registry,
//! convert back. The only module that sees generated types.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use keel_core::payload;
use keel_proto::v1 as pb;
use keel_proto::v1::registry_service_server::RegistryService;
use keel_types::{FieldError, SearchMode, Selector};
use tonic::{Request, Response, Status};

use crate::aliases::{AliasEvent, AliasMove};
use crate::api_keys::{ApiKey, NewKey};
use crate::evaluations::{
    EvaluationExample, EvaluationRun, NewEvaluationRun, RunState, ScoreSummary,
};
use crate::gates::PromotionGate;
use crate::lineage::{DatasetSource, Lineage};
use crate::registry::{Model, ModelVersion, NewModel, NewVersion, Registry, Tags};
use crate::spec::{ChainSpec, GeneratorSpec, ModelKind, PromptSpec, VersionSpec};

pub struct RegistryApi {
    registry: Arc<Registry>,
}

impl RegistryApi {
    pub fn new(registry: Arc<Registry>) -> RegistryApi {
        RegistryApi { registry }
    }
}

type AliasEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::AliasEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RegistryService for RegistryApi {
    async fn create_model(
        &self,
        request: Request<pb::CreateModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let message = request.into_inner();
        let new_model = NewModel {
            kind: kind_from_proto(message.kind)?,
            name: message.name,
            description: message.description,
            tags: tags_from_proto(message.tags),
        };
        let model = self.registry.create_model(new_model).await?;
        Ok(Response::new(model_to_proto(model)))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let message = request.into_inner();
        let model = self.registry.get_model(&message.name).await?;
        Ok(Response::new(model_to_proto(model)))
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let message = request.into_inner();
        let page = self
            .registry
            .list_models(message.page_size, &message.page_token)
            .await?;
        Ok(Response::new(pb::ListModelsResponse {
            models: page.items.into_iter().map(model_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn create_version(
        &self,
        request: Request<pb::CreateVersionRequest>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        let message = request.into_inner();
        let new_version = NewVersion {
            spec: spec_from_proto(message.spec)?,
            model: message.model,
            description: message.description,
            tags: tags_from_proto(message.tags),
            lineage: message.lineage.map(lineage_from_proto).unwrap_or_default(),
        };
        let version = self.registry.create_version(new_version).await?;
        Ok(Response::new(version_to_proto(version)))
    }

    async fn get_version(
        &self,
        request: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        let message = request.into_inner();
        let selector = match message.selector {
            Some(pb::get_version_request::Selector::Version(version)) => Selector::Version(version),
            Some(pb::get_version_request::Selector::Alias(alias)) => Selector::Alias(alias),
            None => {
                return Err(
                    FieldError::new("selector", "must be set to a version or an alias").into(),
                );
            }
        };
        let version = self.registry.get_version(&message.model, &selector).await?;
        Ok(Response::new(version_to_proto(version)))
    }

    async fn resolve_reference(
        &self,
        request: Request<pb::ResolveReferenceRequest>,
    ) -> Result<Response<pb::ModelVersion>, Status> {
        let message = request.into_inner();
        let version = self.registry.resolve_reference(&message.reference).await?;
        Ok(Response::new(version_to_proto(version)))
    }

    async fn list_versions(
        &self,
        request: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        let message = request.into_inner();
        let page = self
            .registry
            .list_versions(&message.model, message.page_size, &message.page_token)
            .await?;
        Ok(Response::new(pb::ListVersionsResponse {
            versions: page.items.into_iter().map(version_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn set_alias(
        &self,
        request: Request<pb::SetAliasRequest>,
    ) -> Result<Response<pb::AliasEvent>, Status> {
        let actor =
            keel_core::auth::audited_actor(request.extensions(), request.get_ref().actor.clone());
        let message = request.into_inner();
        let alias_move = AliasMove {
            model: message.model,
            alias: message.alias,
            version: message.version,
            expected_current_version: message.expected_current_version,
            actor,
            reason: message.reason,
            override_gate: message.override_gate,
        };
        let event = self.registry.set_alias(alias_move).await?;
        Ok(Response::new(event_to_proto(event)))
    }

    async fn delete_alias(
        &self,
        request: Request<pb::DeleteAliasRequest>,
    ) -> Result<Response<pb::AliasEvent>, Status> {
        let actor =
            keel_core::auth::audited_actor(request.extensions(), request.get_ref().actor.clone());
        let message = request.into_inner();
        let alias_move = AliasMove {
            model: message.model,
            alias: message.alias,
            version: 0,
            expected_current_version: message.expected_current_version,
            actor,
            reason: message.reason,
            override_gate: false,
        };
        let event = self.registry.delete_alias(alias_move).await?;
        Ok(Response::new(event_to_proto(event)))
    }

    async fn list_alias_history(
        &self,
        request: Request<pb::ListAliasHistoryRequest>,
    ) -> Result<Response<pb::ListAliasHistoryResponse>, Status> {
        let message = request.into_inner();
        let page = self
            .registry
            .alias_history(
                &message.model,
                &message.alias,
                message.page_size,
                &message.page_token,
            )
            .await?;
        Ok(Response::new(pb::ListAliasHistoryResponse {
            events: page.items.into_iter().map(event_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    type WatchAliasesStream = AliasEventStream;

    async fn watch_aliases(
        &self,
        request: Request<pb::WatchAliasesRequest>,
    ) -> Result<Response<Self::WatchAliasesStream>, Status> {
        let message = request.into_inner();
        let events = self
            .registry
            .watch(&message.model, message.send_initial_state)
            .await?;
        let wire_events = events.map(|item| item.map(event_to_proto).map_err(Status::from));
        Ok(Response::new(Box::pin(wire_events)))
    }

    async fn create_evaluation_run(
        &self,
        request: Request<pb::CreateEvaluationRunRequest>,
    ) -> Result<Response<pb::EvaluationRun>, Status> {
        let actor =
            keel_core::auth::audited_actor(request.extensions(), request.get_ref().actor.clone());
        let message = request.into_inner();
        let new_run = NewEvaluationRun {
            model: message.model,
            version: message.version,
            endpoint: message.endpoint,
            dataset: dataset_from_proto(message.dataset.unwrap_or_default()),
            scorers: message.scorers,
            actor,
            tags: tags_from_proto(message.tags),
        };
        let run = self.registry.create_evaluation_run(new_run).await?;
        Ok(Response::new(run_to_proto(run)))
    }

    async fn append_evaluation_examples(
        &self,
        request: Request<pb::AppendEvaluationExamplesRequest>,
    ) -> Result<Response<pb::AppendEvaluationExamplesResponse>, Status> {
        let message = request.into_inner();
        let examples = message
            .examples
            .into_iter()
            .map(example_from_proto)
            .collect();
        let stored = self
            .registry
            .append_evaluation_examples(&message.run_id, examples)
            .await?;
        Ok(Response::new(pb::AppendEvaluationExamplesResponse {
            stored,
        }))
    }

    async fn finish_evaluation_run(
        &self,
        request: Request<pb::FinishEvaluationRunRequest>,
    ) -> Result<Response<pb::EvaluationRun>, Status> {
        let message = request.into_inner();
        let run = self.registry.finish_evaluation_run(&message.run_id).await?;
        Ok(Response::new(run_to_proto(run)))
    }

    async fn get_evaluation_run(
        &self,
        request: Request<pb::GetEvaluationRunRequest>,
    ) -> Result<Response<pb::EvaluationRun>, Status> {
        let message = request.into_inner();
        let run = self.registry.get_evaluation_run(&message.run_id).await?;
        Ok(Response::new(run_to_proto(run)))
    }

    async fn list_evaluation_runs(
        &self,
        request: Request<pb::ListEvaluationRunsRequest>,
    ) -> Result<Response<pb::ListEvaluationRunsResponse>, Status> {
        let message = request.into_inner();
        let page = self
            .registry
            .list_evaluation_runs(
                &message.model,
                message.version,
                &message.dataset,
                message.page_size,
                &message.page_token,
            )
            .await?;
        Ok(Response::new(pb::ListEvaluationRunsResponse {
            runs: page.items.into_iter().map(run_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn set_promotion_gate(
        &self,
        request: Request<pb::SetPromotionGateRequest>,
    ) -> Result<Response<pb::PromotionGate>, Status> {
        let Some(gate) = request.into_inner().gate else {
            return Err(FieldError::new("gate", "must be set").into());
        };
        let gate = self
            .registry
            .set_promotion_gate(gate_from_proto(gate))
            .await?;
        Ok(Response::new(gate_to_proto(gate)))
    }

    async fn delete_promotion_gate(
        &self,
        request: Request<pb::DeletePromotionGateRequest>,
    ) -> Result<Response<pb::DeletePromotionGateResponse>, Status> {
        let message = request.into_inner();
        self.registry
            .delete_promotion_gate(&message.model, &message.alias)
            .await?;
        Ok(Response::new(pb::DeletePromotionGateResponse {}))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let actor =
            keel_core::auth::audited_actor(request.extensions(), request.get_ref().actor.clone());
        let message = request.into_inner();
        let new_key = NewKey {
            name: message.name,
            scopes: message.scopes,
            expires_at_ms: message.expires_at_ms,
            actor,
        };
        let (key, secret) = self.registry.create_api_key(new_key).await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            key: Some(api_key_to_proto(key)),
            secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let include_inactive = request.into_inner().include_inactive;
        let keys = self.registry.list_api_keys(include_inactive).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.into_iter().map(api_key_to_proto).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let actor =
            keel_core::auth::audited_actor(request.extensions(), request.get_ref().actor.clone());
        let message = request.into_inner();
        let key = self.registry.revoke_api_key(&message.id, &actor).await?;
        Ok(Response::new(api_key_to_proto(key)))
    }

    async fn authenticate_api_key(
        &self,
        request: Request<pb::AuthenticateApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let secret = request.into_inner().secret;
        match self.registry.authenticate_api_key(&secret).await? {
            Some(key) => Ok(Response::new(api_key_to_proto(key))),
            // NOT_FOUND, not UNAUTHENTICATED: the caller (a service
            // checking its own caller) was authenticated; the key it asks
            // about is what is unknown.
            None => Err(Status::not_found(
                "no active API key has this secret: unknown, revoked or expired",
            )),
        }
    }

    async fn list_promotion_gates(
        &self,
        request: Request<pb::ListPromotionGatesRequest>,
    ) -> Result<Response<pb::ListPromotionGatesResponse>, Status> {
        let message = request.into_inner();
        let gates = self.registry.list_promotion_gates(&message.model).await?;
        Ok(Response::new(pb::ListPromotionGatesResponse {
            gates: gates.into_iter().map(gate_to_proto).collect(),
        }))
    }

    async fn list_evaluation_examples(
        &self,
        request: Request<pb::ListEvaluationExamplesRequest>,
    ) -> Result<Response<pb::ListEvaluationExamplesResponse>, Status> {
        let message = request.into_inner();
        let page = self
            .registry
            .list_evaluation_examples(&message.run_id, message.page_size, &message.page_token)
            .await?;
        Ok(Response::new(pb::ListEvaluationExamplesResponse {
            examples: page.items.into_iter().map(example_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}

fn dataset_from_proto(dataset: pb::DatasetSource) -> DatasetSource {
    DatasetSource {
        name: dataset.name,
        digest: dataset.digest,
        examples: dataset.examples,
    }
}

fn dataset_to_proto(dataset: DatasetSource) -> pb::DatasetSource {
    pb::DatasetSource {
        name: dataset.name,
        digest: dataset.digest,
        examples: dataset.examples,
    }
}

fn lineage_from_proto(lineage: pb::Lineage) -> Lineage {
    Lineage {
        parent_version: lineage.parent_version,
        datasets: lineage
            .datasets
            .into_iter()
            .map(dataset_from_proto)
            .collect(),
        evaluation_runs: lineage.evaluation_runs,
    }
}

fn lineage_to_proto(lineage: Lineage) -> pb::Lineage {
    pb::Lineage {
        parent_version: lineage.parent_version,
        datasets: lineage.datasets.into_iter().map(dataset_to_proto).collect(),
        evaluation_runs: lineage.evaluation_runs,
    }
}

fn example_from_proto(example: pb::EvaluationExample) -> EvaluationExample {
    EvaluationExample {
        index: example.index,
        question: example.question,
        reference: example.reference,
        answer: example.answer,
        expected_sources: example.expected_sources,
        retrieved_sources: example.retrieved_sources,
        scores: example.scores.into_iter().collect(),
        request_id: example.request_id,
        latency_ms: example.latency_ms,
        error: example.error,
    }
}

fn example_to_proto(example: EvaluationExample) -> pb::EvaluationExample {
    pb::EvaluationExample {
        index: example.index,
        question: example.question,
        reference: example.reference,
        answer: example.answer,
        expected_sources: example.expected_sources,
        retrieved_sources: example.retrieved_sources,
        scores: example.scores.into_iter().collect(),
        request_id: example.request_id,
        latency_ms: example.latency_ms,
        error: example.error,
    }
}

fn summary_to_proto(summary: ScoreSummary) -> pb::ScoreSummary {
    pb::ScoreSummary {
        scorer: summary.scorer,
        count: summary.count,
        mean: summary.mean,
        stddev: summary.stddev,
        ci_low: summary.ci_low,
        ci_high: summary.ci_high,
    }
}

fn run_to_proto(run: EvaluationRun) -> pb::EvaluationRun {
    let state = match run.state {
        RunState::Running => pb::EvaluationRunState::Running,
        RunState::Finished => pb::EvaluationRunState::Finished,
    };
    pb::EvaluationRun {
        id: run.id,
        model: run.model,
        version: run.version,
        endpoint: run.endpoint,
        dataset: Some(dataset_to_proto(run.dataset)),
        scorers: run.scorers,
        state: state as i32,
        summaries: run.summaries.into_iter().map(summary_to_proto).collect(),
        example_count: run.example_count,
        error_count: run.error_count,
        actor: run.actor,
        tags: run.tags.into_iter().collect(),
        created_at_ms: run.created_at_ms,
        finished_at_ms: run.finished_at_ms,
    }
}

fn kind_from_proto(kind: i32) -> Result<ModelKind, FieldError> {
    match pb::ModelKind::try_from(kind) {
        Ok(pb::ModelKind::Chain) => Ok(ModelKind::Chain),
        Ok(pb::ModelKind::Prompt) => Ok(ModelKind::Prompt),
        Ok(pb::ModelKind::Unspecified) | Err(_) => Err(FieldError::new(
            "kind",
            format!("must be MODEL_KIND_CHAIN or MODEL_KIND_PROMPT, got {kind}"),
        )),
    }
}

fn kind_to_proto(kind: ModelKind) -> i32 {
    match kind {
        ModelKind::Chain => pb::ModelKind::Chain as i32,
        ModelKind::Prompt => pb::ModelKind::Prompt as i32,
    }
}

fn tags_from_proto(tags: std::collections::HashMap<String, String>) -> Tags {
    tags.into_iter().collect()
}

fn spec_from_proto(
    spec: Option<pb::create_version_request::Spec>,
) -> Result<Option<VersionSpec>, FieldError> {
    let converted = match spec {
        None => None,
        Some(pb::create_version_request::Spec::Prompt(prompt)) => {
            Some(VersionSpec::Prompt(PromptSpec {
                template: prompt.template,
            }))
        }
        Some(pb::create_version_request::Spec::Chain(chain)) => {
            Some(VersionSpec::Chain(chain_from_proto(chain)?))
        }
    };
    Ok(converted)
}

fn chain_from_proto(chain: pb::ChainSpec) -> Result<ChainSpec, FieldError> {
    let filter = match &chain.filter {
        Some(filter) => payload::struct_to_json("chain.filter", filter)?,
        None => serde_json::Map::new(),
    };
    // A missing generator reads as an empty one and fails on its name.
    let generator = generator_from_proto(chain.generator.unwrap_or_default());
    let fallbacks = chain
        .fallbacks
        .into_iter()
        .map(generator_from_proto)
        .collect();
    Ok(ChainSpec {
        collection: chain.collection,
        top_k: chain.top_k,
        filter,
        prompt: chain.prompt,
        generator,
        fallbacks,
        retrieval_mode: SearchMode::from_proto("chain.retrieval_mode", chain.retrieval_mode)?,
    })
}

fn api_key_to_proto(key: ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        id: key.id,
        name: key.name,
        scopes: key.scopes,
        created_at_ms: key.created_at_ms,
        expires_at_ms: key.expires_at_ms,
        revoked_at_ms: key.revoked_at_ms,
        created_by: key.created_by,
    }
}

fn generator_from_proto(generator: pb::GeneratorSpec) -> GeneratorSpec {
    GeneratorSpec {
        name: generator.name,
        params: generator.params.unwrap_or_default().into(),
        model: generator.model,
    }
}

fn generator_to_proto(generator: GeneratorSpec) -> pb::GeneratorSpec {
    pb::GeneratorSpec {
        name: generator.name,
        params: Some(generator.params.into()),
        model: generator.model,
    }
}

fn spec_to_proto(spec: VersionSpec) -> pb::model_version::Spec {
    match spec {
        VersionSpec::Prompt(prompt) => pb::model_version::Spec::Prompt(pb::PromptSpec {
            template: prompt.template,
        }),
        VersionSpec::Chain(chain) => pb::model_version::Spec::Chain(pb::ChainSpec {
            collection: chain.collection,
            top_k: chain.top_k,
            filter: Some(payload::json_to_struct(&chain.filter)),
            prompt: chain.prompt,
            generator: Some(generator_to_proto(chain.generator)),
            fallbacks: chain
                .fallbacks
                .into_iter()
                .map(generator_to_proto)
                .collect(),
            retrieval_mode: pb::SearchMode::from(chain.retrieval_mode) as i32,
        }),
    }
}

fn model_to_proto(model: Model) -> pb::Model {
    pb::Model {
        name: model.name,
        kind: kind_to_proto(model.kind),
        description: model.description,
        tags: model.tags.into_iter().collect(),
        created_at_ms: model.created_at_ms,
        latest_version: model.latest_version,
        aliases: model.aliases.into_iter().collect(),
    }
}

fn version_to_proto(version: ModelVersion) -> pb::ModelVersion {
    pb::ModelVersion {
        model: version.model,
        version: version.version,
        kind: kind_to_proto(version.kind),
        spec: Some(spec_to_proto(version.spec)),
        description: version.description,
        tags: version.tags.into_iter().collect(),
        created_at_ms: version.created_at_ms,
        aliases: version.aliases,
        lineage: Some(lineage_to_proto(version.lineage)),
    }
}

fn event_to_proto(event: AliasEvent) -> pb::AliasEvent {
    pb::AliasEvent {
        model: event.model,
        alias: event.alias,
        previous_version: event.previous_version,
        new_version: event.new_version,
        actor: event.actor,
        reason: event.reason,
        at_ms: event.at_ms,
        sequence: event.sequence,
        overridden_gates: event.overridden_gates,
    }
}

fn gate_from_proto(gate: pb::PromotionGate) -> PromotionGate {
    PromotionGate {
        model: gate.model,
        alias: gate.alias,
        require_description: gate.require_description,
        required_tags: gate.required_tags.into_iter().collect(),
        evaluation_dataset: gate.evaluation_dataset,
        min_scores: gate.min_scores.into_iter().collect(),
        max_scores: gate.max_scores.into_iter().collect(),
        max_regression: gate.max_regression.into_iter().collect(),
        updated_at_ms: 0,
    }
}

fn gate_to_proto(gate: PromotionGate) -> pb::PromotionGate {
    pb::PromotionGate {
        model: gate.model,
        alias: gate.alias,
        require_description: gate.require_description,
        required_tags: gate.required_tags.into_iter().collect(),
        evaluation_dataset: gate.evaluation_dataset,
        min_scores: gate.min_scores.into_iter().collect(),
        max_scores: gate.max_scores.into_iter().collect(),
        max_regression: gate.max_regression.into_iter().collect(),
        updated_at_ms: gate.updated_at_ms,
    }
}

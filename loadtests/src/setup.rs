//! `keel-loadtest setup`: everything a run needs, created idempotently —
//! a collection with the corpus, a prompt and a chain at `@champion`, and
//! an endpoint routing to the chain.

use std::path::PathBuf;

use keel_core::channel::ServiceChannel;
use keel_proto::v1::registry_service_client::RegistryServiceClient;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_proto::v1::{
    create_version_request, get_version_request, ChainSpec, CreateCollectionRequest,
    CreateEndpointRequest, CreateModelRequest, CreateVersionRequest, GeneratorSpec,
    GetVersionRequest, Metric, ModelKind, Point, PromptSpec, QueryRequest, Route, SetAliasRequest,
    UpsertPointsRequest,
};
use tonic::Code;

use crate::client::connect;
use crate::corpus::{self, Passage};
use crate::error::Error;
use crate::workload::QUESTIONS;

const EMBEDDER: &str = "hashing";
const GENERATOR: &str = "extractive";
const TOP_K: u32 = 4;
const CHAMPION: &str = "champion";
const ACTOR: &str = "keel-loadtest";
/// Well under the 1000 points UpsertPoints accepts, so one call stays small.
const UPSERT_BATCH: usize = 256;
/// Paragraphs of the synthetic corpus.
pub const SYNTHETIC_PARAGRAPHS: usize = 200;

const PROMPT_TEMPLATE: &str = "Answer the question using only the context below.\n\n\
Context:\n{% for context in contexts %}[{{ context.id }}] {{ context.text }}\n{% endfor %}\n\
Question: {{ question }}";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorpusSource {
    Directory(PathBuf),
    Synthetic,
}

#[derive(Debug, Clone)]
pub struct SetupOptions {
    pub registry_url: String,
    pub vector_index_url: String,
    pub serving_url: String,
    pub corpus: CorpusSource,
    pub collection: String,
    pub endpoint: String,
    /// The key every call presents: setup creates models, an endpoint and
    /// a collection, which needs `admin`.
    pub api_key: Option<String>,
}

impl SetupOptions {
    /// The PROMPT model's name, derived from the endpoint's.
    pub fn prompt_model(&self) -> String {
        format!("{}-prompt", self.endpoint)
    }

    /// The CHAIN model's name, derived from the endpoint's.
    pub fn chain_model(&self) -> String {
        format!("{}-chain", self.endpoint)
    }
}

/// What setup found or made.
#[derive(Debug, Clone)]
pub struct SetupReport {
    pub collection: String,
    pub collection_created: bool,
    pub points_upserted: u64,
    pub prompt_reference: String,
    pub chain_reference: String,
    pub endpoint: String,
    pub endpoint_created: bool,
    /// The answer to one query through the endpoint, proof that it serves.
    pub sample_answer: String,
}

pub async fn setup(options: &SetupOptions) -> Result<SetupReport, Error> {
    // Read the corpus first: a missing directory should fail before
    // anything is created.
    let passages = read_corpus(&options.corpus).await?;

    let mut vector_index = VectorIndexServiceClient::new(
        connect(&options.vector_index_url, options.api_key.as_deref()).await?,
    );
    let mut registry = RegistryServiceClient::new(
        connect(&options.registry_url, options.api_key.as_deref()).await?,
    );
    let mut serving =
        ServingServiceClient::new(connect(&options.serving_url, options.api_key.as_deref()).await?);

    let collection_created = ensure_collection(&mut vector_index, &options.collection).await?;
    let points_upserted =
        upsert_passages(&mut vector_index, &options.collection, &passages).await?;

    let prompt_model = options.prompt_model();
    ensure_model(&mut registry, &prompt_model, ModelKind::Prompt).await?;
    let prompt_spec = create_version_request::Spec::Prompt(PromptSpec {
        template: PROMPT_TEMPLATE.to_string(),
    });
    let prompt_version = ensure_champion(&mut registry, &prompt_model, prompt_spec).await?;

    let chain_model = options.chain_model();
    ensure_model(&mut registry, &chain_model, ModelKind::Chain).await?;
    let chain_spec = create_version_request::Spec::Chain(ChainSpec {
        collection: options.collection.clone(),
        top_k: TOP_K,
        filter: None,
        prompt: format!("{prompt_model}@{CHAMPION}"),
        generator: Some(GeneratorSpec {
            name: GENERATOR.to_string(),
            params: None,
            model: String::new(),
        }),
        fallbacks: Vec::new(),
        retrieval_mode: 0,
    });
    let chain_version = ensure_champion(&mut registry, &chain_model, chain_spec).await?;

    let chain_target = format!("{chain_model}@{CHAMPION}");
    let endpoint_created = ensure_endpoint(&mut serving, &options.endpoint, &chain_target).await?;
    let sample_answer = sample_query(&mut serving, &options.endpoint).await?;

    Ok(SetupReport {
        collection: options.collection.clone(),
        collection_created,
        points_upserted,
        prompt_reference: format!("{prompt_model}/{prompt_version}"),
        chain_reference: format!("{chain_model}/{chain_version}"),
        endpoint: options.endpoint.clone(),
        endpoint_created,
        sample_answer,
    })
}

async fn read_corpus(source: &CorpusSource) -> Result<Vec<Passage>, Error> {
    let dir = match source {
        CorpusSource::Synthetic => return Ok(corpus::synthetic(SYNTHETIC_PARAGRAPHS)),
        CorpusSource::Directory(dir) => dir.clone(),
    };
    let dir_for_task = dir.clone();
    let loaded =
        tokio::task::spawn_blocking(move || corpus::load_markdown_dir(&dir_for_task)).await?;
    let passages = loaded.map_err(|source| Error::Corpus {
        path: dir.clone(),
        source,
    })?;
    if passages.is_empty() {
        return Err(Error::EmptyCorpus { path: dir });
    }
    tracing::info!(corpus = %dir.display(), paragraphs = passages.len(), "corpus read");
    Ok(passages)
}

/// Ok(true) when the call created the thing, Ok(false) when it existed.
fn created_or_existing<T>(
    what: &str,
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Result<bool, Error> {
    match result {
        Ok(_) => Ok(true),
        Err(status) if status.code() == Code::AlreadyExists => Ok(false),
        Err(status) => Err(Error::rpc(what, status)),
    }
}

async fn ensure_collection(
    vector_index: &mut VectorIndexServiceClient<ServiceChannel>,
    collection: &str,
) -> Result<bool, Error> {
    let request = CreateCollectionRequest {
        name: collection.to_string(),
        // 0: the embedder's dimension.
        dimension: 0,
        metric: Metric::Cosine as i32,
        embedder: EMBEDDER.to_string(),
        hnsw: None,
        indexed_payload_keys: Vec::new(),
    };
    let created = created_or_existing(
        "create collection",
        vector_index.create_collection(request).await,
    )?;
    tracing::info!(collection, created, "collection ready");
    Ok(created)
}

async fn upsert_passages(
    vector_index: &mut VectorIndexServiceClient<ServiceChannel>,
    collection: &str,
    passages: &[Passage],
) -> Result<u64, Error> {
    let mut upserted = 0;
    for batch in passages.chunks(UPSERT_BATCH) {
        let mut points = Vec::with_capacity(batch.len());
        for passage in batch {
            let mut payload = serde_json::Map::new();
            payload.insert(
                "source".to_string(),
                serde_json::Value::String(passage.source.clone()),
            );
            points.push(Point {
                id: passage.id.clone(),
                // Empty: the collection embeds the text.
                vector: Vec::new(),
                text: passage.text.clone(),
                payload: Some(keel_core::payload::json_to_struct(&payload)),
            });
        }
        let request = UpsertPointsRequest {
            collection: collection.to_string(),
            points,
        };
        let response = vector_index
            .upsert_points(request)
            .await
            .map_err(|status| Error::rpc("upsert points", status))?;
        upserted += response.into_inner().upserted;
    }
    tracing::info!(collection, upserted, "corpus ingested");
    Ok(upserted)
}

pub(crate) async fn ensure_model(
    registry: &mut RegistryServiceClient<ServiceChannel>,
    model: &str,
    kind: ModelKind,
) -> Result<(), Error> {
    let request = CreateModelRequest {
        name: model.to_string(),
        kind: kind as i32,
        description: "created by keel-loadtest setup".to_string(),
        tags: Default::default(),
    };
    let created = created_or_existing("create model", registry.create_model(request).await)?;
    tracing::info!(model, created, "model ready");
    Ok(())
}

/// The version `@champion` points at, creating a version with `spec` and
/// the alias when the model has none.
pub(crate) async fn ensure_champion(
    registry: &mut RegistryServiceClient<ServiceChannel>,
    model: &str,
    spec: create_version_request::Spec,
) -> Result<u32, Error> {
    let lookup = GetVersionRequest {
        model: model.to_string(),
        selector: Some(get_version_request::Selector::Alias(CHAMPION.to_string())),
    };
    match registry.get_version(lookup).await {
        Ok(response) => {
            let version = response.into_inner().version;
            tracing::info!(model, version, "champion already set");
            return Ok(version);
        }
        Err(status) if status.code() == Code::NotFound => {}
        Err(status) => return Err(Error::rpc("get champion version", status)),
    }
    let create = CreateVersionRequest {
        model: model.to_string(),
        spec: Some(spec),
        description: "load test version".to_string(),
        tags: Default::default(),
        lineage: None,
    };
    let version = registry
        .create_version(create)
        .await
        .map_err(|status| Error::rpc("create version", status))?
        .into_inner()
        .version;
    let set_alias = SetAliasRequest {
        model: model.to_string(),
        alias: CHAMPION.to_string(),
        version,
        // Only if no one set it meanwhile.
        expected_current_version: Some(0),
        actor: ACTOR.to_string(),
        reason: "load test setup".to_string(),
        override_gate: false,
    };
    registry
        .set_alias(set_alias)
        .await
        .map_err(|status| Error::rpc("set champion alias", status))?;
    tracing::info!(model, version, "champion set");
    Ok(version)
}

pub(crate) async fn ensure_endpoint(
    serving: &mut ServingServiceClient<ServiceChannel>,
    endpoint: &str,
    target: &str,
) -> Result<bool, Error> {
    let request = CreateEndpointRequest {
        name: endpoint.to_string(),
        routes: vec![Route {
            target: target.to_string(),
            weight: 1,
        }],
        description: "created by keel-loadtest setup".to_string(),
        shadow: None,
    };
    let created = created_or_existing("create endpoint", serving.create_endpoint(request).await)?;
    tracing::info!(endpoint, target, created, "endpoint ready");
    Ok(created)
}

async fn sample_query(
    serving: &mut ServingServiceClient<ServiceChannel>,
    endpoint: &str,
) -> Result<String, Error> {
    let request = QueryRequest {
        endpoint: endpoint.to_string(),
        question: QUESTIONS[0].to_string(),
        messages: Vec::new(),
        user_id: "lt-setup".to_string(),
        session_id: String::new(),
        ..Default::default()
    };
    let response = serving
        .query(request)
        .await
        .map_err(|status| Error::rpc("sample query", status))?;
    Ok(response.into_inner().answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_derive_from_the_endpoint() {
        let options = SetupOptions {
            registry_url: String::new(),
            vector_index_url: String::new(),
            serving_url: String::new(),
            corpus: CorpusSource::Synthetic,
            collection: "lt-docs".to_string(),
            endpoint: "lt-endpoint".to_string(),
            api_key: None,
        };
        assert_eq!(options.prompt_model(), "lt-endpoint-prompt");
        assert_eq!(options.chain_model(), "lt-endpoint-chain");
    }

    #[tokio::test]
    async fn missing_corpus_fails_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent");
        let options = SetupOptions {
            // Nothing listens here; the corpus error must come first.
            registry_url: "http://127.0.0.1:1".to_string(),
            vector_index_url: "http://127.0.0.1:1".to_string(),
            serving_url: "http://127.0.0.1:1".to_string(),
            corpus: CorpusSource::Directory(absent.clone()),
            collection: "lt-docs".to_string(),
            endpoint: "lt-endpoint".to_string(),
            api_key: None,
        };
        let error = setup(&options).await.unwrap_err();
        assert!(matches!(error, Error::Corpus { ref path, .. } if *path == absent));
    }

    #[tokio::test]
    async fn empty_corpus_names_the_synthetic_flag() {
        let dir = tempfile::tempdir().unwrap();
        let error = read_corpus(&CorpusSource::Directory(dir.path().to_path_buf()))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::EmptyCorpus { .. }));
        assert!(error.to_string().contains("--synthetic"));
    }
}

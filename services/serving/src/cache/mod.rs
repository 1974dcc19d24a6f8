//! The answer cache: answers kept in the vector index, one collection per
//! endpoint (`keel-cache.<endpoint>`), shared by every serving replica and
//! kept across restarts. Each answer is one point: its id is the exact key
//! (a hash of the chain version, the rendered prompt and the parameters),
//! its text the question (embedded by the collection, for the semantic
//! lookup), its payload the answer, the chain version and when it expires.
//! A lookup that fails or is slow is a miss: the cache never fails a query.

pub mod config;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_core::channel::ServiceChannel;
use keel_core::metrics::{MetricsError, ServiceMetrics};
use keel_proto::v1 as pb;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_types::{CacheHit, FinishReason, Passage};
use prometheus::IntCounterVec;
use prost_types::value::Kind;
use serde::{Deserialize, Serialize};
use tonic::Code;

pub use config::{CacheConfig, EndpointCache};

use crate::clients::with_deadline;
use crate::resolver::ResolvedChain;

/// What a cached answer gives back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    pub answer: String,
    /// The passages the answer was written from, best first.
    pub citations: Vec<Passage>,
    pub generator: String,
    pub finish_reason: FinishReason,
}

/// Where in the query an answer is looked for.
pub struct Lookup<'a> {
    pub endpoint: &'a str,
    pub chain: &'a ResolvedChain,
}

#[derive(Clone)]
pub struct AnswerCache {
    client: VectorIndexServiceClient<ServiceChannel>,
    config: Arc<CacheConfig>,
    timeout: Duration,
    /// Collections known to exist.
    created: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Lookups by endpoint, kind and outcome: the hit rate.
    lookups: Option<IntCounterVec>,
}

impl AnswerCache {
    pub fn new(channel: ServiceChannel, config: CacheConfig) -> AnswerCache {
        AnswerCache {
            client: VectorIndexServiceClient::new(channel),
            timeout: Duration::from_millis(config.lookup_timeout_ms),
            config: Arc::new(config),
            created: Arc::default(),
            lookups: None,
        }
    }

    pub fn with_metrics(mut self, registry: &ServiceMetrics) -> Result<AnswerCache, MetricsError> {
        self.lookups = Some(registry.counter_vec(
            "keel_serving_cache_lookups_total",
            "Answer-cache lookups, by endpoint, kind (exact, semantic) and outcome (hit, miss): the hit rate is hits over lookups.",
            &["endpoint", "kind", "outcome"],
        )?);
        Ok(self)
    }

    /// The endpoint's settings, when it caches.
    pub fn settings(&self, endpoint: &str) -> Option<&EndpointCache> {
        self.config.of(endpoint)
    }

    /// An answer to a question similar enough to `question`, before any
    /// retrieval.
    pub async fn similar(&self, lookup: &Lookup<'_>, question: &str) -> Option<CachedAnswer> {
        let settings = self.settings(lookup.endpoint)?;
        if settings.semantic_threshold <= 0.0 {
            return None;
        }
        let request = pb::SearchRequest {
            collection: collection_of(lookup.endpoint),
            text: question.to_string(),
            top_k: 1,
            with_payload: true,
            filter: Some(version_filter(lookup.chain)),
            ..Default::default()
        };
        let found = self.call(self.client.clone().search(request)).await;
        let hit = found.and_then(|response| {
            let best = response.points.into_iter().next()?;
            (best.score >= settings.semantic_threshold)
                .then(|| read_answer(best.payload.as_ref()))
                .flatten()
        });
        self.count(lookup.endpoint, CacheHit::Semantic, hit.is_some());
        hit
    }

    /// The answer to exactly this rendered prompt and these parameters.
    pub async fn exact(&self, lookup: &Lookup<'_>, key: &str) -> Option<CachedAnswer> {
        let settings = self.settings(lookup.endpoint)?;
        if !settings.exact {
            return None;
        }
        let request = pb::GetPointsRequest {
            collection: collection_of(lookup.endpoint),
            ids: vec![key.to_string()],
            with_payload: true,
            with_vectors: false,
        };
        let found = self.call(self.client.clone().get_points(request)).await;
        let hit = found.and_then(|response| {
            let point = response.points.into_iter().next()?;
            read_answer(point.payload.as_ref())
        });
        self.count(lookup.endpoint, CacheHit::Exact, hit.is_some());
        hit
    }

    /// Keeps `answer` for the endpoint's ttl, in the background: the
    /// query that wrote it does not wait. `semantic`: similar questions
    /// may be answered with it too (not an answer within a conversation).
    pub fn remember(
        &self,
        lookup: &Lookup<'_>,
        key: String,
        question: &str,
        semantic: bool,
        answer: CachedAnswer,
    ) {
        let Some(settings) = self.settings(lookup.endpoint) else {
            return;
        };
        let collection = collection_of(lookup.endpoint);
        let expires_at_ms = keel_core::time::now_ms() + settings.ttl_ms as i64;
        let payload = serde_json::json!({
            "served_model": lookup.chain.model,
            "served_version": lookup.chain.version,
            "expires_at_ms": expires_at_ms,
            "semantic": semantic,
            "answer": answer,
        });
        let point = pb::Point {
            id: key,
            vector: Vec::new(),
            text: question.to_string(),
            payload: payload.as_object().map(keel_core::payload::json_to_struct),
        };
        let cache = self.clone();
        tokio::spawn(async move {
            if let Err(status) = cache.upsert(&collection, point).await {
                tracing::debug!(%collection, %status, "could not keep an answer in the cache");
            }
        });
    }

    /// Forgets every answer of `model`'s versions: its alias moved.
    pub async fn forget_model(&self, model: &str) {
        let Ok(collections) = self
            .client
            .clone()
            .list_collections(pb::ListCollectionsRequest {})
            .await
        else {
            return;
        };
        for collection in collections.into_inner().collections {
            if !collection.name.starts_with(COLLECTION_PREFIX) {
                continue;
            }
            if let Err(status) = self.forget_in(&collection.name, model).await {
                tracing::warn!(collection = %collection.name, %status, "could not invalidate cached answers");
            }
        }
    }

    async fn forget_in(&self, collection: &str, model: &str) -> Result<(), tonic::Status> {
        let filter = pb::Filter {
            must: vec![equals("served_model", string_value(model))],
            ..Default::default()
        };
        loop {
            let page = self
                .client
                .clone()
                .scroll_points(pb::ScrollPointsRequest {
                    collection: collection.to_string(),
                    filter: Some(filter.clone()),
                    limit: 1000,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if page.points.is_empty() {
                return Ok(());
            }
            let ids = page.points.into_iter().map(|point| point.id).collect();
            self.client
                .clone()
                .delete_points(pb::DeletePointsRequest {
                    collection: collection.to_string(),
                    ids,
                })
                .await?;
        }
    }

    async fn upsert(&self, collection: &str, point: pb::Point) -> Result<(), tonic::Status> {
        self.ensure_collection(collection).await?;
        self.client
            .clone()
            .upsert_points(pb::UpsertPointsRequest {
                collection: collection.to_string(),
                points: vec![point],
            })
            .await?;
        Ok(())
    }

    async fn ensure_collection(&self, collection: &str) -> Result<(), tonic::Status> {
        let known = self
            .created
            .lock()
            .map(|created| created.contains(collection))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        let request = pb::CreateCollectionRequest {
            name: collection.to_string(),
            embedder: self.config.embedder.clone(),
            indexed_payload_keys: vec!["served_model".to_string(), "served_version".to_string()],
            ..Default::default()
        };
        match self.client.clone().create_collection(request).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::AlreadyExists => {}
            Err(status) => return Err(status),
        }
        if let Ok(mut created) = self.created.lock() {
            created.insert(collection.to_string());
        }
        Ok(())
    }

    /// A lookup's answer, or `None` when it failed or took too long.
    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Option<T> {
        match with_deadline(self.timeout, call).await {
            Ok(response) => Some(response.into_inner()),
            Err(status) => {
                // No collection yet: nothing was kept for the endpoint.
                if status.code() != Code::NotFound {
                    tracing::debug!(%status, "answer-cache lookup failed, answering without it");
                }
                None
            }
        }
    }

    fn count(&self, endpoint: &str, kind: CacheHit, hit: bool) {
        if let Some(lookups) = &self.lookups {
            let outcome = if hit { "hit" } else { "miss" };
            lookups
                .with_label_values(&[endpoint, kind.as_str(), outcome])
                .inc();
        }
    }
}

/// Forgets a model's cached answers whenever one of its aliases moves,
/// until `shutdown`.
pub async fn forget_on_alias_moves(
    cache: AnswerCache,
    mut moves: tokio::sync::broadcast::Receiver<String>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let moved = tokio::select! {
            _ = shutdown.cancelled() => return,
            moved = moves.recv() => moved,
        };
        match moved {
            Ok(model) => cache.forget_model(&model).await,
            // Moves were missed: their answers expire with their ttl.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "alias moves missed, their cached answers live out their ttl"
                );
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

const COLLECTION_PREFIX: &str = "keel-cache.";

fn collection_of(endpoint: &str) -> String {
    format!("{COLLECTION_PREFIX}{endpoint}")
}

/// The exact key of an answer: the chain version, the prompt the
/// generator sees and every parameter it is called with.
pub fn exact_key(lookup: &Lookup<'_>, rendered_prompt: &str) -> String {
    let chain = lookup.chain;
    let generators: Vec<String> =
        std::iter::once((&chain.generator, &chain.generator_model, &chain.params))
            .chain(
                chain
                    .fallbacks
                    .iter()
                    .map(|fallback| (&fallback.name, &fallback.model, &fallback.params)),
            )
            .map(|(name, model, params)| {
                format!(
                    "{name}\u{1f}{model}\u{1f}{}",
                    serde_json::to_string(params).unwrap_or_default()
                )
            })
            .collect();
    let material = [
        lookup.endpoint,
        &chain.model,
        &chain.version.to_string(),
        &generators.join("\u{1e}"),
        rendered_prompt,
    ]
    .join("\u{1d}");
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(material.as_bytes()))
}

/// Answers of this chain version for similar questions that have not
/// expired.
fn version_filter(chain: &ResolvedChain) -> pb::Filter {
    pb::Filter {
        must: vec![
            equals(
                "semantic",
                prost_types::Value {
                    kind: Some(Kind::BoolValue(true)),
                },
            ),
            equals("served_model", string_value(&chain.model)),
            equals(
                "served_version",
                prost_types::Value {
                    kind: Some(Kind::NumberValue(f64::from(chain.version))),
                },
            ),
            pb::Condition {
                condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
                    key: "expires_at_ms".to_string(),
                    predicate: Some(pb::field_condition::Predicate::Range(pb::Range {
                        gt: Some(keel_core::time::now_ms() as f64),
                        ..Default::default()
                    })),
                })),
            },
        ],
        ..Default::default()
    }
}

fn equals(key: &str, value: prost_types::Value) -> pb::Condition {
    pb::Condition {
        condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
            key: key.to_string(),
            predicate: Some(pb::field_condition::Predicate::Equals(value)),
        })),
    }
}

fn string_value(text: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(Kind::StringValue(text.to_string())),
    }
}

/// The answer in a point's payload, unless it has expired.
fn read_answer(payload: Option<&prost_types::Struct>) -> Option<CachedAnswer> {
    let payload = keel_core::payload::struct_to_json("payload", payload?).ok()?;
    let expires_at_ms = payload.get("expires_at_ms")?.as_f64()?;
    if expires_at_ms <= keel_core::time::now_ms() as f64 {
        return None;
    }
    serde_json::from_value(payload.get("answer")?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::PromptTemplate;

    fn chain(version: u32, temperature: Option<f32>) -> ResolvedChain {
        ResolvedChain {
            model: "support-bot".to_string(),
            version,
            collection: "docs".to_string(),
            top_k: 3,
            filter: serde_json::Map::new(),
            prompt: Arc::new(
                PromptTemplate::compile("support-prompt", 1, "{{ question }}").unwrap(),
            ),
            generator: "smollm2".to_string(),
            params: keel_models::GenerationParams {
                temperature,
                ..Default::default()
            },
            generator_model: String::new(),
            fallbacks: Vec::new(),
            retrieval_mode: keel_types::SearchMode::default(),
        }
    }

    fn key(endpoint: &str, chain: &ResolvedChain, prompt: &str) -> String {
        exact_key(&Lookup { endpoint, chain }, prompt)
    }

    #[test]
    fn the_exact_key_is_the_version_the_prompt_and_the_parameters() {
        let v1 = chain(1, None);
        let base = key("support", &v1, "How long is the refund window?");
        assert_eq!(base.len(), 32);
        assert_eq!(
            base,
            key("support", &chain(1, None), "How long is the refund window?")
        );
        for other in [
            key("sales", &v1, "How long is the refund window?"),
            key("support", &chain(2, None), "How long is the refund window?"),
            key(
                "support",
                &chain(1, Some(0.7)),
                "How long is the refund window?",
            ),
            key("support", &v1, "How long is the refund window"),
        ] {
            assert_ne!(other, base);
        }
    }

    #[test]
    fn an_expired_or_foreign_payload_is_no_answer() {
        let answer = CachedAnswer {
            answer: "30 days".to_string(),
            citations: Vec::new(),
            generator: "smollm2".to_string(),
            finish_reason: FinishReason::Stop,
        };
        let payload = |expires_at_ms: i64| {
            let json = serde_json::json!({"expires_at_ms": expires_at_ms, "answer": answer});
            keel_core::payload::json_to_struct(json.as_object().unwrap())
        };
        let later = keel_core::time::now_ms() + 60_000;
        assert_eq!(read_answer(Some(&payload(later))), Some(answer.clone()));
        assert_eq!(read_answer(Some(&payload(later - 120_000))), None);
        let foreign = keel_core::payload::json_to_struct(
            serde_json::json!({"text": "a document"})
                .as_object()
                .unwrap(),
        );
        assert_eq!(read_answer(Some(&foreign)), None);
        assert_eq!(read_answer(None), None);
    }
}

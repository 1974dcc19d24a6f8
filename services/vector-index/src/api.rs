//! The gRPC edge: validates requests, converts them to the domain's types,
//! calls [`VectorIndex`] and converts the answers back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use keel_core::payload::{json_to_struct, struct_to_json};
use keel_core::telemetry::CallerTrace;
use keel_proto::v1 as pb;
use keel_proto::v1::vector_index_service_server::VectorIndexService;
use keel_types::validate;
use keel_types::FieldError;
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

use crate::collections::{
    CollectionInfo, EmbedWith, NewCollection, NewPoint, Query, SearchRequest, VectorIndex,
    MAX_DIMENSION,
};
use crate::config::NO_EMBEDDER;
use crate::distance::Metric;
use crate::error::Error;
use crate::filter::PayloadFilter;
use crate::filter_proto::{filter_from_proto, MAX_KEY_CHARS};
use crate::hybrid::FusionWeights;
use crate::index::{HnswParams, StoredPoint, DEFAULT_HNSW_PARAMS};
use keel_types::SearchMode;

pub const MAX_POINTS_PER_CALL: usize = 1000;
pub const MAX_IDS_PER_CALL: usize = 1000;
pub const MAX_ID_CHARS: usize = 256;
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
pub const MAX_TOP_K: u64 = 1000;
pub const MAX_EF: u64 = 4096;
pub const MAX_INDEXED_KEYS: usize = 32;
pub const DEFAULT_SCROLL_LIMIT: usize = 100;
pub const MAX_SCROLL_LIMIT: u64 = 1000;
pub const MAX_TEXTS_PER_EMBED: u64 = 256;
pub const MAX_FUSION_WEIGHT: f32 = 100.0;

pub struct Api {
    index: Arc<VectorIndex>,
    /// Used when a create request names no embedder; `none`: vectors only.
    default_embedder: String,
}

impl Api {
    pub fn new(index: Arc<VectorIndex>, default_embedder: String) -> Api {
        Api {
            index,
            default_embedder,
        }
    }
}

#[tonic::async_trait]
impl VectorIndexService for Api {
    async fn create_collection(
        &self,
        request: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::Collection>, Status> {
        let request = request.into_inner();
        let new = validate_create(request, &self.default_embedder)?;
        let info = self.index.create_collection(new).await?;
        Ok(Response::new(collection_to_proto(info)))
    }

    async fn get_collection(
        &self,
        request: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::Collection>, Status> {
        let request = request.into_inner();
        validate::name("name", &request.name)?;
        let info = self.index.get_collection(&request.name)?;
        Ok(Response::new(collection_to_proto(info)))
    }

    async fn list_collections(
        &self,
        _request: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let collections = self
            .index
            .list_collections()
            .into_iter()
            .map(collection_to_proto)
            .collect();
        Ok(Response::new(pb::ListCollectionsResponse { collections }))
    }

    async fn drop_collection(
        &self,
        request: Request<pb::DropCollectionRequest>,
    ) -> Result<Response<pb::DropCollectionResponse>, Status> {
        let request = request.into_inner();
        validate::name("name", &request.name)?;
        self.index.drop_collection(&request.name).await?;
        Ok(Response::new(pb::DropCollectionResponse {}))
    }

    async fn upsert_points(
        &self,
        request: Request<pb::UpsertPointsRequest>,
    ) -> Result<Response<pb::UpsertPointsResponse>, Status> {
        let request = request.into_inner();
        validate::name("collection", &request.collection)?;
        let points = validate_points(request.points)?;
        let upserted = self
            .index
            .upsert_points(&request.collection, points)
            .await?;
        Ok(Response::new(pb::UpsertPointsResponse { upserted }))
    }

    async fn delete_points(
        &self,
        request: Request<pb::DeletePointsRequest>,
    ) -> Result<Response<pb::DeletePointsResponse>, Status> {
        let request = request.into_inner();
        validate::name("collection", &request.collection)?;
        validate::in_range("ids", request.ids.len() as u64, 1, MAX_IDS_PER_CALL as u64)?;
        for (position, id) in request.ids.iter().enumerate() {
            validate_id(&format!("ids[{position}]"), id)?;
        }
        let deleted = self
            .index
            .delete_points(&request.collection, request.ids)
            .await?;
        Ok(Response::new(pb::DeletePointsResponse { deleted }))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        // No tower layer span wraps this call: the retrieval span is its
        // server span (see `grpc_tracing::HANDLER_TRACED_PATHS`).
        let caller = CallerTrace::from_headers(request.metadata().as_ref());
        let request = request.into_inner();
        validate::name("collection", &request.collection)?;
        let query = match (request.vector.is_empty(), request.text.is_empty()) {
            (false, false) => {
                return Err(FieldError::new(
                    "text",
                    "must be empty when `vector` is given: give exactly one",
                )
                .into())
            }
            (true, true) => {
                return Err(
                    FieldError::new("vector", "one of `vector` or `text` must be given").into(),
                )
            }
            (false, true) => {
                validate_finite("vector", &request.vector)?;
                Query::Vector(request.vector)
            }
            (true, false) => {
                validate::max_len("text", &request.text, MAX_TEXT_BYTES)?;
                Query::Text(request.text)
            }
        };
        validate::in_range("top_k", u64::from(request.top_k), 1, MAX_TOP_K)?;
        let ef = match request.ef {
            0 => None,
            ef => {
                validate::in_range("ef", u64::from(ef), 1, MAX_EF)?;
                Some(ef as usize)
            }
        };
        let payload_equals = match &request.payload_equals {
            Some(equalities) => struct_to_json("payload_equals", equalities)?,
            None => Map::new(),
        };
        let filter = PayloadFilter::equalities(payload_equals)
            .and(optional_filter("filter", request.filter.as_ref())?);
        let search = SearchRequest {
            query,
            top_k: request.top_k as usize,
            filter,
            ef,
            mode: SearchMode::from_proto("mode", request.mode)?,
            weights: fusion_weights(request.dense_weight, request.keyword_weight)?,
        };
        let hits = self
            .index
            .search(&caller, &request.collection, search)
            .await?;
        let mut vectors = self
            .vectors_if(
                request.with_vectors,
                &request.collection,
                hits.iter().map(|hit| hit.point.as_ref()),
            )?
            .into_iter();
        let points = hits
            .into_iter()
            .map(|hit| pb::ScoredPoint {
                id: hit.point.id.clone(),
                score: hit.score,
                text: hit.point.text.clone(),
                payload: request
                    .with_payload
                    .then(|| json_to_struct(&hit.point.payload)),
                vector: vectors.next().unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::SearchResponse { points }))
    }

    async fn get_points(
        &self,
        request: Request<pb::GetPointsRequest>,
    ) -> Result<Response<pb::GetPointsResponse>, Status> {
        let request = request.into_inner();
        validate::name("collection", &request.collection)?;
        validate::in_range("ids", request.ids.len() as u64, 1, MAX_IDS_PER_CALL as u64)?;
        for (position, id) in request.ids.iter().enumerate() {
            validate_id(&format!("ids[{position}]"), id)?;
        }
        let found = self.index.get_points(&request.collection, &request.ids)?;
        let points = self.retrieved(
            &request.collection,
            &found,
            request.with_payload,
            request.with_vectors,
        )?;
        Ok(Response::new(pb::GetPointsResponse { points }))
    }

    async fn scroll_points(
        &self,
        request: Request<pb::ScrollPointsRequest>,
    ) -> Result<Response<pb::ScrollPointsResponse>, Status> {
        let request = request.into_inner();
        validate::name("collection", &request.collection)?;
        let limit = match request.limit {
            0 => DEFAULT_SCROLL_LIMIT,
            limit => {
                validate::in_range("limit", u64::from(limit), 1, MAX_SCROLL_LIMIT)?;
                limit as usize
            }
        };
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(decode_page_token(token)?),
        };
        let filter = optional_filter("filter", request.filter.as_ref())?;
        let page = self
            .index
            .scroll_points(&request.collection, filter, after, limit)
            .await?;
        let points = self.retrieved(
            &request.collection,
            &page.points,
            request.with_payload,
            request.with_vectors,
        )?;
        Ok(Response::new(pb::ScrollPointsResponse {
            points,
            next_page_token: page
                .next_after
                .map(|id| encode_page_token(&id))
                .unwrap_or_default(),
        }))
    }

    async fn count_points(
        &self,
        request: Request<pb::CountPointsRequest>,
    ) -> Result<Response<pb::CountPointsResponse>, Status> {
        let request = request.into_inner();
        validate::name("collection", &request.collection)?;
        let filter = optional_filter("filter", request.filter.as_ref())?;
        let count = self.index.count_points(&request.collection, filter).await?;
        Ok(Response::new(pb::CountPointsResponse { count }))
    }

    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let request = request.into_inner();
        let with = embed_with(&request.collection, &request.embedder, &request.texts)?;
        let embedded = self.index.embed(with, request.texts).await?;
        Ok(Response::new(pb::EmbedResponse {
            vectors: embedded
                .vectors
                .into_iter()
                .map(|values| pb::Vector { values })
                .collect(),
            dimension: embedded.dimension as u32,
            embedder: embedded.embedder,
        }))
    }

    async fn count_tokens(
        &self,
        request: Request<pb::CountTokensRequest>,
    ) -> Result<Response<pb::CountTokensResponse>, Status> {
        let request = request.into_inner();
        let with = embed_with(&request.collection, &request.embedder, &request.texts)?;
        let counted = self.index.count_tokens(with, request.texts).await?;
        Ok(Response::new(pb::CountTokensResponse {
            texts: counted
                .word_tokens
                .into_iter()
                .map(|counts| pb::WordTokens { counts })
                .collect(),
            max_input_tokens: counted
                .max_input_tokens
                .map_or(0, |tokens| u32::try_from(tokens).unwrap_or(u32::MAX)),
            special_tokens: u32::try_from(counted.special_tokens).unwrap_or(u32::MAX),
            embedder: counted.embedder,
        }))
    }
}

/// The embedder an Embed or CountTokens request names, with its texts
/// checked.
fn embed_with(collection: &str, embedder: &str, texts: &[String]) -> Result<EmbedWith, FieldError> {
    let with = match (collection.is_empty(), embedder.is_empty()) {
        (false, true) => {
            validate::name("collection", collection)?;
            EmbedWith::Collection(collection.to_string())
        }
        (true, false) => EmbedWith::Embedder(embedder.to_string()),
        (false, false) => {
            return Err(FieldError::new(
                "embedder",
                "must be empty when `collection` is given: give exactly one",
            ))
        }
        (true, true) => {
            return Err(FieldError::new(
                "collection",
                "one of `collection` or `embedder` must be given",
            ))
        }
    };
    validate::in_range("texts", texts.len() as u64, 1, MAX_TEXTS_PER_EMBED)?;
    for (position, text) in texts.iter().enumerate() {
        validate::max_len(&format!("texts[{position}]"), text, MAX_TEXT_BYTES)?;
    }
    Ok(with)
}

fn fusion_weights(dense: f32, keyword: f32) -> Result<FusionWeights, FieldError> {
    for (field, weight) in [("dense_weight", dense), ("keyword_weight", keyword)] {
        if !(0.0..=MAX_FUSION_WEIGHT).contains(&weight) {
            return Err(FieldError::new(
                field,
                format!("must be in 0..={MAX_FUSION_WEIGHT}, got {weight}"),
            ));
        }
    }
    if dense == 0.0 && keyword == 0.0 {
        return Ok(FusionWeights::default());
    }
    Ok(FusionWeights { dense, keyword })
}

fn optional_filter(field: &str, filter: Option<&pb::Filter>) -> Result<PayloadFilter, FieldError> {
    match filter {
        Some(filter) => filter_from_proto(field, filter),
        None => Ok(PayloadFilter::default()),
    }
}

impl Api {
    /// The points' vectors when asked for (empty for a point replaced or
    /// deleted since it was read), else none.
    fn vectors_if<'a>(
        &self,
        wanted: bool,
        collection: &str,
        points: impl Iterator<Item = &'a StoredPoint>,
    ) -> Result<Vec<Vec<f32>>, Error> {
        if !wanted {
            return Ok(Vec::new());
        }
        self.index.vectors_of(collection, points)
    }

    fn retrieved(
        &self,
        collection: &str,
        points: &[Arc<StoredPoint>],
        with_payload: bool,
        with_vectors: bool,
    ) -> Result<Vec<pb::RetrievedPoint>, Error> {
        let mut vectors = self
            .vectors_if(with_vectors, collection, points.iter().map(Arc::as_ref))?
            .into_iter();
        Ok(points
            .iter()
            .map(|point| pb::RetrievedPoint {
                id: point.id.clone(),
                text: point.text.clone(),
                payload: with_payload.then(|| json_to_struct(&point.payload)),
                vector: vectors.next().unwrap_or_default(),
            })
            .collect())
    }
}

/// A scroll page token is the last id of the page, hex-encoded so that any
/// id travels as an opaque token.
fn encode_page_token(last_id: &str) -> String {
    hex::encode(last_id)
}

fn decode_page_token(token: &str) -> Result<String, FieldError> {
    hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            FieldError::new(
                "page_token",
                "must be a next_page_token returned by ScrollPoints",
            )
        })
}

fn validate_indexed_keys(keys: Vec<String>) -> Result<Vec<String>, FieldError> {
    if keys.len() > MAX_INDEXED_KEYS {
        return Err(FieldError::new(
            "indexed_payload_keys",
            format!(
                "must hold at most {MAX_INDEXED_KEYS} keys, got {}",
                keys.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(keys.len());
    for (position, key) in keys.iter().enumerate() {
        let field = format!("indexed_payload_keys[{position}]");
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS {
            return Err(FieldError::new(
                field,
                format!("must be 1..={MAX_KEY_CHARS} characters, got {chars}"),
            ));
        }
        if !seen.insert(key.as_str()) {
            return Err(FieldError::new(
                field,
                format!("repeats {key:?}: keys must be distinct"),
            ));
        }
    }
    Ok(keys)
}

/// `embedder`: empty means `default_embedder`; `none` means vectors only.
fn validate_create(
    request: pb::CreateCollectionRequest,
    default_embedder: &str,
) -> Result<NewCollection, FieldError> {
    validate::name("name", &request.name)?;
    validate::in_range(
        "dimension",
        u64::from(request.dimension),
        0,
        MAX_DIMENSION as u64,
    )?;
    let metric = match pb::Metric::try_from(request.metric) {
        Ok(pb::Metric::Unspecified | pb::Metric::Cosine) => Metric::Cosine,
        Ok(pb::Metric::Dot) => Metric::Dot,
        Ok(pb::Metric::L2) => Metric::L2,
        Err(_) => {
            return Err(FieldError::new(
                "metric",
                format!(
                    "must be one of METRIC_COSINE, METRIC_DOT, METRIC_L2, got {}",
                    request.metric
                ),
            ))
        }
    };
    let hnsw = match request.hnsw {
        None => DEFAULT_HNSW_PARAMS,
        Some(params) => HnswParams {
            m: param_or_default("hnsw.m", params.m, DEFAULT_HNSW_PARAMS.m, 2, 128)?,
            ef_construction: param_or_default(
                "hnsw.ef_construction",
                params.ef_construction,
                DEFAULT_HNSW_PARAMS.ef_construction,
                8,
                4096,
            )?,
            ef_search: param_or_default(
                "hnsw.ef_search",
                params.ef_search,
                DEFAULT_HNSW_PARAMS.ef_search,
                8,
                4096,
            )?,
        },
    };
    let embedder = match request.embedder.as_str() {
        "" => default_embedder.to_string(),
        _ => request.embedder,
    };
    let embedder = (!embedder.is_empty() && embedder != NO_EMBEDDER).then_some(embedder);
    Ok(NewCollection {
        name: request.name,
        dimension: request.dimension as usize,
        metric,
        embedder,
        hnsw,
        indexed_keys: validate_indexed_keys(request.indexed_payload_keys)?,
    })
}

/// 0 means the default; anything else must be within `min..=max`.
fn param_or_default(
    field: &str,
    value: u32,
    default: usize,
    min: u64,
    max: u64,
) -> Result<usize, FieldError> {
    if value == 0 {
        return Ok(default);
    }
    validate::in_range(field, u64::from(value), min, max)?;
    Ok(value as usize)
}

fn validate_id(field: &str, id: &str) -> Result<(), FieldError> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_ID_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be 1..={MAX_ID_CHARS} characters, got {chars}"),
        ));
    }
    Ok(())
}

fn validate_finite(field: &str, vector: &[f32]) -> Result<(), FieldError> {
    if let Some(position) = vector.iter().position(|value| !value.is_finite()) {
        return Err(FieldError::new(
            field,
            format!(
                "values must be finite, got {} at index {position}",
                vector[position]
            ),
        ));
    }
    Ok(())
}

fn validate_points(points: Vec<pb::Point>) -> Result<Vec<NewPoint>, FieldError> {
    validate::in_range("points", points.len() as u64, 1, MAX_POINTS_PER_CALL as u64)?;
    let mut first_position_by_id: HashMap<&str, usize> = HashMap::with_capacity(points.len());
    for (position, point) in points.iter().enumerate() {
        let id_field = format!("points[{position}].id");
        validate_id(&id_field, &point.id)?;
        if let Some(first) = first_position_by_id.insert(point.id.as_str(), position) {
            return Err(FieldError::new(
                id_field,
                format!(
                    "duplicates points[{first}].id {:?}: ids must be distinct within a request",
                    point.id
                ),
            ));
        }
    }
    let mut converted = Vec::with_capacity(points.len());
    for (position, point) in points.into_iter().enumerate() {
        let vector_field = format!("points[{position}].vector");
        if point.vector.is_empty() && point.text.is_empty() {
            return Err(FieldError::new(
                vector_field,
                "must not be empty when `text` is empty",
            ));
        }
        validate_finite(&vector_field, &point.vector)?;
        validate::max_len(
            &format!("points[{position}].text"),
            &point.text,
            MAX_TEXT_BYTES,
        )?;
        let payload_field = format!("points[{position}].payload");
        let payload = match &point.payload {
            Some(payload) => struct_to_json(&payload_field, payload)?,
            None => Map::new(),
        };
        let payload_bytes = Value::Object(payload.clone()).to_string().len();
        if payload_bytes > MAX_PAYLOAD_BYTES {
            return Err(FieldError::new(
                payload_field,
                format!("must be at most {MAX_PAYLOAD_BYTES} bytes as JSON, got {payload_bytes}"),
            ));
        }
        converted.push(NewPoint {
            id: point.id,
            vector: point.vector,
            text: point.text,
            payload,
        });
    }
    Ok(converted)
}

fn metric_to_proto(metric: Metric) -> pb::Metric {
    match metric {
        Metric::Cosine => pb::Metric::Cosine,
        Metric::Dot => pb::Metric::Dot,
        Metric::L2 => pb::Metric::L2,
    }
}

fn collection_to_proto(info: CollectionInfo) -> pb::Collection {
    pb::Collection {
        name: info.name,
        dimension: info.dimension as u32,
        metric: metric_to_proto(info.metric) as i32,
        embedder: info.embedder.unwrap_or_default(),
        hnsw: Some(pb::HnswParams {
            m: info.hnsw.m as u32,
            ef_construction: info.hnsw.ef_construction as u32,
            ef_search: info.hnsw.ef_search as u32,
        }),
        point_count: info.point_count,
        tombstones: info.tombstones,
        created_at_ms: info.created_at_ms,
        indexed_payload_keys: info.indexed_keys,
    }
}

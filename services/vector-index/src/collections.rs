//! The service's domain: collections, their points and searches. The
//! database holds the truth; each collection's graph lives in memory,
//! restored at start-up from its snapshot and the rows written since (see
//! `load` and `snapshot_task`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use keel_core::gen_ai;
use keel_core::telemetry::CallerTrace;
use keel_models::{ModelCatalog, ModelError, SharedEmbedder};
use keel_store::Store;
use keel_types::FieldError;
use parking_lot::RwLock;
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::compaction::{self, LoggedWrite};
use crate::distance::Metric;
use crate::error::Error;
use crate::filter::PayloadFilter;
use crate::hybrid::FusionWeights;
use crate::index::{CollectionIndex, Hit, HnswParams, IndexedPoint, ScrollPage, StoredPoint};
use crate::metrics::Metrics;
use crate::snapshot::{SnapshotKey, SnapshotStore};
use crate::store::{self, CollectionRow, PointRow};
use crate::text_index::TextIndex;
use keel_types::SearchMode;

pub const MAX_DIMENSION: usize = 65_536;

#[derive(Debug, Clone, PartialEq)]
pub struct NewCollection {
    pub name: String,
    /// 0: the embedder's dimension.
    pub dimension: usize,
    pub metric: Metric,
    pub embedder: Option<String>,
    pub hnsw: HnswParams,
    /// Distinct payload keys to index.
    pub indexed_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    pub name: String,
    pub dimension: usize,
    pub metric: Metric,
    pub embedder: Option<String>,
    pub hnsw: HnswParams,
    pub indexed_keys: Vec<String>,
    pub point_count: u64,
    /// Graph nodes of deleted or replaced points, until compaction.
    pub tombstones: u64,
    pub created_at_ms: i64,
}

/// A point to upsert; an empty `vector` asks the collection to embed `text`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPoint {
    pub id: String,
    pub vector: Vec<f32>,
    pub text: String,
    pub payload: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Vector(Vec<f32>),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub query: Query,
    pub top_k: usize,
    pub filter: PayloadFilter,
    /// `None`: the collection's default `ef_search`.
    pub ef: Option<usize>,
    pub mode: SearchMode,
    /// How a hybrid search weighs its two rankings.
    pub weights: FusionWeights,
}

/// What [`VectorIndex::embed`] embeds with.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedWith {
    Collection(String),
    Embedder(String),
}

/// The vectors of [`VectorIndex::embed`], one per text.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub embedder: String,
    pub dimension: usize,
    pub vectors: Vec<Vec<f32>>,
}

/// The answer of [`VectorIndex::count_tokens`].
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCounts {
    /// Per text, the tokens of each whitespace-separated word.
    pub word_tokens: Vec<Vec<u32>>,
    pub max_input_tokens: Option<usize>,
    pub special_tokens: usize,
    pub embedder: String,
}

pub(crate) struct Collection {
    pub(crate) name: String,
    pub(crate) dimension: usize,
    pub(crate) metric: Metric,
    pub(crate) embedder_name: Option<String>,
    /// `None` with a name: the embedder is missing from this process.
    pub(crate) embedder: Option<SharedEmbedder>,
    pub(crate) hnsw: HnswParams,
    pub(crate) created_at_ms: i64,
    pub(crate) index: Arc<RwLock<CollectionIndex>>,
    /// Serialises the writes of this collection (so insertion order in the
    /// database and in the graph agree); holds true once dropped.
    pub(crate) writer: tokio::sync::Mutex<bool>,
    /// Loading until start-up has restored or built the index.
    pub(crate) state: RwLock<LoadState>,
    /// Writes since the last snapshot: only a changed collection is
    /// snapshotted again.
    pub(crate) unsnapshotted_writes: AtomicU64,
    /// `Some` while a compaction builds a new graph: the writes it must
    /// catch up on.
    pub(crate) compaction_log: parking_lot::Mutex<Option<Vec<LoggedWrite>>>,
    /// BM25 over the points' text, for keyword and hybrid search; `Some`
    /// in collections with an embedder (their points have text).
    pub(crate) text_index: Option<Arc<TextIndex>>,
}

/// What a collection is, as a create request or its row says.
pub(crate) struct CollectionDefinition {
    pub(crate) name: String,
    pub(crate) dimension: usize,
    pub(crate) metric: Metric,
    pub(crate) embedder_name: Option<String>,
    pub(crate) embedder: Option<SharedEmbedder>,
    pub(crate) hnsw: HnswParams,
    pub(crate) created_at_ms: i64,
    pub(crate) indexed_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LoadState {
    Loading,
    Ready,
    Failed(String),
}

impl Collection {
    /// A collection with an empty index (and, when it has an embedder, an
    /// empty full-text index).
    pub(crate) fn new(
        definition: CollectionDefinition,
        state: LoadState,
    ) -> Result<Collection, Error> {
        let text_index = text_index_for(definition.embedder_name.as_deref())?;
        Ok(Collection::assemble(definition, state, text_index))
    }

    /// A stand-in collection that only embeds, for [`VectorIndex::embed`]
    /// with a named embedder: the same checks and span as a collection's.
    fn embedder_only(name: String, embedder: SharedEmbedder) -> Collection {
        let definition = CollectionDefinition {
            name: format!("embedder `{name}`"),
            dimension: embedder.dimension(),
            metric: Metric::Cosine,
            embedder_name: Some(name),
            embedder: Some(embedder),
            hnsw: crate::index::DEFAULT_HNSW_PARAMS,
            created_at_ms: 0,
            indexed_keys: Vec::new(),
        };
        Collection::assemble(definition, LoadState::Ready, None)
    }

    fn assemble(
        definition: CollectionDefinition,
        state: LoadState,
        text_index: Option<Arc<TextIndex>>,
    ) -> Collection {
        let index =
            CollectionIndex::empty(definition.metric, definition.hnsw, &definition.indexed_keys);
        Collection {
            name: definition.name,
            dimension: definition.dimension,
            metric: definition.metric,
            embedder_name: definition.embedder_name,
            embedder: definition.embedder,
            hnsw: definition.hnsw,
            created_at_ms: definition.created_at_ms,
            index: Arc::new(RwLock::new(index)),
            writer: tokio::sync::Mutex::new(false),
            state: RwLock::new(state),
            unsnapshotted_writes: AtomicU64::new(0),
            compaction_log: parking_lot::Mutex::new(None),
            text_index,
        }
    }

    /// Ok once the collection's index is loaded; calls on it are refused
    /// with UNAVAILABLE until then, never kept waiting.
    pub(crate) fn ready(&self) -> Result<(), Error> {
        match &*self.state.read() {
            LoadState::Ready => Ok(()),
            LoadState::Loading => Err(Error::Loading(self.name.clone())),
            LoadState::Failed(reason) => Err(Error::LoadFailed {
                collection: self.name.clone(),
                reason: reason.clone(),
            }),
        }
    }

    pub(crate) fn snapshot_key(&self) -> SnapshotKey {
        SnapshotKey {
            collection: self.name.clone(),
            created_at_ms: self.created_at_ms,
            metric: self.metric.as_str().to_string(),
            dimension: self.dimension,
            m: self.hnsw.m,
            ef_construction: self.hnsw.ef_construction,
        }
    }

    fn info(&self) -> CollectionInfo {
        let index = self.index.read();
        CollectionInfo {
            name: self.name.clone(),
            dimension: self.dimension,
            metric: self.metric,
            embedder: self.embedder_name.clone(),
            hnsw: self.hnsw,
            indexed_keys: index.indexed_keys().to_vec(),
            point_count: index.live_count() as u64,
            tombstones: index.tombstone_count() as u64,
            created_at_ms: self.created_at_ms,
        }
    }

    /// Embeds on a blocking thread and checks the vectors' shape, in an
    /// `embeddings {model}` span that ends failed when either went wrong.
    pub(crate) async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, Error> {
        let embedder_name = self.embedder_name.clone().unwrap_or_default();
        let Some(embedder) = self.embedder.clone() else {
            return Err(Error::EmbedderUnavailable {
                collection: self.name.clone(),
                embedder: embedder_name,
            });
        };
        let span = gen_ai::embeddings_span(&embedder_name, embedder.provider(), texts.len());
        let embedded = self
            .embed_and_check(embedder, embedder_name, texts)
            .instrument(span.clone())
            .await;
        match &embedded {
            Ok(_) => gen_ai::record_embeddings_result(&span, self.dimension),
            Err(error) => gen_ai::record_error(&span, error),
        }
        embedded
    }

    async fn embed_and_check(
        &self,
        embedder: SharedEmbedder,
        embedder_name: String,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, Error> {
        let expected_count = texts.len();
        let vectors = tokio::task::spawn_blocking(move || embedder.embed(&texts))
            .await?
            .map_err(|source| Error::Embedding {
                embedder: embedder_name.clone(),
                source,
            })?;
        if vectors.len() != expected_count {
            return Err(Error::Embedding {
                embedder: embedder_name,
                source: ModelError::Backend(format!(
                    "returned {} vectors for {expected_count} texts",
                    vectors.len()
                )),
            });
        }
        for vector in &vectors {
            if vector.len() != self.dimension {
                return Err(Error::EmbedderDimension {
                    collection: self.name.clone(),
                    embedder: embedder_name,
                    expected: self.dimension,
                    got: vector.len(),
                });
            }
            if !vector.iter().all(|value| value.is_finite()) {
                return Err(Error::Embedding {
                    embedder: embedder_name,
                    source: ModelError::Backend("returned a non-finite value".to_string()),
                });
            }
        }
        Ok(vectors)
    }
}

/// A point validated against its collection, in both of its forms.
struct PreparedPoint {
    row: PointRow,
    indexed: IndexedPoint,
}

pub struct VectorIndex {
    pub(crate) store: Store,
    catalog: ModelCatalog,
    pub(crate) collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    /// The last insertion sequence handed out.
    pub(crate) last_seq: AtomicI64,
    pub(crate) exact_search_threshold: usize,
    /// `None`: no snapshots; every start rebuilds every graph.
    pub(crate) snapshots: Option<SnapshotStore>,
    /// Held while a snapshot is written: the periodic one and the one at
    /// shutdown never race over a collection's directory.
    pub(crate) snapshot_writer: tokio::sync::Mutex<()>,
    pub metrics: Metrics,
}

impl VectorIndex {
    /// Reads the collections of `store`, each still loading: start
    /// [`VectorIndex::load_all`] to restore their indexes.
    pub async fn open(
        store: Store,
        catalog: ModelCatalog,
        exact_search_threshold: usize,
        snapshots: Option<SnapshotStore>,
        metrics: Metrics,
    ) -> Result<Arc<VectorIndex>, Error> {
        let mut collections = BTreeMap::new();
        for row in store::list_collections(&store).await? {
            let collection = crate::load::collection_from_row(&catalog, row)?;
            collections.insert(collection.name.clone(), Arc::new(collection));
        }
        // Past every row and past what any snapshot covers: a deleted
        // point's row is gone but a snapshot may still hold its seq, and a
        // later write must never reuse it.
        let max_snapshot_seq = match snapshots.clone() {
            Some(snapshots) => {
                tokio::task::spawn_blocking(move || snapshots.max_covered_seq()).await?
            }
            None => 0,
        };
        let last_seq = store::max_seq(&store).await?.max(max_snapshot_seq);
        Ok(Arc::new(VectorIndex {
            store,
            catalog,
            collections: RwLock::new(collections),
            last_seq: AtomicI64::new(last_seq),
            snapshot_writer: tokio::sync::Mutex::new(()),
            exact_search_threshold,
            snapshots,
            metrics,
        }))
    }

    fn collection(&self, name: &str) -> Result<Arc<Collection>, Error> {
        self.collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound(name.to_string()))
    }

    /// The collection, once its index is loaded.
    pub(crate) fn ready_collection(&self, name: &str) -> Result<Arc<Collection>, Error> {
        let collection = self.collection(name)?;
        collection.ready()?;
        Ok(collection)
    }

    pub fn collection_count(&self) -> usize {
        self.collections.read().len()
    }

    pub fn point_count(&self) -> u64 {
        let collections: Vec<Arc<Collection>> = self.collections.read().values().cloned().collect();
        collections
            .iter()
            .map(|collection| collection.index.read().live_count() as u64)
            .sum()
    }

    pub async fn create_collection(
        self: &Arc<Self>,
        new: NewCollection,
    ) -> Result<CollectionInfo, Error> {
        let embedder = match &new.embedder {
            None => None,
            Some(name) => Some(self.catalog.embedder(name).map_err(|_| {
                FieldError::new(
                    "embedder",
                    format!(
                        "must be one of {:?}, got {name:?}",
                        self.catalog.embedder_names()
                    ),
                )
            })?),
        };
        let dimension =
            resolve_dimension(new.dimension, new.embedder.as_deref(), embedder.as_ref())?;
        if self.collections.read().contains_key(&new.name) {
            return Err(Error::CollectionExists(new.name));
        }
        let collection = Arc::new(Collection::new(
            CollectionDefinition {
                name: new.name.clone(),
                dimension,
                metric: new.metric,
                embedder_name: new.embedder.clone(),
                embedder,
                hnsw: new.hnsw,
                created_at_ms: keel_core::time::now_ms(),
                indexed_keys: new.indexed_keys.clone(),
            },
            LoadState::Ready,
        )?);
        let row = CollectionRow {
            name: collection.name.clone(),
            dimension: dimension as i64,
            metric: new.metric.as_str().to_string(),
            embedder: new.embedder.unwrap_or_default(),
            hnsw_m: new.hnsw.m as i64,
            hnsw_ef_construction: new.hnsw.ef_construction as i64,
            hnsw_ef_search: new.hnsw.ef_search as i64,
            indexed_keys: Value::from(new.indexed_keys.clone()).to_string(),
            created_at_ms: collection.created_at_ms,
        };
        let this = Arc::clone(self);
        // Spawned so that a caller hanging up cannot leave the database
        // and the in-memory map disagreeing.
        tokio::spawn(async move {
            let mut tx = this.store.begin_write().await?;
            if !store::insert_collection(&mut tx, &row).await? {
                return Err(Error::CollectionExists(row.name));
            }
            // Snapshots left by a collection of this name that was dropped
            // while their removal failed: never this collection's.
            this.remove_snapshots(&row.name).await?;
            tx.commit().await?;
            this.collections
                .write()
                .insert(row.name.clone(), Arc::clone(&collection));
            tracing::info!(collection = %row.name, dimension, metric = row.metric, "collection created");
            Ok(collection.info())
        })
        .await?
    }

    pub fn get_collection(&self, name: &str) -> Result<CollectionInfo, Error> {
        Ok(self.collection(name)?.info())
    }

    /// Every collection, by name.
    pub fn list_collections(&self) -> Vec<CollectionInfo> {
        let collections: Vec<Arc<Collection>> = self.collections.read().values().cloned().collect();
        collections
            .iter()
            .map(|collection| collection.info())
            .collect()
    }

    pub async fn drop_collection(self: &Arc<Self>, name: &str) -> Result<(), Error> {
        let collection = self.ready_collection(name)?;
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut dropped = collection.writer.lock().await;
            if *dropped {
                return Err(Error::CollectionNotFound(collection.name.clone()));
            }
            let mut tx = this.store.begin_write().await?;
            let existed = store::delete_collection(&mut tx, &collection.name).await?;
            tx.commit().await?;
            *dropped = true;
            {
                let mut collections = this.collections.write();
                if collections
                    .get(&collection.name)
                    .is_some_and(|current| Arc::ptr_eq(current, &collection))
                {
                    collections.remove(&collection.name);
                }
            }
            if let Err(error) = this.remove_snapshots(&collection.name).await {
                tracing::warn!(collection = %collection.name, %error, "could not remove the dropped collection's snapshots");
            }
            if !existed {
                tracing::warn!(collection = %collection.name, "dropped collection had no database row");
            }
            tracing::info!(collection = %collection.name, "collection dropped");
            Ok(())
        })
        .await?
    }

    /// Inserts or replaces `points`; returns how many were written. The ids
    /// must be distinct (the API checks it).
    pub async fn upsert_points(
        self: &Arc<Self>,
        collection_name: &str,
        points: Vec<NewPoint>,
    ) -> Result<u64, Error> {
        let collection = self.ready_collection(collection_name)?;
        let prepared = prepare_points(&collection, points).await?;
        let this = Arc::clone(self);
        tokio::spawn(async move { this.write_points(collection, prepared).await }).await?
    }

    async fn write_points(
        &self,
        collection: Arc<Collection>,
        prepared: Vec<PreparedPoint>,
    ) -> Result<u64, Error> {
        let dropped = collection.writer.lock().await;
        if *dropped {
            return Err(Error::CollectionNotFound(collection.name.clone()));
        }
        let count = prepared.len() as i64;
        let first_seq = self.last_seq.fetch_add(count, Ordering::SeqCst) + 1;
        let mut rows = Vec::with_capacity(prepared.len());
        let mut indexed = Vec::with_capacity(prepared.len());
        for (offset, point) in prepared.into_iter().enumerate() {
            let mut row = point.row;
            row.seq = first_seq + offset as i64;
            let mut point_indexed = point.indexed;
            point_indexed.seq = row.seq;
            rows.push(row);
            indexed.push(Arc::new(point_indexed));
        }
        let mut tx = self.store.begin_write().await?;
        store::upsert_points(&mut tx, &collection.name, &rows).await?;
        tx.commit().await?;
        let pending = collection.index.write().stage_points(indexed.clone());
        tokio::task::spawn_blocking(move || pending.run()).await?;
        if let Some(text_index) = collection.text_index.clone() {
            let texts = indexed.clone();
            tokio::task::spawn_blocking(move || {
                text_index.upsert(
                    texts
                        .iter()
                        .map(|point| (point.id.as_str(), point.text.as_str())),
                )
            })
            .await?
            .map_err(|error| Error::TextIndex(error.to_string()))?;
        }
        collection
            .unsnapshotted_writes
            .fetch_add(count as u64, Ordering::Relaxed);
        compaction::after_write(
            &collection,
            LoggedWrite::Upsert(indexed),
            &self.metrics.compactions,
        );
        drop(dropped);
        self.metrics.points_upserted.inc_by(count as u64);
        tracing::debug!(collection = %collection.name, count, "points upserted");
        Ok(count as u64)
    }

    /// Deletes the points with these ids; returns how many existed.
    pub async fn delete_points(
        self: &Arc<Self>,
        collection_name: &str,
        ids: Vec<String>,
    ) -> Result<u64, Error> {
        let collection = self.ready_collection(collection_name)?;
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let dropped = collection.writer.lock().await;
            if *dropped {
                return Err(Error::CollectionNotFound(collection.name.clone()));
            }
            let mut tx = this.store.begin_write().await?;
            let deleted = store::delete_points(&mut tx, &collection.name, &ids).await?;
            tx.commit().await?;
            let deleted_in_memory = collection.index.write().delete(&ids);
            if let Some(text_index) = collection.text_index.clone() {
                let doomed = ids.clone();
                tokio::task::spawn_blocking(move || text_index.delete(&doomed))
                    .await?
                    .map_err(|error| Error::TextIndex(error.to_string()))?;
            }
            collection
                .unsnapshotted_writes
                .fetch_add(deleted_in_memory as u64, Ordering::Relaxed);
            if deleted_in_memory as u64 != deleted {
                tracing::warn!(collection = %collection.name, deleted, deleted_in_memory, "index and database disagreed on deleted points");
            }
            compaction::after_write(
                &collection,
                LoggedWrite::Delete(ids),
                &this.metrics.compactions,
            );
            drop(dropped);
            this.metrics.points_deleted.inc_by(deleted);
            Ok(deleted)
        })
        .await?
    }

    /// The search runs in a `retrieval {collection}` span, the server span
    /// of the call: it continues `caller`'s trace.
    pub async fn search(
        &self,
        caller: &CallerTrace,
        collection_name: &str,
        request: SearchRequest,
    ) -> Result<Vec<Hit>, Error> {
        let query_text = match &request.query {
            Query::Text(text) => Some(text.as_str()),
            Query::Vector(_) => None,
        };
        let top_k = u32::try_from(request.top_k).unwrap_or(u32::MAX);
        let span = gen_ai::retrieval_span(caller, collection_name, top_k, query_text);
        let result = self
            .search_unobserved(collection_name, request)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(hits) => gen_ai::record_retrieval_result(&span, hits.len()),
            Err(error) => gen_ai::record_error(&span, error),
        }
        result
    }

    /// The live points with these ids, in the order asked; unknown ids are
    /// left out.
    pub fn get_points(
        &self,
        collection_name: &str,
        ids: &[String],
    ) -> Result<Vec<Arc<StoredPoint>>, Error> {
        let collection = self.ready_collection(collection_name)?;
        let index = collection.index.read();
        Ok(ids.iter().filter_map(|id| index.get(id).cloned()).collect())
    }

    /// The vectors (index form) of these versions of points, read from the
    /// graph; empty for a version replaced or deleted since.
    pub fn vectors_of<'a>(
        &self,
        collection_name: &str,
        points: impl Iterator<Item = &'a StoredPoint>,
    ) -> Result<Vec<Vec<f32>>, Error> {
        let collection = self.ready_collection(collection_name)?;
        let index = collection.index.read();
        Ok(points
            .map(|point| index.vector_of(point).unwrap_or_default())
            .collect())
    }

    /// A page of the points `filter` keeps, by id, after `after`.
    pub async fn scroll_points(
        &self,
        collection_name: &str,
        filter: PayloadFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<ScrollPage, Error> {
        let collection = self.ready_collection(collection_name)?;
        let index = Arc::clone(&collection.index);
        Ok(tokio::task::spawn_blocking(move || {
            index.read().scroll(&filter, after.as_deref(), limit)
        })
        .await?)
    }

    /// How many live points `filter` keeps.
    pub async fn count_points(
        &self,
        collection_name: &str,
        filter: PayloadFilter,
    ) -> Result<u64, Error> {
        let collection = self.ready_collection(collection_name)?;
        let index = Arc::clone(&collection.index);
        let count = tokio::task::spawn_blocking(move || index.read().count(&filter)).await?;
        Ok(count as u64)
    }

    /// Embeds `texts` exactly as a collection (or a named embedder of the
    /// catalog) does, so clients and evaluation jobs get the index's vectors.
    pub async fn embed(&self, with: EmbedWith, texts: Vec<String>) -> Result<Embedded, Error> {
        let (collection, embedder) = self.embedding_collection(with)?;
        let vectors = collection.embed(texts).await?;
        Ok(Embedded {
            embedder,
            dimension: collection.dimension,
            vectors,
        })
    }

    /// Counts the tokens of each word of `texts` as the collection's (or a
    /// named) embedder cuts them, so clients chunk documents to its window.
    pub async fn count_tokens(
        &self,
        with: EmbedWith,
        texts: Vec<String>,
    ) -> Result<TokenCounts, Error> {
        let (collection, embedder_name) = self.embedding_collection(with)?;
        let Some(embedder) = collection.embedder.clone() else {
            return Err(Error::EmbedderUnavailable {
                collection: collection.name.clone(),
                embedder: embedder_name,
            });
        };
        // Tokenizing is CPU work: off the async runtime.
        let counted = tokio::task::spawn_blocking(move || TokenCounts {
            word_tokens: texts
                .iter()
                .map(|text| embedder.word_tokens(text))
                .collect(),
            max_input_tokens: embedder.max_input_tokens(),
            special_tokens: embedder.special_tokens(),
            embedder: embedder_name,
        })
        .await?;
        Ok(counted)
    }

    /// The collection that `with` names (or a stand-in for a catalog
    /// embedder) and the name of its embedder.
    fn embedding_collection(&self, with: EmbedWith) -> Result<(Arc<Collection>, String), Error> {
        let collection = match with {
            EmbedWith::Collection(name) => self.collection(&name)?,
            EmbedWith::Embedder(name) => {
                let embedder = self.catalog.embedder(&name).map_err(|_| {
                    FieldError::new(
                        "embedder",
                        format!(
                            "must be one of {:?}, got {name:?}",
                            self.catalog.embedder_names()
                        ),
                    )
                })?;
                Arc::new(Collection::embedder_only(name, embedder))
            }
        };
        let Some(embedder) = collection.embedder_name.clone() else {
            return Err(FieldError::new(
                "collection",
                format!(
                    "collection `{}` has no embedder: it holds vectors only",
                    collection.name
                ),
            )
            .into());
        };
        Ok((collection, embedder))
    }
}

fn resolve_dimension(
    requested: usize,
    embedder_name: Option<&str>,
    embedder: Option<&SharedEmbedder>,
) -> Result<usize, FieldError> {
    let (Some(name), Some(embedder)) = (embedder_name, embedder) else {
        if requested == 0 || requested > MAX_DIMENSION {
            return Err(FieldError::new(
                "dimension",
                format!("must be in 1..={MAX_DIMENSION}, got {requested}"),
            ));
        }
        return Ok(requested);
    };
    let embedder_dimension = embedder.dimension();
    if requested != 0 && requested != embedder_dimension {
        return Err(FieldError::new(
            "dimension",
            format!("must be 0 or {embedder_dimension} (the dimension of embedder `{name}`), got {requested}"),
        ));
    }
    Ok(embedder_dimension)
}

/// Checks every point against the collection and embeds the texts that
/// need it, before anything is written.
async fn prepare_points(
    collection: &Collection,
    points: Vec<NewPoint>,
) -> Result<Vec<PreparedPoint>, Error> {
    let mut texts_to_embed = Vec::new();
    let mut embed_positions = Vec::new();
    for (position, point) in points.iter().enumerate() {
        if !point.vector.is_empty() {
            if point.vector.len() != collection.dimension {
                return Err(FieldError::new(
                    format!("points[{position}].vector"),
                    format!(
                        "must have {} values, got {}",
                        collection.dimension,
                        point.vector.len()
                    ),
                )
                .into());
            }
            continue;
        }
        if collection.embedder_name.is_none() {
            return Err(FieldError::new(
                format!("points[{position}].vector"),
                format!(
                    "must have {} values: collection `{}` has no embedder for `text`",
                    collection.dimension, collection.name
                ),
            )
            .into());
        }
        texts_to_embed.push(point.text.clone());
        embed_positions.push(position);
    }
    let mut embedded = vec![None; points.len()];
    if !texts_to_embed.is_empty() {
        let vectors = collection.embed(texts_to_embed).await?;
        for (position, vector) in embed_positions.into_iter().zip(vectors) {
            if let Some(slot) = embedded.get_mut(position) {
                *slot = Some(vector);
            }
        }
    }
    let mut prepared = Vec::with_capacity(points.len());
    for ((position, point), embedded_vector) in points.into_iter().enumerate().zip(embedded) {
        let (field, vector) = match embedded_vector {
            Some(vector) => (format!("points[{position}].text"), vector),
            None => (format!("points[{position}].vector"), point.vector),
        };
        let Some(index_vector) = collection.metric.index_form(&vector) else {
            return Err(FieldError::new(
                field,
                "must not be an all-zero vector in a cosine collection",
            )
            .into());
        };
        let payload_json = Value::Object(point.payload.clone()).to_string();
        prepared.push(PreparedPoint {
            row: PointRow {
                id: point.id.clone(),
                seq: 0,
                vector: store::encode_vector(&vector),
                text: point.text.clone(),
                payload: payload_json,
            },
            indexed: IndexedPoint {
                id: point.id,
                // Set when the write takes its seqs.
                seq: 0,
                vector: index_vector,
                text: point.text,
                payload: point.payload,
            },
        });
    }
    Ok(prepared)
}

/// A collection with an embedder holds text: it gets a full-text index.
fn text_index_for(embedder: Option<&str>) -> Result<Option<Arc<TextIndex>>, Error> {
    match embedder {
        None => Ok(None),
        Some(_) => TextIndex::new()
            .map(|index| Some(Arc::new(index)))
            .map_err(|error| Error::TextIndex(error.to_string())),
    }
}

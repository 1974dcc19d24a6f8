//! Start-up: each collection is registered from its row at once (and
//! answers UNAVAILABLE "loading"), then its index is restored in the
//! background from its newest snapshot plus the rows written after it, or
//! rebuilt from all its rows when there is no usable snapshot.

use std::sync::Arc;
use std::time::Instant;

use keel_models::ModelCatalog;
use serde_json::{Map, Value};

use crate::collections::{Collection, CollectionDefinition, LoadState, VectorIndex};
use crate::distance::Metric;
use crate::error::Error;
use crate::index::{CollectionIndex, HnswParams, IndexedPoint};
use crate::snapshot::FoundSnapshot;
use crate::store::{self, CollectionRow, PointRow};

/// A collection as its row describes it, with an empty index, loading.
pub(crate) fn collection_from_row(
    catalog: &ModelCatalog,
    row: CollectionRow,
) -> Result<Collection, Error> {
    let corrupt = |reason: String| Error::Corrupt {
        collection: row.name.clone(),
        reason,
    };
    let metric = Metric::parse(&row.metric)
        .ok_or_else(|| corrupt(format!("unknown metric {:?}", row.metric)))?;
    let dimension = usize::try_from(row.dimension)
        .map_err(|_| corrupt(format!("dimension {}", row.dimension)))?;
    let hnsw = HnswParams {
        m: usize::try_from(row.hnsw_m).map_err(|_| corrupt(format!("hnsw m {}", row.hnsw_m)))?,
        ef_construction: usize::try_from(row.hnsw_ef_construction)
            .map_err(|_| corrupt(format!("hnsw ef_construction {}", row.hnsw_ef_construction)))?,
        ef_search: usize::try_from(row.hnsw_ef_search)
            .map_err(|_| corrupt(format!("hnsw ef_search {}", row.hnsw_ef_search)))?,
    };
    let indexed_keys: Vec<String> = serde_json::from_str(&row.indexed_keys).map_err(|error| {
        corrupt(format!(
            "indexed payload keys {:?}: {error}",
            row.indexed_keys
        ))
    })?;
    let embedder_name = (!row.embedder.is_empty()).then(|| row.embedder.clone());
    let embedder = match &embedder_name {
        None => None,
        Some(name) => match catalog.embedder(name) {
            Ok(embedder) => Some(embedder),
            Err(_) => {
                tracing::warn!(collection = %row.name, embedder = %name, "embedder not in the catalog; text upserts and searches will fail");
                None
            }
        },
    };
    Collection::new(
        CollectionDefinition {
            name: row.name,
            dimension,
            metric,
            embedder_name,
            embedder,
            hnsw,
            created_at_ms: row.created_at_ms,
            indexed_keys,
        },
        LoadState::Loading,
    )
}

impl VectorIndex {
    /// Loads every collection still loading, one at a time (each load uses
    /// every core), by name. A collection that cannot be loaded answers
    /// UNAVAILABLE with the reason; the others serve.
    pub async fn load_all(&self) {
        let started = Instant::now();
        let collections: Vec<Arc<Collection>> = self.collections.read().values().cloned().collect();
        for collection in collections {
            if *collection.state.read() != LoadState::Loading {
                continue;
            }
            let collection_started = Instant::now();
            let loaded = match self.load_index(&collection).await {
                Ok((index, how)) => fill_text_index(&collection, index)
                    .await
                    .map(|index| (index, how)),
                Err(error) => Err(error),
            };
            match loaded {
                Ok((index, how)) => {
                    let points = index.live_count();
                    *collection.index.write() = index;
                    *collection.state.write() = LoadState::Ready;
                    tracing::info!(
                        collection = %collection.name,
                        points,
                        how,
                        elapsed_ms = collection_started.elapsed().as_millis() as u64,
                        "collection loaded"
                    );
                }
                Err(error) => {
                    tracing::error!(collection = %collection.name, %error, "collection failed to load");
                    *collection.state.write() = LoadState::Failed(error.to_string());
                }
            }
        }
        tracing::info!(
            collections = self.collection_count(),
            points = self.point_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "vector index loaded"
        );
    }

    /// The collection's index and how it was made: restored from its
    /// snapshot and the rows written since, or rebuilt from every row.
    async fn load_index(
        &self,
        collection: &Collection,
    ) -> Result<(CollectionIndex, &'static str), Error> {
        let found = match self.snapshots.clone() {
            Some(snapshots) => {
                let key = collection.snapshot_key();
                tokio::task::spawn_blocking(move || snapshots.find(&key)).await?
            }
            None => None,
        };
        if let Some(found) = found {
            match self.restore(collection, found).await? {
                Ok(index) => return Ok((index, "snapshot and replay")),
                Err(reason) => tracing::warn!(
                    collection = %collection.name,
                    %reason,
                    "snapshot unusable; rebuilding"
                ),
            }
        }
        let rows = store::load_points(&self.store, &collection.name, None).await?;
        let (metric, dimension, hnsw) = (collection.metric, collection.dimension, collection.hnsw);
        let keys = collection.index.read().indexed_keys().to_vec();
        let index = tokio::task::spawn_blocking(move || -> Result<CollectionIndex, String> {
            let points = decode_points(rows, metric, dimension)?
                .into_iter()
                .map(Arc::new)
                .collect();
            Ok(CollectionIndex::build(metric, hnsw, &keys, points))
        })
        .await?
        .map_err(|reason| Error::Corrupt {
            collection: collection.name.clone(),
            reason,
        })?;
        Ok((index, "rebuilt"))
    }

    /// The index from a snapshot and the rows: the graph is read while
    /// the database reads the rows, only those written after the snapshot
    /// with their vectors. The inner error says why the snapshot cannot be
    /// used (a rebuild follows).
    async fn restore(
        &self,
        collection: &Collection,
        found: FoundSnapshot,
    ) -> Result<Result<CollectionIndex, String>, Error> {
        let covered_seq = found.covered_seq();
        let metric = collection.metric;
        let reading = tokio::task::spawn_blocking(move || found.read(metric));
        let rows = store::load_points(&self.store, &collection.name, Some(covered_seq)).await?;
        let snapshot = match reading.await? {
            Ok(snapshot) => snapshot,
            Err(reason) => return Ok(Err(reason)),
        };
        let (dimension, hnsw) = (collection.dimension, collection.hnsw);
        let keys = collection.index.read().indexed_keys().to_vec();
        Ok(tokio::task::spawn_blocking(move || {
            let points = decode_points(rows, metric, dimension)?;
            let (index, written_since) = CollectionIndex::restore(
                metric,
                hnsw,
                &keys,
                snapshot.graph,
                snapshot.slot_table,
                points,
            )?;
            written_since.run();
            Ok(index)
        })
        .await?)
    }
}

fn decode_points(
    rows: Vec<PointRow>,
    metric: Metric,
    dimension: usize,
) -> Result<Vec<IndexedPoint>, String> {
    rows.into_iter()
        .map(|row| decode_point(row, metric, dimension))
        .collect()
}

/// A row as the index keeps it; a row read without its vector (a snapshot
/// holds it) gets an empty one.
fn decode_point(row: PointRow, metric: Metric, dimension: usize) -> Result<IndexedPoint, String> {
    let index_vector = if row.vector.is_empty() {
        Vec::new()
    } else {
        let vector = store::decode_vector(&row.vector)
            .filter(|vector| vector.len() == dimension)
            .ok_or_else(|| {
                format!(
                    "point `{}` has {} vector bytes, expected {}",
                    row.id,
                    row.vector.len(),
                    dimension * 4
                )
            })?;
        metric
            .index_form(&vector)
            .ok_or_else(|| format!("point `{}` has an all-zero vector", row.id))?
    };
    let payload: Map<String, Value> = serde_json::from_str(&row.payload)
        .map_err(|error| format!("point `{}` has an unreadable payload: {error}", row.id))?;
    Ok(IndexedPoint {
        id: row.id,
        seq: row.seq,
        vector: index_vector,
        text: row.text,
        payload,
    })
}

/// Indexes the live points' text of a text collection, on a blocking
/// thread.
async fn fill_text_index(
    collection: &Collection,
    index: CollectionIndex,
) -> Result<CollectionIndex, Error> {
    let Some(text_index) = collection.text_index.clone() else {
        return Ok(index);
    };
    tokio::task::spawn_blocking(move || {
        let points = index.live_points();
        text_index
            .upsert(
                points
                    .iter()
                    .map(|point| (point.id.as_str(), point.text.as_str())),
            )
            .map(|()| index)
    })
    .await?
    .map_err(|error| Error::TextIndex(error.to_string()))
}

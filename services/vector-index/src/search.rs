//! A search in each mode: dense (the graph, or an exact scan), keyword
//! (BM25 over the points' text) and hybrid (both, fused by rank). Every
//! mode applies the payload filter to every point it returns.

use std::sync::Arc;

use keel_types::FieldError;

use crate::collections::{Collection, Query, SearchRequest, VectorIndex};
use crate::error::Error;
use crate::filter::PayloadFilter;
use crate::hybrid::{fuse, HYBRID_CANDIDATES_PER_RESULT, HYBRID_MIN_CANDIDATES};
use crate::index::Hit;
use keel_types::SearchMode;

/// A filtered keyword search first asks BM25 for this many candidates per
/// result, and widens until it has top_k matches or has seen them all.
const KEYWORD_FILTER_OVERFETCH: usize = 10;

impl VectorIndex {
    pub(crate) async fn search_unobserved(
        &self,
        collection_name: &str,
        request: SearchRequest,
    ) -> Result<Vec<Hit>, Error> {
        let collection = self.ready_collection(collection_name)?;
        let hits = match request.mode {
            SearchMode::Dense => {
                self.dense_search(
                    &collection,
                    request.query,
                    request.top_k,
                    request.filter,
                    request.ef,
                )
                .await?
            }
            SearchMode::Keyword => {
                let text = keyword_text(&collection, request.query)?;
                keyword_search(&collection, text, request.top_k, request.filter).await?
            }
            SearchMode::Hybrid => {
                let text = keyword_text(&collection, request.query)?;
                let candidates =
                    (request.top_k * HYBRID_CANDIDATES_PER_RESULT).max(HYBRID_MIN_CANDIDATES);
                let dense = self
                    .dense_search(
                        &collection,
                        Query::Text(text.clone()),
                        candidates,
                        request.filter.clone(),
                        request.ef,
                    )
                    .await?;
                let keyword = keyword_search(&collection, text, candidates, request.filter).await?;
                fuse(dense, keyword, request.weights, request.top_k)
            }
        };
        self.metrics.searches.inc();
        Ok(hits)
    }

    async fn dense_search(
        &self,
        collection: &Collection,
        query: Query,
        top_k: usize,
        filter: PayloadFilter,
        ef: Option<usize>,
    ) -> Result<Vec<Hit>, Error> {
        let (field, vector) = match query {
            Query::Vector(vector) => {
                if vector.len() != collection.dimension {
                    return Err(FieldError::new(
                        "vector",
                        format!(
                            "must have {} values, got {}",
                            collection.dimension,
                            vector.len()
                        ),
                    )
                    .into());
                }
                ("vector", vector)
            }
            Query::Text(text) => {
                if collection.embedder_name.is_none() {
                    return Err(FieldError::new(
                        "text",
                        format!(
                            "collection `{}` has no embedder, search by `vector`",
                            collection.name
                        ),
                    )
                    .into());
                }
                let mut vectors = collection.embed(vec![text]).await?;
                ("text", vectors.pop().unwrap_or_default())
            }
        };
        let Some(query) = collection.metric.index_form(&vector) else {
            return Err(FieldError::new(
                field,
                "must not be an all-zero vector in a cosine collection",
            )
            .into());
        };
        let index = Arc::clone(&collection.index);
        let threshold = self.exact_search_threshold;
        Ok(tokio::task::spawn_blocking(move || {
            let index = index.read();
            let ef = ef.unwrap_or(index.params().ef_search);
            index.search_with_ef(&query, top_k, &filter, threshold, ef)
        })
        .await?)
    }
}

/// The query text of a keyword or hybrid search.
fn keyword_text(collection: &Collection, query: Query) -> Result<String, FieldError> {
    if collection.text_index.is_none() {
        return Err(FieldError::new(
            "mode",
            format!(
                "collection `{}` holds vectors only: it has no text to search by keyword",
                collection.name
            ),
        ));
    }
    match query {
        Query::Text(text) => Ok(text),
        Query::Vector(_) => Err(FieldError::new(
            "text",
            "must be given for keyword and hybrid search (a vector has no words)",
        )),
    }
}

/// The `top_k` best live points the filter keeps, by BM25, best first.
async fn keyword_search(
    collection: &Collection,
    text: String,
    top_k: usize,
    filter: PayloadFilter,
) -> Result<Vec<Hit>, Error> {
    let Some(text_index) = collection.text_index.clone() else {
        return Ok(Vec::new());
    };
    let index = Arc::clone(&collection.index);
    tokio::task::spawn_blocking(move || {
        let mut limit = if filter.is_empty() {
            top_k
        } else {
            top_k.saturating_mul(KEYWORD_FILTER_OVERFETCH)
        };
        loop {
            let ranked = text_index
                .search(&text, limit)
                .map_err(|error| Error::TextIndex(error.to_string()))?;
            let exhausted = ranked.len() < limit;
            let index = index.read();
            let hits: Vec<Hit> = ranked
                .into_iter()
                .filter_map(|(id, score)| {
                    let point = index.get(&id)?;
                    filter.matches(&point.payload).then(|| Hit {
                        point: Arc::clone(point),
                        score,
                    })
                })
                .take(top_k)
                .collect();
            if hits.len() == top_k || exhausted {
                return Ok(hits);
            }
            limit = limit.saturating_mul(4);
        }
    })
    .await?
}

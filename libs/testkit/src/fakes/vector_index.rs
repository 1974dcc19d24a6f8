//! A vector index that answers every search of a collection with the same
//! scripted points, best first, and remembers the trace context it was sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use keel_proto::v1 as pb;
use keel_proto::v1::vector_index_service_server::{VectorIndexService, VectorIndexServiceServer};
use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::TestServer;

/// The fake vector index's state; clones share it.
#[derive(Clone, Default)]
pub struct FakeVectorIndex {
    /// collection -> points, best first for every query.
    collections: Arc<Mutex<HashMap<String, Vec<pb::ScoredPoint>>>>,
    traceparents: Arc<Mutex<Vec<String>>>,
    searches: Arc<AtomicUsize>,
}

impl FakeVectorIndex {
    /// Serves this index on port 0 until the returned server is dropped.
    pub async fn start(&self) -> TestServer {
        let routes = tonic::service::Routes::new(VectorIndexServiceServer::new(self.clone()));
        TestServer::grpc("fake-vector-index", routes).await
    }

    /// Adds a collection whose searches answer the first `top_k` of
    /// `points` (id, score, text), in this order.
    pub fn add_collection(&self, name: &str, points: &[(&str, f32, &str)]) {
        let points = points
            .iter()
            .map(|(id, score, text)| pb::ScoredPoint {
                id: id.to_string(),
                score: *score,
                text: text.to_string(),
                payload: None,
                vector: Vec::new(),
            })
            .collect();
        self.collections
            .lock()
            .unwrap()
            .insert(name.to_string(), points);
    }

    /// How many searches arrived, answered or not.
    pub fn searches(&self) -> usize {
        self.searches.load(Ordering::SeqCst)
    }

    /// The `traceparent` header of every search, in arrival order.
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
        self.searches.fetch_add(1, Ordering::SeqCst);
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

    async fn get_points(
        &self,
        _: Request<pb::GetPointsRequest>,
    ) -> Result<Response<pb::GetPointsResponse>, Status> {
        unimplemented()
    }

    async fn scroll_points(
        &self,
        _: Request<pb::ScrollPointsRequest>,
    ) -> Result<Response<pb::ScrollPointsResponse>, Status> {
        unimplemented()
    }

    async fn count_points(
        &self,
        _: Request<pb::CountPointsRequest>,
    ) -> Result<Response<pb::CountPointsResponse>, Status> {
        unimplemented()
    }

    async fn embed(
        &self,
        _: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        unimplemented()
    }

    async fn count_tokens(
        &self,
        _: Request<pb::CountTokensRequest>,
    ) -> Result<Response<pb::CountTokensResponse>, Status> {
        unimplemented()
    }
}

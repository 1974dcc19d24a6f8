//! What the vector index's server tests share: the service on port 0 over
//! a test database, and builders for requests and points.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_core::payload::json_to_struct;
use keel_proto::v1 as pb;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_testkit::server::Ports;
use keel_testkit::{eventually, TestServer};
use keel_vector_index::{serve, Config, Error};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::transport::Channel;

/// The vector index on port 0 over `database_url`, with its client.
pub struct VectorIndex {
    pub client: VectorIndexServiceClient<Channel>,
    pub server: TestServer<Error>,
}

/// The test config: port 0, the `hashing` embedder (these tests run
/// without model files), no snapshots.
pub fn test_config(database_url: &str, exact_search_threshold: usize) -> Config {
    Config {
        port: 0,
        database_url: database_url.to_string(),
        exact_search_threshold,
        default_embedder: "hashing".to_string(),
        ..Config::default()
    }
}

impl VectorIndex {
    /// Starts with [`test_config`] and waits until every collection is
    /// loaded.
    pub async fn start(database_url: &str, exact_search_threshold: usize) -> VectorIndex {
        let server =
            VectorIndex::start_loading(test_config(database_url, exact_search_threshold)).await;
        server.wait_until_loaded().await;
        server
    }

    /// Starts and returns as soon as the port accepts calls: collections
    /// may still be loading.
    pub async fn start_loading(config: Config) -> VectorIndex {
        let server = TestServer::start(Ports::GrpcOnly, |listeners, shutdown| {
            serve(
                config,
                keel_models::ModelCatalog::builtin(),
                listeners,
                shutdown,
            )
        })
        .await;
        let client = VectorIndexServiceClient::new(server.connect().await);
        VectorIndex { client, server }
    }

    /// Waits until no collection answers UNAVAILABLE "loading".
    pub async fn wait_until_loaded(&self) {
        let client = self.client.clone();
        eventually(
            "every collection loaded",
            Duration::from_secs(120),
            async || {
                let mut client = client.clone();
                let Ok(listed) = client.list_collections(pb::ListCollectionsRequest {}).await
                else {
                    return false;
                };
                for collection in listed.into_inner().collections {
                    let counted = client
                        .count_points(pb::CountPointsRequest {
                            collection: collection.name,
                            filter: None,
                        })
                        .await;
                    if counted.is_err_and(|status| status.code() == tonic::Code::Unavailable) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }

    /// Shuts down and checks the server drains and returns cleanly.
    pub async fn stop(self) {
        drop(self.client);
        self.server.stop().await.unwrap();
    }
}

pub fn create_request(
    name: &str,
    dimension: u32,
    metric: pb::Metric,
    embedder: &str,
) -> pb::CreateCollectionRequest {
    pb::CreateCollectionRequest {
        name: name.to_string(),
        dimension,
        metric: metric as i32,
        embedder: embedder.to_string(),
        hnsw: None,
        indexed_payload_keys: Vec::new(),
    }
}

pub fn payload(value: Value) -> Option<prost_types::Struct> {
    Some(json_to_struct(value.as_object().unwrap()))
}

pub fn vector_point(id: &str, vector: Vec<f32>, payload_value: Value) -> pb::Point {
    pb::Point {
        id: id.to_string(),
        vector,
        text: format!("text of {id}"),
        payload: payload(payload_value),
    }
}

pub fn text_point(id: &str, text: &str) -> pb::Point {
    pb::Point {
        id: id.to_string(),
        vector: Vec::new(),
        text: text.to_string(),
        payload: None,
    }
}

pub fn vector_search(collection: &str, vector: Vec<f32>, top_k: u32) -> pb::SearchRequest {
    pb::SearchRequest {
        collection: collection.to_string(),
        vector,
        text: String::new(),
        top_k,
        with_payload: true,
        ..Default::default()
    }
}

/// Deterministic pseudo-random vectors (an LCG), so failures reproduce.
pub fn pseudo_random_vectors(count: usize, dimension: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) as f32 * 2.0 - 1.0
    };
    (0..count)
        .map(|_| (0..dimension).map(|_| next()).collect())
        .collect()
}

pub async fn upsert(
    client: &mut VectorIndexServiceClient<Channel>,
    collection: &str,
    points: Vec<pb::Point>,
) -> u64 {
    client
        .upsert_points(pb::UpsertPointsRequest {
            collection: collection.to_string(),
            points,
        })
        .await
        .unwrap()
        .into_inner()
        .upserted
}

pub async fn search_ids(
    client: &mut VectorIndexServiceClient<Channel>,
    request: pb::SearchRequest,
) -> Vec<String> {
    let response = client.search(request).await.unwrap().into_inner();
    response.points.into_iter().map(|point| point.id).collect()
}

pub async fn point_count(client: &mut VectorIndexServiceClient<Channel>, name: &str) -> u64 {
    collection_info(client, name).await.point_count
}

/// A text collection `notes` (the `hashing` embedder) and a 4-d
/// vectors-only collection `raw`.
pub async fn create_notes_and_raw(client: &mut VectorIndexServiceClient<Channel>) {
    client
        .create_collection(create_request("notes", 0, pb::Metric::Cosine, "hashing"))
        .await
        .unwrap();
    client
        .create_collection(create_request("raw", 4, pb::Metric::Cosine, "none"))
        .await
        .unwrap();
}

/// The vector of each of `ids` that exists in `collection`, by id (fetched
/// 1,000 at a time).
pub async fn vectors_of(
    client: &mut VectorIndexServiceClient<Channel>,
    collection: &str,
    ids: &[String],
) -> BTreeMap<String, Vec<f32>> {
    let mut found = BTreeMap::new();
    for chunk in ids.chunks(1000) {
        let points = client
            .get_points(pb::GetPointsRequest {
                collection: collection.to_string(),
                ids: chunk.to_vec(),
                with_payload: false,
                with_vectors: true,
            })
            .await
            .unwrap()
            .into_inner()
            .points;
        found.extend(points.into_iter().map(|point| (point.id, point.vector)));
    }
    found
}

/// The collection as GetCollection describes it.
pub async fn collection_info(
    client: &mut VectorIndexServiceClient<Channel>,
    name: &str,
) -> pb::Collection {
    client
        .get_collection(pb::GetCollectionRequest {
            name: name.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
}

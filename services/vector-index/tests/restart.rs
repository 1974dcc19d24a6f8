//! Restarts with snapshots: a 200k-point collection answers searches again
//! within seconds of a restart (restored, not rebuilt); while a collection
//! loads, calls on it answer UNAVAILABLE "loading" and health says
//! NOT_SERVING; a torn snapshot falls back to a rebuild with the same
//! answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keel_proto::v1 as pb;
use keel_testkit::{assert_status, eventually, TestDatabase};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

mod common;

use common::*;

fn snapshot_config(
    database_url: &str,
    snapshot_dir: &std::path::Path,
) -> keel_vector_index::Config {
    keel_vector_index::Config {
        snapshot_dir: snapshot_dir.display().to_string(),
        // Only the snapshot at shutdown: the test decides when.
        snapshot_interval_ms: 3_600_000,
        ..test_config(database_url, 0)
    }
}

/// Upserts `count` 8-d points (ids p0000000…) in batches of 1000.
async fn fill(server: &VectorIndex, count: usize, m: u32, ef_construction: u32) {
    let mut client = server.client.clone();
    client
        .create_collection(pb::CreateCollectionRequest {
            hnsw: Some(pb::HnswParams {
                m,
                ef_construction,
                ef_search: 64,
            }),
            ..create_request("big", 8, pb::Metric::L2, "none")
        })
        .await
        .unwrap();
    let vectors = pseudo_random_vectors(count, 8, 3);
    for (batch, chunk) in vectors.chunks(1000).enumerate() {
        let points = chunk
            .iter()
            .enumerate()
            .map(|(n, vector)| {
                let id = format!("p{:07}", batch * 1000 + n);
                vector_point(&id, vector.clone(), serde_json::json!({}))
            })
            .collect();
        upsert(&mut client, "big", points).await;
    }
}

async fn answers(server: &VectorIndex, queries: &[Vec<f32>]) -> Vec<Vec<String>> {
    let mut client = server.client.clone();
    let mut all = Vec::new();
    for query in queries {
        all.push(search_ids(&mut client, vector_search("big", query.clone(), 10)).await);
    }
    all
}

#[tokio::test]
async fn a_200k_collection_restarts_from_its_snapshot_in_seconds() {
    let database = TestDatabase::sqlite();
    let snapshots = tempfile::tempdir().unwrap();
    let config = snapshot_config(&database.url, snapshots.path());
    let server = VectorIndex::start_loading(config.clone()).await;
    // A small graph keeps the build affordable in a debug test; the restart
    // reads it back whatever its parameters.
    fill(&server, 200_000, 8, 24).await;
    let queries = pseudo_random_vectors(20, 8, 1234);
    let before = answers(&server, &queries).await;
    server.stop().await;

    let started = Instant::now();
    let server = VectorIndex::start_loading(config.clone()).await;
    server.wait_until_loaded().await;
    let loaded_after = started.elapsed();
    let after = answers(&server, &queries).await;
    assert_eq!(after, before);
    assert_eq!(
        point_count(&mut server.client.clone(), "big").await,
        200_000
    );
    eprintln!("200k points: loaded {loaded_after:?} after the restart");
    assert!(
        loaded_after < Duration::from_secs(10),
        "a 200k collection took {loaded_after:?} to load from its snapshot"
    );
    server.stop().await;
}

#[tokio::test]
async fn while_loading_calls_answer_unavailable_and_a_torn_snapshot_is_rebuilt() {
    let database = TestDatabase::sqlite();
    let snapshots = tempfile::tempdir().unwrap();
    let config = snapshot_config(&database.url, snapshots.path());
    let server = VectorIndex::start_loading(config.clone()).await;
    fill(&server, 30_000, 16, 64).await;
    let mut queries = pseudo_random_vectors(10, 8, 99);
    // The vector of p0000001, deleted below: it must leave the answers.
    queries.push(pseudo_random_vectors(2, 8, 3).remove(1));
    let before = answers(&server, &queries).await;
    assert_eq!(before.last().unwrap()[0], "p0000001");
    let mut client = server.client.clone();
    client
        .delete_points(pb::DeletePointsRequest {
            collection: "big".to_string(),
            ids: vec!["p0000001".to_string()],
        })
        .await
        .unwrap();
    let before_without = answers(&server, &queries).await;
    server.stop().await;

    // Tear the graph file of the snapshot the shutdown wrote.
    let collection_dir = snapshots.path().join("big");
    let snapshot_dir = std::fs::read_dir(&collection_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.is_dir())
        .expect("a snapshot at shutdown");
    let graph_file = snapshot_dir.join("graph.bin");
    let length = std::fs::metadata(&graph_file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&graph_file)
        .unwrap()
        .set_len(length - 100)
        .unwrap();

    let server = VectorIndex::start_loading(config.clone()).await;
    let mut client = server.client.clone();
    let mut health = HealthClient::new(server.server.connect().await);
    let status = health
        .check(HealthCheckRequest {
            service: "keel.v1.VectorIndexService".to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::NotServing);
    assert_status(
        "search while loading",
        client
            .search(vector_search("big", queries[0].clone(), 10))
            .await,
        Code::Unavailable,
        &["collection `big` is loading"],
    );
    assert_status(
        "upsert while loading",
        client
            .upsert_points(pb::UpsertPointsRequest {
                collection: "big".to_string(),
                points: vec![vector_point("x", vec![0.0; 8], serde_json::json!({}))],
            })
            .await,
        Code::Unavailable,
        &["loading"],
    );
    server.wait_until_loaded().await;
    eventually(
        "health to say SERVING",
        Duration::from_secs(10),
        async || {
            let mut health = health.clone();
            health
                .check(HealthCheckRequest::default())
                .await
                .is_ok_and(|response| response.into_inner().status() == ServingStatus::Serving)
        },
    )
    .await;
    let after = answers(&server, &queries).await;
    assert_eq!(after, before_without);
    assert!(!after.last().unwrap().contains(&"p0000001".to_string()));
    assert_eq!(point_count(&mut client, "big").await, 29_999);
    server.stop().await;
}

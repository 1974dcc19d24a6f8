//! Compaction in the background: once tombstones pass half of the graph a
//! new graph is built while writes go on; the writes made meanwhile are
//! caught up, so nothing is lost and only their tombstones remain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_testkit::{eventually, TestDatabase};
use serde_json::json;

mod common;

use common::*;

async fn tombstones(server: &VectorIndex) -> u64 {
    collection_info(&mut server.client.clone(), "c")
        .await
        .tombstones
}

#[tokio::test]
async fn compaction_runs_in_the_background_and_keeps_every_write() {
    let database = TestDatabase::sqlite();
    let server = VectorIndex::start(&database.url, 0).await;
    let mut client = server.client.clone();
    client
        .create_collection(create_request("c", 8, pb::Metric::L2, "none"))
        .await
        .unwrap();
    let mut expected: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let vectors = pseudo_random_vectors(12_000, 8, 21);
    for (batch, chunk) in vectors.chunks(1000).enumerate() {
        let points: Vec<pb::Point> = chunk
            .iter()
            .enumerate()
            .map(|(n, vector)| {
                let id = format!("p{:05}", batch * 1000 + n);
                expected.insert(id.clone(), vector.clone());
                vector_point(&id, vector.clone(), json!({}))
            })
            .collect();
        upsert(&mut client, "c", points).await;
    }
    // 6,100 deletes: the last batch tips tombstones past half of the graph.
    let doomed: Vec<String> = (0..6100).map(|n| format!("p{n:05}")).collect();
    for chunk in doomed.chunks(1000) {
        client
            .delete_points(pb::DeletePointsRequest {
                collection: "c".to_string(),
                ids: chunk.to_vec(),
            })
            .await
            .unwrap();
        for id in chunk {
            expected.remove(id);
        }
    }
    // While the new graph builds: 300 new points, 50 deletes, 20 replaced.
    let fresh = pseudo_random_vectors(320, 8, 77);
    let mut writes: Vec<pb::Point> = (0..300)
        .map(|n| vector_point(&format!("q{n:03}"), fresh[n].clone(), json!({})))
        .collect();
    writes.extend((0..20).map(|n| {
        vector_point(
            &format!("p{:05}", 11_000 + n),
            fresh[300 + n].clone(),
            json!({}),
        )
    }));
    for point in &writes {
        expected.insert(point.id.clone(), point.vector.clone());
    }
    upsert(&mut client, "c", writes).await;
    let deleted_meanwhile: Vec<String> = (6100..6150).map(|n| format!("p{n:05}")).collect();
    client
        .delete_points(pb::DeletePointsRequest {
            collection: "c".to_string(),
            ids: deleted_meanwhile.clone(),
        })
        .await
        .unwrap();
    for id in &deleted_meanwhile {
        expected.remove(id);
    }

    // Swapped in: only the 50 deletes and 20 replacements made after the
    // compaction started are tombstones of the new graph.
    eventually(
        "the compacted graph to be swapped in",
        Duration::from_secs(60),
        async || tombstones(&server).await == 70,
    )
    .await;
    assert_eq!(point_count(&mut client, "c").await, expected.len() as u64);
    let ids: Vec<String> = expected.keys().cloned().collect();
    assert!(vectors_of(&mut client, "c", &ids).await == expected);
    // The new graph finds points by their own vectors, old and new.
    for id in ["q000", "q299", "p11000", "p06150", "p09999"] {
        let found = search_ids(&mut client, vector_search("c", expected[id].clone(), 1)).await;
        assert_eq!(found, vec![id.to_string()]);
    }
    let gone = search_ids(&mut client, vector_search("c", vectors[6120].clone(), 1)).await;
    assert_ne!(gone, vec!["p06120".to_string()]);
    server.stop().await;
}

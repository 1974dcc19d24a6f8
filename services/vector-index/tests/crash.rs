//! The vector index as its own process, killed with SIGKILL at random
//! moments while a client upserts and deletes (and while snapshots are
//! being written, every 100 ms): after each of 20 restarts every
//! acknowledged write is visible with its vector, every acknowledged
//! delete stays deleted, the collection opens and its graph finds points.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_testkit::{eventually, reserve_port_pair};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

mod common;

use common::vectors_of;

const ROUNDS: usize = 20;
const ID_POOL: u64 = 3000;
const DIMENSION: usize = 8;

/// A deterministic generator (xorshift64), so a failure reproduces.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn vector(&mut self) -> Vec<f32> {
        (0..DIMENSION)
            .map(|_| (self.next() % 20_000) as f32 / 1000.0 - 10.0)
            .collect()
    }
}

struct Process {
    child: Child,
    port: u16,
}

async fn start(data_dir: &std::path::Path, port: u16) -> Process {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("vector-index.log"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_keel-vector-index"))
        .env_remove("KEEL_MODELS_DIR")
        .env("KEEL_DATA_DIR", data_dir)
        .env("KEEL_VECTOR_INDEX__PORT", port.to_string())
        .env("KEEL_VECTOR_INDEX__SNAPSHOT_INTERVAL_MS", "100")
        .env("KEEL_VECTOR_INDEX__EXACT_SEARCH_THRESHOLD", "0")
        .env("KEEL_VECTOR_INDEX__DEFAULT_EMBEDDER", "none")
        .env("KEEL_MODELS__REQUIRE_LOCAL_MODELS", "false")
        .env("RUST_LOG", "info,sqlx=warn,h2=warn,hyper=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Process { child, port }
}

async fn connect(process: &mut Process) -> VectorIndexServiceClient<Channel> {
    let url = format!("http://127.0.0.1:{}", process.port);
    let channel = eventually(
        "the vector index to accept connections",
        Duration::from_secs(60),
        async || {
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!("the vector index exited with {status}");
            }
            tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .connect()
                .await
                .ok()
        },
    )
    .await;
    VectorIndexServiceClient::new(channel)
}

/// The collection opened and loaded: counted without UNAVAILABLE.
async fn wait_loaded(client: &VectorIndexServiceClient<Channel>) -> u64 {
    eventually(
        "the collection to load",
        Duration::from_secs(60),
        async || {
            let mut client = client.clone();
            client
                .count_points(pb::CountPointsRequest {
                    collection: "c".to_string(),
                    filter: None,
                })
                .await
                .ok()
                .map(|response| response.into_inner().count)
        },
    )
    .await
}

/// What the client knows: the vector of every acknowledged live point, the
/// ids acknowledged deleted, and the ids of the call in flight at the kill
/// (either outcome is allowed for those).
#[derive(Default)]
struct Acknowledged {
    live: BTreeMap<String, Vec<f32>>,
    deleted: BTreeSet<String>,
    in_flight: BTreeSet<String>,
}

async fn write_until_killed(
    client: &mut VectorIndexServiceClient<Channel>,
    draw: &mut Draw,
    acknowledged: &mut Acknowledged,
) {
    loop {
        let delete = draw.next().is_multiple_of(4);
        let ids: BTreeSet<String> = (0..if delete { 20 } else { 200 })
            .map(|_| format!("p{}", draw.next() % ID_POOL))
            .collect();
        acknowledged.in_flight = ids.clone();
        if delete {
            let request = pb::DeletePointsRequest {
                collection: "c".to_string(),
                ids: ids.iter().cloned().collect(),
            };
            if client.delete_points(request).await.is_err() {
                return;
            }
            for id in ids {
                acknowledged.live.remove(&id);
                acknowledged.deleted.insert(id);
            }
        } else {
            let points: Vec<(String, Vec<f32>)> =
                ids.into_iter().map(|id| (id, draw.vector())).collect();
            let request = pb::UpsertPointsRequest {
                collection: "c".to_string(),
                points: points
                    .iter()
                    .map(|(id, vector)| pb::Point {
                        id: id.clone(),
                        vector: vector.clone(),
                        ..Default::default()
                    })
                    .collect(),
            };
            if client.upsert_points(request).await.is_err() {
                return;
            }
            for (id, vector) in points {
                acknowledged.deleted.remove(&id);
                acknowledged.live.insert(id, vector);
            }
        }
        acknowledged.in_flight.clear();
    }
}

async fn check(
    client: &mut VectorIndexServiceClient<Channel>,
    acknowledged: &Acknowledged,
    round: usize,
) {
    let settled = |id: &String| !acknowledged.in_flight.contains(id);
    let live: Vec<(&String, &Vec<f32>)> = acknowledged
        .live
        .iter()
        .filter(|(id, _)| settled(id))
        .collect();
    let ids: Vec<String> = live.iter().map(|(id, _)| (*id).clone()).collect();
    let got = vectors_of(client, "c", &ids).await;
    for (id, vector) in &live {
        assert_eq!(
            got.get(*id),
            Some(*vector),
            "round {round}: acknowledged point {id} lost or changed"
        );
    }
    let deleted: Vec<String> = acknowledged
        .deleted
        .iter()
        .filter(|id| settled(id))
        .cloned()
        .collect();
    for chunk in deleted.chunks(1000) {
        let got = client
            .get_points(pb::GetPointsRequest {
                collection: "c".to_string(),
                ids: chunk.to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .points;
        assert!(
            got.is_empty(),
            "round {round}: acknowledged deletes came back: {:?}",
            got.iter().map(|point| &point.id).collect::<Vec<_>>()
        );
    }
    // The restored graph finds points by their own vectors.
    for (id, vector) in live.iter().step_by(live.len() / 20 + 1) {
        let hits = client
            .search(pb::SearchRequest {
                collection: "c".to_string(),
                vector: (*vector).clone(),
                top_k: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .points;
        assert_eq!(hits[0].id, **id, "round {round}: the graph lost {id}");
    }
}

#[tokio::test]
async fn kill_9_at_random_moments_loses_nothing_acknowledged() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = reserve_port_pair(100);
    let mut draw = Draw(0x2545_f491_4f6c_dd1d);
    let mut acknowledged = Acknowledged::default();
    for round in 0..ROUNDS {
        let mut process = start(data_dir.path(), port).await;
        let mut client = connect(&mut process).await;
        if round == 0 {
            client
                .create_collection(pb::CreateCollectionRequest {
                    name: "c".to_string(),
                    dimension: DIMENSION as u32,
                    metric: pb::Metric::L2 as i32,
                    embedder: "none".to_string(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let count = wait_loaded(&client).await;
        check(&mut client, &acknowledged, round).await;
        let settled_live = acknowledged
            .live
            .keys()
            .filter(|id| !acknowledged.in_flight.contains(*id))
            .count() as u64;
        assert!(
            count >= settled_live,
            "round {round}: {count} points, {settled_live} acknowledged"
        );
        // Whatever was in flight is now settled one way or the other: read
        // it back so the next round knows.
        let in_flight: Vec<String> = std::mem::take(&mut acknowledged.in_flight)
            .into_iter()
            .collect();
        if !in_flight.is_empty() {
            let got = vectors_of(&mut client, "c", &in_flight).await;
            for id in in_flight {
                match got.get(&id) {
                    Some(vector) => {
                        acknowledged.deleted.remove(&id);
                        acknowledged.live.insert(id, vector.clone());
                    }
                    None => {
                        acknowledged.live.remove(&id);
                        acknowledged.deleted.insert(id);
                    }
                }
            }
        }
        let run_for = Duration::from_millis(50 + draw.next() % 600);
        let _ = tokio::time::timeout(
            run_for,
            write_until_killed(&mut client, &mut draw, &mut acknowledged),
        )
        .await;
        process.child.start_kill().unwrap();
        process.child.wait().await.unwrap();
    }
    assert!(
        acknowledged.live.len() > 500,
        "the test wrote too little: {}",
        acknowledged.live.len()
    );
    let log = std::fs::read_to_string(data_dir.path().join("vector-index.log")).unwrap();
    assert!(
        log.contains("snapshot written"),
        "no snapshot was ever written"
    );
    assert!(
        log.contains("snapshot and replay"),
        "no start restored from a snapshot"
    );
}

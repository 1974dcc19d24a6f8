//! Keel's vector index through gRPC for the ANN benchmark: a vector-index
//! server in this process on a loopback port with its SQLite store, the
//! base upserted through `UpsertPoints` (durable writes included), then
//! `Search` calls one at a time per `ef`, and under concurrent clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::{CancellationToken, Listeners};
use keel_proto::v1 as pb;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_vector_index::distance::Metric;
use tokio::net::TcpListener;
use tonic::transport::Channel;

use crate::ann_dataset::{AnnDataset, TOP_K};
use crate::latency::LatencyHistogram;
use crate::progress;

const COLLECTION: &str = "ann";
const BATCH: usize = 1000;

/// A vector-index server for the benchmark, stopped on drop of `shutdown`.
pub struct GrpcIndex {
    pub client: VectorIndexServiceClient<Channel>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl GrpcIndex {
    pub async fn start() -> anyhow::Result<GrpcIndex> {
        let dir = tempfile::tempdir()?;
        let config = keel_vector_index::Config {
            port: 0,
            database_url: format!("sqlite://{}", dir.path().join("vector-index.db").display()),
            snapshot_dir: dir.path().join("snapshots").display().to_string(),
            ..keel_vector_index::Config::default()
        };
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", grpc.local_addr()?);
        let shutdown = CancellationToken::new();
        let listeners = Listeners { grpc, admin: None };
        tokio::spawn(keel_vector_index::serve(
            config,
            keel_models::ModelCatalog::builtin(),
            listeners,
            shutdown.clone(),
        ));
        let channel = Channel::from_shared(url)?.connect_lazy();
        let client = VectorIndexServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        Ok(GrpcIndex {
            client,
            shutdown,
            _dir: dir,
        })
    }

    /// Creates the collection and upserts the base; returns the seconds
    /// the upserts took.
    pub async fn build(&mut self, dataset: &AnnDataset) -> anyhow::Result<f64> {
        let metric = match dataset.metric {
            Metric::Cosine => pb::Metric::Cosine,
            Metric::Dot => pb::Metric::Dot,
            Metric::L2 => pb::Metric::L2,
        };
        let request = pb::CreateCollectionRequest {
            name: COLLECTION.to_string(),
            dimension: dataset.dimension() as u32,
            metric: metric as i32,
            embedder: keel_vector_index::config::NO_EMBEDDER.to_string(),
            hnsw: Some(pb::HnswParams {
                m: 16,
                ef_construction: 200,
                ef_search: 64,
            }),
            indexed_payload_keys: Vec::new(),
        };
        // The server may still be binding: retry briefly.
        let mut attempts = 0;
        while let Err(status) = self.client.create_collection(request.clone()).await {
            attempts += 1;
            anyhow::ensure!(attempts < 50, "CreateCollection: {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let bar = progress::bar(dataset.base.len() as u64, "upserting (gRPC)");
        let started = Instant::now();
        for (batch_number, batch) in dataset.base.chunks(BATCH).enumerate() {
            let points = batch
                .iter()
                .enumerate()
                .map(|(offset, vector)| pb::Point {
                    id: (batch_number * BATCH + offset).to_string(),
                    vector: vector.clone(),
                    text: String::new(),
                    payload: None,
                })
                .collect();
            self.client
                .upsert_points(pb::UpsertPointsRequest {
                    collection: COLLECTION.to_string(),
                    points,
                })
                .await?;
            bar.inc(batch.len() as u64);
        }
        bar.finish_and_clear();
        Ok(started.elapsed().as_secs_f64())
    }

    /// The positions of the nearest `TOP_K` to `query`.
    pub async fn search(&mut self, query: &[f32], ef: usize) -> anyhow::Result<Vec<usize>> {
        search(&mut self.client, query, ef).await
    }

    /// `clients` tasks each sending `per_client` searches back to back;
    /// returns the latencies and the overall queries per second.
    pub async fn under_load(
        &self,
        queries: &Arc<Vec<Vec<f32>>>,
        ef: usize,
        clients: usize,
        per_client: usize,
    ) -> anyhow::Result<(LatencyHistogram, f64)> {
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(clients);
        for client_number in 0..clients {
            let mut client = self.client.clone();
            let queries = queries.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = LatencyHistogram::new()?;
                for n in 0..per_client {
                    let query = &queries[(client_number * per_client + n) % queries.len()];
                    let sent = Instant::now();
                    search(&mut client, query, ef).await?;
                    latencies.record(sent.elapsed());
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut all = LatencyHistogram::new()?;
        for task in tasks {
            all.merge(&task.await??)?;
        }
        let qps = (clients * per_client) as f64 / started.elapsed().as_secs_f64();
        Ok((all, qps))
    }
}

impl Drop for GrpcIndex {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn search(
    client: &mut VectorIndexServiceClient<Channel>,
    query: &[f32],
    ef: usize,
) -> anyhow::Result<Vec<usize>> {
    let found = client
        .search(pb::SearchRequest {
            collection: COLLECTION.to_string(),
            vector: query.to_vec(),
            top_k: TOP_K as u32,
            ef: ef as u32,
            ..pb::SearchRequest::default()
        })
        .await?
        .into_inner();
    found
        .points
        .into_iter()
        .map(|point| Ok(point.id.parse::<usize>()?))
        .collect()
}

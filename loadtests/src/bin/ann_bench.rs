//! Keel's vector index on an ANN dataset: build time, then recall@10
//! against the exact neighbours and queries per second for each `ef`, and
//! the process's peak RSS.
//!
//! `--mode in-process` builds `CollectionIndex` directly (inserts on
//! rayon's threads: `RAYON_NUM_THREADS=1` for one; searches on one
//! thread). `--mode grpc` runs a vector-index server in this process on a
//! loopback port with its SQLite store, upserts through `UpsertPoints`,
//! searches through `Search` one call at a time, then with `--clients`
//! concurrent clients at `--load-ef` (latency p50/p99).
//!
//! The data: `--dataset DIR` (written by loadtests/ann/datasets.py, as the
//! reference implementations read it), or without it `--points` drawn
//! here: embedding-like 384-d vectors (a Gaussian mixture in a low-rank
//! subspace, L2-normalised; queries from the same distribution). M=16,
//! ef_construction=200. `--json` prints one JSON line for
//! loadtests/ann/report.py instead of the table.

// A benchmark's report is its standard output.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use keel_loadtests::ann_dataset::{peak_rss_mib, recall_at_10, AnnDataset, TOP_K};
use keel_loadtests::ann_grpc::GrpcIndex;
use keel_vector_index::filter::PayloadFilter;
use keel_vector_index::index::{CollectionIndex, HnswParams, IndexedPoint};

/// The allocator the services run with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    InProcess,
    Grpc,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum, default_value_t = Mode::InProcess)]
    mode: Mode,
    #[arg(long)]
    dataset: Option<PathBuf>,
    #[arg(long, default_value_t = 20_000)]
    points: usize,
    #[arg(long, default_value_t = 500)]
    queries: usize,
    #[arg(long, default_value_t = 384)]
    dim: usize,
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    ef: Vec<usize>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Concurrent clients for the gRPC latency run.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Searches per client in the gRPC latency run.
    #[arg(long, default_value_t = 200)]
    per_client: usize,
    /// The `ef` of the gRPC latency run.
    #[arg(long, default_value_t = 64)]
    load_ef: usize,
    #[arg(long)]
    json: bool,
}

/// One `ef` of the sweep.
#[derive(Debug, serde::Serialize)]
struct SweepPoint {
    ef: usize,
    recall_at_10: f64,
    qps: f64,
}

#[derive(Debug, serde::Serialize)]
struct Load {
    clients: usize,
    ef: usize,
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    implementation: String,
    dataset: String,
    points: usize,
    build_s: f64,
    peak_rss_mib: f64,
    sweep: Vec<SweepPoint>,
    load: Option<Load>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut dataset = match &args.dataset {
        Some(dir) => AnnDataset::read(dir)?,
        None => AnnDataset::embedding_like(args.points, args.queries, args.dim, args.seed),
    };
    let report = match args.mode {
        Mode::InProcess => in_process(&mut dataset, &args.ef)?,
        Mode::Grpc => through_grpc(&mut dataset, &args).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!("cpu: {}", keel_loadtests::machine::cpu_model());
    println!(
        "{}: {} on {} points x {} dims, {} queries; build {:.2} s ({:.0} points/s, {} insert threads); peak RSS {:.0} MiB",
        report.implementation,
        report.dataset,
        report.points,
        dataset.dimension(),
        dataset.queries.len(),
        report.build_s,
        report.points as f64 / report.build_s,
        rayon::current_num_threads(),
        report.peak_rss_mib
    );
    println!("| ef | recall@10 | QPS (one at a time) |");
    println!("| ---: | ---: | ---: |");
    for point in &report.sweep {
        println!(
            "| {} | {:.3} | {:.0} |",
            point.ef, point.recall_at_10, point.qps
        );
    }
    if let Some(load) = &report.load {
        println!(
            "{} clients at ef {}: {:.0} QPS, p50 {:.2} ms, p99 {:.2} ms",
            load.clients, load.ef, load.qps, load.p50_ms, load.p99_ms
        );
    }
    Ok(())
}

fn in_process(dataset: &mut AnnDataset, efs: &[usize]) -> anyhow::Result<Report> {
    let metric = dataset.metric;
    let truth = dataset.truth().to_vec();
    // The base moves into the index batch by batch: the peak RSS is the
    // index's, not a second copy of the data.
    let base = std::mem::take(&mut dataset.base);
    let point_count = base.len();
    let queries = dataset
        .queries
        .iter()
        .map(|query| {
            metric
                .index_form(query)
                .ok_or_else(|| anyhow::anyhow!("a query is zero"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let params = HnswParams {
        m: 16,
        ef_construction: 200,
        ef_search: 64,
    };
    let mut index = CollectionIndex::empty(metric, params, &[]);
    let bar = keel_loadtests::progress::bar(point_count as u64, "building");
    let mut base = base.into_iter().enumerate();
    let mut build_s = 0.0;
    loop {
        let batch = base
            .by_ref()
            .take(1000)
            .map(|(position, vector)| {
                Ok(IndexedPoint {
                    seq: 0,
                    id: position.to_string(),
                    vector: metric
                        .index_form(&vector)
                        .ok_or_else(|| anyhow::anyhow!("base vector {position} is zero"))?,
                    text: String::new(),
                    payload: Default::default(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if batch.is_empty() {
            break;
        }
        let count = batch.len() as u64;
        let started = Instant::now();
        index.stage_upsert(batch).run();
        build_s += started.elapsed().as_secs_f64();
        bar.inc(count);
    }
    bar.finish_and_clear();

    let everything = PayloadFilter::default();
    let positions = |hits: Vec<keel_vector_index::index::Hit>| -> Vec<usize> {
        hits.into_iter()
            .filter_map(|hit| hit.point.id.parse().ok())
            .collect()
    };
    let mut sweep = Vec::new();
    for ef in efs {
        let started = Instant::now();
        let found: Vec<Vec<usize>> = queries
            .iter()
            .map(|query| positions(index.search_with_ef(query, TOP_K, &everything, 0, *ef)))
            .collect();
        let qps = queries.len() as f64 / started.elapsed().as_secs_f64();
        sweep.push(SweepPoint {
            ef: *ef,
            recall_at_10: recall_at_10(&found, &truth),
            qps,
        });
    }
    Ok(Report {
        implementation: "keel in process".to_string(),
        dataset: dataset.name.clone(),
        points: point_count,
        build_s,
        peak_rss_mib: peak_rss_mib(),
        sweep,
        load: None,
    })
}

async fn through_grpc(dataset: &mut AnnDataset, args: &Args) -> anyhow::Result<Report> {
    let mut index = GrpcIndex::start().await?;
    let build_s = index.build(dataset).await?;
    let truth = dataset.truth().to_vec();
    let mut sweep = Vec::new();
    for ef in &args.ef {
        let started = Instant::now();
        let mut found = Vec::with_capacity(dataset.queries.len());
        for query in &dataset.queries {
            found.push(index.search(query, *ef).await?);
        }
        let qps = dataset.queries.len() as f64 / started.elapsed().as_secs_f64();
        sweep.push(SweepPoint {
            ef: *ef,
            recall_at_10: recall_at_10(&found, &truth),
            qps,
        });
    }
    let queries = Arc::new(dataset.queries.clone());
    let (latencies, qps) = index
        .under_load(&queries, args.load_ef, args.clients, args.per_client)
        .await?;
    Ok(Report {
        implementation: "keel through gRPC".to_string(),
        dataset: dataset.name.clone(),
        points: dataset.base.len(),
        build_s,
        peak_rss_mib: peak_rss_mib(),
        sweep,
        load: Some(Load {
            clients: args.clients,
            ef: args.load_ef,
            qps,
            p50_ms: latencies.quantile_ms(0.5),
            p99_ms: latencies.quantile_ms(0.99),
        }),
    })
}

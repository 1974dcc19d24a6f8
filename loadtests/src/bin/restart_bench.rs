//! How long a vector-index collection takes to answer again after a
//! restart: `--points` vectors upserted through the service's own API into
//! SQLite, the snapshot a clean shutdown writes, then the time from opening
//! the service until the collection is loaded (restored from the snapshot
//! with the rows replayed), and with `--rebuild` the same without a
//! snapshot for comparison.
//!
//! `keel-restart-bench [--points N] [--dim N] [--ef-construction N]
//! [--dir PATH] [--rebuild] [--restart-only]`. Cosine, M=16. The data lives in `--dir` (a
//! temporary directory by default): at 1M × 384 it takes about 5 GB.

// A benchmark's report is its standard output.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use keel_core::metrics::ServiceMetrics;
use keel_loadtests::machine::cpu_model;
use keel_loadtests::progress::bar;
use keel_models::ModelCatalog;
use keel_store::Store;
use keel_vector_index::collections::{NewCollection, NewPoint, VectorIndex};
use keel_vector_index::distance::Metric;
use keel_vector_index::index::HnswParams;
use keel_vector_index::metrics::Metrics;
use keel_vector_index::snapshot::SnapshotStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The allocator the services run with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    points: usize,
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Lower than the default 200 only to build the collection sooner: a
    /// restore reads the graph whatever built it.
    #[arg(long, default_value_t = 64)]
    ef_construction: usize,
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also time a start without the snapshot (a rebuild).
    #[arg(long)]
    rebuild: bool,
    /// Only time the restart of what an earlier run left in `--dir`.
    #[arg(long, requires = "dir")]
    restart_only: bool,
}

const COLLECTION: &str = "bench";
const BATCH: usize = 1000;

async fn open(dir: &Path, snapshots: bool) -> anyhow::Result<(Arc<VectorIndex>, Store)> {
    let url = format!("sqlite://{}", dir.join("vector-index.db").display());
    let store = Store::open(&url, keel_vector_index::store::MIGRATIONS).await?;
    let snapshot_store = snapshots.then(|| SnapshotStore::new(dir.join("snapshots")));
    let metrics = Metrics::new(&ServiceMetrics::new("vector-index"))?;
    let index = VectorIndex::open(
        store.clone(),
        ModelCatalog::builtin(),
        1000,
        snapshot_store,
        metrics,
    )
    .await?;
    Ok((index, store))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let temporary = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    println!("CPU: {}", cpu_model());
    println!(
        "{} points × {} dimensions, M=16, ef_construction={}, in {}",
        args.points,
        args.dim,
        args.ef_construction,
        dir.display()
    );

    if !args.restart_only {
        fill(&dir, &args).await?;
    }
    let started = Instant::now();
    let (index, store) = open(&dir, true).await?;
    index.load_all().await;
    let restored = started.elapsed();
    let count = index.get_collection(COLLECTION)?.point_count;
    println!(
        "restart from the snapshot: {count} points answering after {:.2} s",
        restored.as_secs_f64()
    );
    drop(index);
    store.close().await;

    if args.rebuild {
        let started = Instant::now();
        let (index, store) = open(&dir, false).await?;
        index.load_all().await;
        println!(
            "restart without it (rebuild): {:.1} s",
            started.elapsed().as_secs_f64()
        );
        drop(index);
        store.close().await;
    }
    Ok(())
}

/// Creates the collection, upserts the points and writes the snapshot a
/// clean shutdown would.
async fn fill(dir: &Path, args: &Args) -> anyhow::Result<()> {
    let (index, store) = open(dir, true).await?;
    index.load_all().await;
    index
        .create_collection(NewCollection {
            name: COLLECTION.to_string(),
            dimension: args.dim,
            metric: Metric::Cosine,
            embedder: None,
            hnsw: HnswParams {
                m: 16,
                ef_construction: args.ef_construction,
                ef_search: 64,
            },
            indexed_keys: Vec::new(),
        })
        .await?;
    let mut rng = StdRng::seed_from_u64(11);
    let progress = bar(args.points as u64, "upserting");
    let started = Instant::now();
    for first in (0..args.points).step_by(BATCH) {
        let points = (first..(first + BATCH).min(args.points))
            .map(|n| NewPoint {
                id: format!("p{n:08}"),
                vector: (0..args.dim).map(|_| rng.random_range(-1.0..1.0)).collect(),
                text: String::new(),
                payload: Default::default(),
            })
            .collect::<Vec<_>>();
        let count = points.len() as u64;
        index.upsert_points(COLLECTION, points).await?;
        progress.inc(count);
    }
    progress.finish_and_clear();
    println!("upserted in {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    index.snapshot_changed().await;
    println!(
        "snapshot written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(index);
    store.close().await;
    Ok(())
}

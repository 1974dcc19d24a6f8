//! Keel's vector index in process, on embedding-like data: build time, then
//! recall@10 against brute force and queries per second for each `ef`.
//!
//! The data: `--points` 384-d vectors from a Gaussian mixture in a
//! low-rank subspace (64 clusters in 32 dimensions, mapped into `--dim`
//! with a little isotropic noise), L2-normalised, as sentence embeddings
//! are; the queries are drawn from the same distribution, never from the
//! base set. Cosine, M=16, ef_construction=200.
//!
//! `keel-ann-bench [--points N] [--queries N] [--dim N] [--ef 16,32,64,128]`.
//! Inserts run on rayon's threads (`RAYON_NUM_THREADS=1` for one); searches
//! run on one thread.

// A benchmark's report is its standard output.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use clap::Parser;
use keel_vector_index::distance::Metric;
use keel_vector_index::filter::PayloadFilter;
use keel_vector_index::index::{CollectionIndex, HnswParams, IndexedPoint};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 20_000)]
    points: usize,
    #[arg(long, default_value_t = 500)]
    queries: usize,
    #[arg(long, default_value_t = 384)]
    dim: usize,
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128")]
    ef: Vec<usize>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const CLUSTERS: usize = 64;
const RANK: usize = 32;
const TOP_K: usize = 10;

/// Draws embedding-like vectors: a cluster centre plus spread, in a
/// `RANK`-dimensional subspace of `dim`, plus a little noise everywhere.
struct EmbeddingLike {
    basis: Vec<Vec<f32>>,
    centres: Vec<Vec<f32>>,
    rng: StdRng,
}

impl EmbeddingLike {
    fn new(dim: usize, seed: u64) -> EmbeddingLike {
        let mut rng = StdRng::seed_from_u64(seed);
        let basis = (0..RANK)
            .map(|_| (0..dim).map(|_| gaussian(&mut rng)).collect())
            .collect();
        let centres = (0..CLUSTERS)
            .map(|_| (0..RANK).map(|_| gaussian(&mut rng)).collect())
            .collect();
        EmbeddingLike {
            basis,
            centres,
            rng,
        }
    }

    fn draw(&mut self) -> Vec<f32> {
        let centre = &self.centres[self.rng.random_range(0..CLUSTERS)];
        let latent: Vec<f32> = centre
            .iter()
            .map(|value| value + 0.5 * gaussian(&mut self.rng))
            .collect();
        let dim = self.basis[0].len();
        let mut vector: Vec<f32> = (0..dim).map(|_| 0.1 * gaussian(&mut self.rng)).collect();
        for (weight, direction) in latent.iter().zip(&self.basis) {
            for (value, component) in vector.iter_mut().zip(direction) {
                *value += weight * component;
            }
        }
        vector
    }
}

/// Box-Muller: one standard normal draw.
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let metric = Metric::Cosine;
    let mut data = EmbeddingLike::new(args.dim, args.seed);
    let unit = |vector: Vec<f32>| {
        metric
            .index_form(&vector)
            .ok_or_else(|| anyhow::anyhow!("a zero vector was drawn"))
    };
    let points = (0..args.points)
        .map(|n| {
            Ok(IndexedPoint {
                seq: 0,
                id: format!("p{n}"),
                vector: unit(data.draw())?,
                text: String::new(),
                payload: Default::default(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let queries = (0..args.queries)
        .map(|_| unit(data.draw()))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let params = HnswParams {
        m: 16,
        ef_construction: 200,
        ef_search: 64,
    };
    let mut index = CollectionIndex::empty(metric, params, &[]);
    let bar = keel_loadtests::progress::bar(points.len() as u64, "building");
    let started = Instant::now();
    for batch in points.chunks(1000) {
        index.stage_upsert(batch.to_vec()).run();
        bar.inc(batch.len() as u64);
    }
    let build_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let everything = PayloadFilter::default();
    let bar = keel_loadtests::progress::bar(queries.len() as u64, "brute force");
    let truth: Vec<Vec<String>> = queries
        .iter()
        .map(|query| {
            bar.inc(1);
            index
                .search(query, TOP_K, &everything, usize::MAX)
                .into_iter()
                .map(|hit| hit.point.id.clone())
                .collect()
        })
        .collect();
    bar.finish_and_clear();

    println!("cpu: {}", keel_loadtests::machine::cpu_model());
    println!(
        "{} points x {} dims, {} queries; build {build_s:.2} s ({:.0} points/s, {} insert threads)",
        args.points,
        args.dim,
        args.queries,
        args.points as f64 / build_s,
        rayon::current_num_threads()
    );
    println!("| ef | recall@10 | QPS (one thread) |");
    println!("| ---: | ---: | ---: |");
    for ef in &args.ef {
        let started = Instant::now();
        let found: Vec<Vec<String>> = queries
            .iter()
            .map(|query| {
                index
                    .search_with_ef(query, TOP_K, &everything, 0, *ef)
                    .into_iter()
                    .map(|hit| hit.point.id.clone())
                    .collect()
            })
            .collect();
        let qps = queries.len() as f64 / started.elapsed().as_secs_f64();
        let hits: usize = found
            .iter()
            .zip(&truth)
            .map(|(found, truth)| found.iter().filter(|id| truth.contains(id)).count())
            .sum();
        let recall = hits as f64 / (queries.len() * TOP_K) as f64;
        println!("| {ef} | {recall:.3} | {qps:.0} |");
    }
    Ok(())
}

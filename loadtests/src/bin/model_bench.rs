//! `keel-model-bench`: times Keel's `smollm2` and `minilm` on a workload
//! file. `workload` writes the file from a corpus; `run` prints one JSON
//! line of medians per call; `contention` times the two models alone and
//! at once and fails when they do not share the CPU. See
//! loadtests/models_bench.sh.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use keel_loadtests::model_bench::{run_round, Workload};
use keel_loadtests::model_contention::measure_contention;
use keel_models::{
    ModelCatalog, ModelsConfig, SharedEmbedder, SharedGenerator, MINILM_EMBEDDER_NAME,
    SMOLLM2_GENERATOR_NAME,
};

#[derive(Parser)]
#[command(name = "keel-model-bench", about = "Times Keel's in-process models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the workload (a chat prompt and 256 sentences) from a corpus.
    Workload {
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/corpus"))]
        corpus: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Time the models on a workload and print the medians as JSON.
    Run(BenchArgs),
    /// Time smollm2's decoding and minilm's embedding alone, then at once
    /// (an ingest during a chat); print the shares and exit 1 when a model
    /// is starved or the two lose throughput.
    Contention(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long)]
    workload: PathBuf,
    /// Where `keel models fetch` put the models.
    #[arg(long)]
    models: PathBuf,
    /// Timed generations and embedding passes (after one warm-up).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// CPU threads per model, as `[models] threads` in Keel's config.
    #[arg(long, default_value_t = 2)]
    threads: u32,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Workload { corpus, out } => {
            let workload = Workload::from_corpus(&corpus)
                .with_context(|| format!("reading {}", corpus.display()))?;
            std::fs::write(&out, serde_json::to_string_pretty(&workload)?)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        Command::Run(args) => {
            let (generator, embedder, workload) = load(&args)?;
            let result = run_round(
                generator.as_ref(),
                embedder.as_ref(),
                &workload,
                args.repeats,
            )?;
            println!("{}", serde_json::to_string(&result)?);
        }
        Command::Contention(args) => {
            let (generator, embedder, workload) = load(&args)?;
            let result = measure_contention(
                generator.as_ref(),
                embedder.as_ref(),
                &workload,
                args.repeats,
            )?;
            println!("{}", result.table());
            if !result.meets_bars() {
                anyhow::bail!("the models do not share the CPU: a share missed its bar");
            }
        }
    }
    Ok(())
}

/// The workload file and the two models, loaded as `keel up` loads them.
fn load(args: &BenchArgs) -> anyhow::Result<(SharedGenerator, SharedEmbedder, Workload)> {
    let text = std::fs::read_to_string(&args.workload)
        .with_context(|| format!("reading {}", args.workload.display()))?;
    let workload: Workload = serde_json::from_str(&text)?;
    let mut config = ModelsConfig::in_dir(args.models.clone());
    config.threads = args.threads;
    let catalog = ModelCatalog::load(&config)?;
    let generator = catalog.generator(SMOLLM2_GENERATOR_NAME)?;
    let embedder = catalog.embedder(MINILM_EMBEDDER_NAME)?;
    Ok((generator, embedder, workload))
}

//! `keel-model-bench`: times Keel's `smollm2` and `minilm` on a workload
//! file. `workload` writes the file from a corpus; `run` prints one JSON
//! line of medians per call. See loadtests/models_bench.sh.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keel_loadtests::model_bench::{run_round, Workload};
use keel_models::{ModelCatalog, ModelsConfig, MINILM_EMBEDDER_NAME, SMOLLM2_GENERATOR_NAME};

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
    Run {
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
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Workload { corpus, out } => {
            let workload = Workload::from_corpus(&corpus)
                .with_context(|| format!("reading {}", corpus.display()))?;
            std::fs::write(&out, serde_json::to_string_pretty(&workload)?)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        Command::Run {
            workload,
            models,
            repeats,
            threads,
        } => {
            let text = std::fs::read_to_string(&workload)
                .with_context(|| format!("reading {}", workload.display()))?;
            let workload: Workload = serde_json::from_str(&text)?;
            let mut config = ModelsConfig::in_dir(models);
            config.threads = threads;
            let catalog = ModelCatalog::load(&config)?;
            let generator = catalog.generator(SMOLLM2_GENERATOR_NAME)?;
            let embedder = catalog.embedder(MINILM_EMBEDDER_NAME)?;
            let result = run_round(generator.as_ref(), embedder.as_ref(), &workload, repeats)?;
            println!("{}", serde_json::to_string(&result)?);
        }
    }
    Ok(())
}

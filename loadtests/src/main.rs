//! `keel-loadtest`: parses the command line and calls `setup` or `run`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use keel_loadtests::{parse_duration, report, CorpusSource, Load, RunOptions, SetupOptions};

#[derive(Parser)]
#[command(
    name = "keel-loadtest",
    about = "Load generator for Keel serving's Query"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The API key every call presents (`authorization: Bearer …`)
    #[arg(long, global = true, env = "KEEL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Create (idempotently) the collection, models, aliases and endpoint a run needs.
    Setup(SetupArgs),
    /// Offer load to the endpoint and print the summary.
    Run(RunArgs),
}

#[derive(Args)]
struct SetupArgs {
    #[arg(long, default_value = "http://127.0.0.1:7101")]
    registry: String,
    #[arg(long, default_value = "http://127.0.0.1:7103")]
    vector_index: String,
    #[arg(long, default_value = "http://127.0.0.1:7102")]
    serving: String,
    /// Directory of .md files; each paragraph becomes a point.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/corpus"))]
    corpus: PathBuf,
    /// Ingest 200 generated paragraphs instead of --corpus.
    #[arg(long)]
    synthetic: bool,
    #[arg(long, default_value = "lt-docs")]
    collection: String,
    #[arg(long, default_value = "lt-endpoint")]
    endpoint: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Closed,
    Open,
}

#[derive(Args)]
struct RunArgs {
    /// Serving's gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:7102")]
    target: String,
    #[arg(long, default_value = "lt-endpoint")]
    endpoint: String,
    #[arg(long, value_enum, default_value = "closed")]
    mode: Mode,
    /// Closed loop: clients sending back to back.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// Open loop: requests per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: requests in flight at most; later ones wait (and their wait counts).
    #[arg(long, default_value_t = 1000)]
    max_outstanding: u32,
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    duration: Duration,
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    warmup: Duration,
    /// Per-request deadline.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,
    /// HTTP/2 connections to spread the requests over.
    #[arg(long, default_value_t = 1)]
    connections: u32,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    keel_core::telemetry::init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Setup(args) => setup(args, cli.api_key).await,
        Command::Run(args) => run(args, cli.api_key).await,
    }
}

async fn setup(args: SetupArgs, api_key: Option<String>) -> anyhow::Result<()> {
    let corpus = if args.synthetic {
        CorpusSource::Synthetic
    } else {
        CorpusSource::Directory(args.corpus)
    };
    let options = SetupOptions {
        registry_url: args.registry,
        vector_index_url: args.vector_index,
        serving_url: args.serving,
        corpus,
        collection: args.collection,
        endpoint: args.endpoint,
        api_key,
    };
    let setup_report = keel_loadtests::setup(&options).await?;
    report::print_setup(&setup_report);
    Ok(())
}

async fn run(args: RunArgs, api_key: Option<String>) -> anyhow::Result<()> {
    let load = match args.mode {
        Mode::Closed => Load::Closed {
            concurrency: args.concurrency,
        },
        Mode::Open => Load::Open {
            rate: args
                .rate
                .context("--mode open needs --rate <requests per second>")?,
            max_outstanding: args.max_outstanding,
        },
    };
    let options = RunOptions {
        target: args.target,
        endpoint: args.endpoint,
        load,
        warmup: args.warmup,
        duration: args.duration,
        timeout: args.timeout,
        connections: args.connections,
        show_progress: true,
        api_key,
    };
    let summary = keel_loadtests::run(&options).await?;
    report::print_summary(&summary);
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&summary)?;
        tokio::fs::write(&path, json + "\n")
            .await
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

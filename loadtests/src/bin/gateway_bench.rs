//! `keel-gateway-bench`: Keel's OpenAI-compatible path against another
//! gateway (TensorZero) in front of the same mock OpenAI server.
//!
//! `keel-gateway-bench setup` makes Keel's endpoint and a key scoped to it
//! (the key's secret on stdout); `keel-gateway-bench compare` runs the
//! rounds and prints the markdown report (see
//! `keel_loadtests::gateway_compare` for what is measured).
//! `loadtests/gateway_bench.sh` starts everything and calls both.

// A benchmark's report is its standard output.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use keel_loadtests::gateway_call::Gateway;
use keel_loadtests::gateway_compare::{compare, CompareOptions, Target};
use keel_loadtests::gateway_setup::{setup_gateway, GatewaySetupOptions};
use keel_loadtests::machine::cpu_model;
use keel_loadtests::{gateway_report, parse_duration};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keel-gateway-bench",
    about = "Keel's OpenAI-compatible path against another gateway, in front of the same mock"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create Keel's gateway endpoint and a key that may query it; prints the key.
    Setup(SetupArgs),
    /// Measure the mock alone, Keel and the other gateway in alternating rounds.
    Compare(CompareArgs),
}

#[derive(Args)]
struct SetupArgs {
    #[arg(long, default_value = "http://127.0.0.1:7101")]
    registry: String,
    #[arg(long, default_value = "http://127.0.0.1:7102")]
    serving: String,
    /// A key with `admin` (the master key).
    #[arg(long, env = "KEEL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[arg(long, default_value = "gw")]
    endpoint: String,
    /// The OpenAI-compatible generator configured for the mock.
    #[arg(long, default_value = "mock")]
    generator: String,
}

#[derive(Args)]
struct CompareArgs {
    /// The mock OpenAI server's root URL.
    #[arg(long, default_value = "http://127.0.0.1:3030")]
    mock: String,
    /// Keel serving's admin (HTTP) root URL.
    #[arg(long, default_value = "http://127.0.0.1:7202")]
    keel: String,
    #[arg(long, default_value = "gw")]
    keel_endpoint: String,
    /// The key Keel's calls present (one scoped to the endpoint).
    #[arg(long, env = "KEEL_BENCH_KEY", hide_env_values = true)]
    keel_key: Option<String>,
    /// TensorZero's gateway root URL; left out, Keel is measured alone.
    #[arg(long)]
    tensorzero: Option<String>,
    #[arg(long, default_value = "function1")]
    tensorzero_function: String,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    warmup: Duration,
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    sequential: Duration,
    #[arg(long, value_parser = parse_duration, default_value = "4s")]
    probe: Duration,
    /// Clients of the closed-loop probe.
    #[arg(long, default_value_t = 64)]
    probe_concurrency: u32,
    #[arg(long, value_parser = parse_duration, default_value = "6s")]
    step: Duration,
    /// The open loop's rates, as fractions of the larger probe.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.5,0.75,0.9,1.0,1.1,1.25"
    )]
    fractions: Vec<f64>,
    #[arg(long, default_value_t = 256)]
    max_outstanding: u32,
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Also write every round's summaries as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    keel_core::telemetry::init_logging();
    match Cli::parse().command {
        Command::Setup(args) => {
            let options = GatewaySetupOptions {
                registry_url: args.registry,
                serving_url: args.serving,
                api_key: args.api_key,
                endpoint: args.endpoint,
                generator: args.generator,
            };
            println!("{}", setup_gateway(&options).await?);
            Ok(())
        }
        Command::Compare(args) => run_compare(args).await,
    }
}

async fn run_compare(args: CompareArgs) -> anyhow::Result<()> {
    let mock = Target {
        gateway: Gateway::Mock,
        url: args.mock,
        model: "gpt-4.1-mini".to_string(),
        api_key: None,
    };
    let mut gateways = vec![Target {
        gateway: Gateway::Keel,
        url: args.keel,
        model: args.keel_endpoint,
        api_key: args.keel_key,
    }];
    if let Some(url) = args.tensorzero {
        gateways.push(Target {
            gateway: Gateway::TensorZero,
            url,
            model: args.tensorzero_function,
            api_key: None,
        });
    }
    let options = CompareOptions {
        mock,
        gateways,
        rounds: args.rounds,
        warmup: args.warmup,
        sequential: args.sequential,
        probe: args.probe,
        probe_concurrency: args.probe_concurrency,
        step: args.step,
        fractions: args.fractions,
        max_outstanding: args.max_outstanding,
        timeout: args.timeout,
        show_progress: true,
    };
    let rounds = compare(&options).await?;
    print!(
        "{}",
        gateway_report::markdown(&rounds, &cpu_model(), Gateway::Keel.label())
    );
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&rounds)?;
        tokio::fs::write(&path, json + "\n")
            .await
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

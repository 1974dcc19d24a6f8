//! The `keel` command line: `up` and `demo` run the services in this process;
//! every other command is a gRPC client of a running Keel. Each command group
//! has its own module, and the demo goes through the same functions.

pub mod chunk;
pub mod clients;
pub mod collection;
pub mod demo;
pub mod demo_improve;
pub mod documents;
pub mod endpoint;
pub mod error;
pub mod eval;
pub mod eval_compare;
pub mod eval_dataset;
pub mod eval_replay;
pub mod eval_retrieval;
pub mod eval_run;
pub mod experiment;
pub mod feedback;
pub mod fine_tune_api;
pub mod gate;
pub mod html_sections;
pub mod improve;
pub mod improve_datasets;
pub mod improve_fewshot;
pub mod improve_fine_tune;
pub mod ingest;
pub mod key;
pub mod metrics;
pub mod models;
pub mod output;
pub mod query;
pub mod registry;
pub mod retrieval_metrics;
pub mod scroll;
pub mod sections;
pub mod serve;
pub mod spec;
pub mod token_counts;
pub mod trace;
pub mod up;

use clap::{Parser, Subcommand};

pub use clients::ServiceUrls;
pub use error::CliError;

#[derive(Debug, Parser)]
#[command(
    name = "keel",
    version,
    about = "Keel: registry, serving, vector index, feedback and monitoring for RAG applications"
)]
pub struct Cli {
    #[command(flatten)]
    pub urls: ServiceUrls,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start all five services in this process on their configured ports
    Up(up::UpArgs),
    /// Run one service as its own process on its configured ports
    Serve(serve::ServeArgs),
    /// Run Keel's whole loop on the sample corpus: ingest, register, serve, feedback, export, metrics
    Demo(demo::DemoArgs),
    /// Vector collections
    #[command(subcommand)]
    Collection(collection::CollectionCommand),
    /// Cut .md, .txt and .html files into passages and upsert them into a collection
    Ingest(ingest::IngestArgs),
    /// Evaluate retrieval and versions, compare evaluation runs
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Registered models
    #[command(subcommand)]
    Model(registry::ModelCommand),
    /// Model versions
    #[command(subcommand)]
    Version(registry::VersionCommand),
    /// Promotion gates: what a version must show before an alias moves to it
    #[command(subcommand)]
    Gate(gate::GateCommand),
    /// API keys with scopes
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Aliases such as @champion
    #[command(subcommand)]
    Alias(registry::AliasCommand),
    /// Serving endpoints
    #[command(subcommand)]
    Endpoint(endpoint::EndpointCommand),
    /// Experiments: champion and challenger share an endpoint until feedback decides
    #[command(subcommand)]
    Experiment(experiment::ExperimentCommand),
    /// Feedback to a promoted challenger: export, few-shot challenger, held-out evaluation, experiment
    Improve(improve::ImproveArgs),
    /// Ask an endpoint a question
    Query(query::QueryArgs),
    /// Post feedback on a served answer
    Feedback(feedback::FeedbackArgs),
    /// Export a dataset built from feedback as JSONL
    Export(feedback::ExportArgs),
    /// Request counts, errors and latencies per served version
    Metrics(metrics::MetricsArgs),
    /// Local model files: fetch, verify, convert
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// One stored trace as a tree of spans
    Trace(trace::TraceArgs),
    /// The newest stored traces, filtered
    Traces(trace::TracesArgs),
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let urls = cli.urls;
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Collection(command) => collection::run(&urls, command).await,
        Command::Ingest(args) => ingest::run(&urls, args).await,
        Command::Eval(command) => eval::run(&urls, command).await,
        Command::Gate(command) => gate::run(&urls, command).await,
        Command::Model(command) => registry::run_model(&urls, command).await,
        Command::Version(command) => registry::run_version(&urls, command).await,
        Command::Key(command) => key::run(&urls, command).await,
        Command::Alias(command) => registry::run_alias(&urls, command).await,
        Command::Endpoint(command) => endpoint::run(&urls, command).await,
        Command::Experiment(command) => experiment::run(&urls, command).await,
        Command::Improve(args) => improve::run(&urls, args).await,
        Command::Query(args) => query::run(&urls, args).await,
        Command::Feedback(args) => feedback::run_feedback(&urls, args).await,
        Command::Export(args) => feedback::run_export(&urls, args).await,
        Command::Metrics(args) => metrics::run(&urls, args).await,
        Command::Models(command) => models::run(command).await,
        Command::Trace(args) => trace::run_trace(&urls, args).await,
        Command::Traces(args) => trace::run_traces(&urls, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn urls_default_to_the_local_ports_and_are_global() {
        let cli = Cli::try_parse_from([
            "keel",
            "collection",
            "list",
            "--serving",
            "http://10.0.0.1:9",
        ])
        .unwrap();
        assert_eq!(cli.urls.registry, "http://127.0.0.1:7101");
        assert_eq!(cli.urls.vector_index, "http://127.0.0.1:7103");
        assert_eq!(cli.urls.serving, "http://10.0.0.1:9");
    }

    #[test]
    fn feedback_needs_exactly_one_kind() {
        assert!(Cli::try_parse_from(["keel", "feedback", "r1"]).is_err());
        assert!(Cli::try_parse_from(["keel", "feedback", "r1", "--up", "--down"]).is_err());
        assert!(Cli::try_parse_from(["keel", "feedback", "r1", "--correction", "30 days"]).is_ok());
    }
}

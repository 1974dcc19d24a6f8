//! `keel eval`: retrieval quality of a collection, evaluation runs of a
//! version, and the comparison of two runs.

use crate::cli::{eval_compare, eval_replay, eval_retrieval, eval_run, CliError, ServiceUrls};

#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Retrieval quality of a collection on a question set: hit@k, MRR and
    /// recall@k per search mode
    Retrieval(eval_retrieval::RetrievalArgs),
    /// Run a dataset through one version of an endpoint's chain, score the
    /// answers and store the run in the registry
    Run(eval_run::RunArgs),
    /// Run a slice of the inference log (a time range, or only requests with
    /// feedback) through a version, as an evaluation run
    Replay(eval_replay::ReplayArgs),
    /// Compare two evaluation runs scorer by scorer, with paired 95%
    /// intervals
    Compare(eval_compare::CompareArgs),
}

pub async fn run(urls: &ServiceUrls, command: EvalCommand) -> Result<(), CliError> {
    match command {
        EvalCommand::Retrieval(args) => eval_retrieval::run(urls, args).await,
        EvalCommand::Run(args) => eval_run::run(urls, args).await,
        EvalCommand::Replay(args) => eval_replay::run(urls, args).await,
        EvalCommand::Compare(args) => eval_compare::run(urls, args).await,
    }
}

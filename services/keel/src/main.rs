//! The `keel` binary: parses the command line and runs it; everything else
//! lives in `keel::cli`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = keel::cli::Cli::parse();
    match keel::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            keel::cli::output::error(&error);
            ExitCode::FAILURE
        }
    }
}

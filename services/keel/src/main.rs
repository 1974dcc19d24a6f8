//! The `keel` binary: parses the command line and runs it; everything else
//! lives in `keel::cli`.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator: a query allocates and frees
/// thousands of small blocks across threads (gRPC buffers, spans handed to
/// the exporter and freed by the trace store's writer), which glibc's
/// per-thread arenas serve slowly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

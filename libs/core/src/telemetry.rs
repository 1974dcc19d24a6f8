//! Logging. `RUST_LOG` overrides the default level (`info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the process-wide log subscriber; later calls are no-ops, so
/// tests and the all-in-one binary can both call it. Logs go to stderr, so
/// a command's results on stdout stay clean.
pub fn init_logging() {
    // llama.cpp logs every tensor and setting of a model it loads at info
    // level (target `llama-cpp-2`); only its warnings matter to an operator.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn,hyper=warn,llama-cpp-2=warn")
    });
    let _already_installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

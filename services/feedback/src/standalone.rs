//! The service as its own process: what its binary and `keel serve
//! feedback` run.

use std::path::PathBuf;

use keel_core::standalone::{prepare, ServiceSettings};

/// Loads the config (`config_file`, then the `KEEL_*` environment), binds,
/// serves until SIGINT or SIGTERM, and flushes the last spans.
pub async fn run(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let standalone = prepare(
        ServiceSettings::<crate::Config> {
            service: "feedback",
            section: "feedback",
            port: |config| config.port,
            database_url: |config| &mut config.database_url,
            auth: |config| &mut config.auth,
            tls: |config| &mut config.tls,
        },
        config_file,
    )
    .await?;
    crate::serve(standalone.config, standalone.listeners, standalone.shutdown).await?;
    // Spans still buffered go out before the process ends.
    keel_core::telemetry::shutdown();
    Ok(())
}

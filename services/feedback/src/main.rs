//! The feedback service as its own process: `keel-feedback [--config <file>]`.

use keel_core::standalone::{prepare, ServiceSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let standalone = prepare(ServiceSettings::<keel_feedback::Config> {
        service: "feedback",
        section: "feedback",
        port: |config| config.port,
        database_url: |config| &mut config.database_url,
    })
    .await?;
    keel_feedback::serve(standalone.config, standalone.listeners, standalone.shutdown).await?;
    // Spans still buffered go out before the process ends.
    keel_core::telemetry::shutdown();
    Ok(())
}

//! The registry service as its own process: `keel-registry [--config <file>]`.

use keel_core::standalone::{prepare, ServiceSettings};

/// The allocator every Keel binary uses (see the `keel` binary for why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let standalone = prepare(ServiceSettings::<keel_registry::Config> {
        service: "registry",
        section: "registry",
        port: |config| config.port,
        database_url: |config| &mut config.database_url,
    })
    .await?;
    keel_registry::serve(standalone.config, standalone.listeners, standalone.shutdown).await?;
    // Spans still buffered go out before the process ends.
    keel_core::telemetry::shutdown();
    Ok(())
}

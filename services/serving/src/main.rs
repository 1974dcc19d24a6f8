//! The serving service as its own process: `keel-serving [--config <file>]`.

use keel_core::standalone::{prepare, ServiceSettings};

/// The allocator every Keel binary uses (see the `keel` binary for why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut standalone = prepare(ServiceSettings::<keel_serving::Config> {
        service: "serving",
        section: "serving",
        port: |config| config.port,
        database_url: |config| &mut config.database_url,
    })
    .await?;
    // The models named in the `[models]` section (minilm and smollm2 by
    // default, plus any remote generators), as `keel up` loads them.
    let models: keel_models::ModelsConfig = standalone.section("models")?;
    let models = models.with_default_dir(&standalone.common.data_dir);
    let catalog =
        tokio::task::spawn_blocking(move || keel_models::ModelCatalog::load(&models)).await??;
    standalone
        .config
        .fill_spill_dir(&standalone.common.data_dir);
    keel_serving::serve(
        standalone.config,
        catalog,
        standalone.listeners,
        standalone.shutdown,
    )
    .await?;
    // Spans still buffered go out before the process ends.
    keel_core::telemetry::shutdown();
    Ok(())
}

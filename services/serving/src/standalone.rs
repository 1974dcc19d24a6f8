//! The service as its own process: what its binary and `keel serve
//! serving` run.

use std::path::PathBuf;

use keel_core::standalone::{prepare, ServiceSettings};

/// Loads the config (`config_file`, then the `KEEL_*` environment), binds,
/// serves until SIGINT or SIGTERM, and flushes the last spans.
pub async fn run(config_file: Option<PathBuf>) -> anyhow::Result<()> {
    let mut standalone = prepare(
        ServiceSettings::<crate::Config> {
            service: "serving",
            section: "serving",
            port: |config| config.port,
            database_url: |config| &mut config.database_url,
            auth: |config| &mut config.auth,
            tls: |config| &mut config.tls,
        },
        config_file,
    )
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
    crate::serve(
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

//! The serving service as its own process: `keel-serving [--config <file>]`.

use keel_core::standalone::{prepare, ServiceSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let standalone = prepare(ServiceSettings::<keel_serving::Config> {
        service: "serving",
        section: "serving",
        port: |config| config.port,
        database_url: |config| &mut config.database_url,
    })
    .await?;
    keel_serving::serve(
        standalone.config,
        keel_models::ModelCatalog::builtin(),
        standalone.listeners,
        standalone.shutdown,
    )
    .await?;
    Ok(())
}

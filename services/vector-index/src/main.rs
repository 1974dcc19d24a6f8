//! The vector-index service as its own process: `keel-vector-index [--config <file>]`.

use keel_core::standalone::{prepare, ServiceSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let standalone = prepare(ServiceSettings::<keel_vector_index::Config> {
        service: "vector-index",
        section: "vector_index",
        port: |config| config.port,
        database_url: |config| &mut config.database_url,
    })
    .await?;
    keel_vector_index::serve(
        standalone.config,
        keel_models::ModelCatalog::builtin(),
        standalone.listeners,
        standalone.shutdown,
    )
    .await?;
    Ok(())
}

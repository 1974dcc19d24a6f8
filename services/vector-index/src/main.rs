//! The vector-index service as its own process: `keel-vector-index [--config <file>]`.

/// The allocator every Keel binary uses (see the `keel` binary for why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config_file = keel_core::standalone::config_file_from_args("vector-index")?;
    keel_vector_index::standalone::run(config_file).await
}

//! `keel-openai-mock`: the mock OpenAI chat-completions server the gateway
//! benchmark puts behind every gateway (see `keel_loadtests::openai_mock`).
//!
//! `keel-openai-mock [--addr 127.0.0.1:3030] [--threads N]`

use std::net::SocketAddr;

use anyhow::Context;
use axum::serve::ListenerExt;
use clap::Parser;
use keel_loadtests::openai_mock::MockOpenAi;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "keel-openai-mock",
    about = "A mock OpenAI chat-completions server"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:3030")]
    addr: SocketAddr,
    /// Worker threads; the machine's cores when unset.
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    keel_core::telemetry::init_logging();
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build()?.block_on(serve(args.addr))
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "keel-openai-mock listening (POST /v1/chat/completions, /openai/chat/completions)");
    let shutdown = keel_core::shutdown_on_signal();
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, MockOpenAi::default().router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

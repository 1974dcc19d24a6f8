//! keel-core: what every Keel service shares — config loading, logs and
//! traces, the gRPC server bootstrap (health, reflection, trace context,
//! graceful shutdown), the admin HTTP server, metrics, JSON payloads. The
//! types that cross service boundaries live in keel-types.

pub mod admin;
pub mod auth;
pub mod channel;
pub mod config;
pub mod cors;
pub mod crypto;
pub mod gen_ai;
pub mod grpc_metrics;
pub mod grpc_tracing;
pub mod health;
pub mod jetstream;
pub mod metrics;
pub mod payload;
pub mod periodic;
pub mod pii;
pub mod server;
mod span_export;
mod span_fallback;
pub mod standalone;
mod subscriber_filter;
pub mod telemetry;
pub mod time;
pub mod tls;
mod trace_ids;

pub use server::{
    bind, run_service, serve_grpc, shutdown_on_signal, BindError, GrpcService, Listeners,
    ServeError,
};
pub use tokio_util::sync::CancellationToken;

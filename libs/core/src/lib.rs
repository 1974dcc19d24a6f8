//! keel-core: what every Keel service shares — config loading, logging,
//! the gRPC server bootstrap (health, reflection, graceful shutdown), the
//! admin HTTP server, input validation, W3C trace context, JSON payloads.

pub mod admin;
pub mod config;
pub mod payload;
pub mod server;
pub mod standalone;
pub mod telemetry;
pub mod time;
pub mod trace_context;
pub mod validate;

pub use server::{
    bind, run_service, serve_grpc, shutdown_on_signal, BindError, GrpcService, Listeners,
    ServeError,
};
pub use tokio_util::sync::CancellationToken;
pub use validate::FieldError;

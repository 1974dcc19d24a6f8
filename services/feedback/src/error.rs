use keel_store::StoreError;
use keel_types::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    #[error("monitoring is unavailable: {message}")]
    MonitoringUnavailable { message: String },
    #[error("monitoring failed: {message}")]
    Monitoring { message: String },
    #[error("invalid monitoring_url `{url}`: {message}")]
    InvalidMonitoringUrl { url: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored feedback `{id}` is corrupt: {reason}")]
    CorruptRow { id: String, reason: String },
    #[error("dataset line cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Serve(#[from] keel_core::ServeError),
    #[error(transparent)]
    Auth(#[from] keel_core::auth::AuthConfigError),
    #[error(transparent)]
    Tls(#[from] keel_core::tls::TlsError),
    #[error("metrics setup failed: {0}")]
    Metrics(#[from] keel_core::metrics::MetricsError),
    #[error("storing feedback failed: {message}")]
    GroupFailed { message: String, unreachable: bool },
    #[error("the feedback service is shutting down")]
    ShuttingDown,
    #[error("invalid configuration: feedback.{0}")]
    Config(#[from] keel_core::cors::InvalidOrigin),
}

impl Error {
    /// A database that cannot be reached is a dependency down, not a bug.
    pub fn is_store_unavailable(&self) -> bool {
        match self {
            Error::Store(error) => error.is_unreachable(),
            Error::GroupFailed { unreachable, .. } => *unreachable,
            _ => false,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> tonic::Status {
        let message = error.to_string();
        if error.is_store_unavailable() {
            tracing::warn!(error = %message, "database unavailable");
            return tonic::Status::unavailable(message);
        }
        match error {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            Error::MonitoringUnavailable { .. } | Error::ShuttingDown => {
                tonic::Status::unavailable(message)
            }
            _ => {
                tracing::error!(error = %message, "internal error");
                tonic::Status::internal(message)
            }
        }
    }
}

use keel_core::FieldError;
use keel_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    #[error("inference `{request_id}` not found")]
    InferenceNotFound { request_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored inference `{request_id}` cannot be decoded: {source}")]
    CorruptRecord {
        request_id: String,
        source: serde_json::Error,
    },
    #[error("inference `{request_id}` cannot be encoded: {source}")]
    Encode {
        request_id: String,
        source: serde_json::Error,
    },
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Serve(#[from] keel_core::ServeError),
    #[error("metrics setup failed: {0}")]
    Metrics(#[from] keel_core::metrics::MetricsError),
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> tonic::Status {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            Error::InferenceNotFound { .. } => tonic::Status::not_found(message),
            Error::Store(StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            )) => {
                tracing::warn!(error = %message, "database unavailable");
                tonic::Status::unavailable(message)
            }
            _ => {
                tracing::error!(error = %message, "internal error");
                tonic::Status::internal(message)
            }
        }
    }
}

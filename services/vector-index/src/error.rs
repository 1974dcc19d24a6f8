use keel_models::ModelError;
use keel_store::StoreError;
use keel_types::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    #[error("collection `{0}` not found")]
    CollectionNotFound(String),
    #[error("collection `{0}` already exists")]
    CollectionExists(String),
    /// The collection's index is still being loaded at start-up.
    #[error("collection `{0}` is loading; retry shortly")]
    Loading(String),
    #[error("collection `{collection}` could not be loaded at start-up: {reason}")]
    LoadFailed { collection: String, reason: String },
    /// The collection names an embedder this process's catalog lacks.
    #[error("embedder `{embedder}` of collection `{collection}` is not available in this process")]
    EmbedderUnavailable {
        collection: String,
        embedder: String,
    },
    #[error(
        "embedder `{embedder}` returned {got} dimensions, collection `{collection}` has {expected}"
    )]
    EmbedderDimension {
        collection: String,
        embedder: String,
        expected: usize,
        got: usize,
    },
    #[error("embedder `{embedder}` failed: {source}")]
    Embedding {
        embedder: String,
        source: ModelError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored data of collection `{collection}` is corrupt: {reason}")]
    Corrupt { collection: String, reason: String },
    #[error("full-text index failed: {0}")]
    TextIndex(String),
    #[error("snapshot I/O failed: {0}")]
    Snapshot(std::io::Error),
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
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> tonic::Status {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            Error::CollectionNotFound(_) => tonic::Status::not_found(message),
            Error::CollectionExists(_) => tonic::Status::already_exists(message),
            Error::Loading(_) => tonic::Status::unavailable(message),
            Error::LoadFailed { .. } => {
                tracing::warn!(error = %message, "call on a collection that failed to load");
                tonic::Status::unavailable(message)
            }
            Error::EmbedderUnavailable { .. } | Error::EmbedderDimension { .. } => {
                tonic::Status::failed_precondition(message)
            }
            Error::Embedding {
                source: ModelError::InvalidInput(_),
                ..
            } => tonic::Status::invalid_argument(message),
            Error::Embedding { .. } => {
                tracing::warn!(error = %message, "embedder unavailable");
                tonic::Status::unavailable(message)
            }
            Error::Store(ref store_error) if store_error.is_unreachable() => {
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

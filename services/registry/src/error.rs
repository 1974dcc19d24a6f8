use keel_types::FieldError;

/// Everything the registry can fail with; [`tonic::Status`] codes are decided
/// once, in the `From` impl below.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("watch lagged, resubscribe (skipped {skipped} events)")]
    WatchLagged { skipped: u64 },
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] keel_store::StoreError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
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
            Error::NotFound(_) => tonic::Status::not_found(message),
            Error::AlreadyExists(_) => tonic::Status::already_exists(message),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            Error::WatchLagged { .. } => tonic::Status::aborted(message),
            Error::Database(ref source) if keel_store::is_unreachable(source) => {
                tonic::Status::unavailable(message)
            }
            Error::Store(ref source) if source.is_unreachable() => {
                tonic::Status::unavailable(message)
            }
            Error::Corrupt(_)
            | Error::Store(_)
            | Error::Database(_)
            | Error::Task(_)
            | Error::Serve(_)
            | Error::Auth(_)
            | Error::Tls(_)
            | Error::Metrics(_) => {
                tracing::error!(error = %message, "registry internal error");
                tonic::Status::internal(message)
            }
        }
    }
}

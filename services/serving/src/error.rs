use keel_types::FieldError;

/// The metadata key of a RESOURCE_EXHAUSTED refusal that says how many
/// seconds to wait.
pub const RETRY_AFTER: &str = "retry-after";

/// Everything that can go wrong in serving; `From<Error> for tonic::Status`
/// below is the one place that decides status codes.
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
    #[error("{0}")]
    ResourceExhausted(String),
    /// A limit or budget of `[serving.limits]` has no room for the query.
    #[error("{message}; retry after {} s", crate::limits::retry_after_seconds(*retry_after))]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    /// A dependency (registry, vector index, database) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] keel_store::StoreError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Serve(#[from] keel_core::ServeError),
    #[error(transparent)]
    Auth(#[from] keel_core::auth::AuthConfigError),
    #[error(transparent)]
    Tls(#[from] keel_core::tls::TlsError),
    #[error("metrics setup failed: {0}")]
    Metrics(#[from] keel_core::metrics::MetricsError),
    #[error("cannot open the inference spill log: {0}")]
    Spill(#[from] keel_spill::SpillError),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Error {
        Error::Store(keel_store::StoreError::Database(error))
    }
}

impl From<keel_models::ModelError> for Error {
    fn from(error: keel_models::ModelError) -> Error {
        use keel_models::ModelError;
        match error {
            ModelError::UnknownGenerator(_) | ModelError::UnknownEmbedder(_) => {
                Error::FailedPrecondition(error.to_string())
            }
            ModelError::InvalidInput(_) => Error::FailedPrecondition(error.to_string()),
            ModelError::Backend(_) | ModelError::Unavailable(_) => {
                Error::Unavailable(error.to_string())
            }
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> tonic::Status {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            Error::NotFound(_) => tonic::Status::not_found(message),
            Error::AlreadyExists(_) => tonic::Status::already_exists(message),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            Error::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
            Error::RateLimited { retry_after, .. } => {
                let mut status = tonic::Status::resource_exhausted(message);
                // As HTTP's Retry-After: whole seconds to wait.
                status.metadata_mut().insert(
                    RETRY_AFTER,
                    crate::limits::retry_after_seconds(retry_after).into(),
                );
                status
            }
            Error::Unavailable(_) => tonic::Status::unavailable(message),
            Error::Store(ref store_error) if store_error.is_unreachable() => {
                tonic::Status::unavailable(message)
            }
            Error::Internal(_)
            | Error::Store(_)
            | Error::Config(_)
            | Error::Serve(_)
            | Error::Auth(_)
            | Error::Tls(_)
            | Error::Metrics(_)
            | Error::Spill(_) => {
                tracing::error!(error = %message, "internal error");
                tonic::Status::internal(message)
            }
        }
    }
}

use keel_store::StoreError;
use keel_types::FieldError;

use crate::rpc_status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidArgument(#[from] FieldError),
    #[error("inference `{request_id}` not found")]
    InferenceNotFound { request_id: String },
    #[error("trace `{trace_id}` not found")]
    TraceNotFound { trace_id: String },
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
    #[error("stored spans of trace `{trace_id}` cannot be decoded: {reason}")]
    CorruptSpans { trace_id: String, reason: String },
    #[error("the span writer is busy ({queued_calls} exports queued); retry later")]
    SpanQueueFull { queued_calls: usize },
    #[error("the span writer has stopped (the server is shutting down)")]
    SpanWriterStopped,
    #[error("spans not stored: {message}")]
    SpansNotStored { message: String },
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

impl Error {
    /// Errors a client should retry later: the database or the span writer
    /// cannot take the request now.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Store(store_error) if store_error.is_unreachable()
        ) || matches!(
            self,
            Error::SpanWriterStopped | Error::SpansNotStored { .. }
        )
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> tonic::Status {
        let message = error.to_string();
        if error.is_unavailable() {
            tracing::warn!(error = %message, "unavailable, the client may retry");
            return tonic::Status::unavailable(message);
        }
        match error {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            Error::InferenceNotFound { .. } | Error::TraceNotFound { .. } => {
                tonic::Status::not_found(message)
            }
            // OTLP exporters retry RESOURCE_EXHAUSTED only when the status
            // carries RetryInfo, the server's word that it will recover.
            Error::SpanQueueFull { .. } => tonic::Status::with_details(
                tonic::Code::ResourceExhausted,
                message.clone(),
                rpc_status::retry_info_details(
                    tonic::Code::ResourceExhausted as i32,
                    &message,
                    rpc_status::RETRY_AFTER_SECONDS,
                )
                .into(),
            ),
            _ => {
                tracing::error!(error = %message, "internal error");
                tonic::Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_intake_errors_map_to_retryable_codes() {
        let full = tonic::Status::from(Error::SpanQueueFull { queued_calls: 8 });
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
        assert!(full.message().contains("retry later"), "{full:?}");
        let details = rpc_status::RpcStatus::decode_details(full.details()).unwrap();
        assert_eq!(details.retry_delay_seconds(), Some(1));

        let failed = tonic::Status::from(Error::SpansNotStored {
            message: "database error: disk full".to_string(),
        });
        assert_eq!(failed.code(), tonic::Code::Unavailable);
        assert_eq!(
            tonic::Status::from(Error::SpanWriterStopped).code(),
            tonic::Code::Unavailable
        );
        let missing = tonic::Status::from(Error::TraceNotFound {
            trace_id: "ab".repeat(16),
        });
        assert_eq!(missing.code(), tonic::Code::NotFound);
        assert!(missing.message().contains(&"ab".repeat(16)));
    }
}

//! Why a call was refused, as gRPC statuses and HTTP answers.

use http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send `authorization: Bearer <key>`")]
    Missing,
    #[error("invalid API key: unknown, revoked or expired")]
    Invalid,
    #[error("api key `{key}` lacks scope `{needed}`")]
    Denied { key: String, needed: String },
    /// Keys cannot be checked now: the registry is unreachable.
    #[error("cannot check the API key: {0}")]
    Unavailable(String),
}

impl AuthError {
    pub fn http_status(&self) -> StatusCode {
        match self {
            AuthError::Missing | AuthError::Invalid => StatusCode::UNAUTHORIZED,
            AuthError::Denied { .. } => StatusCode::FORBIDDEN,
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// OpenAI's error `type` for the same failure, for the JSON answer.
    pub fn http_type(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::Invalid => "invalid_request_error",
            AuthError::Denied { .. } => "permission_error",
            AuthError::Unavailable(_) => "service_unavailable",
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> tonic::Status {
        let message = error.to_string();
        match error {
            AuthError::Missing | AuthError::Invalid => tonic::Status::unauthenticated(message),
            AuthError::Denied { .. } => tonic::Status::permission_denied(message),
            AuthError::Unavailable(_) => tonic::Status::unavailable(message),
        }
    }
}

//! The JSON OpenAI's API speaks: what a chat request holds, and errors in
//! its shape (`{"error": {"message", "type", "param", "code"}}`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

/// Chat messages and embeddings inputs are bounded by the pipeline's own
/// rules; this only keeps a body from filling memory first.
pub const MAX_BODY_BYTES: usize = 4 << 20;

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    /// The end user, for sticky routing and feedback.
    #[serde(default)]
    pub user: String,
    /// Keel's extension: what `Query` takes beyond OpenAI's fields.
    #[serde(default)]
    pub keel: KeelOptions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeelOptions {
    pub session_id: String,
    /// Citations carry whole passages instead of snippets.
    pub full_citation_text: bool,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: MessageContent,
}

/// A string, or (newer clients) a list of parts of which the text ones
/// count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: String,
}

impl MessageContent {
    pub fn into_text(self) -> String {
        match self {
            MessageContent::Text(text) => text,
            MessageContent::Parts(parts) => parts
                .into_iter()
                .filter(|part| part.kind == "text")
                .map(|part| part.text)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// An error as OpenAI answers it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds a rate-limited caller should wait (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param.to_string()),
            code: None,
            retry_after: None,
        }
    }

    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            status if status.is_server_error() => "api_error",
            _ => "invalid_request_error",
        }
    }
}

/// Keel's errors by their gRPC status, as the same call over gRPC would
/// answer them.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        use tonic::Code;
        let (http_status, code) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => (StatusCode::BAD_REQUEST, None),
            Code::NotFound => (StatusCode::NOT_FOUND, Some("model_not_found")),
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
                (StatusCode::CONFLICT, None)
            }
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, Some("invalid_api_key")),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, None),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, Some("rate_limit_exceeded")),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, None),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, None),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        let retry_after = status
            .metadata()
            .get(crate::error::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        ApiError {
            status: http_status,
            message: status.message().to_string(),
            param: None,
            code,
            retry_after,
        }
    }
}

impl From<crate::error::Error> for ApiError {
    fn from(error: crate::error::Error) -> ApiError {
        ApiError::from(tonic::Status::from(error))
    }
}

impl From<keel_core::auth::AuthError> for ApiError {
    fn from(error: keel_core::auth::AuthError) -> ApiError {
        ApiError::from(tonic::Status::from(error))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.code,
            }
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`].
pub async fn read_json<T: serde::de::DeserializeOwned>(
    body: axum::body::Body,
) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|error| ApiError::invalid("body", format!("cannot read the body: {error}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::invalid("body", format!("not a valid request: {error}")))
}

pub fn unix_seconds() -> i64 {
    keel_core::time::now_ms() / 1000
}

//! `POST /v1/feedback` on the admin HTTP server, for chatbot front ends that
//! speak plain JSON. Same rules and code path as the gRPC SubmitFeedback.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use crate::error::Error;
use crate::feedback::{FeedbackBook, Submission};
use crate::record::FeedbackKind;

/// `POST /v1/feedback`; the admin server adds CORS for web pages from
/// the service's allowed origins (preflight included).
pub fn router(book: FeedbackBook) -> Router {
    Router::new()
        .route("/v1/feedback", post(submit_feedback))
        .with_state(book)
}

/// The fields of SubmitFeedbackRequest; `kind` is "thumbs", "rating",
/// "correction", "comment", "flag" or "relevance".
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SubmitBody {
    request_id: String,
    session_id: String,
    passage_id: String,
    kind: String,
    value: f64,
    correction: String,
    comment: String,
    reason: String,
    tags: Vec<String>,
    user_id: String,
    idempotency_key: String,
}

async fn submit_feedback(State(book): State<FeedbackBook>, body: Bytes) -> Response {
    let parsed: SubmitBody = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("request body is not a valid feedback object: {error}"),
            )
        }
    };
    let submission = Submission {
        request_id: parsed.request_id,
        session_id: parsed.session_id,
        passage_id: parsed.passage_id,
        kind: FeedbackKind::parse(&parsed.kind.to_ascii_lowercase()),
        value: parsed.value,
        correction: parsed.correction,
        comment: parsed.comment,
        reason: parsed.reason,
        tags: parsed.tags,
        user_id: parsed.user_id,
        idempotency_key: parsed.idempotency_key,
    };
    match book.submit(submission).await {
        Ok(record) => (StatusCode::OK, Json(record)).into_response(),
        Err(error) => error_response(http_status(&error), error.to_string()),
    }
}

fn http_status(error: &Error) -> StatusCode {
    if error.is_store_unavailable() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match error {
        Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        Error::MonitoringUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => {
            tracing::error!(error = %error, "internal error");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

fn error_response(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

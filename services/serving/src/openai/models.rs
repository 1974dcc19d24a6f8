//! `GET /v1/models`: the endpoints, the models a chat completion names.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::wire::ApiError;
use super::OpenAiState;

pub async fn list(State(state): State<OpenAiState>) -> Response {
    match state.endpoints.list().await {
        Ok(endpoints) => {
            let data: Vec<_> = endpoints
                .iter()
                .map(|endpoint| {
                    json!({
                        "id": endpoint.name,
                        "object": "model",
                        "created": endpoint.created_at_ms / 1000,
                        "owned_by": "keel",
                    })
                })
                .collect();
            Json(json!({"object": "list", "data": data})).into_response()
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

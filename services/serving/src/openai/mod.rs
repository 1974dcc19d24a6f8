//! OpenAI's HTTP API on serving's admin port, so any OpenAI client (the
//! `openai` Python package, LangChain, curl) can use Keel unchanged:
//! `POST /v1/chat/completions` (model = an endpoint, or `endpoint@N` for
//! version N of its chain; the RAG chain runs as for `Query`, streamed as
//! server-sent events when asked), `POST /v1/embeddings` (model = a
//! collection or an embedder) and `GET /v1/models` (the endpoints).
//! Errors come in OpenAI's error JSON. Keel's own answer fields (request
//! id, trace id, served version, citations) ride in an extension field,
//! `keel`, which OpenAI clients ignore and keep.

mod chat;
mod chat_stream;
mod embeddings;
mod models;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use keel_core::channel::ServiceChannel;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;

use crate::endpoints::Endpoints;
use crate::pipeline::Pipeline;

/// What the handlers share.
#[derive(Clone)]
pub struct OpenAiState {
    pub pipeline: Arc<Pipeline>,
    pub endpoints: Endpoints,
    /// Embeddings come from the vector index's embedders.
    pub vector_index: VectorIndexServiceClient<ServiceChannel>,
    pub dependency_timeout: Duration,
}

pub fn router(state: OpenAiState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::complete))
        .route("/v1/embeddings", post(embeddings::embed))
        .route("/v1/models", get(models::list))
        .with_state(state)
}

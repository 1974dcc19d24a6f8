//! A mock OpenAI chat-completions server for the gateway benchmark. It
//! answers every chat completion at once with the same answer (one JSON
//! body, or the same answer as server-sent events when the request asks for
//! a stream), so what a gateway in front of it adds is all a benchmark
//! measures. It counts the completions it answered: a gateway that answered
//! without asking it (a cache) shows up in the count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

/// The answer every completion carries; a benchmark checks that it came
/// back through the gateway.
pub const ANSWER: &str = "Refunds are paid within five working days.";
const PROMPT_TOKENS: u32 = 24;
const COMPLETION_TOKENS: u32 = 9;

/// The completions answered so far; clones share the count.
#[derive(Clone, Default)]
pub struct MockOpenAi {
    completions: Arc<AtomicU64>,
}

/// The part of a request the mock reads.
#[derive(Deserialize)]
struct CompletionRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    stream: bool,
}

impl MockOpenAi {
    /// `POST {/v1,/openai,}/chat/completions` (the paths OpenAI clients and
    /// TensorZero's `api_base` produce), `GET /completions` (the count as
    /// text) and `GET /healthz`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/openai/chat/completions", post(complete))
            .route("/chat/completions", post(complete))
            .route("/completions", get(count))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self.clone())
    }

    /// Serves the mock on a free port of 127.0.0.1 until the runtime ends;
    /// returns its root URL.
    pub async fn serve_on_any_port(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let router = self.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(url)
    }

    pub fn completions(&self) -> u64 {
        self.completions.load(Ordering::Relaxed)
    }
}

async fn complete(State(mock): State<MockOpenAi>, body: Bytes) -> Response {
    let request: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            let error = serde_json::json!({"error": {
                "message": format!("request body is not a chat completion request: {error}"),
                "type": "invalid_request_error",
            }});
            return (axum::http::StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
        }
    };
    mock.completions.fetch_add(1, Ordering::Relaxed);
    if request.stream {
        (
            [(CONTENT_TYPE, "text/event-stream")],
            events(&request.model),
        )
            .into_response()
    } else {
        (
            [(CONTENT_TYPE, "application/json")],
            completion(&request.model),
        )
            .into_response()
    }
}

async fn count(State(mock): State<MockOpenAi>) -> String {
    mock.completions().to_string()
}

fn usage() -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    })
}

/// A whole `chat.completion`, as OpenAI answers one.
pub fn completion(model: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER},
            "finish_reason": "stop",
            "logprobs": null,
        }],
        "usage": usage(),
    })
    .to_string()
}

/// The same answer streamed: the role, a chunk per word, the finish reason,
/// the usage (as with `stream_options.include_usage`), then `[DONE]`.
pub fn events(model: &str) -> String {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        serde_json::json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut chunks = vec![chunk(serde_json::json!({"role": "assistant"}), None)];
    for (index, word) in ANSWER.split(' ').enumerate() {
        let piece = if index == 0 {
            word.to_string()
        } else {
            format!(" {word}")
        };
        chunks.push(chunk(serde_json::json!({"content": piece}), None));
    }
    chunks.push(chunk(serde_json::json!({}), Some("stop")));
    chunks.push(serde_json::json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [],
        "usage": usage(),
    }));
    let mut body = String::new();
    for chunk in chunks {
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_completion_carries_the_answer_and_usage() {
        let completion: serde_json::Value = serde_json::from_str(&completion("gpt-x")).unwrap();
        assert_eq!(completion["model"], "gpt-x");
        assert_eq!(completion["choices"][0]["message"]["content"], ANSWER);
        assert_eq!(completion["usage"]["total_tokens"], 33);
    }

    #[test]
    fn the_stream_spells_the_same_answer_then_done() {
        let body = events("gpt-x");
        let payloads: Vec<&str> = body
            .split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .collect();
        assert_eq!(payloads.last(), Some(&"[DONE]"));
        let chunks: Vec<serde_json::Value> = payloads[..payloads.len() - 1]
            .iter()
            .map(|payload| serde_json::from_str(payload).unwrap())
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, ANSWER);
        assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 9);
    }
}

//! A chat-completions server speaking the OpenAI wire format, for testing a
//! service's OpenAI-compatible generator without the network.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use keel_core::CancellationToken;

#[derive(Clone)]
struct OpenAiState {
    /// `None`: answer every request with this status instead.
    answer: Option<String>,
    status: u16,
    requests: Arc<AtomicUsize>,
}

/// A chat-completions server speaking the OpenAI wire format: it streams
/// its answer a word per server-sent event, or fails every request.
pub struct FakeOpenAi {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl FakeOpenAi {
    /// A server that streams `answer`.
    pub async fn answering(answer: &str) -> FakeOpenAi {
        FakeOpenAi::start(Some(answer.to_string()), 200).await
    }

    /// A server that answers every request with HTTP `status`.
    pub async fn failing(status: u16) -> FakeOpenAi {
        FakeOpenAi::start(None, status).await
    }

    async fn start(answer: Option<String>, status: u16) -> FakeOpenAi {
        let requests = Arc::new(AtomicUsize::new(0));
        let state = OpenAiState {
            answer,
            status,
            requests: requests.clone(),
        };
        let router = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(openai_chat))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stopped = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        });
        FakeOpenAi {
            address,
            requests,
            shutdown,
        }
    }

    /// The base URL an OpenAI client takes (it ends in `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// How many chat-completion requests arrived.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn openai_chat(
    axum::extract::State(state): axum::extract::State<OpenAiState>,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    state.requests.fetch_add(1, Ordering::SeqCst);
    let request: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(request["stream"], true, "{request}");
    let Some(answer) = state.answer else {
        let status = axum::http::StatusCode::from_u16(state.status).unwrap();
        return (status, "scripted failure").into_response();
    };
    let mut events = String::new();
    for piece in answer.split_inclusive(' ') {
        let chunk = serde_json::json!({
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}],
        });
        events.push_str(&format!("data: {chunk}\n\n"));
    }
    let finish = serde_json::json!({
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": answer.split_whitespace().count()},
    });
    events.push_str(&format!("data: {finish}\n\ndata: [DONE]\n\n"));
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        events,
    )
        .into_response()
}

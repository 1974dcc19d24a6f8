//! A chat-completions server speaking the OpenAI wire format, for testing a
//! service's OpenAI-compatible generator without the network; it also
//! speaks OpenAI's fine-tuning API (file upload, jobs that succeed on the
//! second read), for `keel improve`'s fine-tuned challenger.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use keel_core::tls::ServerTls;
use keel_core::CancellationToken;

#[derive(Clone)]
struct OpenAiState {
    /// `None`: answer every request with this status instead.
    answer: Option<String>,
    status: u16,
    /// Waited before answering, as a model thinks.
    delay: std::time::Duration,
    requests: Arc<AtomicUsize>,
    /// Requests being answered now, and the most there were at once.
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    calls: Arc<Mutex<Calls>>,
}

/// What the fake was asked, for assertions.
#[derive(Debug, Default, Clone)]
pub struct Calls {
    /// The `model` of each chat-completion request, in order.
    pub chat_models: Vec<String>,
    /// Each uploaded file's multipart body, as text.
    pub uploads: Vec<String>,
    pub jobs: Vec<FineTuneJob>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FineTuneJob {
    pub id: String,
    pub training_file: String,
    pub model: String,
    pub suffix: String,
    /// Times the job was read.
    pub reads: u32,
}

impl FineTuneJob {
    fn status(&self) -> &'static str {
        match self.reads {
            0 => "queued",
            1 => "running",
            _ => "succeeded",
        }
    }

    fn fine_tuned_model(&self) -> Option<String> {
        (self.status() == "succeeded")
            .then(|| format!("ft:{}:keel:{}:{}", self.model, self.suffix, self.id))
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "object": "fine_tuning.job",
            "model": self.model,
            "training_file": self.training_file,
            "status": self.status(),
            "fine_tuned_model": self.fine_tuned_model(),
        })
    }
}

/// A chat-completions server speaking the OpenAI wire format: it streams
/// its answer a word per server-sent event, or fails every request.
pub struct FakeOpenAi {
    scheme: &'static str,
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    calls: Arc<Mutex<Calls>>,
    shutdown: CancellationToken,
}

impl FakeOpenAi {
    /// A server that streams `answer`.
    pub async fn answering(answer: &str) -> FakeOpenAi {
        FakeOpenAi::start(
            Some(answer.to_string()),
            200,
            std::time::Duration::ZERO,
            None,
        )
        .await
    }

    /// A server that streams `answer` after thinking for `delay`.
    pub async fn answering_after(answer: &str, delay: std::time::Duration) -> FakeOpenAi {
        FakeOpenAi::start(Some(answer.to_string()), 200, delay, None).await
    }

    /// A server that streams `answer` over TLS only, presenting `tls`.
    pub async fn answering_over_tls(answer: &str, tls: ServerTls) -> FakeOpenAi {
        FakeOpenAi::start(
            Some(answer.to_string()),
            200,
            std::time::Duration::ZERO,
            Some(tls),
        )
        .await
    }

    /// A server that answers every request with HTTP `status`.
    pub async fn failing(status: u16) -> FakeOpenAi {
        FakeOpenAi::start(None, status, std::time::Duration::ZERO, None).await
    }

    async fn start(
        answer: Option<String>,
        status: u16,
        delay: std::time::Duration,
        tls: Option<ServerTls>,
    ) -> FakeOpenAi {
        let requests = Arc::new(AtomicUsize::new(0));
        let most_in_flight = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(Mutex::new(Calls::default()));
        let state = OpenAiState {
            answer,
            status,
            delay,
            requests: requests.clone(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            most_in_flight: most_in_flight.clone(),
            calls: calls.clone(),
        };
        let router = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(openai_chat))
            .route("/v1/files", axum::routing::post(upload_file))
            .route("/v1/fine_tuning/jobs", axum::routing::post(create_job))
            .route("/v1/fine_tuning/jobs/{id}", axum::routing::get(read_job))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(keel_core::admin::serve_admin(
            "fake-openai",
            router,
            listener,
            tls,
            shutdown.clone(),
        ));
        FakeOpenAi {
            scheme,
            address,
            requests,
            most_in_flight,
            calls,
            shutdown,
        }
    }

    /// The base URL an OpenAI client takes (it ends in `/v1`).
    pub fn base_url(&self) -> String {
        format!("{}://{}/v1", self.scheme, self.address)
    }

    /// How many chat-completion requests arrived.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The most chat-completion requests it was answering at once.
    pub fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(Ordering::SeqCst)
    }

    /// Everything asked so far.
    pub fn calls(&self) -> Calls {
        self.calls.lock().unwrap().clone()
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
    let model = request["model"].as_str().unwrap_or_default().to_string();
    state.calls.lock().unwrap().chat_models.push(model);
    assert_eq!(request["stream"], true, "{request}");
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(state.delay).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
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

fn bad_request(message: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = serde_json::json!({"error": {"message": message}});
    (axum::http::StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// `POST /v1/files`: keeps the multipart body; a fine-tuning file must say
/// so in its `purpose` part.
async fn upload_file(
    axum::extract::State(state): axum::extract::State<OpenAiState>,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !(body.contains("name=\"purpose\"") && body.contains("fine-tune")) {
        return bad_request("purpose must be fine-tune".to_string());
    }
    let mut calls = state.calls.lock().unwrap();
    calls.uploads.push(body);
    let id = format!("file-{}", calls.uploads.len());
    axum::Json(serde_json::json!({"id": id, "object": "file", "purpose": "fine-tune"}))
        .into_response()
}

/// `POST /v1/fine_tuning/jobs` on an uploaded file.
async fn create_job(
    axum::extract::State(state): axum::extract::State<OpenAiState>,
    axum::Json(request): axum::Json<serde_json::Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let text = |key: &str| request[key].as_str().unwrap_or_default().to_string();
    let training_file = text("training_file");
    let mut calls = state.calls.lock().unwrap();
    let uploaded = (1..=calls.uploads.len()).any(|index| training_file == format!("file-{index}"));
    if !uploaded {
        return bad_request(format!("no file {training_file}"));
    }
    let job = FineTuneJob {
        id: format!("ftjob-{}", calls.jobs.len() + 1),
        training_file,
        model: text("model"),
        suffix: text("suffix"),
        reads: 0,
    };
    let body = job.to_json();
    calls.jobs.push(job);
    axum::Json(body).into_response()
}

/// `GET /v1/fine_tuning/jobs/{id}`: queued, then running, then succeeded.
async fn read_job(
    axum::extract::State(state): axum::extract::State<OpenAiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut calls = state.calls.lock().unwrap();
    let Some(job) = calls.jobs.iter_mut().find(|job| job.id == id) else {
        return bad_request(format!("no job {id}"));
    };
    job.reads += 1;
    axum::Json(job.to_json()).into_response()
}

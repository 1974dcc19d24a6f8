//! The OpenAI generator against a tiny in-test server on 127.0.0.1:0 that
//! speaks the chat-completions wire format (JSON and server-sent events).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::{ignore_deltas, ChatMessage, GenerationParams, Role};

/// One scripted answer of the fake server.
#[derive(Clone)]
enum Reply {
    Json {
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: String,
    },
    /// Server-sent events, one HTTP chunk each, `pause` apart.
    Events {
        events: Vec<String>,
        pause: Duration,
    },
    /// Reads the request, then says nothing for this long.
    Silent(Duration),
}

struct SeenRequest {
    /// Lowercased header lines.
    headers: Vec<String>,
    body: serde_json::Value,
}

#[derive(Default)]
struct ServerState {
    seen: Vec<SeenRequest>,
    /// Events written before the client went away, for a stream it left.
    events_before_client_left: Option<usize>,
}

struct FakeOpenAi {
    address: SocketAddr,
    state: Arc<Mutex<ServerState>>,
}

impl FakeOpenAi {
    /// Answers request `i` with `replies[i]`, and later ones with the last.
    fn start(replies: Vec<Reply>) -> FakeOpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ServerState::default()));
        let server_state = state.clone();
        std::thread::spawn(move || {
            for (index, connection) in listener.incoming().enumerate() {
                let Ok(stream) = connection else { return };
                let reply = replies[index.min(replies.len() - 1)].clone();
                serve_one(stream, reply, &server_state);
            }
        });
        FakeOpenAi { address, state }
    }

    fn config(&self) -> OpenAiConfig {
        OpenAiConfig {
            base_url: format!("http://{}/v1/", self.address),
            model: "tiny-chat".to_string(),
            connect_timeout_ms: 1_000,
            request_timeout_ms: 5_000,
            max_retries: 2,
            initial_backoff_ms: 10,
            max_backoff_ms: 1_000,
            ..OpenAiConfig::default()
        }
    }

    fn requests(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    fn request_body(&self, index: usize) -> serde_json::Value {
        self.state.lock().unwrap().seen[index].body.clone()
    }

    fn request_headers(&self, index: usize) -> Vec<String> {
        self.state.lock().unwrap().seen[index].headers.clone()
    }

    fn wait_for_client_to_leave(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(written) = self.state.lock().unwrap().events_before_client_left {
                return written;
            }
            assert!(
                Instant::now() < deadline,
                "the client never closed the stream"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn serve_one(stream: TcpStream, reply: Reply, state: &Mutex<ServerState>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut headers = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end().to_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(length) = line.strip_prefix("content-length:") {
            content_length = length.trim().parse().unwrap();
        }
        headers.push(line);
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body).unwrap();
    let body = serde_json::from_slice(&body).unwrap();
    state
        .lock()
        .unwrap()
        .seen
        .push(SeenRequest { headers, body });

    let mut stream = stream;
    match reply {
        Reply::Json {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
        Reply::Events { events, pause } => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            let _ = stream.write_all(head.as_bytes());
            for (written, event) in events.iter().enumerate() {
                let payload = format!("data: {event}\n\n");
                let chunk = format!("{:x}\r\n{payload}\r\n", payload.len());
                let sent = stream
                    .write_all(chunk.as_bytes())
                    .and_then(|()| stream.flush());
                if sent.is_err() {
                    state.lock().unwrap().events_before_client_left = Some(written);
                    return;
                }
                std::thread::sleep(pause);
            }
            let _ = stream.write_all(b"0\r\n\r\n");
        }
        Reply::Silent(duration) => std::thread::sleep(duration),
    }
}

fn completion(text: &str, finish_reason: &str, usage: Option<(u32, u32)>) -> String {
    let mut body = serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason,
        }],
    });
    if let Some((prompt, completion)) = usage {
        body["usage"] = serde_json::json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        });
    }
    body.to_string()
}

fn ok(body: String) -> Reply {
    Reply::Json {
        status: 200,
        headers: Vec::new(),
        body,
    }
}

fn delta_event(content: &str) -> String {
    serde_json::json!({
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}],
    })
    .to_string()
}

fn finish_event(reason: &str) -> String {
    serde_json::json!({
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
    })
    .to_string()
}

fn usage_event(prompt: u32, completion: u32) -> String {
    serde_json::json!({
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    })
    .to_string()
}

fn events(events: Vec<String>) -> Reply {
    Reply::Events {
        events,
        pause: Duration::ZERO,
    }
}

fn request(max_tokens: Option<u32>) -> GenerationRequest {
    GenerationRequest {
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: "Answer briefly.".to_string(),
            },
            ChatMessage {
                role: Role::User,
                content: "What is the refund window?".to_string(),
            },
        ],
        question: "What is the refund window?".to_string(),
        passages: Vec::new(),
        params: GenerationParams {
            temperature: Some(0.0),
            max_tokens,
            ..GenerationParams::default()
        },
    }
}

fn collect_deltas(
    generator: &OpenAiGenerator,
    input: &GenerationRequest,
) -> (Result<Generation, ModelError>, Vec<String>) {
    let mut deltas = Vec::new();
    let result = generator.generate(input, &mut |piece: &str| {
        deltas.push(piece.to_string());
        ControlFlow::Continue(())
    });
    (result, deltas)
}

#[test]
fn non_streaming_answer_with_usage_and_the_request_on_the_wire() {
    let server = FakeOpenAi::start(vec![ok(completion(
        "Thirty days.",
        "length",
        Some((42, 7)),
    ))]);
    let mut config = server.config();
    config.stream = false;
    let generator = OpenAiGenerator::with_api_key(config, Some("sk-test".to_string())).unwrap();

    let (result, deltas) = collect_deltas(&generator, &request(Some(16)));
    let generation = result.unwrap();
    assert_eq!(
        generation,
        Generation {
            text: "Thirty days.".to_string(),
            input_tokens: 42,
            output_tokens: 7,
            finish_reason: FinishReason::Length,
        }
    );
    assert_eq!(deltas, vec!["Thirty days.".to_string()]);

    let body = server.request_body(0);
    assert_eq!(body["model"], "tiny-chat");
    assert_eq!(body["stream"], false);
    assert!(body.get("stream_options").is_none(), "{body}");
    assert_eq!(body["max_tokens"], 16);
    assert_eq!(body["temperature"], 0.0);
    assert!(body.get("stop").is_none(), "{body}");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["content"], "What is the refund window?");
    let headers = server.request_headers(0);
    assert!(
        headers.contains(&"authorization: bearer sk-test".to_string()),
        "{headers:?}"
    );
    assert_eq!(headers[0], "post /v1/chat/completions http/1.1");
    assert!(
        headers.contains(&"content-type: application/json".to_string()),
        "{headers:?}"
    );
}

#[test]
fn streaming_hands_over_each_delta_and_reads_usage() {
    let server = FakeOpenAi::start(vec![events(vec![
        serde_json::json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}).to_string(),
        delta_event("Thirty"),
        delta_event(" days"),
        delta_event("."),
        finish_event("stop"),
        usage_event(30, 3),
        "[DONE]".to_string(),
    ])]);
    let generator = OpenAiGenerator::with_api_key(server.config(), None).unwrap();

    let (result, deltas) = collect_deltas(&generator, &request(None));
    let generation = result.unwrap();
    assert_eq!(deltas, vec!["Thirty", " days", "."]);
    assert_eq!(generation.text, "Thirty days.");
    assert_eq!((generation.input_tokens, generation.output_tokens), (30, 3));
    assert_eq!(generation.finish_reason, FinishReason::Stop);

    let body = server.request_body(0);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert!(body.get("max_tokens").is_none(), "{body}");
    let headers = server.request_headers(0);
    assert!(
        !headers.iter().any(|line| line.starts_with("authorization")),
        "no key, no header: {headers:?}"
    );
}

#[test]
fn a_stream_without_usage_is_counted() {
    let server = FakeOpenAi::start(vec![events(vec![
        delta_event("Thirty days"),
        delta_event(" from delivery"),
        finish_event("length"),
        "[DONE]".to_string(),
    ])]);
    let generator = OpenAiGenerator::with_api_key(server.config(), None).unwrap();
    let generation = generator
        .generate(&request(None), &mut ignore_deltas)
        .unwrap();
    assert_eq!(generation.text, "Thirty days from delivery");
    // "Answer briefly." + "What is the refund window?": 2 + 5 words.
    assert_eq!(generation.input_tokens, 7);
    assert_eq!(generation.output_tokens, 4);
    assert_eq!(generation.finish_reason, FinishReason::Length);
}

#[test]
fn a_429_is_retried_after_retry_after_then_succeeds() {
    let server = FakeOpenAi::start(vec![
        Reply::Json {
            status: 429,
            headers: vec![("retry-after", "0")],
            body: r#"{"error":{"message":"slow down"}}"#.to_string(),
        },
        ok(completion("Thirty days.", "stop", Some((10, 2)))),
    ]);
    let mut config = server.config();
    config.stream = false;
    let generator = OpenAiGenerator::with_api_key(config, None).unwrap();
    let generation = generator
        .generate(&request(None), &mut ignore_deltas)
        .unwrap();
    assert_eq!(generation.text, "Thirty days.");
    assert_eq!(server.requests(), 2);
}

#[test]
fn persistent_5xx_gives_up_after_the_retries_as_unavailable() {
    let server = FakeOpenAi::start(vec![Reply::Json {
        status: 503,
        headers: Vec::new(),
        body: "overloaded".to_string(),
    }]);
    let generator = OpenAiGenerator::with_api_key(server.config(), None).unwrap();
    let error = generator
        .generate(&request(None), &mut ignore_deltas)
        .unwrap_err();
    let ModelError::Unavailable(message) = &error else {
        panic!("expected unavailable, got {error:?}");
    };
    assert!(message.contains("HTTP 503: overloaded"), "{message}");
    assert!(message.contains("3 attempts"), "{message}");
    assert_eq!(server.requests(), 3);
}

#[test]
fn a_silent_server_times_out_as_unavailable_naming_the_timeout() {
    let server = FakeOpenAi::start(vec![Reply::Silent(Duration::from_secs(3))]);
    let mut config = server.config();
    config.request_timeout_ms = 200;
    let generator = OpenAiGenerator::with_api_key(config, None).unwrap();
    let error = generator
        .generate(&request(None), &mut ignore_deltas)
        .unwrap_err();
    let ModelError::Unavailable(message) = &error else {
        panic!("expected unavailable, got {error:?}");
    };
    assert!(message.contains("timed out"), "{message}");
    assert!(message.contains("request timeout 200 ms"), "{message}");
    // A timeout is not retried: the chain's fallback is the better bet.
    assert_eq!(server.requests(), 1);
}

#[test]
fn a_401_is_an_authentication_error_and_not_retried() {
    let server = FakeOpenAi::start(vec![Reply::Json {
        status: 401,
        headers: Vec::new(),
        body: r#"{"error":{"message":"invalid api key"}}"#.to_string(),
    }]);
    let mut config = server.config();
    config.api_key_env = "KEEL_TEST_OPENAI_KEY".to_string();
    let generator = OpenAiGenerator::with_api_key(config, Some("sk-wrong".to_string())).unwrap();
    let error = generator
        .generate(&request(None), &mut ignore_deltas)
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("authentication failed"), "{message}");
    assert!(message.contains("HTTP 401"), "{message}");
    assert!(message.contains("KEEL_TEST_OPENAI_KEY"), "{message}");
    assert_eq!(server.requests(), 1);
}

#[test]
fn a_dead_server_is_unavailable_after_the_retries() {
    let address = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let config = OpenAiConfig {
        base_url: format!("http://{address}/v1"),
        model: "tiny-chat".to_string(),
        max_retries: 1,
        initial_backoff_ms: 1,
        ..OpenAiConfig::default()
    };
    let generator = OpenAiGenerator::with_api_key(config, None).unwrap();
    let error = generator
        .generate(&request(None), &mut ignore_deltas)
        .unwrap_err();
    let ModelError::Unavailable(message) = &error else {
        panic!("expected unavailable, got {error:?}");
    };
    assert!(message.contains("cannot reach the server"), "{message}");
    assert!(message.contains("2 attempts"), "{message}");
}

#[test]
fn break_stops_reading_and_closes_the_stream() {
    let total = 500;
    let server = FakeOpenAi::start(vec![Reply::Events {
        events: (0..total)
            .map(|index| delta_event(&format!("w{index} ")))
            .collect(),
        pause: Duration::from_millis(2),
    }]);
    let generator = OpenAiGenerator::with_api_key(server.config(), None).unwrap();
    let mut received = 0;
    let generation = generator
        .generate(&request(None), &mut |_piece: &str| {
            received += 1;
            if received == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(received, 3);
    assert_eq!(generation.text, "w0 w1 w2 ");
    assert_eq!(generation.finish_reason, FinishReason::Cancelled);
    let written = server.wait_for_client_to_leave();
    assert!(
        written < 100,
        "the server wrote {written} of {total} events before noticing"
    );
}

#[test]
fn an_error_event_mid_stream_is_unavailable() {
    let server = FakeOpenAi::start(vec![events(vec![
        delta_event("Thirty"),
        serde_json::json!({"error": {"message": "model crashed"}}).to_string(),
    ])]);
    let generator = OpenAiGenerator::with_api_key(server.config(), None).unwrap();
    let (result, deltas) = collect_deltas(&generator, &request(None));
    let error = result.unwrap_err();
    assert!(error.to_string().contains("model crashed"), "{error}");
    assert_eq!(deltas, vec!["Thirty"]);
    // Text was already handed over: no second attempt repeats it.
    assert_eq!(server.requests(), 1);
}

#[test]
fn configuration_is_checked() {
    let good = OpenAiConfig {
        model: "m".to_string(),
        ..OpenAiConfig::default()
    };
    assert!(OpenAiGenerator::with_api_key(good.clone(), None).is_ok());
    let cases = [
        (
            OpenAiConfig {
                base_url: "ftp://x".to_string(),
                ..good.clone()
            },
            OpenAiConfigError::InvalidBaseUrl("ftp://x".to_string()),
        ),
        (
            OpenAiConfig {
                model: " ".to_string(),
                ..good.clone()
            },
            OpenAiConfigError::MissingModel,
        ),
        (
            OpenAiConfig {
                request_timeout_ms: 0,
                ..good.clone()
            },
            OpenAiConfigError::NotPositive("request_timeout_ms"),
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(
            OpenAiGenerator::with_api_key(config, None).err(),
            Some(expected)
        );
    }
    let required = OpenAiConfig {
        api_key_env: "KEEL_TEST_VARIABLE_THAT_IS_NEVER_SET".to_string(),
        api_key_required: true,
        ..good
    };
    assert_eq!(
        OpenAiGenerator::new(required).err(),
        Some(OpenAiConfigError::MissingApiKey(
            "KEEL_TEST_VARIABLE_THAT_IS_NEVER_SET".to_string()
        ))
    );
}

#[test]
fn config_reads_from_toml_like_json_with_defaults() {
    let config: OpenAiConfig = serde_json::from_str(
        r#"{"base_url": "https://api.example.com/v1", "model": "gpt", "api_key_env": "OPENAI_API_KEY"}"#,
    )
    .unwrap();
    assert_eq!(config.model, "gpt");
    assert_eq!(config.api_key_env, "OPENAI_API_KEY");
    assert_eq!(config.max_retries, 2);
    assert!(config.stream);
    let unknown = serde_json::from_str::<OpenAiConfig>(r#"{"modle": "typo"}"#);
    assert!(unknown.is_err());
}

#[test]
fn retry_pauses_honour_retry_after_up_to_the_max() {
    let backoff = Duration::from_millis(200);
    let max = Duration::from_secs(5);
    assert_eq!(retry_pause(None, backoff, max), Some(backoff));
    assert_eq!(retry_pause(None, Duration::from_secs(9), max), Some(max));
    assert_eq!(
        retry_pause(Some(Duration::from_secs(2)), backoff, max),
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        retry_pause(Some(Duration::from_secs(30)), backoff, max),
        None
    );
    assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
    assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
    assert_eq!(parse_retry_after("-1"), None);
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
}

#[test]
fn status_codes_are_classified() {
    let kinds: Vec<(u16, FailureKind)> = [401, 403, 408, 429, 500, 503, 400, 404, 422]
        .into_iter()
        .map(|status| (status, status_failure(status, "", None).kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (401, FailureKind::Auth),
            (403, FailureKind::Auth),
            (408, FailureKind::Transient),
            (429, FailureKind::Transient),
            (500, FailureKind::Transient),
            (503, FailureKind::Transient),
            (400, FailureKind::Rejected),
            (404, FailureKind::Rejected),
            (422, FailureKind::Rejected),
        ]
    );
    assert_eq!(status_failure(500, "", None).message, "HTTP 500");
    assert_eq!(status_failure(500, "boom", None).message, "HTTP 500: boom");
}

#[test]
fn sse_events_join_data_lines_and_skip_the_rest() {
    let stream = ": keep-alive\r\ndata: {\"a\":1}\r\n\r\nevent: message\ndata: line one\ndata: line two\nid: 7\n\n\ndata:[DONE]\n";
    let mut events = SseEvents::new(stream.as_bytes());
    assert_eq!(events.next_data().unwrap().as_deref(), Some("{\"a\":1}"));
    assert_eq!(
        events.next_data().unwrap().as_deref(),
        Some("line one\nline two")
    );
    assert_eq!(events.next_data().unwrap().as_deref(), Some("[DONE]"));
    assert_eq!(events.next_data().unwrap(), None);
}

#[test]
fn finish_reasons_map_from_the_wire() {
    assert_eq!(finish_reason_from_wire(Some("stop")), FinishReason::Stop);
    assert_eq!(
        finish_reason_from_wire(Some("length")),
        FinishReason::Length
    );
    assert_eq!(
        finish_reason_from_wire(Some("content_filter")),
        FinishReason::Stop
    );
    assert_eq!(finish_reason_from_wire(None), FinishReason::Stop);
}

/// The async transport: deltas arrive on the channel, in order.
async fn remote_deltas(
    generator: &OpenAiGenerator,
    request: &GenerationRequest,
) -> (Result<Generation, ModelError>, Vec<String>) {
    let (deltas, mut received) = tokio::sync::mpsc::channel(64);
    let result = crate::RemoteGenerator::generate_remote(generator, request, deltas).await;
    let mut pieces = Vec::new();
    while let Ok(piece) = received.try_recv() {
        pieces.push(piece);
    }
    (result, pieces)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_async_transport_streams_the_same_answer() {
    let server = FakeOpenAi::start(vec![events(vec![
        delta_event("Thirty"),
        delta_event(" days"),
        delta_event("."),
        finish_event("stop"),
        usage_event(30, 3),
        "[DONE]".to_string(),
    ])]);
    let mut config = server.config();
    config.api_key_env = String::new();
    let generator = OpenAiGenerator::with_api_key(config, Some("sk-test".to_string())).unwrap();
    assert!(generator.remote().is_some());
    let (result, deltas) = remote_deltas(&generator, &request(Some(64))).await;
    let generation = result.unwrap();
    assert_eq!(deltas, vec!["Thirty", " days", "."]);
    assert_eq!(generation.text, "Thirty days.");
    assert_eq!((generation.input_tokens, generation.output_tokens), (30, 3));
    assert_eq!(generation.finish_reason, FinishReason::Stop);
    let body = server.request_body(0);
    assert_eq!(body["max_tokens"], 64);
    let headers = server.request_headers(0);
    assert!(
        headers.contains(&"authorization: bearer sk-test".to_string()),
        "{headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_async_transport_retries_a_429_and_reads_a_whole_answer() {
    let server = FakeOpenAi::start(vec![
        Reply::Json {
            status: 429,
            headers: vec![("retry-after", "0")],
            body: r#"{"error":{"message":"slow down"}}"#.to_string(),
        },
        ok(completion("Thirty days.", "length", Some((10, 2)))),
    ]);
    let mut config = server.config();
    config.stream = false;
    let generator = OpenAiGenerator::with_api_key(config, None).unwrap();
    let (result, deltas) = remote_deltas(&generator, &request(None)).await;
    let generation = result.unwrap();
    assert_eq!(generation.text, "Thirty days.");
    assert_eq!(deltas, vec!["Thirty days."]);
    assert_eq!(generation.finish_reason, FinishReason::Length);
    assert_eq!(server.requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_async_transport_classifies_failures_as_the_blocking_one_does() {
    let server = FakeOpenAi::start(vec![Reply::Json {
        status: 401,
        headers: vec![],
        body: "bad key".to_string(),
    }]);
    let generator = OpenAiGenerator::with_api_key(server.config(), None).unwrap();
    let (result, _) = remote_deltas(&generator, &request(None)).await;
    let ModelError::Backend(message) = result.unwrap_err() else {
        panic!("a 401 is a backend error");
    };
    assert!(message.contains("authentication failed"), "{message}");
    assert_eq!(server.requests(), 1);

    let silent = FakeOpenAi::start(vec![Reply::Silent(Duration::from_secs(5))]);
    let mut config = silent.config();
    config.request_timeout_ms = 200;
    let generator = OpenAiGenerator::with_api_key(config, None).unwrap();
    let (result, _) = remote_deltas(&generator, &request(None)).await;
    let ModelError::Unavailable(message) = result.unwrap_err() else {
        panic!("a timeout is unavailable");
    };
    assert!(message.contains("request timeout 200 ms"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_channel_stops_the_async_answer_and_the_stream() {
    let total = 500;
    let server = FakeOpenAi::start(vec![Reply::Events {
        events: (0..total)
            .map(|index| delta_event(&format!("w{index} ")))
            .collect(),
        pause: Duration::from_millis(2),
    }]);
    let generator = OpenAiGenerator::with_api_key(server.config(), None).unwrap();
    let (deltas, mut received) = tokio::sync::mpsc::channel(1);
    let request = request(None);
    let reader = async move {
        let mut pieces = Vec::new();
        while let Some(piece) = received.recv().await {
            pieces.push(piece);
            if pieces.len() == 3 {
                break;
            }
        }
        pieces
    };
    let (result, pieces) = tokio::join!(
        crate::RemoteGenerator::generate_remote(&generator, &request, deltas),
        reader
    );
    let generation = result.unwrap();
    assert_eq!(pieces, vec!["w0 ", "w1 ", "w2 "]);
    assert_eq!(generation.finish_reason, FinishReason::Cancelled);
    let written = tokio::task::spawn_blocking(move || server.wait_for_client_to_leave())
        .await
        .unwrap();
    assert!(
        written < 100,
        "the server wrote {written} of {total} events"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_past_max_concurrent_requests_are_refused_at_once() {
    let server = FakeOpenAi::start(vec![Reply::Silent(Duration::from_millis(500))]);
    let mut config = server.config();
    config.max_concurrent_requests = 1;
    config.request_timeout_ms = 2_000;
    let generator = OpenAiGenerator::with_api_key(config, None).unwrap();
    let request = request(None);
    let (first, second) = tokio::join!(remote_deltas(&generator, &request), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        remote_deltas(&generator, &request).await
    });
    let ModelError::Unavailable(message) = second.0.unwrap_err() else {
        panic!("the second answer is refused");
    };
    assert!(message.contains("max_concurrent_requests"), "{message}");
    // The first one was let through (and the silent server failed it).
    assert!(first.0.is_err());
    assert_eq!(server.requests(), 1);
}

//! A generator backed by any OpenAI-compatible chat-completions server
//! (vLLM, the llama.cpp server, Ollama, OpenAI itself).
//!
//! Two transports, one behaviour: [`Generator::generate`] blocks (`ureq`),
//! for callers on a worker thread; [`RemoteGenerator::generate_remote`]
//! awaits (`reqwest`, in `remote.rs`), which serving uses so that remote
//! answers never hold one of its few generation workers. Answers are streamed as server-sent events by default, so
//! each delta reaches the caller as the server produces it, and a caller
//! that goes away closes the HTTP connection, which stops the server too.

use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::text::count_tokens;
use crate::{FinishReason, Generation, GenerationRequest, Generator, ModelError};

pub const OPENAI_GENERATOR_NAME: &str = "openai";

/// Error bodies are quoted in messages up to this many bytes.
const MAX_QUOTED_ERROR_BYTES: u64 = 512;
/// A non-streamed answer larger than this is refused rather than buffered.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Where and how to reach the server. Deserialised from the models section
/// of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// The API root, e.g. `https://api.openai.com/v1` or
    /// `http://127.0.0.1:8080/v1`; requests go to `<base_url>/chat/completions`.
    pub base_url: String,
    /// The model name as the server knows it.
    pub model: String,
    /// The NAME of the environment variable that holds the API key, so the
    /// key itself never sits in a config file. Empty: no key.
    pub api_key_env: String,
    /// Refuse to start when the key variable is unset. When false, a missing
    /// key means no `Authorization` header (local servers need none).
    pub api_key_required: bool,
    pub connect_timeout_ms: u64,
    /// Bounds one whole attempt, the streamed answer included.
    pub request_timeout_ms: u64,
    /// Further attempts after a 429, a 5xx or a failed connection. Timeouts
    /// are not retried: a chain's next generator is the better bet then.
    pub max_retries: u32,
    /// The first pause between attempts; it doubles up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    /// Also the longest `Retry-After` honoured: a server asking for a longer
    /// pause gets no further attempt.
    pub max_backoff_ms: u64,
    /// Ask for server-sent events (`stream: true`).
    pub stream: bool,
    /// Answers in flight at once through the async transport; more are
    /// refused as unavailable (a chain's next generator, or
    /// RESOURCE_EXHAUSTED-like backpressure to the caller).
    pub max_concurrent_requests: u32,
    /// PEM CA certificates to trust for an `https://` base_url INSTEAD of
    /// the public web roots (a server whose certificate a private CA
    /// signed), as curl's `--cacert`.
    pub ca_path: Option<PathBuf>,
}

impl Default for OpenAiConfig {
    fn default() -> OpenAiConfig {
        OpenAiConfig {
            base_url: "http://127.0.0.1:8080/v1".to_string(),
            model: String::new(),
            api_key_env: String::new(),
            api_key_required: false,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 120_000,
            max_retries: 2,
            initial_backoff_ms: 200,
            max_backoff_ms: 5_000,
            stream: true,
            max_concurrent_requests: 1024,
            ca_path: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenAiConfigError {
    #[error("openai generator: base_url must start with http:// or https://, got {0:?}")]
    InvalidBaseUrl(String),
    #[error("openai generator: model must not be empty")]
    MissingModel,
    #[error("openai generator: {0} must be positive")]
    NotPositive(&'static str),
    #[error("openai generator: cannot build the HTTP client: {0}")]
    HttpClient(String),
    #[error("openai generator: ca_path {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error(
        "openai generator: the api key variable `{0}` is not set, and api_key_required is true"
    )]
    MissingApiKey(String),
}

/// The certificates of `ca_path`, when set: the only roots then trusted.
fn trusted_cas(
    config: &OpenAiConfig,
) -> Result<Option<Vec<CertificateDer<'static>>>, OpenAiConfigError> {
    let Some(path) = &config.ca_path else {
        return Ok(None);
    };
    let invalid = |reason: String| OpenAiConfigError::CaFile {
        path: path.clone(),
        reason,
    };
    let cas = CertificateDer::pem_file_iter(path)
        .map_err(|error| invalid(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(error.to_string()))?;
    if cas.is_empty() {
        return Err(invalid("no PEM certificate in it".to_string()));
    }
    Ok(Some(cas))
}

pub struct OpenAiGenerator {
    /// The catalog name chains use for it: `openai` unless configured.
    name: String,
    config: OpenAiConfig,
    /// `<base_url>/chat/completions`.
    endpoint: String,
    api_key: Option<String>,
    agent: ureq::Agent,
    remote: remote::RemoteClient,
}

impl OpenAiGenerator {
    /// Reads the API key from the variable named by `api_key_env`.
    pub fn new(config: OpenAiConfig) -> Result<OpenAiGenerator, OpenAiConfigError> {
        let api_key = if config.api_key_env.is_empty() {
            None
        } else {
            std::env::var(&config.api_key_env)
                .ok()
                .filter(|key| !key.is_empty())
        };
        if config.api_key_required && api_key.is_none() {
            return Err(OpenAiConfigError::MissingApiKey(config.api_key_env.clone()));
        }
        OpenAiGenerator::with_api_key(config, api_key)
    }

    /// With the key given by the caller (tests, or keys kept elsewhere than
    /// in the environment).
    pub fn with_api_key(
        config: OpenAiConfig,
        api_key: Option<String>,
    ) -> Result<OpenAiGenerator, OpenAiConfigError> {
        let base_url = config.base_url.trim_end_matches('/');
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(OpenAiConfigError::InvalidBaseUrl(config.base_url.clone()));
        }
        if config.model.trim().is_empty() {
            return Err(OpenAiConfigError::MissingModel);
        }
        let positive = [
            ("connect_timeout_ms", config.connect_timeout_ms),
            ("request_timeout_ms", config.request_timeout_ms),
            ("max_backoff_ms", config.max_backoff_ms),
            (
                "max_concurrent_requests",
                u64::from(config.max_concurrent_requests),
            ),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(OpenAiConfigError::NotPositive(field));
            }
        }
        let endpoint = format!("{base_url}/chat/completions");
        let trusted = trusted_cas(&config)?;
        let root_certs = match &trusted {
            Some(cas) => ureq::tls::RootCerts::new_with_certs(
                &cas.iter()
                    .map(|ca| ureq::tls::Certificate::from_der(ca.as_ref()).to_owned())
                    .collect::<Vec<_>>(),
            ),
            None => ureq::tls::RootCerts::WebPki,
        };
        let agent_config = ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(root_certs)
                    .build(),
            )
            // Status codes are classified here (retry, auth, rejected), with
            // the server's explanation from the body.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_millis(config.connect_timeout_ms)))
            .timeout_global(Some(Duration::from_millis(config.request_timeout_ms)))
            .build();
        Ok(OpenAiGenerator {
            name: OPENAI_GENERATOR_NAME.to_string(),
            agent: ureq::Agent::new_with_config(agent_config),
            remote: remote::RemoteClient::new(&config, trusted)?,
            endpoint,
            api_key,
            config,
        })
    }

    /// The same server, key and connection pool, asking for `model` instead
    /// of the configured one (a fine-tuned model): cheap, per request.
    pub fn for_model(&self, model: &str) -> OpenAiGenerator {
        OpenAiGenerator {
            name: self.name.clone(),
            config: OpenAiConfig {
                model: model.to_string(),
                ..self.config.clone()
            },
            endpoint: self.endpoint.clone(),
            api_key: self.api_key.clone(),
            agent: self.agent.clone(),
            remote: self.remote.clone(),
        }
    }

    /// The same generator under the name a chain spec refers to it by.
    pub fn named(mut self, name: &str) -> OpenAiGenerator {
        self.name = name.to_string();
        self
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    fn wire_request<'a>(&'a self, request: &'a GenerationRequest) -> WireRequest<'a> {
        let params = &request.params;
        WireRequest {
            model: &self.config.model,
            messages: request
                .messages
                .iter()
                .map(|message| WireMessage {
                    role: message.role.as_str(),
                    content: &message.content,
                })
                .collect(),
            stream: self.config.stream,
            stream_options: self.config.stream.then_some(StreamOptions {
                include_usage: true,
            }),
            temperature: params.temperature,
            top_p: params.top_p,
            max_tokens: params.max_tokens,
            stop: (!params.stop.is_empty()).then_some(params.stop.as_slice()),
            seed: params.seed,
        }
    }

    fn encode(&self, request: &GenerationRequest) -> Result<Vec<u8>, ModelError> {
        serde_json::to_vec(&self.wire_request(request)).map_err(|error| {
            ModelError::InvalidInput(format!("cannot encode the chat request: {error}"))
        })
    }

    /// One HTTP exchange. `Ok` also when the caller cancelled mid-answer.
    fn attempt(
        &self,
        body: &[u8],
        answer: &mut Answer,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<(), AttemptFailure> {
        let mut call = self
            .agent
            .post(self.endpoint.as_str())
            .header("content-type", "application/json");
        if self.config.stream {
            call = call.header("accept", "text/event-stream");
        }
        if let Some(key) = &self.api_key {
            call = call.header("authorization", format!("Bearer {key}"));
        }
        let response = call
            .send(body)
            .map_err(|error| self.transport_failure(error))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            let mut quoted = Vec::new();
            let _partial_quote_is_enough = response
                .into_body()
                .into_reader()
                .take(MAX_QUOTED_ERROR_BYTES)
                .read_to_end(&mut quoted);
            let explanation = String::from_utf8_lossy(&quoted).trim().to_string();
            return Err(status_failure(status, &explanation, retry_after));
        }
        let reader = response.into_body().into_reader();
        if self.config.stream {
            self.read_events(BufReader::new(reader), answer, on_delta)
        } else {
            self.read_whole(reader, answer, on_delta)
        }
    }

    fn read_whole(
        &self,
        reader: impl Read,
        answer: &mut Answer,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<(), AttemptFailure> {
        let mut bytes = Vec::new();
        reader
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|error| self.read_failure(error))?;
        let text = answer.read_completion(&bytes)?;
        // A whole answer arrives at once: a Break has nothing left to stop.
        let _break_is_noted_in_answer = answer.push(&text, on_delta);
        Ok(())
    }

    fn read_events(
        &self,
        reader: impl BufRead,
        answer: &mut Answer,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<(), AttemptFailure> {
        let mut events = SseEvents::new(reader);
        loop {
            let data = match events.next_data() {
                Ok(Some(data)) => data,
                // Some servers close without `[DONE]`; what came is the answer.
                Ok(None) => return Ok(()),
                Err(error) => return Err(self.read_failure(error)),
            };
            if data.trim() == "[DONE]" {
                return Ok(());
            }
            for content in answer.read_chunk(&data)? {
                // Dropping the reader on return closes the connection,
                // which is how the server learns to stop generating.
                if answer.push(&content, on_delta).is_break() {
                    return Ok(());
                }
            }
        }
    }

    fn transport_failure(&self, error: ureq::Error) -> AttemptFailure {
        match error {
            ureq::Error::Timeout(which) => AttemptFailure::unavailable(format!(
                "timed out ({which:?}; connect timeout {} ms, request timeout {} ms)",
                self.config.connect_timeout_ms, self.config.request_timeout_ms
            )),
            other => AttemptFailure {
                kind: FailureKind::Transient,
                message: format!("cannot reach the server: {other}"),
                retry_after: None,
            },
        }
    }

    fn read_failure(&self, error: std::io::Error) -> AttemptFailure {
        // ureq reports its own errors, timeouts included, wrapped in io errors.
        match ureq::Error::from(error) {
            ureq::Error::Timeout(which) => AttemptFailure::unavailable(format!(
                "timed out while reading the answer ({which:?}; request timeout {} ms)",
                self.config.request_timeout_ms
            )),
            other => AttemptFailure::unavailable(format!("the answer broke off: {other}")),
        }
    }

    fn model_error_for(&self, failure: AttemptFailure, attempts: u32) -> ModelError {
        let context = format!(
            "openai model `{}` at {} ({attempts} attempt{})",
            self.config.model,
            self.endpoint,
            if attempts == 1 { "" } else { "s" }
        );
        match failure.kind {
            FailureKind::Transient | FailureKind::Unavailable => {
                ModelError::Unavailable(format!("{context}: {}", failure.message))
            }
            FailureKind::Auth => {
                let hint = if self.config.api_key_env.is_empty() {
                    "no api_key_env is configured".to_string()
                } else if self.api_key.is_none() {
                    format!("`{}` is not set", self.config.api_key_env)
                } else {
                    format!("check the key in `{}`", self.config.api_key_env)
                };
                ModelError::Backend(format!(
                    "{context}: authentication failed: {}; {hint}",
                    failure.message
                ))
            }
            FailureKind::Rejected => {
                ModelError::InvalidInput(format!("{context}: {}", failure.message))
            }
            FailureKind::Protocol => ModelError::Backend(format!("{context}: {}", failure.message)),
        }
    }
}

impl Generator for OpenAiGenerator {
    fn name(&self) -> &str {
        &self.name
    }

    fn provider(&self) -> &str {
        "openai"
    }

    fn with_model(&self, model: &str) -> Option<crate::SharedGenerator> {
        Some(std::sync::Arc::new(self.for_model(model)))
    }

    fn remote(&self) -> Option<&dyn crate::RemoteGenerator> {
        Some(self)
    }

    fn generate(
        &self,
        request: &GenerationRequest,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, ModelError> {
        let body = self.encode(request)?;
        let mut retries = Retries::new(&self.config);
        loop {
            let mut answer = Answer::default();
            let failure = match self.attempt(&body, &mut answer, on_delta) {
                Ok(()) => return Ok(answer.into_generation(request)),
                Err(failure) => failure,
            };
            match retries.pause_after(&failure, &answer, &self.config.model) {
                Some(pause) => std::thread::sleep(pause),
                None => return Err(self.model_error_for(failure, retries.attempts)),
            }
        }
    }
}

/// Counts attempts and decides whether and when to try again.
struct Retries {
    attempts: u32,
    max_retries: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl Retries {
    /// Before the first attempt.
    fn new(config: &OpenAiConfig) -> Retries {
        let max_backoff = Duration::from_millis(config.max_backoff_ms);
        Retries {
            attempts: 1,
            max_retries: config.max_retries,
            backoff: Duration::from_millis(config.initial_backoff_ms).min(max_backoff),
            max_backoff,
        }
    }

    /// The pause before the next attempt after `failure`, or `None`: give
    /// up. Once text reached the caller, another attempt would repeat it.
    fn pause_after(
        &mut self,
        failure: &AttemptFailure,
        answer: &Answer,
        model: &str,
    ) -> Option<Duration> {
        let may_retry = failure.kind == FailureKind::Transient
            && answer.text.is_empty()
            && self.attempts <= self.max_retries;
        if !may_retry {
            return None;
        }
        let pause = retry_pause(failure.retry_after, self.backoff, self.max_backoff)?;
        tracing::warn!(
            %model,
            attempt = self.attempts,
            pause_ms = pause.as_millis() as u64,
            error = %failure.message,
            "openai request failed, retrying"
        );
        self.backoff = self.backoff.saturating_mul(2).min(self.max_backoff);
        self.attempts += 1;
        Some(pause)
    }
}

/// What one attempt received so far.
#[derive(Default)]
struct Answer {
    text: String,
    /// As the server named it.
    finish: Option<String>,
    usage: Option<WireUsage>,
    cancelled: bool,
}

impl Answer {
    /// A non-streamed answer: notes its finish reason and usage, returns
    /// its text.
    fn read_completion(&mut self, bytes: &[u8]) -> Result<String, AttemptFailure> {
        let completion: WireCompletion = serde_json::from_slice(bytes).map_err(|error| {
            AttemptFailure::protocol(format!("the answer is not a chat completion: {error}"))
        })?;
        let choice = completion
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| AttemptFailure::protocol("the answer has no choices".to_string()))?;
        self.finish = choice.finish_reason;
        self.usage = completion.usage;
        Ok(choice
            .message
            .and_then(|message| message.content)
            .unwrap_or_default())
    }

    /// One streamed event's `data`: notes its finish reason and usage,
    /// returns its pieces of text (to push, in order).
    fn read_chunk(&mut self, data: &str) -> Result<Vec<String>, AttemptFailure> {
        let chunk: WireChunk = serde_json::from_str(data).map_err(|error| {
            AttemptFailure::protocol(format!("an event is not a completion chunk: {error}"))
        })?;
        if let Some(error) = chunk.error {
            return Err(AttemptFailure::unavailable(format!(
                "the server ended the stream with an error: {}",
                error.message
            )));
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let mut pieces = Vec::new();
        for choice in chunk.choices {
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(reason);
            }
            pieces.extend(choice.delta.and_then(|delta| delta.content));
        }
        Ok(pieces)
    }

    fn push(
        &mut self,
        piece: &str,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        if piece.is_empty() {
            return ControlFlow::Continue(());
        }
        self.text.push_str(piece);
        let flow = on_delta(piece);
        if flow.is_break() {
            self.cancelled = true;
        }
        flow
    }

    fn into_generation(self, request: &GenerationRequest) -> Generation {
        let finish_reason = if self.cancelled {
            FinishReason::Cancelled
        } else {
            finish_reason_from_wire(self.finish.as_deref())
        };
        // Servers that send no usage (or a cancelled stream, which never
        // gets to it) are counted the way the built-in models count.
        let (input_tokens, output_tokens) = match self.usage {
            Some(usage) if !self.cancelled => (usage.prompt_tokens, usage.completion_tokens),
            _ => (
                request
                    .messages
                    .iter()
                    .map(|message| count_tokens(&message.content))
                    .sum(),
                count_tokens(&self.text),
            ),
        };
        Generation {
            text: self.text,
            input_tokens,
            output_tokens,
            finish_reason,
        }
    }
}

/// OpenAI's reasons; "stop" also covers a stop sequence, which the wire
/// format does not tell apart.
fn finish_reason_from_wire(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// 429, 5xx, a failed connection: worth another attempt.
    Transient,
    /// Timed out, or the answer broke off: not retried here.
    Unavailable,
    /// 401 or 403.
    Auth,
    /// Another 4xx: the server refused this request as such.
    Rejected,
    /// The server answered something that is not the OpenAI wire format.
    Protocol,
}

#[derive(Debug)]
struct AttemptFailure {
    kind: FailureKind,
    message: String,
    retry_after: Option<Duration>,
}

impl AttemptFailure {
    fn unavailable(message: String) -> AttemptFailure {
        AttemptFailure {
            kind: FailureKind::Unavailable,
            message,
            retry_after: None,
        }
    }

    fn protocol(message: String) -> AttemptFailure {
        AttemptFailure {
            kind: FailureKind::Protocol,
            message,
            retry_after: None,
        }
    }
}

fn status_failure(status: u16, explanation: &str, retry_after: Option<Duration>) -> AttemptFailure {
    let kind = match status {
        401 | 403 => FailureKind::Auth,
        408 | 429 => FailureKind::Transient,
        500..=599 => FailureKind::Transient,
        _ => FailureKind::Rejected,
    };
    let message = if explanation.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {explanation}")
    };
    AttemptFailure {
        kind,
        message,
        retry_after,
    }
}

/// `Retry-After` in seconds; the HTTP-date form is left to the backoff.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(seconds))
}

/// The pause before the next attempt; `None` when the server asks for a
/// longer one than `max_backoff` (better to fail over than to wait).
fn retry_pause(
    retry_after: Option<Duration>,
    backoff: Duration,
    max_backoff: Duration,
) -> Option<Duration> {
    match retry_after {
        Some(asked) if asked > max_backoff => None,
        Some(asked) => Some(asked),
        None => Some(backoff.min(max_backoff)),
    }
}

/// Reads the `data` of server-sent events: lines are joined until a blank
/// line ends the event; comments (`:`) and other fields are skipped.
struct SseEvents<R> {
    reader: R,
    line: String,
}

impl<R: BufRead> SseEvents<R> {
    fn new(reader: R) -> SseEvents<R> {
        SseEvents {
            reader,
            line: String::new(),
        }
    }

    /// The next event's data; `None` at the end of the stream.
    fn next_data(&mut self) -> std::io::Result<Option<String>> {
        let mut data: Option<String> = None;
        loop {
            self.line.clear();
            let read = self.reader.read_line(&mut self.line)?;
            if read == 0 {
                return Ok(data);
            }
            let line = self.line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if data.is_some() {
                    return Ok(data);
                }
                continue;
            }
            let Some(value) = line.strip_prefix("data:") else {
                continue;
            };
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut data {
                Some(joined) => {
                    joined.push('\n');
                    joined.push_str(value);
                }
                None => data = Some(value.to_string()),
            }
        }
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct WireCompletion {
    #[serde(default)]
    choices: Vec<WireCompletionChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireCompletionChoice {
    message: Option<WireContent>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireContent {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    usage: Option<WireUsage>,
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    delta: Option<WireContent>,
    finish_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    message: String,
}

mod remote;
#[cfg(test)]
mod tests;

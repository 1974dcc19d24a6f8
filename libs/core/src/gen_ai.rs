//! The spans of model work, named and attributed after the OpenTelemetry
//! GenAI semantic conventions, so Phoenix, Langfuse, MLflow or any OTLP
//! backend shows them as LLM calls: `chat {model}`, `embeddings {model}`,
//! `retrieval {collection}`.
//!
//! Attributes not known when a span starts are declared empty and recorded
//! later with the `record_*` functions. Prompt and answer texts go on spans
//! only when `[telemetry] record_content` is on.

use opentelemetry::{Array, StringValue, Value};
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::{records_content, CallerTrace};

/// What a generation was asked for.
pub struct ChatRequest<'a> {
    /// The generator's name in Keel's catalog, e.g. `smollm2`.
    pub model: &'a str,
    /// Who runs it: `llama.cpp`, `openai`, `keel` (the built-ins).
    pub provider: &'a str,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
}

/// A `chat {model}` span under `parent`.
pub fn chat_span(parent: &Span, request: &ChatRequest<'_>) -> Span {
    // Every value set here rather than recorded later, as `&str` rather
    // than `%` (formatted): each `record` and each formatting is paid on
    // every query.
    let name = format!("chat {}", request.model);
    tracing::info_span!(
        parent: parent,
        "chat",
        otel.name = name.as_str(),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_message = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = request.provider,
        gen_ai.request.model = request.model,
        gen_ai.request.max_tokens = request.max_tokens.map(i64::from),
        gen_ai.request.temperature = request.temperature.map(f64::from),
        gen_ai.request.top_p = request.top_p.map(f64::from),
        gen_ai.response.time_to_first_chunk = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
    )
}

/// The first piece of a streamed answer arrived `seconds` after the call.
pub fn record_first_chunk(span: &Span, seconds: f64) {
    span.record("gen_ai.response.time_to_first_chunk", seconds);
}

/// How a generation ended.
pub struct ChatResult<'a> {
    /// The OpenAI-style reason: `stop`, `length`, `stop_sequence`, `cancelled`.
    pub finish_reason: &'a str,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

pub fn record_chat_result(span: &Span, result: &ChatResult<'_>) {
    // A list, as the convention has it (one reason per choice), which a
    // `tracing` field cannot hold.
    let reasons = Array::String(vec![StringValue::from(result.finish_reason.to_string())]);
    span.set_attribute("gen_ai.response.finish_reasons", Value::Array(reasons));
    span.record("gen_ai.usage.input_tokens", i64::from(result.input_tokens));
    span.record(
        "gen_ai.usage.output_tokens",
        i64::from(result.output_tokens),
    );
}

/// The prompt and the answer, when content may be recorded: as the
/// convention's JSON message lists.
pub fn record_chat_content(span: &Span, prompt: &[(&str, &str)], answer: &str) {
    if !records_content() {
        return;
    }
    let input: Vec<serde_json::Value> = prompt
        .iter()
        .map(|(role, content)| {
            serde_json::json!({"role": role, "parts": [{"type": "text", "content": content}]})
        })
        .collect();
    let output = serde_json::json!([{
        "role": "assistant",
        "parts": [{"type": "text", "content": answer}],
    }]);
    span.record(
        "gen_ai.input.messages",
        serde_json::Value::Array(input).to_string(),
    );
    span.record("gen_ai.output.messages", output.to_string());
}

/// An `embeddings {model}` span under the current span.
pub fn embeddings_span(model: &str, provider: &str, inputs: usize) -> Span {
    let name = format!("embeddings {model}");
    tracing::info_span!(
        "embeddings",
        otel.name = name.as_str(),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_message = Empty,
        gen_ai.operation.name = "embeddings",
        gen_ai.provider.name = provider,
        gen_ai.request.model = model,
        gen_ai.embeddings.dimension.count = Empty,
        gen_ai.usage.input_tokens = Empty,
        keel.embeddings.inputs = inputs as i64,
    )
}

pub fn record_embeddings_result(span: &Span, dimension: usize) {
    span.record("gen_ai.embeddings.dimension.count", dimension as i64);
}

/// A `retrieval {collection}` span: the server span of the vector index's
/// `Search` call, continuing `caller`'s trace.
pub fn retrieval_span(
    caller: &CallerTrace,
    collection: &str,
    top_k: u32,
    query_text: Option<&str>,
) -> Span {
    let name = format!("retrieval {collection}");
    let span = tracing::info_span!(
        "retrieval",
        otel.name = name.as_str(),
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_message = Empty,
        gen_ai.operation.name = "retrieval",
        gen_ai.data_source.id = collection,
        gen_ai.request.top_k = i64::from(top_k),
        gen_ai.retrieval.query.text = Empty,
        keel.retrieval.returned = Empty,
        rpc.system = "grpc",
        rpc.service = "keel.v1.VectorIndexService",
    );
    caller.continue_in(&span);
    if let Some(text) = query_text {
        if records_content() {
            span.record("gen_ai.retrieval.query.text", text);
        }
    }
    span
}

pub fn record_retrieval_result(span: &Span, returned: usize) {
    span.record("keel.retrieval.returned", returned as i64);
}

/// Marks `span` failed, with the error's text.
pub fn record_error(span: &Span, error: &dyn std::fmt::Display) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", error.to_string());
}

//! `POST /v1/chat/completions`: the conversation runs through the
//! endpoint's RAG chain exactly as a `Query` with `messages` does.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_core::telemetry::CallerTrace;
use keel_types::{FinishReason, Scope};
use serde_json::{json, Value};

use super::wire::{read_json, unix_seconds, ApiError, ChatRequest};
use super::OpenAiState;
use crate::pipeline::{MessageInput, QueryInput, QueryOutput};

pub async fn complete(State(state): State<OpenAiState>, request: Request) -> Response {
    match answer(state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn answer(state: OpenAiState, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let chat: ChatRequest = read_json(body).await?;
    let (endpoint, version) = parse_model(&chat.model)?;
    keel_core::auth::require(&parts.extensions, &Scope::Query(Some(endpoint.to_string())))?;
    let target = match version {
        Some(version) => chain_version(&state, endpoint, version).await?,
        None => String::new(),
    };
    let input = QueryInput {
        caller_key: keel_core::auth::caller_name(&parts.extensions),
        endpoint: endpoint.to_string(),
        question: String::new(),
        messages: chat
            .messages
            .into_iter()
            .map(|message| MessageInput {
                role: message.role,
                content: message.content.into_text(),
            })
            .collect(),
        user_id: chat.user,
        session_id: chat.keel.session_id,
        target,
        full_citation_text: chat.keel.full_citation_text,
        caller: CallerTrace::from_headers(&parts.headers),
    };
    if chat.stream {
        return super::chat_stream::respond(&state, input, chat.model).await;
    }
    let output = state.pipeline.query(input).await?;
    Ok(Json(completion(&chat.model, &output)).into_response())
}

/// `support` → (`support`, None); `support@3` → (`support`, Some(3)).
pub fn parse_model(model: &str) -> Result<(&str, Option<u32>), ApiError> {
    match model.rsplit_once('@') {
        None => Ok((model, None)),
        Some((endpoint, version)) => match version.parse::<u32>() {
            Ok(version) if version > 0 => Ok((endpoint, Some(version))),
            _ => Err(ApiError::invalid(
                "model",
                format!(
                    "must be an endpoint name, or `endpoint@N` with N a version number, got `{model}`"
                ),
            )),
        },
    }
}

/// Version `version` of the chain the endpoint's first route serves.
async fn chain_version(
    state: &OpenAiState,
    endpoint: &str,
    version: u32,
) -> Result<String, ApiError> {
    let found = state.endpoints.get(endpoint).await?;
    let route = found
        .routes
        .first()
        .ok_or_else(|| ApiError::invalid("model", format!("endpoint `{endpoint}` has no route")))?;
    Ok(format!("{}/{version}", route.target.model))
}

pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// What Keel adds to OpenAI's answer: which request, trace and version
/// answered, and the passages it was given.
pub fn keel_fields(output: &QueryOutput) -> Value {
    json!({
        "request_id": output.request_id.to_string(),
        "trace_id": output.trace_id,
        "served_model": output.served_model,
        "served_version": output.served_version,
        "route_target": output.route_target,
        "generator": output.generator,
        "cost_usd": output.cost_usd,
        "cache_hit": output.cache_hit,
        "citations": output.citations,
    })
}

pub fn usage(output: &QueryOutput) -> Value {
    json!({
        "prompt_tokens": output.input_tokens,
        "completion_tokens": output.output_tokens,
        "total_tokens": output.input_tokens + output.output_tokens,
    })
}

fn completion(model: &str, output: &QueryOutput) -> Value {
    json!({
        "id": format!("chatcmpl-{}", output.request_id),
        "object": "chat.completion",
        "created": unix_seconds(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": output.answer},
            "finish_reason": finish_reason(output.finish_reason),
            "logprobs": null,
        }],
        "usage": usage(output),
        "keel": keel_fields(output),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_names_an_endpoint_and_maybe_a_version() {
        assert_eq!(parse_model("support").unwrap(), ("support", None));
        assert_eq!(parse_model("support@3").unwrap(), ("support", Some(3)));
        for bad in ["support@", "support@0", "support@v2", "support@-1"] {
            let error = parse_model(bad).unwrap_err();
            assert_eq!(error.param.as_deref(), Some("model"), "{bad}");
        }
    }
}

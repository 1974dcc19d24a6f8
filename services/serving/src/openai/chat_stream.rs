//! A chat completion streamed as server-sent events, as OpenAI streams
//! them: a first chunk with the assistant's role (and Keel's fields), one
//! chunk per piece of the answer, a chunk with the finish reason, a last
//! chunk with the usage, then `data: [DONE]`. A client that goes away
//! drops the stream, which stops the generation.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;

use super::chat::{finish_reason, keel_fields, usage};
use super::wire::{unix_seconds, ApiError};
use super::OpenAiState;
use crate::error::Error;
use crate::pipeline::{QueryEvent, QueryInput};

/// What every chunk of one answer repeats.
struct Chunks {
    id: String,
    created: i64,
    model: String,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    }

    fn events(&self, item: Result<QueryEvent, Error>) -> Vec<Value> {
        match item {
            Ok(QueryEvent::Delta(text)) => vec![self.chunk(json!({"content": text}), None)],
            Ok(QueryEvent::Done(output)) => vec![
                self.chunk(json!({}), Some(finish_reason(output.finish_reason))),
                json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage(&output),
                    "keel": keel_fields(&output),
                }),
            ],
            // Sent once, first, by the pipeline; nothing to add later.
            Ok(QueryEvent::Citations { .. }) => Vec::new(),
            Err(error) => {
                let status = tonic::Status::from(error);
                vec![json!({"error": {
                    "message": status.message(),
                    "type": "api_error",
                    "code": format!("{:?}", status.code()),
                }})]
            }
        }
    }
}

pub async fn respond(
    state: &OpenAiState,
    input: QueryInput,
    model: String,
) -> Result<Response, ApiError> {
    // Errors before the first event (bad input, unknown endpoint) are
    // answered with their HTTP status; later ones arrive as an event.
    let query = state.pipeline.query_stream(input).await?;
    let QueryEvent::Citations {
        citations,
        request_id,
        trace_id,
    } = query.first
    else {
        return Err(ApiError::from(tonic::Status::internal(
            "a streamed query began without its citations",
        )));
    };
    let chunks = Arc::new(Chunks {
        id: format!("chatcmpl-{request_id}"),
        created: unix_seconds(),
        model,
    });
    let mut first = chunks.chunk(json!({"role": "assistant", "content": ""}), None);
    first["keel"] = json!({
        "request_id": request_id.to_string(),
        "trace_id": trace_id,
        "citations": citations,
    });
    let body = {
        let chunks = chunks.clone();
        ReceiverStream::new(query.rest).flat_map(move |item| stream::iter(chunks.events(item)))
    };
    let events = stream::iter([first])
        .chain(body)
        .map(|value| Event::default().data(value.to_string()))
        .chain(stream::iter([Event::default().data("[DONE]")]))
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(events).into_response())
}

//! `POST /v1/embeddings`: the texts embedded by a collection's embedder
//! (model = the collection) or an embedder by name, through the vector
//! index, as floats or (what the `openai` package asks for by default)
//! base64 of little-endian f32s.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use keel_proto::v1 as pb;
use serde::Deserialize;
use serde_json::{json, Value};
use tonic::Code;

use super::wire::{read_json, ApiError};
use super::OpenAiState;
use crate::clients::with_deadline;

#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    model: String,
    input: EmbeddingInput,
    #[serde(default)]
    encoding_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

/// The collection `model` names, else the embedder.
#[derive(Debug, Clone, Copy)]
enum Source {
    Collection,
    Embedder,
}

pub async fn embed(State(state): State<OpenAiState>, request: Request) -> Response {
    match answer(state, request).await {
        Ok(value) => Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn answer(state: OpenAiState, request: Request) -> Result<Value, ApiError> {
    let body: EmbeddingsRequest = read_json(request.into_body()).await?;
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("must be `float` or `base64`, got `{other}`"),
            ))
        }
    };
    let texts = match body.input {
        EmbeddingInput::One(text) => vec![text],
        EmbeddingInput::Many(texts) => texts,
    };
    let (source, vectors) = match embed_with(&state, Source::Collection, &body.model, &texts).await
    {
        Err(status) if status.code() == Code::NotFound => {
            let vectors = embed_with(&state, Source::Embedder, &body.model, &texts)
                .await
                .map_err(|status| match status.code() {
                    Code::NotFound | Code::InvalidArgument => ApiError {
                        status: axum::http::StatusCode::NOT_FOUND,
                        message: format!(
                            "model: no collection or embedder is named `{}`",
                            body.model
                        ),
                        param: Some("model".to_string()),
                        code: Some("model_not_found"),
                        retry_after: None,
                    },
                    _ => ApiError::from(status),
                })?;
            (Source::Embedder, vectors)
        }
        other => (Source::Collection, other?),
    };
    let tokens = count_tokens(&state, source, &body.model, &texts).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                json!(encode_base64(&vector.values))
            } else {
                json!(vector.values)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

fn selector(source: Source, model: &str) -> (String, String) {
    match source {
        Source::Collection => (model.to_string(), String::new()),
        Source::Embedder => (String::new(), model.to_string()),
    }
}

async fn embed_with(
    state: &OpenAiState,
    source: Source,
    model: &str,
    texts: &[String],
) -> Result<Vec<pb::Vector>, tonic::Status> {
    let (collection, embedder) = selector(source, model);
    let request = pb::EmbedRequest {
        collection,
        embedder,
        texts: texts.to_vec(),
    };
    let mut client = state.vector_index.clone();
    with_deadline(state.dependency_timeout, client.embed(request))
        .await
        .map(|response| response.into_inner().vectors)
}

/// The tokens the embedder read, its special tokens included.
async fn count_tokens(
    state: &OpenAiState,
    source: Source,
    model: &str,
    texts: &[String],
) -> Result<u64, ApiError> {
    let (collection, embedder) = selector(source, model);
    let request = pb::CountTokensRequest {
        collection,
        embedder,
        texts: texts.to_vec(),
    };
    let mut client = state.vector_index.clone();
    let counted = with_deadline(state.dependency_timeout, client.count_tokens(request))
        .await?
        .into_inner();
    let words: u64 = counted
        .texts
        .iter()
        .flat_map(|text| text.counts.iter())
        .map(|count| u64::from(*count))
        .sum();
    Ok(words + u64::from(counted.special_tokens) * texts.len() as u64)
}

/// The vector's little-endian f32 bytes in base64, as OpenAI sends them.
fn encode_base64(values: &[f32]) -> String {
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_holds_little_endian_floats() {
        let encoded = encode_base64(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(bytes.len(), 8);
        assert_eq!(f32::from_le_bytes(bytes[4..8].try_into().unwrap()), -2.5);
    }
}

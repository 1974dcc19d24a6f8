//! Retrieval through the vector-index service: the question's text goes to
//! the chain's collection, which embeds it with its own embedder.

use std::time::Duration;

use keel_core::channel::ServiceChannel;
use keel_models::Passage;
use keel_proto::v1 as pb;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use tonic::Code;

use crate::clients::{dependency_error, with_deadline};
use crate::error::Error;

#[derive(Clone)]
pub struct Retriever {
    client: VectorIndexServiceClient<ServiceChannel>,
    timeout: Duration,
}

pub struct SearchQuery<'a> {
    pub collection: &'a str,
    pub text: &'a str,
    pub top_k: u32,
    pub filter: &'a serde_json::Map<String, serde_json::Value>,
    pub mode: keel_types::SearchMode,
}

impl Retriever {
    pub fn new(channel: ServiceChannel, timeout: Duration) -> Retriever {
        Retriever {
            client: VectorIndexServiceClient::new(channel),
            timeout,
        }
    }

    /// The best passages, best first, with their whole text.
    /// The call carries the current span's trace context.
    pub async fn search(&self, query: &SearchQuery<'_>) -> Result<Vec<Passage>, Error> {
        let payload_equals = if query.filter.is_empty() {
            None
        } else {
            Some(keel_core::payload::json_to_struct(query.filter))
        };
        let request = tonic::Request::new(pb::SearchRequest {
            collection: query.collection.to_string(),
            vector: Vec::new(),
            text: query.text.to_string(),
            top_k: query.top_k,
            payload_equals,
            with_payload: false,
            mode: pb::SearchMode::from(query.mode) as i32,
            ..Default::default()
        });
        let mut client = self.client.clone();
        let response = match with_deadline(self.timeout, client.search(request)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Err(search_error(query.collection, &status)),
        };
        let passages = response
            .points
            .into_iter()
            .map(|point| Passage {
                id: point.id,
                text: point.text,
                score: point.score,
            })
            .collect();
        Ok(passages)
    }
}

/// A chain naming a missing collection, or one the index cannot search by
/// text, is a deployment problem rather than the caller's mistake.
fn search_error(collection: &str, status: &tonic::Status) -> Error {
    match status.code() {
        Code::NotFound => Error::FailedPrecondition(format!(
            "collection `{collection}` not found in the vector index: {}",
            status.message()
        )),
        Code::InvalidArgument | Code::FailedPrecondition => Error::FailedPrecondition(format!(
            "vector index rejected the search of collection `{collection}`: {}",
            status.message()
        )),
        _ => dependency_error("vector-index", status),
    }
}

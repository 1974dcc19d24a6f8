//! Reading every point of a collection (or those a filter keeps) a page at
//! a time through ScrollPoints.

use keel_core::channel::ServiceChannel;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_proto::v1::{
    condition, field_condition, Condition, FieldCondition, Filter, RetrievedPoint,
    ScrollPointsRequest,
};

use crate::cli::error::rpc;
use crate::cli::CliError;

/// Points per ScrollPoints page.
const SCROLL_PAGE: u32 = 1000;

/// Hands every point `filter` keeps to `each`, by id, a page per call.
pub async fn for_each_point(
    client: &mut VectorIndexServiceClient<ServiceChannel>,
    collection: &str,
    filter: Option<Filter>,
    with_payload: bool,
    mut each: impl FnMut(RetrievedPoint) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut page_token = String::new();
    loop {
        let page = client
            .scroll_points(ScrollPointsRequest {
                collection: collection.to_string(),
                filter: filter.clone(),
                limit: SCROLL_PAGE,
                page_token,
                with_payload,
                with_vectors: false,
            })
            .await
            .map_err(rpc("vector-index ScrollPoints"))?
            .into_inner();
        for point in page.points {
            each(point)?;
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

/// Keeps the points whose payload has `key` equal to the string `value`.
pub fn payload_equals(key: &str, value: &str) -> Filter {
    Filter {
        must: vec![Condition {
            condition: Some(condition::Condition::Field(FieldCondition {
                key: key.to_string(),
                predicate: Some(field_condition::Predicate::Equals(
                    keel_core::payload::json_to_value(&serde_json::Value::from(value)),
                )),
            })),
        }],
        ..Filter::default()
    }
}

/// A point's payload as JSON; none is an empty object.
pub fn payload_json(
    point: &RetrievedPoint,
) -> Result<serde_json::Map<String, serde_json::Value>, CliError> {
    point
        .payload
        .as_ref()
        .map(|payload| keel_core::payload::struct_to_json("payload", payload))
        .transpose()
        .map_err(|error| CliError::Invalid(error.to_string()))
        .map(Option::unwrap_or_default)
}

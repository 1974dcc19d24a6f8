//! Keyword (BM25) and hybrid search through the gRPC API: stemmed terms,
//! filters, replacements and deletes followed, the full-text index rebuilt
//! at restart, fused ranking, and the refusals of each mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_proto::v1 as pb;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_testkit::{assert_status, TestDatabase};
use serde_json::json;
use tonic::transport::Channel;
use tonic::Code;

mod common;

use common::*;

const NOTES: [(&str, &str, &str); 5] = [
    ("refunds", "Refunds are paid back to the card within five business days.", "billing"),
    ("invoices", "Invoices are emailed on the first day of each month.", "billing"),
    ("hours", "The support office opens at nine and closes at five.", "support"),
    ("shipping", "Parcels ship abroad in two weeks by sea freight; refunds for parcels lost at sea follow a claim.", "logistics"),
    ("returns", "Returned goods must arrive unused within thirty days.", "logistics"),
];

fn text_search(text: &str, mode: pb::SearchMode, top_k: u32) -> pb::SearchRequest {
    pb::SearchRequest {
        collection: "notes".to_string(),
        text: text.to_string(),
        top_k,
        mode: mode as i32,
        with_payload: true,
        ..Default::default()
    }
}

async fn scored(
    client: &mut VectorIndexServiceClient<Channel>,
    request: pb::SearchRequest,
) -> Vec<(String, f32)> {
    client
        .search(request)
        .await
        .unwrap()
        .into_inner()
        .points
        .into_iter()
        .map(|point| (point.id, point.score))
        .collect()
}

/// The ids a keyword search for `text` finds, sorted.
async fn keyword_matches(
    client: &mut VectorIndexServiceClient<Channel>,
    text: &str,
) -> Vec<String> {
    let mut found: Vec<String> = scored(client, text_search(text, pb::SearchMode::Keyword, 5))
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    found.sort();
    found
}

fn ids(scored: &[(String, f32)]) -> Vec<&str> {
    scored.iter().map(|(id, _)| id.as_str()).collect()
}

#[tokio::test]
async fn keyword_and_hybrid_search_rank_filter_and_survive_a_restart() {
    let database = TestDatabase::sqlite();
    let server = VectorIndex::start(&database.url, 1000).await;
    let mut client = server.client.clone();
    create_notes_and_raw(&mut client).await;
    let points = NOTES
        .iter()
        .map(|(id, text, team)| pb::Point {
            payload: payload(json!({"team": team})),
            ..text_point(id, text)
        })
        .collect();
    upsert(&mut client, "notes", points).await;

    // "refund" finds both texts with "refunds" (stemmed), the one with
    // more weight on the term first; nothing else has the word.
    let keyword = scored(
        &mut client,
        text_search("refund", pb::SearchMode::Keyword, 5),
    )
    .await;
    assert_eq!(ids(&keyword), vec!["refunds", "shipping"]);
    assert!(keyword[0].1 > keyword[1].1 && keyword[1].1 > 0.0);
    let filtered = scored(
        &mut client,
        pb::SearchRequest {
            payload_equals: payload(json!({"team": "logistics"})),
            ..text_search("refund", pb::SearchMode::Keyword, 5)
        },
    )
    .await;
    assert_eq!(ids(&filtered), vec!["shipping"]);

    // Hybrid: every point of either ranking, fused scores descending; the
    // two points both rankings hold outrank any the dense ranking alone
    // holds (1/61 at best).
    let hybrid = scored(
        &mut client,
        text_search("refund", pb::SearchMode::Hybrid, 5),
    )
    .await;
    assert_eq!(hybrid.len(), 5);
    let mut top_two = ids(&hybrid)[..2].to_vec();
    top_two.sort();
    assert_eq!(top_two, vec!["refunds", "shipping"]);
    assert!(hybrid[2].1 <= 1.0 / 61.0 + 1e-6);
    assert!(hybrid.windows(2).all(|pair| pair[0].1 >= pair[1].1));
    let keyword_only = scored(
        &mut client,
        pb::SearchRequest {
            dense_weight: 0.0,
            keyword_weight: 1.0,
            ..text_search("office hours", pb::SearchMode::Hybrid, 1)
        },
    )
    .await;
    assert_eq!(ids(&keyword_only), vec!["hours"]);

    // Replacing a text and deleting a point reach the keyword index.
    upsert(
        &mut client,
        "notes",
        vec![text_point("hours", "Refund desks open at nine.")],
    )
    .await;
    client
        .delete_points(pb::DeletePointsRequest {
            collection: "notes".to_string(),
            ids: vec!["shipping".to_string()],
        })
        .await
        .unwrap();
    assert_eq!(
        keyword_matches(&mut client, "refund").await,
        vec!["hours", "refunds"]
    );
    assert!(scored(
        &mut client,
        text_search("office", pb::SearchMode::Keyword, 5)
    )
    .await
    .is_empty());

    // Refusals name the field and the rule.
    for (case, request, needles) in [
        (
            "vectors-only collection",
            pb::SearchRequest {
                collection: "raw".to_string(),
                ..text_search("refund", pb::SearchMode::Keyword, 5)
            },
            vec!["field `mode`", "vectors only"],
        ),
        (
            "keyword by vector",
            pb::SearchRequest {
                text: String::new(),
                vector: vec![0.5; 4],
                collection: "raw".to_string(),
                ..text_search("", pb::SearchMode::Hybrid, 5)
            },
            vec!["field `mode`"],
        ),
        (
            "unknown mode",
            pb::SearchRequest {
                mode: 9,
                ..text_search("refund", pb::SearchMode::Dense, 5)
            },
            vec!["field `mode`", "SEARCH_MODE_HYBRID"],
        ),
        (
            "negative weight",
            pb::SearchRequest {
                dense_weight: -1.0,
                ..text_search("refund", pb::SearchMode::Hybrid, 5)
            },
            vec!["field `dense_weight`", "0..=100"],
        ),
    ] {
        let needles: Vec<&str> = needles.to_vec();
        assert_status(
            case,
            client.search(request).await,
            Code::InvalidArgument,
            &needles,
        );
    }
    let notes_vector = client
        .embed(pb::EmbedRequest {
            collection: "notes".to_string(),
            texts: vec!["refund".to_string()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .vectors
        .remove(0)
        .values;
    assert_status(
        "keyword by vector in a text collection",
        client
            .search(pb::SearchRequest {
                text: String::new(),
                vector: notes_vector,
                ..text_search("", pb::SearchMode::Keyword, 5)
            })
            .await,
        Code::InvalidArgument,
        &["field `text`", "keyword and hybrid"],
    );

    // The full-text index is rebuilt from the points at start-up.
    server.stop().await;
    let server = VectorIndex::start(&database.url, 1000).await;
    let mut client = server.client.clone();
    assert_eq!(
        keyword_matches(&mut client, "refund").await,
        vec!["hours", "refunds"]
    );
    server.stop().await;
}

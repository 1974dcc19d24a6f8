//! Point access and rich filters through the gRPC API: must / should /
//! must_not filters over an indexed and an unindexed key, GetPoints,
//! ScrollPoints, CountPoints, `ef` and `with_vectors` on search, Embed, and
//! the refusals of each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_core::payload::json_to_value;
use keel_proto::v1 as pb;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_testkit::{assert_status, TestDatabase};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;

mod common;

use common::*;

const LANGS: [&str; 3] = ["en", "de", "fr"];

/// Point n: lang LANGS[n % 3], year 2000 + n % 30, tags ["t{n % 4}", "all"].
fn corpus_payload(n: usize) -> Value {
    json!({"lang": LANGS[n % 3], "year": 2000 + n % 30, "tags": [format!("t{}", n % 4), "all"]})
}

fn field(key: &str, predicate: pb::field_condition::Predicate) -> pb::Condition {
    pb::Condition {
        condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
            key: key.to_string(),
            predicate: Some(predicate),
        })),
    }
}

fn equals(key: &str, value: Value) -> pb::Condition {
    field(
        key,
        pb::field_condition::Predicate::Equals(json_to_value(&value)),
    )
}

fn any_of(key: &str, values: &[Value]) -> pb::Condition {
    field(
        key,
        pb::field_condition::Predicate::AnyOf(prost_types::ListValue {
            values: values.iter().map(json_to_value).collect(),
        }),
    )
}

fn range(key: &str, range: pb::Range) -> pb::Condition {
    field(key, pb::field_condition::Predicate::Range(range))
}

async fn start_with_corpus(
    database_url: &str,
    points: usize,
) -> (VectorIndex, VectorIndexServiceClient<Channel>) {
    let server = VectorIndex::start(database_url, 0).await;
    let mut client = server.client.clone();
    client
        .create_collection(pb::CreateCollectionRequest {
            indexed_payload_keys: vec!["lang".to_string(), "year".to_string()],
            ..create_request("docs", 8, pb::Metric::Cosine, "none")
        })
        .await
        .unwrap();
    let vectors = pseudo_random_vectors(points, 8, 11);
    let all: Vec<pb::Point> = vectors
        .into_iter()
        .enumerate()
        .map(|(n, vector)| vector_point(&format!("p{n:03}"), vector, corpus_payload(n)))
        .collect();
    for batch in all.chunks(100) {
        upsert(&mut client, "docs", batch.to_vec()).await;
    }
    (server, client)
}

async fn count(client: &mut VectorIndexServiceClient<Channel>, filter: Option<pb::Filter>) -> u64 {
    client
        .count_points(pb::CountPointsRequest {
            collection: "docs".to_string(),
            filter,
        })
        .await
        .unwrap()
        .into_inner()
        .count
}

/// The rich filter the tests share: English or German, not before 2010,
/// tagged t1 or from 2029.
fn rich_filter() -> pb::Filter {
    pb::Filter {
        must: vec![any_of("lang", &[json!("en"), json!("de")])],
        should: vec![
            equals("tags", json!("t1")),
            range(
                "year",
                pb::Range {
                    gte: Some(2029.0),
                    ..pb::Range::default()
                },
            ),
        ],
        must_not: vec![range(
            "year",
            pb::Range {
                lt: Some(2010.0),
                ..pb::Range::default()
            },
        )],
    }
}

fn rich_filter_keeps(n: usize) -> bool {
    let year = 2000 + n % 30;
    n % 3 != 2 && (n % 4 == 1 || year >= 2029) && year >= 2010
}

async fn filters_select_what_brute_force_selects(database_url: &str) {
    let database_points = 600;
    let (server, mut client) = start_with_corpus(database_url, database_points).await;
    let expected: Vec<String> = (0..database_points)
        .filter(|n| rich_filter_keeps(*n))
        .map(|n| format!("p{n:03}"))
        .collect();
    assert_eq!(expected.len(), 60);
    assert_eq!(count(&mut client, Some(rich_filter())).await, 60);
    assert_eq!(count(&mut client, None).await, 600);

    let queries = pseudo_random_vectors(5, 8, 77);
    for query in &queries {
        let request = pb::SearchRequest {
            filter: Some(rich_filter()),
            ..vector_search("docs", query.clone(), 20)
        };
        let ids = search_ids(&mut client, request).await;
        assert_eq!(ids.len(), 20);
        assert!(ids.iter().all(|id| expected.contains(id)), "{ids:?}");
    }
    // `payload_equals` and `filter` both apply.
    let both = pb::SearchRequest {
        payload_equals: payload(json!({"lang": "de"})),
        filter: Some(rich_filter()),
        ..vector_search("docs", queries[0].clone(), 200)
    };
    let ids = search_ids(&mut client, both).await;
    let german: Vec<&String> = expected
        .iter()
        .filter(|id| id[1..].parse::<usize>().unwrap() % 3 == 1)
        .collect();
    assert_eq!(ids.len(), german.len());

    // The indexed keys survive a restart, and so do the filters' answers.
    server.stop().await;
    let server = VectorIndex::start(database_url, 0).await;
    let mut client = server.client.clone();
    let collection = client
        .get_collection(pb::GetCollectionRequest {
            name: "docs".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(collection.indexed_payload_keys, vec!["lang", "year"]);
    assert_eq!(count(&mut client, Some(rich_filter())).await, 60);
    server.stop().await;
}

#[tokio::test]
async fn filters_select_what_brute_force_selects_on_sqlite() {
    let database = TestDatabase::sqlite();
    filters_select_what_brute_force_selects(&database.url).await;
}

#[tokio::test]
async fn filters_select_what_brute_force_selects_on_postgres() {
    let database = TestDatabase::postgres().await;
    filters_select_what_brute_force_selects(&database.url).await;
}

#[tokio::test]
async fn get_and_scroll_points_page_by_id() {
    let database = TestDatabase::sqlite();
    let (server, mut client) = start_with_corpus(&database.url, 60).await;
    let got = client
        .get_points(pb::GetPointsRequest {
            collection: "docs".to_string(),
            ids: vec!["p007".into(), "nope".into(), "p002".into()],
            with_payload: true,
            with_vectors: true,
        })
        .await
        .unwrap()
        .into_inner()
        .points;
    let ids: Vec<&str> = got.iter().map(|point| point.id.as_str()).collect();
    assert_eq!(ids, vec!["p007", "p002"]);
    assert_eq!(got[0].text, "text of p007");
    assert_eq!(got[0].payload, payload(corpus_payload(7)));
    let length: f32 = got[0]
        .vector
        .iter()
        .map(|value| value * value)
        .sum::<f32>()
        .sqrt();
    assert_eq!(got[0].vector.len(), 8);
    assert!(
        (length - 1.0).abs() < 1e-5,
        "cosine vectors are kept unit length"
    );

    // German points by id, 7 to a page.
    let filter = pb::Filter {
        must: vec![equals("lang", json!("de"))],
        ..pb::Filter::default()
    };
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .scroll_points(pb::ScrollPointsRequest {
                collection: "docs".to_string(),
                filter: Some(filter.clone()),
                limit: 7,
                page_token: page_token.clone(),
                with_payload: false,
                with_vectors: false,
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page
            .points
            .iter()
            .all(|point| point.payload.is_none() && point.vector.is_empty()));
        seen.extend(page.points.into_iter().map(|point| point.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let expected: Vec<String> = (0..60)
        .filter(|n| n % 3 == 1)
        .map(|n| format!("p{n:03}"))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);

    let unfiltered = client
        .scroll_points(pb::ScrollPointsRequest {
            collection: "docs".to_string(),
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unfiltered.points.len(), 60);
    assert!(unfiltered.next_page_token.is_empty());

    for (case, request, needle) in [
        (
            "forged token",
            pb::ScrollPointsRequest {
                collection: "docs".to_string(),
                page_token: "zz".to_string(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            "limit",
            pb::ScrollPointsRequest {
                collection: "docs".to_string(),
                limit: 1001,
                ..Default::default()
            },
            "limit",
        ),
    ] {
        assert_status(
            case,
            client.scroll_points(request).await,
            Code::InvalidArgument,
            &[needle],
        );
    }
    assert_status(
        "no ids",
        client
            .get_points(pb::GetPointsRequest {
                collection: "docs".to_string(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["field `ids`"],
    );
    assert_status(
        "unknown collection",
        client
            .count_points(pb::CountPointsRequest {
                collection: "nope".to_string(),
                filter: None,
            })
            .await,
        Code::NotFound,
        &["nope"],
    );
    server.stop().await;
}

#[tokio::test]
async fn search_takes_ef_and_returns_vectors_on_request() {
    let database = TestDatabase::sqlite();
    let (server, mut client) = start_with_corpus(&database.url, 300).await;
    let query = pseudo_random_vectors(1, 8, 5).remove(0);
    let exact = {
        let exact_server = VectorIndex::start(&database.url, usize::MAX).await;
        let mut exact_client = exact_server.client.clone();
        let ids = search_ids(&mut exact_client, vector_search("docs", query.clone(), 10)).await;
        exact_server.stop().await;
        ids
    };
    let wide = pb::SearchRequest {
        ef: 512,
        with_vectors: true,
        ..vector_search("docs", query.clone(), 10)
    };
    let response = client.search(wide).await.unwrap().into_inner();
    let ids: Vec<String> = response
        .points
        .iter()
        .map(|point| point.id.clone())
        .collect();
    assert_eq!(
        ids, exact,
        "an ef above the collection's size searches it all"
    );
    assert!(response.points.iter().all(|point| point.vector.len() == 8));
    let plain = client
        .search(vector_search("docs", query.clone(), 10))
        .await
        .unwrap()
        .into_inner();
    assert!(plain.points.iter().all(|point| point.vector.is_empty()));
    assert_status(
        "ef",
        client
            .search(pb::SearchRequest {
                ef: 5000,
                ..vector_search("docs", query.clone(), 10)
            })
            .await,
        Code::InvalidArgument,
        &["field `ef`", "1..=4096"],
    );

    // A refused filter names its field and changes nothing.
    let before = count(&mut client, None).await;
    let bad_filter = pb::Filter {
        must: vec![equals("", json!(1))],
        ..pb::Filter::default()
    };
    assert_status(
        "empty key",
        client
            .search(pb::SearchRequest {
                filter: Some(bad_filter.clone()),
                ..vector_search("docs", query, 10)
            })
            .await,
        Code::InvalidArgument,
        &["filter.must[0].field.key"],
    );
    assert_status(
        "empty key in count",
        client
            .count_points(pb::CountPointsRequest {
                collection: "docs".to_string(),
                filter: Some(bad_filter),
            })
            .await,
        Code::InvalidArgument,
        &["filter.must[0].field.key"],
    );
    assert_eq!(count(&mut client, None).await, before);
    server.stop().await;
}

#[tokio::test]
async fn embed_gives_the_vectors_the_index_searches_with() {
    let database = TestDatabase::sqlite();
    let server = VectorIndex::start(&database.url, 0).await;
    let mut client = server.client.clone();
    create_notes_and_raw(&mut client).await;
    let texts = [
        "refunds take five days",
        "the office opens at nine",
        "cats sleep a lot",
    ];
    upsert(
        &mut client,
        "notes",
        texts
            .iter()
            .enumerate()
            .map(|(n, text)| text_point(&format!("n{n}"), text))
            .collect(),
    )
    .await;
    let embed = |collection: &str, embedder: &str, texts: Vec<String>| pb::EmbedRequest {
        collection: collection.to_string(),
        embedder: embedder.to_string(),
        texts,
    };
    let by_collection = client
        .embed(embed(
            "notes",
            "",
            vec!["when do refunds arrive".into(), "opening hours".into()],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_collection.embedder, "hashing");
    assert_eq!(by_collection.vectors.len(), 2);
    assert!(by_collection
        .vectors
        .iter()
        .all(|vector| vector.values.len() == by_collection.dimension as usize));
    let by_embedder = client
        .embed(embed(
            "",
            "hashing",
            vec!["when do refunds arrive".into(), "opening hours".into()],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_embedder.vectors, by_collection.vectors);

    // Searching with the embedded vector finds what searching by text finds.
    let by_text = search_ids(
        &mut client,
        pb::SearchRequest {
            collection: "notes".to_string(),
            text: "when do refunds arrive".to_string(),
            top_k: 3,
            ..Default::default()
        },
    )
    .await;
    let by_vector = search_ids(
        &mut client,
        vector_search("notes", by_collection.vectors[0].values.clone(), 3),
    )
    .await;
    assert_eq!(by_vector, by_text);

    for (case, request, code, needle) in [
        (
            "vectors only",
            embed("raw", "", vec!["x".into()]),
            Code::InvalidArgument,
            "field `collection`",
        ),
        (
            "unknown embedder",
            embed("", "bert", vec!["x".into()]),
            Code::InvalidArgument,
            "field `embedder`",
        ),
        (
            "both",
            embed("notes", "hashing", vec!["x".into()]),
            Code::InvalidArgument,
            "field `embedder`",
        ),
        (
            "neither",
            embed("", "", vec!["x".into()]),
            Code::InvalidArgument,
            "field `collection`",
        ),
        (
            "no texts",
            embed("notes", "", vec![]),
            Code::InvalidArgument,
            "field `texts`",
        ),
        (
            "unknown collection",
            embed("nope", "", vec!["x".into()]),
            Code::NotFound,
            "nope",
        ),
    ] {
        assert_status(case, client.embed(request).await, code, &[needle]);
    }

    // Token counts come from the same embedder, word by word; the errors
    // are Embed's.
    let counted = client
        .count_tokens(pb::CountTokensRequest {
            collection: "notes".to_string(),
            embedder: String::new(),
            texts: vec!["refunds  arrive\nin 5 days".into(), String::new()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counted.embedder, "hashing");
    let counts: Vec<Vec<u32>> = counted.texts.into_iter().map(|text| text.counts).collect();
    assert_eq!(counts, vec![vec![1, 1, 1, 1, 1], vec![]]);
    assert_eq!((counted.max_input_tokens, counted.special_tokens), (0, 0));
    assert_status(
        "count tokens of a vectors-only collection",
        client
            .count_tokens(pb::CountTokensRequest {
                collection: "raw".to_string(),
                embedder: String::new(),
                texts: vec!["x".into()],
            })
            .await,
        Code::InvalidArgument,
        &["field `collection`", "no embedder"],
    );
    assert_status(
        "count tokens of nothing",
        client
            .count_tokens(pb::CountTokensRequest {
                collection: String::new(),
                embedder: "hashing".to_string(),
                texts: Vec::new(),
            })
            .await,
        Code::InvalidArgument,
        &["field `texts`"],
    );
    server.stop().await;
}

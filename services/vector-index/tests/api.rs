//! The vector index through its gRPC API on port 0: collections, upserts,
//! searches (exact, graph, filtered, by text), input validation, restarts
//! on SQLite and on Postgres, and concurrent use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_proto::v1 as pb;
use keel_testkit::{assert_status, TestDatabase};
use keel_vector_index::Config;
use serde_json::json;
use tonic::Code;

mod common;

use common::*;

#[tokio::test]
async fn a_collection_naming_no_embedder_gets_the_default_and_none_means_vectors_only() {
    assert_eq!(Config::default().default_embedder, "minilm");
    let database = TestDatabase::sqlite();
    let server = VectorIndex::start(&database.url, 1000).await;
    let mut client = server.client.clone();
    // The test server's default is `hashing` (no model files here).
    let defaulted = client
        .create_collection(create_request("docs", 0, pb::Metric::Cosine, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(defaulted.embedder, "hashing");
    assert_eq!(defaulted.dimension, 384);
    upsert(
        &mut client,
        "docs",
        vec![text_point("a", "reset your password")],
    )
    .await;

    let vectors_only = client
        .create_collection(create_request("vectors", 3, pb::Metric::Cosine, "none"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(vectors_only.embedder, "");
    assert_eq!(vectors_only.dimension, 3);
    let text_search = client
        .search(pb::SearchRequest {
            collection: "vectors".to_string(),
            text: "password".to_string(),
            top_k: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(text_search.code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn collections_lifecycle() {
    let database = TestDatabase::sqlite();
    let server = VectorIndex::start(&database.url, 1000).await;
    let mut client = server.client.clone();

    let created = client
        .create_collection(create_request(
            "zeta",
            0,
            pb::Metric::Unspecified,
            "hashing",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.dimension, 384);
    assert_eq!(created.metric, pb::Metric::Cosine as i32);
    assert_eq!(created.embedder, "hashing");
    assert_eq!(
        created.hnsw,
        Some(pb::HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64
        })
    );
    assert_eq!(created.point_count, 0);
    assert!(created.created_at_ms > 0);

    let mut custom = create_request("alpha", 384, pb::Metric::L2, "hashing");
    custom.hnsw = Some(pb::HnswParams {
        m: 8,
        ef_construction: 0,
        ef_search: 100,
    });
    let alpha = client.create_collection(custom).await.unwrap().into_inner();
    assert_eq!(alpha.metric, pb::Metric::L2 as i32);
    assert_eq!(
        alpha.hnsw,
        Some(pb::HnswParams {
            m: 8,
            ef_construction: 200,
            ef_search: 100
        })
    );

    let duplicate = client
        .create_collection(create_request("zeta", 3, pb::Metric::Dot, "none"))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    upsert(
        &mut client,
        "zeta",
        vec![
            text_point("a", "reset your password"),
            text_point("b", "lunch menu"),
        ],
    )
    .await;
    let fetched = client
        .get_collection(pb::GetCollectionRequest {
            name: "zeta".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched.point_count, 2);
    assert_eq!(fetched.created_at_ms, created.created_at_ms);

    let listed = client
        .list_collections(pb::ListCollectionsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.collections.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["alpha", "zeta"]);

    client
        .drop_collection(pb::DropCollectionRequest {
            name: "zeta".into(),
        })
        .await
        .unwrap();
    let missing = client
        .get_collection(pb::GetCollectionRequest {
            name: "zeta".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("zeta"));
    let dropped_twice = client
        .drop_collection(pb::DropCollectionRequest {
            name: "zeta".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(dropped_twice.code(), Code::NotFound);
    let upsert_missing = client
        .upsert_points(pb::UpsertPointsRequest {
            collection: "zeta".into(),
            points: vec![text_point("a", "x")],
        })
        .await
        .unwrap_err();
    assert_eq!(upsert_missing.code(), Code::NotFound);

    // A collection recreated under the same name starts empty: the dropped
    // points are gone.
    client
        .create_collection(create_request("zeta", 0, pb::Metric::Cosine, "hashing"))
        .await
        .unwrap();
    assert_eq!(point_count(&mut client, "zeta").await, 0);
    let mut by_text = vector_search("zeta", Vec::new(), 10);
    by_text.text = "reset your password".into();
    assert!(search_ids(&mut client, by_text).await.is_empty());
    server.stop().await;

    // ... also after a restart.
    let server = VectorIndex::start(&database.url, 1000).await;
    let mut client = server.client.clone();
    assert_eq!(point_count(&mut client, "zeta").await, 0);
    assert_eq!(point_count(&mut client, "alpha").await, 0);
    server.stop().await;
}

#[tokio::test]
async fn create_rejects_bad_input_and_changes_nothing() {
    let database = TestDatabase::sqlite();
    let server = VectorIndex::start(&database.url, 1000).await;
    let mut client = server.client.clone();
    let with_hnsw = |m, ef_construction, ef_search| {
        let mut request = create_request("c", 3, pb::Metric::Dot, "none");
        request.hnsw = Some(pb::HnswParams {
            m,
            ef_construction,
            ef_search,
        });
        request
    };
    let cases = vec![
        (
            "empty name",
            create_request("", 3, pb::Metric::Dot, "none"),
            "name",
        ),
        (
            "bad name",
            create_request("-c", 3, pb::Metric::Dot, "none"),
            "name",
        ),
        (
            "long name",
            create_request(&"c".repeat(129), 3, pb::Metric::Dot, "none"),
            "name",
        ),
        (
            "no dimension",
            create_request("c", 0, pb::Metric::Dot, "none"),
            "dimension",
        ),
        (
            "huge dimension",
            create_request("c", 65_537, pb::Metric::Dot, "none"),
            "dimension",
        ),
        (
            "embedder mismatch",
            create_request("c", 100, pb::Metric::Dot, "hashing"),
            "dimension",
        ),
        (
            "unknown embedder",
            create_request("c", 0, pb::Metric::Dot, "bert"),
            "embedder",
        ),
        (
            "unknown metric",
            pb::CreateCollectionRequest {
                metric: 9,
                ..create_request("c", 3, pb::Metric::Dot, "none")
            },
            "metric",
        ),
        ("m too small", with_hnsw(1, 0, 0), "hnsw.m"),
        ("m too large", with_hnsw(129, 0, 0), "hnsw.m"),
        (
            "ef_construction",
            with_hnsw(0, 7, 0),
            "hnsw.ef_construction",
        ),
        ("ef_search", with_hnsw(0, 0, 4097), "hnsw.ef_search"),
    ];
    for (case, request, field) in cases {
        assert_status(
            case,
            client.create_collection(request).await,
            Code::InvalidArgument,
            &[&format!("field `{}`", field)],
        );
    }
    let unknown = client
        .create_collection(create_request("c", 0, pb::Metric::Dot, "bert"))
        .await
        .unwrap_err();
    assert!(
        unknown.message().contains("hashing"),
        "{}",
        unknown.message()
    );
    let listed = client
        .list_collections(pb::ListCollectionsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.collections.is_empty());
    // The edges of the ranges are accepted.
    client
        .create_collection(create_request("c", 65_536, pb::Metric::Dot, "none"))
        .await
        .unwrap();
    let mut edge = with_hnsw(128, 8, 4096);
    edge.name = "edge".into();
    client.create_collection(edge).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn upsert_rejects_bad_input_and_changes_nothing() {
    let database = TestDatabase::sqlite();
    let server = VectorIndex::start(&database.url, 1000).await;
    let mut client = server.client.clone();
    client
        .create_collection(create_request("c", 3, pb::Metric::Cosine, "none"))
        .await
        .unwrap();
    upsert(
        &mut client,
        "c",
        vec![vector_point("kept", vec![1.0, 0.0, 0.0], json!({"v": 1}))],
    )
    .await;

    let good = || vector_point("good", vec![0.0, 1.0, 0.0], json!({}));
    let request = |points: Vec<pb::Point>| pb::UpsertPointsRequest {
        collection: "c".into(),
        points,
    };
    let big_payload = json!({"blob": "x".repeat(64 * 1024)});
    let cases = vec![
        ("no points", request(vec![]), "points"),
        (
            "too many points",
            request(
                (0..1001)
                    .map(|n| vector_point(&format!("p{n}"), vec![1.0, 1.0, 1.0], json!({})))
                    .collect(),
            ),
            "points",
        ),
        (
            "empty id",
            request(vec![
                good(),
                vector_point("", vec![1.0, 0.0, 0.0], json!({})),
            ]),
            "points[1].id",
        ),
        (
            "long id",
            request(vec![
                good(),
                vector_point(&"i".repeat(257), vec![1.0, 0.0, 0.0], json!({})),
            ]),
            "points[1].id",
        ),
        (
            "duplicate id",
            request(vec![
                good(),
                vector_point("good", vec![1.0, 0.0, 0.0], json!({})),
            ]),
            "points[1].id",
        ),
        (
            "wrong dimension",
            request(vec![good(), vector_point("x", vec![1.0, 0.0], json!({}))]),
            "points[1].vector",
        ),
        (
            "non-finite value",
            request(vec![
                good(),
                vector_point("x", vec![1.0, f32::NAN, 0.0], json!({})),
            ]),
            "points[1].vector",
        ),
        (
            "zero vector under cosine",
            request(vec![
                good(),
                vector_point("x", vec![0.0, 0.0, 0.0], json!({})),
            ]),
            "points[1].vector",
        ),
        (
            "text without embedder",
            request(vec![good(), text_point("x", "some words")]),
            "points[1].vector",
        ),
        (
            "neither vector nor text",
            request(vec![good(), text_point("x", "")]),
            "points[1].vector",
        ),
        (
            "text too long",
            request(vec![good(), {
                let mut point = vector_point("x", vec![1.0, 0.0, 0.0], json!({}));
                point.text = "t".repeat(64 * 1024 + 1);
                point
            }]),
            "points[1].text",
        ),
        (
            "payload too large",
            request(vec![
                good(),
                vector_point("x", vec![1.0, 0.0, 0.0], big_payload),
            ]),
            "points[1].payload",
        ),
        (
            "bad collection name",
            pb::UpsertPointsRequest {
                collection: "no spaces".into(),
                points: vec![good()],
            },
            "collection",
        ),
    ];
    for (case, request, field) in cases {
        assert_status(
            case,
            client.upsert_points(request).await,
            Code::InvalidArgument,
            &[&format!("field `{}`", field)],
        );
    }
    let missing = client
        .upsert_points(pb::UpsertPointsRequest {
            collection: "missing".into(),
            points: vec![good()],
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    assert_eq!(point_count(&mut client, "c").await, 1);
    let ids = search_ids(&mut client, vector_search("c", vec![0.0, 1.0, 0.0], 10)).await;
    assert_eq!(ids, vec!["kept"]);
    server.stop().await;
}

#[tokio::test]
async fn search_and_delete_reject_bad_input() {
    let database = TestDatabase::sqlite();
    let server = VectorIndex::start(&database.url, 1000).await;
    let mut client = server.client.clone();
    client
        .create_collection(create_request("c", 3, pb::Metric::Cosine, "none"))
        .await
        .unwrap();
    upsert(
        &mut client,
        "c",
        vec![vector_point("kept", vec![1.0, 0.0, 0.0], json!({}))],
    )
    .await;

    let good = || vector_search("c", vec![1.0, 0.0, 0.0], 5);
    let cases = vec![
        (
            "both vector and text",
            pb::SearchRequest {
                text: "hello".into(),
                ..good()
            },
            "text",
        ),
        (
            "neither vector nor text",
            pb::SearchRequest {
                vector: Vec::new(),
                ..good()
            },
            "vector",
        ),
        (
            "top_k zero",
            pb::SearchRequest { top_k: 0, ..good() },
            "top_k",
        ),
        (
            "top_k too large",
            pb::SearchRequest {
                top_k: 1001,
                ..good()
            },
            "top_k",
        ),
        (
            "wrong dimension",
            pb::SearchRequest {
                vector: vec![1.0],
                ..good()
            },
            "vector",
        ),
        (
            "non-finite",
            pb::SearchRequest {
                vector: vec![1.0, f32::INFINITY, 0.0],
                ..good()
            },
            "vector",
        ),
        (
            "zero vector under cosine",
            pb::SearchRequest {
                vector: vec![0.0, 0.0, 0.0],
                ..good()
            },
            "vector",
        ),
        (
            "text without embedder",
            pb::SearchRequest {
                vector: Vec::new(),
                text: "hello".into(),
                ..good()
            },
            "text",
        ),
        (
            "bad collection name",
            pb::SearchRequest {
                collection: String::new(),
                ..good()
            },
            "collection",
        ),
    ];
    for (case, request, field) in cases {
        assert_status(
            case,
            client.search(request).await,
            Code::InvalidArgument,
            &[&format!("field `{}`", field)],
        );
    }
    let missing = client
        .search(pb::SearchRequest {
            collection: "missing".into(),
            ..good()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let delete = |ids: Vec<String>| pb::DeletePointsRequest {
        collection: "c".into(),
        ids,
    };
    let delete_cases = vec![
        ("no ids", delete(vec![]), "ids"),
        (
            "too many ids",
            delete((0..1001).map(|n| n.to_string()).collect()),
            "ids",
        ),
        (
            "empty id",
            delete(vec!["kept".into(), String::new()]),
            "ids[1]",
        ),
        (
            "long id",
            delete(vec!["kept".into(), "i".repeat(257)]),
            "ids[1]",
        ),
        (
            "bad collection name",
            pb::DeletePointsRequest {
                collection: "a/b".into(),
                ids: vec!["kept".into()],
            },
            "collection",
        ),
    ];
    for (case, request, field) in delete_cases {
        assert_status(
            case,
            client.delete_points(request).await,
            Code::InvalidArgument,
            &[&format!("field `{}`", field)],
        );
    }
    let missing = client
        .delete_points(pb::DeletePointsRequest {
            collection: "missing".into(),
            ids: vec!["kept".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(point_count(&mut client, "c").await, 1);
    server.stop().await;
}

#[tokio::test]
async fn upsert_replaces_and_delete_removes() {
    let database = TestDatabase::sqlite();
    let server = VectorIndex::start(&database.url, 0).await;
    let mut client = server.client.clone();
    client
        .create_collection(create_request("c", 2, pb::Metric::Dot, "none"))
        .await
        .unwrap();
    let upserted = upsert(
        &mut client,
        "c",
        vec![
            vector_point("a", vec![1.0, 0.0], json!({"version": 1})),
            vector_point("b", vec![0.5, 0.0], json!({"version": 1})),
            vector_point("c", vec![0.25, 0.0], json!({"version": 1})),
        ],
    )
    .await;
    assert_eq!(upserted, 3);

    // Replacing `c` makes it the best match; the old version never shows.
    upsert(
        &mut client,
        "c",
        vec![vector_point("c", vec![2.0, 0.0], json!({"version": 2}))],
    )
    .await;
    assert_eq!(point_count(&mut client, "c").await, 3);
    let response = client
        .search(vector_search("c", vec![1.0, 0.0], 10))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = response.points.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, vec!["c", "a", "b"]);
    let scores: Vec<f32> = response.points.iter().map(|p| p.score).collect();
    assert_eq!(scores, vec![2.0, 1.0, 0.5]);
    assert_eq!(response.points[0].payload, payload(json!({"version": 2})));
    assert_eq!(response.points[0].text, "text of c");

    let deleted = client
        .delete_points(pb::DeletePointsRequest {
            collection: "c".into(),
            ids: vec!["a".into(), "nope".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted, 1);
    assert_eq!(point_count(&mut client, "c").await, 2);
    let mut without_payload = vector_search("c", vec![1.0, 0.0], 10);
    without_payload.with_payload = false;
    let response = client.search(without_payload).await.unwrap().into_inner();
    let ids: Vec<&str> = response.points.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, vec!["c", "b"]);
    assert!(response.points.iter().all(|p| p.payload.is_none()));
    assert!(response.points.iter().all(|p| !p.text.is_empty()));

    // Deleting most points triggers a graph rebuild; results stay right.
    let many: Vec<pb::Point> = (0..40)
        .map(|n| vector_point(&format!("m{n:02}"), vec![n as f32, 1.0], json!({})))
        .collect();
    upsert(&mut client, "c", many).await;
    let doomed: Vec<String> = (0..35).map(|n| format!("m{n:02}")).collect();
    let deleted = client
        .delete_points(pb::DeletePointsRequest {
            collection: "c".into(),
            ids: doomed,
        })
        .await
        .unwrap()
        .into_inner()
        .deleted;
    assert_eq!(deleted, 35);
    let ids = search_ids(&mut client, vector_search("c", vec![1.0, 0.0], 3)).await;
    assert_eq!(ids, vec!["m39", "m38", "m37"]);
    assert_eq!(point_count(&mut client, "c").await, 7);
    server.stop().await;
}

#[tokio::test]
async fn text_points_are_embedded_and_searched_by_text() {
    let database = TestDatabase::sqlite();
    let server = VectorIndex::start(&database.url, 0).await;
    let mut client = server.client.clone();
    client
        .create_collection(create_request("docs", 0, pb::Metric::Cosine, "hashing"))
        .await
        .unwrap();
    upsert(
        &mut client,
        "docs",
        vec![
            text_point(
                "password",
                "To reset your password, open settings and choose reset password",
            ),
            text_point("lunch", "The cafeteria serves lunch at noon"),
            text_point("parking", "Parking permits are issued by the front desk"),
        ],
    )
    .await;
    let mut request = vector_search("docs", Vec::new(), 3);
    request.text = "how do I reset my password".into();
    let response = client.search(request).await.unwrap().into_inner();
    assert_eq!(response.points[0].id, "password");
    assert!(response.points[0].text.starts_with("To reset"));
    assert!(response.points[0].score > 0.0 && response.points[0].score <= 1.0 + 1e-6);
    for pair in response.points.windows(2) {
        assert!(pair[0].score >= pair[1].score);
    }
    // A text with no words embeds to zero, which has no cosine direction.
    assert_status(
        "text without words",
        client
            .upsert_points(pb::UpsertPointsRequest {
                collection: "docs".into(),
                points: vec![text_point("empty", "!!!")],
            })
            .await,
        Code::InvalidArgument,
        &[&format!("field `{}`", "points[0].text")],
    );
    server.stop().await;
}

#[tokio::test]
async fn filtered_search_never_returns_non_matching_points() {
    let database = TestDatabase::sqlite();
    let server = VectorIndex::start(&database.url, 0).await;
    let mut client = server.client.clone();
    client
        .create_collection(create_request("c", 8, pb::Metric::L2, "none"))
        .await
        .unwrap();
    let vectors = pseudo_random_vectors(400, 8, 7);
    let points: Vec<pb::Point> = vectors
        .iter()
        .enumerate()
        .map(|(n, vector)| {
            // "common" matches half the points (graph search), "rare" 1 in 50
            // (exact scan over the matches).
            vector_point(
                &format!("p{n:03}"),
                vector.clone(),
                json!({"common": n % 2, "rare": n % 50 == 0, "tag": format!("t{}", n % 3)}),
            )
        })
        .collect();
    upsert(&mut client, "c", points).await;
    let queries = pseudo_random_vectors(10, 8, 99);
    let filters = [
        json!({"common": 1}),
        json!({"common": 0, "tag": "t1"}),
        json!({"rare": true}),
        json!({"tag": "t4"}),
    ];
    let matching_counts: Vec<usize> = filters
        .iter()
        .map(|filter| {
            (0..400usize)
                .filter(|n| {
                    let point =
                        json!({"common": n % 2, "rare": n % 50 == 0, "tag": format!("t{}", n % 3)});
                    filter
                        .as_object()
                        .unwrap()
                        .iter()
                        .all(|(key, value)| &point[key] == value)
                })
                .count()
        })
        .collect();
    assert_eq!(matching_counts, vec![200, 66, 8, 0]);
    for query in &queries {
        for (filter, matching) in filters.iter().zip(&matching_counts) {
            for top_k in [1u32, 10, 50] {
                let mut request = vector_search("c", query.clone(), top_k);
                request.payload_equals = payload(filter.clone());
                let response = client.search(request).await.unwrap().into_inner();
                assert_eq!(
                    response.points.len(),
                    (top_k as usize).min(*matching),
                    "{filter}"
                );
                for point in &response.points {
                    let fields = &point.payload.as_ref().unwrap().fields;
                    for (key, expected) in filter.as_object().unwrap() {
                        assert_eq!(
                            fields.get(key),
                            Some(&keel_core::payload::json_to_value(expected))
                        );
                    }
                }
                for pair in response.points.windows(2) {
                    assert!(pair[0].score <= pair[1].score);
                }
            }
        }
    }
    server.stop().await;
}

/// Acknowledged points survive a restart and give the same top results;
/// deleted ones stay gone.
async fn restart_keeps_acknowledged_points(database_url: &str) {
    let server = VectorIndex::start(database_url, 0).await;
    let mut client = server.client.clone();
    // A beam wider than the collection makes the graph search exhaustive, so
    // the graph rebuilt without tombstones must give identical results.
    let mut vectors_request = create_request("vectors", 16, pb::Metric::Cosine, "none");
    vectors_request.hnsw = Some(pb::HnswParams {
        m: 0,
        ef_construction: 0,
        ef_search: 512,
    });
    client.create_collection(vectors_request).await.unwrap();
    client
        .create_collection(create_request("texts", 0, pb::Metric::Cosine, "hashing"))
        .await
        .unwrap();
    let vectors = pseudo_random_vectors(300, 16, 1);
    for (batch_number, batch) in vectors.chunks(100).enumerate() {
        let points = batch
            .iter()
            .enumerate()
            .map(|(n, vector)| {
                let number = batch_number * 100 + n;
                vector_point(
                    &format!("v{number:03}"),
                    vector.clone(),
                    json!({"group": number % 4}),
                )
            })
            .collect();
        upsert(&mut client, "vectors", points).await;
    }
    // Replace a few points and delete others before the restart.
    let replacements = pseudo_random_vectors(10, 16, 2)
        .into_iter()
        .enumerate()
        .map(|(n, vector)| vector_point(&format!("v{:03}", n * 7), vector, json!({"group": 9})))
        .collect();
    upsert(&mut client, "vectors", replacements).await;
    let deleted_ids: Vec<String> = (0..30).map(|n| format!("v{:03}", n * 10 + 1)).collect();
    client
        .delete_points(pb::DeletePointsRequest {
            collection: "vectors".into(),
            ids: deleted_ids.clone(),
        })
        .await
        .unwrap();
    upsert(
        &mut client,
        "texts",
        vec![
            text_point("t1", "reset your password in settings"),
            text_point("t2", "lunch is served at noon"),
            text_point("t3", "password rules require twelve characters"),
        ],
    )
    .await;

    let queries = pseudo_random_vectors(8, 16, 3);
    let mut requests = Vec::new();
    for query in &queries {
        requests.push(vector_search("vectors", query.clone(), 10));
        let mut filtered = vector_search("vectors", query.clone(), 5);
        filtered.payload_equals = payload(json!({"group": 9}));
        requests.push(filtered);
    }
    let mut by_text = vector_search("texts", Vec::new(), 3);
    by_text.text = "password".into();
    requests.push(by_text);

    let mut before = Vec::new();
    for request in &requests {
        before.push(client.search(request.clone()).await.unwrap().into_inner());
    }
    let count_before = point_count(&mut client, "vectors").await;
    assert_eq!(count_before, 270);
    server.stop().await;

    let server = VectorIndex::start(database_url, 0).await;
    let mut client = server.client.clone();
    assert_eq!(point_count(&mut client, "vectors").await, count_before);
    for (request, expected) in requests.iter().zip(&before) {
        let after = client.search(request.clone()).await.unwrap().into_inner();
        assert_eq!(&after, expected, "{request:?}");
        for point in &after.points {
            assert!(!deleted_ids.contains(&point.id));
        }
    }
    let filtered_hits = &before[1].points;
    assert_eq!(filtered_hits.len(), 5);
    assert_eq!(before[0].points.len(), 10);
    assert!(filtered_hits
        .iter()
        .all(|point| point.payload == payload(json!({"group": 9}))));
    server.stop().await;
}

#[tokio::test]
async fn restart_keeps_acknowledged_points_on_sqlite() {
    let database = TestDatabase::sqlite();
    restart_keeps_acknowledged_points(&database.url).await;
}

#[tokio::test]
async fn restart_keeps_acknowledged_points_on_postgres() {
    restart_keeps_acknowledged_points(&TestDatabase::postgres().await.url).await;
}

#[tokio::test]
async fn concurrent_searches_and_upserts() {
    let database = TestDatabase::sqlite();
    let server = VectorIndex::start(&database.url, 0).await;
    let mut client = server.client.clone();
    client
        .create_collection(create_request("c", 8, pb::Metric::Dot, "none"))
        .await
        .unwrap();
    let vectors = pseudo_random_vectors(200, 8, 5);
    let mut writers = Vec::new();
    for (batch_number, batch) in vectors.chunks(50).enumerate() {
        let mut writer = client.clone();
        let points: Vec<pb::Point> = batch
            .iter()
            .enumerate()
            .map(|(n, vector)| {
                vector_point(&format!("w{batch_number}-{n}"), vector.clone(), json!({}))
            })
            .collect();
        writers.push(tokio::spawn(async move {
            upsert(&mut writer, "c", points).await
        }));
    }
    let mut readers = Vec::new();
    for query in pseudo_random_vectors(8, 8, 6) {
        let mut reader = client.clone();
        readers.push(tokio::spawn(async move {
            let ids = search_ids(&mut reader, vector_search("c", query, 5)).await;
            assert!(ids.len() <= 5);
        }));
    }
    for writer in writers {
        assert_eq!(writer.await.unwrap(), 50);
    }
    for reader in readers {
        reader.await.unwrap();
    }
    assert_eq!(point_count(&mut client, "c").await, 200);
    let ids = search_ids(&mut client, vector_search("c", vec![1.0; 8], 20)).await;
    assert_eq!(ids.len(), 20);
    server.stop().await;
}

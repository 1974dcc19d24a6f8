//! `keel ingest` against a real vector index: a second ingest of the same
//! files embeds nothing; a changed file's chunks are replaced, a shortened
//! file's extra chunks and a removed file's chunks deleted; another
//! directory ingested into the same collection is left alone. (Point ids
//! are `<relative path>#<chunk>`: two directories holding the same
//! relative path would share ids.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use keel::cli::ingest::{ingest, ChunkOptions, IngestSummary};
use keel::cli::ServiceUrls;
use keel_proto::v1 as pb;
use keel_testkit::server::Ports;
use keel_testkit::{TestDatabase, TestServer};

/// Each test paragraph is 15 words, a token each with the hashing
/// embedder: one fits a passage, two never do.
const CHUNKS: ChunkOptions = ChunkOptions {
    chunk_tokens: Some(20),
    overlap_tokens: 0,
};

fn paragraphs(count: usize, word: &str) -> String {
    (0..count)
        .map(|n| format!("Paragraph {n} about {word}, long enough that two never share a chunk of twenty tokens."))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn summary_of(files: usize, unchanged_files: usize, chunks: usize, stale: usize) -> IngestSummary {
    IngestSummary {
        files,
        unchanged_files,
        chunks,
        stale_chunks_deleted: stale,
    }
}

/// A vector index on SQLite with the hashing embedder, and a `docs`
/// collection indexed on `source`.
async fn vector_index() -> (
    TestServer<keel_vector_index::Error>,
    ServiceUrls,
    TestDatabase,
) {
    let database = TestDatabase::sqlite();
    let config = keel_vector_index::Config {
        port: 0,
        database_url: database.url.clone(),
        default_embedder: "hashing".to_string(),
        ..keel_vector_index::Config::default()
    };
    let server = TestServer::start(Ports::GrpcOnly, |listeners, shutdown| {
        keel_vector_index::serve(
            config,
            keel_models::ModelCatalog::builtin(),
            listeners,
            shutdown,
        )
    })
    .await;
    let urls = ServiceUrls {
        registry: String::new(),
        serving: String::new(),
        vector_index: server.url(),
        feedback: String::new(),
        monitoring: String::new(),
        api_key: None,
        ca_cert: None,
    };
    urls.vector_index()
        .await
        .unwrap()
        .create_collection(pb::CreateCollectionRequest {
            name: "docs".to_string(),
            embedder: "hashing".to_string(),
            indexed_payload_keys: vec!["source".to_string()],
            ..Default::default()
        })
        .await
        .unwrap();
    (server, urls, database)
}

#[tokio::test]
async fn ingest_again_embeds_only_changes_and_deletes_what_is_stale() {
    let (server, urls, _database) = vector_index().await;
    let mut client = urls.vector_index().await.unwrap();
    let count = |client: &mut pb::vector_index_service_client::VectorIndexServiceClient<_>| {
        let mut client = client.clone();
        async move {
            client
                .count_points(pb::CountPointsRequest {
                    collection: "docs".to_string(),
                    filter: None,
                })
                .await
                .unwrap()
                .into_inner()
                .count
        }
    };

    let corpus = tempfile::tempdir().unwrap();
    write(corpus.path(), "a.md", &paragraphs(3, "apples"));
    write(corpus.path(), "b.md", &paragraphs(1, "bananas"));
    write(corpus.path(), "sub/c.txt", &paragraphs(2, "cherries"));
    let first = ingest(&urls, corpus.path(), "docs", CHUNKS).await.unwrap();
    assert_eq!(first, summary_of(3, 0, 6, 0));
    assert_eq!(count(&mut client).await, 6);

    let again = ingest(&urls, corpus.path(), "docs", CHUNKS).await.unwrap();
    assert_eq!(again, summary_of(3, 3, 0, 0));
    assert_eq!(count(&mut client).await, 6);

    // Another directory in the same collection, then changes to the first.
    let other = tempfile::tempdir().unwrap();
    write(other.path(), "z.md", &paragraphs(1, "figs"));
    let other_summary = ingest(&urls, other.path(), "docs", CHUNKS).await.unwrap();
    assert_eq!(other_summary, summary_of(1, 0, 1, 0));
    write(corpus.path(), "a.md", &paragraphs(1, "apricots"));
    write(corpus.path(), "b.md", &paragraphs(1, "blueberries"));
    std::fs::remove_file(corpus.path().join("sub/c.txt")).unwrap();
    let changed = ingest(&urls, corpus.path(), "docs", CHUNKS).await.unwrap();
    // a.md: 1 chunk (its 2 extra deleted); b.md replaced; c.txt's 2 gone.
    assert_eq!(changed, summary_of(2, 0, 2, 4));
    // The other directory's z.md is not this ingest's to delete.
    assert_eq!(count(&mut client).await, 3);
    let points = client
        .get_points(pb::GetPointsRequest {
            collection: "docs".to_string(),
            ids: vec![
                "a.md#0".to_string(),
                "b.md#0".to_string(),
                "z.md#0".to_string(),
            ],
            with_payload: false,
            with_vectors: false,
        })
        .await
        .unwrap()
        .into_inner()
        .points;
    assert!(points[0].text.contains("apricots"), "{}", points[0].text);
    assert!(points[1].text.contains("blueberries"), "{}", points[1].text);
    assert!(points[2].text.contains("figs"), "{}", points[2].text);
    drop(client);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn html_pages_become_passages_that_start_with_their_headings() {
    let (server, urls, _database) = vector_index().await;
    let corpus = tempfile::tempdir().unwrap();
    let paragraph = |word: &str| format!("<p>{}</p>", vec![word; 30].join(" "));
    let page = format!(
        "<html><body><nav>Home | Library</nav><div role=\"main\"><h1>Refunds<a class=\"headerlink\">¶</a></h1>{}<h2>Annual plans</h2>{}{}</div><footer>(c)</footer></body></html>",
        paragraph("intro"),
        paragraph("annual"),
        paragraph("window")
    );
    write(corpus.path(), "guide/refunds.html", &page);
    let options = ChunkOptions {
        chunk_tokens: Some(40),
        overlap_tokens: 5,
    };
    let summary = ingest(&urls, corpus.path(), "docs", options).await.unwrap();
    // The introduction; the two 30-word paragraphs of "Annual plans"
    // under a 4-token heading path: 36 words each.
    assert_eq!(summary, summary_of(1, 0, 3, 0));
    let points = urls
        .vector_index()
        .await
        .unwrap()
        .get_points(pb::GetPointsRequest {
            collection: "docs".to_string(),
            ids: (0..3).map(|n| format!("guide/refunds.html#{n}")).collect(),
            with_payload: true,
            with_vectors: false,
        })
        .await
        .unwrap()
        .into_inner()
        .points;
    let texts: Vec<&str> = points.iter().map(|point| point.text.as_str()).collect();
    assert!(texts[0].starts_with("Refunds\n\nintro intro"), "{texts:?}");
    assert!(
        texts[1].starts_with("Refunds > Annual plans\n\nannual"),
        "{texts:?}"
    );
    assert!(
        texts[2].starts_with("Refunds > Annual plans\n\nwindow"),
        "{texts:?}"
    );
    assert!(texts
        .iter()
        .all(|text| !text.contains("Home") && !text.contains('¶')));
    let payload =
        keel_core::payload::struct_to_json("payload", points[1].payload.as_ref().unwrap()).unwrap();
    assert_eq!(payload["section"], "Refunds > Annual plans");
    assert_eq!(payload["source"], "guide/refunds.html");
    assert_eq!(payload["chunk_count"], 3);
    server.stop().await.unwrap();
}

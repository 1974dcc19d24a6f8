//! `keel ingest` against a real vector index: a second ingest of the same
//! files embeds nothing; a changed file's chunks are replaced, a shortened
//! file's extra chunks and a removed file's chunks deleted; another
//! directory ingested into the same collection is left alone. (Point ids
//! are `<relative path>#<chunk>`: two directories holding the same
//! relative path would share ids.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use keel::cli::ingest::{ingest, IngestSummary};
use keel::cli::ServiceUrls;
use keel_proto::v1 as pb;
use keel_testkit::server::Ports;
use keel_testkit::{TestDatabase, TestServer};

const CHUNK_CHARS: usize = 100;

fn paragraphs(count: usize, word: &str) -> String {
    (0..count)
        .map(|n| format!("Paragraph {n} about {word}, long enough that two never share a chunk of a hundred characters."))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn summary(files: usize, unchanged_files: usize, chunks: usize, stale: usize) -> IngestSummary {
    IngestSummary {
        files,
        unchanged_files,
        chunks,
        stale_chunks_deleted: stale,
    }
}

#[tokio::test]
async fn ingest_again_embeds_only_changes_and_deletes_what_is_stale() {
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
    };
    let mut client = urls.vector_index().await.unwrap();
    client
        .create_collection(pb::CreateCollectionRequest {
            name: "docs".to_string(),
            embedder: "hashing".to_string(),
            indexed_payload_keys: vec!["source".to_string()],
            ..Default::default()
        })
        .await
        .unwrap();
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
    let first = ingest(&urls, corpus.path(), "docs", CHUNK_CHARS)
        .await
        .unwrap();
    assert_eq!(first, summary(3, 0, 6, 0));
    assert_eq!(count(&mut client).await, 6);

    let again = ingest(&urls, corpus.path(), "docs", CHUNK_CHARS)
        .await
        .unwrap();
    assert_eq!(again, summary(3, 3, 0, 0));
    assert_eq!(count(&mut client).await, 6);

    // Another directory in the same collection, then changes to the first.
    let other = tempfile::tempdir().unwrap();
    write(other.path(), "z.md", &paragraphs(1, "figs"));
    let other_summary = ingest(&urls, other.path(), "docs", CHUNK_CHARS)
        .await
        .unwrap();
    assert_eq!(other_summary, summary(1, 0, 1, 0));
    write(corpus.path(), "a.md", &paragraphs(1, "apricots"));
    write(corpus.path(), "b.md", &paragraphs(1, "blueberries"));
    std::fs::remove_file(corpus.path().join("sub/c.txt")).unwrap();
    let changed = ingest(&urls, corpus.path(), "docs", CHUNK_CHARS)
        .await
        .unwrap();
    // a.md: 1 chunk (its 2 extra deleted); b.md replaced; c.txt's 2 gone.
    assert_eq!(changed, summary(2, 0, 2, 4));
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

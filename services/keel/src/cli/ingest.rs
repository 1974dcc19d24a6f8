//! `keel ingest DIR --collection NAME`: every .md/.txt file under DIR,
//! chunked, upserted as text points (the collection embeds them); again
//! and again without duplicates or leftovers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_proto::v1::{
    condition, field_condition, Condition, DeletePointsRequest, FieldCondition, Filter, Point,
    ScrollPointsRequest, UpsertPointsRequest,
};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::cli::chunk::{chunk_document, DocumentChunk};
use crate::cli::error::rpc;
use crate::cli::{output, CliError, ServiceUrls};

/// Points per UpsertPoints call: small enough that one call stays short,
/// large enough that the round trips do not dominate.
const UPSERT_BATCH: usize = 64;

#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// The directory to walk for .md and .txt files
    pub dir: PathBuf,
    #[arg(long)]
    pub collection: String,
    /// The largest chunk, in characters (a longer word is kept whole)
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u32).range(20..=100_000))]
    pub chunk_chars: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSummary {
    /// Text files found under the directory.
    pub files: usize,
    /// Of those, files whose content (and chunk size) had not changed since
    /// the last ingest: not embedded again.
    pub unchanged_files: usize,
    /// Chunks upserted (embedded).
    pub chunks: usize,
    /// Chunks deleted: of removed files, or past the end of a file that
    /// shrank.
    pub stale_chunks_deleted: usize,
}

/// A text file found under the ingested directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Document {
    /// Relative to the ingested directory, `/`-separated on every platform.
    source: String,
    text: String,
}

/// What an earlier ingest of the same directory left for one source file.
#[derive(Debug, Default)]
struct StoredSource {
    /// The content hashes its chunks carry (one, unless an ingest was cut
    /// short half-way through the file).
    hashes: BTreeSet<String>,
    ids: Vec<String>,
}

/// Upload calls in flight at once: the next batch travels while the
/// vector index embeds the one before, so the embedder is the bound.
const PIPELINE_DEPTH: usize = 2;
/// Ids per DeletePoints call.
const DELETE_BATCH: usize = 1000;
/// Points per ScrollPoints page.
const SCROLL_PAGE: u32 = 1000;

pub async fn run(urls: &ServiceUrls, args: IngestArgs) -> Result<(), CliError> {
    let summary = ingest(urls, &args.dir, &args.collection, args.chunk_chars as usize).await?;
    output::ingested(&args.collection, &summary);
    Ok(())
}

/// Ingests `dir` into `collection`, idempotently: a file whose content
/// hash matches what the last ingest of this directory stored is skipped,
/// a changed file's chunks are replaced, and the chunks of removed files
/// (and past the end of shortened ones) are deleted. Points from other
/// directories are left alone: each chunk records the directory it came
/// from.
pub async fn ingest(
    urls: &ServiceUrls,
    dir: &Path,
    collection: &str,
    chunk_chars: usize,
) -> Result<IngestSummary, CliError> {
    let root = dir.to_path_buf();
    let ingest_root = std::fs::canonicalize(dir)
        .map_err(CliError::io(dir))?
        .display()
        .to_string();
    // Walking and reading are blocking file work.
    let documents = tokio::task::spawn_blocking(move || read_documents(&root))
        .await
        .map_err(|error| CliError::io(dir)(std::io::Error::other(error)))??;
    if documents.is_empty() {
        return Err(CliError::Invalid(format!(
            "{}: no .md or .txt files to ingest",
            dir.display()
        )));
    }
    let mut client = urls.vector_index().await?;
    let mut stored = stored_sources(&mut client, collection, &ingest_root).await?;
    let mut upload = Vec::new();
    let mut stale = Vec::new();
    let mut unchanged_files = 0;
    for document in &documents {
        let hash = content_hash(&document.text, chunk_chars);
        let chunks = chunk_document(&document.source, &document.text, chunk_chars);
        if let Some(before) = stored.remove(&document.source) {
            let same = before.hashes.len() == 1
                && before.hashes.contains(&hash)
                && before.ids.len() == chunks.len();
            if same {
                unchanged_files += 1;
                continue;
            }
            let kept: BTreeSet<&str> = chunks.iter().map(|chunk| chunk.id.as_str()).collect();
            stale.extend(
                before
                    .ids
                    .into_iter()
                    .filter(|id| !kept.contains(id.as_str())),
            );
        }
        upload.extend(
            chunks
                .into_iter()
                .map(|chunk| point(&chunk, &hash, &ingest_root)),
        );
    }
    // Sources an earlier ingest of this directory stored that are gone.
    stale.extend(stored.into_values().flat_map(|before| before.ids));

    let progress = output::progress_bar(upload.len() as u64, "chunks");
    let uploader = client.clone();
    let mut uploads = futures::stream::iter(upload.chunks(UPSERT_BATCH).map(|batch| {
        let mut client = uploader.clone();
        let request = UpsertPointsRequest {
            collection: collection.to_string(),
            points: batch.to_vec(),
        };
        async move { client.upsert_points(request).await.map(|_| batch.len()) }
    }))
    .buffered(PIPELINE_DEPTH);
    while let Some(uploaded) = uploads.next().await {
        match uploaded {
            Ok(count) => progress.inc(count as u64),
            Err(status) => {
                progress.abandon();
                return Err(rpc("vector-index UpsertPoints")(status));
            }
        }
    }
    drop(uploads);
    progress.finish_and_clear();
    for batch in stale.chunks(DELETE_BATCH) {
        client
            .delete_points(DeletePointsRequest {
                collection: collection.to_string(),
                ids: batch.to_vec(),
            })
            .await
            .map_err(rpc("vector-index DeletePoints"))?;
    }
    Ok(IngestSummary {
        files: documents.len(),
        unchanged_files,
        chunks: upload.len(),
        stale_chunks_deleted: stale.len(),
    })
}

/// The sources an earlier ingest of `ingest_root` stored, with their chunk
/// ids and content hashes.
async fn stored_sources(
    client: &mut VectorIndexServiceClient<Channel>,
    collection: &str,
    ingest_root: &str,
) -> Result<BTreeMap<String, StoredSource>, CliError> {
    let same_root = Condition {
        condition: Some(condition::Condition::Field(FieldCondition {
            key: INGEST_ROOT.to_string(),
            predicate: Some(field_condition::Predicate::Equals(
                keel_core::payload::json_to_value(&serde_json::Value::from(ingest_root)),
            )),
        })),
    };
    let filter = Filter {
        must: vec![same_root],
        ..Filter::default()
    };
    let mut sources: BTreeMap<String, StoredSource> = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .scroll_points(ScrollPointsRequest {
                collection: collection.to_string(),
                filter: Some(filter.clone()),
                limit: SCROLL_PAGE,
                page_token,
                with_payload: true,
                with_vectors: false,
            })
            .await
            .map_err(rpc("vector-index ScrollPoints"))?
            .into_inner();
        for point in page.points {
            let payload = point
                .payload
                .map(|payload| keel_core::payload::struct_to_json("payload", &payload))
                .transpose()
                .map_err(|error| CliError::Invalid(error.to_string()))?
                .unwrap_or_default();
            let text = |key: &str| {
                payload
                    .get(key)
                    .and_then(|value| value.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let entry = sources.entry(text(SOURCE)).or_default();
            entry.hashes.insert(text(CONTENT_HASH));
            entry.ids.push(point.id);
        }
        if page.next_page_token.is_empty() {
            return Ok(sources);
        }
        page_token = page.next_page_token;
    }
}

/// Identifies a file's content and how it was chunked: SHA-256 of both.
fn content_hash(text: &str, chunk_chars: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update((chunk_chars as u64).to_le_bytes());
    hasher.update(text.as_bytes());
    hex::encode(hasher.finalize())
}

const SOURCE: &str = "source";
const CHUNK: &str = "chunk";
const CONTENT_HASH: &str = "content_hash";
const INGEST_ROOT: &str = "ingest_root";

fn point(chunk: &DocumentChunk, content_hash: &str, ingest_root: &str) -> Point {
    let mut payload = serde_json::Map::new();
    payload.insert(
        SOURCE.to_string(),
        serde_json::Value::from(chunk.source.clone()),
    );
    payload.insert(CHUNK.to_string(), serde_json::Value::from(chunk.index));
    payload.insert(
        CONTENT_HASH.to_string(),
        serde_json::Value::from(content_hash),
    );
    payload.insert(
        INGEST_ROOT.to_string(),
        serde_json::Value::from(ingest_root),
    );
    Point {
        id: chunk.id.clone(),
        vector: Vec::new(),
        text: chunk.text.clone(),
        payload: Some(keel_core::payload::json_to_struct(&payload)),
    }
}

/// The .md and .txt files under `root` (hidden entries skipped), sorted by
/// relative path so ingesting twice sends the same points in the same order.
fn read_documents(root: &Path) -> Result<Vec<Document>, CliError> {
    let mut paths = Vec::new();
    collect_text_files(root, &mut paths)?;
    let mut documents = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(CliError::io(&path))?;
        let relative = path.strip_prefix(root).unwrap_or(&path);
        let components: Vec<String> = relative
            .components()
            .map(|component| component.as_os_str().to_string_lossy().into_owned())
            .collect();
        documents.push(Document {
            source: components.join("/"),
            text,
        });
    }
    documents.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(documents)
}

fn collect_text_files(dir: &Path, paths: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let entries = std::fs::read_dir(dir).map_err(CliError::io(dir))?;
    for entry_result in entries {
        let entry = entry_result.map_err(CliError::io(dir))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let file_type = entry.file_type().map_err(CliError::io(&path))?;
        if file_type.is_dir() {
            collect_text_files(&path, paths)?;
            continue;
        }
        if is_text_file(&path) {
            paths.push(path);
        }
    }
    Ok(())
}

fn is_text_file(path: &Path) -> bool {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    matches!(extension.as_deref(), Some("md" | "txt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_markdown_and_text_files_with_relative_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("guides/billing")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("b.md"), "bee").unwrap();
        std::fs::write(dir.path().join("a.TXT"), "ay").unwrap();
        std::fs::write(dir.path().join("guides/billing/refunds.md"), "refunds").unwrap();
        std::fs::write(dir.path().join("image.png"), "not text").unwrap();
        std::fs::write(dir.path().join(".git/notes.md"), "hidden").unwrap();

        let documents = read_documents(dir.path()).unwrap();
        let sources: Vec<&str> = documents
            .iter()
            .map(|document| document.source.as_str())
            .collect();
        assert_eq!(sources, ["a.TXT", "b.md", "guides/billing/refunds.md"]);
        assert_eq!(documents[2].text, "refunds");
    }

    #[test]
    fn a_missing_directory_names_the_path() {
        let error = read_documents(Path::new("/nonexistent/corpus")).unwrap_err();
        assert!(
            error.to_string().starts_with("/nonexistent/corpus: "),
            "{error}"
        );
    }

    #[test]
    fn points_carry_source_and_chunk_in_their_payload() {
        let chunk = DocumentChunk {
            id: "faq/refunds.md#2".to_string(),
            source: "faq/refunds.md".to_string(),
            index: 2,
            text: "The refund window is 30 days.".to_string(),
        };
        let point = point(&chunk, "abc", "/srv/corpus");
        assert_eq!(point.id, "faq/refunds.md#2");
        assert!(point.vector.is_empty());
        let payload =
            keel_core::payload::struct_to_json("payload", point.payload.as_ref().unwrap()).unwrap();
        assert_eq!(
            serde_json::Value::Object(payload),
            serde_json::json!({
                "source": "faq/refunds.md",
                "chunk": 2,
                "content_hash": "abc",
                "ingest_root": "/srv/corpus"
            })
        );
    }

    #[test]
    fn the_sample_corpus_chunks_within_bounds() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/corpus");
        let documents = read_documents(&corpus).unwrap();
        assert!(
            (6..=10).contains(&documents.len()),
            "{} documents",
            documents.len()
        );
        for document in &documents {
            let words = document.text.split_whitespace().count();
            assert!(
                (150..=400).contains(&words),
                "{}: {words} words",
                document.source
            );
            for chunk in chunk_document(&document.source, &document.text, 800) {
                assert!(chunk.text.chars().count() <= 800, "{}", chunk.id);
            }
        }
    }
}

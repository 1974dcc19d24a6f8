//! `keel ingest DIR --collection NAME`: every Markdown, text and HTML file
//! under DIR, cut into passages by the collection's embedder's tokens and
//! upserted as text points (the collection embeds them); again and again
//! without duplicates or leftovers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use keel_core::channel::ServiceChannel;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_proto::v1::{DeletePointsRequest, Point, UpsertPointsRequest};
use sha2::{Digest, Sha256};

use crate::cli::chunk::{chunk_document, ChunkBudget, DocumentChunk};
use crate::cli::documents::{read_documents, Document};
use crate::cli::error::rpc;
use crate::cli::scroll::{for_each_point, payload_equals, payload_json};
use crate::cli::sections::Section;
use crate::cli::token_counts::{count_section_tokens, embedder_window, EmbedderWindow};
use crate::cli::{output, CliError, ServiceUrls};

/// Points per UpsertPoints call: small enough that one call stays short,
/// large enough that the round trips do not dominate.
const UPSERT_BATCH: usize = 64;

#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// The directory to walk for .md, .txt and .html files
    pub dir: PathBuf,
    #[arg(long)]
    pub collection: String,
    /// The largest passage in the embedder's tokens, its heading included;
    /// default: all the embedder reads of one text
    #[arg(long, value_parser = clap::value_parser!(u32).range(16..=100_000))]
    pub chunk_tokens: Option<u32>,
    /// Tokens a passage repeats from the one before when a paragraph is
    /// cut in the middle
    #[arg(long, default_value_t = DEFAULT_OVERLAP_TOKENS, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub overlap_tokens: u32,
}

/// Passage size when the embedder knows of no window.
pub const DEFAULT_CHUNK_TOKENS: usize = 256;
pub const DEFAULT_OVERLAP_TOKENS: u32 = 32;
/// Changes whenever the same file and options would be cut differently,
/// so that an ingest after an upgrade re-embeds what it would now cut
/// otherwise.
const CHUNKER_VERSION: u32 = 2;

/// How `keel ingest` cuts documents into passages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// `None`: the embedder's window.
    pub chunk_tokens: Option<usize>,
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> ChunkOptions {
        ChunkOptions {
            chunk_tokens: None,
            overlap_tokens: DEFAULT_OVERLAP_TOKENS as usize,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSummary {
    /// Documents found under the directory.
    pub files: usize,
    /// Of those, files whose content (and chunking) had not changed since
    /// the last ingest: not embedded again.
    pub unchanged_files: usize,
    /// Chunks upserted (embedded).
    pub chunks: usize,
    /// Chunks deleted: of removed files, or past the end of a file that
    /// shrank.
    pub stale_chunks_deleted: usize,
}

/// What an earlier ingest of the same directory left for one source file.
#[derive(Debug, Default)]
struct StoredSource {
    /// The content hashes its chunks carry (one, unless an ingest was cut
    /// short half-way through the file).
    hashes: BTreeSet<String>,
    /// How many chunks the file was cut into, as its chunks record it.
    chunk_count: u64,
    ids: Vec<String>,
}

/// Upload calls in flight at once: the next batch travels while the
/// vector index embeds the one before, so the embedder is the bound.
const PIPELINE_DEPTH: usize = 2;
/// Ids per DeletePoints call.
const DELETE_BATCH: usize = 1000;

pub async fn run(urls: &ServiceUrls, args: IngestArgs) -> Result<(), CliError> {
    let options = ChunkOptions {
        chunk_tokens: args.chunk_tokens.map(|tokens| tokens as usize),
        overlap_tokens: args.overlap_tokens as usize,
    };
    let summary = ingest(urls, &args.dir, &args.collection, options).await?;
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
    options: ChunkOptions,
) -> Result<IngestSummary, CliError> {
    let root = dir.to_path_buf();
    let ingest_root = std::fs::canonicalize(dir)
        .map_err(CliError::io(dir))?
        .display()
        .to_string();
    // Walking, reading and parsing are blocking work.
    let documents = tokio::task::spawn_blocking(move || read_documents(&root))
        .await
        .map_err(|error| CliError::io(dir)(std::io::Error::other(error)))??;
    if documents.is_empty() {
        return Err(CliError::Invalid(format!(
            "{}: no .md, .txt or .html files to ingest",
            dir.display()
        )));
    }
    let mut client = urls.vector_index().await?;
    let budget = chunk_budget(embedder_window(&mut client, collection).await?, options)?;
    let mut stored = stored_sources(&mut client, collection, &ingest_root).await?;
    let mut changed: Vec<(&Document, String)> = Vec::new();
    let mut replaced: Vec<StoredSource> = Vec::new();
    for document in &documents {
        let hash = content_hash(&document.text, budget);
        match stored.remove(&document.source) {
            Some(before)
                if before.hashes.len() == 1
                    && before.hashes.contains(&hash)
                    && before.ids.len() as u64 == before.chunk_count => {}
            Some(before) => {
                replaced.push(before);
                changed.push((document, hash));
            }
            None => changed.push((document, hash)),
        }
    }
    let unchanged_files = documents.len() - changed.len();

    let sections: Vec<&[Section]> = changed
        .iter()
        .map(|(document, _)| document.sections.as_slice())
        .collect();
    let tokens = count_section_tokens(&mut client, collection, &sections).await?;
    let mut upload = Vec::new();
    for (((document, hash), sections), tokens) in changed.iter().zip(&sections).zip(&tokens) {
        let chunks = chunk_document(&document.source, sections, tokens, budget);
        let chunk_count = chunks.len();
        upload.extend(
            chunks
                .iter()
                .map(|chunk| point(chunk, chunk_count, hash, &ingest_root)),
        );
    }
    // Ids an earlier ingest stored that this one does not write again: of
    // removed files, and past the end of shortened ones.
    let uploaded: BTreeSet<&str> = upload.iter().map(|point| point.id.as_str()).collect();
    let stale: Vec<String> = replaced
        .into_iter()
        .chain(stored.into_values())
        .flat_map(|before| before.ids)
        .filter(|id| !uploaded.contains(id.as_str()))
        .collect();

    upload_points(&client, collection, &upload).await?;
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

/// Passage size: as asked, within what the embedder reads of one text.
fn chunk_budget(window: EmbedderWindow, options: ChunkOptions) -> Result<ChunkBudget, CliError> {
    let readable = window
        .max_input_tokens
        .map(|tokens| tokens.saturating_sub(window.special_tokens));
    let max_tokens = match (options.chunk_tokens, readable) {
        (Some(asked), Some(readable)) if asked > readable => {
            return Err(CliError::Invalid(format!(
                "--chunk-tokens {asked} is more than embedder `{}` reads of one text ({readable} tokens besides its special ones): the rest of each passage would not be embedded",
                window.embedder
            )))
        }
        (Some(asked), _) => asked,
        (None, Some(readable)) => readable,
        (None, None) => DEFAULT_CHUNK_TOKENS,
    };
    Ok(ChunkBudget {
        max_tokens,
        // An overlap of a whole passage would never move forward.
        overlap_tokens: options.overlap_tokens.min(max_tokens / 2),
    })
}

/// Uploads `points` in batches, `PIPELINE_DEPTH` calls in flight, with a
/// progress bar in chunks per second.
async fn upload_points(
    client: &VectorIndexServiceClient<ServiceChannel>,
    collection: &str,
    points: &[Point],
) -> Result<(), CliError> {
    let progress = output::progress_bar(points.len() as u64, "chunks");
    let mut uploads = futures::stream::iter(points.chunks(UPSERT_BATCH).map(|batch| {
        let mut client = client.clone();
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
    progress.finish_and_clear();
    Ok(())
}

/// The sources an earlier ingest of `ingest_root` stored, with their chunk
/// ids and content hashes.
async fn stored_sources(
    client: &mut VectorIndexServiceClient<ServiceChannel>,
    collection: &str,
    ingest_root: &str,
) -> Result<BTreeMap<String, StoredSource>, CliError> {
    let mut sources: BTreeMap<String, StoredSource> = BTreeMap::new();
    let filter = payload_equals(INGEST_ROOT, ingest_root);
    for_each_point(client, collection, Some(filter), true, |point| {
        let payload = payload_json(&point)?;
        let text = |key: &str| {
            payload
                .get(key)
                .and_then(|value| value.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let entry = sources.entry(text(SOURCE)).or_default();
        entry.hashes.insert(text(CONTENT_HASH));
        let chunk_count = payload.get(CHUNK_COUNT).and_then(|value| value.as_u64());
        entry.chunk_count = entry.chunk_count.max(chunk_count.unwrap_or(0));
        entry.ids.push(point.id);
        Ok(())
    })
    .await?;
    Ok(sources)
}

/// Identifies a file's content and how it was cut: SHA-256 of both.
fn content_hash(text: &str, budget: ChunkBudget) -> String {
    let mut hasher = Sha256::new();
    hasher.update(CHUNKER_VERSION.to_le_bytes());
    hasher.update((budget.max_tokens as u64).to_le_bytes());
    hasher.update((budget.overlap_tokens as u64).to_le_bytes());
    hasher.update(text.as_bytes());
    hex::encode(hasher.finalize())
}

/// The payload key of a passage's document, relative to the ingested
/// directory.
pub const SOURCE: &str = "source";
const CHUNK: &str = "chunk";
const CHUNK_COUNT: &str = "chunk_count";
const SECTION: &str = "section";
const CONTENT_HASH: &str = "content_hash";
const INGEST_ROOT: &str = "ingest_root";

fn point(
    chunk: &DocumentChunk,
    chunk_count: usize,
    content_hash: &str,
    ingest_root: &str,
) -> Point {
    let payload = serde_json::json!({
        SOURCE: chunk.source,
        CHUNK: chunk.index,
        CHUNK_COUNT: chunk_count,
        SECTION: chunk.section,
        CONTENT_HASH: content_hash,
        INGEST_ROOT: ingest_root,
    });
    let serde_json::Value::Object(payload) = payload else {
        unreachable!("a JSON object literal")
    };
    Point {
        id: chunk.id.clone(),
        vector: Vec::new(),
        text: chunk.text.clone(),
        payload: Some(keel_core::payload::json_to_struct(&payload)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_carry_source_section_and_chunk_in_their_payload() {
        let chunk = DocumentChunk {
            id: "faq/refunds.md#2".to_string(),
            source: "faq/refunds.md".to_string(),
            index: 2,
            section: "FAQ > Refunds".to_string(),
            text: "FAQ > Refunds\n\nThe refund window is 30 days.".to_string(),
        };
        let point = point(&chunk, 3, "abc", "/srv/corpus");
        assert_eq!(point.id, "faq/refunds.md#2");
        assert!(point.vector.is_empty());
        let payload =
            keel_core::payload::struct_to_json("payload", point.payload.as_ref().unwrap()).unwrap();
        assert_eq!(
            serde_json::Value::Object(payload),
            serde_json::json!({
                "source": "faq/refunds.md",
                "chunk": 2,
                "chunk_count": 3,
                "section": "FAQ > Refunds",
                "content_hash": "abc",
                "ingest_root": "/srv/corpus"
            })
        );
    }

    #[test]
    fn the_budget_fills_the_window_and_never_passes_it() {
        let minilm = EmbedderWindow {
            embedder: "minilm".to_string(),
            max_input_tokens: Some(256),
            special_tokens: 2,
        };
        let budget = chunk_budget(minilm.clone(), ChunkOptions::default()).unwrap();
        assert_eq!(budget.max_tokens, 254);
        assert_eq!(budget.overlap_tokens, DEFAULT_OVERLAP_TOKENS as usize);
        let asked = ChunkOptions {
            chunk_tokens: Some(100),
            overlap_tokens: 80,
        };
        assert_eq!(
            chunk_budget(minilm.clone(), asked).unwrap(),
            ChunkBudget {
                max_tokens: 100,
                overlap_tokens: 50
            }
        );
        let too_big = ChunkOptions {
            chunk_tokens: Some(300),
            ..ChunkOptions::default()
        };
        let error = chunk_budget(minilm, too_big).unwrap_err().to_string();
        assert!(
            error.contains("--chunk-tokens 300") && error.contains("254"),
            "{error}"
        );
        let unlimited = EmbedderWindow {
            embedder: "hashing".to_string(),
            max_input_tokens: None,
            special_tokens: 0,
        };
        let budget = chunk_budget(unlimited, ChunkOptions::default()).unwrap();
        assert_eq!(budget.max_tokens, DEFAULT_CHUNK_TOKENS);
    }

    #[test]
    fn the_hash_changes_with_the_text_and_the_cut() {
        let budget = ChunkBudget {
            max_tokens: 254,
            overlap_tokens: 32,
        };
        let base = content_hash("text", budget);
        assert_eq!(base, content_hash("text", budget));
        assert_ne!(base, content_hash("text!", budget));
        let smaller = ChunkBudget {
            max_tokens: 200,
            ..budget
        };
        assert_ne!(base, content_hash("text", smaller));
    }
}

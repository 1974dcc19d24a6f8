//! `keel ingest DIR --collection NAME`: every .md/.txt file under DIR,
//! chunked, upserted as text points (the collection embeds them).

use std::path::{Path, PathBuf};

use keel_proto::v1::{Point, UpsertPointsRequest};

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
    pub files: usize,
    pub chunks: usize,
}

/// A text file found under the ingested directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Document {
    /// Relative to the ingested directory, `/`-separated on every platform.
    source: String,
    text: String,
}

pub async fn run(urls: &ServiceUrls, args: IngestArgs) -> Result<(), CliError> {
    let summary = ingest(urls, &args.dir, &args.collection, args.chunk_chars as usize).await?;
    output::ingested(&args.collection, summary.files, summary.chunks);
    Ok(())
}

pub async fn ingest(
    urls: &ServiceUrls,
    dir: &Path,
    collection: &str,
    chunk_chars: usize,
) -> Result<IngestSummary, CliError> {
    let root = dir.to_path_buf();
    // Walking, reading and chunking are blocking file work.
    let (files, chunks) = tokio::task::spawn_blocking(move || -> Result<_, CliError> {
        let documents = read_documents(&root)?;
        let mut chunks = Vec::new();
        for document in &documents {
            chunks.extend(chunk_document(
                &document.source,
                &document.text,
                chunk_chars,
            ));
        }
        Ok((documents.len(), chunks))
    })
    .await
    .map_err(|error| CliError::io(dir)(std::io::Error::other(error)))??;
    if files == 0 {
        return Err(CliError::Invalid(format!(
            "{}: no .md or .txt files to ingest",
            dir.display()
        )));
    }
    let mut client = urls.vector_index().await?;
    let progress = output::progress_bar(chunks.len() as u64, "chunks");
    for batch in chunks.chunks(UPSERT_BATCH) {
        let request = UpsertPointsRequest {
            collection: collection.to_string(),
            points: batch.iter().map(point).collect(),
        };
        let upserted = client.upsert_points(request).await;
        if let Err(status) = upserted {
            progress.abandon();
            return Err(rpc("vector-index UpsertPoints")(status));
        }
        progress.inc(batch.len() as u64);
    }
    progress.finish_and_clear();
    Ok(IngestSummary {
        files,
        chunks: chunks.len(),
    })
}

fn point(chunk: &DocumentChunk) -> Point {
    let mut payload = serde_json::Map::new();
    payload.insert(
        "source".to_string(),
        serde_json::Value::from(chunk.source.clone()),
    );
    payload.insert("chunk".to_string(), serde_json::Value::from(chunk.index));
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
        let point = point(&chunk);
        assert_eq!(point.id, "faq/refunds.md#2");
        assert!(point.vector.is_empty());
        let payload =
            keel_core::payload::struct_to_json("payload", point.payload.as_ref().unwrap()).unwrap();
        assert_eq!(
            serde_json::Value::Object(payload),
            serde_json::json!({"source": "faq/refunds.md", "chunk": 2})
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

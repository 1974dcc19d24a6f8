//! The documents under an ingested directory: which files count, and each
//! one read into sections by its kind.

use std::path::{Path, PathBuf};

use crate::cli::html_sections::html_sections;
use crate::cli::sections::{markdown_sections, plain_sections, Section};
use crate::cli::CliError;

/// A document found under the ingested directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Relative to the ingested directory, `/`-separated on every platform.
    pub source: String,
    /// The file as read: what its content hash is of.
    pub text: String,
    pub sections: Vec<Section>,
}

/// The kinds of file `keel ingest` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocumentKind {
    Markdown,
    Text,
    Html,
}

impl DocumentKind {
    fn of(path: &Path) -> Option<DocumentKind> {
        let extension = path
            .extension()
            .and_then(|extension| extension.to_str())?
            .to_ascii_lowercase();
        match extension.as_str() {
            "md" | "markdown" => Some(DocumentKind::Markdown),
            "txt" => Some(DocumentKind::Text),
            "html" | "htm" => Some(DocumentKind::Html),
            _ => None,
        }
    }

    fn sections(self, text: &str) -> Vec<Section> {
        match self {
            DocumentKind::Markdown => markdown_sections(text),
            DocumentKind::Text => plain_sections(text),
            DocumentKind::Html => html_sections(text),
        }
    }
}

/// The documents under `root` (hidden entries skipped), sorted by relative
/// path so ingesting twice sends the same points in the same order.
pub fn read_documents(root: &Path) -> Result<Vec<Document>, CliError> {
    let mut paths = Vec::new();
    collect_documents(root, &mut paths)?;
    let mut documents = Vec::with_capacity(paths.len());
    for (path, kind) in paths {
        let bytes = std::fs::read(&path).map_err(CliError::io(&path))?;
        // Pages in legacy encodings still read; an undecodable byte
        // becomes U+FFFD rather than failing the whole ingest.
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let relative = path.strip_prefix(root).unwrap_or(&path);
        let components: Vec<String> = relative
            .components()
            .map(|component| component.as_os_str().to_string_lossy().into_owned())
            .collect();
        documents.push(Document {
            source: components.join("/"),
            sections: kind.sections(&text),
            text,
        });
    }
    documents.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(documents)
}

fn collect_documents(dir: &Path, paths: &mut Vec<(PathBuf, DocumentKind)>) -> Result<(), CliError> {
    let entries = std::fs::read_dir(dir).map_err(CliError::io(dir))?;
    for entry_result in entries {
        let entry = entry_result.map_err(CliError::io(dir))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let file_type = entry.file_type().map_err(CliError::io(&path))?;
        if file_type.is_dir() {
            collect_documents(&path, paths)?;
            continue;
        }
        if let Some(kind) = DocumentKind::of(&path) {
            paths.push((path, kind));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_markdown_text_and_html_files_with_relative_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("guides/billing")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("b.md"), "# Bee\n\nbuzz").unwrap();
        std::fs::write(dir.path().join("a.TXT"), "ay").unwrap();
        std::fs::write(
            dir.path().join("guides/billing/refunds.html"),
            "<h1>Refunds</h1><p>30 days</p>",
        )
        .unwrap();
        std::fs::write(dir.path().join("image.png"), "not text").unwrap();
        std::fs::write(dir.path().join(".git/notes.md"), "hidden").unwrap();

        let documents = read_documents(dir.path()).unwrap();
        let sources: Vec<&str> = documents
            .iter()
            .map(|document| document.source.as_str())
            .collect();
        assert_eq!(sources, ["a.TXT", "b.md", "guides/billing/refunds.html"]);
        assert_eq!(documents[1].sections[0].heading(), "Bee");
        assert_eq!(documents[2].sections[0].heading(), "Refunds");
        assert_eq!(documents[2].sections[0].paragraphs, ["30 days"]);
        assert_eq!(documents[2].text, "<h1>Refunds</h1><p>30 days</p>");
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
    fn the_sample_corpus_has_headed_sections() {
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
            assert!(
                document
                    .sections
                    .iter()
                    .all(|section| !section.headings.is_empty()),
                "{}: text before its first heading",
                document.source
            );
        }
    }
}

//! The examples an evaluation run asks: a JSONL file, one example per line,
//! `{"question", "reference"?, "expected_sources"?, "pattern"?}` — which is
//! also what the feedback service's EVAL export writes (its other fields are
//! ignored) — and the SHA-256 that pins exactly which lines were used.

use std::path::Path;

use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::cli::CliError;

/// One example, as read.
#[derive(Debug, Clone)]
pub struct Example {
    /// The line's position among the examples, from 0.
    pub index: u32,
    pub question: String,
    /// `None`: no reference answer (scorers that need one skip it).
    pub reference: Option<String>,
    /// Passage ids that answer the question; empty: unknown.
    pub expected_sources: Vec<String>,
    /// A regex the answer should match, for the `regex` scorer.
    pub pattern: Option<Regex>,
}

#[derive(Debug, Deserialize)]
struct ExampleLine {
    question: String,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    expected_sources: Vec<String>,
    #[serde(default)]
    pattern: Option<String>,
}

/// A dataset file's examples and identity.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The file's name, as the run records it.
    pub name: String,
    /// SHA-256 of the file's bytes, lowercase hex.
    pub digest: String,
    pub examples: Vec<Example>,
}

/// Reads `path`; a line that is not an example is an error naming the line.
/// `limit` keeps the first examples only.
pub fn read_dataset(path: &Path, limit: Option<usize>) -> Result<Dataset, CliError> {
    let bytes = std::fs::read(path).map_err(CliError::io(path))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| CliError::Invalid(format!("{}: not UTF-8 text", path.display())))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    dataset_from_text(&path.display().to_string(), name, &text, limit)
}

/// The examples of JSONL `text` (read from `origin`, which errors name),
/// as the dataset `name`; its digest is the text's SHA-256.
pub fn dataset_from_text(
    origin: &str,
    name: String,
    text: &str,
    limit: Option<usize>,
) -> Result<Dataset, CliError> {
    let digest = hex(&Sha256::digest(text.as_bytes()));
    let mut examples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if limit.is_some_and(|limit| examples.len() >= limit) {
            break;
        }
        let at = |rule: String| CliError::Invalid(format!("{origin}:{}: {rule}", number + 1));
        let parsed: ExampleLine =
            serde_json::from_str(line).map_err(|error| at(error.to_string()))?;
        if parsed.question.trim().is_empty() {
            return Err(at("`question` must not be empty".to_string()));
        }
        let pattern = match parsed.pattern.as_deref() {
            Some(pattern) => Some(
                Regex::new(pattern)
                    .map_err(|error| at(format!("`pattern` is not a regex: {error}")))?,
            ),
            None => None,
        };
        let index =
            u32::try_from(examples.len()).map_err(|_| at("more than 2^32 examples".to_string()))?;
        examples.push(Example {
            index,
            question: parsed.question,
            reference: parsed
                .reference
                .filter(|reference| !reference.trim().is_empty()),
            expected_sources: parsed.expected_sources,
            pattern,
        });
    }
    if examples.is_empty() {
        return Err(CliError::Invalid(format!("{origin}: holds no example")));
    }
    Ok(Dataset {
        name,
        digest,
        examples,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(lines: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), lines).unwrap();
        file
    }

    #[test]
    fn examples_and_eval_export_lines_both_read() {
        let file = write(concat!(
            r#"{"question": "What is the refund window?", "reference": "30 days", "expected_sources": ["refunds"], "pattern": "\\b30\\b"}"#,
            "\n\n",
            r#"{"request_id": "r1", "question": "How do I reset?", "answer": "Use the link.", "reference": null, "contexts": ["..."], "rating": -1}"#,
            "\n",
        ));
        let dataset = read_dataset(file.path(), None).unwrap();
        assert_eq!(dataset.digest.len(), 64);
        assert_eq!(dataset.examples.len(), 2);
        let first = &dataset.examples[0];
        assert_eq!(
            (first.index, first.reference.as_deref()),
            (0, Some("30 days"))
        );
        assert_eq!(first.expected_sources, ["refunds"]);
        assert!(first.pattern.as_ref().unwrap().is_match("in 30 days"));
        let second = &dataset.examples[1];
        assert_eq!((second.index, second.reference.as_deref()), (1, None));
        assert!(second.expected_sources.is_empty());
        assert_eq!(
            read_dataset(file.path(), Some(1)).unwrap().examples.len(),
            1
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        let file = write("{\"question\": \"ok\"}\n{\"question\": \"\"}\n");
        let error = read_dataset(file.path(), None).unwrap_err().to_string();
        assert!(
            error.ends_with(":2: `question` must not be empty"),
            "{error}"
        );
        let file = write("{\"question\": \"q\", \"pattern\": \"(\"}\n");
        let error = read_dataset(file.path(), None).unwrap_err().to_string();
        assert!(error.contains(":1: `pattern` is not a regex"), "{error}");
        let file = write("\n");
        assert!(read_dataset(file.path(), None)
            .unwrap_err()
            .to_string()
            .ends_with("holds no example"));
    }
}

//! The documents `setup` ingests: the paragraphs of a directory of markdown
//! files, or a synthetic corpus when none is at hand.

use std::path::{Path, PathBuf};

/// One point to upsert into the collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    /// "guide/rollback.md#3": the file relative to the corpus, and the
    /// paragraph's position in it, so a re-ingest replaces rather than adds.
    pub id: String,
    pub text: String,
    /// The file (or "synthetic"), stored in the point's payload.
    pub source: String,
}

/// The paragraphs of every `.md` file under `dir` (recursively), files in
/// path order. Blocking: call it from `spawn_blocking`.
pub fn load_markdown_dir(dir: &Path) -> std::io::Result<Vec<Passage>> {
    let mut files = Vec::new();
    collect_markdown_files(dir, &mut files)?;
    files.sort();
    let mut passages = Vec::new();
    for file in files {
        let markdown = std::fs::read_to_string(&file)?;
        let relative = file.strip_prefix(dir).unwrap_or(&file);
        let source = relative.to_string_lossy().replace('\\', "/");
        for (index, text) in split_paragraphs(&markdown).into_iter().enumerate() {
            passages.push(Passage {
                id: format!("{source}#{index}"),
                text,
                source: source.clone(),
            });
        }
    }
    Ok(passages)
}

fn collect_markdown_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_markdown_files(&path, files)?;
        } else if path.extension().is_some_and(|extension| extension == "md") {
            files.push(path);
        }
    }
    Ok(())
}

/// Splits markdown on blank lines, keeping fenced code blocks whole and
/// dropping paragraphs that are only a heading (they retrieve badly alone).
pub fn split_paragraphs(markdown: &str) -> Vec<String> {
    let mut paragraphs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if line.trim().is_empty() && !in_fence {
            push_paragraph(&mut paragraphs, &current);
            current.clear();
        } else {
            current.push(line);
        }
    }
    push_paragraph(&mut paragraphs, &current);
    paragraphs
}

fn push_paragraph(paragraphs: &mut Vec<String>, lines: &[&str]) {
    let text = lines.join("\n").trim().to_string();
    let only_a_heading = lines.len() == 1 && text.starts_with('#');
    if text.is_empty() || only_a_heading {
        return;
    }
    paragraphs.push(text);
}

const SUBJECTS: [(&str, &str); 20] = [
    (
        "A password reset link",
        "valid for a limited time and usable once",
    ),
    (
        "Account lockout",
        "a pause on sign-in after repeated failed attempts",
    ),
    (
        "The API rate limit",
        "a per-workspace budget of requests per minute",
    ),
    (
        "An HTTP 429 answer",
        "a request over the limit, to retry after Retry-After",
    ),
    (
        "An annual plan refund",
        "prorated when asked for within the first month",
    ),
    (
        "Refund approval",
        "the support lead's call, and finance's above a threshold",
    ),
    (
        "Log and trace retention",
        "a fixed number of days before deletion",
    ),
    (
        "A deleted workspace",
        "kept for a grace period, then erased",
    ),
    (
        "A severity 1 incident",
        "an outage or data loss for many customers",
    ),
    (
        "A postmortem",
        "a written review due after every severe incident",
    ),
    (
        "The on-call rotation",
        "a weekly shift handed over on a fixed day",
    ),
    (
        "On-call compensation",
        "a flat weekly amount plus time off after a page",
    ),
    (
        "Single sign-on",
        "SAML or OpenID Connect through the customer's provider",
    ),
    ("User provisioning", "accounts created and removed by SCIM"),
    (
        "Support hours",
        "business hours on weekdays, and always for severe incidents",
    ),
    ("First response time", "shorter on higher plans"),
    (
        "Support languages",
        "English first, with a few others on request",
    ),
    (
        "Two-factor authentication",
        "a setting only the account owner may turn off",
    ),
    (
        "Data location",
        "the region chosen when the workspace was created",
    ),
    (
        "A temporary limit raise",
        "a short increase granted during migrations",
    ),
];

const TEMPLATES: [&str; 10] = [
    "{subject} at Keel is {fact}.",
    "Customers ask about {lower} often; in short it is {fact}.",
    "The handbook describes {lower} as {fact}.",
    "{subject}: {fact}. Support can confirm the details.",
    "A new support engineer should learn that {lower} is {fact}.",
    "When a customer writes about {lower}, the answer is: {fact}.",
    "{subject} is the same on every plan in one respect: it is {fact}.",
    "The help center page on {lower} says it is {fact}.",
    "In the support macros, {lower} is summed up as {fact}.",
    "Escalations about {lower} usually end with the reminder that it is {fact}.",
];

/// `count` deterministic paragraphs about the subjects the question list
/// asks about, so retrieval finds something relevant; the ids are stable.
pub fn synthetic(count: usize) -> Vec<Passage> {
    let mut passages = Vec::with_capacity(count);
    for index in 0..count {
        let (subject, fact) = SUBJECTS[index % SUBJECTS.len()];
        let template = TEMPLATES[(index / SUBJECTS.len()) % TEMPLATES.len()];
        let text = template
            .replace("{subject}", subject)
            .replace("{lower}", &subject.to_lowercase())
            .replace("{fact}", fact);
        passages.push(Passage {
            id: format!("synthetic-{index:04}"),
            text,
            source: "synthetic".to_string(),
        });
    }
    passages
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn paragraphs_split_on_blank_lines_and_skip_lone_headings() {
        let markdown = "# Title\n\nFirst line\nsecond line\n\n\n## Section\n\nLast one.\n";
        assert_eq!(
            split_paragraphs(markdown),
            vec![
                "First line\nsecond line".to_string(),
                "Last one.".to_string()
            ]
        );
    }

    #[test]
    fn fenced_code_stays_in_one_paragraph() {
        let markdown = "Run this:\n\n```toml\n[registry]\n\nport = 7101\n```\n\nDone.";
        assert_eq!(
            split_paragraphs(markdown),
            vec![
                "Run this:".to_string(),
                "```toml\n[registry]\n\nport = 7101\n```".to_string(),
                "Done.".to_string()
            ]
        );
    }

    #[test]
    fn markdown_dir_is_read_in_path_order_with_stable_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("guide")).unwrap();
        std::fs::write(dir.path().join("b.md"), "Bee one.\n\nBee two.").unwrap();
        std::fs::write(dir.path().join("guide/a.md"), "# A\n\nAy one.").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not markdown").unwrap();
        let passages = load_markdown_dir(dir.path()).unwrap();
        let ids: Vec<&str> = passages.iter().map(|passage| passage.id.as_str()).collect();
        assert_eq!(ids, vec!["b.md#0", "b.md#1", "guide/a.md#0"]);
        assert_eq!(passages[2].text, "Ay one.");
        assert_eq!(passages[2].source, "guide/a.md");
    }

    #[test]
    fn missing_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_markdown_dir(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn synthetic_corpus_has_distinct_paragraphs_and_ids() {
        let passages = synthetic(200);
        assert_eq!(passages.len(), 200);
        let ids: BTreeSet<&str> = passages.iter().map(|passage| passage.id.as_str()).collect();
        let texts: BTreeSet<&str> = passages
            .iter()
            .map(|passage| passage.text.as_str())
            .collect();
        assert_eq!(ids.len(), 200);
        assert_eq!(texts.len(), 200);
        assert_eq!(
            passages[0].text,
            "A password reset link at Keel is valid for a limited time and usable once."
        );
        assert_eq!(synthetic(200), passages);
    }
}

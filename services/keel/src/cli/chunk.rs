//! Splitting documents into the passages a collection stores: by paragraph,
//! merged up to a size, never cutting a word.

/// A passage of a document, ready to become a point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentChunk {
    /// `<relative path>#<chunk index>`: stable as long as the file and the
    /// chunk size are unchanged, so re-ingesting replaces the same points.
    pub id: String,
    /// The document's path relative to the ingested directory, `/`-separated.
    pub source: String,
    pub index: usize,
    pub text: String,
}

/// Chunks of one document, with their point ids.
pub fn chunk_document(source: &str, text: &str, max_chars: usize) -> Vec<DocumentChunk> {
    let mut chunks = Vec::new();
    for (index, chunk_text) in chunk_text(text, max_chars).into_iter().enumerate() {
        chunks.push(DocumentChunk {
            id: format!("{source}#{index}"),
            source: source.to_string(),
            index,
            text: chunk_text,
        });
    }
    chunks
}

/// Splits `text` into chunks of at most `max_chars` characters. Paragraphs
/// (separated by blank lines) are merged while they fit; a paragraph longer
/// than `max_chars` is split between words. A single word longer than
/// `max_chars` becomes a chunk of its own rather than being cut.
///
/// The lines of a paragraph are joined with single spaces: hard-wrapped
/// Markdown would otherwise end a "sentence" at every line break.
pub fn chunk_text(text: &str, max_chars: usize) -> Vec<String> {
    let max_chars = max_chars.max(1);
    let mut chunks = Vec::new();
    let mut current = String::new();
    for paragraph in paragraphs(text) {
        let paragraph_chars = paragraph.chars().count();
        let current_chars = current.chars().count();
        if current.is_empty() && paragraph_chars <= max_chars {
            current = paragraph;
            continue;
        }
        // +2 for the blank line between merged paragraphs.
        if !current.is_empty() && current_chars + 2 + paragraph_chars <= max_chars {
            current.push_str("\n\n");
            current.push_str(&paragraph);
            continue;
        }
        if !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
        }
        if paragraph_chars <= max_chars {
            current = paragraph;
            continue;
        }
        let mut pieces = split_between_words(&paragraph, max_chars);
        // The last piece may still take the following paragraphs.
        current = pieces.pop().unwrap_or_default();
        chunks.extend(pieces);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Paragraphs with their whitespace collapsed to single spaces.
fn paragraphs(text: &str) -> Vec<String> {
    let mut paragraphs = Vec::new();
    let mut words: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !words.is_empty() {
                paragraphs.push(words.join(" "));
                words.clear();
            }
            continue;
        }
        words.extend(line.split_whitespace());
    }
    if !words.is_empty() {
        paragraphs.push(words.join(" "));
    }
    paragraphs
}

/// Greedy split of a single-spaced paragraph into pieces of at most
/// `max_chars`, breaking only at spaces.
fn split_between_words(paragraph: &str, max_chars: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut piece = String::new();
    let mut piece_chars = 0;
    for word in paragraph.split(' ') {
        let word_chars = word.chars().count();
        if piece.is_empty() {
            piece.push_str(word);
            piece_chars = word_chars;
            continue;
        }
        if piece_chars + 1 + word_chars <= max_chars {
            piece.push(' ');
            piece.push_str(word);
            piece_chars += 1 + word_chars;
            continue;
        }
        pieces.push(std::mem::take(&mut piece));
        piece.push_str(word);
        piece_chars = word_chars;
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# Refund policy\n\nCustomers have 30 days from the date of purchase to\nrequest a refund on an annual plan.\n\n\nMonthly plans are not refunded.\nA cancelled plan stays active until the end of the period.\n\nRefunds above 500 euros need the approval of the billing lead, Marta Lindqvist, and refunds above 5000 euros also need the finance director.\n";

    fn words_of(text: &str) -> Vec<&str> {
        text.split_whitespace().collect()
    }

    #[test]
    fn never_cuts_a_word_and_loses_nothing() {
        for max_chars in [1, 5, 17, 40, 80, 200, 10_000] {
            let chunks = chunk_text(SAMPLE, max_chars);
            let rejoined: Vec<&str> = chunks
                .iter()
                .flat_map(|chunk| chunk.split_whitespace())
                .collect();
            assert_eq!(rejoined, words_of(SAMPLE), "max_chars {max_chars}");
        }
    }

    #[test]
    fn sizes_are_bounded_except_for_a_single_overlong_word() {
        for max_chars in [5, 17, 40, 80, 200] {
            for chunk in chunk_text(SAMPLE, max_chars) {
                let fits = chunk.chars().count() <= max_chars;
                let lone_word = words_of(&chunk).len() == 1;
                assert!(fits || lone_word, "chunk {chunk:?} over {max_chars}");
                assert!(!chunk.trim().is_empty());
            }
        }
        let long_word = "a".repeat(30);
        assert_eq!(
            chunk_text(&format!("x {long_word} y"), 10),
            vec!["x", long_word.as_str(), "y"]
        );
    }

    #[test]
    fn short_paragraphs_merge_and_lines_are_joined() {
        let chunks = chunk_text(SAMPLE, 10_000);
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].starts_with(
            "# Refund policy\n\nCustomers have 30 days from the date of purchase to request a refund on an annual plan.\n\nMonthly"
        ));
        let split = chunk_text(SAMPLE, 120);
        assert_eq!(split[0], "# Refund policy\n\nCustomers have 30 days from the date of purchase to request a refund on an annual plan.");
        assert_eq!(split[1], "Monthly plans are not refunded. A cancelled plan stays active until the end of the period.");
    }

    #[test]
    fn ids_are_stable_and_name_the_source() {
        let first = chunk_document("guides/refund-policy.md", SAMPLE, 120);
        let second = chunk_document("guides/refund-policy.md", SAMPLE, 120);
        assert_eq!(first, second);
        let ids: Vec<&str> = first.iter().map(|chunk| chunk.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "guides/refund-policy.md#0",
                "guides/refund-policy.md#1",
                "guides/refund-policy.md#2",
                "guides/refund-policy.md#3"
            ]
        );
        assert!(first
            .iter()
            .enumerate()
            .all(|(index, chunk)| chunk.index == index));
    }

    #[test]
    fn empty_documents_have_no_chunks() {
        assert!(chunk_text("", 800).is_empty());
        assert!(chunk_text("\n\n   \n", 800).is_empty());
    }
}

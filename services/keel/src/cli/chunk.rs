//! Cutting a document's sections into the passages a collection stores:
//! by the tokens of the collection's embedder, so a passage fits the
//! window the embedder reads (what runs past it would be silently cut off),
//! each starting with its section's heading path so a passage about
//! "Basic Usage" still says of what.

use crate::cli::sections::Section;

/// How large passages are, in the embedder's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkBudget {
    /// The most tokens of one passage, heading included and the embedder's
    /// special tokens not.
    pub max_tokens: usize,
    /// Tokens a passage repeats from the end of the one before when a
    /// paragraph had to be cut in the middle, so no sentence loses its
    /// context on both sides of a cut.
    pub overlap_tokens: usize,
}

/// A passage of a document, ready to become a point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentChunk {
    /// `<relative path>#<chunk index>`: stable as long as the file and the
    /// chunking are unchanged, so re-ingesting replaces the same points.
    pub id: String,
    /// The document's path relative to the ingested directory, `/`-separated.
    pub source: String,
    pub index: usize,
    /// The section's heading path; empty before a document's first heading.
    pub section: String,
    /// The heading path, a blank line, then the passage's paragraphs
    /// separated by blank lines.
    pub text: String,
}

/// The tokens of each word of a section, as the embedder counts them:
/// of its heading path and of each paragraph, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SectionTokens {
    pub heading: Vec<u32>,
    pub paragraphs: Vec<Vec<u32>>,
}

/// One word of a section's body with what the cut needs to know of it.
struct Word<'a> {
    text: &'a str,
    tokens: usize,
    paragraph: usize,
    ends_paragraph: bool,
    ends_sentence: bool,
}

/// Passages of one document. `tokens` holds one entry per section.
pub fn chunk_document(
    source: &str,
    sections: &[Section],
    tokens: &[SectionTokens],
    budget: ChunkBudget,
) -> Vec<DocumentChunk> {
    let mut chunks = Vec::new();
    for (section, counts) in sections.iter().zip(tokens) {
        let path = section.heading();
        let (heading, heading_tokens) =
            heading_within(section, &path, &counts.heading, budget.max_tokens / 2);
        let body_budget = budget.max_tokens.saturating_sub(heading_tokens).max(1);
        for body in cut_section(section, counts, body_budget, budget.overlap_tokens) {
            let index = chunks.len();
            let text = if heading.is_empty() {
                body
            } else {
                format!("{heading}\n\n{body}")
            };
            chunks.push(DocumentChunk {
                id: format!("{source}#{index}"),
                source: source.to_string(),
                index,
                section: path.clone(),
                text,
            });
        }
    }
    chunks
}

/// The heading path as passages start with it, and its tokens: whole when
/// it takes at most `max_tokens`, else only its innermost heading, else
/// nothing (the section itself matters more than its title).
fn heading_within(
    section: &Section,
    path: &str,
    tokens: &[u32],
    max_tokens: usize,
) -> (String, usize) {
    let total: usize = tokens.iter().map(|count| *count as usize).sum();
    if total <= max_tokens {
        return (path.to_string(), total);
    }
    let Some(innermost) = section.headings.last() else {
        return (String::new(), 0);
    };
    // The path is its headings' words with a separator between them, so
    // the innermost heading's words are the path's last ones.
    let innermost_words = innermost.split_whitespace().count();
    let innermost_tokens: usize = tokens
        .iter()
        .rev()
        .take(innermost_words)
        .map(|count| *count as usize)
        .sum();
    if innermost_tokens <= max_tokens {
        return (innermost.clone(), innermost_tokens);
    }
    (String::new(), 0)
}

/// The bodies of a section's passages: words packed up to `budget` tokens,
/// cut preferably after a paragraph, else after a sentence, as long as
/// that keeps at least half the budget; a passage after a cut inside a
/// paragraph starts with up to `overlap` tokens of the one before. A word
/// longer than the budget is a passage of its own.
fn cut_section(
    section: &Section,
    counts: &SectionTokens,
    budget: usize,
    overlap: usize,
) -> Vec<String> {
    let words = section_words(section, counts);
    let mut bodies = Vec::new();
    let mut start = 0;
    while start < words.len() {
        let mut end = start;
        let mut used = 0;
        while end < words.len() && (end == start || used + words[end].tokens <= budget) {
            used += words[end].tokens;
            end += 1;
        }
        if end < words.len() {
            end = better_cut(&words, start, end, budget);
        }
        bodies.push(join_words(&words[start..end]));
        if end >= words.len() {
            break;
        }
        start = if words[end - 1].ends_paragraph {
            end
        } else {
            overlap_start(&words, start, end, overlap)
        };
    }
    bodies
}

/// The last paragraph end in `start..end` that keeps at least half the
/// budget, else the last sentence end, else `end` itself.
fn better_cut(words: &[Word], start: usize, end: usize, budget: usize) -> usize {
    let mut used = 0;
    let mut paragraph_cut = None;
    let mut sentence_cut = None;
    for (position, word) in words.iter().enumerate().take(end).skip(start) {
        used += word.tokens;
        if used * 2 < budget {
            continue;
        }
        if word.ends_paragraph {
            paragraph_cut = Some(position + 1);
        } else if word.ends_sentence {
            sentence_cut = Some(position + 1);
        }
    }
    paragraph_cut.or(sentence_cut).unwrap_or(end)
}

/// Where the passage after a cut at `end` starts: back by up to `overlap`
/// tokens, but always past `start` so every passage moves forward.
fn overlap_start(words: &[Word], start: usize, end: usize, overlap: usize) -> usize {
    let mut next = end;
    let mut repeated = 0;
    while next > start + 1 && repeated + words[next - 1].tokens <= overlap {
        repeated += words[next - 1].tokens;
        next -= 1;
    }
    next
}

fn section_words<'a>(section: &'a Section, counts: &SectionTokens) -> Vec<Word<'a>> {
    let mut words = Vec::new();
    for (paragraph_index, paragraph) in section.paragraphs.iter().enumerate() {
        let paragraph_counts = counts.paragraphs.get(paragraph_index);
        let texts: Vec<&str> = paragraph.split_whitespace().collect();
        let last = texts.len().saturating_sub(1);
        for (position, text) in texts.into_iter().enumerate() {
            let tokens = paragraph_counts
                .and_then(|counts| counts.get(position))
                .map_or(1, |count| *count as usize);
            words.push(Word {
                text,
                tokens,
                paragraph: paragraph_index,
                ends_paragraph: position == last,
                ends_sentence: text.ends_with(['.', '!', '?', ':', ';']),
            });
        }
    }
    words
}

/// Words of one paragraph joined by spaces, paragraphs by blank lines.
fn join_words(words: &[Word]) -> String {
    let mut text = String::new();
    let mut paragraph = None;
    for word in words {
        match paragraph {
            None => {}
            Some(current) if current == word.paragraph => text.push(' '),
            Some(_) => text.push_str("\n\n"),
        }
        text.push_str(word.text);
        paragraph = Some(word.paragraph);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::sections::{markdown_sections, plain_sections};

    /// Counts as if every word were `tokens_per_word` tokens, except words
    /// starting with `long`, which are 40.
    fn counted(sections: &[Section], tokens_per_word: u32) -> Vec<SectionTokens> {
        let count = |text: &str| -> Vec<u32> {
            text.split_whitespace()
                .map(|word| {
                    if word.starts_with("long") {
                        40
                    } else {
                        tokens_per_word
                    }
                })
                .collect()
        };
        sections
            .iter()
            .map(|section| SectionTokens {
                heading: count(&section.heading()),
                paragraphs: section.paragraphs.iter().map(|p| count(p)).collect(),
            })
            .collect()
    }

    fn tokens_of(text: &str, tokens_per_word: u32) -> usize {
        text.split_whitespace()
            .map(|word| {
                if word.starts_with("long") {
                    40
                } else {
                    tokens_per_word as usize
                }
            })
            .sum()
    }

    const GUIDE: &str = "# Refunds\n\nCustomers have 30 days from the date of purchase to request a refund on an annual plan. Monthly plans are not refunded.\n\nA cancelled plan stays active until the end of the period.\n\n## Approval\n\nRefunds above 500 euros need the approval of the billing lead, Marta Lindqvist, and refunds above 5000 euros also need the finance director. longword stays whole.\n";

    fn chunks(budget: usize, overlap: usize) -> Vec<DocumentChunk> {
        let sections = markdown_sections(GUIDE);
        let tokens = counted(&sections, 1);
        chunk_document(
            "guides/refunds.md",
            &sections,
            &tokens,
            ChunkBudget {
                max_tokens: budget,
                overlap_tokens: overlap,
            },
        )
    }

    fn body(chunk: &DocumentChunk) -> &str {
        chunk
            .text
            .split_once("\n\n")
            .map_or(chunk.text.as_str(), |(_, body)| body)
    }

    #[test]
    fn without_overlap_every_word_is_kept_once_in_order_within_the_budget() {
        let sections = markdown_sections(GUIDE);
        let all: Vec<&str> = sections
            .iter()
            .flat_map(|section| section.paragraphs.iter())
            .flat_map(|paragraph| paragraph.split_whitespace())
            .collect();
        for budget in [8, 13, 20, 45, 64, 1000] {
            let chunks = chunks(budget, 0);
            let rejoined: Vec<&str> = chunks
                .iter()
                .flat_map(|chunk| body(chunk).split_whitespace())
                .collect();
            assert_eq!(rejoined, all, "budget {budget}");
            for chunk in &chunks {
                let tokens = tokens_of(&chunk.text, 1);
                let lone_word = body(chunk).split_whitespace().count() == 1;
                assert!(
                    tokens <= budget || lone_word,
                    "{tokens} > {budget}: {chunk:?}"
                );
            }
        }
    }

    #[test]
    fn passages_start_with_their_heading_path() {
        let chunks = chunks(1000, 0);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].section, "Refunds");
        assert!(chunks[0]
            .text
            .starts_with("Refunds\n\nCustomers have 30 days"));
        assert!(chunks[0].text.contains("refunded.\n\nA cancelled plan"));
        assert_eq!(chunks[1].section, "Refunds > Approval");
        assert!(chunks[1]
            .text
            .starts_with("Refunds > Approval\n\nRefunds above 500"));
        let ids: Vec<&str> = chunks.iter().map(|chunk| chunk.id.as_str()).collect();
        assert_eq!(ids, ["guides/refunds.md#0", "guides/refunds.md#1"]);
        assert_eq!(chunks, self::chunks(1000, 0), "chunking is deterministic");
    }

    #[test]
    fn cuts_fall_after_a_paragraph_or_a_sentence_when_one_is_near() {
        // 24 words in the first paragraph, 12 in the second.
        let chunks = chunks(30, 0);
        assert!(
            body(&chunks[0]).ends_with("not refunded."),
            "{:?}",
            chunks[0]
        );
        assert!(body(&chunks[1]).starts_with("A cancelled plan"));
        let chunks = self::chunks(19, 0);
        assert!(
            body(&chunks[0]).ends_with("annual plan."),
            "{:?}",
            chunks[0]
        );
    }

    #[test]
    fn a_cut_inside_a_paragraph_repeats_the_words_before_it() {
        let words: Vec<String> = (1..=30).map(|n| format!("w{n}")).collect();
        let sections = plain_sections(&words.join(" "));
        let budget = ChunkBudget {
            max_tokens: 10,
            overlap_tokens: 3,
        };
        let chunks = chunk_document("w.txt", &sections, &counted(&sections, 1), budget);
        let texts: Vec<&str> = chunks.iter().map(|chunk| chunk.text.as_str()).collect();
        let span = |from: usize, to: usize| words[from - 1..to].join(" ");
        assert_eq!(
            texts,
            [span(1, 10), span(8, 17), span(15, 24), span(22, 30)]
        );
        assert!(chunks.iter().all(|chunk| chunk.section.is_empty()));
    }

    #[test]
    fn a_long_heading_path_gives_way_to_its_innermost_heading() {
        let text = "# A very large title of the whole guide\n\n## Short\n\nBody text here.\n";
        let sections = markdown_sections(text);
        let tokens = counted(&sections, 1);
        let budget = ChunkBudget {
            max_tokens: 12,
            overlap_tokens: 0,
        };
        let chunks = chunk_document("g.md", &sections, &tokens, budget);
        assert_eq!(chunks[0].text, "Short\n\nBody text here.");
        assert_eq!(
            chunks[0].section,
            "A very large title of the whole guide > Short"
        );
        let budget = ChunkBudget {
            max_tokens: 40,
            overlap_tokens: 0,
        };
        let chunks = chunk_document("g.md", &sections, &tokens, budget);
        assert!(chunks[0]
            .text
            .starts_with("A very large title of the whole guide > Short\n\n"));
    }

    #[test]
    fn token_counts_not_words_set_the_size() {
        let sections = markdown_sections(GUIDE);
        let budget = ChunkBudget {
            max_tokens: 40,
            overlap_tokens: 0,
        };
        let one = chunk_document("g.md", &sections, &counted(&sections, 1), budget);
        let three = chunk_document("g.md", &sections, &counted(&sections, 3), budget);
        assert!(
            three.len() >= one.len() * 2,
            "{} vs {}",
            three.len(),
            one.len()
        );
        for chunk in &three {
            let lone_word = body(chunk).split_whitespace().count() == 1;
            assert!(tokens_of(&chunk.text, 3) <= 40 || lone_word, "{chunk:?}");
        }
    }
}

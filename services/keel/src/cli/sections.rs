//! A document as the chunker sees it: sections, each the run of paragraphs
//! under one heading, with the path of headings that leads to it. Markdown
//! and plain text are read here; HTML in `html_sections`.

/// Joins the headings of a section's path, outermost first.
pub const HEADING_SEPARATOR: &str = " > ";

/// Paragraphs longer than this many bytes are cut between words: a chunk
/// never needs more, and token counting takes texts of at most 64 KiB.
const MAX_PARAGRAPH_BYTES: usize = 16 * 1024;

/// The paragraphs under one heading.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// The headings above the paragraphs, outermost first; empty before a
    /// document's first heading.
    pub headings: Vec<String>,
    /// Each with its whitespace collapsed to single spaces; never empty.
    pub paragraphs: Vec<String>,
}

impl Section {
    /// The heading path as chunks carry it: `Guide > Install > Linux`.
    pub fn heading(&self) -> String {
        self.headings.join(HEADING_SEPARATOR)
    }
}

/// Collects headings and paragraphs, in document order, into sections.
#[derive(Debug, Default)]
pub struct SectionBuilder {
    /// The open headings with their levels, outermost first.
    open: Vec<(u8, String)>,
    current: Vec<String>,
    sections: Vec<Section>,
}

impl SectionBuilder {
    /// A heading of `level` (1 for the outermost) closes the section before
    /// it and every open heading at its level or deeper.
    pub fn heading(&mut self, level: u8, text: &str) {
        let text = collapse_whitespace(text);
        if text.is_empty() {
            return;
        }
        self.close_section();
        self.open.retain(|(open_level, _)| *open_level < level);
        self.open.push((level, text));
    }

    pub fn paragraph(&mut self, text: &str) {
        let text = collapse_whitespace(text);
        if text.is_empty() {
            return;
        }
        if text.len() <= MAX_PARAGRAPH_BYTES {
            self.current.push(text);
            return;
        }
        let mut piece = String::new();
        for word in text.split(' ') {
            if !piece.is_empty() && piece.len() + 1 + word.len() > MAX_PARAGRAPH_BYTES {
                self.current.push(std::mem::take(&mut piece));
            }
            if !piece.is_empty() {
                piece.push(' ');
            }
            piece.push_str(word);
        }
        if !piece.is_empty() {
            self.current.push(piece);
        }
    }

    pub fn finish(mut self) -> Vec<Section> {
        self.close_section();
        self.sections
    }

    /// A heading with nothing under it makes no section, but stays in the
    /// path of those below it.
    fn close_section(&mut self) {
        if self.current.is_empty() {
            return;
        }
        self.sections.push(Section {
            headings: self.open.iter().map(|(_, text)| text.clone()).collect(),
            paragraphs: std::mem::take(&mut self.current),
        });
    }
}

/// Sections of a Markdown document: ATX (`## Title`) and setext (a line
/// underlined with `===` or `---`) headings; paragraphs separated by blank
/// lines; a fenced code block is one paragraph, and a `#` inside it is code,
/// not a heading.
pub fn markdown_sections(text: &str) -> Vec<Section> {
    let mut builder = SectionBuilder::default();
    let mut lines: Vec<&str> = Vec::new();
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(marker) = fence {
            lines.push(line);
            if trimmed.starts_with(marker) {
                fence = None;
                builder.paragraph(&lines.join("\n"));
                lines.clear();
            }
            continue;
        }
        if let Some(marker) = ["```", "~~~"]
            .into_iter()
            .find(|marker| trimmed.starts_with(marker))
        {
            builder.paragraph(&lines.join("\n"));
            lines.clear();
            fence = Some(marker);
            lines.push(line);
            continue;
        }
        if trimmed.is_empty() {
            builder.paragraph(&lines.join("\n"));
            lines.clear();
            continue;
        }
        if let Some((level, title)) = atx_heading(trimmed) {
            builder.paragraph(&lines.join("\n"));
            lines.clear();
            builder.heading(level, title);
            continue;
        }
        if let (Some(level), [title]) = (setext_level(trimmed), lines.as_slice()) {
            builder.heading(level, title);
            lines.clear();
            continue;
        }
        lines.push(line);
    }
    builder.paragraph(&lines.join("\n"));
    builder.finish()
}

/// Sections of a plain text file: one, without a heading, in paragraphs
/// separated by blank lines.
pub fn plain_sections(text: &str) -> Vec<Section> {
    let mut builder = SectionBuilder::default();
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            builder.paragraph(&lines.join(" "));
            lines.clear();
        } else {
            lines.push(line);
        }
    }
    builder.paragraph(&lines.join(" "));
    builder.finish()
}

/// `## Title ##` → (2, "Title"); at most six `#`, then a space.
fn atx_heading(line: &str) -> Option<(u8, &str)> {
    let level = line.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some((level as u8, rest.trim().trim_end_matches('#').trim_end()))
}

/// A setext underline: `===` makes a level 1 heading, `---` level 2.
fn setext_level(line: &str) -> Option<u8> {
    if line.len() >= 3 && line.chars().all(|c| c == '=') {
        return Some(1);
    }
    if line.len() >= 3 && line.chars().all(|c| c == '-') {
        return Some(2);
    }
    None
}

pub fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A section written out, for tests.
#[cfg(test)]
pub(crate) fn section(headings: &[&str], paragraphs: &[&str]) -> Section {
    Section {
        headings: headings.iter().map(|text| text.to_string()).collect(),
        paragraphs: paragraphs.iter().map(|text| text.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_headings_make_a_path_and_close_deeper_levels() {
        let text = "Intro line\nwrapped.\n\n# Guide\n\n## Install\n\nRun it.\n\n### Linux\nApt.\n\n## Use #\n\nCall it.\n";
        assert_eq!(
            markdown_sections(text),
            vec![
                section(&[], &["Intro line wrapped."]),
                section(&["Guide", "Install"], &["Run it."]),
                section(&["Guide", "Install", "Linux"], &["Apt."]),
                section(&["Guide", "Use"], &["Call it."]),
            ]
        );
        assert_eq!(
            markdown_sections(text)[2].heading(),
            "Guide > Install > Linux"
        );
    }

    #[test]
    fn a_hash_in_code_is_not_a_heading_and_setext_headings_count() {
        let text = "Title\n=====\n\n```python\n# a comment\n\nx = 1\n```\nSub\n---\nBody #hashtag\n#nospace\n";
        assert_eq!(
            markdown_sections(text),
            vec![
                section(&["Title"], &["```python # a comment x = 1 ```"]),
                section(&["Title", "Sub"], &["Body #hashtag #nospace"]),
            ]
        );
    }

    #[test]
    fn plain_text_is_one_section_of_paragraphs() {
        assert_eq!(
            plain_sections("# not a heading\nline two\n\n\nnext"),
            vec![section(&[], &["# not a heading line two", "next"])]
        );
        assert!(plain_sections(" \n\n").is_empty());
    }

    #[test]
    fn overlong_paragraphs_are_cut_between_words() {
        let word = "abcdefghi";
        let text = vec![word; 4000].join(" ");
        let sections = plain_sections(&text);
        let paragraphs = &sections[0].paragraphs;
        assert!(paragraphs.len() >= 3);
        assert!(paragraphs.iter().all(|p| p.len() <= MAX_PARAGRAPH_BYTES));
        assert_eq!(paragraphs.join(" "), text);
    }
}

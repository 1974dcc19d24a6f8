//! Sections of an HTML page: the visible text of its main content, cut at
//! `<h1>`…`<h6>`, one paragraph per block element. Parsed with `scraper`
//! (html5ever), so entities, unclosed tags and stray markup read as a
//! browser reads them.

use scraper::{ElementRef, Html, Node, Selector};

use crate::cli::sections::{Section, SectionBuilder};

/// Where a page keeps its content, most specific first; without any of
/// them the whole body is read.
const CONTENT_ROOTS: &[&str] = &["[role=main]", "main", "article", "body"];

/// Elements whose text is not content: scripts, navigation, page chrome.
/// (`aside` is read: inside the main content it holds footnotes and
/// notes, as Sphinx writes them.)
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "head", "nav", "header", "footer", "form", "button",
    "svg", "iframe", "select",
];

/// Classes whose text is decoration, such as the "¶" permalink that
/// documentation generators (Sphinx, MkDocs) put after every heading.
const SKIPPED_CLASSES: &[&str] = &["headerlink", "anchorlink"];

/// Elements that end the paragraph before them and start a new one.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "pre",
    "blockquote",
    "table",
    "tr",
    "caption",
    "figure",
    "figcaption",
    "hr",
    "address",
    "details",
    "summary",
];

pub fn html_sections(html: &str) -> Vec<Section> {
    let document = Html::parse_document(html);
    let root = CONTENT_ROOTS
        .iter()
        .filter_map(|selector| Selector::parse(selector).ok())
        .find_map(|selector| document.select(&selector).next())
        .unwrap_or_else(|| document.root_element());
    let mut reader = PageReader::default();
    reader.read(root);
    reader.flush();
    reader.builder.finish()
}

#[derive(Default)]
struct PageReader {
    builder: SectionBuilder,
    /// The text of the paragraph being read.
    paragraph: String,
}

impl PageReader {
    fn read(&mut self, element: ElementRef) {
        for child in element.children() {
            match child.value() {
                Node::Text(text) => self.paragraph.push_str(text),
                Node::Element(_) => {
                    if let Some(child) = ElementRef::wrap(child) {
                        self.read_element(child);
                    }
                }
                _ => {}
            }
        }
    }

    fn read_element(&mut self, element: ElementRef) {
        let name = element.value().name();
        if is_skipped(element) {
            return;
        }
        if let Some(level) = heading_level(name) {
            self.flush();
            let mut heading = PageReader::default();
            heading.read(element);
            self.builder.heading(level, &heading.paragraph);
            return;
        }
        match name {
            "br" => self.paragraph.push('\n'),
            // Cells of a row stay one paragraph, apart.
            "td" | "th" => {
                self.read(element);
                self.paragraph.push(' ');
            }
            _ if BLOCKS.contains(&name) => {
                self.flush();
                self.read(element);
                self.flush();
            }
            _ => self.read(element),
        }
    }

    fn flush(&mut self) {
        let paragraph = std::mem::take(&mut self.paragraph);
        self.builder.paragraph(&paragraph);
    }
}

fn is_skipped(element: ElementRef) -> bool {
    let value = element.value();
    SKIPPED.contains(&value.name())
        || value.attr("hidden").is_some()
        || value
            .classes()
            .any(|class| SKIPPED_CLASSES.contains(&class))
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::sections::section;

    #[test]
    fn reads_the_main_content_cut_at_headings() {
        let page = r##"<!DOCTYPE html><html><head><title>t</title><style>p{}</style></head>
<body><div class="sphinxsidebar">Navigation junk</div>
<div class="body" role="main">
<section><h1><code>json</code> — JSON encoder and decoder<a class="headerlink" href="#m">¶</a></h1>
<p>Intro &amp; more
text.</p>
<section><h2>Basic Usage<a class="headerlink" href="#b">¶</a></h2>
<dl><dt><span>json.</span><span>dump</span>(<em>obj</em>, <em>fp</em>)<a class="headerlink">¶</a></dt>
<dd><p>Serialize <em>obj</em>.</p><p>If <em>sort_keys</em> is true, sorted.</p></dd></dl>
<table><tr><th>Option</th><th>Meaning</th></tr><tr><td>a</td><td>first<br>line</td></tr></table>
<aside class="footnote"><p>An extra <code>\r</code> will be added.</p></aside>
<script>var x = 1;</script>
</section></section></div>
<footer>Copyright</footer></body></html>"##;
        assert_eq!(
            html_sections(page),
            vec![
                section(
                    &["json — JSON encoder and decoder"],
                    &["Intro & more text."]
                ),
                section(
                    &["json — JSON encoder and decoder", "Basic Usage"],
                    &[
                        "json.dump(obj, fp)",
                        "Serialize obj.",
                        "If sort_keys is true, sorted.",
                        "Option Meaning",
                        "a first line",
                        "An extra \\r will be added.",
                    ]
                ),
            ]
        );
    }

    #[test]
    fn a_page_without_markers_reads_its_body_and_broken_markup_still_reads() {
        assert_eq!(
            html_sections("<p>one<p>two <b>bold</i><h3>Late</h3>three"),
            vec![
                section(&[], &["one", "two bold"]),
                section(&["Late"], &["three"])
            ]
        );
        assert!(html_sections("").is_empty());
        assert_eq!(
            html_sections("<nav>menu</nav><p hidden>secret</p><main><p>kept</p></main>"),
            vec![section(&[], &["kept"])]
        );
    }
}

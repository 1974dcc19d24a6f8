//! The full-text index of a text collection (one with an embedder): BM25
//! over each point's text with tantivy, in memory, rebuilt from the points
//! at start-up and kept in step with every upsert and delete.
//!
//! Text is tokenised with tantivy's `en_stem` analyser (lower case, English
//! stemming), so "refunds" finds "refund". Queries are not parsed: every
//! token of the query text is a term that may match, as in BM25 retrieval,
//! so no user text is a query syntax error.

use parking_lot::Mutex;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::{doc, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// tantivy's writer needs at least 15 MB per indexing thread.
const WRITER_HEAP_BYTES: usize = 32 * 1024 * 1024;
const ANALYZER: &str = "en_stem";

pub struct TextIndex {
    index: Index,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    id: Field,
    text: Field,
}

impl TextIndex {
    pub fn new() -> tantivy::Result<TextIndex> {
        let mut schema = Schema::builder();
        let id = schema.add_text_field("id", STRING | STORED);
        let text_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let text = schema.add_text_field("text", text_options);
        let index = Index::create_in_ram(schema.build());
        let writer = index.writer_with_num_threads(1, WRITER_HEAP_BYTES)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(TextIndex {
            index,
            writer: Mutex::new(writer),
            reader,
            id,
            text,
        })
    }

    /// Adds or replaces (by id) the texts of these points and makes them
    /// searchable before returning.
    pub fn upsert<'a>(
        &self,
        points: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> tantivy::Result<()> {
        let mut writer = self.writer.lock();
        for (id, text) in points {
            writer.delete_term(Term::from_field_text(self.id, id));
            writer.add_document(doc!(self.id => id, self.text => text))?;
        }
        writer.commit()?;
        self.reader.reload()
    }

    pub fn delete(&self, ids: &[String]) -> tantivy::Result<()> {
        let mut writer = self.writer.lock();
        for id in ids {
            writer.delete_term(Term::from_field_text(self.id, id));
        }
        writer.commit()?;
        self.reader.reload()
    }

    /// The ids of the `limit` texts that match `query` best by BM25, best
    /// first, with their scores.
    pub fn search(&self, query: &str, limit: usize) -> tantivy::Result<Vec<(String, f32)>> {
        let mut analyzer = self.index.tokenizer_for_field(self.text)?;
        let mut stream = analyzer.token_stream(query);
        let mut terms = Vec::new();
        while stream.advance() {
            terms.push(Term::from_field_text(self.text, &stream.token().text));
        }
        terms.sort();
        terms.dedup();
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .into_iter()
            .map(|term| {
                let query: Box<dyn Query> =
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                (Occur::Should, query)
            })
            .collect();
        let searcher = self.reader.searcher();
        let best = searcher.search(&BooleanQuery::new(clauses), &TopDocs::with_limit(limit))?;
        let mut hits = Vec::with_capacity(best.len());
        for (score, address) in best {
            let document: TantivyDocument = searcher.doc(address)?;
            if let Some(id) = document.get_first(self.id).and_then(|value| value.as_str()) {
                hits.push((id.to_string(), score));
            }
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(hits: &[(String, f32)]) -> Vec<&str> {
        hits.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn bm25_ranks_by_terms_stems_and_follows_replacements_and_deletes() {
        let index = TextIndex::new().unwrap();
        index
            .upsert([
                ("a", "Refunds are paid within five business days."),
                ("b", "The office opens at nine; the office closes at five."),
                ("c", "Shipping abroad takes two weeks."),
            ])
            .unwrap();
        let hits = index.search("when is my refund paid?", 10).unwrap();
        assert_eq!(ids(&hits)[0], "a", "the stem of `refunds` matches `refund`");
        assert_eq!(ids(&index.search("office", 10).unwrap()), vec!["b"]);
        assert!(index.search("", 10).unwrap().is_empty());
        assert!(index.search("?!", 10).unwrap().is_empty());
        assert!(index.search("zebra", 10).unwrap().is_empty());

        index.upsert([("c", "Refunds for shipping costs")]).unwrap();
        assert_eq!(
            ids(&index.search("abroad", 10).unwrap()),
            Vec::<&str>::new()
        );
        let refund_hits = index.search("refund", 10).unwrap();
        let mut refunded = ids(&refund_hits);
        refunded.sort();
        assert_eq!(refunded, vec!["a", "c"]);

        index.delete(&["a".to_string()]).unwrap();
        assert_eq!(ids(&index.search("refund", 10).unwrap()), vec!["c"]);
        // A query with syntax characters is only words.
        assert_eq!(
            ids(&index.search("title:(office AND \"", 10).unwrap()),
            vec!["b"]
        );
    }
}

//! Token counts from the vector index's CountTokens: the collection's own
//! embedder counts, so passages are cut to exactly what it reads.

use keel_core::channel::ServiceChannel;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_proto::v1::CountTokensRequest;

use crate::cli::chunk::SectionTokens;
use crate::cli::error::rpc;
use crate::cli::sections::Section;
use crate::cli::{output, CliError};

/// Texts per CountTokens call (the service takes at most 256).
const TEXTS_PER_CALL: usize = 256;
/// Bytes per call, well under gRPC's 4 MiB message limit.
const BYTES_PER_CALL: usize = 1024 * 1024;

/// What a collection's embedder reads of one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderWindow {
    pub embedder: String,
    /// Special tokens included; `None`: no limit it knows of.
    pub max_input_tokens: Option<usize>,
    pub special_tokens: usize,
}

pub async fn embedder_window(
    client: &mut VectorIndexServiceClient<ServiceChannel>,
    collection: &str,
) -> Result<EmbedderWindow, CliError> {
    let counted = client
        .count_tokens(CountTokensRequest {
            collection: collection.to_string(),
            embedder: String::new(),
            texts: vec![String::new()],
        })
        .await
        .map_err(rpc("vector-index CountTokens"))?
        .into_inner();
    Ok(EmbedderWindow {
        embedder: counted.embedder,
        max_input_tokens: (counted.max_input_tokens > 0)
            .then_some(counted.max_input_tokens as usize),
        special_tokens: counted.special_tokens as usize,
    })
}

/// The tokens of every word of every section of `documents`, in the same
/// shape: per document, per section.
pub async fn count_section_tokens(
    client: &mut VectorIndexServiceClient<ServiceChannel>,
    collection: &str,
    documents: &[&[Section]],
) -> Result<Vec<Vec<SectionTokens>>, CliError> {
    // Every heading path and paragraph, in order, as one list of texts.
    let mut texts: Vec<String> = Vec::new();
    for section in documents.iter().copied().flatten() {
        texts.push(section.heading());
        texts.extend(section.paragraphs.iter().cloned());
    }
    let progress = output::progress_bar(texts.len() as u64, "texts counted");
    let mut counts: Vec<Vec<u32>> = Vec::with_capacity(texts.len());
    for batch in batches(&texts) {
        let counted = client
            .count_tokens(CountTokensRequest {
                collection: collection.to_string(),
                embedder: String::new(),
                texts: batch.to_vec(),
            })
            .await
            .map_err(rpc("vector-index CountTokens"))?
            .into_inner();
        if counted.texts.len() != batch.len() {
            return Err(CliError::Invalid(format!(
                "vector-index CountTokens answered {} counts for {} texts",
                counted.texts.len(),
                batch.len()
            )));
        }
        progress.inc(batch.len() as u64);
        counts.extend(counted.texts.into_iter().map(|text| text.counts));
    }
    progress.finish_and_clear();

    let mut counts = counts.into_iter();
    let mut shaped = Vec::with_capacity(documents.len());
    for sections in documents {
        let mut document = Vec::with_capacity(sections.len());
        for section in sections.iter() {
            document.push(SectionTokens {
                heading: counts.next().unwrap_or_default(),
                paragraphs: counts.by_ref().take(section.paragraphs.len()).collect(),
            });
        }
        shaped.push(document);
    }
    Ok(shaped)
}

/// Consecutive runs of `texts` within the per-call limits.
fn batches(texts: &[String]) -> Vec<&[String]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (position, text) in texts.iter().enumerate() {
        let full = position - start == TEXTS_PER_CALL || bytes + text.len() > BYTES_PER_CALL;
        if full && position > start {
            batches.push(&texts[start..position]);
            start = position;
            bytes = 0;
        }
        bytes += text.len();
    }
    if start < texts.len() {
        batches.push(&texts[start..]);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_order_and_both_limits() {
        let texts: Vec<String> = (0..600).map(|n| n.to_string()).collect();
        let sizes: Vec<usize> = batches(&texts).iter().map(|batch| batch.len()).collect();
        assert_eq!(sizes, [256, 256, 88]);
        let big: Vec<String> = (0..5).map(|_| "x".repeat(400 * 1024)).collect();
        let sizes: Vec<usize> = batches(&big).iter().map(|batch| batch.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        assert!(batches(&[]).is_empty());
        let rejoined: Vec<&String> = batches(&texts).into_iter().flatten().collect();
        assert_eq!(rejoined.len(), 600);
        assert_eq!(rejoined[300], "300");
    }
}

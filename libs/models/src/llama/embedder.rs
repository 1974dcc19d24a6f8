//! A sentence embedder (BERT family, e.g. all-MiniLM-L6-v2) from a GGUF
//! file, run by llama.cpp in process.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tracing::{debug, info};

use super::backend::{backend, load_model};
use super::cpu::CpuShare;
use super::workers::{start_workers, WorkerStart};
use crate::{Embedder, ModelError};

/// How to load and run a [`LlamaEmbedder`].
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaEmbedderOptions {
    /// The name the catalog knows the embedder by (`minilm`).
    pub name: String,
    pub model_path: PathBuf,
    pub threads: u32,
    /// Longest input in tokens, `[CLS]` and `[SEP]` included; longer inputs
    /// keep their first tokens and the final `[SEP]`, as
    /// sentence-transformers does (256 for all-MiniLM-L6-v2).
    pub max_sequence_tokens: usize,
    /// Tokens per llama.cpp call. Sequences are packed without padding and
    /// attention cost grows with a call's total tokens, so batches are cut
    /// by tokens, not by a count of texts. Never below `max_sequence_tokens`.
    pub batch_tokens: usize,
}

impl LlamaEmbedderOptions {
    pub fn new(name: &str, model_path: PathBuf) -> LlamaEmbedderOptions {
        LlamaEmbedderOptions {
            name: name.to_string(),
            model_path,
            threads: 2,
            max_sequence_tokens: 256,
            batch_tokens: 512,
        }
    }
}

/// Most sequences in one llama.cpp call; each needs a sequence id and
/// llama.cpp allows at most 256.
const MAX_SEQUENCES_PER_BATCH: usize = 64;

/// Embeddings with mean pooling over the tokens and L2 normalisation, from
/// one llama.cpp context that is loaded once and reused.
pub struct LlamaEmbedder {
    name: String,
    model: Arc<LlamaModel>,
    dimension: usize,
    max_sequence_tokens: usize,
    /// Tokens added to every text: `[CLS]` and `[SEP]` for BERT models.
    special_tokens: usize,
    jobs: mpsc::Sender<EmbeddingJob>,
}

struct EmbeddingJob {
    sequences: Vec<Vec<LlamaToken>>,
    reply: mpsc::SyncSender<Result<Vec<Vec<f32>>, ModelError>>,
}

impl LlamaEmbedder {
    pub fn load(options: &LlamaEmbedderOptions) -> Result<LlamaEmbedder, ModelError> {
        let started = Instant::now();
        let model = load_model("embedder", &options.name, &options.model_path)?;
        let dimension = usize::try_from(model.n_embd()).map_err(|_negative| {
            ModelError::Backend(format!("embedder `{}` reports no dimension", options.name))
        })?;
        if options.max_sequence_tokens < 2 {
            return Err(ModelError::InvalidInput(format!(
                "max_sequence_tokens of embedder `{}` must be at least 2 ([CLS] and [SEP]), got {}",
                options.name, options.max_sequence_tokens
            )));
        }
        // A non-causal model sees each sequence whole in one call, so a call
        // must hold the longest sequence.
        let batch_tokens = options.batch_tokens.max(options.max_sequence_tokens);
        let batch_tokens_u32 = u32::try_from(batch_tokens).map_err(|_too_big| {
            ModelError::InvalidInput(format!("batch_tokens {batch_tokens} is too large"))
        })?;
        let context_size = NonZeroU32::new(batch_tokens_u32).ok_or_else(|| {
            ModelError::InvalidInput("batch_tokens must be at least 1".to_string())
        })?;
        let threads = i32::try_from(options.threads.max(1)).unwrap_or(i32::MAX);
        let context_params = LlamaContextParams::default()
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean)
            .with_n_ctx(Some(context_size))
            .with_n_batch(batch_tokens_u32)
            .with_n_ubatch(batch_tokens_u32)
            .with_n_seq_max(MAX_SEQUENCES_PER_BATCH as u32)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let model = Arc::new(model);
        let worker_model = model.clone();
        let thread_name = format!("keel-embed-{}", options.name);
        let jobs = start_workers(&thread_name, 1, move |start: WorkerStart<EmbeddingJob>| {
            run_worker(&worker_model, context_params.clone(), batch_tokens, &start);
        })?;
        info!(
            embedder = %options.name,
            path = %options.model_path.display(),
            dimension,
            batch_tokens,
            threads = options.threads,
            load_ms = started.elapsed().as_millis() as u64,
            "embedder loaded"
        );
        let special_tokens = model.vocab().tokenize(b"", true, false).len();
        Ok(LlamaEmbedder {
            name: options.name.clone(),
            model,
            dimension,
            max_sequence_tokens: options.max_sequence_tokens,
            special_tokens,
            jobs,
        })
    }

    /// The tokens the model sees for `text`: `[CLS] … [SEP]`, cut to
    /// `max_sequence_tokens` keeping the final `[SEP]`.
    pub fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        // `add_special` adds the tokens the GGUF asks for, here [CLS] and
        // [SEP]; text that looks like a special token stays text.
        let tokens = self.model.vocab().tokenize(text.as_bytes(), true, false);
        truncate_keeping_last(tokens, self.max_sequence_tokens)
    }
}

impl Embedder for LlamaEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn provider(&self) -> &str {
        "llama.cpp"
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn word_tokens(&self, text: &str) -> Vec<u32> {
        // WordPiece splits words independently (after splitting on
        // whitespace and punctuation), so the sum over words is the text's
        // count; a word that repeats is tokenized once.
        let vocab = self.model.vocab();
        let mut known: HashMap<&str, u32> = HashMap::new();
        text.split_whitespace()
            .map(|word| {
                *known
                    .entry(word)
                    .or_insert_with(|| vocab.tokenize(word.as_bytes(), false, false).len() as u32)
            })
            .collect()
    }

    fn max_input_tokens(&self) -> Option<usize> {
        Some(self.max_sequence_tokens)
    }

    fn special_tokens(&self) -> usize {
        self.special_tokens
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let mut sequences = Vec::with_capacity(texts.len());
        for text in texts {
            sequences.push(self.tokenize(text));
        }
        let total_tokens: usize = sequences.iter().map(Vec::len).sum();
        let worker_gone = || {
            ModelError::Backend(format!(
                "the worker of embedder `{}` stopped unexpectedly",
                self.name
            ))
        };
        let (reply_sender, reply_receiver) = mpsc::sync_channel(1);
        self.jobs
            .send(EmbeddingJob {
                sequences,
                reply: reply_sender,
            })
            .map_err(|_closed| worker_gone())?;
        let vectors = reply_receiver.recv().map_err(|_closed| worker_gone())??;
        debug!(
            embedder = %self.name,
            texts = texts.len(),
            tokens = total_tokens,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "embedded"
        );
        Ok(vectors)
    }
}

fn run_worker(
    model: &LlamaModel,
    context_params: LlamaContextParams,
    batch_tokens: usize,
    start: &WorkerStart<EmbeddingJob>,
) {
    let backend = match backend() {
        Ok(backend) => backend,
        Err(error) => return start.report_ready(Err(error)),
    };
    let mut context = match model.new_context(backend, context_params) {
        Ok(context) => context,
        Err(error) => {
            return start.report_ready(Err(ModelError::Backend(format!(
                "cannot create a llama.cpp embedding context: {error}"
            ))))
        }
    };
    start.report_ready(Ok(()));
    let mut batch = LlamaBatch::new(batch_tokens, 1);
    while let Some(job) = start.next_job() {
        let result = embed_sequences(&mut context, &mut batch, batch_tokens, &job.sequences);
        // The caller only stops listening when it is gone; nothing to tell.
        let _ = job.reply.send(result);
    }
}

fn embed_sequences(
    context: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    batch_tokens: usize,
    sequences: &[Vec<LlamaToken>],
) -> Result<Vec<Vec<f32>>, ModelError> {
    let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
    let mut vectors = Vec::with_capacity(sequences.len());
    let mut cpu = CpuShare::new();
    for range in plan_batches(&lengths, batch_tokens, MAX_SEQUENCES_PER_BATCH) {
        context
            .clear_kv_cache_seq(None, None, None)
            .map_err(|error| {
                ModelError::Backend(format!("cannot clear the llama.cpp cache: {error}"))
            })?;
        batch.clear();
        for (seq_id, tokens) in (0_i32..).zip(&sequences[range.clone()]) {
            // Every token is an output: pooling reads all of them.
            batch.add_sequence(tokens, seq_id, true).map_err(|error| {
                ModelError::Backend(format!("cannot fill the llama.cpp batch: {error}"))
            })?;
        }
        cpu.decode(context, batch)
            .map_err(|error| ModelError::Backend(format!("llama.cpp decode failed: {error}")))?;
        for seq_id in (0_i32..).take(range.len()) {
            let pooled = context.embeddings_seq_ith(seq_id).map_err(|error| {
                ModelError::Backend(format!("llama.cpp returned no embedding: {error}"))
            })?;
            vectors.push(l2_normalised(pooled));
        }
    }
    Ok(vectors)
}

/// Consecutive ranges of sequences whose lengths add up to at most
/// `budget` tokens and hold at most `max_sequences` each; a sequence longer
/// than the budget gets a range of its own.
fn plan_batches(lengths: &[usize], budget: usize, max_sequences: usize) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut tokens_in_batch = 0;
    for (index, length) in lengths.iter().enumerate() {
        let batch_is_full = tokens_in_batch + length > budget || index - start >= max_sequences;
        if index > start && batch_is_full {
            batches.push(start..index);
            start = index;
            tokens_in_batch = 0;
        }
        tokens_in_batch += length;
    }
    if start < lengths.len() {
        batches.push(start..lengths.len());
    }
    batches
}

/// Cuts `tokens` to `max_tokens` keeping the last one (`[SEP]`): dropping
/// it, as a plain cut would, changes long sentences' vectors.
fn truncate_keeping_last<T: Copy>(mut tokens: Vec<T>, max_tokens: usize) -> Vec<T> {
    if tokens.len() <= max_tokens || max_tokens == 0 {
        return tokens;
    }
    let Some(last) = tokens.last().copied() else {
        return tokens;
    };
    tokens.truncate(max_tokens - 1);
    tokens.push(last);
    tokens
}

fn l2_normalised(vector: &[f32]) -> Vec<f32> {
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    if norm == 0.0 {
        return vector.to_vec();
    }
    vector.iter().map(|value| value / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_by_tokens_not_by_count() {
        assert_eq!(
            plan_batches(&[200, 200, 200, 10, 10], 512, 64),
            vec![0..2, 2..5]
        );
        assert_eq!(plan_batches(&[], 512, 64), Vec::<Range<usize>>::new());
    }

    #[test]
    fn a_batch_holds_at_most_max_sequences() {
        assert_eq!(plan_batches(&[2; 5], 512, 2), vec![0..2, 2..4, 4..5]);
    }

    #[test]
    fn a_sequence_longer_than_the_budget_goes_alone() {
        assert_eq!(
            plan_batches(&[10, 600, 10], 512, 64),
            vec![0..1, 1..2, 2..3]
        );
    }

    #[test]
    fn truncation_keeps_the_final_separator() {
        let tokens: Vec<u32> = (0..300).collect();
        let truncated = truncate_keeping_last(tokens, 256);
        assert_eq!(truncated.len(), 256);
        assert_eq!(truncated[254], 254);
        assert_eq!(truncated[255], 299);
        assert_eq!(truncate_keeping_last(vec![1, 2, 3], 256), vec![1, 2, 3]);
    }

    #[test]
    fn normalised_vectors_have_unit_length() {
        assert_eq!(l2_normalised(&[3.0, 4.0]), vec![0.6, 0.8]);
        assert_eq!(l2_normalised(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}

//! Speed of Keel's in-process models (`smollm2`, `minilm`), measured the way
//! serving uses them: through the `Generator` and `Embedder` traits of the
//! catalog `keel up` loads. `loadtests/models/reference.py` measures the
//! reference implementations on the same workload file, and
//! `loadtests/models_bench.sh` runs both in turns and prints the ratios.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use keel_models::{
    ChatMessage, Embedder, GenerationParams, GenerationRequest, Generator, ModelError, Role,
};
use serde::{Deserialize, Serialize};

use crate::corpus::load_markdown_dir;

/// Sentences per embedding pass: enough that one pass takes seconds.
const SENTENCES: usize = 256;
/// Corpus files whose text makes up the chat prompt (~650 tokens).
const PROMPT_FILES: usize = 2;

/// What both sides run: one chat prompt and a list of sentences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub messages: Vec<WorkloadMessage>,
    pub max_tokens: u32,
    pub sentences: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadMessage {
    pub role: String,
    pub content: String,
}

impl Workload {
    /// A RAG-shaped prompt over the first files of `corpus_dir`, asking for
    /// a long answer, and the corpus's sentences (repeated up to 256).
    pub fn from_corpus(corpus_dir: &Path) -> std::io::Result<Workload> {
        let passages = load_markdown_dir(corpus_dir)?;
        let mut sources: Vec<&str> = passages.iter().map(|p| p.source.as_str()).collect();
        sources.dedup();
        let prompt_sources = &sources[..PROMPT_FILES.min(sources.len())];
        let context: Vec<String> = passages
            .iter()
            .filter(|passage| prompt_sources.contains(&passage.source.as_str()))
            .map(|passage| format!("[{}] {}", passage.id, passage.text))
            .collect();
        let user = format!(
            "{}\n\nExplain every passage above in detail, one paragraph per passage.",
            context.join("\n")
        );
        let mut sentences: Vec<String> = passages
            .iter()
            .flat_map(|passage| split_sentences(&passage.text))
            .collect();
        if sentences.is_empty() {
            return Err(std::io::Error::other(format!(
                "{}: no sentences",
                corpus_dir.display()
            )));
        }
        let distinct = sentences.len();
        let mut index = 0;
        while sentences.len() < SENTENCES {
            sentences.push(sentences[index % distinct].clone());
            index += 1;
        }
        sentences.truncate(SENTENCES);
        Ok(Workload {
            messages: vec![
                WorkloadMessage {
                    role: "system".to_string(),
                    content: "You are the support assistant of Keel.".to_string(),
                },
                WorkloadMessage {
                    role: "user".to_string(),
                    content: user,
                },
            ],
            max_tokens: 128,
            sentences,
        })
    }

    fn request(&self) -> Result<GenerationRequest, ModelError> {
        let mut messages = Vec::new();
        for message in &self.messages {
            let role = Role::parse(&message.role).ok_or_else(|| {
                ModelError::InvalidInput(format!("unknown role {:?}", message.role))
            })?;
            messages.push(ChatMessage {
                role,
                content: message.content.clone(),
            });
        }
        Ok(GenerationRequest {
            messages,
            question: String::new(),
            passages: Vec::new(),
            params: GenerationParams {
                temperature: Some(0.0),
                max_tokens: Some(self.max_tokens),
                ..GenerationParams::default()
            },
        })
    }
}

/// Sentences of a paragraph: split after `.`, `?` or `!` followed by a space.
fn split_sentences(text: &str) -> Vec<String> {
    let mut sentences = Vec::new();
    let mut current = String::new();
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        current.push(if character == '\n' { ' ' } else { character });
        let at_end = matches!(character, '.' | '?' | '!')
            && characters.peek().is_none_or(|next| next.is_whitespace());
        if at_end {
            let sentence = current.trim().to_string();
            if sentence.split_whitespace().count() >= 3 {
                sentences.push(sentence);
            }
            current.clear();
        }
    }
    let rest = current.trim();
    if rest.split_whitespace().count() >= 3 {
        sentences.push(rest.to_string());
    }
    sentences
}

/// One timed generation. Prefill: the prompt tokens over the time to the
/// first piece of answer (templating, tokenising, the prompt's forward pass
/// and the first sample). Decode: the later tokens over the rest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenerationSample {
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

pub fn time_generation(
    generator: &dyn Generator,
    workload: &Workload,
) -> Result<GenerationSample, ModelError> {
    let request = workload.request()?;
    let started = Instant::now();
    let mut first_piece = None;
    let generation = generator.generate(&request, &mut |_piece| {
        first_piece.get_or_insert_with(Instant::now);
        ControlFlow::Continue(())
    })?;
    let finished = Instant::now();
    let first_piece = first_piece
        .ok_or_else(|| ModelError::Backend("the generator produced no text".to_string()))?;
    let prefill_seconds = (first_piece - started).as_secs_f64();
    let decode_seconds = (finished - first_piece).as_secs_f64();
    let later_tokens = generation.output_tokens.saturating_sub(1);
    if later_tokens == 0 || decode_seconds <= 0.0 {
        return Err(ModelError::Backend(format!(
            "the answer has {} tokens: too short to time decoding",
            generation.output_tokens
        )));
    }
    Ok(GenerationSample {
        prompt_tokens: generation.input_tokens,
        output_tokens: generation.output_tokens,
        prefill_tokens_per_s: f64::from(generation.input_tokens) / prefill_seconds,
        decode_tokens_per_s: f64::from(later_tokens) / decode_seconds,
    })
}

/// Sentences per second embedding `sentences` in batches of `batch_size`.
pub fn time_embedding(
    embedder: &dyn Embedder,
    sentences: &[String],
    batch_size: usize,
    progress: &ProgressBar,
) -> Result<f64, ModelError> {
    let started = Instant::now();
    for batch in sentences.chunks(batch_size.max(1)) {
        let vectors = embedder.embed(batch)?;
        if vectors.len() != batch.len() {
            return Err(ModelError::Backend(format!(
                "{} vectors for {} sentences",
                vectors.len(),
                batch.len()
            )));
        }
        progress.inc(batch.len() as u64);
    }
    Ok(sentences.len() as f64 / started.elapsed().as_secs_f64())
}

/// One round's medians, as one JSON line; the reference script prints the
/// same shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundResult {
    pub implementation: String,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub embed_batch32_sentences_per_s: f64,
    pub embed_batch1_sentences_per_s: f64,
}

/// A warm-up of each model, then `repeats` timed generations and embedding
/// passes; the medians.
pub fn run_round(
    generator: &dyn Generator,
    embedder: &dyn Embedder,
    workload: &Workload,
    repeats: usize,
) -> Result<RoundResult, ModelError> {
    let repeats = repeats.max(1);
    let sentences = &workload.sentences;
    let steps = (repeats + 1) as u64 + 2 * (repeats * sentences.len()) as u64;
    let progress = ProgressBar::new(steps).with_style(
        ProgressStyle::with_template("{msg:>22} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message("warm-up");
    time_generation(generator, workload)?;
    embedder.embed(&sentences[..sentences.len().min(32)])?;
    progress.inc(1);

    progress.set_message("smollm2 generation");
    let mut samples = Vec::new();
    for _ in 0..repeats {
        samples.push(time_generation(generator, workload)?);
        progress.inc(1);
    }
    progress.set_message("minilm batch 32");
    let mut batch32 = Vec::new();
    for _ in 0..repeats {
        batch32.push(time_embedding(embedder, sentences, 32, &progress)?);
    }
    progress.set_message("minilm batch 1");
    let mut batch1 = Vec::new();
    for _ in 0..repeats {
        batch1.push(time_embedding(embedder, sentences, 1, &progress)?);
    }
    progress.finish_and_clear();
    Ok(RoundResult {
        implementation: "keel".to_string(),
        prompt_tokens: samples[0].prompt_tokens,
        output_tokens: samples[0].output_tokens,
        prefill_tokens_per_s: median(samples.iter().map(|s| s.prefill_tokens_per_s).collect()),
        decode_tokens_per_s: median(samples.iter().map(|s| s.decode_tokens_per_s).collect()),
        embed_batch32_sentences_per_s: median(batch32),
        embed_batch1_sentences_per_s: median(batch1),
    })
}

/// The middle value (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_split_at_terminal_punctuation_and_drop_fragments() {
        assert_eq!(
            split_sentences("Keel runs on a laptop. It is fast!\nIs it? Yes it is e.g.so"),
            vec![
                "Keel runs on a laptop.".to_string(),
                "It is fast!".to_string(),
                "Yes it is e.g.so".to_string(),
            ]
        );
    }

    #[test]
    fn the_workload_holds_a_long_prompt_and_256_sentences() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/corpus");
        let workload = Workload::from_corpus(&corpus).unwrap();
        assert_eq!(workload.sentences.len(), SENTENCES);
        assert_eq!(workload.messages.len(), 2);
        assert!(workload.messages[1].content.len() > 2000);
        assert!(workload.messages[1]
            .content
            .contains("[api-rate-limits.md#0]"));
        let request = workload.request().unwrap();
        assert_eq!(request.messages[0].role, Role::System);
        assert_eq!(request.params.temperature, Some(0.0));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}

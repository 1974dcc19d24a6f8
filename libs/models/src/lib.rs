//! keel-models: the `Embedder` and `Generator` traits and the models behind
//! them. The built-in `hashing` embedder and `extractive` generator are
//! deterministic stand-ins with no model weights, for tests and for
//! measuring Keel's own overhead; they are never a silent default.

mod catalog;
mod chat;
mod config;
mod extractive_generator;
pub mod gguf_file;
mod hashing_embedder;
mod llama;
pub mod minilm_gguf;
pub mod model_files;
mod openai_generator;
mod text;

use std::ops::ControlFlow;
use std::sync::Arc;

pub use catalog::ModelCatalog;
pub use chat::{Generation, GenerationRequest};
pub use config::{ModelsConfig, MINILM_EMBEDDER_NAME, SMOLLM2_GENERATOR_NAME};
pub use extractive_generator::ExtractiveGenerator;
pub use hashing_embedder::HashingEmbedder;
// Part of the generator API, so callers need not name keel-types for them.
pub use keel_types::{ChatMessage, FinishReason, GenerationParams, Passage, Role};
pub use llama::{LlamaEmbedder, LlamaEmbedderOptions, LlamaGenerator, LlamaGeneratorOptions};
pub use openai_generator::{OpenAiConfig, OpenAiConfigError, OpenAiGenerator};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown embedder `{0}`")]
    UnknownEmbedder(String),
    #[error("unknown generator `{0}`")]
    UnknownGenerator(String),
    #[error("invalid model input: {0}")]
    InvalidInput(String),
    #[error("model failed: {0}")]
    Backend(String),
    /// The model could not be reached or did not answer in time (a remote
    /// server down, overloaded or slow); another generator may succeed.
    #[error("model unavailable: {0}")]
    Unavailable(String),
}

/// Turns texts into vectors of a fixed dimension. Blocking: call it from
/// `spawn_blocking` or a dedicated pool, never on the async runtime.
pub trait Embedder: Send + Sync {
    fn name(&self) -> &str;
    /// Who runs the model, as traces name it (`gen_ai.provider.name`):
    /// `llama.cpp`, `openai`, or `keel` for the built-ins.
    fn provider(&self) -> &str;
    fn dimension(&self) -> usize;
    /// One vector per text, in order.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError>;
    /// How many tokens each whitespace-separated word of `text` becomes, in
    /// order, without the special tokens of [`Embedder::special_tokens`]:
    /// what a chunker needs to fill the embedder's window without running
    /// past it. The default counts one token per word.
    fn word_tokens(&self, text: &str) -> Vec<u32> {
        text.split_whitespace().map(|_word| 1).collect()
    }
    /// The most tokens the embedder reads from one text, special tokens
    /// included; the rest is cut off. `None` when it knows of no limit.
    fn max_input_tokens(&self) -> Option<usize> {
        None
    }
    /// Tokens the embedder adds to every text (BERT's `[CLS]` and `[SEP]`).
    fn special_tokens(&self) -> usize {
        0
    }
}

/// Answers a chat conversation. Blocking, like [`Embedder::embed`].
pub trait Generator: Send + Sync {
    fn name(&self) -> &str;
    /// Who runs the model, as traces name it (`gen_ai.provider.name`).
    fn provider(&self) -> &str;
    /// Generates the answer, handing each new piece of text to `on_delta` as
    /// soon as it exists (the pieces concatenate to `Generation::text`).
    /// When `on_delta` answers `Break` — the caller went away — generation
    /// stops within a few tokens, hands over nothing more, and returns what
    /// it has, `FinishReason::Cancelled`.
    fn generate(
        &self,
        request: &GenerationRequest,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, ModelError>;
    /// This generator asking its server for `model` instead of its own (a
    /// fine-tuned model); `None` for a generator that runs a local model.
    fn with_model(&self, model: &str) -> Option<SharedGenerator> {
        let _ = model;
        None
    }
    /// The same generator on async I/O, for one whose work is waiting on a
    /// server: served outside the local-model pool, so a process holds
    /// thousands of such answers at once. `None` for a local model.
    fn remote(&self) -> Option<&dyn RemoteGenerator> {
        None
    }
}

/// A generator that answers from a server, awaited rather than blocked on.
pub trait RemoteGenerator: Send + Sync {
    /// As [`Generator::generate`]: each new piece of text goes to `deltas`
    /// as it arrives, and a closed `deltas` (the caller went away) stops
    /// the answer, `FinishReason::Cancelled`.
    fn generate_remote<'a>(
        &'a self,
        request: &'a GenerationRequest,
        deltas: tokio::sync::mpsc::Sender<String>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Generation, ModelError>> + Send + 'a>,
    >;
}

/// An `on_delta` for callers that only want the whole answer.
pub fn ignore_deltas(_delta: &str) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

pub type SharedEmbedder = Arc<dyn Embedder>;
pub type SharedGenerator = Arc<dyn Generator>;

//! A chat model from a GGUF file, run by llama.cpp in process.

use std::num::NonZeroU32;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use tracing::{debug, info};

use super::backend::{backend, load_model, FLASH_ATTENTION_DISABLED};
use super::cpu::CpuShare;
use super::sampling::Sampling;
use super::stream::{StopFilter, Utf8Assembler};
use super::workers::{start_workers, WorkerStart};
use crate::{FinishReason, Generation, GenerationRequest, Generator, ModelError};

/// Prompt tokens per llama.cpp call. One call holds the CPU until it ends
/// (cpu.rs), so this bounds how long a query embedding or another answer's
/// next token waits behind a long prompt: 64 tokens take about 0.3 s on 2
/// slow cores, where 512 took 2.4 s and, with two answers being prefilled
/// at once, made a query's embedding wait past serving's 5 s deadline.
/// Measured on a 737-token prompt, chunks of 32 to 512 tokens prefill at
/// the same speed (fastest of 6 rounds: 3.51 to 3.54 s), so the bound
/// costs nothing.
const PREFILL_CHUNK_TOKENS: usize = 64;

/// How to load and run a [`LlamaGenerator`].
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaGeneratorOptions {
    /// The name the catalog knows the generator by (`smollm2`).
    pub name: String,
    pub model_path: PathBuf,
    /// CPU threads per generation (prefill and decode).
    pub threads: u32,
    /// Tokens of prompt plus answer one generation may hold; a request that
    /// needs more is refused, never silently truncated.
    pub context_length: u32,
    /// Generations in progress at once, each in its own llama.cpp context.
    /// Their llama.cpp calls take turns on the CPU (see cpu.rs), so more
    /// contexts interleave generations; they add no speed.
    pub contexts: usize,
    /// `max_tokens` when the request does not say.
    pub default_max_tokens: u32,
}

impl LlamaGeneratorOptions {
    pub fn new(name: &str, model_path: PathBuf) -> LlamaGeneratorOptions {
        LlamaGeneratorOptions {
            name: name.to_string(),
            model_path,
            threads: 2,
            context_length: 2048,
            contexts: 1,
            default_max_tokens: 256,
        }
    }
}

/// A chat model loaded once, answering through a small pool of reused
/// llama.cpp contexts (the KV cache is cleared between requests). The
/// prompt is the conversation rendered with the chat template stored in the
/// GGUF; its special tokens are parsed as special tokens, generation ends at
/// the model's end-of-generation tokens, and special tokens never reach the
/// text.
pub struct LlamaGenerator {
    name: String,
    model: Arc<LlamaModel>,
    chat_template: LlamaChatTemplate,
    context_length: u32,
    default_max_tokens: u32,
    jobs: mpsc::Sender<GenerationJob>,
}

struct GenerationJob {
    prompt: Vec<LlamaToken>,
    sampling: Sampling,
    max_tokens: u32,
    stop_sequences: Vec<String>,
    /// Never blocks: the worker does not wait for the caller between
    /// tokens (a round trip per token cost about a fifth of decode speed).
    events: mpsc::Sender<WorkerEvent>,
    /// Set by the caller when `on_delta` answers `Break`; the worker stops
    /// at its next token.
    cancelled: Arc<AtomicBool>,
}

enum WorkerEvent {
    Delta(String),
    Finished(Result<Generation, ModelError>),
}

impl LlamaGenerator {
    pub fn load(options: &LlamaGeneratorOptions) -> Result<LlamaGenerator, ModelError> {
        let started = Instant::now();
        let model = load_model("generator", &options.name, &options.model_path)?;
        let chat_template = model.chat_template(None).map_err(|reason| {
            ModelError::Backend(format!(
                "generator `{}` ({}) has no usable chat template: {reason}",
                options.name,
                options.model_path.display()
            ))
        })?;
        let model = Arc::new(model);
        let context_length = NonZeroU32::new(options.context_length).ok_or_else(|| {
            ModelError::InvalidInput(format!(
                "context length of generator `{}` must be at least 1",
                options.name
            ))
        })?;
        let threads = i32::try_from(options.threads.max(1)).unwrap_or(i32::MAX);
        let context_params = LlamaContextParams::default()
            .with_n_ctx(Some(context_length))
            .with_n_batch(PREFILL_CHUNK_TOKENS as u32)
            .with_n_seq_max(1)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_flash_attention_policy(FLASH_ATTENTION_DISABLED);
        let worker_model = model.clone();
        let thread_name = format!("keel-gen-{}", options.name);
        let jobs = start_workers(
            &thread_name,
            options.contexts,
            move |start: WorkerStart<GenerationJob>| {
                run_worker(&worker_model, context_params.clone(), &start);
            },
        )?;
        info!(
            generator = %options.name,
            path = %options.model_path.display(),
            context_length = options.context_length,
            contexts = options.contexts.max(1),
            threads = options.threads,
            load_ms = started.elapsed().as_millis() as u64,
            "generator loaded"
        );
        Ok(LlamaGenerator {
            name: options.name.clone(),
            model,
            chat_template,
            context_length: options.context_length,
            default_max_tokens: options.default_max_tokens,
            jobs,
        })
    }

    pub fn context_length(&self) -> u32 {
        self.context_length
    }

    /// The conversation as the model sees it: rendered by llama.cpp with
    /// the chat template stored in the GGUF, ending with the opening of the
    /// assistant's turn. llama.cpp recognises the template's family
    /// (ChatML for SmolLM2) rather than running its Jinja, so a template's
    /// default system prompt is not added; with it, SmolLM2-135M answered
    /// plain questions worse (measured), and RAG prompts bring their own.
    pub fn render_prompt(&self, request: &GenerationRequest) -> Result<String, ModelError> {
        if request.messages.is_empty() {
            return Err(ModelError::InvalidInput(
                "a generation needs at least one message".to_string(),
            ));
        }
        let mut chat = Vec::with_capacity(request.messages.len());
        for message in &request.messages {
            let chat_message =
                LlamaChatMessage::new(message.role.as_str().to_string(), message.content.clone())
                    .map_err(|error| {
                    ModelError::InvalidInput(format!(
                        "a {} message cannot be passed to the model: {error}",
                        message.role.as_str()
                    ))
                })?;
            chat.push(chat_message);
        }
        self.model
            .apply_chat_template(&self.chat_template, &chat, true)
            .map_err(|error| {
                ModelError::Backend(format!("chat template of `{}` failed: {error}", self.name))
            })
    }

    /// `add_special` adds a BOS token only when the GGUF asks for one.
    fn tokenize_prompt(&self, prompt: &str) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(prompt.as_bytes(), true, true)
    }
}

impl Generator for LlamaGenerator {
    fn name(&self) -> &str {
        &self.name
    }

    fn provider(&self) -> &str {
        "llama.cpp"
    }

    fn generate(
        &self,
        request: &GenerationRequest,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, ModelError> {
        let started = Instant::now();
        let sampling = Sampling::from_params(&request.params)?;
        let max_tokens = request.params.max_tokens.unwrap_or(self.default_max_tokens);
        if max_tokens == 0 {
            return Err(ModelError::InvalidInput(
                "max_tokens must be at least 1".to_string(),
            ));
        }
        if request.params.stop.iter().any(String::is_empty) {
            return Err(ModelError::InvalidInput(
                "stop sequences must not be empty".to_string(),
            ));
        }
        let prompt = self.render_prompt(request)?;
        let prompt_tokens = self.tokenize_prompt(&prompt);
        let needed = prompt_tokens.len() as u64 + u64::from(max_tokens);
        if needed > u64::from(self.context_length) {
            return Err(ModelError::InvalidInput(format!(
                "the prompt has {} tokens and max_tokens is {max_tokens}: {needed} tokens do not fit \
                 the context length {} of generator `{}`; shorten the prompt or lower max_tokens",
                prompt_tokens.len(),
                self.context_length,
                self.name
            )));
        }
        let (event_sender, event_receiver) = mpsc::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let job = GenerationJob {
            prompt: prompt_tokens,
            sampling,
            max_tokens,
            stop_sequences: request.params.stop.clone(),
            events: event_sender,
            cancelled: Arc::clone(&cancelled),
        };
        let worker_gone = || {
            ModelError::Backend(format!(
                "the worker of generator `{}` stopped unexpectedly",
                self.name
            ))
        };
        self.jobs.send(job).map_err(|_closed| worker_gone())?;
        loop {
            match event_receiver.recv() {
                // After a `Break`, the few pieces still in flight are not
                // handed over: the caller asked for no more.
                Ok(WorkerEvent::Delta(text)) => {
                    if !cancelled.load(Ordering::Relaxed) && on_delta(&text).is_break() {
                        cancelled.store(true, Ordering::Relaxed);
                    }
                }
                Ok(WorkerEvent::Finished(result)) => {
                    if let Ok(generation) = &result {
                        debug!(
                            generator = %self.name,
                            input_tokens = generation.input_tokens,
                            output_tokens = generation.output_tokens,
                            finish_reason = ?generation.finish_reason,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "generation finished"
                        );
                    }
                    return result;
                }
                Err(_disconnected) => return Err(worker_gone()),
            }
        }
    }
}

fn run_worker(
    model: &LlamaModel,
    context_params: LlamaContextParams,
    start: &WorkerStart<GenerationJob>,
) {
    let backend = match backend() {
        Ok(backend) => backend,
        Err(error) => return start.report_ready(Err(error)),
    };
    let mut context = match model.new_context(backend, context_params) {
        Ok(context) => context,
        Err(error) => {
            return start.report_ready(Err(ModelError::Backend(format!(
                "cannot create a llama.cpp context: {error}"
            ))))
        }
    };
    start.report_ready(Ok(()));
    let mut batch = LlamaBatch::new(PREFILL_CHUNK_TOKENS, 1);
    while let Some(job) = start.next_job() {
        let result = run_generation(model, &mut context, &mut batch, &job);
        // The caller only stops listening when it is gone; nothing to tell.
        let _ = job.events.send(WorkerEvent::Finished(result));
    }
}

/// The text handed to the caller so far, and whether it wants more.
struct Delivery<'job> {
    job: &'job GenerationJob,
    text: String,
}

impl Delivery<'_> {
    fn deliver(&mut self, delta: &str) -> ControlFlow<()> {
        if self.job.cancelled.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        if delta.is_empty() {
            return ControlFlow::Continue(());
        }
        self.text.push_str(delta);
        match self.job.events.send(WorkerEvent::Delta(delta.to_string())) {
            Ok(()) => ControlFlow::Continue(()),
            // The caller is gone.
            Err(_) => ControlFlow::Break(()),
        }
    }
}

fn run_generation(
    model: &LlamaModel,
    context: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    job: &GenerationJob,
) -> Result<Generation, ModelError> {
    let decode_failed = |error: &dyn std::fmt::Display| {
        ModelError::Backend(format!("llama.cpp decode failed: {error}"))
    };
    let batch_failed = |error: &dyn std::fmt::Display| {
        ModelError::Backend(format!("cannot fill the llama.cpp batch: {error}"))
    };
    // Forgetting the previous request's tokens is enough; zeroing the
    // cache's memory (`clear_kv_cache`) would cost a pass over all of it.
    context
        .clear_kv_cache_seq(None, None, None)
        .map_err(|error| {
            ModelError::Backend(format!("cannot clear the llama.cpp cache: {error}"))
        })?;
    let mut cpu = CpuShare::new();
    // The prompt goes through in chunks, each a call of its own, so that
    // a model waiting for the CPU gets turns during a long one (cpu.rs).
    let last_prompt_index = job.prompt.len().saturating_sub(1);
    for (chunk_index, chunk) in job.prompt.chunks(PREFILL_CHUNK_TOKENS).enumerate() {
        batch.clear();
        for (offset, token) in chunk.iter().enumerate() {
            let index = chunk_index * PREFILL_CHUNK_TOKENS + offset;
            let position = i32::try_from(index).map_err(|error| batch_failed(&error))?;
            batch
                .add(*token, position, &[0], index == last_prompt_index)
                .map_err(|error| batch_failed(&error))?;
        }
        cpu.decode(context, batch)
            .map_err(|error| decode_failed(&error))?;
    }

    let vocab = model.vocab();
    let mut piece = Vec::with_capacity(16);
    let mut sampler = job.sampling.sampler();
    let mut utf8 = Utf8Assembler::default();
    let mut stop_filter = StopFilter::new(job.stop_sequences.clone());
    let mut delivery = Delivery {
        job,
        text: String::new(),
    };
    let mut output_tokens: u32 = 0;
    let mut position = i32::try_from(job.prompt.len()).map_err(|error| batch_failed(&error))?;
    let mut finish_reason = loop {
        let token = sampler.sample(context, batch.n_tokens() - 1);
        output_tokens += 1;
        if vocab.is_eog(token) {
            break FinishReason::Stop;
        }
        // Special tokens render as nothing, so template markup such as
        // `<|im_start|>` never reaches the answer.
        piece.clear();
        vocab.token_to_piece_into(token, &mut piece, false, None);
        let filtered = stop_filter.push(&utf8.push(&piece));
        if delivery.deliver(&filtered.text).is_break() {
            break FinishReason::Cancelled;
        }
        if filtered.stopped {
            break FinishReason::StopSequence;
        }
        // Checked before the decode: the last allowed token is never fed
        // back through the model for a next token nobody will sample.
        if output_tokens >= job.max_tokens {
            break FinishReason::Length;
        }
        batch.clear();
        batch
            .add(token, position, &[0], true)
            .map_err(|error| batch_failed(&error))?;
        position += 1;
        cpu.decode(context, batch)
            .map_err(|error| decode_failed(&error))?;
    };
    if matches!(finish_reason, FinishReason::Stop | FinishReason::Length) {
        let filtered = stop_filter.push(&utf8.finish());
        let mut tail = filtered.text;
        if filtered.stopped {
            finish_reason = FinishReason::StopSequence;
        } else {
            tail.push_str(&stop_filter.finish());
        }
        // Generation is over either way; a caller that left misses nothing.
        let _ = delivery.deliver(&tail);
    }
    Ok(Generation {
        text: delivery.text,
        input_tokens: u32::try_from(job.prompt.len()).unwrap_or(u32::MAX),
        output_tokens,
        finish_reason,
    })
}

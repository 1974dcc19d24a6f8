//! A chain's generator and its fallbacks, tried in order. The next one runs
//! only when the one before failed as unavailable (down, timed out,
//! overloaded, broken) before it handed over any text: once the caller
//! holds part of an answer, the error is that answer's. `generate` blocks
//! (it runs on the generation pool); `generate_remote` awaits, for chains
//! whose generators all answer from a server.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::Instrument;

use keel_core::gen_ai::{self, ChatRequest, ChatResult};
use keel_models::{Generation, GenerationParams, GenerationRequest, ModelError, SharedGenerator};

use crate::error::Error;

/// One generator the chain may answer with.
pub struct Candidate {
    pub name: String,
    pub generator: SharedGenerator,
    pub params: GenerationParams,
}

pub struct Outcome {
    /// The generator that answered, or the last one tried when none did.
    pub generator: String,
    pub result: Result<Generation, Error>,
}

/// Whether `error` blames the generator rather than the request, so that
/// another generator may well succeed.
pub fn allows_fallback(error: &ModelError) -> bool {
    match error {
        ModelError::Unavailable(_) | ModelError::Backend(_) => true,
        ModelError::InvalidInput(_)
        | ModelError::UnknownGenerator(_)
        | ModelError::UnknownEmbedder(_) => false,
    }
}

/// Generates with the first candidate that answers. Each candidate gets
/// its own parameters in `request.params`, and its own `chat {model}` span
/// under `parent`, so a fallback shows in the trace as a failed call
/// followed by the one that answered.
pub fn generate(
    candidates: &[Candidate],
    request: &mut GenerationRequest,
    parent: &tracing::Span,
    on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
) -> Outcome {
    let mut earlier_failures: Vec<String> = Vec::new();
    for (index, candidate) in candidates.iter().enumerate() {
        request.params = candidate.params.clone();
        let chat_span = chat_span(parent, candidate);
        let started = Instant::now();
        let mut handed_over_text = false;
        let result = chat_span.in_scope(|| {
            candidate.generator.generate(request, &mut |piece: &str| {
                if !piece.is_empty() && !handed_over_text {
                    handed_over_text = true;
                    gen_ai::record_first_chunk(&chat_span, started.elapsed().as_secs_f64());
                }
                on_delta(piece)
            })
        });
        record_on_span(&chat_span, request, &result);
        let attempt = Attempt {
            index,
            result,
            handed_over_text,
        };
        if let Some(outcome) = settle(candidates, attempt, &mut earlier_failures) {
            return outcome;
        }
    }
    no_generator()
}

/// Handing one piece of an answer to the caller; `Break` when it left.
pub type DeliveryFuture = Pin<Box<dyn Future<Output = ControlFlow<()>> + Send>>;
pub type Deliver<'a> = dyn Fn(String) -> DeliveryFuture + Send + Sync + 'a;

/// Pieces in flight between a remote generator and the caller: enough to
/// keep a fast server streaming while the caller reads.
const DELTA_BUFFER: usize = 32;

/// [`generate`] on async I/O: every candidate must be remote
/// (`Generator::remote`); each answer streams to `deliver` as it arrives,
/// and no generation worker is held.
pub async fn generate_remote(
    candidates: &[Candidate],
    request: &mut GenerationRequest,
    parent: &tracing::Span,
    deliver: &Deliver<'_>,
) -> Outcome {
    let mut earlier_failures: Vec<String> = Vec::new();
    for (index, candidate) in candidates.iter().enumerate() {
        let Some(remote) = candidate.generator.remote() else {
            return Outcome {
                generator: candidate.name.clone(),
                result: Err(Error::Internal(format!(
                    "generator `{}` is not remote",
                    candidate.name
                ))),
            };
        };
        request.params = candidate.params.clone();
        let chat_span = chat_span(parent, candidate);
        let started = Instant::now();
        let (deltas, mut pieces) = mpsc::channel::<String>(DELTA_BUFFER);
        let forward = async {
            let mut handed_over_text = false;
            while let Some(piece) = pieces.recv().await {
                if !piece.is_empty() && !handed_over_text {
                    handed_over_text = true;
                    gen_ai::record_first_chunk(&chat_span, started.elapsed().as_secs_f64());
                }
                // Leaving drops `pieces`, which tells the generator to stop.
                if deliver(piece).await.is_break() {
                    break;
                }
            }
            handed_over_text
        };
        let generation = remote
            .generate_remote(request, deltas)
            .instrument(chat_span.clone());
        let (result, handed_over_text) = tokio::join!(generation, forward);
        record_on_span(&chat_span, request, &result);
        let attempt = Attempt {
            index,
            result,
            handed_over_text,
        };
        if let Some(outcome) = settle(candidates, attempt, &mut earlier_failures) {
            return outcome;
        }
    }
    no_generator()
}

fn no_generator() -> Outcome {
    Outcome {
        generator: String::new(),
        result: Err(Error::FailedPrecondition(
            "the chain names no generator".to_string(),
        )),
    }
}

/// A candidate's `chat {model}` span under `parent`.
fn chat_span(parent: &tracing::Span, candidate: &Candidate) -> tracing::Span {
    gen_ai::chat_span(
        parent,
        &ChatRequest {
            model: &candidate.name,
            provider: candidate.generator.provider(),
            max_tokens: candidate.params.max_tokens,
            temperature: candidate.params.temperature,
            top_p: candidate.params.top_p,
        },
    )
}

/// How one candidate's try went.
struct Attempt {
    index: usize,
    result: Result<Generation, ModelError>,
    handed_over_text: bool,
}

/// The outcome once `attempt` decides it: its answer, or its error when no
/// next candidate may try; `None` when the next one should.
fn settle(
    candidates: &[Candidate],
    attempt: Attempt,
    earlier_failures: &mut Vec<String>,
) -> Option<Outcome> {
    let candidate = &candidates[attempt.index];
    let error = match attempt.result {
        Ok(generation) => {
            return Some(Outcome {
                generator: candidate.name.clone(),
                result: Ok(generation),
            })
        }
        Err(error) => error,
    };
    let next = candidates.get(attempt.index + 1);
    let falls_back = !attempt.handed_over_text && allows_fallback(&error);
    let Some(next) = next.filter(|_| falls_back) else {
        return Some(Outcome {
            generator: candidate.name.clone(),
            result: Err(name_failures(&candidate.name, error, earlier_failures)),
        });
    };
    tracing::warn!(generator = %candidate.name, fallback = %next.name, %error, "generator failed, falling back");
    earlier_failures.push(format!("generator `{}` failed: {error}", candidate.name));
    None
}

fn record_on_span(
    span: &tracing::Span,
    request: &GenerationRequest,
    result: &Result<Generation, ModelError>,
) {
    let generation = match result {
        Ok(generation) => generation,
        Err(error) => {
            gen_ai::record_error(span, error);
            return;
        }
    };
    gen_ai::record_chat_result(
        span,
        &ChatResult {
            finish_reason: generation.finish_reason.as_str(),
            input_tokens: generation.input_tokens,
            output_tokens: generation.output_tokens,
        },
    );
    if !keel_core::telemetry::records_content() {
        return;
    }
    let prompt: Vec<(&str, &str)> = request
        .messages
        .iter()
        .map(|message| (message.role.as_str(), message.content.as_str()))
        .collect();
    gen_ai::record_chat_content(span, &prompt, &generation.text);
}

/// The last failure, with its status class, naming every generator tried.
fn name_failures(name: &str, error: ModelError, earlier_failures: &[String]) -> Error {
    let mut message = String::new();
    for earlier in earlier_failures {
        message.push_str(earlier);
        message.push_str("; then ");
    }
    message.push_str(&format!("generator `{name}` failed: {error}"));
    match Error::from(error) {
        Error::Unavailable(_) => Error::Unavailable(message),
        Error::FailedPrecondition(_) => Error::FailedPrecondition(message),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use keel_models::{FinishReason, Generator};

    use super::*;

    /// Records the params it was called with; sends `deltas`, then fails
    /// with `failure` or answers.
    struct Scripted {
        deltas: Vec<&'static str>,
        failure: Option<fn(String) -> ModelError>,
        seen_max_tokens: Mutex<Vec<Option<u32>>>,
    }

    impl Scripted {
        fn answering(deltas: Vec<&'static str>) -> Arc<Scripted> {
            Arc::new(Scripted {
                deltas,
                failure: None,
                seen_max_tokens: Mutex::new(Vec::new()),
            })
        }

        fn failing(deltas: Vec<&'static str>, failure: fn(String) -> ModelError) -> Arc<Scripted> {
            Arc::new(Scripted {
                deltas,
                failure: Some(failure),
                seen_max_tokens: Mutex::new(Vec::new()),
            })
        }

        fn calls(&self) -> Vec<Option<u32>> {
            self.seen_max_tokens.lock().unwrap().clone()
        }
    }

    impl Generator for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }

        fn provider(&self) -> &str {
            "test"
        }

        fn generate(
            &self,
            request: &GenerationRequest,
            on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
        ) -> Result<Generation, ModelError> {
            self.seen_max_tokens
                .lock()
                .unwrap()
                .push(request.params.max_tokens);
            let mut text = String::new();
            for delta in &self.deltas {
                text.push_str(delta);
                let _ = on_delta(delta);
            }
            if let Some(failure) = self.failure {
                return Err(failure("scripted failure".to_string()));
            }
            Ok(Generation {
                text,
                input_tokens: 1,
                output_tokens: self.deltas.len() as u32,
                finish_reason: FinishReason::Stop,
            })
        }
    }

    fn candidate(name: &str, generator: Arc<Scripted>, max_tokens: u32) -> Candidate {
        Candidate {
            name: name.to_string(),
            generator,
            params: GenerationParams {
                max_tokens: Some(max_tokens),
                ..GenerationParams::default()
            },
        }
    }

    fn request() -> GenerationRequest {
        GenerationRequest {
            messages: Vec::new(),
            question: "q".to_string(),
            passages: Vec::new(),
            params: GenerationParams::default(),
        }
    }

    fn run(candidates: &[Candidate]) -> (Outcome, Vec<String>) {
        let mut deltas = Vec::new();
        let no_parent = tracing::Span::none();
        let outcome = generate(
            candidates,
            &mut request(),
            &no_parent,
            &mut |piece: &str| {
                deltas.push(piece.to_string());
                ControlFlow::Continue(())
            },
        );
        (outcome, deltas)
    }

    #[test]
    fn an_unavailable_primary_falls_back_with_the_fallbacks_own_params() {
        let primary = Scripted::failing(Vec::new(), ModelError::Unavailable);
        let second = Scripted::failing(Vec::new(), ModelError::Backend);
        let third = Scripted::answering(vec!["Thirty", " days"]);
        let (outcome, deltas) = run(&[
            candidate("remote", primary.clone(), 10),
            candidate("backup", second.clone(), 20),
            candidate("local", third.clone(), 30),
        ]);
        assert_eq!(outcome.generator, "local");
        assert_eq!(outcome.result.unwrap().text, "Thirty days");
        assert_eq!(deltas, vec!["Thirty", " days"]);
        assert_eq!(primary.calls(), vec![Some(10)]);
        assert_eq!(second.calls(), vec![Some(20)]);
        assert_eq!(third.calls(), vec![Some(30)]);
    }

    #[test]
    fn a_failure_after_text_was_handed_over_is_the_answers() {
        let primary = Scripted::failing(vec!["Thir"], ModelError::Unavailable);
        let fallback = Scripted::answering(vec!["never"]);
        let (outcome, deltas) = run(&[
            candidate("remote", primary, 10),
            candidate("local", fallback.clone(), 20),
        ]);
        assert_eq!(outcome.generator, "remote");
        let error = outcome.result.unwrap_err();
        assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
        assert_eq!(deltas, vec!["Thir"]);
        assert!(fallback.calls().is_empty());
    }

    #[test]
    fn a_request_the_generator_refuses_does_not_fall_back() {
        let primary = Scripted::failing(Vec::new(), ModelError::InvalidInput);
        let fallback = Scripted::answering(vec!["never"]);
        let (outcome, _) = run(&[
            candidate("remote", primary, 10),
            candidate("local", fallback.clone(), 20),
        ]);
        let error = outcome.result.unwrap_err();
        assert!(matches!(error, Error::FailedPrecondition(_)), "{error:?}");
        assert!(fallback.calls().is_empty());
    }

    #[test]
    fn when_every_generator_fails_the_error_names_each() {
        let (outcome, _) = run(&[
            candidate(
                "remote",
                Scripted::failing(Vec::new(), ModelError::Unavailable),
                10,
            ),
            candidate(
                "local",
                Scripted::failing(Vec::new(), ModelError::Backend),
                20,
            ),
        ]);
        assert_eq!(outcome.generator, "local");
        let Err(Error::Unavailable(message)) = outcome.result else {
            panic!("expected unavailable");
        };
        assert_eq!(
            message,
            "generator `remote` failed: model unavailable: scripted failure; \
             then generator `local` failed: model failed: scripted failure"
        );
    }

    #[test]
    fn fallback_classes() {
        assert!(allows_fallback(&ModelError::Unavailable("x".into())));
        assert!(allows_fallback(&ModelError::Backend("x".into())));
        assert!(!allows_fallback(&ModelError::InvalidInput("x".into())));
        assert!(!allows_fallback(&ModelError::UnknownGenerator("x".into())));
    }
}

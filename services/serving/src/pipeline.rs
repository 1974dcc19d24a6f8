//! One query: validate, pick a route, resolve the chain, retrieve, render the
//! prompt, generate (falling back along the chain's generators), answer, and
//! hand an inference record to the log, whether the query succeeded or not.
//!
//! Each query runs in a task of its own, so that it finishes and records
//! what happened also when its caller goes away: a unary caller's dropped
//! future sets a flag, a streaming caller's dropped stream closes the event
//! channel, and either way the generator is told to stop at its next delta.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_core::telemetry::{span_ids, CallerTrace};
use keel_models::{Generation, GenerationRequest, ModelCatalog};
use keel_store::Store;
use keel_types::{
    validate, CacheHit, ChatMessage, FieldError, FinishReason, GuardrailDecision, InferenceRecord,
    InferenceStatus, ModelRef, Passage, RequestId, Role,
};
use tokio::sync::{mpsc, Semaphore};
use tracing::field::Empty;
use tracing::Instrument;
use uuid::Uuid;

use crate::cache::{self, AnswerCache, CachedAnswer, Lookup};
use crate::endpoint::Shadow;
use crate::error::Error;
use crate::experiment::{self, Side};
use crate::experiment_cache::RunningExperiments;
use crate::fallback::{self, Candidate};
use crate::generation::GenerationPool;
use crate::guardrails::Guardrails;
use crate::inference_log::InferenceLog;
use crate::limits::{Caller, Limiter, Reservation};
use crate::metrics::{QueryMetrics, QueryObservation};
use crate::resolver::Resolver;
use crate::retrieval::{Retriever, SearchQuery};
use crate::{routing, store};

pub const MAX_QUESTION_BYTES: usize = 16 * 1024;
pub const MAX_MESSAGES: usize = 64;
pub const SNIPPET_CHARS: usize = 300;
/// The metrics label of a query for an endpoint that does not exist.
pub const UNKNOWN_ENDPOINT: &str = "unknown";
/// Events of a streamed answer waiting for the client. Small: the
/// transport buffers too, and a client that stops reading should hold the
/// generator back soon.
pub const STREAM_EVENT_BUFFER: usize = 16;

/// A message as the caller sent it; the role is checked in validation.
#[derive(Debug, Clone)]
pub struct MessageInput {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct QueryInput {
    pub endpoint: String,
    pub question: String,
    pub messages: Vec<MessageInput>,
    pub user_id: String,
    pub session_id: String,
    /// Empty: one of the endpoint's routes answers; else this chain
    /// (`model/version` or `model@alias`), for evaluation and replay.
    pub target: String,
    /// Citations carry whole passages instead of snippets.
    pub full_citation_text: bool,
    /// The caller's `traceparent`: the query's span continues its trace
    /// (and with telemetry off, the answer still carries its trace id).
    pub caller: CallerTrace,
    /// The name of the API key that sent it, as limits count it.
    pub caller_key: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryOutput {
    pub answer: String,
    /// Best first; `text` is a snippet of the passage.
    pub citations: Vec<Passage>,
    pub request_id: RequestId,
    pub trace_id: String,
    pub served_model: String,
    pub served_version: u32,
    pub route_target: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub latency_ms: f64,
    /// `Unspecified` when no generation finished.
    pub finish_reason: FinishReason,
    /// The generator that answered: the chain's own, or one of its fallbacks.
    pub generator: String,
    /// By the generator's price in the config; 0 without one.
    pub cost_usd: f64,
    /// Served from the answer cache.
    pub cache_hit: CacheHit,
}

/// What a streamed query sends, in this order: `Citations` once, `Delta`
/// any number of times, `Done` once.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryEvent {
    Citations {
        /// Best first; `text` is a snippet of the passage.
        citations: Vec<Passage>,
        request_id: RequestId,
        trace_id: String,
    },
    Delta(String),
    Done(QueryOutput),
}

/// A streamed query that got as far as its first event. Errors before it
/// were returned instead; an error after it arrives as the last item.
pub struct QueryStream {
    pub first: QueryEvent,
    pub rest: mpsc::Receiver<Result<QueryEvent, Error>>,
}

/// Where a query's answer goes while it is generated.
#[derive(Clone)]
enum Listener {
    /// A unary call: the answer is returned whole; the flag is set when the
    /// caller went away.
    Unary { caller_gone: Arc<AtomicBool> },
    /// A streaming call: events go to the client through a bounded channel,
    /// which closes when the client goes away.
    Stream {
        events: mpsc::Sender<Result<QueryEvent, Error>>,
    },
    /// A streaming call whose answer is held back until the guardrails
    /// have checked it: the first event goes out, the deltas do not.
    Held {
        events: mpsc::Sender<Result<QueryEvent, Error>>,
    },
}

impl Listener {
    fn is_gone(&self) -> bool {
        match self {
            Listener::Unary { caller_gone } => caller_gone.load(Ordering::Acquire),
            Listener::Stream { events } | Listener::Held { events } => events.is_closed(),
        }
    }

    /// The same caller, its stream's deltas held back.
    fn held(&self) -> Listener {
        match self {
            Listener::Stream { events } => Listener::Held {
                events: events.clone(),
            },
            other => other.clone(),
        }
    }

    /// Sends a stream's first event, the citations of `passages`; `Break`
    /// when the caller has left.
    async fn announce(
        &self,
        passages: &[keel_types::Passage],
        query: &ValidQuery,
        request_id: RequestId,
        trace_id: &str,
    ) -> ControlFlow<()> {
        let event = QueryEvent::Citations {
            citations: citations_of(passages, query.full_citation_text),
            request_id,
            trace_id: trace_id.to_string(),
        };
        let sent = match self {
            Listener::Unary { .. } => true,
            Listener::Stream { events } | Listener::Held { events } => {
                events.send(Ok(event)).await.is_ok()
            }
        };
        if sent && !self.is_gone() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }

    /// From a task: hands one piece of the answer over, waiting while a
    /// streaming client's buffer is full; `Break` when nobody listens.
    async fn deliver(&self, piece: String) -> ControlFlow<()> {
        match self {
            Listener::Unary { caller_gone } => {
                if caller_gone.load(Ordering::Acquire) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
            Listener::Stream { events } => match events.send(Ok(QueryEvent::Delta(piece))).await {
                Ok(()) => ControlFlow::Continue(()),
                Err(_client_left) => ControlFlow::Break(()),
            },
            Listener::Held { events } => {
                if events.is_closed() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
        }
    }

    /// From the generation thread: hands one piece of the answer over;
    /// `Break` tells the generator that nobody listens any more.
    fn deliver_blocking(&self, piece: &str) -> ControlFlow<()> {
        match self {
            Listener::Unary { caller_gone } => {
                if caller_gone.load(Ordering::Acquire) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
            Listener::Stream { events } => {
                match events.blocking_send(Ok(QueryEvent::Delta(piece.to_string()))) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_client_left) => ControlFlow::Break(()),
                }
            }
            Listener::Held { events } => {
                if events.is_closed() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
        }
    }
}

/// Tells a unary query's task that its caller went away: it lives in the
/// caller's future and is dropped with it.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A valid query with its identity, as it enters its task.
struct Admitted {
    query: ValidQuery,
    request_id: RequestId,
    /// The query's span: a child of the call's span, so of the caller's
    /// trace when it sent one. It lives as long as the query's task, also
    /// when a streaming call's span has ended.
    span: tracing::Span,
    trace_id: String,
    /// Empty when telemetry is off.
    span_id: String,
    started: Instant,
    started_at_ms: i64,
    /// A shadow query: the live request it mirrors.
    shadow_of: Option<RequestId>,
}

/// A query that passed every input rule.
#[derive(Debug, Clone, PartialEq)]
struct ValidQuery {
    endpoint: String,
    /// The question on its own: `question`, or the last (user) message.
    question: String,
    /// The conversation as sent; empty when the caller sent `question`.
    messages: Vec<ChatMessage>,
    user_id: String,
    session_id: String,
    /// Answers instead of the endpoint's routes when set.
    target: Option<ModelRef>,
    full_citation_text: bool,
    /// Empty for a query Keel makes itself (a shadow): no limit counts it.
    caller_key: String,
}

impl ValidQuery {
    fn caller(&self) -> Caller<'_> {
        Caller {
            key: &self.caller_key,
            endpoint: &self.endpoint,
        }
    }
}

fn validate_query(input: &QueryInput) -> Result<ValidQuery, FieldError> {
    validate::name("endpoint", &input.endpoint)?;
    validate::max_len("user_id", &input.user_id, validate::MAX_ID_BYTES)?;
    validate::max_len("session_id", &input.session_id, validate::MAX_ID_BYTES)?;
    let target = match input.target.as_str() {
        "" => None,
        target => Some(ModelRef::parse("target", target)?),
    };
    let has_question = !input.question.is_empty();
    let has_messages = !input.messages.is_empty();
    if has_question == has_messages {
        return Err(FieldError::new(
            "question",
            "exactly one of `question` and `messages` must be set",
        ));
    }
    if has_question {
        validate::not_empty("question", &input.question)?;
        validate::max_len("question", &input.question, MAX_QUESTION_BYTES)?;
        return Ok(ValidQuery {
            endpoint: input.endpoint.clone(),
            question: input.question.clone(),
            messages: Vec::new(),
            user_id: input.user_id.clone(),
            session_id: input.session_id.clone(),
            target,
            full_citation_text: input.full_citation_text,
            caller_key: input.caller_key.clone(),
        });
    }
    let (messages, question) = validate_messages(&input.messages)?;
    Ok(ValidQuery {
        endpoint: input.endpoint.clone(),
        question,
        messages,
        user_id: input.user_id.clone(),
        session_id: input.session_id.clone(),
        target,
        full_citation_text: input.full_citation_text,
        caller_key: input.caller_key.clone(),
    })
}

/// A conversation as a caller sent it: 1..=64 messages of known roles,
/// each at most 16 KiB, the last one the user's (non-empty) question.
/// Returns the messages and that question.
pub fn validate_messages(input: &[MessageInput]) -> Result<(Vec<ChatMessage>, String), FieldError> {
    if input.is_empty() {
        return Err(FieldError::new(
            "messages",
            "must hold at least one message",
        ));
    }
    if input.len() > MAX_MESSAGES {
        return Err(FieldError::new(
            "messages",
            format!(
                "must hold at most {MAX_MESSAGES} messages, got {}",
                input.len()
            ),
        ));
    }
    let mut messages = Vec::with_capacity(input.len());
    for (index, message) in input.iter().enumerate() {
        let field = format!("messages[{index}]");
        let chat = ChatMessage::parse(&field, &message.role, message.content.clone())?;
        validate::max_len(
            &format!("{field}.content"),
            &chat.content,
            MAX_QUESTION_BYTES,
        )?;
        messages.push(chat);
    }
    let last_index = messages.len() - 1;
    let question = match messages.last() {
        Some(last) if last.role == Role::User => last.content.clone(),
        _ => {
            return Err(FieldError::new(
                format!("messages[{last_index}].role"),
                "the last message must be from the user",
            ))
        }
    };
    validate::not_empty(&format!("messages[{last_index}].content"), &question)?;
    Ok((messages, question))
}

/// What a query learned on its way, for its inference record, also when a
/// later step failed.
#[derive(Default)]
struct Progress {
    /// The endpoint exists: its name may label metrics (a name a caller
    /// made up must not, or the series would grow without bound).
    endpoint_found: bool,
    route_target: String,
    served_model: String,
    served_version: u32,
    generator: String,
    contexts: Vec<Passage>,
    prompt_messages: Vec<ChatMessage>,
    generation: Option<Generation>,
    /// Time spent waiting on retrieval and on generation (a worker, then
    /// the model): what is not serving's own overhead.
    waited_on_dependencies: Duration,
    /// The endpoint's shadow, when this live query is to be mirrored.
    shadow: Option<Shadow>,
    /// Tokens and cost held for this query until it is settled.
    reservation: Option<Reservation>,
    /// The answer came from the cache.
    cache_hit: CacheHit,
    /// What the endpoint's guardrails decided.
    guardrails: Vec<GuardrailDecision>,
    /// The question and conversation as the guardrails masked them: what
    /// the chain saw, and what the record keeps.
    masked_input: Option<(String, Vec<ChatMessage>)>,
}

pub struct Pipeline {
    store: Store,
    resolver: Arc<Resolver>,
    retriever: Retriever,
    catalog: ModelCatalog,
    generation_pool: GenerationPool,
    inference_log: InferenceLog,
    metrics: QueryMetrics,
    /// One shadow answer at a time.
    shadow_slot: Arc<Semaphore>,
    /// Which endpoints a running experiment takes over.
    experiments: Arc<RunningExperiments>,
    /// Rates and budgets; off unless `[serving.limits]` has rules.
    limiter: Limiter,
    /// Answers kept per endpoint and chain version; off unless
    /// `[serving.cache]` names the endpoint.
    cache: Option<AnswerCache>,
    /// Checks on questions and answers, per endpoint.
    guardrails: Option<Guardrails>,
}

impl Pipeline {
    pub fn new(
        store: Store,
        resolver: Arc<Resolver>,
        retriever: Retriever,
        catalog: ModelCatalog,
        generation_pool: GenerationPool,
        inference_log: InferenceLog,
        metrics: QueryMetrics,
    ) -> Pipeline {
        Pipeline {
            experiments: Arc::new(RunningExperiments::new(store.clone())),
            store,
            resolver,
            retriever,
            catalog,
            generation_pool,
            inference_log,
            metrics,
            shadow_slot: Arc::new(Semaphore::new(1)),
            limiter: Limiter::off(),
            cache: None,
            guardrails: None,
        }
    }

    /// The same pipeline, checking questions and answers with `guardrails`.
    pub fn with_guardrails(mut self, guardrails: Guardrails) -> Pipeline {
        self.guardrails = Some(guardrails);
        self
    }

    /// The same pipeline, answering from `cache` where it is on.
    pub fn with_cache(mut self, cache: AnswerCache) -> Pipeline {
        self.cache = Some(cache);
        self
    }

    /// The same pipeline, admitting queries through `limiter`.
    pub fn with_limiter(mut self, limiter: Limiter) -> Pipeline {
        self.limiter = limiter;
        self
    }

    /// The running experiments queries are routed by, for the experiments'
    /// service to tell about the changes it makes.
    pub fn running_experiments(&self) -> Arc<RunningExperiments> {
        self.experiments.clone()
    }

    /// Answers `input` whole. The query runs in its own task: when the
    /// caller goes away, generation stops at the next delta and the query
    /// is still recorded, with what was generated.
    pub async fn query(self: &Arc<Self>, input: QueryInput) -> Result<QueryOutput, Error> {
        let admitted = admit(&input)?;
        self.limiter.admit(admitted.query.caller()).await?;
        let caller_gone = Arc::new(AtomicBool::new(false));
        let _set_when_caller_leaves = SetOnDrop(caller_gone.clone());
        let pipeline = self.clone();
        let span = admitted.span.clone();
        let task = tokio::spawn(
            async move {
                pipeline
                    .execute(admitted, Listener::Unary { caller_gone })
                    .await
            }
            .instrument(span),
        );
        task.await
            .map_err(|error| Error::Internal(format!("query task failed: {error}")))?
    }

    /// Answers `input` as a stream of events. Returns once the first event
    /// (the citations) exists, or with the error that came before it.
    pub async fn query_stream(self: &Arc<Self>, input: QueryInput) -> Result<QueryStream, Error> {
        let admitted = admit(&input)?;
        self.limiter.admit(admitted.query.caller()).await?;
        let (events, mut receiver) = mpsc::channel(STREAM_EVENT_BUFFER);
        let pipeline = self.clone();
        let span = admitted.span.clone();
        tokio::spawn(
            async move {
                let listener = Listener::Stream {
                    events: events.clone(),
                };
                let result = pipeline.execute(admitted, listener).await;
                let _client_may_have_left = events.send(result.map(QueryEvent::Done)).await;
            }
            .instrument(span),
        );
        match receiver.recv().await {
            Some(Ok(first)) => Ok(QueryStream {
                first,
                rest: receiver,
            }),
            Some(Err(error)) => Err(error),
            None => Err(Error::Internal(
                "query task ended without an answer".to_string(),
            )),
        }
    }

    async fn execute(
        self: &Arc<Self>,
        admitted: Admitted,
        listener: Listener,
    ) -> Result<QueryOutput, Error> {
        let Admitted {
            query,
            request_id,
            span,
            trace_id,
            span_id,
            started,
            started_at_ms,
            shadow_of,
        } = admitted;
        let mut progress = Progress::default();
        let result = self
            .answer(
                &query,
                request_id,
                &trace_id,
                &span,
                &listener,
                &mut progress,
            )
            .await;
        let elapsed = started.elapsed();
        let latency_ms = elapsed.as_secs_f64() * 1000.0;

        let error_text = result.as_ref().err().map(ToString::to_string);
        record_on_span(&span, &progress, error_text.as_deref());
        if let Some(error) = &error_text {
            tracing::info!(request_id = %request_id, endpoint = %query.endpoint, %error, "query failed");
        }
        let generation = progress.generation.clone();
        let (answer, input_tokens, output_tokens, finish_reason) = match &generation {
            Some(generation) => (
                generation.text.clone(),
                generation.input_tokens,
                generation.output_tokens,
                generation.finish_reason,
            ),
            None => (String::new(), 0, 0, FinishReason::Unspecified),
        };
        if finish_reason == FinishReason::Cancelled {
            tracing::debug!(request_id = %request_id, output_tokens, "caller left, generation stopped");
        }
        // A shadow answer is not traffic the endpoint served: it is in the
        // inference log, not in the query series.
        if shadow_of.is_none() {
            self.metrics.observe(&QueryObservation {
                endpoint: if progress.endpoint_found {
                    &query.endpoint
                } else {
                    UNKNOWN_ENDPOINT
                },
                served_model: &progress.served_model,
                served_version: progress.served_version,
                generator: &progress.generator,
                succeeded: error_text.is_none(),
                total: elapsed,
                waited_on_dependencies: progress.waited_on_dependencies,
                input_tokens,
                output_tokens,
            });
        }
        let citations = citations_of(&progress.contexts, query.full_citation_text);
        let cost_usd = self
            .metrics
            .cost_usd(&progress.generator, input_tokens, output_tokens);
        if let Some(reservation) = progress.reservation.take() {
            // Off the caller's path: the answer does not wait for it.
            let limiter = self.limiter.clone();
            let used = u64::from(input_tokens) + u64::from(output_tokens);
            tokio::spawn(async move { limiter.settle(reservation, used, cost_usd).await });
        }
        let output = QueryOutput {
            answer: answer.clone(),
            citations,
            request_id,
            trace_id: trace_id.clone(),
            served_model: progress.served_model.clone(),
            served_version: progress.served_version,
            route_target: progress.route_target.clone(),
            input_tokens,
            output_tokens,
            latency_ms,
            finish_reason,
            generator: progress.generator.clone(),
            cost_usd,
            cache_hit: progress.cache_hit,
        };
        let (status, error) = match error_text {
            None => (InferenceStatus::Ok, String::new()),
            Some(error) => (InferenceStatus::Error, error),
        };
        // Only a live query that answered is mirrored.
        if let Some(shadow) = progress.shadow.take().filter(|_| result.is_ok()) {
            self.mirror(&query, request_id, &trace_id, shadow, &span);
        }
        // What the guardrails masked is never kept.
        let (question, input_messages) = progress
            .masked_input
            .take()
            .unwrap_or((query.question, query.messages));
        self.inference_log.record(InferenceRecord {
            request_id,
            trace_id,
            span_id,
            endpoint: query.endpoint,
            route_target: progress.route_target,
            served_model: progress.served_model,
            served_version: progress.served_version,
            user_id: query.user_id,
            session_id: query.session_id,
            question,
            input_messages,
            contexts: progress.contexts,
            prompt_messages: progress.prompt_messages,
            answer,
            input_tokens,
            output_tokens,
            latency_ms,
            status,
            error,
            started_at_ms,
            generator: progress.generator,
            finish_reason,
            shadow_of,
            cache_hit: progress.cache_hit,
            guardrails: progress.guardrails,
        });
        result.map(|()| output)
    }

    /// Answers the live query again with the shadow's target, in the
    /// background, for the record only. Skipped while another shadow
    /// answer is being generated, so shadow traffic never queues up
    /// behind (or ahead of) live traffic.
    fn mirror(
        self: &Arc<Self>,
        live: &ValidQuery,
        live_request_id: RequestId,
        live_trace_id: &str,
        shadow: Shadow,
        live_span: &tracing::Span,
    ) {
        let Ok(slot) = self.shadow_slot.clone().try_acquire_owned() else {
            tracing::debug!(request_id = %live_request_id, "a shadow answer is running, not mirroring");
            return;
        };
        let mut query = live.clone();
        query.target = Some(shadow.target);
        query.full_citation_text = false;
        // Traffic Keel makes itself: no caller's limits count it.
        query.caller_key = String::new();
        let request_id = RequestId::generate();
        let span = tracing::info_span!(
            parent: live_span,
            "shadow",
            keel.request_id = %request_id,
            keel.shadow_of = %live_request_id,
        );
        let (trace_id, span_id) = match span_ids(&span) {
            Some(ids) => (ids.trace_id, ids.span_id),
            None => (live_trace_id.to_string(), String::new()),
        };
        let admitted = Admitted {
            query,
            request_id,
            span: span.clone(),
            trace_id,
            span_id,
            started: Instant::now(),
            started_at_ms: keel_core::time::now_ms(),
            shadow_of: Some(live_request_id),
        };
        let pipeline = self.clone();
        tokio::spawn(
            async move {
                let _slot = slot;
                let nobody_listens = Listener::Unary {
                    caller_gone: Arc::new(AtomicBool::new(false)),
                };
                // Its outcome is in its record; nobody waits for it.
                let _ = pipeline.execute(admitted, nobody_listens).await;
            }
            .instrument(span),
        );
    }

    /// The generation step of a chain whose generators all answer from a
    /// server: awaited on this task, holding no generation worker, so
    /// remote answers are bounded by each generator's
    /// `max_concurrent_requests`, not by the local-model pool.
    #[allow(clippy::too_many_arguments)]
    async fn generate_remotely(
        &self,
        query: &ValidQuery,
        candidates: &[Candidate],
        (passages, rendered): (Vec<keel_types::Passage>, String),
        (request_id, trace_id): (RequestId, &str),
        query_span: &tracing::Span,
        listener: &Listener,
        progress: &mut Progress,
    ) -> Result<(), Error> {
        if listener
            .announce(&passages, query, request_id, trace_id)
            .await
            .is_break()
        {
            progress.generation = Some(nothing_generated());
            return Ok(());
        }
        let prompt_messages = vec![ChatMessage {
            role: Role::User,
            content: rendered,
        }];
        let mut request = GenerationRequest {
            messages: prompt_messages.clone(),
            question: query.question.clone(),
            passages,
            params: keel_models::GenerationParams::default(),
        };
        let to_caller = listener.clone();
        let deliver = move |piece: String| -> fallback::DeliveryFuture {
            let listener = to_caller.clone();
            Box::pin(async move { listener.deliver(piece).await })
        };
        let generation_started = Instant::now();
        let outcome =
            fallback::generate_remote(candidates, &mut request, query_span, &deliver).await;
        progress.waited_on_dependencies += generation_started.elapsed();
        progress.prompt_messages = prompt_messages;
        if !outcome.generator.is_empty() {
            progress.generator = outcome.generator;
        }
        progress.generation = Some(outcome.result?);
        Ok(())
    }

    /// With token or cost limits on the caller: caps every candidate's
    /// answer (at its own `max_tokens`, or the limits' default) and
    /// reserves the prompt plus the longest answer at the dearest
    /// candidate's price. RESOURCE_EXHAUSTED when a budget has no room.
    async fn reserve_tokens(
        &self,
        query: &ValidQuery,
        candidates: &mut [Candidate],
        rendered_prompt: &str,
    ) -> Result<Option<Reservation>, Error> {
        let caller = query.caller();
        if caller.key.is_empty() || !self.limiter.counts_tokens(caller) {
            return Ok(None);
        }
        let default_max = self.limiter.default_max_output_tokens();
        let mut output_tokens = 0;
        for candidate in candidates.iter_mut() {
            output_tokens =
                output_tokens.max(*candidate.params.max_tokens.get_or_insert(default_max));
        }
        let input_tokens = crate::limits::estimate_input_tokens(rendered_prompt);
        let names: Vec<&str> = candidates
            .iter()
            .map(|candidate| candidate.name.as_str())
            .collect();
        let cost = self
            .limiter
            .most_expensive(&names, input_tokens, output_tokens);
        let tokens = u64::from(input_tokens) + u64::from(output_tokens);
        self.limiter.reserve(caller, tokens, cost).await
    }

    async fn answer(
        &self,
        query: &ValidQuery,
        request_id: RequestId,
        trace_id: &str,
        query_span: &tracing::Span,
        listener: &Listener,
        progress: &mut Progress,
    ) -> Result<(), Error> {
        let endpoint = store::get_endpoint(&self.store, &query.endpoint)
            .await?
            .ok_or_else(|| Error::NotFound(format!("endpoint `{}` not found", query.endpoint)))?;
        progress.endpoint_found = true;
        let masked_query;
        let query = match self.check_input(query, progress).await? {
            Some(masked) => {
                masked_query = masked;
                &masked_query
            }
            None => query,
        };
        if query.target.is_none() {
            progress.shadow = endpoint
                .shadow
                .clone()
                .filter(|shadow| shadow.mirrors(request_id));
        }
        let target = match &query.target {
            Some(target) => target.clone(),
            None => match self.experiments.of(&endpoint.name).await? {
                // A running experiment takes the endpoint's traffic.
                Some(running) => {
                    let side = experiment::assign(
                        running.id,
                        running.spec.settings.sticky_by,
                        running.challenger_share,
                        &query.user_id,
                        &query.session_id,
                    );
                    match side {
                        Side::Control => running.spec.control.pinned(),
                        Side::Challenger => running.spec.challenger.pinned(),
                    }
                }
                None => {
                    let route =
                        routing::pick_route(&endpoint.name, &endpoint.routes, &query.user_id)
                            .ok_or_else(|| {
                                Error::FailedPrecondition(format!(
                                    "endpoint `{}` has no route with a positive weight",
                                    endpoint.name
                                ))
                            })?;
                    route.target.clone()
                }
            },
        };
        progress.route_target = target.to_string();

        let chain = self.resolver.resolve(&target).await?;
        progress.served_model = chain.model.clone();
        progress.served_version = chain.version;
        progress.generator = chain.generator.clone();
        // Before retrieval, so a misconfigured chain fails without load on the index.
        let mut candidates = Vec::with_capacity(1 + chain.fallbacks.len());
        candidates.push(Candidate {
            name: chain.generator.clone(),
            generator: self
                .catalog
                .generator_for(&chain.generator, &chain.generator_model)?,
            params: chain.params.clone(),
        });
        for fallback in &chain.fallbacks {
            candidates.push(Candidate {
                name: fallback.name.clone(),
                generator: self
                    .catalog
                    .generator_for(&fallback.name, &fallback.model)?,
                params: fallback.params.clone(),
            });
        }

        // Evaluation and replay (a pinned target) and shadows run the chain.
        let cache = self
            .cache
            .as_ref()
            .filter(|cache| query.target.is_none() && cache.settings(&query.endpoint).is_some());
        let lookup = Lookup {
            endpoint: &query.endpoint,
            chain: &chain,
        };
        if let Some(cache) = cache.filter(|_| query.messages.len() <= 1) {
            let lookup_started = Instant::now();
            let found = cache.similar(&lookup, &query.question).await;
            progress.waited_on_dependencies += lookup_started.elapsed();
            if let Some(hit) = found {
                return self
                    .answer_from_cache(
                        hit,
                        CacheHit::Semantic,
                        query,
                        (request_id, trace_id),
                        listener,
                        progress,
                    )
                    .await;
            }
        }

        // A chain without a collection goes straight to its generator.
        let passages = if chain.top_k == 0 {
            Vec::new()
        } else {
            let search = SearchQuery {
                collection: &chain.collection,
                text: &query.question,
                top_k: chain.top_k,
                filter: &chain.filter,
                mode: chain.retrieval_mode,
            };
            let retrieval_started = Instant::now();
            let retrieved = self.retriever.search(&search).await;
            progress.waited_on_dependencies += retrieval_started.elapsed();
            retrieved?
        };
        progress.contexts = passages.clone();
        let rendered = chain
            .prompt
            .render(&query.question, &passages, &query.messages)?;
        let exact_key = cache.map(|_| cache::exact_key(&lookup, &rendered));
        if let (Some(cache), Some(key)) = (cache, &exact_key) {
            let lookup_started = Instant::now();
            let found = cache.exact(&lookup, key).await;
            progress.waited_on_dependencies += lookup_started.elapsed();
            if let Some(hit) = found {
                return self
                    .answer_from_cache(
                        hit,
                        CacheHit::Exact,
                        query,
                        (request_id, trace_id),
                        listener,
                        progress,
                    )
                    .await;
            }
        }
        progress.reservation = self
            .reserve_tokens(query, &mut candidates, &rendered)
            .await?;
        let generation = (passages, rendered);
        let ids = (request_id, trace_id);
        // An answer the guardrails check reaches a streaming caller only
        // once checked.
        let checks_output = self
            .guardrails
            .as_ref()
            .is_some_and(|rails| rails.checks_output(&query.endpoint));
        let generation_listener = if checks_output {
            listener.held()
        } else {
            listener.clone()
        };
        if candidates
            .iter()
            .all(|candidate| candidate.generator.remote().is_some())
        {
            self.generate_remotely(
                query,
                &candidates,
                generation,
                ids,
                query_span,
                &generation_listener,
                progress,
            )
            .await?;
        } else {
            self.generate_locally(
                query,
                candidates,
                generation,
                ids,
                query_span,
                &generation_listener,
                progress,
            )
            .await?;
        }
        if checks_output {
            self.check_output(query, listener, progress).await?;
        }
        if let (Some(cache), Some(key)) = (cache, exact_key) {
            remember(cache, &lookup, key, query, progress);
        }
        Ok(())
    }

    /// The generation step of a chain with a local model among its
    /// generators: rendered and generated on the generation pool.
    #[allow(clippy::too_many_arguments)]
    async fn generate_locally(
        &self,
        query: &ValidQuery,
        candidates: Vec<Candidate>,
        (passages, rendered): (Vec<keel_types::Passage>, String),
        (request_id, trace_id): (RequestId, &str),
        query_span: &tracing::Span,
        listener: &Listener,
        progress: &mut Progress,
    ) -> Result<(), Error> {
        // Overload is refused before the first event of a stream, so a
        // streaming caller sees RESOURCE_EXHAUSTED as the call's status.
        let generation_started = Instant::now();
        let reserved = self.generation_pool.reserve().await;
        let slot = match reserved {
            Ok(slot) => slot,
            Err(error) => {
                progress.waited_on_dependencies += generation_started.elapsed();
                return Err(error);
            }
        };
        if listener
            .announce(&passages, query, request_id, trace_id)
            .await
            .is_break()
        {
            progress.generation = Some(nothing_generated());
            return Ok(());
        }

        let question = query.question.clone();
        let job_listener = listener.clone();
        let job_span = query_span.clone();
        let generated = slot
            .run(
                move || -> Result<(Vec<ChatMessage>, fallback::Outcome), Error> {
                    let prompt_messages = vec![ChatMessage {
                        role: Role::User,
                        content: rendered,
                    }];
                    let mut request = GenerationRequest {
                        messages: prompt_messages.clone(),
                        question,
                        passages,
                        params: keel_models::GenerationParams::default(),
                    };
                    // The caller may have left while the query waited for a worker.
                    if job_listener.is_gone() {
                        let outcome = fallback::Outcome {
                            generator: String::new(),
                            result: Ok(nothing_generated()),
                        };
                        return Ok((prompt_messages, outcome));
                    }
                    let outcome =
                        fallback::generate(&candidates, &mut request, &job_span, &mut |piece| {
                            job_listener.deliver_blocking(piece)
                        });
                    Ok((prompt_messages, outcome))
                },
            )
            .await;
        progress.waited_on_dependencies += generation_started.elapsed();
        let (prompt_messages, outcome) = generated??;
        progress.prompt_messages = prompt_messages;
        if !outcome.generator.is_empty() {
            progress.generator = outcome.generator;
        }
        progress.generation = Some(outcome.result?);
        Ok(())
    }

    /// The endpoint's input guardrails: a refusal is INVALID_ARGUMENT
    /// naming the rule; `Some` is the query with personal data masked.
    async fn check_input(
        &self,
        query: &ValidQuery,
        progress: &mut Progress,
    ) -> Result<Option<ValidQuery>, Error> {
        let Some(rails) = &self.guardrails else {
            return Ok(None);
        };
        match rails
            .check_input(&query.endpoint, &query.question, &query.messages)
            .await?
        {
            Ok(passed) => {
                progress.guardrails.extend(passed.decisions);
                Ok(passed.masked.map(|(question, messages)| {
                    progress.masked_input = Some((question.clone(), messages.clone()));
                    ValidQuery {
                        question,
                        messages,
                        ..query.clone()
                    }
                }))
            }
            Err(blocked) => {
                progress.guardrails.extend(blocked.decisions);
                Err(Error::InvalidArgument(FieldError::new(
                    "question",
                    format!("refused by the endpoint's guardrails: {}", blocked.reason),
                )))
            }
        }
    }

    /// The endpoint's output guardrails on the generated answer: masked in
    /// place, or withheld (FAILED_PRECONDITION). A streaming caller gets
    /// the checked answer as one piece.
    async fn check_output(
        &self,
        query: &ValidQuery,
        listener: &Listener,
        progress: &mut Progress,
    ) -> Result<(), Error> {
        let (Some(rails), Some(generation)) = (&self.guardrails, progress.generation.as_mut())
        else {
            return Ok(());
        };
        match rails.check_output(&query.endpoint, &generation.text) {
            Ok((shown, decisions)) => {
                progress.guardrails.extend(decisions);
                generation.text = shown;
                if matches!(listener, Listener::Stream { .. }) && !generation.text.is_empty() {
                    let _caller_may_have_left = listener.deliver(generation.text.clone()).await;
                }
                Ok(())
            }
            Err(blocked) => {
                progress.guardrails.extend(blocked.decisions);
                generation.text.clear();
                Err(Error::FailedPrecondition(format!(
                    "the answer was withheld by the endpoint's guardrails: {}",
                    blocked.reason
                )))
            }
        }
    }

    /// Answers with a cached answer, streamed like a generated one.
    async fn answer_from_cache(
        &self,
        hit: CachedAnswer,
        kind: CacheHit,
        query: &ValidQuery,
        (request_id, trace_id): (RequestId, &str),
        listener: &Listener,
        progress: &mut Progress,
    ) -> Result<(), Error> {
        progress.cache_hit = kind;
        progress.generator = hit.generator;
        if kind == CacheHit::Semantic {
            progress.contexts = hit.citations;
        }
        if listener
            .announce(&progress.contexts, query, request_id, trace_id)
            .await
            .is_break()
        {
            progress.generation = Some(nothing_generated());
            return Ok(());
        }
        // Word by word, as a generator hands its answer over.
        for piece in hit.answer.split_inclusive(' ') {
            if listener.deliver(piece.to_string()).await.is_break() {
                break;
            }
        }
        progress.generation = Some(Generation {
            text: hit.answer,
            input_tokens: 0,
            output_tokens: 0,
            finish_reason: hit.finish_reason,
        });
        Ok(())
    }
}

/// Keeps a whole answer (not one its caller left) in the cache.
fn remember(
    cache: &AnswerCache,
    lookup: &Lookup<'_>,
    key: String,
    query: &ValidQuery,
    progress: &Progress,
) {
    let Some(generation) = &progress.generation else {
        return;
    };
    if generation.text.is_empty()
        || matches!(
            generation.finish_reason,
            FinishReason::Cancelled | FinishReason::Unspecified
        )
    {
        return;
    }
    let answer = CachedAnswer {
        answer: generation.text.clone(),
        citations: progress.contexts.clone(),
        generator: progress.generator.clone(),
        finish_reason: generation.finish_reason,
    };
    // An answer in a conversation depends on more than its last
    // question: it is kept for exact lookups only.
    let semantic = query.messages.len() <= 1;
    cache.remember(lookup, key, &query.question, semantic, answer);
}

/// Validates `input` and gives the query its identity: a request id and
/// the call's server span, continuing the caller's trace.
fn admit(input: &QueryInput) -> Result<Admitted, Error> {
    let started = Instant::now();
    let started_at_ms = keel_core::time::now_ms();
    // Malformed requests are refused before they become inference
    // records: one invalid record could make monitoring refuse a whole
    // batch.
    let query = validate_query(input)?;
    let request_id = RequestId::generate();
    let name = format!("query {}", query.endpoint);
    let span = tracing::info_span!(
        "query",
        otel.name = name.as_str(),
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_message = Empty,
        keel.endpoint = query.endpoint.as_str(),
        keel.request_id = %request_id,
        keel.route_target = Empty,
        keel.served_model = Empty,
        keel.served_version = Empty,
        keel.generator = Empty,
        rpc.system = "grpc",
        rpc.service = "keel.v1.ServingService",
    );
    input.caller.continue_in(&span);
    // Without telemetry the response still carries a trace id, for logs
    // and the inference record: the caller's, or a new one.
    let (trace_id, span_id) = match span_ids(&span) {
        Some(ids) => (ids.trace_id, ids.span_id),
        None => match input.caller.trace_id() {
            Some(caller_trace_id) => (caller_trace_id, String::new()),
            None => (Uuid::now_v7().simple().to_string(), String::new()),
        },
    };
    Ok(Admitted {
        query,
        request_id,
        span,
        trace_id,
        span_id,
        started,
        started_at_ms,
        shadow_of: None,
    })
}

/// What the query learned, on its span: the route and version served, and
/// the error when it failed.
fn record_on_span(span: &tracing::Span, progress: &Progress, error: Option<&str>) {
    if !progress.route_target.is_empty() {
        span.record("keel.route_target", progress.route_target.as_str());
    }
    if !progress.served_model.is_empty() {
        span.record("keel.served_model", progress.served_model.as_str());
        span.record("keel.served_version", i64::from(progress.served_version));
    }
    if !progress.generator.is_empty() {
        span.record("keel.generator", progress.generator.as_str());
    }
    if let Some(error) = error {
        keel_core::gen_ai::record_error(span, &error);
    }
}

/// The answer of a query whose caller left before generation began.
fn nothing_generated() -> Generation {
    Generation {
        text: String::new(),
        input_tokens: 0,
        output_tokens: 0,
        finish_reason: FinishReason::Cancelled,
    }
}

/// The passage with its text cut to the first 300 characters.
/// What the caller gets of the retrieved passages: snippets, or the whole
/// passages when it asked for them.
fn citations_of(passages: &[Passage], full_text: bool) -> Vec<Passage> {
    if full_text {
        passages.to_vec()
    } else {
        passages.iter().map(snippet_of).collect()
    }
}

fn snippet_of(passage: &Passage) -> Passage {
    Passage {
        id: passage.id.clone(),
        text: passage.text.chars().take(SNIPPET_CHARS).collect(),
        score: passage.score,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(text: &str) -> QueryInput {
        QueryInput {
            endpoint: "support".to_string(),
            question: text.to_string(),
            messages: Vec::new(),
            user_id: String::new(),
            session_id: String::new(),
            target: String::new(),
            full_citation_text: false,
            caller: CallerTrace::default(),
            caller_key: "anonymous".to_string(),
        }
    }

    fn conversation(messages: &[(&str, &str)]) -> QueryInput {
        let mut input = question("");
        input.messages = messages
            .iter()
            .map(|(role, content)| MessageInput {
                role: role.to_string(),
                content: content.to_string(),
            })
            .collect();
        input
    }

    #[test]
    fn query_validation_table() {
        let mut both = conversation(&[("user", "hi")]);
        both.question = "hi".to_string();
        let mut bad_endpoint = question("hi");
        bad_endpoint.endpoint = "bad name".to_string();
        let mut long_user = question("hi");
        long_user.user_id = "u".repeat(257);
        let mut long_session = question("hi");
        long_session.session_id = "s".repeat(257);
        let too_many: Vec<(&str, &str)> = (0..65).map(|_| ("user", "hi")).collect();
        let mut bad_target = question("hi");
        bad_target.target = "chain@@x".to_string();
        let cases: Vec<(QueryInput, &str, &str)> = vec![
            (
                question(""),
                "question",
                "exactly one of `question` and `messages`",
            ),
            (both, "question", "exactly one of `question` and `messages`"),
            (bad_endpoint, "endpoint", "must match"),
            (long_user, "user_id", "at most 256 bytes"),
            (long_session, "session_id", "at most 256 bytes"),
            (bad_target, "target", ""),
            (question("   "), "question", "must not be empty"),
            (
                question(&"q".repeat(16 * 1024 + 1)),
                "question",
                "at most 16384 bytes",
            ),
            (
                conversation(&too_many),
                "messages",
                "at most 64 messages, got 65",
            ),
            (
                conversation(&[("user", "hi"), ("robot", "x"), ("user", "q")]),
                "messages[1].role",
                "must be system, user or assistant",
            ),
            (
                conversation(&[("user", "hi"), ("assistant", "hello")]),
                "messages[1].role",
                "the last message must be from the user",
            ),
            (
                conversation(&[("system", "be brief"), ("user", "")]),
                "messages[1].content",
                "must not be empty",
            ),
        ];
        for (case, field, rule_part) in cases {
            let error = validate_query(&case).unwrap_err();
            assert_eq!(error.field, field, "{case:?}");
            assert!(error.rule.contains(rule_part), "{case:?}: {}", error.rule);
        }
    }

    #[test]
    fn the_question_is_the_last_user_message() {
        let valid = validate_query(&conversation(&[
            ("system", "be brief"),
            ("user", "first"),
            ("assistant", "answer"),
            ("user", "second?"),
        ]))
        .unwrap();
        assert_eq!(valid.question, "second?");
        assert_eq!(valid.messages.len(), 4);
        assert_eq!(valid.messages[0].role, Role::System);
        let plain = validate_query(&question("why?")).unwrap();
        assert_eq!(plain.question, "why?");
        assert!(plain.messages.is_empty());
        assert!(validate_query(&question(&"q".repeat(16 * 1024))).is_ok());
        assert!(validate_query(&conversation(&vec![("user", "hi"); 64])).is_ok());
    }

    #[test]
    fn snippets_are_the_first_300_characters() {
        let long = Passage {
            id: "p".to_string(),
            text: "é".repeat(400),
            score: 0.5,
        };
        let snippet = snippet_of(&long);
        assert_eq!(snippet.text.chars().count(), 300);
        assert_eq!(snippet.id, "p");
        let short = Passage {
            id: "q".to_string(),
            text: "short".to_string(),
            score: 0.1,
        };
        assert_eq!(snippet_of(&short).text, "short");
    }
}

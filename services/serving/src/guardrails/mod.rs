//! Guardrails per endpoint, on the question and on the answer: personal
//! data masked, refused or flagged; blocked terms; a token limit on the
//! input; a deny-list of topics by embedding similarity (embedded by the
//! vector index). Every decision goes into the inference record and the
//! metrics. A check that cannot run (the embedder unreachable) refuses
//! the request rather than let it through unchecked.

pub mod config;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keel_core::channel::ServiceChannel;
use keel_core::metrics::{MetricsError, ServiceMetrics};
use keel_proto::v1 as pb;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;
use keel_types::{ChatMessage, GuardrailDecision};
use prometheus::IntCounterVec;
use regex::Regex;

pub use config::{EndpointGuardrails, GuardrailsConfig, PiiAction};
use keel_core::pii::{self, PiiKind};

use crate::clients::with_deadline;
use crate::error::Error;

/// Each denied topic with its embedding.
type EmbeddedTopics = Arc<Vec<(String, Vec<f32>)>>;

/// A request or answer the guardrails refused, and why.
#[derive(Debug)]
pub struct Blocked {
    pub decisions: Vec<GuardrailDecision>,
    pub reason: String,
}

/// What passed, as it goes on (masked where masking applied).
#[derive(Debug, Default)]
pub struct Passed {
    pub decisions: Vec<GuardrailDecision>,
    /// The question and conversation with personal data masked, when any was.
    pub masked: Option<(String, Vec<ChatMessage>)>,
}

#[derive(Clone)]
pub struct Guardrails {
    config: Arc<GuardrailsConfig>,
    client: VectorIndexServiceClient<ServiceChannel>,
    timeout: Duration,
    /// Each endpoint's topics, embedded once.
    topics: Arc<tokio::sync::Mutex<HashMap<String, EmbeddedTopics>>>,
    decisions: Option<IntCounterVec>,
}

impl Guardrails {
    pub fn new(channel: ServiceChannel, config: GuardrailsConfig, timeout: Duration) -> Guardrails {
        Guardrails {
            config: Arc::new(config),
            client: VectorIndexServiceClient::new(channel),
            timeout,
            topics: Arc::default(),
            decisions: None,
        }
    }

    pub fn with_metrics(mut self, registry: &ServiceMetrics) -> Result<Guardrails, MetricsError> {
        self.decisions = Some(registry.counter_vec(
            "keel_serving_guardrail_decisions_total",
            "Guardrail decisions, by endpoint, stage (input, output), rule and action (masked, blocked, flagged).",
            &["endpoint", "stage", "rule", "action"],
        )?);
        Ok(self)
    }

    /// Whether the endpoint checks its answers: a streamed answer is then
    /// held back until it is checked.
    pub fn checks_output(&self, endpoint: &str) -> bool {
        self.config.of(endpoint).is_some_and(|rails| {
            rails.output_pii != PiiAction::Off || !rails.blocked_terms.is_empty()
        })
    }

    /// Checks a question and its conversation.
    pub async fn check_input(
        &self,
        endpoint: &str,
        question: &str,
        messages: &[ChatMessage],
    ) -> Result<Result<Passed, Blocked>, Error> {
        let Some(rails) = self.config.of(endpoint) else {
            return Ok(Ok(Passed::default()));
        };
        let mut decisions = Vec::new();
        let texts: Vec<&str> = std::iter::once(question)
            .chain(messages.iter().map(|message| message.content.as_str()))
            .collect();
        if rails.max_input_tokens > 0 {
            // About four bytes a token, as subword tokenizers read English.
            let tokens: usize = texts.iter().map(|text| text.len().div_ceil(4)).sum();
            if tokens > rails.max_input_tokens as usize {
                decisions.push(decision(
                    "input",
                    "max_input_tokens",
                    "blocked",
                    format!(
                        "about {tokens} tokens, more than {}",
                        rails.max_input_tokens
                    ),
                ));
                return Ok(Err(self.blocked(
                    endpoint,
                    decisions,
                    format!(
                        "the question is longer than the endpoint's {} tokens",
                        rails.max_input_tokens
                    ),
                )));
            }
        }
        if let Some(term) = texts.iter().find_map(|text| blocked_term(rails, text)) {
            decisions.push(decision("input", "blocked_term", "blocked", term.clone()));
            return Ok(Err(self.blocked(
                endpoint,
                decisions,
                format!("the question contains the blocked term `{term}`"),
            )));
        }
        let mut masked = None;
        if rails.input_pii != PiiAction::Off {
            let found: Vec<Vec<pii::Found>> = texts
                .iter()
                .map(|text| pii::find(text, &pii::ALL))
                .collect();
            let kinds = kinds_of(found.iter().flatten());
            if !kinds.is_empty() {
                let action = action_name(rails.input_pii);
                for (kind, count) in &kinds {
                    decisions.push(decision(
                        "input",
                        kind.rule(),
                        action,
                        format!("{count} found"),
                    ));
                }
                match rails.input_pii {
                    PiiAction::Block => {
                        let names: Vec<&str> = kinds.iter().map(|(kind, _)| kind.rule()).collect();
                        return Ok(Err(self.blocked(
                            endpoint,
                            decisions,
                            format!("the question contains personal data ({})", names.join(", ")),
                        )));
                    }
                    PiiAction::Mask => {
                        let question = pii::mask(question, &found[0]);
                        let messages = messages
                            .iter()
                            .zip(&found[1..])
                            .map(|(message, found)| ChatMessage {
                                role: message.role,
                                content: pii::mask(&message.content, found),
                            })
                            .collect();
                        masked = Some((question, messages));
                    }
                    PiiAction::Flag | PiiAction::Off => {}
                }
            }
        }
        if !rails.denied_topics.is_empty() {
            let asked = masked
                .as_ref()
                .map_or(question, |(question, _)| question.as_str());
            if let Some((topic, similarity)) = self.denied_topic(endpoint, rails, asked).await? {
                decisions.push(decision(
                    "input",
                    "topic",
                    "blocked",
                    format!("{topic} ({similarity:.2})"),
                ));
                return Ok(Err(self.blocked(
                    endpoint,
                    decisions,
                    format!("the question is about `{topic}`, which the endpoint does not answer"),
                )));
            }
        }
        self.count(endpoint, &decisions);
        Ok(Ok(Passed { decisions, masked }))
    }

    /// Checks an answer; `Ok` holds it as it may be shown (masked).
    pub fn check_output(
        &self,
        endpoint: &str,
        answer: &str,
    ) -> Result<(String, Vec<GuardrailDecision>), Blocked> {
        let Some(rails) = self.config.of(endpoint) else {
            return Ok((answer.to_string(), Vec::new()));
        };
        let mut decisions = Vec::new();
        if let Some(term) = blocked_term(rails, answer) {
            decisions.push(decision("output", "blocked_term", "blocked", term.clone()));
            return Err(self.blocked(
                endpoint,
                decisions,
                format!("the answer contains the blocked term `{term}`"),
            ));
        }
        let mut shown = answer.to_string();
        if rails.output_pii != PiiAction::Off {
            let found = pii::find(answer, &pii::ALL);
            let kinds = kinds_of(found.iter());
            let action = action_name(rails.output_pii);
            for (kind, count) in &kinds {
                decisions.push(decision(
                    "output",
                    kind.rule(),
                    action,
                    format!("{count} found"),
                ));
            }
            if !kinds.is_empty() {
                match rails.output_pii {
                    PiiAction::Block => {
                        return Err(self.blocked(
                            endpoint,
                            decisions,
                            "the answer contains personal data".to_string(),
                        ));
                    }
                    PiiAction::Mask => shown = pii::mask(answer, &found),
                    PiiAction::Flag | PiiAction::Off => {}
                }
            }
        }
        self.count(endpoint, &decisions);
        Ok((shown, decisions))
    }

    /// A refusal, counted.
    fn blocked(
        &self,
        endpoint: &str,
        decisions: Vec<GuardrailDecision>,
        reason: String,
    ) -> Blocked {
        self.count(endpoint, &decisions);
        Blocked { decisions, reason }
    }

    fn count(&self, endpoint: &str, decisions: &[GuardrailDecision]) {
        if let Some(counter) = &self.decisions {
            for decision in decisions {
                counter
                    .with_label_values(&[
                        endpoint,
                        &decision.stage,
                        &decision.rule,
                        &decision.action,
                    ])
                    .inc();
            }
        }
    }

    /// The denied topic closest to `question`, when it is close enough.
    async fn denied_topic(
        &self,
        endpoint: &str,
        rails: &EndpointGuardrails,
        question: &str,
    ) -> Result<Option<(String, f32)>, Error> {
        let topics = self.topics_of(endpoint, rails).await?;
        let asked = self.embed(rails, vec![question.to_string()]).await?;
        let Some(asked) = asked.first() else {
            return Ok(None);
        };
        let closest = topics
            .iter()
            .map(|(topic, vector)| (topic.clone(), cosine(asked, vector)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        Ok(closest.filter(|(_, similarity)| *similarity >= rails.topic_threshold))
    }

    async fn topics_of(
        &self,
        endpoint: &str,
        rails: &EndpointGuardrails,
    ) -> Result<Arc<Vec<(String, Vec<f32>)>>, Error> {
        let mut topics = self.topics.lock().await;
        if let Some(embedded) = topics.get(endpoint) {
            return Ok(embedded.clone());
        }
        let vectors = self.embed(rails, rails.denied_topics.clone()).await?;
        let embedded = Arc::new(
            rails
                .denied_topics
                .iter()
                .cloned()
                .zip(vectors)
                .collect::<Vec<_>>(),
        );
        topics.insert(endpoint.to_string(), embedded.clone());
        Ok(embedded)
    }

    async fn embed(
        &self,
        rails: &EndpointGuardrails,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, Error> {
        let request = pb::EmbedRequest {
            collection: String::new(),
            embedder: rails.topic_embedder.clone(),
            texts,
        };
        let response = with_deadline(self.timeout, self.client.clone().embed(request))
            .await
            .map_err(|status| {
                Error::Unavailable(format!(
                    "guardrails: the topic check cannot embed the question: {}",
                    status.message()
                ))
            })?;
        Ok(response
            .into_inner()
            .vectors
            .into_iter()
            .map(|vector| vector.values)
            .collect())
    }
}

fn decision(stage: &str, rule: &str, action: &str, detail: String) -> GuardrailDecision {
    GuardrailDecision {
        stage: stage.to_string(),
        rule: rule.to_string(),
        action: action.to_string(),
        detail,
    }
}

fn action_name(action: PiiAction) -> &'static str {
    match action {
        PiiAction::Mask => "masked",
        PiiAction::Block => "blocked",
        PiiAction::Flag | PiiAction::Off => "flagged",
    }
}

/// Each kind found, with how often, in kind order.
fn kinds_of<'a>(found: impl Iterator<Item = &'a pii::Found>) -> Vec<(PiiKind, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for occurrence in found {
        *counts.entry(occurrence.kind).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// The first blocked term `text` holds as a whole word, any case.
fn blocked_term(rails: &EndpointGuardrails, text: &str) -> Option<String> {
    if rails.blocked_terms.is_empty() {
        return None;
    }
    let alternatives: Vec<String> = rails
        .blocked_terms
        .iter()
        .map(|term| regex::escape(term.trim()))
        .collect();
    let pattern = Regex::new(&format!(r"(?i)\b(?:{})\b", alternatives.join("|"))).ok()?;
    pattern
        .find(text)
        .map(|found| found.as_str().to_lowercase())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norms =
        a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|y| y * y).sum::<f32>().sqrt();
    if norms == 0.0 {
        0.0
    } else {
        dot / norms
    }
}

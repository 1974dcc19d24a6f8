//! `[serving.guardrails]`: what each endpoint checks in a question and in
//! its answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardrailsConfig {
    /// By endpoint name; `*` for every endpoint without its own entry.
    pub endpoints: BTreeMap<String, EndpointGuardrails>,
}

/// What to do with personal data found in the text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiAction {
    #[default]
    Off,
    /// Replace it with `[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]`.
    Mask,
    /// Refuse the request (input) or withhold the answer (output).
    Block,
    /// Let it through, and record that it was there.
    Flag,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointGuardrails {
    /// Personal data in the question (and the conversation).
    pub input_pii: PiiAction,
    /// Personal data in the answer.
    pub output_pii: PiiAction,
    /// Refuse a question, or withhold an answer, that contains one of
    /// these (whole words, any case).
    pub blocked_terms: Vec<String>,
    /// Refuse a question (with its conversation) longer than this many
    /// tokens. 0: no limit.
    pub max_input_tokens: u32,
    /// Refuse a question about one of these topics: its embedding at
    /// least `topic_threshold` similar (cosine) to the topic's.
    pub denied_topics: Vec<String>,
    pub topic_threshold: f32,
    /// The vector-index embedder of the topic check; empty: its default.
    pub topic_embedder: String,
}

impl Default for EndpointGuardrails {
    fn default() -> EndpointGuardrails {
        EndpointGuardrails {
            input_pii: PiiAction::Off,
            output_pii: PiiAction::Off,
            blocked_terms: Vec::new(),
            max_input_tokens: 0,
            denied_topics: Vec::new(),
            topic_threshold: 0.8,
            topic_embedder: String::new(),
        }
    }
}

impl GuardrailsConfig {
    pub fn of(&self, endpoint: &str) -> Option<&EndpointGuardrails> {
        self.endpoints
            .get(endpoint)
            .or_else(|| self.endpoints.get("*"))
    }

    pub fn check(&self) -> Result<(), String> {
        for (endpoint, rails) in &self.endpoints {
            let field = |name: &str| format!("serving.guardrails.endpoints.{endpoint}.{name}");
            if endpoint != "*" {
                keel_types::validate::name("endpoint", endpoint).map_err(|error| {
                    format!("serving.guardrails.endpoints.{endpoint}: {}", error.rule)
                })?;
            }
            if !(0.0..=1.0).contains(&rails.topic_threshold) {
                return Err(format!(
                    "{} must be within 0..=1, got {}",
                    field("topic_threshold"),
                    rails.topic_threshold
                ));
            }
            if rails
                .blocked_terms
                .iter()
                .any(|term| term.trim().is_empty())
            {
                return Err(format!(
                    "{} must not hold an empty term",
                    field("blocked_terms")
                ));
            }
            if rails
                .denied_topics
                .iter()
                .any(|topic| topic.trim().is_empty())
            {
                return Err(format!(
                    "{} must not hold an empty topic",
                    field("denied_topics")
                ));
            }
        }
        Ok(())
    }
}

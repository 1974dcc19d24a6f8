//! A guardrail's decision on a request, as its inference record keeps it.

use keel_proto::v1 as pb;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardrailDecision {
    /// `input` or `output`.
    pub stage: String,
    /// e.g. `pii.email`, `blocked_term`, `max_input_tokens`, `topic`.
    pub rule: String,
    /// `masked`, `blocked` or `flagged`.
    pub action: String,
    /// What matched (never the personal data itself).
    pub detail: String,
}

impl From<pb::GuardrailDecision> for GuardrailDecision {
    fn from(decision: pb::GuardrailDecision) -> GuardrailDecision {
        GuardrailDecision {
            stage: decision.stage,
            rule: decision.rule,
            action: decision.action,
            detail: decision.detail,
        }
    }
}

impl From<GuardrailDecision> for pb::GuardrailDecision {
    fn from(decision: GuardrailDecision) -> pb::GuardrailDecision {
        pb::GuardrailDecision {
            stage: decision.stage,
            rule: decision.rule,
            action: decision.action,
            detail: decision.detail,
        }
    }
}

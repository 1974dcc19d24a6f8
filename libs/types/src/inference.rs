//! The inference record: one served request and its response. serving
//! writes it, monitoring stores it, feedback joins ratings to it. Its JSON
//! form is what monitoring keeps on disk: a new field gets a default and a
//! renamed one an alias, so records stored before still read.

use keel_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{
    validate, CacheHit, ChatMessage, FieldError, FinishReason, GuardrailDecision, Passage,
    RequestId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferenceStatus {
    Ok,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceRecord {
    pub request_id: RequestId,
    pub trace_id: String,
    /// The query's span in serving; empty when telemetry is off, and in
    /// records stored before the field existed.
    #[serde(default)]
    pub span_id: String,
    pub endpoint: String,
    /// The route as the endpoint names it ("model@alias" or "model/version").
    pub route_target: String,
    pub served_model: String,
    pub served_version: u32,
    pub user_id: String,
    pub session_id: String,
    pub question: String,
    /// The conversation as the client sent it.
    pub input_messages: Vec<ChatMessage>,
    /// The retrieved passages, best first, with their whole text.
    pub contexts: Vec<Passage>,
    /// The messages the generator saw (the rendered prompt).
    pub prompt_messages: Vec<ChatMessage>,
    pub answer: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Finite and >= 0.
    pub latency_ms: f64,
    pub status: InferenceStatus,
    /// Empty when `status` is `Ok`.
    pub error: String,
    /// Unix milliseconds when serving received the request.
    pub started_at_ms: i64,
    /// The generator that answered (the chain's own or a fallback), or the
    /// last one tried.
    pub generator: String,
    /// `Cancelled` when the caller left before the answer was complete.
    #[serde(default)]
    pub finish_reason: FinishReason,
    /// Shadow traffic: the live request this answer mirrors (never shown
    /// to its user); `None` for live and evaluation requests.
    #[serde(default)]
    pub shadow_of: Option<RequestId>,
    /// Served from the answer cache (no tokens generated).
    #[serde(default)]
    pub cache_hit: CacheHit,
    /// What the endpoint's guardrails decided, input first.
    #[serde(default)]
    pub guardrails: Vec<GuardrailDecision>,
}

impl InferenceRecord {
    /// Checks every field a store or a join relies on; errors name
    /// `field.<name>` (e.g. `records[3].latency_ms`).
    pub fn from_proto(
        field: &str,
        record: pb::InferenceRecord,
    ) -> Result<InferenceRecord, FieldError> {
        let named = |name: &str| format!("{field}.{name}");
        let request_id = RequestId::parse(&named("request_id"), &record.request_id)?;
        validate::name(&named("endpoint"), &record.endpoint)?;
        if !record.latency_ms.is_finite() || record.latency_ms < 0.0 {
            return Err(FieldError::new(
                named("latency_ms"),
                format!("must be finite and >= 0, got {}", record.latency_ms),
            ));
        }
        let status = match pb::InferenceStatus::try_from(record.status) {
            Ok(pb::InferenceStatus::Ok) => InferenceStatus::Ok,
            Ok(pb::InferenceStatus::Error) => InferenceStatus::Error,
            _ => {
                return Err(FieldError::new(
                    named("status"),
                    format!(
                        "must be INFERENCE_STATUS_OK or INFERENCE_STATUS_ERROR, got {}",
                        record.status
                    ),
                ))
            }
        };
        if record.started_at_ms < 0 {
            return Err(FieldError::new(
                named("started_at_ms"),
                format!("must be >= 0, got {}", record.started_at_ms),
            ));
        }
        let contexts = record
            .contexts
            .into_iter()
            .enumerate()
            .map(|(index, citation)| {
                Passage::from_proto(&named(&format!("contexts[{index}]")), citation)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let finish_reason =
            FinishReason::from_proto(&named("finish_reason"), record.finish_reason)?;
        let cache_hit = CacheHit::from_proto(&named("cache_hit"), record.cache_hit)?;
        let usage = record.usage.unwrap_or_default();
        let shadow_of = match record.shadow_of.as_str() {
            "" => None,
            live => Some(RequestId::parse(&named("shadow_of"), live)?),
        };
        Ok(InferenceRecord {
            shadow_of,
            cache_hit,
            guardrails: record.guardrails.into_iter().map(Into::into).collect(),
            request_id,
            trace_id: record.trace_id,
            span_id: record.span_id,
            endpoint: record.endpoint,
            route_target: record.route_target,
            served_model: record.served_model,
            served_version: record.served_version,
            user_id: record.user_id,
            session_id: record.session_id,
            question: record.question,
            input_messages: ChatMessage::list_from_proto(
                &named("input_messages"),
                record.input_messages,
            )?,
            contexts,
            prompt_messages: ChatMessage::list_from_proto(
                &named("prompt_messages"),
                record.prompt_messages,
            )?,
            answer: record.answer,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            latency_ms: record.latency_ms,
            status,
            error: record.error,
            started_at_ms: record.started_at_ms,
            generator: record.generator,
            finish_reason,
        })
    }
}

impl From<InferenceRecord> for pb::InferenceRecord {
    fn from(record: InferenceRecord) -> pb::InferenceRecord {
        let status = match record.status {
            InferenceStatus::Ok => pb::InferenceStatus::Ok,
            InferenceStatus::Error => pb::InferenceStatus::Error,
        };
        pb::InferenceRecord {
            request_id: record.request_id.to_string(),
            trace_id: record.trace_id,
            span_id: record.span_id,
            endpoint: record.endpoint,
            route_target: record.route_target,
            served_model: record.served_model,
            served_version: record.served_version,
            user_id: record.user_id,
            session_id: record.session_id,
            question: record.question,
            input_messages: record.input_messages.into_iter().map(Into::into).collect(),
            contexts: record.contexts.into_iter().map(Into::into).collect(),
            prompt_messages: record.prompt_messages.into_iter().map(Into::into).collect(),
            answer: record.answer,
            usage: Some(pb::TokenUsage {
                input_tokens: record.input_tokens,
                output_tokens: record.output_tokens,
            }),
            latency_ms: record.latency_ms,
            status: status as i32,
            error: record.error,
            started_at_ms: record.started_at_ms,
            generator: record.generator,
            finish_reason: pb::FinishReason::from(record.finish_reason) as i32,
            shadow_of: record
                .shadow_of
                .map(|live| live.to_string())
                .unwrap_or_default(),
            cache_hit: pb::CacheHit::from(record.cache_hit) as i32,
            guardrails: record.guardrails.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::Role;

    fn record() -> InferenceRecord {
        InferenceRecord {
            request_id: RequestId::from_uuid(Uuid::from_u128(7)),
            trace_id: format!("{:032x}", 7),
            span_id: format!("{:016x}", 7),
            endpoint: "support".to_string(),
            route_target: "support-chain@champion".to_string(),
            served_model: "support-chain".to_string(),
            served_version: 3,
            user_id: "user-1".to_string(),
            session_id: "session-1".to_string(),
            question: "why?".to_string(),
            input_messages: vec![ChatMessage::new(Role::User, "why?")],
            contexts: vec![Passage {
                id: "doc-1".to_string(),
                text: "because".to_string(),
                score: 0.75,
            }],
            prompt_messages: vec![
                ChatMessage::new(Role::System, "answer from the context"),
                ChatMessage::new(Role::User, "why?"),
            ],
            answer: "because".to_string(),
            input_tokens: 12,
            output_tokens: 4,
            latency_ms: 5.5,
            status: InferenceStatus::Ok,
            error: String::new(),
            started_at_ms: 1_700_000_000_000,
            generator: "extractive".to_string(),
            finish_reason: FinishReason::Length,
            shadow_of: None,
            cache_hit: CacheHit::None,
            guardrails: Vec::new(),
        }
    }

    #[test]
    fn round_trips_through_proto() {
        let proto = pb::InferenceRecord::from(record());
        assert_eq!(proto.request_id, "00000000-0000-0000-0000-000000000007");
        assert_eq!(proto.contexts[0].point_id, "doc-1");
        assert_eq!(proto.finish_reason, pb::FinishReason::Length as i32);
        assert_eq!(
            InferenceRecord::from_proto("record", proto).unwrap(),
            record()
        );
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        type Breaks = fn(&mut pb::InferenceRecord);
        let cases: Vec<(Breaks, &str)> = vec![
            (
                |r| r.request_id = "nope".to_string(),
                "records[2].request_id",
            ),
            (
                |r| r.endpoint = "bad name".to_string(),
                "records[2].endpoint",
            ),
            (|r| r.latency_ms = -1.0, "records[2].latency_ms"),
            (|r| r.latency_ms = f64::NAN, "records[2].latency_ms"),
            (|r| r.status = 0, "records[2].status"),
            (|r| r.started_at_ms = -5, "records[2].started_at_ms"),
            (
                |r| r.contexts[0].score = f32::INFINITY,
                "records[2].contexts[0].score",
            ),
            (|r| r.finish_reason = 42, "records[2].finish_reason"),
            (
                |r| r.prompt_messages[1].role = "robot".to_string(),
                "records[2].prompt_messages[1].role",
            ),
        ];
        for (breaks, field) in cases {
            let mut proto = pb::InferenceRecord::from(record());
            breaks(&mut proto);
            let error = InferenceRecord::from_proto("records[2]", proto).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn reads_records_stored_before_span_ids_and_finish_reasons() {
        let mut json = serde_json::to_value(record()).unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("span_id");
        object.remove("finish_reason");
        let old: InferenceRecord = serde_json::from_value(json).unwrap();
        assert_eq!(old.span_id, "");
        assert_eq!(old.finish_reason, FinishReason::Unspecified);
    }
}

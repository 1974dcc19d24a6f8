//! A conversation and how a generation ran: the messages sent to a
//! generator, its sampling parameters and why its answer ended.

use keel_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{validate, FieldError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation, in the OpenAI chat format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    /// Checks the role; errors name `field` (e.g. `messages[2]`).
    pub fn parse(field: &str, role: &str, content: String) -> Result<ChatMessage, FieldError> {
        let Some(role) = Role::parse(role) else {
            let shown: String = role.chars().take(32).collect();
            return Err(FieldError::new(
                format!("{field}.role"),
                format!("must be system, user or assistant, got {shown:?}"),
            ));
        };
        Ok(ChatMessage { role, content })
    }

    pub fn from_proto(field: &str, message: pb::ChatMessage) -> Result<ChatMessage, FieldError> {
        ChatMessage::parse(field, &message.role, message.content)
    }

    /// Every message of a list, errors naming `field[i]`.
    pub fn list_from_proto(
        field: &str,
        messages: Vec<pb::ChatMessage>,
    ) -> Result<Vec<ChatMessage>, FieldError> {
        messages
            .into_iter()
            .enumerate()
            .map(|(index, message)| ChatMessage::from_proto(&format!("{field}[{index}]"), message))
            .collect()
    }
}

impl From<ChatMessage> for pb::ChatMessage {
    fn from(message: ChatMessage) -> pb::ChatMessage {
        pb::ChatMessage {
            role: message.role.as_str().to_string(),
            content: message.content,
        }
    }
}

/// Sampling parameters; `None` takes the generator's default. Absent
/// fields read as `None`, so stored specs stay readable as fields are added.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationParams {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
}

pub const MAX_TOKENS: u32 = 32768;
pub const MAX_STOP_SEQUENCES: usize = 16;
pub const MAX_STOP_SEQUENCE_BYTES: usize = 256;

impl GenerationParams {
    /// The rules every caller's parameters follow; errors name
    /// `{field}.temperature` and so on.
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        let params = self;
        if let Some(temperature) = params.temperature {
            // `contains` is false for NaN, so NaN is rejected too.
            if !(0.0..=2.0).contains(&temperature) {
                return Err(FieldError::new(
                    format!("{field}.temperature"),
                    format!("must be in 0..=2, got {temperature}"),
                ));
            }
        }
        if let Some(top_p) = params.top_p {
            let in_range = top_p > 0.0 && top_p <= 1.0;
            if !in_range {
                return Err(FieldError::new(
                    format!("{field}.top_p"),
                    format!("must be in (0, 1], got {top_p}"),
                ));
            }
        }
        if let Some(max_tokens) = params.max_tokens {
            validate::in_range(
                &format!("{field}.max_tokens"),
                u64::from(max_tokens),
                1,
                u64::from(MAX_TOKENS),
            )?;
        }
        if params.stop.len() > MAX_STOP_SEQUENCES {
            return Err(FieldError::new(
                format!("{field}.stop"),
                format!(
                    "must hold at most {MAX_STOP_SEQUENCES} sequences, got {}",
                    params.stop.len()
                ),
            ));
        }
        for stop in &params.stop {
            if stop.is_empty() {
                return Err(FieldError::new(
                    format!("{field}.stop"),
                    "sequences must not be empty",
                ));
            }
            validate::max_len(&format!("{field}.stop"), stop, MAX_STOP_SEQUENCE_BYTES)?;
        }
        Ok(())
    }
}

impl From<pb::GenerationParams> for GenerationParams {
    fn from(params: pb::GenerationParams) -> GenerationParams {
        GenerationParams {
            temperature: params.temperature,
            top_p: params.top_p,
            max_tokens: params.max_tokens,
            stop: params.stop,
            seed: params.seed,
        }
    }
}

impl From<GenerationParams> for pb::GenerationParams {
    fn from(params: GenerationParams) -> pb::GenerationParams {
        pb::GenerationParams {
            temperature: params.temperature,
            top_p: params.top_p,
            max_tokens: params.max_tokens,
            stop: params.stop,
            seed: params.seed,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// No generation finished (the request failed), or a record written
    /// before finish reasons were reported. A generator never returns it.
    #[default]
    Unspecified,
    /// The model ended its answer (an end-of-generation token).
    Stop,
    /// A stop sequence from the parameters was produced (it is not in the text).
    StopSequence,
    /// `max_tokens` was reached.
    Length,
    /// The caller went away and generation was stopped early.
    Cancelled,
}

impl FinishReason {
    /// The OpenAI / OpenTelemetry GenAI name (`gen_ai.response.finish_reasons`).
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Unspecified => "unspecified",
            FinishReason::Stop | FinishReason::StopSequence => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }

    /// The proto enum's number; errors name `field`.
    pub fn from_proto(field: &str, value: i32) -> Result<FinishReason, FieldError> {
        match pb::FinishReason::try_from(value) {
            Ok(pb::FinishReason::Unspecified) => Ok(FinishReason::Unspecified),
            Ok(pb::FinishReason::Stop) => Ok(FinishReason::Stop),
            Ok(pb::FinishReason::Length) => Ok(FinishReason::Length),
            Ok(pb::FinishReason::StopSequence) => Ok(FinishReason::StopSequence),
            Ok(pb::FinishReason::Cancelled) => Ok(FinishReason::Cancelled),
            Err(_) => Err(FieldError::new(
                field,
                format!("must be a FinishReason value, got {value}"),
            )),
        }
    }
}

impl From<FinishReason> for pb::FinishReason {
    fn from(reason: FinishReason) -> pb::FinishReason {
        match reason {
            FinishReason::Unspecified => pb::FinishReason::Unspecified,
            FinishReason::Stop => pb::FinishReason::Stop,
            FinishReason::Length => pb::FinishReason::Length,
            FinishReason::StopSequence => pb::FinishReason::StopSequence,
            FinishReason::Cancelled => pb::FinishReason::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_unknown_roles_name_the_field() {
        let message = ChatMessage::new(Role::Assistant, "hi");
        let proto = pb::ChatMessage::from(message.clone());
        assert_eq!(proto.role, "assistant");
        assert_eq!(ChatMessage::from_proto("m", proto).unwrap(), message);
        let error = ChatMessage::list_from_proto(
            "messages",
            vec![
                pb::ChatMessage {
                    role: "user".to_string(),
                    content: "q".to_string(),
                },
                pb::ChatMessage {
                    role: "tool".to_string(),
                    content: "x".to_string(),
                },
            ],
        )
        .unwrap_err();
        assert_eq!(error.field, "messages[1].role");
        assert!(error.rule.contains("\"tool\""), "{}", error.rule);
    }

    #[test]
    fn finish_reasons_round_trip_through_proto_and_json() {
        for reason in [
            FinishReason::Unspecified,
            FinishReason::Stop,
            FinishReason::StopSequence,
            FinishReason::Length,
            FinishReason::Cancelled,
        ] {
            let number = pb::FinishReason::from(reason) as i32;
            assert_eq!(FinishReason::from_proto("f", number).unwrap(), reason);
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(serde_json::from_str::<FinishReason>(&json).unwrap(), reason);
        }
        assert_eq!(
            serde_json::to_string(&FinishReason::StopSequence).unwrap(),
            "\"stop_sequence\""
        );
        assert_eq!(FinishReason::from_proto("f", 99).unwrap_err().field, "f");
    }

    #[test]
    fn absent_params_read_as_defaults() {
        let params: GenerationParams = serde_json::from_str(r#"{"max_tokens":8}"#).unwrap();
        assert_eq!(params.max_tokens, Some(8));
        assert_eq!(params.temperature, None);
        assert!(params.stop.is_empty());
    }
}

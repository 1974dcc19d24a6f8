//! Datasets built from feedback joined with the inference records: SFT
//! (OpenAI chat fine-tuning lines), preference pairs and evaluation sets.
//! Lines follow the inference's (started_at_ms, request_id), so the same
//! data always exports the same file.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use keel_types::{ChatMessage, InferenceRecord, RequestId, Role};

use crate::record::{FeedbackKind, FeedbackRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    Sft,
    Preference,
    Eval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    Liked,
    Neutral,
    Disliked,
}

/// What the feedback of one request amounts to; "latest" wins.
#[derive(Debug, Default)]
struct Verdict {
    correction: Option<String>,
    judgement: Option<Judgement>,
    /// The latest rating, or thumbs as 1/-1.
    score: Option<i64>,
}

/// `feedback` must be oldest first (the store's export order).
fn verdicts(feedback: &[FeedbackRecord]) -> HashMap<RequestId, Verdict> {
    let mut verdicts: HashMap<RequestId, Verdict> = HashMap::new();
    for record in feedback {
        let verdict = verdicts.entry(record.request_id).or_default();
        match record.kind {
            FeedbackKind::Correction => verdict.correction = Some(record.correction.clone()),
            FeedbackKind::Thumbs => {
                let liked = record.value > 0.0;
                verdict.judgement = Some(if liked {
                    Judgement::Liked
                } else {
                    Judgement::Disliked
                });
                verdict.score = Some(if liked { 1 } else { -1 });
            }
            FeedbackKind::Rating => {
                let rating = record.value as i64;
                verdict.judgement = Some(match rating {
                    4.. => Judgement::Liked,
                    3 => Judgement::Neutral,
                    _ => Judgement::Disliked,
                });
                verdict.score = Some(rating);
            }
            FeedbackKind::Comment => {}
        }
    }
    verdicts
}

/// Lowercased alphanumeric words joined by one space: "How do I reset?" and
/// "how do i  reset" ask the same question.
pub fn normalise_question(question: &str) -> String {
    let words: Vec<String> = question
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.join(" ")
}

/// The messages the generator saw; the bare question when none were logged.
fn prompt_of(inference: &InferenceRecord) -> Vec<ChatMessage> {
    if !inference.prompt_messages.is_empty() {
        return inference.prompt_messages.clone();
    }
    vec![ChatMessage::new(Role::User, inference.question.clone())]
}

#[derive(Serialize)]
struct SftLine {
    messages: Vec<ChatMessage>,
}

#[derive(Serialize)]
struct PreferenceLine<'a> {
    prompt: Vec<ChatMessage>,
    chosen: &'a str,
    rejected: &'a str,
    request_id: RequestId,
}

#[derive(Serialize)]
struct EvalLine<'a> {
    request_id: RequestId,
    question: &'a str,
    answer: &'a str,
    contexts: Vec<&'a str>,
    context_ids: Vec<&'a str>,
    rating: Option<i64>,
    correction: Option<&'a str>,
    served_model: &'a str,
    served_version: u32,
    endpoint: &'a str,
}

/// The dataset lines, one JSON object each, without newlines. Feedback on a
/// request monitoring does not know is left out. CPU-bound on large exports:
/// call it off the async threads.
pub fn build_lines(
    kind: DatasetKind,
    feedback: &[FeedbackRecord],
    inferences: &[InferenceRecord],
) -> Result<Vec<String>, serde_json::Error> {
    let verdicts = verdicts(feedback);
    let mut ordered: BTreeMap<(i64, RequestId), &InferenceRecord> = BTreeMap::new();
    for inference in inferences {
        if verdicts.contains_key(&inference.request_id) {
            ordered.insert((inference.started_at_ms, inference.request_id), inference);
        }
    }
    let mut lines = Vec::new();
    match kind {
        DatasetKind::Sft => {
            for inference in ordered.values() {
                let Some(verdict) = verdicts.get(&inference.request_id) else {
                    continue;
                };
                let preferred = match (&verdict.correction, verdict.judgement) {
                    (Some(correction), _) => correction.as_str(),
                    (None, Some(Judgement::Liked)) if !inference.answer.is_empty() => {
                        inference.answer.as_str()
                    }
                    _ => continue,
                };
                let mut messages = prompt_of(inference);
                messages.push(ChatMessage::new(Role::Assistant, preferred));
                lines.push(serde_json::to_string(&SftLine { messages })?);
            }
        }
        DatasetKind::Preference => {
            // Liked answers per (endpoint, question), in export order: the
            // last one is the most recent.
            let mut liked: HashMap<(&str, String), Vec<&InferenceRecord>> = HashMap::new();
            for inference in ordered.values() {
                let is_liked = verdicts
                    .get(&inference.request_id)
                    .is_some_and(|verdict| verdict.judgement == Some(Judgement::Liked));
                if is_liked && !inference.answer.is_empty() {
                    let key = (
                        inference.endpoint.as_str(),
                        normalise_question(&inference.question),
                    );
                    liked.entry(key).or_default().push(inference);
                }
            }
            for inference in ordered.values() {
                let Some(verdict) = verdicts.get(&inference.request_id) else {
                    continue;
                };
                if verdict.judgement != Some(Judgement::Disliked) {
                    continue;
                }
                let rejected = inference.answer.as_str();
                let chosen = match &verdict.correction {
                    Some(correction) => Some(correction.as_str()),
                    None => {
                        let key = (
                            inference.endpoint.as_str(),
                            normalise_question(&inference.question),
                        );
                        liked.get(&key).and_then(|candidates| {
                            candidates
                                .iter()
                                .rev()
                                .find(|other| {
                                    other.request_id != inference.request_id
                                        && other.answer != rejected
                                })
                                .map(|other| other.answer.as_str())
                        })
                    }
                };
                let Some(chosen) = chosen else { continue };
                let line = PreferenceLine {
                    prompt: prompt_of(inference),
                    chosen,
                    rejected,
                    request_id: inference.request_id,
                };
                lines.push(serde_json::to_string(&line)?);
            }
        }
        DatasetKind::Eval => {
            for inference in ordered.values() {
                let Some(verdict) = verdicts.get(&inference.request_id) else {
                    continue;
                };
                let line = EvalLine {
                    request_id: inference.request_id,
                    question: &inference.question,
                    answer: &inference.answer,
                    contexts: inference
                        .contexts
                        .iter()
                        .map(|passage| passage.text.as_str())
                        .collect(),
                    context_ids: inference
                        .contexts
                        .iter()
                        .map(|passage| passage.id.as_str())
                        .collect(),
                    rating: verdict.score,
                    correction: verdict.correction.as_deref(),
                    served_model: &inference.served_model,
                    served_version: inference.served_version,
                    endpoint: &inference.endpoint,
                };
                lines.push(serde_json::to_string(&line)?);
            }
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use keel_types::{FinishReason, InferenceStatus, Passage};

    use super::*;

    /// "r7" is request 00000000-0000-0000-0000-000000000007.
    fn request_id(label: &str) -> RequestId {
        let n: u128 = label[1..].parse().unwrap();
        RequestId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn inference(label: &str, started_at_ms: i64, question: &str, answer: &str) -> InferenceRecord {
        InferenceRecord {
            request_id: request_id(label),
            trace_id: String::new(),
            span_id: String::new(),
            endpoint: "support".to_string(),
            route_target: "chain@champion".to_string(),
            served_model: "chain".to_string(),
            served_version: 3,
            user_id: String::new(),
            session_id: String::new(),
            question: question.to_string(),
            input_messages: vec![ChatMessage::new(Role::User, question)],
            contexts: vec![Passage {
                id: format!("doc-{label}"),
                text: format!("passage for {label}"),
                score: 0.5,
            }],
            prompt_messages: vec![
                ChatMessage::new(Role::System, "Use the context."),
                ChatMessage::new(Role::User, question),
            ],
            answer: answer.to_string(),
            input_tokens: 0,
            output_tokens: 0,
            latency_ms: 1.0,
            status: InferenceStatus::Ok,
            error: String::new(),
            started_at_ms,
            generator: "extractive".to_string(),
            finish_reason: FinishReason::Stop,
        }
    }

    fn feedback(
        label: &str,
        created_at_ms: i64,
        kind: FeedbackKind,
        value: f64,
        correction: &str,
    ) -> FeedbackRecord {
        FeedbackRecord {
            id: format!("{label}-{created_at_ms}"),
            request_id: request_id(label),
            kind,
            value,
            correction: correction.to_string(),
            comment: String::new(),
            user_id: String::new(),
            idempotency_key: String::new(),
            created_at_ms,
            endpoint: "support".to_string(),
            served_model: "chain".to_string(),
            served_version: 3,
            joined: true,
        }
    }

    /// r1 liked (thumbs down, then up: latest wins); r2 disliked with a
    /// correction; r3 rated 1 and asks r1's question; r4 rated 3 with a
    /// comment; r5 disliked with nothing to prefer; r9 unknown to monitoring.
    fn scenario() -> (Vec<FeedbackRecord>, Vec<InferenceRecord>) {
        let inferences = vec![
            inference("r3", 300, "how do I reset my password", "Call us."),
            inference(
                "r1",
                100,
                "How do I reset my password?",
                "Use the reset link.",
            ),
            inference("r2", 200, "What is the refund window?", "7 days."),
            inference("r4", 400, "Opening hours?", "9 to 5."),
            inference("r5", 500, "Who are you?", "A bot."),
        ];
        let feedback = vec![
            feedback("r1", 1, FeedbackKind::Thumbs, -1.0, ""),
            feedback("r2", 2, FeedbackKind::Thumbs, -1.0, ""),
            feedback("r2", 3, FeedbackKind::Correction, 0.0, "30 days."),
            feedback("r1", 4, FeedbackKind::Thumbs, 1.0, ""),
            feedback("r3", 5, FeedbackKind::Rating, 1.0, ""),
            feedback("r4", 6, FeedbackKind::Rating, 3.0, ""),
            feedback("r4", 7, FeedbackKind::Comment, 0.0, ""),
            feedback("r5", 8, FeedbackKind::Thumbs, -1.0, ""),
            feedback("r9", 9, FeedbackKind::Thumbs, 1.0, ""),
        ];
        (feedback, inferences)
    }

    #[test]
    fn sft_lines() {
        let (feedback, inferences) = scenario();
        let lines = build_lines(DatasetKind::Sft, &feedback, &inferences).unwrap();
        assert_eq!(
            lines,
            vec![
                r#"{"messages":[{"role":"system","content":"Use the context."},{"role":"user","content":"How do I reset my password?"},{"role":"assistant","content":"Use the reset link."}]}"#,
                r#"{"messages":[{"role":"system","content":"Use the context."},{"role":"user","content":"What is the refund window?"},{"role":"assistant","content":"30 days."}]}"#,
            ]
        );
    }

    #[test]
    fn preference_lines() {
        let (feedback, inferences) = scenario();
        let lines = build_lines(DatasetKind::Preference, &feedback, &inferences).unwrap();
        assert_eq!(
            lines,
            vec![
                r#"{"prompt":[{"role":"system","content":"Use the context."},{"role":"user","content":"What is the refund window?"}],"chosen":"30 days.","rejected":"7 days.","request_id":"00000000-0000-0000-0000-000000000002"}"#,
                r#"{"prompt":[{"role":"system","content":"Use the context."},{"role":"user","content":"how do I reset my password"}],"chosen":"Use the reset link.","rejected":"Call us.","request_id":"00000000-0000-0000-0000-000000000003"}"#,
            ]
        );
    }

    #[test]
    fn eval_lines() {
        let (feedback, inferences) = scenario();
        let lines = build_lines(DatasetKind::Eval, &feedback, &inferences).unwrap();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            r#"{"request_id":"00000000-0000-0000-0000-000000000001","question":"How do I reset my password?","answer":"Use the reset link.","contexts":["passage for r1"],"context_ids":["doc-r1"],"rating":1,"correction":null,"served_model":"chain","served_version":3,"endpoint":"support"}"#
        );
        assert_eq!(
            lines[1],
            r#"{"request_id":"00000000-0000-0000-0000-000000000002","question":"What is the refund window?","answer":"7 days.","contexts":["passage for r2"],"context_ids":["doc-r2"],"rating":-1,"correction":"30 days.","served_model":"chain","served_version":3,"endpoint":"support"}"#
        );
        assert!(
            lines[2].contains(r#""request_id":"00000000-0000-0000-0000-000000000003""#)
                && lines[2].contains(r#""rating":1,"#)
        );
        assert!(
            lines[3].contains(r#""request_id":"00000000-0000-0000-0000-000000000004""#)
                && lines[3].contains(r#""rating":3,"#)
        );
        assert!(lines[4].contains(r#""request_id":"00000000-0000-0000-0000-000000000005""#));
    }

    #[test]
    fn eval_rating_is_null_without_judgement() {
        let inferences = vec![inference("r1", 1, "q", "a")];
        let feedback = vec![feedback("r1", 1, FeedbackKind::Comment, 0.0, "")];
        let lines = build_lines(DatasetKind::Eval, &feedback, &inferences).unwrap();
        assert!(
            lines[0].contains(r#""rating":null,"correction":null"#),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn questions_normalise() {
        assert_eq!(normalise_question("  How do I   RESET?"), "how do i reset");
    }
}

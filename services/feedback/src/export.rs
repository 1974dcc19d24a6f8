//! Dataset lines built from the feedback on one request joined with its
//! inference record: SFT (OpenAI chat fine-tuning lines), preference pairs,
//! evaluation sets and retrieval sets. Pure: the streaming export
//! (`dataset_export`) reads the rows and the records and calls these.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use xxhash_rust::xxh3::Xxh3;

use keel_types::{ChatMessage, InferenceRecord, RequestId, Role};

use crate::record::{FeedbackKind, FeedbackRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    Sft,
    Preference,
    Eval,
    Retrieval,
}

/// What the latest thumbs or rating on a request says of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    Liked,
    Neutral,
    Disliked,
}

/// What the feedback on one request amounts to; "latest" wins.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Verdict {
    correction: Option<String>,
    judgement: Option<Judgement>,
    /// The latest rating, or thumbs as 1/-1.
    score: Option<i64>,
    /// FLAG reasons, oldest first: a flagged answer is never a target.
    flags: Vec<String>,
    tags: BTreeSet<String>,
    /// RELEVANCE per passage id: true when judged relevant.
    passages: BTreeMap<String, bool>,
}

impl Verdict {
    /// `feedback` is the feedback on one request, oldest first.
    pub fn of(feedback: &[FeedbackRecord]) -> Verdict {
        let mut verdict = Verdict::default();
        for record in feedback {
            verdict.tags.extend(record.tags.iter().cloned());
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
                FeedbackKind::Flag => verdict.flags.push(record.reason.clone()),
                FeedbackKind::Relevance => {
                    verdict
                        .passages
                        .insert(record.passage_id.clone(), record.value > 0.0);
                }
                FeedbackKind::Comment => {}
            }
        }
        verdict
    }

    /// The latest thumbs or rating, as a judgement; `None` without one.
    pub fn judgement(&self) -> Option<Judgement> {
        self.judgement
    }

    pub fn is_flagged(&self) -> bool {
        !self.flags.is_empty()
    }

    pub fn correction_mut(&mut self) -> Option<&mut String> {
        self.correction.as_mut()
    }

    /// Liked and not flagged: the answer may be a fine-tuning target.
    fn endorses_answer(&self) -> bool {
        self.judgement == Some(Judgement::Liked) && self.flags.is_empty()
    }

    /// Disliked or flagged: the answer is one to move away from.
    fn rejects_answer(&self) -> bool {
        self.judgement == Some(Judgement::Disliked) || !self.flags.is_empty()
    }
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

/// The latest two distinct endorsed answers per (endpoint, question), for
/// preference pairs whose disliked answer has no correction. Its memory
/// grows with the distinct questions that have a liked answer, not with
/// the rows exported.
#[derive(Debug, Default)]
pub struct LikedAnswers {
    by_question: HashMap<QuestionKey, Vec<LikedAnswer>>,
}

/// (endpoint, normalised question).
type QuestionKey = (String, String);

/// (started_at_ms, request_id, answer).
type LikedAnswer = (i64, RequestId, String);

impl LikedAnswers {
    /// Notes the answer of `inference` when `verdict` endorses it.
    pub fn add(&mut self, inference: &InferenceRecord, verdict: &Verdict) {
        if !verdict.endorses_answer() || inference.answer.is_empty() {
            return;
        }
        let key = (
            inference.endpoint.clone(),
            normalise_question(&inference.question),
        );
        let candidates = self.by_question.entry(key).or_default();
        let entry = (
            inference.started_at_ms,
            inference.request_id,
            inference.answer.clone(),
        );
        candidates.retain(|(_, _, answer)| *answer != entry.2);
        candidates.push(entry);
        // Newest first; two distinct answers always leave one that differs
        // from any rejected answer.
        candidates.sort_by_key(|(started_at_ms, request_id, _)| {
            std::cmp::Reverse((*started_at_ms, *request_id))
        });
        candidates.truncate(2);
    }

    /// The most recent endorsed answer to the same question that is not
    /// `rejected`.
    fn chosen_for(&self, inference: &InferenceRecord, rejected: &str) -> Option<&str> {
        let key = (
            inference.endpoint.clone(),
            normalise_question(&inference.question),
        );
        self.by_question.get(&key).and_then(|candidates| {
            candidates
                .iter()
                .find(|(_, request_id, answer)| {
                    *request_id != inference.request_id && answer != rejected
                })
                .map(|(_, _, answer)| answer.as_str())
        })
    }
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
    /// What a good answer says, for `keel eval run`: the correction, else
    /// the answer itself when it was liked and not flagged.
    reference: Option<&'a str>,
    /// The passages judged relevant, for the retrieval-hit scorer.
    expected_sources: Vec<&'a str>,
    flags: &'a [String],
    tags: &'a BTreeSet<String>,
    served_model: &'a str,
    served_version: u32,
    endpoint: &'a str,
}

#[derive(Serialize)]
struct RetrievalPassage<'a> {
    id: &'a str,
    text: &'a str,
}

#[derive(Serialize)]
struct RetrievalLine<'a> {
    request_id: RequestId,
    query: &'a str,
    positives: Vec<RetrievalPassage<'a>>,
    negatives: Vec<RetrievalPassage<'a>>,
    endpoint: &'a str,
    served_model: &'a str,
    served_version: u32,
}

/// One dataset line and the hash of what makes it a duplicate of another:
/// (prompt, answer) for SFT and EVAL, (prompt, chosen, rejected) for
/// preference, (query, positives, negatives) for retrieval.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub json: String,
    pub dedup_key: u128,
}

/// Builds the key as the line is built: every part is hashed with its
/// length, so ("ab", "c") and ("a", "bc") differ.
struct DedupKey(Xxh3);

impl DedupKey {
    fn new() -> DedupKey {
        DedupKey(Xxh3::new())
    }

    fn text(mut self, text: &str) -> DedupKey {
        self.0.update(&(text.len() as u64).to_le_bytes());
        self.0.update(text.as_bytes());
        self
    }

    fn messages(self, messages: &[ChatMessage]) -> DedupKey {
        messages.iter().fold(self, |key, message| {
            key.text(message.role.as_str()).text(&message.content)
        })
    }

    fn finish(self) -> u128 {
        self.0.digest128()
    }
}

/// The line `kind` makes of one request, or `None` when its feedback gives
/// this kind nothing to use. `liked` is only read for preference pairs.
pub fn build_line(
    kind: DatasetKind,
    inference: &InferenceRecord,
    verdict: &Verdict,
    liked: &LikedAnswers,
) -> Result<Option<Line>, serde_json::Error> {
    match kind {
        DatasetKind::Sft => {
            let preferred = match &verdict.correction {
                Some(correction) => correction.as_str(),
                None if verdict.endorses_answer() && !inference.answer.is_empty() => {
                    inference.answer.as_str()
                }
                None => return Ok(None),
            };
            let mut messages = prompt_of(inference);
            messages.push(ChatMessage::new(Role::Assistant, preferred));
            let dedup_key = DedupKey::new().messages(&messages).finish();
            let json = serde_json::to_string(&SftLine { messages })?;
            Ok(Some(Line { json, dedup_key }))
        }
        DatasetKind::Preference => {
            if !verdict.rejects_answer() {
                return Ok(None);
            }
            let rejected = inference.answer.as_str();
            let chosen = match &verdict.correction {
                Some(correction) => Some(correction.as_str()),
                None => liked.chosen_for(inference, rejected),
            };
            let Some(chosen) = chosen else {
                return Ok(None);
            };
            let prompt = prompt_of(inference);
            let dedup_key = DedupKey::new()
                .messages(&prompt)
                .text(chosen)
                .text(rejected)
                .finish();
            let line = PreferenceLine {
                prompt,
                chosen,
                rejected,
                request_id: inference.request_id,
            };
            Ok(Some(Line {
                json: serde_json::to_string(&line)?,
                dedup_key,
            }))
        }
        DatasetKind::Eval => {
            let dedup_key = DedupKey::new()
                .messages(&prompt_of(inference))
                .text(&inference.answer)
                .finish();
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
                reference: verdict.correction.as_deref().or_else(|| {
                    verdict
                        .endorses_answer()
                        .then_some(inference.answer.as_str())
                }),
                expected_sources: inference
                    .contexts
                    .iter()
                    .filter(|passage| verdict.passages.get(&passage.id) == Some(&true))
                    .map(|passage| passage.id.as_str())
                    .collect(),
                flags: &verdict.flags,
                tags: &verdict.tags,
                served_model: &inference.served_model,
                served_version: inference.served_version,
                endpoint: &inference.endpoint,
            };
            Ok(Some(Line {
                json: serde_json::to_string(&line)?,
                dedup_key,
            }))
        }
        DatasetKind::Retrieval => {
            // Only passages the request did retrieve count: a judgement on
            // any other id is left out.
            let mut positives = Vec::new();
            let mut negatives = Vec::new();
            for passage in &inference.contexts {
                let judged = RetrievalPassage {
                    id: &passage.id,
                    text: &passage.text,
                };
                match verdict.passages.get(&passage.id) {
                    Some(true) => positives.push(judged),
                    Some(false) => negatives.push(judged),
                    None => {}
                }
            }
            if positives.is_empty() && negatives.is_empty() {
                return Ok(None);
            }
            let mut key = DedupKey::new().text(&inference.question);
            for passage in positives.iter() {
                key = key.text(passage.id);
            }
            key = key.text("");
            for passage in negatives.iter() {
                key = key.text(passage.id);
            }
            let line = RetrievalLine {
                request_id: inference.request_id,
                query: &inference.question,
                positives,
                negatives,
                endpoint: &inference.endpoint,
                served_model: &inference.served_model,
                served_version: inference.served_version,
            };
            Ok(Some(Line {
                json: serde_json::to_string(&line)?,
                dedup_key: key.finish(),
            }))
        }
    }
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
            shadow_of: None,
            cache_hit: keel_types::CacheHit::None,
            guardrails: Vec::new(),
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
            request_id: Some(request_id(label)),
            session_id: String::new(),
            passage_id: String::new(),
            kind,
            value,
            correction: correction.to_string(),
            comment: String::new(),
            reason: String::new(),
            tags: Vec::new(),
            user_id: String::new(),
            idempotency_key: String::new(),
            created_at_ms,
            endpoint: "support".to_string(),
            served_model: "chain".to_string(),
            served_version: 3,
            joined: true,
        }
    }

    fn flag(label: &str, created_at_ms: i64, reason: &str) -> FeedbackRecord {
        FeedbackRecord {
            reason: reason.to_string(),
            ..feedback(label, created_at_ms, FeedbackKind::Flag, 0.0, "")
        }
    }

    fn relevance(label: &str, created_at_ms: i64, passage_id: &str, value: f64) -> FeedbackRecord {
        FeedbackRecord {
            passage_id: passage_id.to_string(),
            ..feedback(label, created_at_ms, FeedbackKind::Relevance, value, "")
        }
    }

    /// The lines of an export of `feedback` (oldest first) and
    /// `inferences`, as the streaming export makes them: per request, in
    /// request id order, after a first pass over liked answers.
    fn build_lines(
        kind: DatasetKind,
        feedback: &[FeedbackRecord],
        inferences: &[InferenceRecord],
    ) -> Vec<String> {
        let mut by_request: BTreeMap<RequestId, Vec<FeedbackRecord>> = BTreeMap::new();
        for record in feedback {
            by_request
                .entry(record.request_id.unwrap())
                .or_default()
                .push(record.clone());
        }
        let joined: Vec<(&InferenceRecord, Verdict)> = by_request
            .iter()
            .filter_map(|(request_id, feedback)| {
                let inference = inferences
                    .iter()
                    .find(|inference| inference.request_id == *request_id)?;
                Some((inference, Verdict::of(feedback)))
            })
            .collect();
        let mut liked = LikedAnswers::default();
        for (inference, verdict) in &joined {
            liked.add(inference, verdict);
        }
        joined
            .iter()
            .filter_map(|(inference, verdict)| {
                build_line(kind, inference, verdict, &liked).unwrap()
            })
            .map(|line| line.json)
            .collect()
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
        let lines = build_lines(DatasetKind::Sft, &feedback, &inferences);
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
        let lines = build_lines(DatasetKind::Preference, &feedback, &inferences);
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
        let lines = build_lines(DatasetKind::Eval, &feedback, &inferences);
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            r#"{"request_id":"00000000-0000-0000-0000-000000000001","question":"How do I reset my password?","answer":"Use the reset link.","contexts":["passage for r1"],"context_ids":["doc-r1"],"rating":1,"correction":null,"reference":"Use the reset link.","expected_sources":[],"flags":[],"tags":[],"served_model":"chain","served_version":3,"endpoint":"support"}"#
        );
        assert_eq!(
            lines[1],
            r#"{"request_id":"00000000-0000-0000-0000-000000000002","question":"What is the refund window?","answer":"7 days.","contexts":["passage for r2"],"context_ids":["doc-r2"],"rating":-1,"correction":"30 days.","reference":"30 days.","expected_sources":[],"flags":[],"tags":[],"served_model":"chain","served_version":3,"endpoint":"support"}"#
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
        let lines = build_lines(DatasetKind::Eval, &feedback, &inferences);
        assert!(
            lines[0].contains(r#""rating":null,"correction":null,"reference":null"#),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn a_flagged_answer_is_never_a_target_and_is_rejected() {
        let inferences = vec![
            inference("r1", 100, "Is it safe?", "Yes, mix them."),
            inference("r2", 200, "is it safe", "No, never mix them."),
        ];
        let feedback = vec![
            feedback("r1", 1, FeedbackKind::Thumbs, 1.0, ""),
            flag("r1", 2, "harmful"),
            feedback("r2", 3, FeedbackKind::Thumbs, 1.0, ""),
        ];
        let sft = build_lines(DatasetKind::Sft, &feedback, &inferences);
        assert_eq!(sft.len(), 1);
        assert!(sft[0].contains("No, never mix them."), "{}", sft[0]);
        let preference = build_lines(DatasetKind::Preference, &feedback, &inferences);
        assert_eq!(
            preference,
            vec![
                r#"{"prompt":[{"role":"system","content":"Use the context."},{"role":"user","content":"Is it safe?"}],"chosen":"No, never mix them.","rejected":"Yes, mix them.","request_id":"00000000-0000-0000-0000-000000000001"}"#
            ]
        );
        let eval = build_lines(DatasetKind::Eval, &feedback, &inferences);
        assert!(eval[0].contains(r#""flags":["harmful"]"#), "{}", eval[0]);
    }

    #[test]
    fn eval_lines_carry_the_union_of_tags() {
        let inferences = vec![inference("r1", 1, "q", "a")];
        let mut first = feedback("r1", 1, FeedbackKind::Thumbs, 1.0, "");
        first.tags = vec!["tone".to_string(), "billing".to_string()];
        let mut second = feedback("r1", 2, FeedbackKind::Comment, 0.0, "");
        second.tags = vec!["billing".to_string()];
        let lines = build_lines(DatasetKind::Eval, &[first, second], &inferences);
        assert!(
            lines[0].contains(r#""tags":["billing","tone"]"#),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn retrieval_lines_have_positives_and_hard_negatives() {
        let mut with_three = inference("r1", 1, "How long is the refund window?", "30 days.");
        with_three.contexts = ["refunds", "shipping", "warranty"]
            .iter()
            .map(|id| Passage {
                id: id.to_string(),
                text: format!("about {id}"),
                score: 0.5,
            })
            .collect();
        let inferences = vec![with_three, inference("r2", 2, "q", "a")];
        let feedback = vec![
            relevance("r1", 1, "shipping", 1.0),
            relevance("r1", 2, "refunds", 1.0),
            relevance("r1", 3, "warranty", -1.0),
            // Latest wins: shipping is judged not relevant after all.
            relevance("r1", 4, "shipping", -1.0),
            // Not retrieved by r1: left out.
            relevance("r1", 5, "elsewhere", 1.0),
            // r2 has only a thumbs: nothing for RETRIEVAL.
            feedback("r2", 6, FeedbackKind::Thumbs, 1.0, ""),
        ];
        let lines = build_lines(DatasetKind::Retrieval, &feedback, &inferences);
        assert_eq!(
            lines,
            vec![
                r#"{"request_id":"00000000-0000-0000-0000-000000000001","query":"How long is the refund window?","positives":[{"id":"refunds","text":"about refunds"}],"negatives":[{"id":"shipping","text":"about shipping"},{"id":"warranty","text":"about warranty"}],"endpoint":"support","served_model":"chain","served_version":3}"#
            ]
        );
        // The EVAL line names the same relevant passage as the one its
        // answer should have been found in.
        let eval = build_lines(DatasetKind::Eval, &feedback, &inferences);
        assert!(
            eval[0].contains(r#""expected_sources":["refunds"]"#),
            "{}",
            eval[0]
        );
    }

    #[test]
    fn equal_prompt_and_answer_share_a_dedup_key() {
        let first = inference("r1", 1, "q", "a");
        let second = inference("r2", 2, "q", "a");
        let other = inference("r3", 3, "q", "b");
        let liked = Verdict::of(&[feedback("r1", 1, FeedbackKind::Thumbs, 1.0, "")]);
        let none = LikedAnswers::default();
        let key = |inference: &InferenceRecord| {
            build_line(DatasetKind::Sft, inference, &liked, &none)
                .unwrap()
                .unwrap()
                .dedup_key
        };
        assert_eq!(key(&first), key(&second));
        assert_ne!(key(&first), key(&other));
    }

    #[test]
    fn liked_answers_keep_the_latest_two_distinct() {
        let liked = Verdict::of(&[feedback("r1", 1, FeedbackKind::Thumbs, 1.0, "")]);
        let mut answers = LikedAnswers::default();
        answers.add(&inference("r1", 100, "q", "old"), &liked);
        answers.add(&inference("r2", 300, "q", "newest"), &liked);
        answers.add(&inference("r3", 200, "Q?", "middle"), &liked);
        let asking = inference("r9", 400, "q", "bad");
        assert_eq!(answers.chosen_for(&asking, "bad"), Some("newest"));
        assert_eq!(answers.chosen_for(&asking, "newest"), Some("middle"));
    }

    #[test]
    fn questions_normalise() {
        assert_eq!(normalise_question("  How do I   RESET?"), "how do i reset");
    }
}

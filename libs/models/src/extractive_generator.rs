use std::collections::HashSet;
use std::ops::ControlFlow;

use crate::text::{count_tokens, is_stopword, words};
use crate::{FinishReason, Generation, GenerationRequest, Generator, ModelError};

pub const EXTRACTIVE_GENERATOR_NAME: &str = "extractive";

/// Answers by quoting the passage sentences that share the most words with
/// the question, each followed by the id of its passage in brackets. No
/// model weights, fully deterministic; it cannot say anything the passages
/// do not.
pub struct ExtractiveGenerator;

const MAX_SENTENCES: usize = 2;
const NO_ANSWER: &str = "I could not find an answer in the retrieved documents.";

struct Candidate<'a> {
    sentence: &'a str,
    passage_id: &'a str,
    overlap: usize,
    passage_rank: usize,
}

impl Generator for ExtractiveGenerator {
    fn name(&self) -> &str {
        EXTRACTIVE_GENERATOR_NAME
    }

    fn provider(&self) -> &str {
        "keel"
    }

    fn generate(
        &self,
        request: &GenerationRequest,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, ModelError> {
        let question_words: HashSet<String> = words(&request.question)
            .filter(|word| !is_stopword(word))
            .collect();
        let mut candidates = Vec::new();
        for (passage_rank, passage) in request.passages.iter().enumerate() {
            for sentence in split_sentences(&passage.text) {
                let sentence_words: HashSet<String> = words(sentence).collect();
                let overlap = question_words.intersection(&sentence_words).count();
                candidates.push(Candidate {
                    sentence,
                    passage_id: &passage.id,
                    overlap,
                    passage_rank,
                });
            }
        }
        // Most shared words first; ties go to the better-ranked passage, then
        // to the earlier sentence (the sort is stable).
        candidates.sort_by(|a, b| {
            b.overlap
                .cmp(&a.overlap)
                .then(a.passage_rank.cmp(&b.passage_rank))
        });
        let chosen: Vec<String> = candidates
            .iter()
            .filter(|candidate| candidate.overlap > 0)
            .take(MAX_SENTENCES)
            .map(|candidate| format!("{} [{}]", candidate.sentence, candidate.passage_id))
            .collect();
        let mut answer = if chosen.is_empty() {
            NO_ANSWER.to_string()
        } else {
            chosen.join(" ")
        };
        let mut finish_reason = FinishReason::Stop;
        if let Some(max_tokens) = request.params.max_tokens {
            let truncated = truncate_words(&answer, max_tokens as usize);
            if truncated != answer {
                finish_reason = FinishReason::Length;
            }
            answer = truncated;
        }
        for stop in &request.params.stop {
            if let Some(index) = answer.find(stop.as_str()) {
                answer.truncate(index);
                finish_reason = FinishReason::StopSequence;
            }
        }
        let input_tokens = request
            .messages
            .iter()
            .map(|message| count_tokens(&message.content))
            .sum();
        // Streamed a word at a time, as a model would, so callers of the
        // stream see the same shape whatever the generator.
        let mut streamed = String::with_capacity(answer.len());
        for piece in answer.split_inclusive(' ') {
            streamed.push_str(piece);
            if on_delta(piece).is_break() {
                finish_reason = FinishReason::Cancelled;
                break;
            }
        }
        Ok(Generation {
            output_tokens: count_tokens(&streamed),
            text: streamed,
            input_tokens,
            finish_reason,
        })
    }
}

fn split_sentences(text: &str) -> Vec<&str> {
    let mut sentences = Vec::new();
    let mut start = 0;
    for (index, character) in text.char_indices() {
        let is_end = matches!(character, '.' | '!' | '?' | '\n');
        if !is_end {
            continue;
        }
        let end = index + character.len_utf8();
        let sentence = text[start..end].trim();
        if sentence.chars().any(char::is_alphanumeric) {
            sentences.push(sentence);
        }
        start = end;
    }
    let rest = text[start..].trim();
    if rest.chars().any(char::is_alphanumeric) {
        sentences.push(rest);
    }
    sentences
}

fn truncate_words(text: &str, max_words: usize) -> String {
    text.split_whitespace()
        .take(max_words)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ignore_deltas, ChatMessage, GenerationParams, Passage, Role};

    fn request(question: &str, passages: &[(&str, &str)]) -> GenerationRequest {
        GenerationRequest {
            messages: vec![ChatMessage {
                role: Role::User,
                content: format!("context ... {question}"),
            }],
            question: question.to_string(),
            passages: passages
                .iter()
                .map(|(id, text)| Passage {
                    id: id.to_string(),
                    text: text.to_string(),
                    score: 1.0,
                })
                .collect(),
            params: GenerationParams::default(),
        }
    }

    #[test]
    fn quotes_the_best_matching_sentence_with_its_id() {
        let input = request(
            "How long is the refund window?",
            &[
                ("faq#1", "Shipping takes three days. Returns are free."),
                (
                    "faq#2",
                    "The refund window is 30 days. Contact support first.",
                ),
            ],
        );
        let generation = ExtractiveGenerator
            .generate(&input, &mut ignore_deltas)
            .unwrap();
        assert!(
            generation
                .text
                .starts_with("The refund window is 30 days. [faq#2]"),
            "{}",
            generation.text
        );
        assert_eq!(generation.input_tokens, 8);
        assert_eq!(generation.output_tokens, count_tokens(&generation.text));
        assert_eq!(generation.finish_reason, FinishReason::Stop);
    }

    #[test]
    fn says_so_when_nothing_matches() {
        let input = request("quantum chromodynamics?", &[("a", "Lunch is at noon.")]);
        let generation = ExtractiveGenerator
            .generate(&input, &mut ignore_deltas)
            .unwrap();
        assert_eq!(generation.text, NO_ANSWER);
    }

    #[test]
    fn max_tokens_truncates() {
        let mut input = request(
            "refund window",
            &[("a", "The refund window is 30 days long.")],
        );
        input.params.max_tokens = Some(3);
        let generation = ExtractiveGenerator
            .generate(&input, &mut ignore_deltas)
            .unwrap();
        assert_eq!(generation.text, "The refund window");
        assert_eq!(generation.finish_reason, FinishReason::Length);
    }

    #[test]
    fn deltas_concatenate_to_the_text_and_a_break_stops_early() {
        let input = request(
            "refund window",
            &[("a", "The refund window is 30 days long.")],
        );
        let mut pieces = Vec::new();
        let whole = ExtractiveGenerator
            .generate(&input, &mut |piece: &str| {
                pieces.push(piece.to_string());
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(pieces.concat(), whole.text);
        assert!(pieces.len() > 3);

        let mut received = 0;
        let cancelled = ExtractiveGenerator
            .generate(&input, &mut |_piece: &str| {
                received += 1;
                if received == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(received, 2);
        assert_eq!(cancelled.finish_reason, FinishReason::Cancelled);
        assert_eq!(cancelled.text, "The refund ");
    }
}

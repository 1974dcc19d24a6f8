//! The LLM judge: the conversation that asks a generator to grade an
//! answer from 1 to 5, and the reading of its reply as a score in [0, 1].
//! Which generator answers is the caller's business (any in the catalog).

use crate::ScorerInput;

/// Passages are cut to this many characters in all: small models have
/// small windows, and the judge needs the gist, not every word.
pub const MAX_CONTEXT_CHARS: usize = 2000;
/// The reply needs one digit; a few tokens leave room for "Score: 4".
pub const MAX_REPLY_TOKENS: u32 = 8;

const INSTRUCTIONS: &str =
    "You grade answers to questions. Reply with a single digit from 1 to 5: \
5 = correct and fully supported by the context, 3 = partly correct, 1 = wrong or unsupported.";

/// One message of the judge's conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeMessage {
    pub role: &'static str,
    pub content: String,
}

/// The conversation asking for a grade of `input.answer`.
pub fn judge_messages(input: &ScorerInput<'_>) -> Vec<JudgeMessage> {
    let mut context = String::new();
    let mut used = 0;
    for passage in input.passages {
        let left = MAX_CONTEXT_CHARS - used;
        if left == 0 {
            break;
        }
        let taken: String = passage.chars().take(left).collect();
        used += taken.chars().count();
        context.push_str(&taken);
        context.push('\n');
    }
    let mut prompt = format!("Question: {}\n", input.question);
    if let Some(reference) = input.reference {
        prompt.push_str(&format!("Reference answer: {reference}\n"));
    }
    prompt.push_str(&format!(
        "Context:\n{context}Answer: {}\n\nGrade (1-5):",
        input.answer
    ));
    vec![
        JudgeMessage {
            role: "system",
            content: INSTRUCTIONS.to_string(),
        },
        JudgeMessage {
            role: "user",
            content: prompt,
        },
    ]
}

/// The first digit 1–5 of the reply, as (grade − 1) / 4; `None` when the
/// reply holds none (the example then has no judge score).
pub fn parse_verdict(reply: &str) -> Option<f64> {
    let grade = reply
        .chars()
        .find_map(|c| c.to_digit(10).filter(|d| (1..=5).contains(d)))?;
    Some(f64::from(grade - 1) / 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_carries_question_reference_context_and_answer() {
        let passages = vec!["a".repeat(1500), "b".repeat(1500)];
        let input = ScorerInput {
            question: "What is the refund window?",
            answer: "30 days.",
            reference: Some("30 days"),
            pattern: None,
            passages: &passages,
            retrieved_sources: &[],
            expected_sources: &[],
            latency_ms: 0.0,
            cost_usd: 0.0,
        };
        let messages = judge_messages(&input);
        assert_eq!(messages[0].role, "system");
        let prompt = &messages[1].content;
        assert!(prompt.starts_with(
            "Question: What is the refund window?\nReference answer: 30 days\nContext:\n"
        ));
        assert!(prompt.ends_with("Answer: 30 days.\n\nGrade (1-5):"));
        // All 1500 a's, then 500 b's: the context stops at 2000 characters.
        assert!(prompt.contains(&format!("{}\n{}\n", "a".repeat(1500), "b".repeat(500))));
        assert!(!prompt.contains(&"b".repeat(501)));
        let without_reference = judge_messages(&ScorerInput {
            reference: None,
            ..input
        });
        assert!(!without_reference[1].content.contains("Reference answer"));
    }

    #[test]
    fn the_verdict_is_the_first_grade_in_the_reply() {
        assert_eq!(parse_verdict("5"), Some(1.0));
        assert_eq!(parse_verdict("Score: 4/5"), Some(0.75));
        assert_eq!(parse_verdict(" 1 - wrong"), Some(0.0));
        // 0 and 9 are not grades; the 3 is.
        assert_eq!(parse_verdict("0 then 9 then 3"), Some(0.5));
        assert_eq!(parse_verdict("I cannot grade this."), None);
    }
}

//! The scorers an evaluation run can name, and what each reads from an
//! example and its answer.

use regex::Regex;

use crate::{grounding, text_match};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scorer {
    /// 1 when the answer is the reference (normalised words).
    Exact,
    /// 1 when the reference's words occur in the answer.
    Contains,
    /// 1 when the example's `pattern` matches the answer.
    Regex,
    TokenF1,
    RougeL,
    /// 1 when an expected source was retrieved.
    RetrievalHit,
    /// The share of the answer's content words found in its passages.
    Groundedness,
    LatencyMs,
    CostUsd,
    /// A generator's 1–5 verdict on the answer, as (verdict − 1) / 4; the
    /// caller asks the generator, so [`Scorer::score`] leaves it out.
    Judge,
}

impl Scorer {
    pub const ALL: [Scorer; 10] = [
        Scorer::Exact,
        Scorer::Contains,
        Scorer::Regex,
        Scorer::TokenF1,
        Scorer::RougeL,
        Scorer::RetrievalHit,
        Scorer::Groundedness,
        Scorer::LatencyMs,
        Scorer::CostUsd,
        Scorer::Judge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scorer::Exact => "exact",
            Scorer::Contains => "contains",
            Scorer::Regex => "regex",
            Scorer::TokenF1 => "token_f1",
            Scorer::RougeL => "rouge_l",
            Scorer::RetrievalHit => "retrieval_hit",
            Scorer::Groundedness => "groundedness",
            Scorer::LatencyMs => "latency_ms",
            Scorer::CostUsd => "cost_usd",
            Scorer::Judge => "judge",
        }
    }

    /// The scorer called `name`, or an error listing the known ones.
    pub fn parse(name: &str) -> Result<Scorer, String> {
        Scorer::ALL
            .into_iter()
            .find(|scorer| scorer.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Scorer::ALL.iter().map(|scorer| scorer.name()).collect();
                format!("unknown scorer `{name}`; known: {}", known.join(", "))
            })
    }

    /// Latency and cost are better low; every other score is better high.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Scorer::LatencyMs | Scorer::CostUsd)
    }

    /// The values a score can take: [0, 1] for the shares and matches,
    /// [0, ∞) for latency and cost. An interval is cut to it.
    pub fn range(self) -> (f64, f64) {
        match self {
            Scorer::LatencyMs | Scorer::CostUsd => (0.0, f64::INFINITY),
            _ => (0.0, 1.0),
        }
    }

    /// The score of one answer; `None` when the example lacks what this
    /// scorer needs (no reference, no pattern, no expected source), so it
    /// counts neither for nor against.
    pub fn score(self, input: &ScorerInput<'_>) -> Option<f64> {
        match self {
            Scorer::Exact => input
                .reference
                .map(|reference| text_match::exact_match(input.answer, reference)),
            Scorer::Contains => input
                .reference
                .map(|reference| text_match::contains(input.answer, reference)),
            Scorer::Regex => input
                .pattern
                .map(|pattern| f64::from(u8::from(pattern.is_match(input.answer)))),
            Scorer::TokenF1 => input
                .reference
                .map(|reference| text_match::token_f1(input.answer, reference)),
            Scorer::RougeL => input
                .reference
                .map(|reference| text_match::rouge_l(input.answer, reference)),
            Scorer::RetrievalHit => {
                grounding::retrieval_hit(input.retrieved_sources, input.expected_sources)
            }
            Scorer::Groundedness => grounding::groundedness(input.answer, input.passages),
            Scorer::LatencyMs => Some(input.latency_ms),
            Scorer::CostUsd => Some(input.cost_usd),
            Scorer::Judge => None,
        }
    }
}

impl std::fmt::Display for Scorer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One example and the answer it got.
#[derive(Debug, Clone, Copy)]
pub struct ScorerInput<'a> {
    pub question: &'a str,
    pub answer: &'a str,
    pub reference: Option<&'a str>,
    pub pattern: Option<&'a Regex>,
    /// The retrieved passages' texts, best first.
    pub passages: &'a [String],
    pub retrieved_sources: &'a [String],
    pub expected_sources: &'a [String],
    pub latency_ms: f64,
    pub cost_usd: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scorer_parses_from_its_name() {
        for scorer in Scorer::ALL {
            assert_eq!(Scorer::parse(scorer.name()), Ok(scorer));
        }
        let unknown = Scorer::parse("bleu").unwrap_err();
        assert!(unknown.starts_with("unknown scorer `bleu`; known: exact, contains"));
    }

    #[test]
    fn scorers_read_what_the_example_has_and_skip_what_it_lacks() {
        let pattern = Regex::new(r"\b30 days\b").unwrap();
        let passages = vec!["Refunds are accepted within 30 days.".to_string()];
        let retrieved = vec!["refunds".to_string()];
        let expected = vec!["refunds".to_string()];
        let with_everything = ScorerInput {
            question: "What is the refund window?",
            answer: "Refunds are accepted within 30 days.",
            reference: Some("30 days"),
            pattern: Some(&pattern),
            passages: &passages,
            retrieved_sources: &retrieved,
            expected_sources: &expected,
            latency_ms: 12.5,
            cost_usd: 0.001,
        };
        let scores: Vec<Option<f64>> = Scorer::ALL
            .iter()
            .map(|scorer| scorer.score(&with_everything))
            .collect();
        assert_eq!(
            scores,
            [
                Some(0.0),
                Some(1.0),
                Some(1.0),
                Some(2.0 * (2.0 / 6.0) / (2.0 / 6.0 + 1.0)),
                Some(2.0 * (2.0 / 6.0) / (2.0 / 6.0 + 1.0)),
                Some(1.0),
                Some(1.0),
                Some(12.5),
                Some(0.001),
                None,
            ]
        );
        let bare = ScorerInput {
            reference: None,
            pattern: None,
            expected_sources: &[],
            ..with_everything
        };
        for scorer in [
            Scorer::Exact,
            Scorer::Contains,
            Scorer::Regex,
            Scorer::TokenF1,
            Scorer::RougeL,
            Scorer::RetrievalHit,
        ] {
            assert_eq!(scorer.score(&bare), None, "{scorer}");
        }
        assert_eq!(Scorer::Groundedness.score(&bare), Some(1.0));
    }
}

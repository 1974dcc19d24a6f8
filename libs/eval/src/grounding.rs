//! Whether an answer says what its retrieved passages say, and whether the
//! passages that answer the question were retrieved.

use std::collections::HashSet;

use crate::words::content_words;

/// The share of the answer's content words found in the retrieved
/// passages: 1 when everything it says is worded from them, near 0 for an
/// answer made up elsewhere. `None` when the answer has no content word.
pub fn groundedness(answer: &str, passages: &[String]) -> Option<f64> {
    let answer_words = content_words(answer);
    if answer_words.is_empty() {
        return None;
    }
    let passage_words: HashSet<String> = passages
        .iter()
        .flat_map(|passage| content_words(passage))
        .collect();
    let supported = answer_words
        .iter()
        .filter(|word| passage_words.contains(*word))
        .count();
    Some(supported as f64 / answer_words.len() as f64)
}

/// 1 when any expected source is among the retrieved ones; `None` when the
/// example names no expected source.
pub fn retrieval_hit(retrieved: &[String], expected: &[String]) -> Option<f64> {
    if expected.is_empty() {
        return None;
    }
    let hit = retrieved.iter().any(|source| expected.contains(source));
    Some(f64::from(u8::from(hit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passages() -> Vec<String> {
        vec![
            "Refunds are accepted within 30 days of purchase.".to_string(),
            "Shipping takes five business days.".to_string(),
        ]
    }

    #[test]
    fn an_answer_worded_from_its_passages_is_grounded() {
        assert_eq!(
            groundedness("Refunds are accepted within 30 days.", &passages()),
            Some(1.0)
        );
        // refunds, accepted, 30, days, lifetime, warranty: 4 of 6 supported.
        let partly = groundedness(
            "Refunds are accepted for 30 days, with a lifetime warranty.",
            &passages(),
        )
        .unwrap();
        assert!((partly - 4.0 / 6.0).abs() < 1e-12, "{partly}");
        assert_eq!(groundedness("Bananas are yellow.", &passages()), Some(0.0));
        assert_eq!(groundedness("It is.", &passages()), None);
    }

    #[test]
    fn a_hit_needs_one_expected_source_among_the_retrieved() {
        let retrieved = vec!["doc-2".to_string(), "doc-7".to_string()];
        assert_eq!(retrieval_hit(&retrieved, &["doc-7".to_string()]), Some(1.0));
        assert_eq!(retrieval_hit(&retrieved, &["doc-1".to_string()]), Some(0.0));
        assert_eq!(retrieval_hit(&retrieved, &[]), None);
    }
}

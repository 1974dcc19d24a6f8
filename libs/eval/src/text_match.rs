//! Scores of an answer against a reference answer, each in [0, 1].

use std::collections::HashMap;

use crate::words::normalised_words;

/// 1 when the normalised words are the same.
pub fn exact_match(answer: &str, reference: &str) -> f64 {
    f64::from(u8::from(
        normalised_words(answer) == normalised_words(reference),
    ))
}

/// 1 when the reference's normalised words occur in the answer, in order
/// and adjacent ("30 days" in "Refunds are accepted for 30 days.").
pub fn contains(answer: &str, reference: &str) -> f64 {
    let answer = normalised_words(answer);
    let reference = normalised_words(reference);
    if reference.is_empty() {
        return 1.0;
    }
    let found = answer
        .windows(reference.len())
        .any(|window| window == reference.as_slice());
    f64::from(u8::from(found))
}

/// SQuAD's token F1: the harmonic mean of precision and recall of the
/// answer's words against the reference's, counted with multiplicity.
pub fn token_f1(answer: &str, reference: &str) -> f64 {
    let answer = normalised_words(answer);
    let reference = normalised_words(reference);
    if answer.is_empty() || reference.is_empty() {
        return f64::from(u8::from(answer.is_empty() && reference.is_empty()));
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for word in &reference {
        *counts.entry(word).or_default() += 1;
    }
    let mut common = 0usize;
    for word in &answer {
        if let Some(count) = counts.get_mut(word.as_str()) {
            if *count > 0 {
                *count -= 1;
                common += 1;
            }
        }
    }
    f_measure(common, answer.len(), reference.len())
}

/// ROUGE-L F1: the longest common subsequence of words, as a share of the
/// answer (precision) and of the reference (recall).
pub fn rouge_l(answer: &str, reference: &str) -> f64 {
    let answer = normalised_words(answer);
    let reference = normalised_words(reference);
    if answer.is_empty() || reference.is_empty() {
        return f64::from(u8::from(answer.is_empty() && reference.is_empty()));
    }
    f_measure(
        longest_common_subsequence(&answer, &reference),
        answer.len(),
        reference.len(),
    )
}

fn f_measure(common: usize, answer_len: usize, reference_len: usize) -> f64 {
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / answer_len as f64;
    let recall = common as f64 / reference_len as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Length of the LCS, in O(len(a) × len(b)) time and O(len(b)) memory.
fn longest_common_subsequence(a: &[String], b: &[String]) -> usize {
    let mut previous = vec![0usize; b.len() + 1];
    let mut current = vec![0usize; b.len() + 1];
    for word_a in a {
        for (j, word_b) in b.iter().enumerate() {
            current[j + 1] = if word_a == word_b {
                previous[j] + 1
            } else {
                previous[j + 1].max(current[j])
            };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_match_ignores_case_punctuation_and_articles() {
        assert_eq!(exact_match("The 30 days.", "30 Days"), 1.0);
        assert_eq!(exact_match("30 days", "31 days"), 0.0);
    }

    #[test]
    fn contains_needs_the_reference_words_adjacent_and_in_order() {
        assert_eq!(
            contains("Refunds are accepted for 30 days.", "30 days"),
            1.0
        );
        assert_eq!(contains("days: 30", "30 days"), 0.0);
        assert_eq!(contains("30 working days", "30 days"), 0.0);
    }

    #[test]
    fn token_f1_counts_common_words_with_multiplicity() {
        // answer: refund window is 30 days (5); reference: 30 days (2);
        // common 2: precision 2/5, recall 1, F1 = 2·0.4/1.4.
        let f1 = token_f1("The refund window is 30 days", "30 days");
        assert!((f1 - 0.8 / 1.4).abs() < 1e-12, "{f1}");
        // "days days" against "days": one common word, not two.
        assert!((token_f1("days days", "days") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(token_f1("nothing alike", "30 days"), 0.0);
        assert_eq!(token_f1("", ""), 1.0);
        assert_eq!(token_f1("", "30 days"), 0.0);
    }

    #[test]
    fn rouge_l_rewards_order_where_token_f1_does_not() {
        let reference = "police killed the gunman";
        let in_order = rouge_l("police kill the gunman", reference);
        let reordered = rouge_l("the gunman kill police", reference);
        // [police kill gunman] against [police killed gunman]: LCS 2 of 3
        // words each way, F1 2/3.
        assert!((in_order - 2.0 / 3.0).abs() < 1e-12, "{in_order}");
        // [gunman kill police]: LCS 1, F1 1/3.
        assert!((reordered - 1.0 / 3.0).abs() < 1e-12, "{reordered}");
        assert_eq!(
            token_f1("police kill the gunman", reference),
            token_f1("the gunman kill police", reference)
        );
    }
}

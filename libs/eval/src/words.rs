//! The normalised words answers are compared by (as SQuAD's evaluation
//! does): lowercased, punctuation dropped, the articles a/an/the removed.

/// Words that carry no content: not counted when checking whether an answer
/// is supported by its passages.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been",
    "but", "by", "can", "could", "do", "does", "for", "from", "had", "has", "have", "he", "her",
    "his", "how", "i", "if", "in", "into", "is", "it", "its", "may", "more", "no", "not", "of",
    "on", "or", "our", "she", "should", "so", "such", "than", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "to", "was", "we", "were", "what", "when", "where",
    "which", "who", "will", "with", "would", "you", "your",
];

/// Lowercased alphanumeric words, articles removed.
pub fn normalised_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .filter(|word| !matches!(word.as_str(), "a" | "an" | "the"))
        .collect()
}

/// The normalised words that carry content.
pub fn content_words(text: &str) -> Vec<String> {
    normalised_words(text)
        .into_iter()
        .filter(|word| !STOPWORDS.contains(&word.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercased_without_punctuation_or_articles() {
        assert_eq!(
            normalised_words("The refund window is 30 days, an EXACT month."),
            ["refund", "window", "is", "30", "days", "exact", "month"]
        );
        assert_eq!(
            content_words("What is the refund window?"),
            ["refund", "window"]
        );
    }

    #[test]
    fn stopwords_are_sorted_for_reading() {
        assert!(STOPWORDS.windows(2).all(|pair| pair[0] < pair[1]));
    }
}

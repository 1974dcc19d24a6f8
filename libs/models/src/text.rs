//! Word-level text helpers for the built-in models.

/// Lowercased alphanumeric words.
pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
}

/// Words that carry no topic; left out of matching.
pub(crate) fn is_stopword(word: &str) -> bool {
    const STOPWORDS: &[&str] = &[
        "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how",
        "i", "in", "is", "it", "of", "on", "or", "the", "this", "to", "what", "when", "where",
        "which", "who", "why", "with", "you", "your", "my", "me", "we", "our",
    ];
    STOPWORDS.contains(&word)
}

/// Whitespace-separated pieces: the token count the built-in models report.
pub(crate) fn count_tokens(text: &str) -> u32 {
    text.split_whitespace().count() as u32
}

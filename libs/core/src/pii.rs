//! Personal data in text: e-mail addresses, phone numbers (9..=15
//! digits, not a slice of a longer number), payment card numbers (which
//! pass the Luhn check) and IBANs (which pass ISO 13616's mod-97 check).
//! The checks keep dates, prices, order numbers and other digit runs from
//! being taken for them. Serving's guardrails and feedback's dataset
//! export both read text through this.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PiiKind {
    Email,
    Phone,
    Card,
    Iban,
}

impl PiiKind {
    /// The rule's name in records and metrics, e.g. `pii.email`.
    pub fn rule(self) -> &'static str {
        match self {
            PiiKind::Email => "pii.email",
            PiiKind::Phone => "pii.phone",
            PiiKind::Card => "pii.card",
            PiiKind::Iban => "pii.iban",
        }
    }

    /// What a masked occurrence reads as.
    fn mask(self) -> &'static str {
        match self {
            PiiKind::Email => "[EMAIL]",
            PiiKind::Phone => "[PHONE]",
            PiiKind::Card => "[CARD]",
            PiiKind::Iban => "[IBAN]",
        }
    }
}

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b"));
/// Two-letter country code, two check digits, 11..=30 alphanumerics, in
/// groups of four or not.
static IBAN: LazyLock<Regex> = LazyLock::new(|| pattern(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"));
/// 13..=19 digits, with single spaces or dashes between groups.
static CARD: LazyLock<Regex> = LazyLock::new(|| pattern(r"\b\d(?:[ -]?\d){12,18}\b"));
/// An international or national number: 7..=15 digits with the usual
/// separators, optionally `+` and a country code.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    pattern(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}\b")
});

/// The patterns above are constants, compiled by every test run.
#[allow(clippy::expect_used)]
fn pattern(source: &str) -> Regex {
    Regex::new(source).expect("a constant pattern compiles")
}

/// One occurrence: its kind and byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

/// Every occurrence of `kinds` in `text`, in order, none overlapping
/// (an IBAN is not also read as a phone number).
pub fn find(text: &str, kinds: &[PiiKind]) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    // The most specific first: what they take, the others cannot.
    for kind in [PiiKind::Email, PiiKind::Iban, PiiKind::Card, PiiKind::Phone] {
        if !kinds.contains(&kind) {
            continue;
        }
        let pattern = match kind {
            PiiKind::Email => &EMAIL,
            PiiKind::Iban => &IBAN,
            PiiKind::Card => &CARD,
            PiiKind::Phone => &PHONE,
        };
        for candidate in pattern.find_iter(text) {
            let overlaps = found
                .iter()
                .any(|taken| candidate.start() < taken.end && taken.start < candidate.end());
            if overlaps
                || !passes_check(kind, candidate.as_str())
                || part_of_longer_number(text, candidate.start(), candidate.end())
            {
                continue;
            }
            found.push(Found {
                kind,
                start: candidate.start(),
                end: candidate.end(),
            });
        }
    }
    found.sort_by_key(|occurrence| occurrence.start);
    found
}

/// Every kind.
pub const ALL: [PiiKind; 4] = [PiiKind::Email, PiiKind::Phone, PiiKind::Card, PiiKind::Iban];

/// `text` with every kind masked; borrowed when there was none.
pub fn mask_all(text: &str) -> Cow<'_, str> {
    let found = find(text, &ALL);
    if found.is_empty() {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(mask(text, &found))
    }
}

/// `text` with each occurrence replaced by its kind's mask.
pub fn mask(text: &str, found: &[Found]) -> String {
    let mut masked = String::with_capacity(text.len());
    let mut at = 0;
    for occurrence in found {
        masked.push_str(&text[at..occurrence.start]);
        masked.push_str(occurrence.kind.mask());
        at = occurrence.end;
    }
    masked.push_str(&text[at..]);
    masked
}

/// Whether digits go on right before or after (past one separator): a
/// slice of a longer number is not a phone or a card.
fn part_of_longer_number(text: &str, start: usize, end: usize) -> bool {
    let digit_within = |mut chars: std::iter::Peekable<std::str::Chars<'_>>| {
        if chars.peek().is_some_and(|c| matches!(c, ' ' | '-' | '.')) {
            chars.next();
        }
        chars.next().is_some_and(|c| c.is_ascii_digit())
    };
    let after = digit_within(text[end..].chars().peekable());
    let before_text: String = text[..start].chars().rev().collect();
    let before = digit_within(before_text.chars().peekable());
    after || before
}

fn passes_check(kind: PiiKind, candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    match kind {
        PiiKind::Email => true,
        PiiKind::Card => luhn(&digits),
        // Nine digits at least: a date (2024-01-15) has eight.
        PiiKind::Phone => (9..=15).contains(&digits.len()),
        PiiKind::Iban => iban_checksum(candidate),
    }
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(position, &digit)| {
            if position % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// ISO 13616: the first four characters moved to the end, letters as
/// 10..=35, the number mod 97 is 1.
fn iban_checksum(candidate: &str) -> bool {
    let compact: Vec<char> = candidate.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 15 {
        return false;
    }
    let rotated = compact[4..].iter().chain(compact[..4].iter());
    let mut remainder: u32 = 0;
    for character in rotated {
        let value = match character.to_digit(36) {
            Some(value) => value,
            None => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<PiiKind> {
        find(text, &ALL)
            .into_iter()
            .map(|found| found.kind)
            .collect()
    }

    #[test]
    fn each_kind_is_found_and_masked() {
        let text = "Mail jane.doe@example.co.uk, call +44 20 7946 0958, card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32.";
        let found = find(text, &ALL);
        assert_eq!(
            found.iter().map(|found| found.kind).collect::<Vec<_>>(),
            vec![PiiKind::Email, PiiKind::Phone, PiiKind::Card, PiiKind::Iban]
        );
        assert_eq!(
            mask(text, &found),
            "Mail [EMAIL], call [PHONE], card [CARD], IBAN [IBAN]."
        );
    }

    #[test]
    fn checksums_keep_other_numbers_out() {
        // Fails Luhn: an order number, not a card; and too long for a
        // phone number, nor is a slice of it one.
        assert_eq!(kinds("order 4111 1111 1111 1112 shipped"), vec![]);
        // Fails mod-97: not an IBAN (its digits may still read as a phone).
        assert!(!kinds("ref GB82 WEST 1234 5698 7654 33").contains(&PiiKind::Iban));
        assert_eq!(kinds("refunds within 30 days of purchase"), vec![]);
        assert_eq!(
            kinds("dash-separated 5555-5555-5555-4444"),
            vec![PiiKind::Card]
        );
    }

    #[test]
    fn only_the_asked_kinds_are_found() {
        let text = "jane@example.com or 555 123 4567";
        assert_eq!(
            find(text, &[PiiKind::Phone])
                .into_iter()
                .map(|f| f.kind)
                .collect::<Vec<_>>(),
            vec![PiiKind::Phone]
        );
    }
}

//! Masks personal data in exported text: e-mail addresses, phone and card
//! numbers and IBANs, as `keel_core::pii` finds them (the same rules as
//! serving's guardrails).

use std::borrow::Cow;

use keel_types::InferenceRecord;

#[derive(Debug, Default)]
pub struct PiiMasker;

impl PiiMasker {
    pub fn new() -> PiiMasker {
        PiiMasker
    }

    /// `text` with personal data replaced by [EMAIL], [PHONE], [CARD] or
    /// [IBAN].
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        keel_core::pii::mask_all(text)
    }

    /// Masks `text` in place; returns whether anything was masked.
    pub fn mask_in_place(&self, text: &mut String) -> bool {
        match self.mask(text) {
            Cow::Borrowed(_) => false,
            Cow::Owned(masked) => {
                *text = masked;
                true
            }
        }
    }

    /// Masks every text an export may write of `record`; returns whether
    /// anything was masked.
    pub fn mask_record(&self, record: &mut InferenceRecord) -> bool {
        let mut masked = self.mask_in_place(&mut record.question);
        masked |= self.mask_in_place(&mut record.answer);
        for message in record
            .input_messages
            .iter_mut()
            .chain(record.prompt_messages.iter_mut())
        {
            masked |= self.mask_in_place(&mut message.content);
        }
        for passage in &mut record.contexts {
            masked |= self.mask_in_place(&mut passage.text);
        }
        masked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_emails_cards_and_phones() {
        let masker = PiiMasker::new();
        assert_eq!(
            masker.mask("Mail jane.doe+billing@example.co.uk today."),
            "Mail [EMAIL] today."
        );
        assert_eq!(
            masker.mask("card 4111 1111 1111 1111, or 4111-1111-1111-1111"),
            "card [CARD], or [CARD]"
        );
        assert_eq!(
            masker.mask("call +1 (555) 123-4567 or 020 7946 0958"),
            "call [PHONE] or [PHONE]"
        );
        // 16 digits failing Luhn: not a card, too long for a phone number.
        assert_eq!(
            masker.mask("order 4111111111111112"),
            "order 4111111111111112"
        );
    }

    #[test]
    fn leaves_ordinary_numbers_and_text_alone() {
        let masker = PiiMasker::new();
        for text in [
            "Refunds take 30 days; version 1.2.3 shipped on 2024-01-15.",
            "The price is 1,299.00 EUR.",
            "no personal data here",
        ] {
            assert!(matches!(masker.mask(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn masks_a_whole_record() {
        let masker = PiiMasker::new();
        let mut record: InferenceRecord = serde_json::from_value(serde_json::json!({
            "request_id": "00000000-0000-0000-0000-000000000001",
            "trace_id": "", "endpoint": "support", "route_target": "chain@champion",
            "served_model": "chain", "served_version": 1, "user_id": "", "session_id": "",
            "question": "I am bob@example.com",
            "input_messages": [{"role": "user", "content": "I am bob@example.com"}],
            "contexts": [{"id": "p1", "text": "Hotline 0800 123 4567", "score": 0.5}],
            "prompt_messages": [],
            "answer": "Noted.", "input_tokens": 0, "output_tokens": 0, "latency_ms": 1.0,
            "status": "ok", "error": "", "started_at_ms": 1, "generator": "extractive"
        }))
        .unwrap();
        assert!(masker.mask_record(&mut record));
        assert_eq!(record.question, "I am [EMAIL]");
        assert_eq!(record.input_messages[0].content, "I am [EMAIL]");
        assert_eq!(record.contexts[0].text, "Hotline [PHONE]");
        assert!(!masker.mask_record(&mut record));
    }
}

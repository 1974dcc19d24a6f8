//! The keyset page token of the services' listings: `<position>_<key>`,
//! the last item of a page in newest-first order, so the next page starts
//! strictly after it however many rows arrive meanwhile.

use std::fmt;

use crate::FieldError;

/// The tie-breaking key of a listing's order (a request id, a trace id).
pub trait CursorKey: Sized + fmt::Display {
    /// `None` when `text` is not a key this listing hands out.
    fn parse_key(text: &str) -> Option<Self>;
}

/// Where the next page starts: after the item at (`position`, `key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor<K> {
    /// The item's time in the listing's unit (ms for inferences and
    /// feedback, ns for traces).
    pub position: i64,
    pub key: K,
}

impl<K: CursorKey> PageCursor<K> {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.position, self.key)
    }

    pub fn decode(field: &str, token: &str) -> Result<PageCursor<K>, FieldError> {
        let invalid =
            || FieldError::new(field, "must be a next_page_token returned by this service");
        let (position_part, key_part) = token.split_once('_').ok_or_else(invalid)?;
        let position: i64 = position_part.parse().map_err(|_| invalid())?;
        let key = K::parse_key(key_part).ok_or_else(invalid)?;
        Ok(PageCursor { position, key })
    }
}

/// UUID keys, written in their canonical lowercase hyphenated form.
impl CursorKey for uuid::Uuid {
    fn parse_key(text: &str) -> Option<uuid::Uuid> {
        uuid::Uuid::parse_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Digit(u8);

    impl fmt::Display for Digit {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.fmt(formatter)
        }
    }

    impl CursorKey for Digit {
        fn parse_key(text: &str) -> Option<Digit> {
            text.parse().ok().filter(|digit| *digit < 10).map(Digit)
        }
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let cursor = PageCursor {
            position: -1_700_000_000_000,
            key: Digit(7),
        };
        assert_eq!(cursor.encode(), "-1700000000000_7");
        assert_eq!(
            PageCursor::<Digit>::decode("page_token", &cursor.encode()).unwrap(),
            cursor
        );
        for garbage in ["", "abc", "12_nope", "x_5", "12_42", "_5"] {
            let error = PageCursor::<Digit>::decode("page_token", garbage).unwrap_err();
            assert_eq!(error.field, "page_token");
            assert_eq!(
                error.rule,
                "must be a next_page_token returned by this service"
            );
        }
    }
}

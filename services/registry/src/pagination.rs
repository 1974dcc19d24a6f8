//! Opaque keyset page tokens: the last key of a page, hex-encoded behind a
//! version prefix so clients treat it as opaque and we can change it later.

use keel_types::FieldError;

const PREFIX: &str = "k1:";

pub fn encode(last_key: &str) -> String {
    let mut token = String::with_capacity((PREFIX.len() + last_key.len()) * 2);
    for byte in PREFIX.bytes().chain(last_key.bytes()) {
        token.push_str(&format!("{byte:02x}"));
    }
    token
}

/// The key a token carries; None for the empty token (the first page).
pub fn decode(field: &str, token: &str) -> Result<Option<String>, FieldError> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || FieldError::new(field, "must be a token returned by a previous call");
    if !token.is_ascii() {
        return Err(malformed());
    }
    let mut bytes = Vec::with_capacity(token.len() / 2);
    for pair in token.as_bytes().chunks(2) {
        let digits = std::str::from_utf8(pair).map_err(|_| malformed())?;
        if digits.len() != 2 {
            return Err(malformed());
        }
        let byte = u8::from_str_radix(digits, 16).map_err(|_| malformed())?;
        bytes.push(byte);
    }
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    match text.strip_prefix(PREFIX) {
        Some(key) if !key.is_empty() => Ok(Some(key.to_string())),
        _ => Err(malformed()),
    }
}

/// A token carrying a number (a version, a sequence); 0 for the first page.
pub fn decode_number(field: &str, token: &str) -> Result<i64, FieldError> {
    let Some(key) = decode(field, token)? else {
        return Ok(0);
    };
    match key.parse::<i64>() {
        Ok(number) if number > 0 => Ok(number),
        _ => Err(FieldError::new(
            field,
            "must be a token returned by a previous call",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(
            decode("page_token", &encode("support-bot"))
                .unwrap()
                .as_deref(),
            Some("support-bot")
        );
        assert_eq!(decode("page_token", "").unwrap(), None);
        assert_eq!(decode_number("page_token", &encode("42")).unwrap(), 42);
        assert_eq!(decode_number("page_token", "").unwrap(), 0);
    }

    #[test]
    fn malformed_tokens_name_the_field() {
        for token in ["zz", "abc", "6b313a", "00", "é1", &encode("")] {
            assert_eq!(
                decode("page_token", token).unwrap_err().field,
                "page_token",
                "{token}"
            );
        }
        assert!(decode_number("page_token", &encode("x")).is_err());
        assert!(decode_number("page_token", &encode("-3")).is_err());
    }
}

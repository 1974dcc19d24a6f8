//! Input rules shared by the services. Every failure names the field and the
//! rule it broke, and maps to `INVALID_ARGUMENT`.

use crate::FieldError;

pub const MAX_NAME_LEN: usize = 128;
/// User, session and other caller-chosen ids.
pub const MAX_ID_BYTES: usize = 256;

/// A resource name: 1..=128 characters of `[A-Za-z0-9._-]`, starting with a
/// letter or a digit.
pub fn name(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(FieldError::new(
            field,
            format!(
                "must be at most {MAX_NAME_LEN} characters, got {}",
                value.len()
            ),
        ));
    }
    let starts_well = value
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric());
    let allowed = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !starts_well || !allowed {
        return Err(FieldError::new(
            field,
            format!("must match [A-Za-z0-9][A-Za-z0-9._-]*, got {value:?}"),
        ));
    }
    Ok(())
}

/// A free-text field with an upper bound on its length in bytes.
pub fn max_len(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.len() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} bytes, got {}", value.len()),
        ));
    }
    Ok(())
}

pub fn not_empty(field: &str, value: &str) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    Ok(())
}

/// `value` within `min..=max`.
pub fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), FieldError> {
    if value < min || value > max {
        return Err(FieldError::new(
            field,
            format!("must be in {min}..={max}, got {value}"),
        ));
    }
    Ok(())
}

pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;

/// 0 means the default page size; otherwise 1..=1000.
pub fn page_size(field: &str, value: u32) -> Result<u32, FieldError> {
    if value == 0 {
        return Ok(DEFAULT_PAGE_SIZE);
    }
    in_range(field, u64::from(value), 1, u64::from(MAX_PAGE_SIZE))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("name", "support-bot_v1.2").is_ok());
        assert_eq!(
            name("name", "").unwrap_err().to_string(),
            "field `name`: must not be empty"
        );
        assert!(name("name", "-leading").is_err());
        assert!(name("name", "has space").is_err());
        assert!(name("name", &"a".repeat(129)).is_err());
        assert!(name("name", &"a".repeat(128)).is_ok());
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size("page_size", 0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size("page_size", 7).unwrap(), 7);
        assert!(page_size("page_size", 1001).is_err());
    }
}

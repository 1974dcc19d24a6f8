//! References to a registered version, "model@alias" or "model/version",
//! and the rule for alias names: the registry resolves them, serving's
//! endpoints route to them, and both parse them here.

use std::fmt;

use crate::{validate, FieldError};

pub const MAX_ALIAS_LEN: usize = 64;

/// How a version is selected within a model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    Version(u32),
    Alias(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    pub model: String,
    pub selector: Selector,
}

impl ModelRef {
    /// Parses "model@alias" or "model/version"; errors name `field`. Model
    /// names cannot hold '@' or '/', so the first one splits unambiguously.
    pub fn parse(field: &str, text: &str) -> Result<ModelRef, FieldError> {
        let shape = "must be \"model@alias\" or \"model/version\"";
        let Some(split_at) = text.find(['@', '/']) else {
            return Err(FieldError::new(field, format!("{shape}, got {text:?}")));
        };
        let model = &text[..split_at];
        let rest = &text[split_at + 1..];
        if validate::name(field, model).is_err() {
            return Err(FieldError::new(
                field,
                format!("{shape} with a valid model name, got {text:?}"),
            ));
        }
        let selector = if text[split_at..].starts_with('@') {
            if let Err(error) = validate_alias(field, rest) {
                return Err(FieldError::new(
                    field,
                    format!("alias in {text:?} {}", error.rule),
                ));
            }
            Selector::Alias(rest.to_string())
        } else {
            match rest.parse::<u32>() {
                Ok(version) if version >= 1 && !rest.starts_with('+') => Selector::Version(version),
                _ => {
                    return Err(FieldError::new(
                        field,
                        format!("version in {text:?} must be a number >= 1"),
                    ))
                }
            }
        };
        Ok(ModelRef {
            model: model.to_string(),
            selector,
        })
    }

    /// Whether the reference follows an alias, so what it resolves to can move.
    pub fn is_alias(&self) -> bool {
        matches!(self.selector, Selector::Alias(_))
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Version(version) => write!(formatter, "{}/{version}", self.model),
            Selector::Alias(alias) => write!(formatter, "{}@{alias}", self.model),
        }
    }
}

/// An alias name: 1..=64 characters of `[a-z0-9_-]`, not all digits (so it
/// never reads as a version number).
pub fn validate_alias(field: &str, alias: &str) -> Result<(), FieldError> {
    if alias.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if alias.len() > MAX_ALIAS_LEN {
        return Err(FieldError::new(
            field,
            format!(
                "must be at most {MAX_ALIAS_LEN} characters, got {}",
                alias.len()
            ),
        ));
    }
    let allowed = alias
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
    if !allowed {
        return Err(FieldError::new(
            field,
            format!("must match [a-z0-9_-]+, got {alias:?}"),
        ));
    }
    if alias.chars().all(|c| c.is_ascii_digit()) {
        return Err(FieldError::new(
            field,
            format!("must not be all digits, got {alias:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_shapes() {
        let by_alias = ModelRef::parse("reference", "support-bot@champion").unwrap();
        assert_eq!(by_alias.model, "support-bot");
        assert_eq!(by_alias.selector, Selector::Alias("champion".to_string()));
        assert_eq!(by_alias.to_string(), "support-bot@champion");
        let by_version = ModelRef::parse("reference", "support-bot/12").unwrap();
        assert_eq!(by_version.selector, Selector::Version(12));
        assert_eq!(by_version.to_string(), "support-bot/12");
    }

    #[test]
    fn rejects_malformed_references() {
        for text in [
            "",
            "model",
            "@champion",
            "/3",
            "model@",
            "model/",
            "model/0",
            "model/+3",
            "model/x",
            "model@Champion",
            "model@123",
            "bad name@champion",
            "model/1/2",
            "model@a@b",
            "model/-1",
            "model/99999999999",
            "-model@champion",
        ] {
            let error = ModelRef::parse("reference", text).unwrap_err();
            assert_eq!(error.field, "reference", "{text:?}");
        }
    }

    #[test]
    fn alias_rules() {
        assert!(validate_alias("alias", "champion").is_ok());
        assert!(validate_alias("alias", "v2-canary_1").is_ok());
        assert!(validate_alias("alias", "2024").is_err());
        assert!(validate_alias("alias", "").is_err());
        assert!(validate_alias("alias", "Champion").is_err());
        assert!(validate_alias("alias", &"a".repeat(65)).is_err());
        assert!(validate_alias("alias", &"a".repeat(64)).is_ok());
    }
}

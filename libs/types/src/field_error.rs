//! The error of every input rule: which field broke which rule. Every
//! service answers it as `INVALID_ARGUMENT` with this text.

use std::fmt;

/// A field that broke a rule: `field \`top_k\`: must be in 1..=1000, got 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub rule: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "field `{}`: {}", self.field, self.rule)
    }
}

impl std::error::Error for FieldError {}

impl From<FieldError> for tonic::Status {
    fn from(error: FieldError) -> tonic::Status {
        tonic::Status::invalid_argument(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_and_the_rule_as_invalid_argument() {
        let error = FieldError::new("top_k", "must be in 1..=1000, got 0");
        assert_eq!(
            error.to_string(),
            "field `top_k`: must be in 1..=1000, got 0"
        );
        let status = tonic::Status::from(error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "field `top_k`: must be in 1..=1000, got 0"
        );
    }
}

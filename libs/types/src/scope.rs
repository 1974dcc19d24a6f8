//! What an API key may do. Every service checks a call's key against the
//! scope the call needs, so the vocabulary lives here once:
//! `query:<endpoint>` or `query:*` (ask endpoints), `feedback:write`,
//! `traces:write` (OTLP intake), `read` (every read-only call) and `admin`
//! (everything, including what changes models, aliases and keys).

use std::fmt;

use crate::validate;
use crate::FieldError;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `None`: every endpoint (`query:*`).
    Query(Option<String>),
    FeedbackWrite,
    TracesWrite,
    Read,
    Admin,
}

impl Scope {
    pub fn parse(field: &str, text: &str) -> Result<Scope, FieldError> {
        match text {
            "feedback:write" => Ok(Scope::FeedbackWrite),
            "traces:write" => Ok(Scope::TracesWrite),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            "query:*" => Ok(Scope::Query(None)),
            _ => match text.strip_prefix("query:") {
                Some(endpoint) => {
                    validate::name(field, endpoint).map_err(|error| {
                        FieldError::new(
                            field,
                            format!("`query:` takes an endpoint name or `*`: {}", error.rule),
                        )
                    })?;
                    Ok(Scope::Query(Some(endpoint.to_string())))
                }
                None => Err(FieldError::new(
                    field,
                    format!(
                        "must be query:<endpoint>, query:*, feedback:write, traces:write, \
                         read or admin, got `{text}`"
                    ),
                )),
            },
        }
    }

    /// Whether a key holding this scope may make a call that needs `needed`.
    pub fn grants(&self, needed: &Scope) -> bool {
        match (self, needed) {
            (Scope::Admin, _) => true,
            (Scope::Query(None), Scope::Query(_)) => true,
            (held, needed) => held == needed,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Query(None) => formatter.write_str("query:*"),
            Scope::Query(Some(endpoint)) => write!(formatter, "query:{endpoint}"),
            Scope::FeedbackWrite => formatter.write_str("feedback:write"),
            Scope::TracesWrite => formatter.write_str("traces:write"),
            Scope::Read => formatter.write_str("read"),
            Scope::Admin => formatter.write_str("admin"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_through_their_text() {
        for text in [
            "query:*",
            "query:support",
            "feedback:write",
            "traces:write",
            "read",
            "admin",
        ] {
            assert_eq!(Scope::parse("s", text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn bad_scopes_name_the_field_and_the_rule() {
        for text in ["write", "query:", "query:bad name", "ADMIN", ""] {
            let error = Scope::parse("scopes[1]", text).unwrap_err();
            assert_eq!(error.field, "scopes[1]", "{text}");
        }
        let error = Scope::parse("scopes[0]", "write").unwrap_err();
        assert!(error.rule.contains("query:<endpoint>"), "{error}");
    }

    #[test]
    fn admin_and_query_star_grant_more_than_themselves() {
        let support = Scope::Query(Some("support".to_string()));
        let billing = Scope::Query(Some("billing".to_string()));
        assert!(Scope::Admin.grants(&support));
        assert!(Scope::Admin.grants(&Scope::FeedbackWrite));
        assert!(Scope::Query(None).grants(&support));
        assert!(support.grants(&support));
        assert!(!support.grants(&billing));
        assert!(!support.grants(&Scope::Query(None)));
        assert!(!Scope::Read.grants(&Scope::FeedbackWrite));
        assert!(!Scope::FeedbackWrite.grants(&Scope::Admin));
    }
}

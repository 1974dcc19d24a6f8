//! The payload filter of a search: every key of the filter must be in the
//! payload with an equal JSON value.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PayloadFilter {
    conditions: Map<String, Value>,
}

impl PayloadFilter {
    pub fn new(conditions: Map<String, Value>) -> PayloadFilter {
        PayloadFilter { conditions }
    }

    /// True when the filter keeps everything.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    pub fn matches(&self, payload: &Map<String, Value>) -> bool {
        self.conditions
            .iter()
            .all(|(key, expected)| payload.get(key) == Some(expected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn every_key_must_be_equal() {
        let filter = PayloadFilter::new(object(json!({"lang": "en", "page": 3})));
        assert!(filter.matches(&object(json!({"lang": "en", "page": 3, "extra": true}))));
        assert!(!filter.matches(&object(json!({"lang": "en"}))));
        assert!(!filter.matches(&object(json!({"lang": "en", "page": "3"}))));
        assert!(!filter.matches(&object(json!({"lang": "fr", "page": 3}))));
        assert!(PayloadFilter::default().matches(&object(json!({}))));
    }

    #[test]
    fn null_matches_only_an_explicit_null() {
        let filter = PayloadFilter::new(object(json!({"owner": null})));
        assert!(filter.matches(&object(json!({"owner": null}))));
        assert!(!filter.matches(&object(json!({}))));
    }
}

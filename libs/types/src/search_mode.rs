//! How a retrieval searches a collection: by embedding, by BM25 over the
//! points' text, or both fused by rank. A vector-index search names it, and
//! a chain spec names the one serving uses.

use keel_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// By embedding: the HNSW graph (or an exact scan).
    #[default]
    Dense,
    /// By BM25 over the points' text.
    Keyword,
    /// Both rankings, fused by reciprocal rank.
    Hybrid,
}

impl SearchMode {
    /// The name configs and reports use: `dense`, `keyword`, `hybrid`.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Dense => "dense",
            SearchMode::Keyword => "keyword",
            SearchMode::Hybrid => "hybrid",
        }
    }

    /// The wire value; unspecified (0) means dense. Errors name `field`.
    pub fn from_proto(field: &str, value: i32) -> Result<SearchMode, FieldError> {
        match pb::SearchMode::try_from(value) {
            Ok(pb::SearchMode::Unspecified | pb::SearchMode::Dense) => Ok(SearchMode::Dense),
            Ok(pb::SearchMode::Keyword) => Ok(SearchMode::Keyword),
            Ok(pb::SearchMode::Hybrid) => Ok(SearchMode::Hybrid),
            Err(_) => Err(FieldError::new(
                field,
                format!(
                    "must be one of SEARCH_MODE_DENSE, SEARCH_MODE_KEYWORD, SEARCH_MODE_HYBRID, got {value}"
                ),
            )),
        }
    }
}

impl From<SearchMode> for pb::SearchMode {
    fn from(mode: SearchMode) -> pb::SearchMode {
        match mode {
            SearchMode::Dense => pb::SearchMode::Dense,
            SearchMode::Keyword => pb::SearchMode::Keyword,
            SearchMode::Hybrid => pb::SearchMode::Hybrid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_the_field_of_an_unknown_value() {
        for mode in [SearchMode::Dense, SearchMode::Keyword, SearchMode::Hybrid] {
            let named: SearchMode =
                serde_json::from_value(serde_json::Value::from(mode.as_str())).unwrap();
            assert_eq!(named, mode);
            let wire = pb::SearchMode::from(mode) as i32;
            assert_eq!(SearchMode::from_proto("mode", wire).unwrap(), mode);
        }
        assert_eq!(
            SearchMode::from_proto("mode", 0).unwrap(),
            SearchMode::Dense
        );
        let error = SearchMode::from_proto("chain.retrieval_mode", 7).unwrap_err();
        assert!(error.to_string().contains("chain.retrieval_mode"));
        assert_eq!(
            serde_json::to_string(&SearchMode::Hybrid).unwrap(),
            "\"hybrid\""
        );
        let parsed: SearchMode = serde_json::from_str("\"keyword\"").unwrap();
        assert_eq!(parsed, SearchMode::Keyword);
    }
}

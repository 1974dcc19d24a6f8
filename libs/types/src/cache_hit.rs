//! Whether an answer came from serving's answer cache: in the query's
//! response and in its inference record.

use keel_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::FieldError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheHit {
    /// Generated for this request (and every record stored before the
    /// cache existed).
    #[default]
    None,
    /// The same rendered prompt and parameters on the same chain version.
    Exact,
    /// A question similar enough, on the same chain version.
    Semantic,
}

impl CacheHit {
    /// The metrics and span label: `none`, `exact`, `semantic`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheHit::None => "none",
            CacheHit::Exact => "exact",
            CacheHit::Semantic => "semantic",
        }
    }

    pub fn from_proto(field: &str, value: i32) -> Result<CacheHit, FieldError> {
        match pb::CacheHit::try_from(value) {
            Ok(pb::CacheHit::None) => Ok(CacheHit::None),
            Ok(pb::CacheHit::Exact) => Ok(CacheHit::Exact),
            Ok(pb::CacheHit::Semantic) => Ok(CacheHit::Semantic),
            Err(_) => Err(FieldError::new(
                field,
                format!("must be a CacheHit value, got {value}"),
            )),
        }
    }
}

impl From<CacheHit> for pb::CacheHit {
    fn from(hit: CacheHit) -> pb::CacheHit {
        match hit {
            CacheHit::None => pb::CacheHit::None,
            CacheHit::Exact => pb::CacheHit::Exact,
            CacheHit::Semantic => pb::CacheHit::Semantic,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_and_unknown_ones_are_named() {
        for hit in [CacheHit::None, CacheHit::Exact, CacheHit::Semantic] {
            let wire = pb::CacheHit::from(hit) as i32;
            assert_eq!(CacheHit::from_proto("cache_hit", wire).unwrap(), hit);
        }
        let error = CacheHit::from_proto("records[0].cache_hit", 9).unwrap_err();
        assert_eq!(error.field, "records[0].cache_hit");
    }
}

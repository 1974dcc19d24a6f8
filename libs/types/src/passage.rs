//! A retrieved passage: what the vector index found, what the prompt was
//! rendered from, what the caller sees as a citation and what the
//! inference record keeps.

use keel_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::FieldError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    /// The point's id in its collection. Records stored before this type
    /// was shared name it `point_id`.
    #[serde(alias = "point_id")]
    pub id: String,
    pub text: String,
    /// Finite: checked at the boundary, because JSON cannot hold NaN.
    pub score: f32,
}

impl Passage {
    /// Checks the score; errors name `field` (e.g. `records[0].contexts[1]`).
    pub fn from_proto(field: &str, citation: pb::Citation) -> Result<Passage, FieldError> {
        if !citation.score.is_finite() {
            return Err(FieldError::new(
                format!("{field}.score"),
                format!("must be finite, got {}", citation.score),
            ));
        }
        Ok(Passage {
            id: citation.point_id,
            text: citation.text,
            score: citation.score,
        })
    }
}

impl From<Passage> for pb::Citation {
    fn from(passage: Passage) -> pb::Citation {
        pb::Citation {
            point_id: passage.id,
            score: passage.score,
            text: passage.text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_stored_with_point_id() {
        let old: Passage =
            serde_json::from_str(r#"{"point_id":"doc-1","score":0.5,"text":"t"}"#).unwrap();
        assert_eq!(old.id, "doc-1");
        let json = serde_json::to_string(&old).unwrap();
        assert_eq!(serde_json::from_str::<Passage>(&json).unwrap(), old);
    }

    #[test]
    fn a_score_that_is_not_finite_names_the_field() {
        let citation = pb::Citation {
            point_id: "p".to_string(),
            score: f32::NAN,
            text: String::new(),
        };
        let error = Passage::from_proto("contexts[3]", citation).unwrap_err();
        assert_eq!(error.field, "contexts[3].score");
    }
}

//! The id of one served request: the key that joins an inference record,
//! its trace and the feedback on it across services.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::page_cursor::CursorKey;
use crate::FieldError;

/// A request id: a UUID, always written in its canonical lowercase
/// hyphenated form so lookups and orderings agree on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(Uuid);

impl RequestId {
    /// A new time-ordered id (UUIDv7), so ids sort roughly by arrival.
    pub fn generate() -> RequestId {
        RequestId(Uuid::now_v7())
    }

    /// Parses any UUID spelling; errors name `field`.
    pub fn parse(field: &str, text: &str) -> Result<RequestId, FieldError> {
        Uuid::parse_str(text).map(RequestId).map_err(|_| {
            let shown: String = text.chars().take(64).collect();
            FieldError::new(field, format!("must be a UUID, got {shown:?}"))
        })
    }

    pub fn from_uuid(uuid: Uuid) -> RequestId {
        RequestId(uuid)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(formatter)
    }
}

impl TryFrom<String> for RequestId {
    type Error = FieldError;

    fn try_from(text: String) -> Result<RequestId, FieldError> {
        RequestId::parse("request_id", &text)
    }
}

impl From<RequestId> for String {
    fn from(request_id: RequestId) -> String {
        request_id.to_string()
    }
}

impl CursorKey for RequestId {
    fn parse_key(text: &str) -> Option<RequestId> {
        Uuid::parse_str(text).ok().map(RequestId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_canonical() {
        let upper = RequestId::parse("request_id", "0190C3E5-8A2B-7C4D-9E1F-2A3B4C5D6E7F").unwrap();
        assert_eq!(upper.to_string(), "0190c3e5-8a2b-7c4d-9e1f-2a3b4c5d6e7f");
        let json = serde_json::to_string(&upper).unwrap();
        assert_eq!(json, "\"0190c3e5-8a2b-7c4d-9e1f-2a3b4c5d6e7f\"");
        assert_eq!(serde_json::from_str::<RequestId>(&json).unwrap(), upper);
        let error = RequestId::parse("request_id", "nope").unwrap_err();
        assert_eq!(
            error.to_string(),
            "field `request_id`: must be a UUID, got \"nope\""
        );
        assert!(serde_json::from_str::<RequestId>("\"nope\"").is_err());
    }

    #[test]
    fn new_ids_are_uuid_v7() {
        assert_eq!(RequestId::generate().as_uuid().get_version_num(), 7);
        assert_ne!(RequestId::generate(), RequestId::generate());
    }
}

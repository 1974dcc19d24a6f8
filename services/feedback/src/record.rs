//! A piece of feedback as stored: its kind and the served version it
//! judges. The export and the feedback book both read it.

use keel_types::RequestId;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackKind {
    Thumbs,
    Rating,
    Correction,
    Comment,
}

impl FeedbackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Thumbs => "thumbs",
            FeedbackKind::Rating => "rating",
            FeedbackKind::Correction => "correction",
            FeedbackKind::Comment => "comment",
        }
    }

    pub fn parse(text: &str) -> Option<FeedbackKind> {
        match text {
            "thumbs" => Some(FeedbackKind::Thumbs),
            "rating" => Some(FeedbackKind::Rating),
            "correction" => Some(FeedbackKind::Correction),
            "comment" => Some(FeedbackKind::Comment),
            _ => None,
        }
    }
}

/// A stored piece of feedback, with the served version it judges.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedbackRecord {
    pub id: String,
    pub request_id: RequestId,
    pub kind: FeedbackKind,
    pub value: f64,
    pub correction: String,
    pub comment: String,
    pub user_id: String,
    /// Empty when the caller sent none.
    pub idempotency_key: String,
    pub created_at_ms: i64,
    pub endpoint: String,
    pub served_model: String,
    pub served_version: u32,
    /// False until the inference record arrived: endpoint, served_model and
    /// served_version are empty until then.
    pub joined: bool,
}

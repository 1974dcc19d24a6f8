//! A piece of feedback as stored: its kind, its target (a request, one
//! retrieved passage of a request, or a session) and the served version it
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
    Flag,
    Relevance,
}

impl FeedbackKind {
    pub const ALL: [FeedbackKind; 6] = [
        FeedbackKind::Thumbs,
        FeedbackKind::Rating,
        FeedbackKind::Correction,
        FeedbackKind::Comment,
        FeedbackKind::Flag,
        FeedbackKind::Relevance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Thumbs => "thumbs",
            FeedbackKind::Rating => "rating",
            FeedbackKind::Correction => "correction",
            FeedbackKind::Comment => "comment",
            FeedbackKind::Flag => "flag",
            FeedbackKind::Relevance => "relevance",
        }
    }

    pub fn parse(text: &str) -> Option<FeedbackKind> {
        FeedbackKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// A stored piece of feedback, with the served version it judges.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedbackRecord {
    pub id: String,
    /// `None` for feedback on a whole session.
    pub request_id: Option<RequestId>,
    /// Set for feedback on a whole session; empty otherwise.
    pub session_id: String,
    /// RELEVANCE: the retrieved passage judged.
    pub passage_id: String,
    pub kind: FeedbackKind,
    pub value: f64,
    pub correction: String,
    pub comment: String,
    /// FLAG: why the answer is flagged.
    pub reason: String,
    pub tags: Vec<String>,
    pub user_id: String,
    /// Empty when the caller sent none.
    pub idempotency_key: String,
    pub created_at_ms: i64,
    pub endpoint: String,
    pub served_model: String,
    pub served_version: u32,
    /// False until the inference record arrived: endpoint, served_model and
    /// served_version are empty until then. Session feedback waits for
    /// nothing and is joined from the start.
    pub joined: bool,
}

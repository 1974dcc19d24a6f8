//! keel-types: the vocabulary Keel's services share. Everything that
//! crosses a service boundary (an inference record, a chat message, a
//! passage, a model reference, a request id, a page token, a broken input
//! rule) is defined here once, with its proto conversion, and every service
//! uses this one.

pub mod cache_hit;
pub mod chat;
pub mod field_error;
pub mod guardrail;
pub mod inference;
pub mod model_ref;
pub mod page_cursor;
pub mod passage;
pub mod request_id;
pub mod scope;
pub mod search_mode;
pub mod validate;

pub use cache_hit::CacheHit;
pub use chat::{ChatMessage, FinishReason, GenerationParams, Role};
pub use field_error::FieldError;
pub use guardrail::GuardrailDecision;
pub use inference::{InferenceRecord, InferenceStatus};
pub use model_ref::{ModelRef, Selector};
pub use page_cursor::{CursorKey, PageCursor};
pub use passage::Passage;
pub use request_id::RequestId;
pub use scope::Scope;
pub use search_mode::SearchMode;

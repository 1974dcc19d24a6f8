//! What a generator is asked and what it answers. The conversation types
//! themselves are Keel's shared vocabulary (keel-types).

use keel_types::{ChatMessage, FinishReason, GenerationParams, Passage};

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// The rendered prompt, as a conversation.
    pub messages: Vec<ChatMessage>,
    /// The user's question on its own (extractive models need it apart).
    pub question: String,
    /// The retrieved passages the prompt was rendered from, best first.
    pub passages: Vec<Passage>,
    pub params: GenerationParams,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub finish_reason: FinishReason,
}

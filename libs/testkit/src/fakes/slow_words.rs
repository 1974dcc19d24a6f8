//! A generator that answers slowly enough to leave mid-answer: what the
//! streaming and cancellation tests of serving and of the whole cluster use.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_models::{FinishReason, Generation, GenerationRequest, Generator, ModelError};

/// Says `w0 w1 w2 …`, a word per `pause`, counting the words it made, and
/// stops at the first `Break`.
pub struct SlowWords {
    name: &'static str,
    words: usize,
    pause: Duration,
    produced: Arc<AtomicUsize>,
}

impl SlowWords {
    pub fn new(name: &'static str, words: usize, pause: Duration) -> SlowWords {
        SlowWords {
            name,
            words,
            pause,
            produced: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The count of words made so far, shared with the generator.
    pub fn produced(&self) -> Arc<AtomicUsize> {
        self.produced.clone()
    }
}

impl Generator for SlowWords {
    fn name(&self) -> &str {
        self.name
    }

    fn provider(&self) -> &str {
        "test"
    }

    fn generate(
        &self,
        _request: &GenerationRequest,
        on_delta: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, ModelError> {
        let mut text = String::new();
        let mut finish_reason = FinishReason::Stop;
        for index in 0..self.words {
            let piece = format!("w{index} ");
            text.push_str(&piece);
            self.produced.fetch_add(1, Ordering::SeqCst);
            if on_delta(&piece).is_break() {
                finish_reason = FinishReason::Cancelled;
                break;
            }
            std::thread::sleep(self.pause);
        }
        Ok(Generation {
            output_tokens: text.split_whitespace().count() as u32,
            text,
            input_tokens: 1,
            finish_reason,
        })
    }
}

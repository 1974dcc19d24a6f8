//! One chat completion by a generator of the catalog, with no retrieval and
//! no chain: what an LLM judge scoring answers asks serving for. It runs on
//! the same bounded generation pool as queries, under its own `chat` span.

use std::collections::BTreeMap;
use std::time::Instant;

use keel_models::{Generation, GenerationRequest, ModelCatalog};
use keel_types::{validate, GenerationParams};

use crate::error::Error;
use crate::fallback::{self, Candidate};
use crate::generation::GenerationPool;
use crate::metrics::{self, ModelPrice};
use crate::pipeline::{validate_messages, MessageInput};

#[derive(Debug, Clone)]
pub struct CompletionInput {
    pub generator: String,
    pub messages: Vec<MessageInput>,
    pub params: GenerationParams,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub generation: Generation,
    pub latency_ms: f64,
    pub cost_usd: f64,
}

pub struct Completions {
    catalog: ModelCatalog,
    pool: GenerationPool,
    prices: BTreeMap<String, ModelPrice>,
}

impl Completions {
    pub fn new(
        catalog: ModelCatalog,
        pool: GenerationPool,
        prices: BTreeMap<String, ModelPrice>,
    ) -> Completions {
        Completions {
            catalog,
            pool,
            prices,
        }
    }

    pub async fn complete(&self, input: CompletionInput) -> Result<Completion, Error> {
        let started = Instant::now();
        validate::not_empty("generator", &input.generator)?;
        validate::max_len("generator", &input.generator, validate::MAX_NAME_LEN)?;
        let (messages, question) = validate_messages(&input.messages)?;
        input.params.validate("params")?;
        let generator = self.catalog.generator(&input.generator).map_err(|_| {
            Error::NotFound(format!(
                "generator `{}` is not in serving's catalog",
                input.generator
            ))
        })?;
        let candidates = vec![Candidate {
            name: input.generator.clone(),
            generator,
            params: input.params,
        }];
        let mut request = GenerationRequest {
            messages,
            question,
            passages: Vec::new(),
            params: GenerationParams::default(),
        };
        let parent = tracing::Span::current();
        let outcome = self
            .pool
            .run(move || {
                fallback::generate(
                    &candidates,
                    &mut request,
                    &parent,
                    &mut keel_models::ignore_deltas,
                )
            })
            .await?;
        let generation = outcome.result?;
        let cost_usd = metrics::cost_usd(
            &self.prices,
            &input.generator,
            generation.input_tokens,
            generation.output_tokens,
        );
        Ok(Completion {
            generation,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            cost_usd,
        })
    }
}

//! The built-in challenger of `keel improve`: the champion's prompt with
//! few-shot examples mined from feedback. The EVAL export gives each rated
//! request a `reference` — its correction, else its answer when it was
//! liked — which is what a good answer to that question looks like.

use keel_proto::v1 as pb;
use sha2::{Digest, Sha256};

use crate::cli::error::rpc;
use crate::cli::eval_dataset::{Dataset, Example};
use crate::cli::improve::{challenger_tags, register_challenger_chain, Champion};
use crate::cli::improve_datasets::source;
use crate::cli::{CliError, ServiceUrls};

/// The examples that go into the prompt, and those kept out of it to
/// evaluate the challenger on.
#[derive(Debug)]
pub struct Split<'a> {
    pub few_shot: Vec<&'a Example>,
    pub held_out: Vec<&'a Example>,
}

/// At most `count` examples with a reference go into the prompt, but never
/// more than half of them, so the held-out set keeps references to score
/// against. They are picked in the order of their question's hash: the
/// same export always gives the same split. A held-out example asking a
/// question the prompt already answers is dropped (it would score the
/// prompt's memory, not the challenger).
pub fn split(examples: &[Example], count: usize) -> Split<'_> {
    let mut candidates: Vec<&Example> = examples
        .iter()
        .filter(|example| example.reference.is_some())
        .collect();
    candidates.sort_by_key(|example| Sha256::digest(example.question.as_bytes()));
    candidates.dedup_by(|a, b| a.question == b.question);
    let taken = count.min(candidates.len() / 2);
    let few_shot: Vec<&Example> = candidates.into_iter().take(taken).collect();
    let held_out = examples
        .iter()
        .filter(|example| {
            !few_shot
                .iter()
                .any(|shot| shot.question == example.question)
        })
        .collect();
    Split { few_shot, held_out }
}

/// `template` with the examples before it, as literal text: whatever the
/// answers contain is never read as template syntax.
pub fn template_with_examples(template: &str, examples: &[&Example]) -> String {
    let mut block = String::from("Examples of good answers to earlier questions:\n\n");
    for example in examples {
        let reference = example.reference.as_deref().unwrap_or_default();
        block.push_str(&format!(
            "Question: {}\nAnswer: {}\n\n",
            example.question.trim(),
            reference.trim()
        ));
    }
    // The only text that could end a raw block early.
    let literal = block.replace("{%", "{ %");
    format!("{{% raw %}}{literal}{{% endraw %}}{template}")
}

/// Registers the few-shot prompt and the chain that uses it; returns their
/// version numbers.
pub async fn register_few_shot(
    urls: &ServiceUrls,
    champion: &Champion,
    export: &Dataset,
    training: &Dataset,
    actor: &str,
) -> Result<(u32, u32), CliError> {
    let shots: Vec<&Example> = training.examples.iter().collect();
    let mut registry = urls.registry().await?;
    let tags = challenger_tags(actor, &[]);
    let prompt = registry
        .create_version(pb::CreateVersionRequest {
            model: champion.prompt.model.clone(),
            spec: Some(pb::create_version_request::Spec::Prompt(pb::PromptSpec {
                template: template_with_examples(&champion.template, &shots),
            })),
            description: format!(
                "{}/{} with {} few-shot examples from feedback",
                champion.prompt.model,
                champion.prompt.version,
                shots.len()
            ),
            tags: tags.clone(),
            lineage: Some(pb::Lineage {
                parent_version: champion.prompt.version,
                datasets: vec![source(training)],
                evaluation_runs: Vec::new(),
            }),
        })
        .await
        .map_err(rpc("registry CreateVersion (prompt)"))?
        .into_inner();
    let chain = pb::ChainSpec {
        prompt: format!("{}/{}", prompt.model, prompt.version),
        ..champion.chain.clone()
    };
    let description = format!(
        "{}/{} with the few-shot prompt {}/{}",
        champion.version.model, champion.version.version, prompt.model, prompt.version
    );
    let datasets = vec![source(export), source(training)];
    let challenger =
        register_challenger_chain(urls, champion, chain, description, tags, datasets).await?;
    Ok((prompt.version, challenger))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(index: u32, question: &str, reference: Option<&str>) -> Example {
        Example {
            index,
            question: question.to_string(),
            reference: reference.map(str::to_string),
            expected_sources: Vec::new(),
            pattern: None,
        }
    }

    #[test]
    fn at_most_half_of_the_references_go_into_the_prompt() {
        let examples = vec![
            example(0, "q0", Some("a0")),
            example(1, "q1", None),
            example(2, "q2", Some("a2")),
            example(3, "q3", Some("a3")),
            example(4, "q4", Some("a4")),
            example(5, "q2", Some("a2 again")),
        ];
        let split = split(&examples, 10);
        assert_eq!(split.few_shot.len(), 2, "half of four distinct questions");
        let shot_questions: Vec<&str> = split
            .few_shot
            .iter()
            .map(|shot| shot.question.as_str())
            .collect();
        for held in &split.held_out {
            assert!(!shot_questions.contains(&held.question.as_str()));
        }
        // Every example is in exactly one part, or dropped as a repeat of a shot.
        let repeats = examples
            .iter()
            .filter(|example| shot_questions.contains(&example.question.as_str()))
            .count();
        assert_eq!(split.held_out.len() + repeats, examples.len());
        assert!(split.held_out.iter().any(|held| held.question == "q1"));

        let again = super::split(&examples, 10);
        let again_questions: Vec<&str> = again
            .few_shot
            .iter()
            .map(|shot| shot.question.as_str())
            .collect();
        assert_eq!(again_questions, shot_questions, "the split is stable");
        assert_eq!(super::split(&examples, 1).few_shot.len(), 1);
        assert!(super::split(&examples[..1], 4).few_shot.is_empty());
    }

    #[test]
    fn examples_are_literal_text_before_the_template() {
        let shots = [
            example(
                0,
                "How long is the refund window? ",
                Some("30 days {{ x }}"),
            ),
            example(1, "Ship abroad?", Some("Yes {% endraw %} {% if %}")),
        ];
        let refs: Vec<&Example> = shots.iter().collect();
        let template = template_with_examples("Q: {{ question }}", &refs);
        let mut environment = minijinja::Environment::new();
        environment.add_template("t", &template).unwrap();
        let rendered = environment
            .get_template("t")
            .unwrap()
            .render(minijinja::context! { question => "Why?" })
            .unwrap();
        assert_eq!(
            rendered,
            "Examples of good answers to earlier questions:\n\n\
             Question: How long is the refund window?\nAnswer: 30 days {{ x }}\n\n\
             Question: Ship abroad?\nAnswer: Yes { % endraw %} { % if %}\n\n\
             Q: Why?"
        );
    }
}

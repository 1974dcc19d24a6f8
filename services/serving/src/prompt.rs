//! Prompt templates (minijinja), compiled once per resolved prompt version.

use keel_models::{ChatMessage, Passage};
use minijinja::{context, Environment};

use crate::error::Error;

const TEMPLATE_NAME: &str = "prompt";

/// A registered prompt version, compiled.
pub struct PromptTemplate {
    pub model: String,
    pub version: u32,
    environment: Environment<'static>,
}

impl std::fmt::Debug for PromptTemplate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PromptTemplate")
            .field("model", &self.model)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl PromptTemplate {
    /// Fails with FAILED_PRECONDITION when the registered template does not
    /// parse: the request was fine, the registered prompt is not.
    pub fn compile(model: &str, version: u32, source: &str) -> Result<PromptTemplate, Error> {
        let mut environment = Environment::new();
        environment
            .add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|error| {
                Error::FailedPrecondition(format!(
                    "prompt {model}/{version} is not a valid template: {error}"
                ))
            })?;
        Ok(PromptTemplate {
            model: model.to_string(),
            version,
            environment,
        })
    }

    /// Renders with `question`, `contexts` (list of {id, text, score}) and
    /// `messages` (list of {role, content}).
    pub fn render(
        &self,
        question: &str,
        contexts: &[Passage],
        messages: &[ChatMessage],
    ) -> Result<String, Error> {
        let failed = |error: minijinja::Error| {
            Error::FailedPrecondition(format!(
                "prompt {}/{} failed to render: {error}",
                self.model, self.version
            ))
        };
        let template = self
            .environment
            .get_template(TEMPLATE_NAME)
            .map_err(failed)?;
        template
            .render(context! { question => question, contexts => contexts, messages => messages })
            .map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_models::Role;

    fn passage(id: &str, text: &str, score: f32) -> Passage {
        Passage {
            id: id.to_string(),
            text: text.to_string(),
            score,
        }
    }

    #[test]
    fn renders_question_contexts_and_messages() {
        let source = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}\
                      {% for c in contexts %}[{{ c.id }} {{ c.score }}] {{ c.text }}\n{% endfor %}\
                      Q: {{ question }}";
        let template = PromptTemplate::compile("qa", 3, source).unwrap();
        let contexts = [
            passage("p1", "Keel routes traffic.", 0.5),
            passage("p2", "It logs <all>.", 0.25),
        ];
        let messages = [
            ChatMessage {
                role: Role::Assistant,
                content: "hi".to_string(),
            },
            ChatMessage {
                role: Role::User,
                content: "how?".to_string(),
            },
        ];
        let rendered = template.render("how?", &contexts, &messages).unwrap();
        // No HTML escaping: prompts are plain text.
        assert_eq!(
            rendered,
            "assistant: hi\nuser: how?\n[p1 0.5] Keel routes traffic.\n[p2 0.25] It logs <all>.\nQ: how?"
        );
    }

    #[test]
    fn a_broken_template_is_a_failed_precondition() {
        let error = PromptTemplate::compile("qa", 2, "{% for c in contexts %}").unwrap_err();
        assert!(matches!(error, Error::FailedPrecondition(_)), "{error:?}");
        assert!(error.to_string().contains("qa/2"), "{error}");
    }

    #[test]
    fn a_render_error_names_the_prompt() {
        let template = PromptTemplate::compile("qa", 1, "{{ question | no_such_filter }}");
        let error = match template {
            Ok(template) => template.render("q", &[], &[]).unwrap_err(),
            Err(error) => error,
        };
        assert!(matches!(error, Error::FailedPrecondition(_)), "{error:?}");
        assert!(error.to_string().contains("qa/1"), "{error}");
    }
}

//! What the load generator asks: a rotation of questions and random users.

use rand::Rng;

/// Questions a customer would ask the support bot over the sample
/// handbook (samples/corpus); they rotate so caches and retrieval see a
/// realistic mix, not one key.
pub const QUESTIONS: [&str; 20] = [
    "How long is a password reset link valid?",
    "What happens after too many failed login attempts?",
    "What is the API rate limit on the Team plan?",
    "What does a 429 response mean and how long should I wait?",
    "Can I get a refund on an annual plan?",
    "Who approves a refund?",
    "How long are logs and traces kept?",
    "What happens to the data of a deleted workspace?",
    "What counts as a severity 1 incident?",
    "When is a postmortem required?",
    "How does the on-call rotation work?",
    "How is on-call compensated?",
    "Which single sign-on protocols are supported?",
    "How are users provisioned with SSO?",
    "What are the support hours?",
    "How fast is the first response on the Enterprise plan?",
    "In which languages is support available?",
    "Can support turn off two-factor authentication for me?",
    "Where is customer data stored?",
    "How do I raise my API rate limit during a migration?",
];

/// The question for the `index`-th request.
pub fn question_for(index: u64) -> &'static str {
    let position = (index % QUESTIONS.len() as u64) as usize;
    QUESTIONS.get(position).copied().unwrap_or(QUESTIONS[0])
}

/// One of 1000 simulated users, so sticky routing spreads over the routes.
pub fn random_user_id() -> String {
    let user = rand::rng().random_range(0..1000u32);
    format!("lt-user-{user:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_rotate() {
        assert_eq!(question_for(0), QUESTIONS[0]);
        assert_eq!(question_for(19), QUESTIONS[19]);
        assert_eq!(question_for(20), QUESTIONS[0]);
        assert_eq!(question_for(41), QUESTIONS[1]);
    }

    #[test]
    fn questions_are_distinct() {
        let distinct: std::collections::BTreeSet<&str> = QUESTIONS.iter().copied().collect();
        assert_eq!(distinct.len(), QUESTIONS.len());
    }

    #[test]
    fn user_ids_have_the_expected_shape() {
        for _ in 0..100 {
            let user = random_user_id();
            assert!(user.starts_with("lt-user-"));
            assert_eq!(user.len(), "lt-user-".len() + 4);
        }
    }
}

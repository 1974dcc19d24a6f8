//! keel-eval: how an answer is scored against its example, and the
//! statistics that summarise and compare evaluation runs and decide
//! experiments (Thompson sampling, an always-valid sequential test). Pure
//! functions: the CLI runs the examples, the registry stores the runs.

pub mod bandit;
pub mod grounding;
pub mod judge;
pub mod scorer;
pub mod sequential;
pub mod stats;
pub mod text_match;
pub mod words;

pub use scorer::{Scorer, ScorerInput};
pub use stats::{paired_difference, summarise, Interval, Summary};

//! keel-eval: how an answer is scored against its example, and the
//! statistics that summarise and compare evaluation runs. Pure functions:
//! the CLI runs the examples and the registry stores the runs.

pub mod grounding;
pub mod judge;
pub mod scorer;
pub mod stats;
pub mod text_match;
pub mod words;

pub use scorer::{Scored, Scorer, ScorerInput};
pub use stats::{paired_difference, summarise, Interval, Summary};

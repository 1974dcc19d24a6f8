use serde::{Deserialize, Serialize};

/// The vector-index service's section (`[vector_index]`) of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The gRPC port; the admin HTTP port is this + 100.
    pub port: u16,
    /// Empty: the binary fills `sqlite://<data_dir>/vector-index.db`.
    pub database_url: String,
    /// A collection, or the points matching a filter, with at most this many
    /// points is searched exactly: below it a scan is as fast as the graph
    /// and never misses.
    pub exact_search_threshold: usize,
    /// The embedder of a collection created without naming one. `none`
    /// here makes such collections vectors-only.
    pub default_embedder: String,
}

pub const DEFAULT_PORT: u16 = 7103;
pub const DEFAULT_EXACT_SEARCH_THRESHOLD: usize = 1000;
/// The embedder name that asks for a vectors-only collection.
pub const NO_EMBEDDER: &str = "none";

impl Default for Config {
    fn default() -> Config {
        Config {
            port: DEFAULT_PORT,
            database_url: String::new(),
            exact_search_threshold: DEFAULT_EXACT_SEARCH_THRESHOLD,
            default_embedder: keel_models::MINILM_EMBEDDER_NAME.to_string(),
        }
    }
}

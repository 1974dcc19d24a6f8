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
    /// Where collections' graph snapshots go; a start restores from them
    /// instead of rebuilding. Empty: the binary fills
    /// `<data_dir>/vector-index-snapshots`; empty when serving from code
    /// means no snapshots.
    pub snapshot_dir: String,
    /// How often a collection written to since its last snapshot is
    /// snapshotted again (and once more at shutdown).
    pub snapshot_interval_ms: u64,
    /// The `[auth]` section, shared by every service: filled by the binary
    /// and `keel up`, not read from this section.
    #[serde(skip)]
    pub auth: keel_core::auth::AuthConfig,
    /// The `[tls]` section, shared like `[auth]`.
    #[serde(skip)]
    pub tls: keel_core::tls::TlsConfig,
}

pub const DEFAULT_PORT: u16 = 7103;
pub const DEFAULT_EXACT_SEARCH_THRESHOLD: usize = 1000;
pub const DEFAULT_SNAPSHOT_INTERVAL_MS: u64 = 60_000;
/// The embedder name that asks for a vectors-only collection.
pub const NO_EMBEDDER: &str = "none";

impl Default for Config {
    fn default() -> Config {
        Config {
            auth: keel_core::auth::AuthConfig::default(),
            tls: keel_core::tls::TlsConfig::default(),
            port: DEFAULT_PORT,
            database_url: String::new(),
            exact_search_threshold: DEFAULT_EXACT_SEARCH_THRESHOLD,
            default_embedder: keel_models::MINILM_EMBEDDER_NAME.to_string(),
            snapshot_dir: String::new(),
            snapshot_interval_ms: DEFAULT_SNAPSHOT_INTERVAL_MS,
        }
    }
}

impl Config {
    /// Gives snapshots their default home, `<data_dir>/vector-index-snapshots`,
    /// unless the configuration names one.
    pub fn fill_snapshot_dir(&mut self, data_dir: &std::path::Path) {
        if self.snapshot_dir.is_empty() {
            self.snapshot_dir = data_dir
                .join("vector-index-snapshots")
                .display()
                .to_string();
        }
    }
}

use serde::{Deserialize, Serialize};

/// The feedback service's section (`[feedback]`) of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The gRPC port; the admin HTTP port (with `POST /v1/feedback`) is this + 100.
    pub port: u16,
    /// Empty: the binary fills `sqlite://<data_dir>/feedback.db`.
    pub database_url: String,
    /// The monitoring service, which holds the inference records feedback
    /// refers to.
    pub monitoring_url: String,
    /// The deadline of each call to monitoring.
    pub monitoring_timeout_ms: u64,
    /// How often feedback that came before its inference record looks for
    /// the record again.
    pub join_interval_ms: u64,
    /// How long feedback waits for its inference record before
    /// ListOrphanedFeedback reports it.
    pub orphan_grace_ms: u64,
    /// Web pages from these origins (`https://chat.example.com`) may post
    /// feedback: `POST /v1/feedback` and gRPC-Web answer their CORS
    /// preflights.
    pub cors_allowed_origins: Vec<String>,
    /// Feedback older than this is deleted (0: kept forever); monitoring
    /// keeps the inference records it refers to as long.
    pub feedback_retention_ms: u64,
    /// How often the retention job runs.
    pub retention_interval_ms: u64,
    /// Rows deleted per transaction, so no lock is held long.
    pub retention_batch: u32,
    /// The `[auth]` section, shared by every service: filled by the binary
    /// and `keel up`, not read from this section.
    #[serde(skip)]
    pub auth: keel_core::auth::AuthConfig,
    /// The `[tls]` section, shared like `[auth]`.
    #[serde(skip)]
    pub tls: keel_core::tls::TlsConfig,
}

pub const DEFAULT_PORT: u16 = 7104;

impl Default for Config {
    fn default() -> Config {
        Config {
            auth: keel_core::auth::AuthConfig::default(),
            tls: keel_core::tls::TlsConfig::default(),
            port: DEFAULT_PORT,
            database_url: String::new(),
            monitoring_url: "http://127.0.0.1:7105".to_string(),
            monitoring_timeout_ms: 5_000,
            join_interval_ms: 1_000,
            orphan_grace_ms: 3_600_000,
            cors_allowed_origins: Vec::new(),
            feedback_retention_ms: 0,
            retention_interval_ms: 60_000,
            retention_batch: 1_000,
        }
    }
}

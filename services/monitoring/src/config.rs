use serde::{Deserialize, Serialize};

/// The monitoring service's section (`[monitoring]`) of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The gRPC port; the admin HTTP port is this + 100.
    pub port: u16,
    /// Empty: the binary fills `sqlite://<data_dir>/monitoring.db`.
    pub database_url: String,
    /// Store the spans of this process itself, handed over in memory (no
    /// OTLP encoding, no network): `keel up` sets it, because the services
    /// whose traces Keel keeps run in the same process. Not a config key:
    /// a standalone monitoring already gets its own spans over OTLP.
    #[serde(skip)]
    pub store_own_spans: bool,
    /// Also read inference records from the NATS JetStream stream that
    /// serving publishes to with `inference_delivery = "nats"`.
    pub nats_intake: bool,
    /// The NATS server and stream (the same as serving's `nats`).
    pub nats: keel_core::jetstream::JetStreamConfig,
    /// Inference records older than this are deleted (0: kept forever),
    /// except those feedback refers to, which stay as long as the
    /// feedback does.
    pub inference_retention_ms: u64,
    /// Traces that started longer ago than this are deleted (0: kept
    /// forever).
    pub span_retention_ms: u64,
    /// How often the retention job runs.
    pub retention_interval_ms: u64,
    /// Rows (or traces) deleted per transaction, so no lock is held long.
    pub retention_batch: u32,
    /// The `[auth]` section, shared by every service: filled by the binary
    /// and `keel up`, not read from this section.
    #[serde(skip)]
    pub auth: keel_core::auth::AuthConfig,
    /// The `[tls]` section, shared like `[auth]`.
    #[serde(skip)]
    pub tls: keel_core::tls::TlsConfig,
}

pub const DEFAULT_PORT: u16 = 7105;

impl Default for Config {
    fn default() -> Config {
        Config {
            auth: keel_core::auth::AuthConfig::default(),
            tls: keel_core::tls::TlsConfig::default(),
            port: DEFAULT_PORT,
            database_url: String::new(),
            store_own_spans: false,
            nats_intake: false,
            nats: keel_core::jetstream::JetStreamConfig::default(),
            inference_retention_ms: 0,
            span_retention_ms: 0,
            retention_interval_ms: 60_000,
            retention_batch: 1_000,
        }
    }
}

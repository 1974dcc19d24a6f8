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
}

pub const DEFAULT_PORT: u16 = 7105;

impl Default for Config {
    fn default() -> Config {
        Config {
            port: DEFAULT_PORT,
            database_url: String::new(),
            store_own_spans: false,
        }
    }
}

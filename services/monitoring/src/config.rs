use serde::{Deserialize, Serialize};

/// The monitoring service's section (`[monitoring]`) of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The gRPC port; the admin HTTP port is this + 100.
    pub port: u16,
    /// Empty: the binary fills `sqlite://<data_dir>/monitoring.db`.
    pub database_url: String,
}

pub const DEFAULT_PORT: u16 = 7105;

impl Default for Config {
    fn default() -> Config {
        Config {
            port: DEFAULT_PORT,
            database_url: String::new(),
        }
    }
}

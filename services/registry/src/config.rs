use serde::{Deserialize, Serialize};

/// The `[registry]` section of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The default gRPC port, used only by whoever binds.
    pub port: u16,
    /// Empty: the caller fills `sqlite://<data_dir>/registry.db`; `serve`
    /// assumes it is set.
    pub database_url: String,
    /// Alias events buffered per watcher; a watcher further behind than this
    /// gets its stream ended with ABORTED and resubscribes.
    pub watch_buffer: usize,
    /// The `[auth]` section, shared by every service: filled by the binary
    /// and `keel up`, not read from this section.
    #[serde(skip)]
    pub auth: keel_core::auth::AuthConfig,
    /// The `[tls]` section, shared like `[auth]`.
    #[serde(skip)]
    pub tls: keel_core::tls::TlsConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            auth: keel_core::auth::AuthConfig::default(),
            tls: keel_core::tls::TlsConfig::default(),
            port: 7101,
            database_url: String::new(),
            watch_buffer: 1024,
        }
    }
}

//! One TOML file with a section per service, overridden by environment
//! variables: `KEEL_DATA_DIR` sets `data_dir`, `KEEL_SERVING__PORT` sets
//! `[serving] port` (a double underscore separates the levels).

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

/// Loads `T` from its defaults, then the TOML file (when given), then the
/// `KEEL_*` environment variables.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Env::prefixed("KEEL_").split("__"));
    figment
        .extract()
        .map_err(|error| ConfigError(Box::new(error)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Section {
        port: u16,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Sample {
        data_dir: String,
        serving: Section,
    }

    #[test]
    fn file_overrides_defaults() {
        let path = std::env::temp_dir().join(format!("keel-config-{}.toml", std::process::id()));
        std::fs::write(&path, "data_dir = \"/tmp/x\"\n[serving]\nport = 9000\n").unwrap();
        let loaded: Sample = load(Some(&path)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded.data_dir, "/tmp/x");
        assert_eq!(loaded.serving.port, 9000);
    }

    #[test]
    fn missing_file_is_an_error() {
        let missing = Path::new("/nonexistent/keel.toml");
        assert!(load::<Sample>(Some(missing)).is_err());
    }
}

/// Settings every process shares: where data lives and which address the
/// servers bind.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CommonConfig {
    /// Every service keeps its data under this directory (env `KEEL_DATA_DIR`).
    pub data_dir: std::path::PathBuf,
    /// The address the servers bind (env `KEEL_HOST`).
    pub host: std::net::IpAddr,
}

impl Default for CommonConfig {
    fn default() -> CommonConfig {
        CommonConfig {
            data_dir: std::path::PathBuf::from("keel-data"),
            host: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        }
    }
}

/// How far above its gRPC port a service's admin HTTP port is.
pub const ADMIN_PORT_OFFSET: u16 = 100;

/// The admin HTTP port of a service: its gRPC port + 100 (0 stays 0, for
/// tests that bind ephemeral ports).
pub fn admin_port(grpc_port: u16) -> u16 {
    if grpc_port == 0 {
        return 0;
    }
    grpc_port.saturating_add(ADMIN_PORT_OFFSET)
}

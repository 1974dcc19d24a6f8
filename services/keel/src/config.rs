//! The one TOML file of `keel up`: the settings every process shares plus a
//! section per service (`[registry]`, `[vector_index]`, `[serving]`,
//! `[feedback]`, `[monitoring]`) and `[models]`, overridable by `KEEL_*`
//! variables.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct KeelConfig {
    #[serde(flatten)]
    pub common: keel_core::config::CommonConfig,
    pub registry: keel_registry::Config,
    pub vector_index: keel_vector_index::Config,
    pub serving: keel_serving::Config,
    pub feedback: keel_feedback::Config,
    pub monitoring: keel_monitoring::Config,
    /// The in-process models (`minilm`, `smollm2`) and where their files are.
    pub models: keel_models::ModelsConfig,
    /// Where spans go: Keel's own trace store and any OTLP exporter.
    pub telemetry: keel_core::telemetry::TelemetryConfig,
    /// API keys on every service (`[auth] enabled`, the master key's
    /// variable).
    pub auth: keel_core::auth::AuthConfig,
    /// TLS on every listener and every client between the services
    /// (`[tls] cert_path`, `key_path`, `ca_path`).
    pub tls: keel_core::tls::TlsConfig,
}

impl KeelConfig {
    /// Defaults, then the TOML file (when given), then the environment.
    pub fn load(path: Option<&Path>) -> Result<KeelConfig, keel_core::config::ConfigError> {
        keel_core::config::load(path)
    }

    /// The five services' database URLs, in `Service::ALL` order: for
    /// whoever points every store somewhere else at once.
    pub fn database_urls_mut(&mut self) -> [&mut String; 5] {
        [
            &mut self.registry.database_url,
            &mut self.vector_index.database_url,
            &mut self.serving.database_url,
            &mut self.feedback.database_url,
            &mut self.monitoring.database_url,
        ]
    }

    /// Every gRPC port set to 0, so the kernel picks free ones (and the admin
    /// ports follow, since `admin_port(0)` is 0): for tests and for running
    /// several clusters on one machine.
    pub fn with_ephemeral_ports(mut self) -> KeelConfig {
        self.registry.port = 0;
        self.vector_index.port = 0;
        self.serving.port = 0;
        self.feedback.port = 0;
        self.monitoring.port = 0;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sections_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(
            &path,
            "data_dir = \"/var/lib/keel\"\n[serving]\nport = 9102\n[monitoring]\ndatabase_url = \"postgres://db/monitoring\"\n",
        )
        .unwrap();
        let config = KeelConfig::load(Some(&path)).unwrap();
        assert_eq!(config.common.data_dir, Path::new("/var/lib/keel"));
        assert_eq!(config.serving.port, 9102);
        assert_eq!(config.monitoring.database_url, "postgres://db/monitoring");
        assert_eq!(config.registry.port, keel_registry::Config::default().port);
    }

    #[test]
    fn ephemeral_ports_are_all_zero() {
        let config = KeelConfig::default().with_ephemeral_ports();
        let ports = [
            config.registry.port,
            config.vector_index.port,
            config.serving.port,
            config.feedback.port,
            config.monitoring.port,
        ];
        assert_eq!(ports, [0, 0, 0, 0, 0]);
    }
}

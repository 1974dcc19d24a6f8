//! `keel up`: all five services in this process, until Ctrl-C or SIGTERM.

use std::path::{Path, PathBuf};

use keel_models::ModelCatalog;

use crate::cli::CliError;
use crate::cluster::RunningKeel;
use crate::config::KeelConfig;

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// A TOML file with a section per service (see deploy/config/)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the services keep their data
    #[arg(long, value_name = "DIR", env = "KEEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

pub async fn run(args: UpArgs) -> Result<(), CliError> {
    let config = load_config(args.config.as_deref(), args.data_dir)?;
    keel_core::telemetry::init("keel", &config.telemetry)
        .map_err(|error| CliError::Invalid(error.to_string()))?;
    tracing::info!(data_dir = %config.common.data_dir.display(), "starting keel");
    let mut running = start_cluster(config).await?;
    let signal = keel_core::shutdown_on_signal();
    let stopped_by_signal = tokio::select! {
        _ = signal.cancelled() => true,
        _ = running.wait() => false,
    };
    if !stopped_by_signal {
        tracing::warn!("a service stopped, shutting the others down");
    }
    running.shutdown().await?;
    if !stopped_by_signal {
        return Err(CliError::Invalid(
            "a service exited on its own; see the log above".to_string(),
        ));
    }
    tracing::info!("keel stopped");
    Ok(())
}

/// Defaults, the file, the `KEEL_*` environment, then `--data-dir`.
pub fn load_config(file: Option<&Path>, data_dir: Option<PathBuf>) -> Result<KeelConfig, CliError> {
    let mut config = KeelConfig::load(file)?;
    if let Some(dir) = data_dir {
        config.common.data_dir = dir;
    }
    Ok(config)
}

/// Starts the services with the in-process models (`minilm`, `smollm2`,
/// plus the built-in `hashing` and `extractive`); missing model files are an
/// error that says to run `keel models fetch`. A taken port is reported with
/// the service and the address.
pub async fn start_cluster(config: KeelConfig) -> Result<RunningKeel, CliError> {
    let models = config
        .models
        .clone()
        .with_default_dir(&config.common.data_dir);
    tracing::info!(dir = %models.dir.display(), "loading models");
    // Loading reads a few hundred MB of weights: off the async runtime.
    let catalog = tokio::task::spawn_blocking(move || ModelCatalog::load(&models))
        .await
        .map_err(|error| CliError::Invalid(format!("model loading stopped: {error}")))??;
    let running = crate::cluster::start(config, catalog).await?;
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy_config(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config")
            .join(name)
    }

    #[test]
    fn the_deploy_configs_load() {
        let dev = load_config(Some(&deploy_config("dev.toml")), None).unwrap();
        assert_eq!(dev.common.data_dir, Path::new("keel-data"));
        assert_eq!(dev.serving.port, 7102);
        assert_eq!(dev.registry.database_url, "");

        let staging = load_config(Some(&deploy_config("staging.toml")), None).unwrap();
        assert_eq!(staging.common.host.to_string(), "0.0.0.0");
        assert_eq!(staging.serving.generation_workers, 4);
        assert_eq!(staging.serving.spill_disk_budget_bytes, 4 << 30);
        // Bound to every interface: keys are checked.
        assert!(staging.auth.enabled);

        let prod = load_config(Some(&deploy_config("prod.toml")), None).unwrap();
        let urls = [
            &prod.registry.database_url,
            &prod.vector_index.database_url,
            &prod.serving.database_url,
            &prod.feedback.database_url,
            &prod.monitoring.database_url,
        ];
        for url in urls {
            assert!(url.starts_with("postgres://"), "{url}");
        }
        assert!(prod.auth.enabled && !dev.auth.enabled);
        // TLS on every listener and client, and to the databases.
        assert!(prod.tls.serves_tls() && !dev.tls.serves_tls());
        assert!(prod.serving.registry_url.starts_with("https://"));
        for url in urls {
            assert!(url.contains("sslmode=verify-full"), "{url}");
        }
        assert_eq!(prod.registry.watch_buffer, 4096);
        assert_eq!(prod.serving.dependency_timeout_ms, 2000);
        assert_eq!(prod.models.dir, Path::new("/var/lib/keel/models"));
        assert_eq!(prod.models.threads, 4);
        // The remote generator is an example, commented out.
        assert!(prod.models.openai.is_empty());
        assert_eq!(prod.telemetry.sample_ratio, 0.25);
        assert_eq!(
            prod.telemetry.exporters[0].endpoint,
            "http://otel-collector:4317"
        );
        assert!(dev.telemetry.to_monitoring && dev.telemetry.exporters.is_empty());
    }

    #[test]
    fn data_dir_flag_overrides_the_file() {
        let config = load_config(
            Some(&deploy_config("dev.toml")),
            Some(PathBuf::from("/tmp/elsewhere")),
        )
        .unwrap();
        assert_eq!(config.common.data_dir, Path::new("/tmp/elsewhere"));
    }
}

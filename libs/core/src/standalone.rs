//! What a service run as its own process (its binary, or `keel serve
//! <service>`) does before it calls `serve`: load the common settings and
//! the service's section from the config file and the environment,
//! default its database to `sqlite://<data_dir>/<service>.db`, bind its gRPC
//! and admin ports, install logging and the shutdown signal.

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthConfig;
use crate::config::{admin_port, CommonConfig};
use crate::server::{bind, BindError, Listeners};
use crate::span_export::SpanDestination;
use crate::telemetry::{ExporterConfig, TelemetryConfig};
use crate::tls::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("{0}")]
    Usage(String),
    #[error("invalid configuration: {0}")]
    Config(#[from] Box<figment::Error>),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthConfigError),
}

/// A service ready to serve: its config, its bound sockets, its shutdown.
pub struct Standalone<C> {
    pub config: C,
    /// The settings every service shares (`data_dir`, `host`).
    pub common: CommonConfig,
    pub listeners: Listeners,
    pub shutdown: CancellationToken,
    /// The file and environment the config came from, for other sections.
    sources: Figment,
    /// Spans go to monitoring's trace store while this lives.
    _span_destination: Option<SpanDestination>,
}

impl<C> Standalone<C> {
    /// Another section of the same file and environment (e.g. `models`),
    /// its defaults filled in.
    pub fn section<T>(&self, name: &str) -> Result<T, StandaloneError>
    where
        T: Serialize + DeserializeOwned + Default,
    {
        Figment::from(Serialized::defaults(T::default()))
            .merge(self.sources.focus(name))
            .extract()
            .map_err(|error| StandaloneError::Config(Box::new(error)))
    }
}

/// How a service's config exposes the two settings every binary needs.
pub struct ServiceSettings<C> {
    /// The `[auth]` section goes here.
    pub auth: fn(&mut C) -> &mut crate::auth::AuthConfig,
    /// The `[tls]` section goes here.
    pub tls: fn(&mut C) -> &mut TlsConfig,
    /// The service's name in logs and its database file name, e.g. "vector-index".
    pub service: &'static str,
    /// Its TOML section and environment prefix, e.g. "vector_index".
    pub section: &'static str,
    pub port: fn(&C) -> u16,
    pub database_url: fn(&mut C) -> &mut String,
}

/// `file`: the TOML file named by `--config`, if any.
pub async fn prepare<C>(
    settings: ServiceSettings<C>,
    file: Option<PathBuf>,
) -> Result<Standalone<C>, StandaloneError>
where
    C: Serialize + DeserializeOwned + Default,
{
    let mut sources = Figment::new();
    if let Some(path) = &file {
        sources = sources.merge(Toml::file_exact(path));
    }
    sources = sources.merge(Env::prefixed("KEEL_").split("__"));
    let telemetry: TelemetryConfig =
        Figment::from(Serialized::defaults(TelemetryConfig::default()))
            .merge(sources.focus("telemetry"))
            .extract()
            .map_err(Box::new)?;
    let mut auth: AuthConfig = Figment::from(Serialized::defaults(AuthConfig::default()))
        .merge(sources.focus("auth"))
        .extract()
        .map_err(Box::new)?;
    auth.master_key = auth.read_master_key()?;
    let tls: TlsConfig = Figment::from(Serialized::defaults(TlsConfig::default()))
        .merge(sources.focus("tls"))
        .extract()
        .map_err(Box::new)?;
    crate::telemetry::init(&format!("keel-{}", settings.service), &telemetry)?;
    let span_destination = if telemetry.enabled && telemetry.to_monitoring {
        let mut to_monitoring =
            ExporterConfig::keel_monitoring(&telemetry.monitoring_url, tls.ca_path.as_deref());
        if let Some(key) = &auth.master_key {
            to_monitoring
                .headers
                .insert("authorization".to_string(), format!("Bearer {key}"));
        }
        Some(match &telemetry.nats {
            Some(nats) => crate::telemetry::add_destination_with_fallback(&to_monitoring, nats)?,
            None => crate::telemetry::add_destination(&to_monitoring)?,
        })
    } else {
        None
    };
    let common: CommonConfig = Figment::from(Serialized::defaults(CommonConfig::default()))
        .merge(sources.clone())
        .extract()
        .map_err(Box::new)?;
    let mut config: C = Figment::from(Serialized::defaults(C::default()))
        .merge(sources.focus(settings.section))
        .extract()
        .map_err(Box::new)?;
    *(settings.auth)(&mut config) = auth;
    *(settings.tls)(&mut config) = tls;
    let database_url = (settings.database_url)(&mut config);
    if database_url.is_empty() {
        *database_url = keel_store::default_sqlite_url(&common.data_dir, settings.service);
    }
    let port = (settings.port)(&config);
    let grpc = bind(settings.service, SocketAddr::new(common.host, port)).await?;
    let admin_address = SocketAddr::new(common.host, admin_port(port));
    let admin = bind(settings.service, admin_address).await?;
    Ok(Standalone {
        config,
        common,
        listeners: Listeners {
            grpc,
            admin: Some(admin),
        },
        shutdown: crate::server::shutdown_on_signal(),
        sources,
        _span_destination: span_destination,
    })
}

/// The `--config <file>` of a service binary's command line.
pub fn config_file_from_args(service: &str) -> Result<Option<PathBuf>, StandaloneError> {
    let usage = || format!("usage: keel-{service} [--config <file>]");
    let mut arguments = std::env::args().skip(1);
    let mut path = None;
    while let Some(argument) = arguments.next() {
        if argument == "--config" {
            let value = arguments.next().ok_or_else(|| {
                StandaloneError::Usage(format!("--config needs a file; {}", usage()))
            })?;
            path = Some(PathBuf::from(value));
        } else if let Some(value) = argument.strip_prefix("--config=") {
            path = Some(PathBuf::from(value));
        } else {
            return Err(StandaloneError::Usage(format!(
                "unknown argument {argument:?}; {}",
                usage()
            )));
        }
    }
    Ok(path)
}

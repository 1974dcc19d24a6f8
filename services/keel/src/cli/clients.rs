//! Where the five services are, and the gRPC clients that reach them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_core::channel::ServiceChannel;
use keel_core::tls::ClientTls;
use keel_proto::v1::feedback_service_client::FeedbackServiceClient;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use keel_proto::v1::registry_service_client::RegistryServiceClient;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;

use crate::cli::CliError;
use crate::cluster::{RunningKeel, Service};

/// A service that does not answer within this long is reported as down
/// rather than leaving the command hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The gRPC URL of every service: global options of every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceUrls {
    /// The registry's gRPC URL
    #[arg(
        long = "registry",
        global = true,
        value_name = "URL",
        env = "KEEL_REGISTRY_URL",
        default_value = "http://127.0.0.1:7101"
    )]
    pub registry: String,
    /// The serving gRPC URL
    #[arg(
        long = "serving",
        global = true,
        value_name = "URL",
        env = "KEEL_SERVING_URL",
        default_value = "http://127.0.0.1:7102"
    )]
    pub serving: String,
    /// The vector index's gRPC URL
    #[arg(
        long = "vector-index",
        global = true,
        value_name = "URL",
        env = "KEEL_VECTOR_INDEX_URL",
        default_value = "http://127.0.0.1:7103"
    )]
    pub vector_index: String,
    /// The feedback service's gRPC URL
    #[arg(
        long = "feedback",
        global = true,
        value_name = "URL",
        env = "KEEL_FEEDBACK_URL",
        default_value = "http://127.0.0.1:7104"
    )]
    pub feedback: String,
    /// The monitoring service's gRPC URL
    #[arg(
        long = "monitoring",
        global = true,
        value_name = "URL",
        env = "KEEL_MONITORING_URL",
        default_value = "http://127.0.0.1:7105"
    )]
    pub monitoring: String,
    /// The API key every call presents (`authorization: Bearer …`); a
    /// Keel with authentication off needs none
    #[arg(
        long = "api-key",
        global = true,
        value_name = "KEY",
        env = "KEEL_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// PEM CA certificates to trust for `https://` URLs besides the public
    /// web roots (a Keel whose certificates a private CA signed)
    #[arg(
        long = "ca-cert",
        global = true,
        value_name = "FILE",
        env = "KEEL_CA_CERT"
    )]
    pub ca_cert: Option<PathBuf>,
}

impl ServiceUrls {
    /// The URLs of the services a `RunningKeel` in this process bound, and
    /// its master key when it checks keys.
    pub fn of_cluster(running: &RunningKeel) -> ServiceUrls {
        ServiceUrls {
            registry: running.grpc_url(Service::Registry),
            serving: running.grpc_url(Service::Serving),
            vector_index: running.grpc_url(Service::VectorIndex),
            feedback: running.grpc_url(Service::Feedback),
            monitoring: running.grpc_url(Service::Monitoring),
            api_key: running.master_key().map(str::to_string),
            ca_cert: running.ca_path().map(Path::to_path_buf),
        }
    }

    fn client_tls(&self) -> Result<ClientTls, CliError> {
        match &self.ca_cert {
            None => Ok(ClientTls::public_roots()),
            Some(path) => ClientTls::trusting_pem_file(path, "--ca-cert")
                .map_err(|error| CliError::Invalid(error.to_string())),
        }
    }

    pub async fn registry(&self) -> Result<RegistryServiceClient<ServiceChannel>, CliError> {
        let channel = connect(
            Service::Registry,
            &self.registry,
            self.api_key.as_deref(),
            &self.client_tls()?,
        )
        .await?;
        Ok(RegistryServiceClient::new(channel))
    }

    pub async fn serving(&self) -> Result<ServingServiceClient<ServiceChannel>, CliError> {
        let channel = connect(
            Service::Serving,
            &self.serving,
            self.api_key.as_deref(),
            &self.client_tls()?,
        )
        .await?;
        Ok(ServingServiceClient::new(channel))
    }

    pub async fn vector_index(&self) -> Result<VectorIndexServiceClient<ServiceChannel>, CliError> {
        let channel = connect(
            Service::VectorIndex,
            &self.vector_index,
            self.api_key.as_deref(),
            &self.client_tls()?,
        )
        .await?;
        Ok(VectorIndexServiceClient::new(channel))
    }

    pub async fn feedback(&self) -> Result<FeedbackServiceClient<ServiceChannel>, CliError> {
        let channel = connect(
            Service::Feedback,
            &self.feedback,
            self.api_key.as_deref(),
            &self.client_tls()?,
        )
        .await?;
        Ok(FeedbackServiceClient::new(channel))
    }

    pub async fn monitoring(&self) -> Result<MonitoringServiceClient<ServiceChannel>, CliError> {
        let channel = connect(
            Service::Monitoring,
            &self.monitoring,
            self.api_key.as_deref(),
            &self.client_tls()?,
        )
        .await?;
        Ok(MonitoringServiceClient::new(channel))
    }
}

async fn connect(
    service: Service,
    url: &str,
    api_key: Option<&str>,
    tls: &ClientTls,
) -> Result<ServiceChannel, CliError> {
    let endpoint = tls
        .endpoint(url)
        .map_err(|error| CliError::Invalid(format!("{} url: {error}", service.name())))?;
    let channel = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
        .map_err(|source| CliError::Connect {
            service: service.name(),
            url: url.to_string(),
            source,
        })?;
    ServiceChannel::new(channel, api_key)
        .map_err(|error| CliError::Invalid(format!("--api-key: {error}")))
}

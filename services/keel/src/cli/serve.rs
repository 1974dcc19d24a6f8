//! `keel serve <service>`: one service as its own process, as its own
//! binary runs it: for deployments that run the services apart, and for the
//! tests that stop or kill one of them while the others go on.

use std::path::PathBuf;

use crate::cli::CliError;
use crate::cluster::Service;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The service to run
    #[arg(value_enum)]
    pub service: Service,
    /// A TOML file with a section per service (see deploy/config/); the
    /// `KEEL_*` environment overrides it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> Result<(), CliError> {
    let file = args.config;
    let served = match args.service {
        Service::Registry => keel_registry::standalone::run(file).await,
        Service::VectorIndex => keel_vector_index::standalone::run(file).await,
        Service::Serving => keel_serving::standalone::run(file).await,
        Service::Feedback => keel_feedback::standalone::run(file).await,
        Service::Monitoring => keel_monitoring::standalone::run(file).await,
    };
    served.map_err(|error| CliError::Invalid(format!("{}: {error:#}", args.service.name())))
}

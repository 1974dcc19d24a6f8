//! `keel metrics ENDPOINT`: request counts, errors and latencies per served
//! version over a window ending now.

use keel_proto::v1::{GetMetricsRequest, GetMetricsResponse};

use crate::cli::error::rpc;
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    pub endpoint: String,
    /// The window ending now, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub window: u32,
}

pub async fn run(urls: &ServiceUrls, args: MetricsArgs) -> Result<(), CliError> {
    let metrics = metrics(urls, &args).await?;
    output::metrics(&metrics);
    Ok(())
}

pub async fn metrics(
    urls: &ServiceUrls,
    args: &MetricsArgs,
) -> Result<GetMetricsResponse, CliError> {
    let request = GetMetricsRequest {
        endpoint: args.endpoint.clone(),
        window_seconds: args.window,
    };
    let response = urls
        .monitoring()
        .await?
        .get_metrics(request)
        .await
        .map_err(rpc("monitoring GetMetrics"))?;
    Ok(response.into_inner())
}

//! `keel endpoint create|list`: serving endpoints and their weighted routes.

use clap::Subcommand;
use keel_proto::v1::{
    CreateEndpointRequest, Endpoint, ListEndpointsRequest, Route, Shadow, UpdateEndpointRequest,
};

use crate::cli::error::rpc;
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Create an endpoint routing traffic to chain targets by weight
    Create(CreateEndpointArgs),
    /// List the endpoints
    List,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CreateEndpointArgs {
    pub name: String,
    /// A route `TARGET=WEIGHT`, e.g. `support-bot@champion=90`; repeat for a split
    #[arg(long = "route", value_name = "TARGET=WEIGHT", required = true, value_parser = parse_route)]
    pub routes: Vec<RouteArg>,
    #[arg(long, default_value = "")]
    pub description: String,
    /// Mirror PERCENT of live queries to TARGET, unseen (shadow traffic),
    /// e.g. `support-bot/3=10`
    #[arg(long, value_name = "TARGET=PERCENT", value_parser = parse_route)]
    pub shadow: Option<RouteArg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteArg {
    /// "model@alias" or "model/version"
    pub target: String,
    pub weight: u32,
}

/// `TARGET=WEIGHT`, split at the last `=` (targets never hold one).
pub fn parse_route(text: &str) -> Result<RouteArg, String> {
    let Some((target, weight_text)) = text.rsplit_once('=') else {
        return Err(format!(
            "expected TARGET=WEIGHT, e.g. support-bot@champion=100, got {text:?}"
        ));
    };
    if target.is_empty() {
        return Err(format!("the target before `=` is empty in {text:?}"));
    }
    let weight = weight_text
        .parse::<u32>()
        .map_err(|_| format!("the weight after `=` must be a whole number, got {weight_text:?}"))?;
    Ok(RouteArg {
        target: target.to_string(),
        weight,
    })
}

pub async fn run(urls: &ServiceUrls, command: EndpointCommand) -> Result<(), CliError> {
    match command {
        EndpointCommand::Create(args) => {
            let endpoint = create(urls, &args).await?;
            output::endpoint(&endpoint);
        }
        EndpointCommand::List => {
            let endpoints = list(urls).await?;
            output::endpoints(&endpoints);
        }
    }
    Ok(())
}

fn proto_routes(routes: &[RouteArg]) -> Vec<Route> {
    routes
        .iter()
        .map(|route| Route {
            target: route.target.clone(),
            weight: route.weight,
        })
        .collect()
}

fn proto_shadow(shadow: Option<&RouteArg>) -> Option<Shadow> {
    shadow.map(|shadow| Shadow {
        target: shadow.target.clone(),
        percent: shadow.weight,
    })
}

pub async fn create(urls: &ServiceUrls, args: &CreateEndpointArgs) -> Result<Endpoint, CliError> {
    let request = CreateEndpointRequest {
        name: args.name.clone(),
        routes: proto_routes(&args.routes),
        description: args.description.clone(),
        shadow: proto_shadow(args.shadow.as_ref()),
    };
    let response = urls
        .serving()
        .await?
        .create_endpoint(request)
        .await
        .map_err(rpc("serving CreateEndpoint"))?;
    Ok(response.into_inner())
}

/// Replaces the routes and description of an existing endpoint.
pub async fn update(urls: &ServiceUrls, args: &CreateEndpointArgs) -> Result<Endpoint, CliError> {
    let request = UpdateEndpointRequest {
        name: args.name.clone(),
        routes: proto_routes(&args.routes),
        description: args.description.clone(),
        shadow: proto_shadow(args.shadow.as_ref()),
    };
    let response = urls
        .serving()
        .await?
        .update_endpoint(request)
        .await
        .map_err(rpc("serving UpdateEndpoint"))?;
    Ok(response.into_inner())
}

pub async fn list(urls: &ServiceUrls) -> Result<Vec<Endpoint>, CliError> {
    let response = urls
        .serving()
        .await?
        .list_endpoints(ListEndpointsRequest {})
        .await
        .map_err(rpc("serving ListEndpoints"))?;
    Ok(response.into_inner().endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_at_the_last_equals_sign() {
        assert_eq!(
            parse_route("support-bot@champion=90").unwrap(),
            RouteArg {
                target: "support-bot@champion".to_string(),
                weight: 90
            }
        );
        assert_eq!(parse_route("support-bot/2=0").unwrap().weight, 0);
        assert!(parse_route("support-bot@champion")
            .unwrap_err()
            .contains("TARGET=WEIGHT"));
        assert!(parse_route("=5").unwrap_err().contains("target"));
        assert!(parse_route("a@b=-1").unwrap_err().contains("whole number"));
        assert!(parse_route("a@b=ten").unwrap_err().contains("\"ten\""));
    }
}

//! CORS for the calls web pages make from another origin: gRPC-Web on the
//! gRPC ports and the JSON APIs on the admin ports (a chatbot front end
//! posting feedback). Only the origins a service's config lists are
//! allowed; with none listed a browser allows same-origin calls only.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
#[error("cors_allowed_origins: {origin:?} is not an origin like \"https://chat.example.com\"")]
pub struct InvalidOrigin {
    pub origin: String,
}

/// Checks each entry is `scheme://host[:port]`, with nothing after it.
pub fn check_origins(origins: &[String]) -> Result<(), InvalidOrigin> {
    origins
        .iter()
        .try_for_each(|origin| parse_origin(origin).map(|_| ()))
}

/// For a gRPC port: the gRPC-Web request headers, and the status trailers
/// (sent as headers when a call fails at once) readable by the page.
pub fn grpc_web_layer(origins: &[String]) -> Result<CorsLayer, InvalidOrigin> {
    Ok(CorsLayer::new()
        .allow_origin(allow_origin(origins)?)
        .allow_methods([Method::POST])
        .allow_headers(header_names(&[
            "content-type",
            "x-grpc-web",
            "x-user-agent",
            "grpc-timeout",
            "authorization",
            "traceparent",
        ]))
        .expose_headers(header_names(&[
            "grpc-status",
            "grpc-message",
            "grpc-status-details-bin",
        ]))
        .max_age(PREFLIGHT_MAX_AGE))
}

/// For JSON POST endpoints on an admin port.
pub fn json_api_layer(origins: &[String]) -> Result<CorsLayer, InvalidOrigin> {
    Ok(CorsLayer::new()
        .allow_origin(allow_origin(origins)?)
        .allow_methods([Method::POST])
        .allow_headers(header_names(&[
            "content-type",
            "authorization",
            "traceparent",
        ]))
        .max_age(PREFLIGHT_MAX_AGE))
}

fn allow_origin(origins: &[String]) -> Result<AllowOrigin, InvalidOrigin> {
    let values = origins
        .iter()
        .map(|origin| parse_origin(origin))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AllowOrigin::list(values))
}

fn parse_origin(origin: &str) -> Result<HeaderValue, InvalidOrigin> {
    let invalid = || InvalidOrigin {
        origin: origin.to_string(),
    };
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(invalid)?;
    if rest.is_empty() || rest.contains('/') {
        return Err(invalid());
    }
    HeaderValue::from_str(origin).map_err(|_| invalid())
}

fn header_names(names: &[&'static str]) -> Vec<HeaderName> {
    names
        .iter()
        .map(|name| HeaderName::from_static(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        let good = vec![
            "https://chat.example.com".to_string(),
            "http://localhost:3000".to_string(),
        ];
        assert!(check_origins(&good).is_ok());
        for bad in [
            "chat.example.com",
            "https://chat.example.com/app",
            "https://",
            "ftp://x",
        ] {
            let error = check_origins(&[bad.to_string()]).unwrap_err();
            assert_eq!(error.origin, bad);
            assert!(error.to_string().starts_with("cors_allowed_origins: "));
        }
    }
}

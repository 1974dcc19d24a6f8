//! gRPC connections to the services under test.

use std::time::Duration;

use keel_core::channel::ServiceChannel;
use tonic::transport::Endpoint;

use crate::error::Error;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens one HTTP/2 connection to `url` ("http://127.0.0.1:7102"), failing
/// now rather than on the first request when nothing listens there; every
/// call presents `api_key`.
pub async fn connect(url: &str, api_key: Option<&str>) -> Result<ServiceChannel, Error> {
    let connect_error = |source| Error::Connect {
        url: url.to_string(),
        source,
    };
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(connect_error)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(connect_error)?;
    ServiceChannel::new(channel, api_key).map_err(|error| Error::InvalidArgument {
        flag: "--api-key",
        rule: error.to_string(),
    })
}

/// The name of a gRPC code as the summary reports it, e.g. "Unavailable".
pub fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_the_variant_names() {
        assert_eq!(code_name(tonic::Code::Unavailable), "Unavailable");
        assert_eq!(code_name(tonic::Code::DeadlineExceeded), "DeadlineExceeded");
        assert_eq!(
            code_name(tonic::Code::ResourceExhausted),
            "ResourceExhausted"
        );
    }

    #[tokio::test]
    async fn connecting_to_a_closed_port_fails_naming_the_url() {
        // Bind then drop, so the port is very likely closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let error = connect(&url, None).await.unwrap_err();
        assert!(matches!(error, Error::Connect { .. }));
        assert!(error.to_string().contains(&url));
    }
}

//! The channel a Keel process calls another service through: it connects
//! on first use, and every call carries the caller's trace context and
//! this process's key (`authorization: Bearer …`).

use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;
use tracing_opentelemetry_instrumentation_sdk::{find_current_context, http::inject_context};

use crate::tls::ClientTls;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("invalid url `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("an API key must be printable ASCII")]
    InvalidKey,
}

/// `Bearer <key>`, marked sensitive so it never shows in a debug print.
pub fn bearer(key: &str) -> Result<HeaderValue, ChannelError> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| ChannelError::InvalidKey)?;
    value.set_sensitive(true);
    Ok(value)
}

#[derive(Debug, Clone)]
pub struct ServiceChannel {
    channel: Channel,
    authorization: Option<HeaderValue>,
    trace_context: bool,
}

impl ServiceChannel {
    /// Wraps an open channel; `key`: the key every call presents.
    pub fn new(channel: Channel, key: Option<&str>) -> Result<ServiceChannel, ChannelError> {
        Ok(ServiceChannel {
            channel,
            authorization: key.map(bearer).transpose()?,
            trace_context: true,
        })
    }

    /// The same channel, its calls outside any trace: for a call that
    /// lives as long as the process (a watch stream), whose span would be
    /// a trace that never ends.
    pub fn without_trace_context(mut self) -> ServiceChannel {
        self.trace_context = false;
        self
    }

    /// A channel that connects on first use, so a service starts while its
    /// dependencies are still down; over TLS trusting `tls` for an
    /// `https://` url.
    pub fn lazy(
        url: &str,
        connect_timeout: Duration,
        key: Option<&str>,
        tls: &ClientTls,
    ) -> Result<ServiceChannel, ChannelError> {
        let endpoint = tls
            .endpoint(url)?
            .connect_timeout(connect_timeout)
            // Pings find a dependency that vanished without closing the
            // connection, which would otherwise hang a long-lived stream
            // forever.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        ServiceChannel::new(endpoint.connect_lazy(), key)
    }
}

impl Service<http::Request<Body>> for ServiceChannel {
    type Response = <Channel as Service<http::Request<Body>>>::Response;
    type Error = <Channel as Service<http::Request<Body>>>::Error;
    type Future = <Channel as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.channel, context)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The current span's `traceparent`, through the globally installed
        // propagator; nothing when telemetry is off or no span is open.
        if self.trace_context {
            inject_context(&find_current_context(), request.headers_mut());
        }
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, authorization.clone());
        }
        self.channel.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_url_is_named() {
        let error = ServiceChannel::lazy(
            "not a url",
            Duration::from_secs(1),
            None,
            &ClientTls::public_roots(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("`not a url`"), "{error}");
    }

    #[test]
    fn a_key_becomes_a_sensitive_bearer_header() {
        let value = bearer("keel_abc").unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer keel_abc");
        assert!(value.is_sensitive());
        assert!(bearer("bad\nkey").is_err());
    }
}

//! Calls to the services serving depends on: deadlines and what their
//! failures mean to serving's callers.

use std::future::Future;
use std::time::Duration;

use keel_core::channel::ServiceChannel;
use keel_core::tls::ClientTls;
use tonic::Code;

use crate::error::Error;

/// A channel that connects on first use, so serving starts while its
/// dependencies are still down; its calls present `key`, over TLS for
/// an `https://` url.
pub fn lazy_channel(
    url: &str,
    connect_timeout: Duration,
    key: Option<&str>,
    tls: &ClientTls,
) -> Result<ServiceChannel, Error> {
    ServiceChannel::lazy(url, connect_timeout, key, tls)
        .map_err(|error| Error::Config(error.to_string()))
}

/// Runs one call with a deadline; a late answer is DEADLINE_EXCEEDED.
pub async fn with_deadline<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(deadline, call).await {
        Ok(result) => result,
        Err(_elapsed) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {} ms",
            deadline.as_millis()
        ))),
    }
}

/// A failed call to a dependency that the caller did not handle itself: to
/// serving's callers the dependency is unavailable.
pub fn dependency_error(dependency: &str, status: &tonic::Status) -> Error {
    let code = status.code();
    let reason = match code {
        Code::Unavailable | Code::Unknown | Code::Cancelled => "unreachable",
        Code::DeadlineExceeded => "timed out",
        _ => "failed",
    };
    Error::Unavailable(format!(
        "{dependency} {reason}: {code:?}: {}",
        status.message()
    ))
}

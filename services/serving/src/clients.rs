//! Channels to the services serving depends on. They connect lazily, so
//! serving starts while its dependencies are still down.

use std::future::Future;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::error::Error;

pub fn lazy_channel(url: &str, connect_timeout: Duration) -> Result<Channel, Error> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|error| Error::Config(format!("invalid url `{url}`: {error}")))?
        .connect_timeout(connect_timeout)
        // Pings find a dependency that vanished without closing the
        // connection, which would otherwise hang the alias watch forever.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
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

//! What can go wrong in a command. Every variant says what failed and why;
//! gRPC failures keep the status code's canonical name.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::cli::spec::SpecError;
use crate::cluster::StartError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach {service} at {url} (is `keel up` running?): {source}")]
    Connect {
        service: &'static str,
        url: String,
        source: tonic::transport::Error,
    },
    #[error("{call} failed: {}: {}", code_name(status.code()), status.message())]
    Rpc {
        call: &'static str,
        status: tonic::Status,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] keel_core::config::ConfigError),
    #[error("cannot start {service}: {address} is already in use (is another keel running?)")]
    PortInUse {
        service: &'static str,
        address: SocketAddr,
    },
    #[error("keel failed: {0}")]
    Cluster(StartError),
    #[error(transparent)]
    Models(#[from] keel_models::ModelError),
    #[error("{0}")]
    Invalid(String),
    /// A remote HTTP API (a fine-tuning service) failed or refused.
    #[error("{0}")]
    Remote(String),
}

impl CliError {
    /// The gRPC status of a failed call, if that is what this is.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            CliError::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CliError {
        let path = path.into();
        move |source| CliError::Io { path, source }
    }
}

impl From<StartError> for CliError {
    fn from(error: StartError) -> CliError {
        match error {
            StartError::PortInUse { service, address } => CliError::PortInUse { service, address },
            other => CliError::Cluster(other),
        }
    }
}

/// `map_err(rpc("registry CreateModel"))` names the call in the message.
pub fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> CliError {
    move |status| CliError::Rpc { call, status }
}

/// The canonical name of a gRPC code, as in the gRPC specification.
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_show_the_code_name_and_message() {
        let error = rpc("serving Query")(tonic::Status::not_found("endpoint `support` not found"));
        assert_eq!(
            error.to_string(),
            "serving Query failed: NOT_FOUND: endpoint `support` not found"
        );
        assert_eq!(
            error.status().map(tonic::Status::code),
            Some(tonic::Code::NotFound)
        );
    }

    #[test]
    fn a_taken_port_asks_about_another_keel() {
        let address: SocketAddr = "127.0.0.1:7101".parse().unwrap();
        let error = CliError::from(StartError::PortInUse {
            service: "registry",
            address,
        });
        assert_eq!(
            error.to_string(),
            "cannot start registry: 127.0.0.1:7101 is already in use (is another keel running?)"
        );
    }
}

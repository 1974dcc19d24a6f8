use std::path::PathBuf;

use crate::latency::HistogramError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument `{flag}`: {rule}")]
    InvalidArgument { flag: &'static str, rule: String },
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    // Boxed: a Status is large and this error travels through every Result.
    #[error("{what} failed: {status}")]
    Rpc {
        what: String,
        status: Box<tonic::Status>,
    },
    #[error("cannot read corpus {path}: {source}")]
    Corpus {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corpus {path} holds no markdown paragraphs (pass --synthetic to generate a corpus)")]
    EmptyCorpus { path: PathBuf },
    #[error(transparent)]
    Histogram(#[from] HistogramError),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    pub fn rpc(what: impl Into<String>, status: tonic::Status) -> Error {
        Error::Rpc {
            what: what.into(),
            status: Box::new(status),
        }
    }
}

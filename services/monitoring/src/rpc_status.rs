//! `google.rpc.Status` and `google.rpc.RetryInfo`, the messages OTLP error
//! answers carry: in gRPC status details, and as OTLP/HTTP error bodies.
//! Two small messages, declared here rather than generated.

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<prost_types::Duration>,
}

pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// How long a client told to retry should wait.
pub const RETRY_AFTER_SECONDS: i64 = 1;

/// An encoded `google.rpc.Status` asking the client to retry after
/// `seconds` (gRPC's `grpc-status-details-bin`).
pub fn retry_info_details(code: i32, message: &str, seconds: i64) -> Vec<u8> {
    use prost::Message;
    let retry_info = RetryInfo {
        retry_delay: Some(prost_types::Duration { seconds, nanos: 0 }),
    };
    RpcStatus {
        code,
        message: message.to_string(),
        details: vec![prost_types::Any {
            type_url: RETRY_INFO_TYPE_URL.to_string(),
            value: retry_info.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

impl RpcStatus {
    pub fn decode_details(bytes: &[u8]) -> Result<RpcStatus, prost::DecodeError> {
        prost::Message::decode(bytes)
    }

    /// The retry delay of its RetryInfo detail, in whole seconds.
    pub fn retry_delay_seconds(&self) -> Option<i64> {
        let detail = self
            .details
            .iter()
            .find(|detail| detail.type_url == RETRY_INFO_TYPE_URL)?;
        let retry_info: RetryInfo = prost::Message::decode(detail.value.as_slice()).ok()?;
        retry_info.retry_delay.map(|delay| delay.seconds)
    }
}

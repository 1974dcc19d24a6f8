//! OTLP/HTTP trace intake: `POST /v1/traces` on the admin HTTP server. The
//! body is `application/x-protobuf` or `application/json` (OTLP/JSON) and
//! the answer uses the same encoding: an `ExportTraceServiceResponse`, or a
//! `google.rpc.Status` on error as the OTLP specification asks. Same
//! conversion and writer as the gRPC intake.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::error::Error;
use crate::otlp::{self, ExportOutcome};
use crate::rpc_status::{self, RpcStatus};
use crate::span_writer::SpanWriter;

/// The largest request body taken; exporters batch well below it.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

pub fn router(writer: SpanWriter) -> Router {
    Router::new()
        .route("/v1/traces", post(export_traces))
        .with_state(writer)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
}

async fn export_traces(
    State(writer): State<SpanWriter>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (encoding, compression) = match request_encoding(&headers).and_then(|encoding| {
        request_compression(&headers).map(|compression| (encoding, compression))
    }) {
        Ok(both) => both,
        Err(message) => {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{message}\n")).into_response()
        }
    };
    let too_large = || {
        error_response(
            encoding,
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::InvalidArgument,
            format!("request body must be at most {MAX_BODY_BYTES} bytes: send smaller batches"),
        )
    };
    let bad_request = |message: String| {
        error_response(
            encoding,
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            message,
        )
    };
    // Refused on its declared length before a byte of it is read.
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    // Past the limit (a chunked body), or the client went away mid-body.
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return too_large();
    };
    // Inflating and parsing up to 16 MiB is CPU work: off the async threads.
    let decoded =
        tokio::task::spawn_blocking(move || inflate_and_decode(encoding, compression, body)).await;
    let request = match decoded {
        Ok(Ok(request)) => request,
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::BadGzip(message))) => {
            return bad_request(format!("request body is not valid gzip: {message}"))
        }
        Ok(Err(BodyError::Undecodable(message))) => return bad_request(message),
        Err(error) => {
            tracing::error!(error = %error, "body decoding task failed");
            return error_response(
                encoding,
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                error.to_string(),
            );
        }
    };
    match otlp::export(&writer, request).await {
        Ok(outcome) => success_response(encoding, &outcome),
        Err(error) => {
            let (status, code) = http_status(&error);
            error_response(encoding, status, code, error.to_string())
        }
    }
}

/// The encoding `Content-Type` names, or why the request cannot be read.
fn request_encoding(headers: &HeaderMap) -> Result<Encoding, String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    // Parameters such as `; charset=utf-8` do not change the encoding.
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media_type.as_str() {
        PROTOBUF => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        _ => Err(format!(
            "content-type must be {PROTOBUF} or {JSON}, got {content_type:?}"
        )),
    }
}

/// The `Content-Encoding` of the body: none or gzip (what OTLP exporters
/// send).
fn request_compression(headers: &HeaderMap) -> Result<Compression, String> {
    let Some(content_encoding) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Compression::None);
    };
    let content_encoding = content_encoding.to_str().unwrap_or_default().trim();
    if content_encoding.is_empty() || content_encoding.eq_ignore_ascii_case("identity") {
        return Ok(Compression::None);
    }
    if content_encoding.eq_ignore_ascii_case("gzip") {
        return Ok(Compression::Gzip);
    }
    Err(format!(
        "content-encoding must be gzip or none, got {content_encoding:?}"
    ))
}

enum Inflate {
    TooLarge,
    Invalid(String),
}

/// The gzip body inflated, refused past `limit` bytes so a small body
/// cannot inflate into a huge one.
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, Inflate> {
    let mut inflated = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|error| Inflate::Invalid(error.to_string()))?;
    if inflated.len() > limit {
        return Err(Inflate::TooLarge);
    }
    Ok(inflated)
}

/// Why a body could not be turned into an export request.
enum BodyError {
    TooLarge,
    BadGzip(String),
    Undecodable(String),
}

/// The export request in `body`, inflated first when it is gzip.
fn inflate_and_decode(
    encoding: Encoding,
    compression: Compression,
    body: Bytes,
) -> Result<ExportTraceServiceRequest, BodyError> {
    let raw = match compression {
        Compression::None => body,
        Compression::Gzip => match gunzip(&body, MAX_BODY_BYTES) {
            Ok(inflated) => Bytes::from(inflated),
            Err(Inflate::TooLarge) => return Err(BodyError::TooLarge),
            Err(Inflate::Invalid(message)) => return Err(BodyError::BadGzip(message)),
        },
    };
    decode(encoding, &raw).map_err(BodyError::Undecodable)
}

fn decode(encoding: Encoding, body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|error| {
            format!("request body is not a protobuf ExportTraceServiceRequest: {error}")
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|error| {
            format!("request body is not an OTLP/JSON ExportTraceServiceRequest: {error}")
        }),
    }
}

fn success_response(encoding: Encoding, outcome: &ExportOutcome) -> Response {
    let partial = outcome.rejected_spans > 0 || !outcome.error_message.is_empty();
    let body = match encoding {
        Encoding::Protobuf => ExportTraceServiceResponse {
            partial_success: partial.then(|| ExportTracePartialSuccess {
                rejected_spans: outcome.rejected_spans,
                error_message: outcome.error_message.clone(),
            }),
        }
        .encode_to_vec(),
        // Written by hand for the proto3 JSON mapping: int64 as a string,
        // an unset message left out rather than null.
        Encoding::Json if partial => serde_json::json!({
            "partialSuccess": {
                "rejectedSpans": outcome.rejected_spans.to_string(),
                "errorMessage": outcome.error_message,
            }
        })
        .to_string()
        .into_bytes(),
        Encoding::Json => b"{}".to_vec(),
    };
    with_content_type(StatusCode::OK, encoding, body)
}

fn error_response(
    encoding: Encoding,
    status: StatusCode,
    code: tonic::Code,
    message: String,
) -> Response {
    let body = match encoding {
        Encoding::Protobuf => RpcStatus {
            code: code as i32,
            message,
            details: Vec::new(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": code as i32, "message": message })
            .to_string()
            .into_bytes(),
    };
    let mut response = with_content_type(status, encoding, body);
    // OTLP exporters wait this long before retrying a 429 or 503.
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(rpc_status::RETRY_AFTER_SECONDS),
        );
    }
    response
}

fn with_content_type(status: StatusCode, encoding: Encoding, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

fn http_status(error: &Error) -> (StatusCode, tonic::Code) {
    if error.is_unavailable() {
        return (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable);
    }
    match error {
        Error::InvalidArgument(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
        Error::SpanQueueFull { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
        ),
        _ => {
            tracing::error!(error = %error, "internal error");
            (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn content_types_pick_the_encoding() {
        assert_eq!(
            request_encoding(&headers(&[(
                header::CONTENT_TYPE,
                "application/x-protobuf"
            )])),
            Ok(Encoding::Protobuf)
        );
        assert_eq!(
            request_encoding(&headers(&[(
                header::CONTENT_TYPE,
                "Application/JSON; charset=utf-8"
            )])),
            Ok(Encoding::Json)
        );
        let refused = request_encoding(&headers(&[(header::CONTENT_TYPE, "text/plain")]));
        assert!(refused.unwrap_err().contains("content-type must be"));
        assert!(request_encoding(&HeaderMap::new()).is_err());
    }

    #[test]
    fn gzip_bodies_are_inflated_within_the_limit() {
        use std::io::Write as _;

        assert_eq!(
            request_compression(&HeaderMap::new()),
            Ok(Compression::None)
        );
        assert_eq!(
            request_compression(&headers(&[(header::CONTENT_ENCODING, "GZIP")])),
            Ok(Compression::Gzip)
        );
        assert_eq!(
            request_compression(&headers(&[(header::CONTENT_ENCODING, "identity")])),
            Ok(Compression::None)
        );
        let brotli = request_compression(&headers(&[(header::CONTENT_ENCODING, "br")]));
        assert_eq!(
            brotli.unwrap_err(),
            "content-encoding must be gzip or none, got \"br\""
        );

        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&[7u8; 1000]).unwrap();
        let gzipped = encoder.finish().unwrap();
        assert_eq!(gunzip(&gzipped, 1000).ok(), Some(vec![7u8; 1000]));
        // A small body that inflates past the limit is refused.
        assert!(matches!(gunzip(&gzipped, 999), Err(Inflate::TooLarge)));
        assert!(matches!(
            gunzip(b"not gzip", 1000),
            Err(Inflate::Invalid(_))
        ));
    }

    #[test]
    fn errors_map_to_retryable_http_statuses() {
        assert_eq!(
            http_status(&Error::SpanQueueFull { queued_calls: 1 }),
            (
                StatusCode::TOO_MANY_REQUESTS,
                tonic::Code::ResourceExhausted
            )
        );
        assert_eq!(
            http_status(&Error::SpansNotStored {
                message: "disk full".to_string()
            })
            .0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(&Error::SpanWriterStopped).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let response = error_response(
            Encoding::Json,
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
            "busy".to_string(),
        );
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], JSON);
    }
}

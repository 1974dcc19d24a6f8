//! Every gRPC call counted and timed, by method and status code, in the
//! names of go-grpc-prometheus so existing dashboards read them:
//! `keel_grpc_server_handled_total{grpc_service, grpc_method, grpc_code}`
//! and `keel_grpc_server_handling_seconds`. A streaming call is timed to
//! its first response, when the status of a call that fails before it is
//! known.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{HistogramVec, IntCounterVec};
use tower::{Layer, Service};

use crate::metrics::{MetricsError, ServiceMetrics};

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    handled: IntCounterVec,
    handling: HistogramVec,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: &ServiceMetrics) -> Result<GrpcMetricsLayer, MetricsError> {
        let labels = ["grpc_service", "grpc_method", "grpc_code"];
        Ok(GrpcMetricsLayer {
            handled: metrics.counter_vec(
                "keel_grpc_server_handled_total",
                "gRPC calls completed, by method and status code.",
                &labels,
            )?,
            handling: metrics.latency_vec(
                "keel_grpc_server_handling_seconds",
                "Time from a gRPC call's arrival to its response (its first message when streamed).",
                &labels,
            )?,
        })
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> GrpcMetricsService<S> {
        GrpcMetricsService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for GrpcMetricsService<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        // A `Uri` clone shares its bytes: the labels borrow from it.
        let uri = request.uri().clone();
        let started = Instant::now();
        let layer = self.layer.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let (service, method) = service_and_method(uri.path());
            let code = match &result {
                Ok(response) => status_code_name(response.headers()),
                Err(_) => Cow::Borrowed("Unknown"),
            };
            // A path no service serves is the caller's to choose: as labels
            // it would grow the series without bound.
            let (service_label, method_label) = if code == "Unimplemented" {
                ("unimplemented", "unimplemented")
            } else {
                (service, method)
            };
            let labels = [service_label, method_label, code.as_ref()];
            layer.handled.with_label_values(&labels).inc();
            layer
                .handling
                .with_label_values(&labels)
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// `/keel.v1.ServingService/Query` → (`keel.v1.ServingService`, `Query`).
fn service_and_method(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

/// A failed call answers its status in the response headers
/// ("trailers-only"); a successful one later, in trailers: no header, OK.
/// Named as gRPC's Go status codes print (`OK`, `NotFound`, `Unavailable`),
/// which is what go-grpc-prometheus dashboards expect.
fn status_code_name(headers: &http::HeaderMap) -> Cow<'static, str> {
    let code = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .unwrap_or(0);
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => Cow::Borrowed("OK"),
        other => Cow::Owned(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            service_and_method("/keel.v1.ServingService/Query"),
            ("keel.v1.ServingService", "Query")
        );
        assert_eq!(service_and_method("/odd"), ("odd", ""));
    }

    #[test]
    fn the_status_header_names_the_code() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_code_name(&headers), "OK");
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(status_code_name(&headers), "NotFound");
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(status_code_name(&headers), "Unavailable");
    }
}

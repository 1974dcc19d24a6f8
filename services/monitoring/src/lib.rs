//! keel-monitoring: the inference log (every served request with its
//! response, latency, tokens and served version), the per-version metrics
//! computed from it, and the trace store (spans any OpenTelemetry SDK
//! exports over OTLP gRPC or HTTP, searchable by endpoint, model, duration
//! and status).

pub mod api;
pub mod config;
pub mod error;
pub mod http;
pub mod inferences;
pub mod metrics;
pub mod otlp;
pub mod rpc_status;
pub mod span_writer;
pub mod store;
pub mod traces;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_core::metrics::ServiceMetrics;
use keel_core::{CancellationToken, GrpcService, Listeners};
use keel_proto::v1::monitoring_service_server::MonitoringServiceServer;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
use tonic::codec::CompressionEncoding;

pub use config::Config;
pub use error::Error;

use crate::span_writer::{SpanCounters, SpanWriter};

/// The OTLP collector service this port serves beside MonitoringService.
pub const OTLP_TRACE_SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";

/// Serves the monitoring service on `listeners` until `shutdown` is
/// cancelled. `config.database_url` must be set.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let store = keel_store::Store::open(&config.database_url, store::MIGRATIONS).await?;
    let log = inferences::InferenceLog::new(store.clone());
    let (writer, writer_task) = SpanWriter::spawn(store.clone(), span_writer::QUEUE_CALLS);
    let records_stored = log.records_stored();
    let service_metrics = ServiceMetrics::new("monitoring");
    register_counters(&service_metrics, records_stored, writer.counters())?;
    let monitoring = MonitoringServiceServer::new(api::MonitoringApi::new(
        log,
        traces::TraceStore::new(store.clone()),
    ));
    let otlp_traces = TraceServiceServer::new(api::OtlpTraceApi::new(writer.clone()))
        .max_decoding_message_size(http::MAX_BODY_BYTES)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let service = GrpcService {
        name: "monitoring",
        grpc_names: vec!["keel.v1.MonitoringService", OTLP_TRACE_SERVICE],
        routes: tonic::service::Routes::new(monitoring).add_service(otlp_traces),
        store: Some(store.clone()),
        extra_descriptor_sets: vec![keel_proto::OTLP_FILE_DESCRIPTOR_SET],
        metrics: service_metrics,
    };
    let served = keel_core::run_service(service, http::router(writer), listeners, shutdown).await;
    // The servers are gone with every writer handle: the writer commits
    // what was queued and stops, before the pool closes under it.
    if let Err(error) = writer_task.await {
        tracing::error!(error = %error, "span writer failed");
    }
    store.close().await;
    served?;
    Ok(())
}

/// The counts monitoring keeps itself, on `/metrics`.
fn register_counters(
    registry: &ServiceMetrics,
    records_stored: Arc<AtomicU64>,
    spans: Arc<SpanCounters>,
) -> Result<(), keel_core::metrics::MetricsError> {
    registry.counter_fn(
        "keel_monitoring_records_stored_total",
        "Inference records stored since the process started.",
        move || records_stored.load(Ordering::Relaxed),
    )?;
    let stored = spans.clone();
    registry.counter_fn(
        "keel_monitoring_spans_stored_total",
        "Spans stored since the process started.",
        move || stored.stored.load(Ordering::Relaxed),
    )?;
    registry.counter_fn(
        "keel_monitoring_spans_rejected_total",
        "Spans refused for breaking an OTLP rule since the process started.",
        move || spans.rejected.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::SocketAddr;

    use keel_proto::v1 as pb;
    use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
    use tonic::transport::Channel;
    use tonic::Code;

    use super::*;
    use crate::inferences::tests::sample_record;

    struct Running {
        client: MonitoringServiceClient<Channel>,
        admin: SocketAddr,
        shutdown: CancellationToken,
        server: tokio::task::JoinHandle<Result<(), Error>>,
        _dir: tempfile::TempDir,
    }

    async fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            port: 0,
            database_url: keel_store::default_sqlite_url(dir.path(), "monitoring"),
        };
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_address = grpc.local_addr().unwrap();
        let admin_address = admin.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let listeners = Listeners {
            grpc,
            admin: Some(admin),
        };
        let server = tokio::spawn(serve(config, listeners, shutdown.clone()));
        let client = MonitoringServiceClient::connect(format!("http://{grpc_address}"))
            .await
            .unwrap();
        Running {
            client,
            admin: admin_address,
            shutdown,
            server,
            _dir: dir,
        }
    }

    /// A plain HTTP/1.1 GET, on a blocking thread (tests only).
    async fn http_get(address: SocketAddr, path: &str) -> String {
        let path = path.to_string();
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        })
        .await
        .unwrap()
    }

    fn wire_record(
        n: u128,
        endpoint: &str,
        started_at_ms: i64,
        latency_ms: f64,
    ) -> pb::InferenceRecord {
        let record = sample_record(n, endpoint, started_at_ms, latency_ms);
        pb::InferenceRecord {
            request_id: record.request_id.to_string(),
            trace_id: record.trace_id,
            span_id: record.span_id,
            endpoint: record.endpoint,
            route_target: record.route_target,
            served_model: record.served_model,
            served_version: record.served_version,
            user_id: record.user_id,
            session_id: record.session_id,
            question: record.question,
            input_messages: vec![pb::ChatMessage {
                role: "user".to_string(),
                content: "hi".to_string(),
            }],
            contexts: vec![pb::Citation {
                point_id: "doc-1".to_string(),
                score: 0.5,
                text: "passage".to_string(),
            }],
            prompt_messages: vec![],
            answer: record.answer,
            usage: Some(pb::TokenUsage {
                input_tokens: 12,
                output_tokens: 4,
            }),
            latency_ms,
            status: pb::InferenceStatus::Ok as i32,
            error: String::new(),
            started_at_ms,
            generator: "extractive".to_string(),
            finish_reason: pb::FinishReason::Stop as i32,
        }
    }

    fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, expected: &str) {
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(expected),
            "message {:?} should contain {expected:?}",
            status.message()
        );
    }

    #[tokio::test]
    async fn records_round_trip_and_metrics_over_grpc() {
        let mut running = start().await;
        let now = keel_core::time::now_ms();
        let mut records = Vec::new();
        for latency in 1..=100u32 {
            records.push(wire_record(
                u128::from(latency),
                "support",
                now - 1_000,
                f64::from(latency),
            ));
        }
        let stored = running
            .client
            .record_inferences(pb::RecordInferencesRequest {
                records: records.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stored;
        assert_eq!(stored, 100);
        // Re-sent: nothing new.
        let again = running
            .client
            .record_inferences(pb::RecordInferencesRequest {
                records: records[..3].to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.stored, 0);

        let fetched = running
            .client
            .get_inference(pb::GetInferenceRequest {
                request_id: records[4].request_id.to_uppercase(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fetched, records[4]);

        let unknown = uuid::Uuid::from_u128(999_999).to_string();
        let missing = running
            .client
            .get_inference(pb::GetInferenceRequest {
                request_id: unknown.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        assert!(missing.message().contains(&unknown));

        let batch = running
            .client
            .batch_get_inferences(pb::BatchGetInferencesRequest {
                request_ids: vec![
                    records[9].request_id.clone(),
                    unknown,
                    records[0].request_id.clone(),
                ],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(batch.records, vec![records[9].clone(), records[0].clone()]);

        let page = running
            .client
            .list_inferences(pb::ListInferencesRequest {
                endpoint: "support".to_string(),
                page_size: 60,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.records.len(), 60);
        // Same start time everywhere: ordered by request id, largest first.
        assert_eq!(page.records[0].request_id, records[99].request_id);
        let rest = running
            .client
            .list_inferences(pb::ListInferencesRequest {
                endpoint: "support".to_string(),
                page_size: 60,
                page_token: page.next_page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rest.records.len(), 40);
        assert_eq!(rest.records[39].request_id, records[0].request_id);
        assert!(rest.next_page_token.is_empty());

        let metrics = running
            .client
            .get_metrics(pb::GetMetricsRequest {
                endpoint: "support".to_string(),
                window_seconds: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(metrics.window_seconds, 3600);
        assert_eq!(metrics.versions.len(), 1);
        let version = &metrics.versions[0];
        assert_eq!(version.request_count, 100);
        assert_eq!(version.error_count, 0);
        assert_eq!(
            (
                version.latency_p50_ms,
                version.latency_p95_ms,
                version.latency_p99_ms
            ),
            (50.0, 95.0, 99.0)
        );
        assert_eq!(version.input_tokens, 1_200);
        let unknown_endpoint = running
            .client
            .get_metrics(pb::GetMetricsRequest {
                endpoint: "nobody".to_string(),
                window_seconds: 60,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(unknown_endpoint.versions.is_empty());

        let health = http_get(running.admin, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let exposition = http_get(running.admin, "/metrics").await;
        assert!(
            exposition
                .contains("keel_monitoring_records_stored_total{service=\"monitoring\"} 100\n"),
            "{exposition}"
        );

        running.shutdown.cancel();
        running.server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn bad_input_is_rejected_before_anything_is_stored() {
        let mut running = start().await;
        let client = &mut running.client;
        let good = wire_record(1, "support", 1_000, 5.0);

        let cases: Vec<(pb::InferenceRecord, &str)> = vec![
            (
                pb::InferenceRecord {
                    request_id: "not-a-uuid".to_string(),
                    ..good.clone()
                },
                "field `records[1].request_id`: must be a UUID",
            ),
            (
                pb::InferenceRecord {
                    endpoint: String::new(),
                    ..good.clone()
                },
                "field `records[1].endpoint`: must not be empty",
            ),
            (
                pb::InferenceRecord {
                    endpoint: "has space".to_string(),
                    ..good.clone()
                },
                "field `records[1].endpoint`: must match",
            ),
            (
                pb::InferenceRecord {
                    latency_ms: -1.0,
                    ..good.clone()
                },
                "field `records[1].latency_ms`: must be finite and >= 0",
            ),
            (
                pb::InferenceRecord {
                    latency_ms: f64::NAN,
                    ..good.clone()
                },
                "field `records[1].latency_ms`",
            ),
            (
                pb::InferenceRecord {
                    status: pb::InferenceStatus::Unspecified as i32,
                    ..good.clone()
                },
                "field `records[1].status`",
            ),
            (
                pb::InferenceRecord {
                    status: 42,
                    ..good.clone()
                },
                "field `records[1].status`",
            ),
            (
                pb::InferenceRecord {
                    started_at_ms: -5,
                    ..good.clone()
                },
                "field `records[1].started_at_ms`",
            ),
            (
                pb::InferenceRecord {
                    finish_reason: 9,
                    ..good.clone()
                },
                "field `records[1].finish_reason`",
            ),
        ];
        for (bad, expected) in cases {
            let valid_first = wire_record(2, "support", 1_000, 5.0);
            let result = client
                .record_inferences(pb::RecordInferencesRequest {
                    records: vec![valid_first, bad],
                })
                .await;
            assert_invalid(result, expected);
        }
        let too_many = vec![good.clone(); 1001];
        assert_invalid(
            client
                .record_inferences(pb::RecordInferencesRequest { records: too_many })
                .await,
            "field `records`: must hold at most 1000 records, got 1001",
        );
        // Nothing of the rejected batches was stored.
        let listed = client
            .list_inferences(pb::ListInferencesRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(listed.records.is_empty());

        assert_invalid(
            client
                .get_inference(pb::GetInferenceRequest {
                    request_id: "42".to_string(),
                })
                .await,
            "field `request_id`: must be a UUID, got \"42\"",
        );
        assert_invalid(
            client
                .batch_get_inferences(pb::BatchGetInferencesRequest {
                    request_ids: vec![],
                })
                .await,
            "field `request_ids`: must hold 1..=1000 ids, got 0",
        );
        assert_invalid(
            client
                .batch_get_inferences(pb::BatchGetInferencesRequest {
                    request_ids: vec![good.request_id.clone(), "x".to_string()],
                })
                .await,
            "field `request_ids[1]`: must be a UUID",
        );
        let list_cases: Vec<(pb::ListInferencesRequest, &str)> = vec![
            (
                pb::ListInferencesRequest {
                    since_ms: 2_000,
                    until_ms: 1_000,
                    ..Default::default()
                },
                "field `until_ms`: must be >= since_ms (2000), got 1000",
            ),
            (
                pb::ListInferencesRequest {
                    since_ms: -1,
                    ..Default::default()
                },
                "field `since_ms`",
            ),
            (
                pb::ListInferencesRequest {
                    page_size: 1001,
                    ..Default::default()
                },
                "field `page_size`: must be in 1..=1000, got 1001",
            ),
            (
                pb::ListInferencesRequest {
                    page_token: "garbage".to_string(),
                    ..Default::default()
                },
                "field `page_token`",
            ),
            (
                pb::ListInferencesRequest {
                    endpoint: "bad endpoint".to_string(),
                    ..Default::default()
                },
                "field `endpoint`",
            ),
        ];
        for (list, expected) in list_cases {
            assert_invalid(client.list_inferences(list).await, expected);
        }
        assert_invalid(
            client
                .get_metrics(pb::GetMetricsRequest {
                    endpoint: String::new(),
                    window_seconds: 60,
                })
                .await,
            "field `endpoint`: must not be empty",
        );
        assert_invalid(
            client
                .get_metrics(pb::GetMetricsRequest {
                    endpoint: "support".to_string(),
                    window_seconds: 2_592_001,
                })
                .await,
            "field `window_seconds`: must be in 1..=2592000, got 2592001",
        );
        running.shutdown.cancel();
        running.server.await.unwrap().unwrap();
    }
}

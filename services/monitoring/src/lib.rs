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
pub mod nats_intake;
pub mod otlp;
pub mod own_spans;
pub mod retention;
pub mod rpc_status;
pub mod span_encoding;
pub mod span_writer;
pub mod standalone;
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
    let nats_intake = config.nats_intake.then(|| {
        tokio::spawn(nats_intake::run(
            config.nats.clone(),
            log.clone(),
            writer.clone(),
            shutdown.clone(),
        ))
    });
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
    let own_spans = if config.store_own_spans {
        let sink = Arc::new(own_spans::WriterSink::new(writer.clone()));
        match keel_core::telemetry::add_sink("monitoring (in process)", sink) {
            Ok(destination) => Some(destination),
            Err(error) => {
                tracing::warn!(%error, "this process's spans will not be stored");
                None
            }
        }
    } else {
        None
    };
    let tls = config.tls.load()?;
    let auth = keel_core::auth::Auth::through_registry(&config.auth, &tls.client)?;
    let service = GrpcService {
        name: "monitoring",
        grpc_names: vec!["keel.v1.MonitoringService", OTLP_TRACE_SERVICE],
        routes: tonic::service::Routes::new(monitoring).add_service(otlp_traces),
        store: Some(store.clone()),
        extra_descriptor_sets: vec![keel_proto::OTLP_FILE_DESCRIPTOR_SET],
        metrics: service_metrics,
        cors_allowed_origins: Vec::new(),
        warmup: None,
        auth,
        tls: tls.server.clone(),
    };
    let retention = retention::Retention::new(
        store.clone(),
        config.inference_retention_ms,
        config.span_retention_ms,
        config.retention_batch,
    );
    let retention_job = retention.is_enabled().then(|| {
        tokio::spawn(keel_core::periodic::every(
            std::time::Duration::from_millis(config.retention_interval_ms.max(1)),
            shutdown.clone(),
            move || {
                let retention = retention.clone();
                async move {
                    if let Err(error) = retention.run_once(keel_core::time::now_ms()).await {
                        tracing::warn!(%error, "retention failed; it runs again next interval");
                    }
                }
            },
        ))
    });
    let served = keel_core::run_service(service, http::router(writer), listeners, shutdown).await;
    if let Some(intake) = nats_intake {
        if let Err(error) = intake.await {
            tracing::warn!(%error, "NATS intake task failed");
        }
    }
    if let Some(job) = retention_job {
        if let Err(error) = job.await {
            tracing::warn!(%error, "retention task failed");
        }
    }
    // The servers are gone with their writer handles; the sink's goes once
    // its queue is drained. Then the writer commits what was queued and
    // stops, before the pool closes under it.
    drop(own_spans);
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

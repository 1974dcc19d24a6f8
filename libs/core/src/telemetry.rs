//! Logs and traces. Logs go to stderr (`RUST_LOG`, as `target=level`
//! directives, overrides the default levels); spans go through
//! OpenTelemetry to the OTLP destinations in `[telemetry]` and to the trace
//! store of each Keel this process runs.
//!
//! The subscriber is process-wide, so it is installed once; a second
//! `init` keeps the first one's settings.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::jetstream::JetStreamConfig;
pub use crate::span_export::SpanDestination;
use crate::span_export::{SpanDestinations, SpanFanOut};
use crate::subscriber_filter;
use crate::trace_ids::TimeOrderedIds;

/// How spans leave a process: `[telemetry]` in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Off: no spans are made or exported (responses still carry a trace id).
    pub enabled: bool,
    /// The share of new traces kept, 0.0..=1.0. A caller's own sampling
    /// decision (the `traceparent` flag) is followed.
    pub sample_ratio: f64,
    /// Put prompts, answers and query texts on spans. Off by default: they
    /// may hold personal data, and the inference log keeps them anyway.
    pub record_content: bool,
    /// The longest a finished span waits for its batch to be exported.
    pub export_interval_ms: u64,
    /// Send spans to Keel's own trace store (monitoring): `keel up` wires
    /// its own; a service on its own uses `monitoring_url`.
    pub to_monitoring: bool,
    pub monitoring_url: String,
    /// Other OTLP destinations (Jaeger, Tempo, Phoenix, Langfuse, MLflow, a
    /// collector).
    pub exporters: Vec<ExporterConfig>,
    /// When set, spans that `monitoring_url` fails to take (monitoring or
    /// its span store down) are published to this NATS JetStream stream,
    /// which monitoring drains (`monitoring.nats_intake`): the stream the
    /// inference records take with `serving.inference_delivery = "nats"`.
    pub nats: Option<JetStreamConfig>,
}

impl Default for TelemetryConfig {
    fn default() -> TelemetryConfig {
        TelemetryConfig {
            enabled: true,
            sample_ratio: 1.0,
            record_content: false,
            export_interval_ms: 1000,
            to_monitoring: true,
            monitoring_url: "http://127.0.0.1:7105".to_string(),
            exporters: Vec::new(),
            nats: None,
        }
    }
}

impl TelemetryConfig {
    pub fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(format!(
                "telemetry.sample_ratio: must be in 0.0..=1.0, got {}",
                self.sample_ratio
            ));
        }
        if self.export_interval_ms == 0 {
            return Err("telemetry.export_interval_ms: must be positive".to_string());
        }
        for (index, exporter) in self.exporters.iter().enumerate() {
            if !exporter.endpoint.starts_with("http://")
                && !exporter.endpoint.starts_with("https://")
            {
                return Err(format!(
                    "telemetry.exporters[{index}].endpoint: must start with http:// or https://, got {:?}",
                    exporter.endpoint
                ));
            }
        }
        Ok(())
    }
}

/// One OTLP destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterConfig {
    pub protocol: OtlpProtocol,
    /// gRPC: the collector's address (`http://host:4317`). HTTP: the whole
    /// traces URL (`http://host:4318/v1/traces`).
    pub endpoint: String,
    /// Sent with every export, e.g. `authorization = "Basic …"` for Langfuse.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_export_timeout_ms")]
    pub timeout_ms: u64,
    /// PEM CA certificates to trust for an `https://` endpoint besides the
    /// public web roots (a collector whose certificate a private CA signed).
    #[serde(default)]
    pub ca_path: Option<PathBuf>,
}

impl ExporterConfig {
    /// Keel's own trace store: monitoring's gRPC port.
    /// `ca_path`: what the services trust (`[tls] ca_path`).
    pub fn keel_monitoring(grpc_url: &str, ca_path: Option<&Path>) -> ExporterConfig {
        ExporterConfig {
            protocol: OtlpProtocol::Grpc,
            endpoint: grpc_url.to_string(),
            headers: BTreeMap::new(),
            timeout_ms: default_export_timeout_ms(),
            ca_path: ca_path.map(Path::to_path_buf),
        }
    }
}

fn default_export_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid telemetry configuration: {0}")]
    Config(String),
    #[error("cannot start the span destination {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// What `init` installed, kept for the life of the process.
struct Installed {
    provider: Option<SdkTracerProvider>,
    destinations: SpanDestinations,
    record_content: bool,
    /// The configured exporters, registered once, never removed.
    _configured: Vec<SpanDestination>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The log levels when `RUST_LOG` is unset. llama.cpp logs every tensor
/// and setting of a model it loads at info level (target `llama-cpp-2`), and
/// the per-call gRPC events belong to traces, not logs.
const DEFAULT_LOG_FILTER: &str =
    "info,sqlx=warn,h2=warn,tower=warn,hyper=warn,llama-cpp-2=warn,otel::tracing=warn";
/// For commands whose own output tells the story (the demo).
const QUIET_LOG_FILTER: &str = "warn,llama-cpp-2=error,otel::tracing=error";

/// Installs logs only: for the CLI, whose calls start no traces.
pub fn init_logging() {
    let _already_installed = tracing_subscriber::registry()
        .with(subscriber_filter::callsites(
            subscriber_filter::log_levels(DEFAULT_LOG_FILTER),
            None,
        ))
        .with(log_layer())
        .try_init();
}

/// Installs logs and, when `config.enabled`, spans exported as
/// `service_name` to the configured OTLP destinations. Later calls change
/// nothing.
pub fn init(service_name: &str, config: &TelemetryConfig) -> Result<(), TelemetryError> {
    install(service_name, config, DEFAULT_LOG_FILTER)
}

/// `init`, logging only warnings unless `RUST_LOG` says otherwise.
pub fn init_quiet(service_name: &str, config: &TelemetryConfig) -> Result<(), TelemetryError> {
    install(service_name, config, QUIET_LOG_FILTER)
}

fn install(
    service_name: &str,
    config: &TelemetryConfig,
    default_log_filter: &str,
) -> Result<(), TelemetryError> {
    config.check().map_err(TelemetryError::Config)?;
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let resource = Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    let destinations = SpanDestinations::new(resource.clone());
    let mut configured = Vec::new();
    for exporter in &config.exporters {
        configured.push(destinations.add(exporter)?);
    }
    let provider = if config.enabled {
        Some(tracer_provider(resource, config, &destinations))
    } else {
        None
    };
    let installed = Installed {
        provider: provider.clone(),
        destinations,
        record_content: config.record_content,
        _configured: configured,
    };
    if INSTALLED.set(installed).is_err() {
        // Another thread won the race; its settings stand.
        return Ok(());
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // The layer's defaults add eight attributes to every span (source file,
    // module and line, thread id and name, target, busy and idle time) and
    // a clock read plus an OpenTelemetry context switch on every poll of an
    // instrumented future, all paid on every query. Parents and
    // propagation go through the tracing span tree, which needs none of
    // it.
    let span_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("keel"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
    });
    let spans = provider.map(|_| subscriber_filter::traced_spans(GRPC_SPAN_TARGET));
    let _already_installed = tracing_subscriber::registry()
        .with(subscriber_filter::callsites(
            subscriber_filter::log_levels(default_log_filter),
            spans,
        ))
        .with(log_layer())
        .with(span_layer)
        .try_init();
    Ok(())
}

fn tracer_provider(
    resource: Resource,
    config: &TelemetryConfig,
    destinations: &SpanDestinations,
) -> SdkTracerProvider {
    let batches = BatchConfigBuilder::default()
        .with_scheduled_delay(Duration::from_millis(config.export_interval_ms))
        .with_max_queue_size(16_384)
        .with_max_export_batch_size(1024)
        .build();
    let processor = BatchSpanProcessor::builder(SpanFanOut::new(destinations.clone()))
        .with_batch_config(batches)
        .build();
    SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_id_generator(TimeOrderedIds::default())
        .with_resource(resource)
        .build()
}

/// Log lines on stderr, of the events the subscriber's filter lets
/// through.
fn log_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'lookup> tracing_subscriber::registry::LookupSpan<'lookup>,
{
    subscriber_filter::EventsOnly(
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal()),
    )
}

/// The target of the spans `tonic-tracing-opentelemetry` makes per call.
const GRPC_SPAN_TARGET: &str = "otel::tracing";

/// Sends this process's spans also to `destination` until the returned
/// guard is dropped: how a standalone service reaches Keel's trace store.
/// A no-op when telemetry is not installed or disabled.
pub fn add_destination(destination: &ExporterConfig) -> Result<SpanDestination, TelemetryError> {
    match INSTALLED.get() {
        Some(installed) if installed.provider.is_some() => installed.destinations.add(destination),
        _ => Ok(SpanDestination::none()),
    }
}

/// As [`add_destination`], with what `destination` fails to take
/// published to the NATS JetStream stream of `fallback` instead.
pub fn add_destination_with_fallback(
    destination: &ExporterConfig,
    fallback: &JetStreamConfig,
) -> Result<SpanDestination, TelemetryError> {
    match INSTALLED.get() {
        Some(installed) if installed.provider.is_some() => installed
            .destinations
            .add_with_fallback(destination, fallback),
        _ => Ok(SpanDestination::none()),
    }
}

/// A trace store in this process that takes spans as the SDK hands them to
/// exporters, with no OTLP request built, encoded or sent: Keel's own
/// monitoring, when `keel up` runs it beside the services whose spans it
/// keeps.
pub trait SpanSink: Send + Sync + 'static {
    /// `service_name` is this process's. Resolves once the spans are
    /// stored; an error is logged and the batch is lost, as with a failed
    /// OTLP export.
    fn export(
        &self,
        service_name: &str,
        spans: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> futures::future::BoxFuture<'static, Result<(), String>>;
}

/// Sends this process's spans to `sink` too, until the guard is dropped.
/// Does nothing (an empty guard) when telemetry is off.
pub fn add_sink(
    name: &str,
    sink: std::sync::Arc<dyn SpanSink>,
) -> Result<SpanDestination, TelemetryError> {
    match INSTALLED.get() {
        Some(installed) if installed.provider.is_some() => {
            installed.destinations.add_sink(name, sink)
        }
        _ => Ok(SpanDestination::none()),
    }
}

/// Whether prompts and answers may be put on spans.
pub fn records_content() -> bool {
    INSTALLED
        .get()
        .map(|installed| installed.record_content)
        .unwrap_or(false)
}

/// The longest the end of a process waits for its last spans to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Exports the spans finished so far to every destination, waiting up to
/// five seconds: at the end of `main`. Blocking.
pub fn shutdown() {
    let Some(installed) = INSTALLED.get() else {
        return;
    };
    let Some(provider) = &installed.provider else {
        return;
    };
    if let Err(error) = provider.force_flush() {
        tracing::warn!(%error, "spans not flushed at shutdown");
    }
    installed.destinations.flush(FLUSH_TIMEOUT);
}

/// The trace and span ids of `span`, as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: String,
    pub span_id: String,
}

/// `None` when telemetry is off or `span` is disabled.
pub fn span_ids(span: &tracing::Span) -> Option<SpanIds> {
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    if !span_context.is_valid() {
        return None;
    }
    Some(SpanIds {
        trace_id: span_context.trace_id().to_string(),
        span_id: span_context.span_id().to_string(),
    })
}

/// The trace context a caller sent (`traceparent`, `tracestate`), for the
/// handlers whose own span is their call's server span: the tower layer
/// opens no span for those paths (see `grpc_tracing`), so the handler
/// continues the caller's trace itself, and one span stands for both the
/// call and the work.
#[derive(Debug, Clone, Default)]
pub struct CallerTrace(opentelemetry::Context);

impl CallerTrace {
    /// Read with the W3C propagator, whether or not telemetry is on: with
    /// it off no span continues the trace, yet an answer and its inference
    /// record should still carry the caller's trace id.
    pub fn from_headers(headers: &http::HeaderMap) -> CallerTrace {
        CallerTrace(TraceContextPropagator::new().extract(&HeaderExtractor(headers)))
    }

    /// `None` when the caller sent no valid `traceparent`.
    pub fn trace_id(&self) -> Option<String> {
        let span = self.0.span();
        let span_context = span.span_context();
        span_context
            .is_valid()
            .then(|| span_context.trace_id().to_string())
    }

    /// Makes `span`, just created and declared with `otel.kind =
    /// "server"`, the caller's span's child. When the caller sent no
    /// context the span keeps its place in this process's span tree (in a
    /// handler: a new trace's root). A no-op when telemetry is off.
    pub fn continue_in(&self, span: &tracing::Span) {
        // Every Query and Search passes here: no hex id just to test it.
        if self.0.span().span_context().is_valid() {
            // Fails only when no OpenTelemetry layer is installed, where
            // there is no trace to continue.
            let _ = span.set_parent(self.0.clone());
        }
    }
}

struct HeaderExtractor<'h>(&'h http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_trace_id_is_read_from_traceparent() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(CallerTrace::from_headers(&headers).trace_id(), None);
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            CallerTrace::from_headers(&headers).trace_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        headers.insert("traceparent", "00-garbage-01".parse().unwrap());
        assert_eq!(CallerTrace::from_headers(&headers).trace_id(), None);
    }

    #[test]
    fn defaults_export_everything_to_monitoring_without_content() {
        let config = TelemetryConfig::default();
        assert!(config.enabled && config.to_monitoring);
        assert_eq!(config.sample_ratio, 1.0);
        assert!(!config.record_content);
        assert_eq!(config.check(), Ok(()));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let ratio = TelemetryConfig {
            sample_ratio: 1.5,
            ..TelemetryConfig::default()
        };
        assert!(ratio
            .check()
            .unwrap_err()
            .starts_with("telemetry.sample_ratio"));
        let endpoint = TelemetryConfig {
            exporters: vec![ExporterConfig {
                protocol: OtlpProtocol::Grpc,
                endpoint: "collector:4317".to_string(),
                headers: BTreeMap::new(),
                timeout_ms: 1000,
                ca_path: None,
            }],
            ..TelemetryConfig::default()
        };
        assert!(endpoint
            .check()
            .unwrap_err()
            .starts_with("telemetry.exporters[0].endpoint"));
    }

    #[test]
    fn exporters_parse_from_toml() {
        let text = r#"
            sample_ratio = 0.25
            [[exporters]]
            protocol = "http/protobuf"
            endpoint = "https://cloud.langfuse.com/api/public/otel/v1/traces"
            headers = { authorization = "Basic abc" }
            [[exporters]]
            protocol = "grpc"
            endpoint = "http://127.0.0.1:4317"
        "#;
        let config: TelemetryConfig = toml::from_str(text).unwrap();
        assert_eq!(config.sample_ratio, 0.25);
        assert_eq!(config.exporters[0].protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(config.exporters[0].headers["authorization"], "Basic abc");
        assert_eq!(config.exporters[1].protocol, OtlpProtocol::Grpc);
        assert_eq!(config.exporters[1].timeout_ms, 10_000);
    }
}

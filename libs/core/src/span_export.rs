//! Where finished spans go: every destination registered at the time of the
//! export, an OTLP exporter or a sink in this process. The SDK's batch
//! processor runs on a thread of its own and hands each batch to
//! [`SpanFanOut`], which queues it for every destination. Each destination
//! exports its queue on its own task of the telemetry runtime (a thread of
//! its own, so exports never take a request's CPU slot and keep working
//! when the runtime that started them, a test's, has ended): a slow or dead
//! destination only fills, then drops from, its own queue, and never
//! delays the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use opentelemetry_otlp::{
    Protocol, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tokio::sync::mpsc;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use crate::jetstream::JetStreamConfig;
use crate::span_fallback::FallbackToJetStream;
use crate::telemetry::{ExporterConfig, OtlpProtocol, SpanSink, TelemetryError};
use crate::tls::ClientTls;

/// Batches waiting for one destination; beyond it the newest are dropped.
const QUEUED_BATCHES: usize = 16;

/// What a destination's task takes from its queue.
enum Queued {
    Batch(Vec<SpanData>),
    /// Answered once every batch queued before it has been exported (or
    /// failed): how a process sends its last spans before it exits.
    Flush(std::sync::mpsc::Sender<()>),
}

/// One destination's queue; its exporter lives in the task draining it.
struct Destination {
    id: u64,
    endpoint: String,
    batches: mpsc::Sender<Queued>,
    /// Batches dropped because the queue was full.
    dropped: AtomicU64,
}

/// The destinations spans are exported to; shared by the fan-out exporter
/// and whoever adds or removes destinations.
#[derive(Clone)]
pub(crate) struct SpanDestinations {
    inner: Arc<DestinationList>,
}

struct DestinationList {
    resource: Resource,
    next_id: AtomicU64,
    destinations: RwLock<Vec<Arc<Destination>>>,
}

impl SpanDestinations {
    /// `resource` (the process's `service.name`) goes with every export.
    pub(crate) fn new(resource: Resource) -> SpanDestinations {
        SpanDestinations {
            inner: Arc::new(DestinationList {
                resource,
                next_id: AtomicU64::new(1),
                destinations: RwLock::new(Vec::new()),
            }),
        }
    }

    pub(crate) fn add(&self, config: &ExporterConfig) -> Result<SpanDestination, TelemetryError> {
        let exporter = build_exporter(config, Retries::Otlp)?;
        let destination = self.add_exporter(&config.endpoint, exporter)?;
        tracing::info!(endpoint = %config.endpoint, protocol = ?config.protocol, "exporting spans");
        Ok(destination)
    }

    /// As `add`, with what the destination fails to take published to
    /// `fallback`'s stream instead.
    pub(crate) fn add_with_fallback(
        &self,
        config: &ExporterConfig,
        fallback: &JetStreamConfig,
    ) -> Result<SpanDestination, TelemetryError> {
        // No retries of its own: the fallback is the retry, and a batch
        // should reach it at once rather than after seconds of backoff.
        let primary = build_exporter(config, Retries::None)?;
        let exporter = FallbackToJetStream::new(primary, fallback.clone());
        let destination = self.add_exporter(&config.endpoint, exporter)?;
        tracing::info!(
            endpoint = %config.endpoint,
            protocol = ?config.protocol,
            fallback_url = %fallback.url,
            fallback_subject = %fallback.spans_subject(),
            "exporting spans, through NATS JetStream when the destination fails"
        );
        Ok(destination)
    }

    /// A destination in this process: `sink` takes the export requests as
    /// values, with no encoding and no network in between.
    pub(crate) fn add_sink(
        &self,
        name: &str,
        sink: Arc<dyn SpanSink>,
    ) -> Result<SpanDestination, TelemetryError> {
        let exporter = SinkExporter {
            sink,
            service_name: String::new(),
        };
        let destination = self.add_exporter(name, exporter)?;
        tracing::info!(destination = %name, "spans go to a sink in this process");
        Ok(destination)
    }

    /// `endpoint` names the destination in logs.
    fn add_exporter<E: SpanExporter + 'static>(
        &self,
        endpoint: &str,
        mut exporter: E,
    ) -> Result<SpanDestination, TelemetryError> {
        exporter.set_resource(&self.inner.resource);
        let runtime = export_runtime().map_err(|error| TelemetryError::Exporter {
            endpoint: endpoint.to_string(),
            reason: error.to_string(),
        })?;
        let (batches, queue) = mpsc::channel(QUEUED_BATCHES);
        runtime.spawn(export_queue(endpoint.to_string(), exporter, queue));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let destination = Arc::new(Destination {
            id,
            endpoint: endpoint.to_string(),
            batches,
            dropped: AtomicU64::new(0),
        });
        let mut destinations = match self.inner.destinations.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        destinations.push(destination);
        Ok(SpanDestination {
            owner: Some((self.clone(), id)),
        })
    }

    fn remove(&self, id: u64) {
        let mut destinations = match self.inner.destinations.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        destinations.retain(|destination| destination.id != id);
    }

    /// Waits, up to `timeout`, until every destination has exported what
    /// is queued for it. Blocking: for the end of a process.
    pub(crate) fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut answers = Vec::new();
        for destination in self.snapshot() {
            let (answer, answered) = std::sync::mpsc::channel();
            let mut flush = Queued::Flush(answer);
            loop {
                match destination.batches.try_send(flush) {
                    Ok(()) => {
                        answers.push((destination.endpoint.clone(), answered));
                        break;
                    }
                    Err(mpsc::error::TrySendError::Full(returned)) if Instant::now() < deadline => {
                        flush = returned;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        }
        for (endpoint, answered) in answers {
            let left = deadline.saturating_duration_since(Instant::now());
            if answered.recv_timeout(left).is_err() {
                tracing::warn!(%endpoint, "spans not flushed in time");
            }
        }
    }

    fn snapshot(&self) -> Vec<Arc<Destination>> {
        match self.inner.destinations.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Spans go to a destination while its guard lives.
#[must_use = "spans stop going to the destination when this is dropped"]
pub struct SpanDestination {
    owner: Option<(SpanDestinations, u64)>,
}

impl SpanDestination {
    /// A guard for a destination that was never added (telemetry off).
    pub(crate) fn none() -> SpanDestination {
        SpanDestination { owner: None }
    }
}

impl Drop for SpanDestination {
    fn drop(&mut self) {
        if let Some((destinations, id)) = self.owner.take() {
            destinations.remove(id);
        }
    }
}

/// The exporter the batch processor calls: the batch goes to every
/// destination, concurrently, on the telemetry runtime.
#[derive(Clone)]
pub(crate) struct SpanFanOut {
    destinations: SpanDestinations,
}

impl SpanFanOut {
    pub(crate) fn new(destinations: SpanDestinations) -> SpanFanOut {
        SpanFanOut { destinations }
    }
}

impl std::fmt::Debug for SpanFanOut {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SpanFanOut")
    }
}

impl SpanExporter for SpanFanOut {
    /// Queues the batch for every destination and returns: the exports
    /// happen on the destinations' own tasks.
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let destinations = self.destinations.snapshot();
        let mut unsent = Some(batch);
        for (index, destination) in destinations.iter().enumerate() {
            // The last destination takes the batch itself, the others a copy.
            let copy = if index + 1 == destinations.len() {
                unsent.take()
            } else {
                unsent.clone()
            };
            let Some(spans) = copy else {
                break;
            };
            match destination.batches.try_send(Queued::Batch(spans)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let dropped = destination.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    // Every 100th, so a dead destination does not flood the log.
                    if dropped % 100 == 1 {
                        tracing::warn!(endpoint = %destination.endpoint, dropped, "span destination too slow, batches dropped");
                    }
                }
                // The destination was removed while this batch was on its way.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        Ok(())
    }
}

/// Exports one destination's batches in order until the destination is
/// removed (its sender dropped); the exporter goes with the task.
async fn export_queue<E: SpanExporter>(
    endpoint: String,
    exporter: E,
    mut queue: mpsc::Receiver<Queued>,
) {
    let mut failures: u64 = 0;
    while let Some(queued) = queue.recv().await {
        let batch = match queued {
            Queued::Batch(batch) => batch,
            Queued::Flush(answer) => {
                // The flusher may have given up waiting.
                let _ = answer.send(());
                continue;
            }
        };
        let spans = batch.len();
        if let Err(error) = exporter.export(batch).await {
            failures += 1;
            // The first failure, then every 100th: a destination down for
            // an hour is one line a minute and a half, not one a second.
            if failures % 100 == 1 {
                tracing::warn!(%endpoint, %error, spans, failures, "span export failed");
            }
        }
    }
}

/// Hands batches to a [`SpanSink`] as the SDK made them.
struct SinkExporter {
    sink: Arc<dyn SpanSink>,
    /// The resource's `service.name`.
    service_name: String,
}

impl std::fmt::Debug for SinkExporter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SinkExporter")
    }
}

impl SpanExporter for SinkExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.sink
            .export(&self.service_name, batch)
            .await
            .map_err(OTelSdkError::InternalFailure)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.service_name = resource
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .map(|name| name.to_string())
            .unwrap_or_default();
    }
}

/// The runtime exports run on, started on first use and kept for the life
/// of the process.
fn export_runtime() -> Result<&'static tokio::runtime::Runtime, &'static std::io::Error> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, std::io::Error>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("keel-span-export")
                .enable_all()
                .build()
        })
        .as_ref()
}

/// Whether an exporter retries a failed export itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retries {
    /// OpenTelemetry's recommended policy: 3 retries with backoff.
    Otlp,
    None,
}

fn build_exporter(
    config: &ExporterConfig,
    retries: Retries,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let failed = |reason: String| TelemetryError::Exporter {
        endpoint: config.endpoint.clone(),
        reason,
    };
    let runtime = export_runtime().map_err(|error| failed(error.to_string()))?;
    // The gRPC exporter's channel starts its connection task on the
    // runtime current when it is built: make that the telemetry runtime.
    let _on_export_runtime = runtime.enter();
    let timeout = Duration::from_millis(config.timeout_ms);
    let trusted = match &config.ca_path {
        Some(path) => ClientTls::trusting_pem_file(path, "ca_path")
            .map_err(|error| failed(error.to_string()))?,
        None => ClientTls::public_roots(),
    };
    let https = config.endpoint.starts_with("https://");
    crate::crypto::install_default_tls_provider();
    let built = match config.protocol {
        OtlpProtocol::Grpc => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(timeout)
                .with_metadata(metadata(&config.headers).map_err(failed)?)
                .with_retry_policy(retry_policy(retries));
            if https {
                builder = builder.with_tls_config(trusted.tonic_config());
            }
            builder.build()
        }
        OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
            let protocol = if config.protocol == OtlpProtocol::HttpJson {
                Protocol::HttpJson
            } else {
                Protocol::HttpBinary
            };
            let headers: HashMap<String, String> = config
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            let mut client = reqwest::Client::builder().timeout(timeout);
            for ca in trusted.extra_cas() {
                let ca = reqwest::Certificate::from_der(ca)
                    .map_err(|error| failed(format!("ca_path: {error}")))?;
                client = client.add_root_certificate(ca);
            }
            let client = client.build().map_err(|error| failed(error.to_string()))?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_endpoint(config.endpoint.clone())
                .with_protocol(protocol)
                .with_timeout(timeout)
                .with_headers(headers)
                .with_retry_policy(retry_policy(retries))
                .build()
        }
    };
    built.map_err(|error| failed(error.to_string()))
}

fn retry_policy(retries: Retries) -> RetryPolicy {
    match retries {
        Retries::Otlp => RetryPolicy::default(),
        Retries::None => RetryPolicy::disabled(),
    }
}

fn metadata(headers: &std::collections::BTreeMap<String, String>) -> Result<MetadataMap, String> {
    let mut metadata = MetadataMap::new();
    for (name, value) in headers {
        let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("header {name:?} is not a valid gRPC metadata name"))?;
        let ascii_value = MetadataValue::try_from(value.as_str())
            .map_err(|_| format!("the value of header {name:?} is not valid ASCII"))?;
        metadata.insert(key, ascii_value);
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_become_grpc_metadata() {
        let mut headers = std::collections::BTreeMap::new();
        headers.insert("Authorization".to_string(), "Basic abc".to_string());
        let built = metadata(&headers).unwrap();
        assert_eq!(built.get("authorization").unwrap(), "Basic abc");
        headers.insert("bad header".to_string(), "x".to_string());
        assert!(metadata(&headers).unwrap_err().contains("bad header"));
    }

    #[test]
    fn a_removed_destination_gets_no_more_spans() {
        let destinations = SpanDestinations::new(Resource::builder_empty().build());
        let config = ExporterConfig {
            protocol: OtlpProtocol::Grpc,
            endpoint: "http://127.0.0.1:1".to_string(),
            headers: Default::default(),
            timeout_ms: 100,
            ca_path: None,
        };
        let first = destinations.add(&config).unwrap();
        let second = destinations.add(&config).unwrap();
        assert_eq!(destinations.snapshot().len(), 2);
        drop(first);
        assert_eq!(destinations.snapshot().len(), 1);
        drop(second);
        assert!(destinations.snapshot().is_empty());
    }
}

//! Where finished spans go: every OTLP destination registered at the time of
//! the export. The SDK's batch processor runs on a thread of its own and
//! hands each batch to [`SpanFanOut`], which exports it to all destinations
//! at once on the telemetry runtime: a thread of its own too, so exports
//! never take a request's CPU slot on the service runtime, and keep working
//! when the runtime that started them (a test's) has ended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use crate::telemetry::{ExporterConfig, OtlpProtocol, TelemetryError};

/// One OTLP exporter and the destination it was built for, for logs.
struct Destination {
    id: u64,
    endpoint: String,
    exporter: Arc<opentelemetry_otlp::SpanExporter>,
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
        let mut exporter = build_exporter(config)?;
        exporter.set_resource(&self.inner.resource);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let destination = Arc::new(Destination {
            id,
            endpoint: config.endpoint.clone(),
            exporter: Arc::new(exporter),
        });
        let mut destinations = match self.inner.destinations.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        destinations.push(destination);
        tracing::info!(endpoint = %config.endpoint, protocol = ?config.protocol, "exporting spans");
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
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let destinations = self.destinations.snapshot();
        if destinations.is_empty() {
            return Ok(());
        }
        let runtime =
            export_runtime().map_err(|error| OTelSdkError::InternalFailure(error.to_string()))?;
        let exports = runtime.spawn(async move {
            let mut pending = Vec::with_capacity(destinations.len());
            for destination in &destinations {
                let destination = destination.clone();
                let spans = batch.clone();
                pending.push(async move {
                    let result = destination.exporter.export(spans).await;
                    (destination, result)
                });
            }
            let mut failed = 0;
            for (destination, result) in futures::future::join_all(pending).await {
                if let Err(error) = result {
                    failed += 1;
                    tracing::warn!(endpoint = %destination.endpoint, %error, "span export failed");
                }
            }
            failed
        });
        match exports.await {
            Ok(0) => Ok(()),
            Ok(failed) => Err(OTelSdkError::InternalFailure(format!(
                "{failed} span destination(s) failed"
            ))),
            Err(error) => Err(OTelSdkError::InternalFailure(error.to_string())),
        }
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

fn build_exporter(
    config: &ExporterConfig,
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
    let built = match config.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(timeout)
            .with_metadata(metadata(&config.headers).map_err(failed)?)
            .build(),
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
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(config.endpoint.clone())
                .with_protocol(protocol)
                .with_timeout(timeout)
                .with_headers(headers)
                .build()
        }
    };
    built.map_err(|error| failed(error.to_string()))
}

fn metadata(headers: &std::collections::BTreeMap<String, String>) -> Result<MetadataMap, String> {
    let mut metadata = MetadataMap::new();
    for (name, value) in headers {
        let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("header {name:?} is not a valid gRPC metadata name"))?;
        let value = MetadataValue::try_from(value.as_str())
            .map_err(|_| format!("the value of header {name:?} is not valid ASCII"))?;
        metadata.insert(key, value);
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
        let metadata = metadata(&headers).unwrap();
        assert_eq!(metadata.get("authorization").unwrap(), "Basic abc");
        headers.insert("bad header".to_string(), "x".to_string());
        assert!(metadata_error(&headers).contains("bad header"));
    }

    fn metadata_error(headers: &std::collections::BTreeMap<String, String>) -> String {
        super::metadata(headers).unwrap_err()
    }

    #[test]
    fn a_removed_destination_gets_no_more_spans() {
        let destinations = SpanDestinations::new(Resource::builder_empty().build());
        let config = ExporterConfig {
            protocol: OtlpProtocol::Grpc,
            endpoint: "http://127.0.0.1:1".to_string(),
            headers: Default::default(),
            timeout_ms: 100,
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

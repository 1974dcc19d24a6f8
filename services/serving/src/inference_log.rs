//! Inference records leave serving off the request path. By default a
//! query appends its record to a local spill log (`keel-spill`): durable
//! within one commit window, kept through monitoring outages and serving
//! crashes, and delivered from disk by [`DeliveryWorker`]. With
//! `inference_log = "memory"` records wait in a bounded in-memory queue
//! instead, lost on a crash; it stays as the baseline the spill log's cost
//! is measured against. Either way `record` never waits, and what is
//! refused is counted, never silently lost.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_spill::{SpillAppender, SpillReader, SpillSettings};
use keel_types::InferenceRecord;
use prost::Message;
use tokio::sync::mpsc;

use crate::config::{Config, InferenceLogKind};
use crate::inference_delivery::{DeliverySettings, DeliveryWorker, RecordSource};

/// What the delivery side counts, whichever log holds the records.
#[derive(Debug, Default)]
pub(crate) struct DeliveryCounters {
    pub delivered: AtomicU64,
    pub failed_delivery: AtomicU64,
    /// `memory` only.
    pub enqueued: AtomicU64,
    pub dropped_queue_full: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Records accepted by the log.
    pub enqueued: u64,
    /// Records monitoring acknowledged.
    pub delivered: u64,
    /// `memory`: records refused because the queue was full.
    pub dropped_queue_full: u64,
    /// `spill`: records refused because the log reached its disk budget.
    pub dropped_disk_budget: u64,
    /// `spill`: records lost to a failed disk write.
    pub lost_write_error: u64,
    /// Records monitoring refused as invalid (never retried).
    pub failed_delivery: u64,
    /// Records waiting for delivery.
    pub queue_depth: u64,
    /// `spill`: the log's size on disk.
    pub spill_bytes: u64,
    /// `spill`: records an earlier run left undelivered, found at start.
    pub recovered: u64,
    /// `spill`: torn tails (writes cut short by a crash) cut off at start.
    pub spill_torn_tails: u64,
}

/// The request path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct InferenceLog {
    sink: Sink,
    counters: Arc<DeliveryCounters>,
}

#[derive(Clone)]
enum Sink {
    Spill(SpillAppender),
    Memory(mpsc::Sender<InferenceRecord>),
}

/// Opens the configured log: for `spill`, recovers what an earlier run left
/// undelivered, which the worker then delivers first.
pub fn open(config: &Config) -> Result<(InferenceLog, DeliveryWorker), keel_spill::SpillError> {
    let counters = Arc::new(DeliveryCounters::default());
    let settings = DeliverySettings::from_config(config);
    let (sink, source) = match config.inference_log {
        InferenceLogKind::Spill => {
            let (appender, reader): (SpillAppender, SpillReader) =
                keel_spill::open(SpillSettings {
                    dir: PathBuf::from(&config.spill_dir),
                    commit_window: Duration::from_millis(config.spill_commit_window_ms),
                    segment_bytes: config.spill_segment_bytes,
                    disk_budget_bytes: config.spill_disk_budget_bytes,
                })?;
            (Sink::Spill(appender), RecordSource::Spill(reader))
        }
        InferenceLogKind::Memory => {
            let (sender, receiver) = mpsc::channel(config.inference_queue_capacity.max(1));
            (Sink::Memory(sender), RecordSource::Memory(receiver))
        }
    };
    let log = InferenceLog {
        sink,
        counters: counters.clone(),
    };
    Ok((log, DeliveryWorker::new(source, counters, settings)))
}

impl InferenceLog {
    pub fn record(&self, record: InferenceRecord) {
        match &self.sink {
            Sink::Spill(appender) => {
                let request_id = record.request_id;
                let bytes = pb::InferenceRecord::from(record).encode_to_vec();
                let appended = appender.append(bytes);
                if appended != keel_spill::Appended::Accepted {
                    tracing::debug!(%request_id, ?appended, "inference record not spilled");
                }
            }
            Sink::Memory(sender) => match sender.try_send(record) {
                Ok(()) => {
                    self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
                }
                // Closed only after shutdown began; counted with the
                // queue-full drops because it, too, never entered the queue.
                Err(
                    mpsc::error::TrySendError::Full(record)
                    | mpsc::error::TrySendError::Closed(record),
                ) => {
                    self.counters
                        .dropped_queue_full
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(request_id = %record.request_id, "inference queue full, record dropped");
                }
            },
        }
    }

    /// At shutdown, after the last query: the spill log commits what it
    /// holds; later records are refused and counted.
    pub async fn close(&self) {
        if let Sink::Spill(appender) = &self.sink {
            appender.close().await;
        }
    }

    pub fn stats(&self) -> DeliveryStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let delivered = read(&self.counters.delivered);
        let failed_delivery = read(&self.counters.failed_delivery);
        match &self.sink {
            Sink::Spill(appender) => {
                let spill = appender.stats();
                DeliveryStats {
                    enqueued: spill.appended,
                    delivered,
                    dropped_queue_full: 0,
                    dropped_disk_budget: spill.dropped_disk_budget + spill.dropped_closed,
                    lost_write_error: spill.dropped_write_error,
                    failed_delivery,
                    // Appended and not yet written count as waiting too.
                    // Counted by this worker, not the log's acknowledgements,
                    // so it agrees with `delivered` at every moment.
                    queue_depth: (spill.recovered + spill.appended)
                        .saturating_sub(delivered + failed_delivery + spill.dropped_write_error),
                    spill_bytes: spill.disk_bytes,
                    recovered: spill.recovered,
                    spill_torn_tails: spill.torn_tails,
                }
            }
            Sink::Memory(_) => {
                let enqueued = read(&self.counters.enqueued);
                DeliveryStats {
                    enqueued,
                    delivered,
                    dropped_queue_full: read(&self.counters.dropped_queue_full),
                    failed_delivery,
                    // The worker may count a record before `record` does.
                    queue_depth: enqueued.saturating_sub(delivered + failed_delivery),
                    ..DeliveryStats::default()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use keel_testkit::fakes::FakeMonitoring;
    use keel_types::{FinishReason, InferenceStatus, RequestId};
    use tokio_util::sync::CancellationToken;

    use crate::record_sink::RecordSink;

    use super::*;

    fn memory_config(capacity: usize) -> Config {
        Config {
            inference_log: InferenceLogKind::Memory,
            inference_queue_capacity: capacity,
            inference_batch_size: 4,
            inference_flush_interval_ms: 20,
            delivery_timeout_ms: 500,
            ..Config::default()
        }
    }

    fn record(index: usize) -> InferenceRecord {
        InferenceRecord {
            request_id: RequestId::from_uuid(uuid::Uuid::from_u128(index as u128)),
            trace_id: String::new(),
            span_id: String::new(),
            endpoint: "support".to_string(),
            route_target: String::new(),
            served_model: String::new(),
            served_version: 0,
            user_id: String::new(),
            session_id: String::new(),
            question: String::new(),
            input_messages: Vec::new(),
            contexts: Vec::new(),
            prompt_messages: Vec::new(),
            answer: String::new(),
            input_tokens: 0,
            output_tokens: 0,
            latency_ms: 0.0,
            status: InferenceStatus::Ok,
            error: String::new(),
            started_at_ms: 0,
            generator: String::new(),
            finish_reason: FinishReason::Unspecified,
            shadow_of: None,
            cache_hit: keel_types::CacheHit::None,
            guardrails: Vec::new(),
        }
    }

    async fn wait_for(log: &InferenceLog, condition: impl Fn(&DeliveryStats) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !condition(&log.stats()) {
            assert!(
                std::time::Instant::now() < deadline,
                "stats never matched: {:?}",
                log.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn the_memory_queue_delivers_in_order_in_batches() {
        let monitoring = FakeMonitoring::start().await;
        let (log, worker) = open(&memory_config(100)).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker.run(
            RecordSink::monitoring(
                keel_core::channel::ServiceChannel::new(monitoring.channel(), None).unwrap(),
            ),
            shutdown.clone(),
        ));
        for index in 0..10 {
            log.record(record(index));
        }
        wait_for(&log, |stats| stats.delivered == 10).await;
        let ids: Vec<String> = monitoring
            .records()
            .into_iter()
            .map(|record| record.request_id)
            .collect();
        let expected: Vec<String> = (0..10)
            .map(|index| record(index).request_id.to_string())
            .collect();
        assert_eq!(ids, expected);
        assert!(monitoring.batch_sizes().iter().all(|size| *size <= 4));
        assert_eq!(log.stats().queue_depth, 0);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_memory_queue_drops_and_counts() {
        // No worker runs, so nothing leaves the queue.
        let (log, _worker) = open(&memory_config(2)).unwrap();
        for index in 0..5 {
            log.record(record(index));
        }
        let stats = log.stats();
        assert_eq!(
            (stats.enqueued, stats.dropped_queue_full, stats.queue_depth),
            (2, 3, 2)
        );
    }

    #[tokio::test]
    async fn shutdown_delivers_what_is_queued() {
        let monitoring = FakeMonitoring::start().await;
        let mut slow = memory_config(100);
        slow.inference_flush_interval_ms = 3_600_000;
        slow.inference_batch_size = 1000;
        let (log, worker) = open(&slow).unwrap();
        for index in 0..7 {
            log.record(record(index));
        }
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker.run(
            RecordSink::monitoring(
                keel_core::channel::ServiceChannel::new(monitoring.channel(), None).unwrap(),
            ),
            shutdown.clone(),
        ));
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(monitoring.records().len(), 7);
        assert_eq!(log.stats().delivered, 7);
    }

    #[tokio::test]
    async fn shutdown_while_a_batch_fills_still_delivers_it() {
        let monitoring = FakeMonitoring::start().await;
        let mut slow = memory_config(100);
        slow.inference_flush_interval_ms = 3_600_000;
        slow.inference_batch_size = 1000;
        let (log, worker) = open(&slow).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker.run(
            RecordSink::monitoring(
                keel_core::channel::ServiceChannel::new(monitoring.channel(), None).unwrap(),
            ),
            shutdown.clone(),
        ));
        for index in 0..3 {
            log.record(record(index));
        }
        // The worker has taken them and waits an hour for the batch to fill.
        wait_for(&log, |stats| stats.enqueued == 3).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(monitoring.records().len(), 3);
        assert_eq!(log.stats().delivered, 3);
    }
}

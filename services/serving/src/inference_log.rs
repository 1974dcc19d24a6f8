//! Inference records leave serving off the request path: queries hand them
//! to a bounded queue with `try_send` (never waiting), and one background
//! task ships them to monitoring in batches, with retries. What cannot be
//! queued or delivered is counted, not silently lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use keel_types::InferenceRecord;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::config::Config;

const RETRY_BACKOFF_START: Duration = Duration::from_millis(100);
const MAX_SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Counters {
    enqueued: AtomicU64,
    delivered: AtomicU64,
    dropped_queue_full: AtomicU64,
    failed_delivery: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryStats {
    pub enqueued: u64,
    pub delivered: u64,
    pub dropped_queue_full: u64,
    pub failed_delivery: u64,
    /// Enqueued, neither delivered nor given up yet.
    pub queue_depth: u64,
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub attempts: u32,
    pub attempt_timeout: Duration,
    /// How long shutdown may spend delivering what is still queued.
    pub shutdown_flush: Duration,
}

impl DeliverySettings {
    pub fn from_config(config: &Config) -> DeliverySettings {
        let attempt_timeout = Duration::from_millis(config.delivery_timeout_ms);
        DeliverySettings {
            queue_capacity: config.inference_queue_capacity.max(1),
            batch_size: config.inference_batch_size.max(1),
            flush_interval: Duration::from_millis(config.inference_flush_interval_ms),
            attempts: config.delivery_attempts.max(1),
            attempt_timeout,
            shutdown_flush: attempt_timeout
                .saturating_mul(config.delivery_attempts.max(1))
                .min(MAX_SHUTDOWN_FLUSH),
        }
    }
}

/// The request path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct InferenceLog {
    sender: mpsc::Sender<InferenceRecord>,
    counters: Arc<Counters>,
}

/// The background side; run it with [`DeliveryWorker::run`].
pub struct DeliveryWorker {
    receiver: mpsc::Receiver<InferenceRecord>,
    counters: Arc<Counters>,
    settings: DeliverySettings,
    /// Whether the last batch failed, so an outage is logged once, not per batch.
    failing: bool,
}

pub fn channel(settings: DeliverySettings) -> (InferenceLog, DeliveryWorker) {
    let (sender, receiver) = mpsc::channel(settings.queue_capacity.max(1));
    let counters = Arc::new(Counters::default());
    let log = InferenceLog {
        sender,
        counters: counters.clone(),
    };
    let worker = DeliveryWorker {
        receiver,
        counters,
        settings,
        failing: false,
    };
    (log, worker)
}

impl InferenceLog {
    pub fn record(&self, record: InferenceRecord) {
        match self.sender.try_send(record) {
            Ok(()) => {
                self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(record)) => {
                self.counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(request_id = %record.request_id, "inference queue full, record dropped");
            }
            Err(mpsc::error::TrySendError::Closed(record)) => {
                // Only after shutdown began; counted with the queue-full drops
                // because it, too, never entered the queue.
                self.counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(request_id = %record.request_id, "inference queue closed, record dropped");
            }
        }
    }

    pub fn stats(&self) -> DeliveryStats {
        let enqueued = self.counters.enqueued.load(Ordering::Relaxed);
        let delivered = self.counters.delivered.load(Ordering::Relaxed);
        let failed_delivery = self.counters.failed_delivery.load(Ordering::Relaxed);
        DeliveryStats {
            enqueued,
            delivered,
            dropped_queue_full: self.counters.dropped_queue_full.load(Ordering::Relaxed),
            failed_delivery,
            // The worker may count a record before `record` counts it.
            queue_depth: enqueued.saturating_sub(delivered + failed_delivery),
        }
    }
}

impl DeliveryWorker {
    /// Ships batches until `shutdown`, then delivers what is still queued
    /// within the shutdown flush deadline and returns.
    pub async fn run(mut self, channel: Channel, shutdown: CancellationToken) {
        let client = MonitoringServiceClient::new(channel);
        let batch_size = self.settings.batch_size;
        loop {
            let mut batch = Vec::with_capacity(batch_size);
            let received = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                received = self.receiver.recv_many(&mut batch, batch_size) => received,
            };
            if received == 0 {
                break;
            }
            // Wait a little for the batch to fill, but never longer than the
            // flush interval after its first record.
            let flush_at = Instant::now() + self.settings.flush_interval;
            while batch.len() < batch_size {
                let room = batch_size - batch.len();
                let more = tokio::select! {
                    _ = shutdown.cancelled() => 0,
                    _ = tokio::time::sleep_until(flush_at) => 0,
                    more = self.receiver.recv_many(&mut batch, room) => more,
                };
                if more == 0 {
                    break;
                }
            }
            self.deliver(&client, batch, None).await;
        }
        self.flush_on_shutdown(&client).await;
    }

    async fn flush_on_shutdown(&mut self, client: &MonitoringServiceClient<Channel>) {
        self.receiver.close();
        let give_up_at = Instant::now() + self.settings.shutdown_flush;
        loop {
            let mut batch = Vec::with_capacity(self.settings.batch_size);
            while batch.len() < self.settings.batch_size {
                match self.receiver.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_empty_or_closed) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            self.deliver(client, batch, Some(give_up_at)).await;
        }
    }

    /// Sends one batch, retrying with backoff; counts it delivered or failed.
    async fn deliver(
        &mut self,
        client: &MonitoringServiceClient<Channel>,
        batch: Vec<InferenceRecord>,
        give_up_at: Option<Instant>,
    ) {
        let count = batch.len() as u64;
        let request = pb::RecordInferencesRequest {
            records: batch.into_iter().map(pb::InferenceRecord::from).collect(),
        };
        let mut backoff = RETRY_BACKOFF_START;
        let mut last_error = String::new();
        for attempt in 1..=self.settings.attempts {
            if give_up_at.is_some_and(|deadline| Instant::now() >= deadline) {
                break;
            }
            let mut attempt_client = client.clone();
            let call = attempt_client.record_inferences(request.clone());
            match tokio::time::timeout(self.settings.attempt_timeout, call).await {
                Ok(Ok(_response)) => {
                    self.counters.delivered.fetch_add(count, Ordering::Relaxed);
                    if self.failing {
                        tracing::info!(records = count, "inference delivery recovered");
                        self.failing = false;
                    }
                    return;
                }
                Ok(Err(status)) => {
                    last_error = format!("{:?}: {}", status.code(), status.message());
                    // Monitoring refused the batch itself: sending it again
                    // cannot help.
                    if status.code() == tonic::Code::InvalidArgument {
                        break;
                    }
                }
                Err(_elapsed) => {
                    last_error = format!(
                        "no answer within {} ms",
                        self.settings.attempt_timeout.as_millis()
                    );
                }
            }
            tracing::debug!(attempt, records = count, error = %last_error, "inference delivery attempt failed");
            if attempt < self.settings.attempts {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
        }
        self.counters
            .failed_delivery
            .fetch_add(count, Ordering::Relaxed);
        if !self.failing {
            tracing::warn!(records = count, attempts = self.settings.attempts, error = %last_error, "inference delivery failed, batch given up");
            self.failing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use keel_types::{FinishReason, InferenceStatus, RequestId};

    use super::*;
    use keel_testkit::dead_address;
    use keel_testkit::fakes::FakeMonitoring;
    use std::time::Duration;

    fn settings(capacity: usize) -> DeliverySettings {
        DeliverySettings {
            queue_capacity: capacity,
            batch_size: 4,
            flush_interval: Duration::from_millis(20),
            attempts: 2,
            attempt_timeout: Duration::from_millis(500),
            shutdown_flush: Duration::from_secs(2),
        }
    }

    fn record(index: usize) -> InferenceRecord {
        InferenceRecord {
            request_id: request_id(index),
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
        }
    }

    fn request_id(index: usize) -> RequestId {
        RequestId::from_uuid(uuid::Uuid::from_u128(index as u128))
    }

    async fn wait_for(
        log: &InferenceLog,
        mut condition: impl FnMut(&DeliveryStats) -> bool,
    ) -> DeliveryStats {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let stats = log.stats();
            if condition(&stats) {
                return stats;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "stats never matched: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn delivers_every_record_in_batches() {
        let monitoring = FakeMonitoring::start().await;
        let (log, worker) = channel(settings(100));
        let shutdown = CancellationToken::new();
        let worker_task = tokio::spawn(worker.run(monitoring.channel(), shutdown.clone()));
        for index in 0..10 {
            log.record(record(index));
        }
        let stats = wait_for(&log, |stats| stats.delivered == 10).await;
        assert_eq!(stats.enqueued, 10);
        assert_eq!(stats.queue_depth, 0);
        assert_eq!(stats.failed_delivery, 0);
        let received = monitoring.records();
        let ids: Vec<String> = received
            .iter()
            .map(|record| record.request_id.clone())
            .collect();
        let expected: Vec<String> = (0..10).map(|index| request_id(index).to_string()).collect();
        assert_eq!(ids, expected);
        assert!(
            monitoring.batch_sizes().iter().all(|size| *size <= 4),
            "{:?}",
            monitoring.batch_sizes()
        );
        assert_eq!(received[0].status, pb::InferenceStatus::Ok as i32);
        shutdown.cancel();
        worker_task.await.unwrap();
    }

    #[tokio::test]
    async fn a_dead_monitoring_counts_failed_deliveries() {
        let (log, worker) = channel(settings(100));
        let shutdown = CancellationToken::new();
        let channel = crate::clients::lazy_channel(
            &format!("http://{}", dead_address()),
            Duration::from_millis(200),
        )
        .unwrap();
        let worker_task = tokio::spawn(worker.run(channel, shutdown.clone()));
        let started = std::time::Instant::now();
        for index in 0..6 {
            log.record(record(index));
        }
        // Handing records over never waits on the dead service.
        assert!(started.elapsed() < Duration::from_millis(100));
        let stats = wait_for(&log, |stats| stats.failed_delivery == 6).await;
        assert_eq!(stats.delivered, 0);
        assert_eq!(stats.queue_depth, 0);
        shutdown.cancel();
        worker_task.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        // No worker runs, so nothing leaves the queue.
        let (log, _worker) = channel(settings(2));
        for index in 0..5 {
            log.record(record(index));
        }
        assert_eq!(
            log.stats(),
            DeliveryStats {
                enqueued: 2,
                delivered: 0,
                dropped_queue_full: 3,
                failed_delivery: 0,
                queue_depth: 2,
            }
        );
    }

    #[tokio::test]
    async fn shutdown_flushes_what_is_queued() {
        let monitoring = FakeMonitoring::start().await;
        let mut slow_flush = settings(100);
        slow_flush.flush_interval = Duration::from_secs(3600);
        slow_flush.batch_size = 1000;
        let (log, worker) = channel(slow_flush);
        let shutdown = CancellationToken::new();
        for index in 0..7 {
            log.record(record(index));
        }
        let worker_task = tokio::spawn(worker.run(monitoring.channel(), shutdown.clone()));
        shutdown.cancel();
        worker_task.await.unwrap();
        assert_eq!(monitoring.records().len(), 7);
        assert_eq!(log.stats().delivered, 7);
        // After shutdown nothing more is accepted, and that is counted.
        log.record(record(8));
        assert_eq!(log.stats().dropped_queue_full, 1);
    }
}

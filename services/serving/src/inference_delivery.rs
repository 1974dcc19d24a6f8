//! Delivers inference records to monitoring in batches: from the spill log
//! (a batch is acknowledged there only once monitoring acknowledged it,
//! after its commit) or from the in-memory queue. A batch is retried with
//! exponential backoff for as long as monitoring is unreachable; monitoring
//! stores each request_id once, so a batch sent again after a lost answer
//! or a crash is harmless.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use keel_proto::v1 as pb;
use keel_spill::{BatchLimits, SpillReader};
use keel_types::InferenceRecord;
use prost::bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::config::Config;
use crate::inference_log::DeliveryCounters;
use crate::record_sink::RecordSink;

const RETRY_BACKOFF_START: Duration = Duration::from_millis(100);
const MAX_SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);
/// Under the 4 MiB a gRPC message may have by default.
const MAX_BATCH_BYTES: usize = 2 << 20;

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub attempt_timeout: Duration,
    pub max_backoff: Duration,
    /// How long shutdown may spend delivering what is still waiting; the
    /// spill log keeps the rest for the next start.
    pub shutdown_flush: Duration,
}

impl DeliverySettings {
    pub fn from_config(config: &Config) -> DeliverySettings {
        let attempt_timeout = Duration::from_millis(config.delivery_timeout_ms);
        DeliverySettings {
            batch_size: config.inference_batch_size.max(1),
            flush_interval: Duration::from_millis(config.inference_flush_interval_ms),
            attempt_timeout,
            max_backoff: Duration::from_millis(config.delivery_max_backoff_ms),
            shutdown_flush: attempt_timeout.saturating_mul(2).min(MAX_SHUTDOWN_FLUSH),
        }
    }
}

pub(crate) enum RecordSource {
    Spill(SpillReader),
    Memory(mpsc::Receiver<InferenceRecord>),
}

/// Records read from a source, each as its protobuf encoding, to be
/// acknowledged there once delivered.
struct Batch {
    records: Vec<Bytes>,
    spilled: Option<keel_spill::Batch>,
}

/// The background side; run it with [`DeliveryWorker::run`].
pub struct DeliveryWorker {
    source: RecordSource,
    counters: Arc<DeliveryCounters>,
    settings: DeliverySettings,
    /// Whether monitoring is failing now, so an outage is logged once.
    failing: bool,
}

/// What the next read from the source gave.
enum Fetched {
    Batch(Batch),
    /// The source is closed and everything was read.
    Closed,
    /// The stop token fired before a record came.
    Stopped,
}

/// Why a batch was not delivered.
enum Undelivered {
    /// The stop token fired first; the spill log keeps the batch.
    Stopped,
    /// Monitoring refused it as invalid: sending it again cannot help.
    Refused(Status),
}

impl DeliveryWorker {
    pub(crate) fn new(
        source: RecordSource,
        counters: Arc<DeliveryCounters>,
        settings: DeliverySettings,
    ) -> DeliveryWorker {
        DeliveryWorker {
            source,
            counters,
            settings,
            failing: false,
        }
    }

    /// Delivers until `shutdown`, then for at most the shutdown flush
    /// deadline delivers what is still waiting (close the log first, so
    /// that is everything) and returns.
    pub async fn run(mut self, sink: RecordSink, shutdown: CancellationToken) {
        // A batch taken from the source when shutdown came: it still goes
        // out in the flush below.
        let mut carried = None;
        loop {
            match self.next_batch(&shutdown).await {
                Fetched::Batch(batch) => {
                    if let Err(batch) = self.deliver(&sink, batch, &shutdown).await {
                        carried = Some(batch);
                        break;
                    }
                }
                Fetched::Closed => return,
                Fetched::Stopped => break,
            }
        }
        if let RecordSource::Memory(receiver) = &mut self.source {
            // What is queued now is all there will be.
            receiver.close();
        }
        let deadline = CancellationToken::new();
        let timer = tokio::spawn({
            let deadline = deadline.clone();
            let flush = self.settings.shutdown_flush;
            async move {
                tokio::time::sleep(flush).await;
                deadline.cancel();
            }
        });
        loop {
            let batch = match carried.take() {
                Some(batch) => batch,
                None => match self.next_batch(&deadline).await {
                    Fetched::Batch(batch) => batch,
                    Fetched::Closed => {
                        timer.abort();
                        return;
                    }
                    Fetched::Stopped => break,
                },
            };
            if let Err(batch) = self.deliver(&sink, batch, &deadline).await {
                if matches!(self.source, RecordSource::Memory(_)) {
                    // Nowhere keeps it.
                    self.counters
                        .failed_delivery
                        .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
                }
                break;
            }
        }
        let left = match &self.source {
            RecordSource::Spill(_) => "kept in the spill log for the next start",
            RecordSource::Memory(_) => "lost",
        };
        tracing::warn!("inference records still undelivered at shutdown: {left}");
    }

    /// The next batch, waiting for the first record and then up to the
    /// flush interval for it to fill. A `stop` before the first record
    /// ends the wait; after it, the records taken so far still go out.
    async fn next_batch(&mut self, stop: &CancellationToken) -> Fetched {
        let batch_size = self.settings.batch_size;
        match &mut self.source {
            RecordSource::Spill(reader) => {
                let limits = BatchLimits {
                    max_records: batch_size,
                    max_bytes: MAX_BATCH_BYTES,
                    linger: self.settings.flush_interval,
                };
                // Dropping a read loses nothing: what is not acknowledged
                // is read again.
                let read = tokio::select! {
                    _ = stop.cancelled() => return Fetched::Stopped,
                    read = reader.next_batch(limits) => read,
                };
                match read {
                    Ok(Some(mut spilled)) => Fetched::Batch(Batch {
                        // Sent as they are: see encoded_records.
                        records: std::mem::take(&mut spilled.records)
                            .into_iter()
                            .map(Bytes::from)
                            .collect(),
                        spilled: Some(spilled),
                    }),
                    Ok(None) => Fetched::Closed,
                    Err(error) => {
                        // The disk failed under the reader: try again later
                        // rather than spin.
                        tracing::error!(%error, "cannot read the spill log");
                        tokio::select! {
                            _ = stop.cancelled() => return Fetched::Stopped,
                            _ = tokio::time::sleep(self.settings.max_backoff) => {}
                        }
                        Fetched::Batch(Batch {
                            records: Vec::new(),
                            spilled: None,
                        })
                    }
                }
            }
            RecordSource::Memory(receiver) => {
                let mut records = Vec::with_capacity(batch_size);
                // recv_many takes nothing when it is dropped unfinished.
                let received = tokio::select! {
                    _ = stop.cancelled() => return Fetched::Stopped,
                    received = receiver.recv_many(&mut records, batch_size) => received,
                };
                if received == 0 {
                    return Fetched::Closed;
                }
                let flush_at = Instant::now() + self.settings.flush_interval;
                while records.len() < batch_size {
                    let room = batch_size - records.len();
                    let more = tokio::select! {
                        _ = stop.cancelled() => 0,
                        _ = tokio::time::sleep_until(flush_at) => 0,
                        more = receiver.recv_many(&mut records, room) => more,
                    };
                    if more == 0 {
                        break;
                    }
                }
                Fetched::Batch(Batch {
                    records: records
                        .into_iter()
                        .map(|record| {
                            Bytes::from(pb::InferenceRecord::from(record).encode_to_vec())
                        })
                        .collect(),
                    spilled: None,
                })
            }
        }
    }

    /// Sends `batch` until monitoring acknowledges it, then acknowledges it
    /// to its source. Hands the batch back when `stop` came first.
    async fn deliver(
        &mut self,
        sink: &RecordSink,
        batch: Batch,
        stop: &CancellationToken,
    ) -> Result<(), Batch> {
        let count = batch.records.len() as u64;
        let outcome = if batch.records.is_empty() {
            Ok(())
        } else {
            self.send(sink, &batch.records, stop).await
        };
        match outcome {
            Ok(()) => {
                self.counters.delivered.fetch_add(count, Ordering::Relaxed);
            }
            Err(Undelivered::Stopped) => return Err(batch),
            Err(Undelivered::Refused(status)) => {
                tracing::error!(records = count, code = ?status.code(), error = status.message(), "monitoring refused a batch of inference records");
                self.counters
                    .failed_delivery
                    .fetch_add(count, Ordering::Relaxed);
            }
        }
        if let (RecordSource::Spill(reader), Some(spilled)) = (&mut self.source, batch.spilled) {
            if let Err(error) = reader.acknowledge(spilled).await {
                tracing::error!(%error, "cannot record delivery in the spill log; the batch will be sent again");
            }
        }
        Ok(())
    }

    async fn send(
        &mut self,
        sink: &RecordSink,
        records: &[Bytes],
        stop: &CancellationToken,
    ) -> Result<(), Undelivered> {
        let attempt_timeout = self.settings.attempt_timeout;
        let count = records.len();
        let attempt = || {
            // Bytes: a clone copies no record.
            let records = records.to_vec();
            async move {
                match tokio::time::timeout(attempt_timeout, sink.send(records)).await {
                    Ok(answer) => answer,
                    Err(_elapsed) => Err(Status::deadline_exceeded(format!(
                        "no answer within {} ms",
                        attempt_timeout.as_millis()
                    ))),
                }
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(RETRY_BACKOFF_START)
            .with_max_delay(self.settings.max_backoff)
            .with_jitter()
            .without_max_times();
        let mut failing = self.failing;
        let retried = attempt
            .retry(backoff)
            .when(|status: &Status| status.code() != Code::InvalidArgument)
            .notify(|status: &Status, delay: Duration| {
                if !failing {
                    tracing::warn!(records = count, code = ?status.code(), error = status.message(), "monitoring unreachable, inference records wait and are retried");
                    failing = true;
                }
                tracing::debug!(?delay, "inference delivery retry");
            });
        let outcome = tokio::select! {
            outcome = retried => outcome,
            _ = stop.cancelled() => return Err(Undelivered::Stopped),
        };
        match outcome {
            Ok(()) => {
                if self.failing || failing {
                    tracing::info!("inference delivery recovered");
                }
                self.failing = false;
                Ok(())
            }
            Err(status) => {
                self.failing = failing;
                Err(Undelivered::Refused(status))
            }
        }
    }
}

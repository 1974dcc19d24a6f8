//! One task writes every span. Intake calls (OTLP over gRPC and HTTP) queue
//! their spans on a bounded channel; the writer commits everything queued
//! while the previous commit ran in one transaction (group commit: one
//! fsync for many exporters) and only then answers each call, so an export
//! is acknowledged once its spans are durable. A full queue is refused at
//! once rather than waited on: OTLP exporters retry later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use keel_store::Store;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::traces::{self, PreparedSpan};

/// Export calls that may wait for the writer at once.
pub const QUEUE_CALLS: usize = 256;

/// A group commit stops taking more calls past this many spans (one call is
/// never split: its spans commit together or not at all).
pub const MAX_GROUP_SPANS: usize = 4096;

/// Span counts `/metrics` reports.
#[derive(Debug, Default)]
pub struct SpanCounters {
    /// Spans newly stored since the process started.
    pub stored: AtomicU64,
    /// Spans refused for breaking a rule of OTLP.
    pub rejected: AtomicU64,
}

struct WriteCall {
    spans: Vec<PreparedSpan>,
    /// The store's error message when the spans could not be stored.
    done: oneshot::Sender<Result<(), String>>,
}

/// The intake side of the writer; clones share one writer task.
#[derive(Clone)]
pub struct SpanWriter {
    calls: mpsc::Sender<WriteCall>,
    counters: Arc<SpanCounters>,
}

impl SpanWriter {
    /// Starts the writer task. It stops once every `SpanWriter` clone is
    /// dropped and the calls already queued are written.
    pub fn spawn(store: Store, queue_calls: usize) -> (SpanWriter, JoinHandle<()>) {
        let (calls, receiver) = mpsc::channel(queue_calls.max(1));
        let counters = Arc::new(SpanCounters::default());
        let task = tokio::spawn(run(store, receiver, counters.clone()));
        (SpanWriter { calls, counters }, task)
    }

    pub fn counters(&self) -> Arc<SpanCounters> {
        self.counters.clone()
    }

    /// Calls waiting for the writer to take them.
    pub fn queued_calls(&self) -> usize {
        self.calls.max_capacity() - self.calls.capacity()
    }

    pub fn count_rejected(&self, spans: u64) {
        self.counters.rejected.fetch_add(spans, Ordering::Relaxed);
    }

    /// Returns once the spans are durable (a span stored before counts as
    /// stored).
    pub async fn write(&self, spans: Vec<PreparedSpan>) -> Result<(), Error> {
        self.submit(spans)?.wait().await
    }

    /// Queues the spans without waiting; refused at once when the queue is
    /// full.
    pub fn submit(&self, spans: Vec<PreparedSpan>) -> Result<PendingWrite, Error> {
        let (done, answer) = oneshot::channel();
        if spans.is_empty() {
            let _ = done.send(Ok(()));
            return Ok(PendingWrite { answer });
        }
        self.calls
            .try_send(WriteCall { spans, done })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => Error::SpanQueueFull {
                    queued_calls: self.calls.max_capacity(),
                },
                mpsc::error::TrySendError::Closed(_) => Error::SpanWriterStopped,
            })?;
        Ok(PendingWrite { answer })
    }
}

/// Queued spans, answered once the writer has committed them.
pub struct PendingWrite {
    answer: oneshot::Receiver<Result<(), String>>,
}

impl PendingWrite {
    pub async fn wait(self) -> Result<(), Error> {
        match self.answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(Error::SpansNotStored { message }),
            Err(_) => Err(Error::SpanWriterStopped),
        }
    }
}

async fn run(store: Store, mut calls: mpsc::Receiver<WriteCall>, counters: Arc<SpanCounters>) {
    let mut carried: Option<WriteCall> = None;
    loop {
        let first = match carried.take() {
            Some(call) => call,
            None => match calls.recv().await {
                Some(call) => call,
                None => break,
            },
        };
        let mut group_spans = first.spans.len();
        let mut group = vec![first];
        while group_spans < MAX_GROUP_SPANS {
            let Ok(call) = calls.try_recv() else {
                break;
            };
            if group_spans + call.spans.len() > MAX_GROUP_SPANS {
                carried = Some(call);
                break;
            }
            group_spans += call.spans.len();
            group.push(call);
        }
        commit_group(&store, group, &counters).await;
    }
    tracing::debug!("span writer stopped");
}

async fn commit_group(store: &Store, group: Vec<WriteCall>, counters: &SpanCounters) {
    let spans: Vec<&PreparedSpan> = group.iter().flat_map(|call| call.spans.iter()).collect();
    let error = match traces::write_spans(store, &spans).await {
        Ok(stored) => {
            counters.stored.fetch_add(stored, Ordering::Relaxed);
            for call in group {
                // The caller may have gone; its spans are stored all the same.
                let _ = call.done.send(Ok(()));
            }
            return;
        }
        Err(error) => error,
    };
    // A database that is down fails every call alike: retrying each one
    // alone would hold the writer for an acquire timeout per call.
    if group.len() == 1 || error.is_unavailable() {
        tracing::warn!(error = %error, spans = spans.len(), "spans not stored");
        for call in group {
            let _ = call.done.send(Err(error.to_string()));
        }
        return;
    }
    // One call's spans may be what failed the group: each call alone, so
    // the others are still stored.
    tracing::warn!(
        error = %error,
        calls = group.len(),
        spans = spans.len(),
        "span group commit failed, retrying each call alone"
    );
    for call in group {
        let call_spans: Vec<&PreparedSpan> = call.spans.iter().collect();
        let result = match traces::write_spans(store, &call_spans).await {
            Ok(stored) => {
                counters.stored.fetch_add(stored, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(error = %error, spans = call_spans.len(), "spans not stored");
                Err(error.to_string())
            }
        };
        let _ = call.done.send(result);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store;
    use crate::traces::tests::{prepare_spans, span};
    use crate::traces::{TraceFilter, TraceId, TraceStore};

    async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
        let url = keel_store::default_sqlite_url(dir.path(), "monitoring");
        Store::open(&url, store::MIGRATIONS).await.unwrap()
    }

    /// Waits for `condition`, failing the test after five seconds.
    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn trace_id(n: u128) -> TraceId {
        TraceId::parse("trace_id", &format!("{n:032x}")).unwrap()
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_queued_calls_are_answered_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let (writer, task) = SpanWriter::spawn(store.clone(), 1);
        // Holding SQLite's write lock keeps the writer inside its commit.
        let blocker = store.begin_write().await.unwrap();

        let first = writer
            .submit(prepare_spans(vec![span(1, 1, None, 10)]).unwrap())
            .unwrap();
        eventually("the writer to take the first call", || {
            writer.queued_calls() == 0
        })
        .await;
        let second = writer
            .submit(prepare_spans(vec![span(2, 1, None, 20), span(2, 2, Some(1), 30)]).unwrap())
            .unwrap();
        assert_eq!(writer.queued_calls(), 1);
        let refused = writer
            .write(prepare_spans(vec![span(3, 1, None, 30)]).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(refused, Error::SpanQueueFull { queued_calls: 1 }),
            "{refused:?}"
        );
        let first = tokio::spawn(first.wait());
        let second = tokio::spawn(second.wait());
        // Nothing is acknowledged before its commit.
        tokio::task::yield_now().await;
        assert!(!first.is_finished() && !second.is_finished());

        drop(blocker);
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        let counters = writer.counters();
        assert_eq!(counters.stored.load(Ordering::Relaxed), 3);
        let reader = TraceStore::new(store.clone());
        assert_eq!(reader.get(&trace_id(2)).await.unwrap().len(), 2);
        let refused_trace = reader.get(&trace_id(3)).await.unwrap_err();
        assert!(matches!(refused_trace, Error::TraceNotFound { .. }));

        // Every clone dropped: the writer finishes and stops.
        drop(writer);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_store_failure_answers_the_waiting_call() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let (writer, _task) = SpanWriter::spawn(store.clone(), 8);
        writer
            .write(prepare_spans(vec![span(1, 1, None, 10)]).unwrap())
            .await
            .unwrap();
        store.close().await;
        let failed = writer
            .write(prepare_spans(vec![span(1, 2, Some(1), 20)]).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(failed, Error::SpansNotStored { .. }), "{failed:?}");
        assert!(failed.is_unavailable());
    }

    #[tokio::test]
    async fn calls_of_one_group_sharing_spans_count_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let (writer, _task) = SpanWriter::spawn(store.clone(), 8);
        let blocker = store.begin_write().await.unwrap();
        // The first call keeps the writer busy while the next two queue;
        // then those two commit as one group.
        let busy = writer
            .submit(prepare_spans(vec![span(9, 9, None, 1)]).unwrap())
            .unwrap();
        eventually("the writer to take the first call", || {
            writer.queued_calls() == 0
        })
        .await;
        let second = writer
            .submit(prepare_spans(vec![span(1, 1, None, 10), span(1, 2, Some(1), 20)]).unwrap())
            .unwrap();
        let third = writer
            .submit(prepare_spans(vec![span(1, 2, Some(1), 20), span(1, 3, Some(1), 30)]).unwrap())
            .unwrap();
        assert_eq!(writer.queued_calls(), 2);
        drop(blocker);
        busy.wait().await.unwrap();
        second.wait().await.unwrap();
        third.wait().await.unwrap();
        assert_eq!(writer.counters().stored.load(Ordering::Relaxed), 4);
        let page = TraceStore::new(store)
            .search(&TraceFilter::default(), None, 10)
            .await
            .unwrap();
        let trace = page
            .traces
            .iter()
            .find(|summary| summary.trace_id == format!("{:032x}", 1))
            .unwrap();
        assert_eq!(trace.span_count, 3);
    }
}

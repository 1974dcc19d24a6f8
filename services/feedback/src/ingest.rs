//! Group commit for feedback: submissions wait in a queue, and one writer
//! takes every submission waiting (up to a group), looks their inference
//! records up in one call to monitoring, and stores the group in one
//! transaction, so a commit's fsync is shared by all of it. A submission
//! is answered only after its group committed: acknowledged feedback is
//! durable.

use std::collections::{HashMap, HashSet};

use keel_store::Store;
use keel_types::{FieldError, InferenceRecord, RequestId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::monitoring_client::MonitoringClient;
use crate::record::FeedbackRecord;
use crate::store::{self, FeedbackRow};

/// Submissions stored per transaction at most.
pub const MAX_GROUP: usize = 512;
/// Submissions waiting beyond this make callers wait to enqueue.
const QUEUE: usize = 4 * MAX_GROUP;

/// A new record and where its outcome goes.
struct Pending {
    record: FeedbackRecord,
    reply: oneshot::Sender<Result<Stored, Error>>,
}

/// What became of a submission.
#[derive(Debug)]
pub enum Stored {
    /// Stored as given (joined when its inference record was found).
    Inserted(FeedbackRecord),
    /// Another record holds its idempotency key: that one is the answer.
    KeyTaken(FeedbackRow),
}

#[derive(Clone)]
pub struct FeedbackIngest {
    queue: mpsc::Sender<Pending>,
}

/// The writer's side; run it with [`IngestWriter::run`].
pub struct IngestWriter {
    queue: mpsc::Receiver<Pending>,
    store: Store,
    monitoring: MonitoringClient,
}

impl FeedbackIngest {
    pub fn new(store: Store, monitoring: MonitoringClient) -> (FeedbackIngest, IngestWriter) {
        let (queue, received) = mpsc::channel(QUEUE);
        (
            FeedbackIngest { queue },
            IngestWriter {
                queue: received,
                store,
                monitoring,
            },
        )
    }

    /// Stores `record` (not joined yet) in the next group, joined when
    /// monitoring holds its inference record; answers once that group
    /// committed.
    pub async fn submit(&self, record: FeedbackRecord) -> Result<Stored, Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { record, reply })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }
}

impl IngestWriter {
    /// Stores groups until `stop`, then stores what is still queued and
    /// returns. `keep_records_until` says until when monitoring keeps the
    /// records joined now.
    pub async fn run(mut self, keep_records_until: impl Fn() -> i64, stop: CancellationToken) {
        loop {
            let mut group = Vec::with_capacity(MAX_GROUP);
            let received = tokio::select! {
                received = self.queue.recv_many(&mut group, MAX_GROUP) => received,
                _ = stop.cancelled() => {
                    self.queue.close();
                    0
                }
            };
            if received == 0 {
                // Closed: drain what was queued before the close.
                while self.queue.recv_many(&mut group, MAX_GROUP).await > 0 {
                    self.store_group(std::mem::take(&mut group), keep_records_until())
                        .await;
                }
                return;
            }
            self.store_group(group, keep_records_until()).await;
        }
    }

    async fn store_group(&self, group: Vec<Pending>, keep_until_ms: i64) {
        let request_ids: Vec<RequestId> = group
            .iter()
            .filter_map(|pending| pending.record.request_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        // Monitoring down or slow: the group is stored unjoined and the
        // join job finds the records later.
        let inferences: HashMap<RequestId, InferenceRecord> = if request_ids.is_empty() {
            HashMap::new()
        } else {
            match self
                .monitoring
                .batch_get_inferences(&request_ids, Some(keep_until_ms))
                .await
            {
                Ok(found) => found
                    .into_iter()
                    .map(|inference| (inference.request_id, inference))
                    .collect(),
                Err(Error::MonitoringUnavailable { .. }) => HashMap::new(),
                Err(error) => {
                    let message = error.to_string();
                    for pending in group {
                        let _ = pending.reply.send(Err(Error::Monitoring {
                            message: message.clone(),
                        }));
                    }
                    return;
                }
            }
        };
        let mut accepted = Vec::with_capacity(group.len());
        for mut pending in group {
            if let Some(inference) = pending
                .record
                .request_id
                .and_then(|request_id| inferences.get(&request_id))
            {
                if let Err(error) = check_passage(&pending.record, inference) {
                    let _ = pending.reply.send(Err(error.into()));
                    continue;
                }
                pending.record.endpoint = inference.endpoint.clone();
                pending.record.served_model = inference.served_model.clone();
                pending.record.served_version = inference.served_version;
                pending.record.joined = true;
            }
            accepted.push(pending);
        }
        if accepted.is_empty() {
            return;
        }
        let rows: Result<Vec<FeedbackRow>, Error> = accepted
            .iter()
            .map(|pending| crate::feedback::row_from_record(&pending.record))
            .collect();
        let inserted = match rows {
            Ok(rows) => store::insert_feedback_group(&self.store, &rows)
                .await
                .map_err(Error::from),
            Err(error) => Err(error),
        };
        let inserted = match inserted {
            Ok(inserted) => inserted,
            Err(error) => {
                let message = error.to_string();
                let unreachable = error.is_store_unavailable();
                for pending in accepted {
                    let _ = pending.reply.send(Err(Error::GroupFailed {
                        message: message.clone(),
                        unreachable,
                    }));
                }
                return;
            }
        };
        for pending in accepted {
            let outcome = if inserted.contains(&pending.record.id) {
                Ok(Stored::Inserted(pending.record))
            } else {
                self.key_holder(&pending.record).await
            };
            let _ = pending.reply.send(outcome);
        }
    }

    /// The record that holds `record`'s idempotency key.
    async fn key_holder(&self, record: &FeedbackRecord) -> Result<Stored, Error> {
        let key = &record.idempotency_key;
        match store::get_by_idempotency_key(&self.store, key).await? {
            Some(winner) => Ok(Stored::KeyTaken(winner)),
            None => Err(Error::CorruptRow {
                id: record.id.clone(),
                reason: format!("idempotency key {key:?} conflicted but no record holds it"),
            }),
        }
    }
}

/// RELEVANCE feedback must name a passage its request retrieved.
fn check_passage(record: &FeedbackRecord, inference: &InferenceRecord) -> Result<(), FieldError> {
    if record.passage_id.is_empty()
        || inference
            .contexts
            .iter()
            .any(|passage| passage.id == record.passage_id)
    {
        return Ok(());
    }
    Err(FieldError::new(
        "passage_id",
        format!(
            "must be one of the {} passages request {} retrieved, got {:?}",
            inference.contexts.len(),
            inference.request_id,
            record.passage_id
        ),
    ))
}

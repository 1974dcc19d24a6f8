//! Group commit for feedback: submissions wait in a queue, and one writer
//! takes every submission waiting (up to a group), looks their inference
//! records up in one call to monitoring, and stores the group in one
//! transaction, so a commit's fsync is shared by all of it. A submission
//! is answered only after its group committed: acknowledged feedback is
//! durable. A batch (SubmitFeedbackBatch) travels as one unit: stored in
//! one group, all of it or none. The next group's records are looked up
//! while this one commits.

use std::collections::{HashMap, HashSet};

use keel_store::Store;
use keel_types::{FieldError, InferenceRecord, RequestId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::monitoring_client::MonitoringClient;
use crate::record::FeedbackRecord;
use crate::store::{self, FeedbackRow};

/// Records stored per transaction at most, and the largest batch.
pub const MAX_GROUP: usize = 512;
/// Units waiting beyond this make callers wait to enqueue.
const QUEUE: usize = 4 * MAX_GROUP;

/// New records, stored together or not at all, and where the outcome goes.
struct Pending {
    records: Vec<FeedbackRecord>,
    /// From SubmitFeedbackBatch: errors name the item (`items[i].…`).
    batch: bool,
    reply: oneshot::Sender<Result<Vec<Stored>, Error>>,
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
        let mut stored = self.enqueue(vec![record], false).await?;
        stored.pop().ok_or(Error::ShuttingDown)
    }

    /// As `submit`, for a batch of at most MAX_GROUP records stored in one
    /// group, all or none; answers in their order.
    pub async fn submit_batch(&self, records: Vec<FeedbackRecord>) -> Result<Vec<Stored>, Error> {
        self.enqueue(records, true).await
    }

    async fn enqueue(
        &self,
        records: Vec<FeedbackRecord>,
        batch: bool,
    ) -> Result<Vec<Stored>, Error> {
        debug_assert!(records.len() <= MAX_GROUP);
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                records,
                batch,
                reply,
            })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }
}

impl IngestWriter {
    /// Stores groups until `stop`, then stores what is still queued and
    /// returns. `keep_records_until` says until when monitoring keeps the
    /// records joined now.
    ///
    /// Two stages run at once: while one group commits (its fsync), the
    /// next is formed and its inference records are looked up. Each stage
    /// mostly waits (on the disk, on monitoring), so running them one
    /// after the other left the callers waiting for both.
    pub async fn run(self, keep_records_until: impl Fn() -> i64, stop: CancellationToken) {
        let IngestWriter {
            mut queue,
            store,
            monitoring,
        } = self;
        // One joined group waits while another commits.
        let (joined, mut to_commit) = mpsc::channel::<Vec<Pending>>(1);
        let lookups = async move {
            loop {
                let first = tokio::select! {
                    first = queue.recv() => first,
                    _ = stop.cancelled() => {
                        queue.close();
                        None
                    }
                };
                let first = match first {
                    Some(first) => first,
                    // Closed: drain what was queued before the close.
                    None => match queue.recv().await {
                        Some(first) => first,
                        None => return,
                    },
                };
                let group = fill_group(&mut queue, first);
                let accepted = join_group(&monitoring, group, keep_records_until()).await;
                if !accepted.is_empty() && joined.send(accepted).await.is_err() {
                    return;
                }
            }
        };
        let commits = async {
            while let Some(accepted) = to_commit.recv().await {
                commit_group(&store, accepted).await;
            }
        };
        tokio::join!(lookups, commits);
    }
}

/// `first` and the units already waiting behind it, up to MAX_GROUP
/// records.
fn fill_group(queue: &mut mpsc::Receiver<Pending>, first: Pending) -> Vec<Pending> {
    let mut records = first.records.len();
    let mut group = vec![first];
    while records < MAX_GROUP {
        match queue.try_recv() {
            Ok(pending) => {
                records += pending.records.len();
                group.push(pending);
            }
            Err(_) => break,
        }
    }
    group
}

/// Looks the group's inference records up in one call and joins each unit
/// with them; answers the units refused (and the whole group when
/// monitoring refused the call) and returns the others.
async fn join_group(
    monitoring: &MonitoringClient,
    group: Vec<Pending>,
    keep_until_ms: i64,
) -> Vec<Pending> {
    let request_ids: Vec<RequestId> = group
        .iter()
        .flat_map(|pending| &pending.records)
        .filter_map(|record| record.request_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // Monitoring down or slow: the group is stored unjoined and the join
    // job finds the records later.
    let inferences: HashMap<RequestId, InferenceRecord> = if request_ids.is_empty() {
        HashMap::new()
    } else {
        match monitoring
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
                return Vec::new();
            }
        }
    };
    let mut accepted = Vec::with_capacity(group.len());
    for mut pending in group {
        match join_unit(&mut pending.records, pending.batch, &inferences) {
            Ok(()) => accepted.push(pending),
            Err(error) => {
                let _ = pending.reply.send(Err(error.into()));
            }
        }
    }
    accepted
}

/// Stores the joined units in one transaction and answers each.
async fn commit_group(store: &Store, accepted: Vec<Pending>) {
    let rows: Result<Vec<FeedbackRow>, Error> = accepted
        .iter()
        .flat_map(|pending| &pending.records)
        .map(crate::feedback::row_from_record)
        .collect();
    let inserted = match rows {
        Ok(rows) => store::insert_feedback_group(store, &rows)
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
        let mut outcomes = Vec::with_capacity(pending.records.len());
        let mut failed = None;
        for record in pending.records {
            if inserted.contains(&record.id) {
                outcomes.push(Stored::Inserted(record));
                continue;
            }
            match key_holder(store, &record).await {
                Ok(holder) => outcomes.push(holder),
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        let _ = pending.reply.send(match failed {
            Some(error) => Err(error),
            None => Ok(outcomes),
        });
    }
}

/// The record that holds `record`'s idempotency key.
async fn key_holder(store: &Store, record: &FeedbackRecord) -> Result<Stored, Error> {
    let key = &record.idempotency_key;
    match store::get_by_idempotency_key(store, key).await? {
        Some(winner) => Ok(Stored::KeyTaken(winner)),
        None => Err(Error::CorruptRow {
            id: record.id.clone(),
            reason: format!("idempotency key {key:?} conflicted but no record holds it"),
        }),
    }
}

/// Joins each record of a unit whose inference record was found; the
/// first RELEVANCE record naming a passage its request did not retrieve
/// refuses the whole unit (`items[i].` names it in a batch).
fn join_unit(
    records: &mut [FeedbackRecord],
    in_batch: bool,
    inferences: &HashMap<RequestId, InferenceRecord>,
) -> Result<(), FieldError> {
    // Each record's inference record, looked up once for both passes.
    let found: Vec<Option<&InferenceRecord>> = records
        .iter()
        .map(|record| record.request_id.and_then(|id| inferences.get(&id)))
        .collect();
    for (index, (record, inference)) in records.iter().zip(&found).enumerate() {
        let Some(inference) = inference else {
            continue;
        };
        check_passage(record, inference).map_err(|error| {
            if in_batch {
                FieldError::new(format!("items[{index}].{}", error.field), error.rule)
            } else {
                error
            }
        })?;
    }
    for (record, inference) in records.iter_mut().zip(found) {
        if let Some(inference) = inference {
            record.endpoint = inference.endpoint.clone();
            record.served_model = inference.served_model.clone();
            record.served_version = inference.served_version;
            record.joined = true;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keel_testkit::TestDatabase;

    use super::*;
    use crate::record::FeedbackKind;
    use crate::store::{list_feedback, ListQuery, MIGRATIONS};

    fn thumbs(n: usize) -> FeedbackRecord {
        FeedbackRecord {
            id: format!("f{n:03}"),
            request_id: Some(RequestId::from_uuid(uuid::Uuid::from_u128(n as u128 + 1))),
            session_id: String::new(),
            passage_id: String::new(),
            kind: FeedbackKind::Thumbs,
            value: 1.0,
            correction: String::new(),
            comment: String::new(),
            reason: String::new(),
            tags: Vec::new(),
            user_id: String::new(),
            idempotency_key: String::new(),
            created_at_ms: n as i64,
            endpoint: String::new(),
            served_model: String::new(),
            served_version: 0,
            joined: false,
        }
    }

    /// Monitoring where nothing listens: every lookup fails at once and
    /// groups are stored unjoined.
    fn unreachable_monitoring() -> MonitoringClient {
        let url = format!("http://{}", keel_testkit::dead_address());
        MonitoringClient::connect_lazy(
            &url,
            Duration::from_secs(1),
            None,
            &keel_core::tls::ClientTls::public_roots(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_stopped_writer_stores_and_answers_everything_queued_first() {
        let database = TestDatabase::sqlite();
        let store = database.open(MIGRATIONS).await;
        let (ingest, writer) = FeedbackIngest::new(store.clone(), unreachable_monitoring());
        // More than one group, so both stages hand work on while stopping.
        let submitted = MAX_GROUP + 100;
        let submits: Vec<_> = (0..submitted)
            .map(|n| {
                let ingest = ingest.clone();
                tokio::spawn(async move { ingest.submit(thumbs(n)).await })
            })
            .collect();
        while ingest.queue.max_capacity() - ingest.queue.capacity() < submitted {
            tokio::task::yield_now().await;
        }
        let stop = CancellationToken::new();
        stop.cancel();
        writer.run(|| 0, stop).await;

        for (n, submit) in submits.into_iter().enumerate() {
            match submit.await.unwrap() {
                Ok(Stored::Inserted(record)) => assert_eq!(record.id, format!("f{n:03}")),
                other => panic!("submission {n}: {other:?}"),
            }
        }
        let stored = list_feedback(
            &store,
            &ListQuery {
                limit: 10_000,
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(stored.len(), submitted);
        assert!(stored.iter().all(|row| row.joined_at_ms.is_none()));
    }
}

//! A bounded pool for generations: `workers` run at once on the blocking
//! thread pool, up to `queue` more wait, and the rest are refused at once so
//! an overloaded server sheds load instead of queueing without end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::error::Error;

#[derive(Clone)]
pub struct GenerationPool {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
}

/// Counts one waiting caller for as long as it lives, also when the caller
/// is cancelled while it waits.
struct WaitingSlot {
    waiting: Arc<AtomicUsize>,
}

impl Drop for WaitingSlot {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A worker held for one job.
pub struct GenerationSlot {
    permit: OwnedSemaphorePermit,
}

impl GenerationSlot {
    /// Runs `job` on the blocking pool; the worker is free again when it ends.
    pub async fn run<T, Job>(self, job: Job) -> Result<T, Error>
    where
        T: Send + 'static,
        Job: FnOnce() -> T + Send + 'static,
    {
        let permit = self.permit;
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        });
        task.await
            .map_err(|error| Error::Internal(format!("generation task failed: {error}")))
    }
}

impl GenerationPool {
    pub fn new(workers: usize, max_waiting: usize) -> GenerationPool {
        GenerationPool {
            permits: Arc::new(Semaphore::new(workers)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
        }
    }

    /// Runs `job` on the blocking pool once a worker is free.
    pub async fn run<T, Job>(&self, job: Job) -> Result<T, Error>
    where
        T: Send + 'static,
        Job: FnOnce() -> T + Send + 'static,
    {
        self.reserve().await?.run(job).await
    }

    /// Waits for a worker (or is refused at once when the queue is full)
    /// without running anything yet, so a streamed query learns it is
    /// refused before it sends its first event.
    pub async fn reserve(&self) -> Result<GenerationSlot, Error> {
        let permit = self.acquire().await?;
        Ok(GenerationSlot { permit })
    }

    async fn acquire(&self) -> Result<OwnedSemaphorePermit, Error> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => {
                return Err(Error::Internal("generation pool closed".to_string()))
            }
            Err(TryAcquireError::NoPermits) => {}
        }
        let previously_waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
        let slot = WaitingSlot {
            waiting: self.waiting.clone(),
        };
        if previously_waiting >= self.max_waiting {
            return Err(Error::ResourceExhausted(format!(
                "generation queue is full ({} waiting), retry later",
                self.max_waiting
            )));
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_closed| Error::Internal("generation pool closed".to_string()))?;
        drop(slot);
        Ok(permit)
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    async fn wait_until(mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "condition not met in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beyond_workers_and_queue_is_resource_exhausted() {
        let pool = GenerationPool::new(1, 1);
        let (release_sender, release_receiver) = std::sync::mpsc::channel::<()>();
        let (started_sender, started_receiver) = tokio::sync::oneshot::channel::<()>();
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(move || {
                    let _ = started_sender.send(());
                    let _ = release_receiver.recv();
                    1
                })
                .await
            }
        });
        started_receiver.await.unwrap();
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(|| 2).await }
        });
        wait_until(|| pool.waiting() == 1).await;

        let refused = pool.run(|| 3).await.unwrap_err();
        assert!(
            matches!(refused, Error::ResourceExhausted(_)),
            "{refused:?}"
        );
        let status = tonic::Status::from(refused);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);

        release_sender.send(()).unwrap();
        assert_eq!(busy.await.unwrap().unwrap(), 1);
        assert_eq!(queued.await.unwrap().unwrap(), 2);
        assert_eq!(pool.waiting(), 0);
        // Capacity is back once the burst is over.
        assert_eq!(pool.run(|| 4).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_frees_its_queue_slot() {
        let pool = GenerationPool::new(1, 1);
        let held = pool.permits.clone().acquire_owned().await.unwrap();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(|| ()).await }
        });
        wait_until(|| pool.waiting() == 1).await;
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(pool.waiting(), 0);
        drop(held);
        pool.run(|| ()).await.unwrap();
    }
}

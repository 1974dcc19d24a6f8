//! Threads that each own one llama.cpp context. A context borrows its model
//! and may not move between threads, so it lives on the stack of a thread
//! of its own; callers hand that thread jobs over a channel. Loading a
//! model once and reusing its contexts is what keeps requests at llama.cpp's
//! own speed.

use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use crate::ModelError;

/// What a worker thread starts with: the shared job queue, and the line on
/// which it reports whether its context could be created.
pub(crate) struct WorkerStart<Job> {
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    ready: mpsc::Sender<Result<(), ModelError>>,
}

impl<Job> WorkerStart<Job> {
    /// Reports whether the worker's context exists; `start_workers` waits
    /// for this from every worker.
    pub(crate) fn report_ready(&self, result: Result<(), ModelError>) {
        // The starter only stops listening when another worker already
        // failed, and then this worker's answer no longer matters.
        let _ = self.ready.send(result);
    }

    /// The next job, or `None` once the owner of the pool has gone away.
    pub(crate) fn next_job(&self) -> Option<Job> {
        let receiver = self.jobs.lock().ok()?;
        receiver.recv().ok()
    }
}

/// Starts `count` threads named `<thread_name>-<i>` running `body`, and
/// returns the job queue once every one of them reported its context ready
/// (or the first failure). Dropping the returned sender ends the threads.
pub(crate) fn start_workers<Job, Body>(
    thread_name: &str,
    count: usize,
    body: Body,
) -> Result<mpsc::Sender<Job>, ModelError>
where
    Job: Send + 'static,
    Body: Fn(WorkerStart<Job>) + Send + Sync + 'static,
{
    let (jobs_sender, jobs_receiver) = mpsc::channel();
    let jobs = Arc::new(Mutex::new(jobs_receiver));
    let body = Arc::new(body);
    let (ready_sender, ready_receiver) = mpsc::channel();
    for index in 0..count.max(1) {
        let start = WorkerStart {
            jobs: jobs.clone(),
            ready: ready_sender.clone(),
        };
        let worker_body = body.clone();
        thread::Builder::new()
            .name(format!("{thread_name}-{index}"))
            .spawn(move || worker_body(start))
            .map_err(|error| {
                ModelError::Backend(format!(
                    "cannot start thread {thread_name}-{index}: {error}"
                ))
            })?;
    }
    drop(ready_sender);
    for _ in 0..count.max(1) {
        match ready_receiver.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_disconnected) => {
                return Err(ModelError::Backend(format!(
                    "a {thread_name} thread stopped before its context was ready"
                )))
            }
        }
    }
    Ok(jobs_sender)
}

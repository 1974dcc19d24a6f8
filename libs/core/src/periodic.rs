//! Background jobs: run every interval until shutdown, and delete in
//! bounded batches so no transaction holds a lock for long.

use std::future::Future;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Runs `job` every `interval` (the first time at once) until `shutdown`;
/// a run that overruns delays the next instead of bunching them.
pub async fn every<F, Fut>(interval: Duration, shutdown: CancellationToken, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        job().await;
    }
}

/// Calls `delete_batch` (which deletes at most `batch` rows in one
/// transaction) until a call deletes fewer than `batch`; returns the total.
/// Yields between batches so other writers get the lock.
pub async fn delete_in_batches<F, Fut, E>(batch: u64, mut delete_batch: F) -> Result<u64, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, E>>,
{
    let mut total = 0;
    loop {
        let deleted = delete_batch().await?;
        total += deleted;
        if deleted < batch {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deletes_until_a_short_batch() {
        let mut left = 25_u64;
        let mut calls = 0;
        let total: Result<u64, ()> = delete_in_batches(10, || {
            calls += 1;
            let deleted = left.min(10);
            left -= deleted;
            async move { Ok(deleted) }
        })
        .await;
        assert_eq!((total, calls, left), (Ok(25), 3, 0));
    }

    #[tokio::test]
    async fn an_error_stops_the_batches() {
        let mut calls = 0;
        let total: Result<u64, &str> = delete_in_batches(10, || {
            calls += 1;
            let result = if calls == 2 { Err("down") } else { Ok(10) };
            async move { result }
        })
        .await;
        assert_eq!((total, calls), (Err("down"), 2));
    }

    #[tokio::test(start_paused = true)]
    async fn runs_every_interval_until_shutdown() {
        let shutdown = CancellationToken::new();
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = runs.clone();
        let job = tokio::spawn(every(Duration::from_secs(1), shutdown.clone(), move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {}
        }));
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        shutdown.cancel();
        job.await.unwrap();
        // At 0 s, 1 s and 2 s.
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}

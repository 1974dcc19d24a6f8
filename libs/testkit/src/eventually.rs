//! Waiting for something that happens off the request path (a record
//! delivered, an alias move seen) without sleeping a fixed time.

use std::time::{Duration, Instant};

/// What a probe returns: `Some(value)` or `true` once the condition holds.
pub trait Settled {
    /// What `eventually` hands back once settled.
    type Value;
    /// `Some` once the condition holds.
    fn settled(self) -> Option<Self::Value>;
}

impl<T> Settled for Option<T> {
    type Value = T;
    fn settled(self) -> Option<T> {
        self
    }
}

impl Settled for bool {
    type Value = ();
    fn settled(self) -> Option<()> {
        self.then_some(())
    }
}

/// Calls `probe` until it returns `Some` (or `true`) and returns the value;
/// panics naming `what` when `timeout` passes first. The pause between
/// probes is a polling interval, not synchronisation: the probe decides.
pub async fn eventually<S: Settled>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> S,
) -> S::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await.settled() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

//! What the load loops send: one request at a time, by number.

use std::future::Future;

/// Sends the load's requests; clones share their connections, so the loops
/// can hand one to each task.
pub trait Sender: Clone + Send + 'static {
    /// Sends request number `index` (numbers rotate through the workload's
    /// questions); the name of its failure when it failed, e.g.
    /// "Unavailable" or "HTTP 429".
    fn send(&mut self, index: u64) -> impl Future<Output = Option<String>> + Send;
}

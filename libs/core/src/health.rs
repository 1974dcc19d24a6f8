//! Honest health: a service is SERVING while its store answers and once it
//! has warmed up (the vector index loading its collections). A task pings
//! the store every second and moves gRPC health (every service name of the
//! port, and "") and the admin `/healthz` together.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_store::Store;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A store that has not answered `SELECT 1` by then counts as down: a
/// stopped Postgres otherwise keeps a ping waiting for the pool's whole
/// acquire timeout.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed pings in a row before the service says NOT_SERVING: a pool busy
/// for a second under load is not an outage. One success recovers.
pub const FAILURES_TO_NOT_SERVING: u32 = 3;

/// Whether the service can serve, as `/healthz` reads it.
#[derive(Clone, Debug)]
pub struct Readiness {
    serving: Arc<AtomicBool>,
}

impl Readiness {
    pub fn serving() -> Readiness {
        Readiness::new(true)
    }

    pub fn new(serving: bool) -> Readiness {
        Readiness {
            serving: Arc::new(AtomicBool::new(serving)),
        }
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    fn set(&self, serving: bool) -> bool {
        self.serving.swap(serving, Ordering::AcqRel) != serving
    }
}

/// A service that listens before it can answer: NOT_SERVING until
/// [`Warmup::finish`]. Clones share the state.
#[derive(Clone, Debug, Default)]
pub struct Warmup {
    done: Arc<AtomicBool>,
}

impl Warmup {
    pub fn pending() -> Warmup {
        Warmup::default()
    }

    pub fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// Whether a service with this optional warmup is warm.
pub fn is_warm(warmup: Option<&Warmup>) -> bool {
    warmup.is_none_or(Warmup::is_done)
}

/// Pings `store` (when there is one) and checks `warmup` every second until
/// `shutdown`, reporting each change of state.
pub async fn watch_health(
    service: &'static str,
    store: Option<Store>,
    warmup: Option<Warmup>,
    grpc_names: Vec<&'static str>,
    reporter: HealthReporter,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures_in_a_row: u32 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let reachable = match &store {
            None => Ok(()),
            Some(store) => match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_elapsed) => Err(format!("no answer within {} ms", PING_TIMEOUT.as_millis())),
            },
        };
        failures_in_a_row = match &reachable {
            Ok(()) => 0,
            Err(_) => failures_in_a_row.saturating_add(1),
        };
        let store_up = failures_in_a_row < FAILURES_TO_NOT_SERVING;
        let warm = is_warm(warmup.as_ref());
        if !readiness.set(store_up && warm) {
            continue;
        }
        let status = if store_up && warm {
            tracing::info!(service, "store reachable and warmed up, serving");
            ServingStatus::Serving
        } else if !store_up {
            let error = reachable.err().unwrap_or_default();
            tracing::warn!(service, %error, failures_in_a_row, "store unreachable, not serving");
            ServingStatus::NotServing
        } else {
            ServingStatus::NotServing
        };
        for name in &grpc_names {
            reporter.set_service_status(name, status).await;
        }
        reporter.set_service_status("", status).await;
    }
}

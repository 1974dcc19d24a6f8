//! Honest health: a service is SERVING while its store answers. A task
//! pings the store every second and moves gRPC health (every service name
//! of the port, and "") and the admin `/healthz` together.

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
        Readiness {
            serving: Arc::new(AtomicBool::new(true)),
        }
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    fn set(&self, serving: bool) -> bool {
        self.serving.swap(serving, Ordering::AcqRel) != serving
    }
}

/// Pings `store` until `shutdown`, reporting each change of state.
pub async fn watch_store(
    service: &'static str,
    store: Store,
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
        let reachable = match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_elapsed) => Err(format!("no answer within {} ms", PING_TIMEOUT.as_millis())),
        };
        failures_in_a_row = match &reachable {
            Ok(()) => 0,
            Err(_) => failures_in_a_row.saturating_add(1),
        };
        let serving = failures_in_a_row < FAILURES_TO_NOT_SERVING;
        if !readiness.set(serving) {
            continue;
        }
        let status = if serving {
            tracing::info!(service, "store reachable again, serving");
            ServingStatus::Serving
        } else {
            let error = reachable.err().unwrap_or_default();
            tracing::warn!(service, %error, failures_in_a_row, "store unreachable, not serving");
            ServingStatus::NotServing
        };
        for name in &grpc_names {
            reporter.set_service_status(name, status).await;
        }
        reporter.set_service_status("", status).await;
    }
}

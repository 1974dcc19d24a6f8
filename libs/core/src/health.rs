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
        if !readiness.set(reachable.is_ok()) {
            continue;
        }
        let status = match &reachable {
            Ok(()) => {
                tracing::info!(service, "store reachable again, serving");
                ServingStatus::Serving
            }
            Err(error) => {
                tracing::warn!(service, %error, "store unreachable, not serving");
                ServingStatus::NotServing
            }
        };
        for name in &grpc_names {
            reporter.set_service_status(name, status).await;
        }
        reporter.set_service_status("", status).await;
    }
}

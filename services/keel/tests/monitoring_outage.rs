//! Monitoring stopped for 30 s and restarted, twice, during 5,000 queries,
//! with every service its own process: every inference record reaches
//! monitoring exactly once (they wait in serving's spill log), and feedback
//! posted during the outages on those requests is accepted and joined once
//! the records land. The scenario is in `support::outage`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::outage::{monitoring_down_twice, Delivery};
use support::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    monitoring_down_twice(Backend::Sqlite, Delivery::Monitoring).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    monitoring_down_twice(Backend::Postgres, Delivery::Monitoring).await;
}

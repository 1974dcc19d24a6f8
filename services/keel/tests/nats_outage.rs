//! The outage scenario of `monitoring_outage` with serving delivering its
//! inference records through NATS JetStream (`inference_delivery =
//! "nats"`) and monitoring draining the stream with its durable consumer:
//! every record stored exactly once, feedback joined. A test binary of its
//! own, so it does not run at the same time as the other outage tests.
//! Needs the NATS server with JetStream at 127.0.0.1:4222.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::outage::{monitoring_down_twice, Delivery};
use support::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    monitoring_down_twice(Backend::Sqlite, Delivery::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    monitoring_down_twice(Backend::Postgres, Delivery::Nats).await;
}

//! Inference records through the spill log: kept while monitoring refuses
//! them and delivered once each when it answers again, and kept on disk
//! across a restart of serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;

use keel_models::ModelCatalog;
use keel_testkit::eventually;

use support::{ask, create, route, Serving, World, PATIENCE};

async fn ask_many(serving: &Serving, endpoint: &str, count: usize) -> BTreeSet<String> {
    let mut client = serving.client.clone();
    let mut request_ids = BTreeSet::new();
    for _ in 0..count {
        let response = client
            .query(ask(endpoint, "How does Keel route traffic?"))
            .await
            .unwrap()
            .into_inner();
        request_ids.insert(response.request_id);
    }
    request_ids
}

fn delivered_ids(world: &World) -> Vec<String> {
    world
        .monitoring
        .records()
        .into_iter()
        .map(|record| record.request_id)
        .collect()
}

#[tokio::test]
async fn records_wait_through_an_outage_and_arrive_once_each() {
    let world = World::start().await;
    world.monitoring.set_refusing(true);
    let serving = world.serving().await;
    serving
        .client
        .clone()
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await
        .unwrap();
    let asked = ask_many(&serving, "support", 20).await;
    assert_eq!(asked.len(), 20);
    let waiting = eventually("records spilled", PATIENCE, async || {
        let stats = serving.stats().await;
        (stats.queue_depth == 20 && stats.spill_bytes > 100).then_some(stats)
    })
    .await;
    assert_eq!(waiting.records_delivered, 0);
    assert!(delivered_ids(&world).is_empty());

    world.monitoring.set_refusing(false);
    let stats = eventually("records delivered", PATIENCE, async || {
        let stats = serving.stats().await;
        (stats.records_delivered == 20).then_some(stats)
    })
    .await;
    assert_eq!(stats.queue_depth, 0);
    let delivered = delivered_ids(&world);
    assert_eq!(delivered.len(), 20, "each record exactly once");
    assert_eq!(delivered.into_iter().collect::<BTreeSet<_>>(), asked);
    serving.stop().await;
}

#[tokio::test]
async fn records_left_undelivered_are_delivered_by_the_next_start() {
    let world = World::start().await;
    world.monitoring.set_refusing(true);
    let serving = world.serving().await;
    serving
        .client
        .clone()
        .create_endpoint(create("support", vec![route("bot@champion", 1)]))
        .await
        .unwrap();
    let asked = ask_many(&serving, "support", 12).await;
    eventually("records spilled", PATIENCE, async || {
        let stats = serving.stats().await;
        (stats.queue_depth == 12 && stats.spill_bytes > 100).then_some(())
    })
    .await;
    let spill = serving.stop().await;
    assert!(delivered_ids(&world).is_empty());

    world.monitoring.set_refusing(false);
    let restarted = Serving::start_with_spill(
        world.registry_server.url(),
        world.vector_index_server.url(),
        world.monitoring.url(),
        ModelCatalog::builtin(),
        spill,
    )
    .await;
    let stats = eventually("recovered records delivered", PATIENCE, async || {
        let stats = restarted.stats().await;
        (stats.records_delivered == 12).then_some(stats)
    })
    .await;
    assert_eq!(stats.records_recovered, 12);
    assert_eq!(stats.records_enqueued, 0);
    let delivered = delivered_ids(&world);
    assert_eq!(delivered.len(), 12);
    assert_eq!(delivered.into_iter().collect::<BTreeSet<_>>(), asked);
    restarted.stop().await;
}

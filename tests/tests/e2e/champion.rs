//! (b) Moving @champion reaches serving within a second.

use std::time::Duration;

use keel_tests::fixtures::{self, ENDPOINT, REFUND_QUESTION, V2_TOP_K};
use keel_tests::{eventually, on_both_backends, Backend, Cluster, Storage};

on_both_backends!(champion_move);

async fn champion_move(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;

    let before = fixtures::query(&cluster, ENDPOINT, REFUND_QUESTION.text, "carol").await;
    assert_eq!(before.served_version, 1);

    fixtures::set_champion(&cluster, 2).await;
    let cluster_ref = &cluster;
    let after = eventually(
        "served_version 2 after moving @champion",
        Duration::from_secs(1),
        || async move {
            let response =
                fixtures::query(cluster_ref, ENDPOINT, REFUND_QUESTION.text, "carol").await;
            (response.served_version == 2).then_some(response)
        },
    )
    .await;
    // v2 is the chain with the smaller top_k: the new spec is served, not just the number.
    assert_eq!(after.citations.len(), V2_TOP_K as usize);
    assert_eq!(after.citations[0].point_id, REFUND_QUESTION.passage_id);
    assert_eq!(after.route_target, fixtures::CHAMPION_TARGET);

    // Once moved, it stays moved.
    for _ in 0..5 {
        let response = fixtures::query(&cluster, ENDPOINT, REFUND_QUESTION.text, "carol").await;
        assert_eq!(response.served_version, 2);
    }
    cluster.shutdown().await;
}

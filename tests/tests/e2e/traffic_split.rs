//! (c) A 90/10 split over two chain versions: the shares hold over many
//! users, and each user sticks to one route.

use std::collections::HashMap;

use futures::stream::{self, StreamExt};
use keel_tests::fixtures::{self, CHAIN_MODEL, SHIPPING_QUESTION};
use keel_tests::{on_both_backends, Backend, Cluster, Storage};

on_both_backends!(traffic_split);

const SPLIT_ENDPOINT: &str = "acme-split";
const USERS: usize = 1000;
const IN_FLIGHT: usize = 16;

async fn traffic_split(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;
    let v1_target = format!("{CHAIN_MODEL}/1");
    let v2_target = format!("{CHAIN_MODEL}/2");
    fixtures::create_endpoint(
        &cluster,
        SPLIT_ENDPOINT,
        &[(&v1_target, 90), (&v2_target, 10)],
    )
    .await;

    let user_ids: Vec<String> = (0..USERS).map(|index| format!("user-{index:04}")).collect();
    let first_round = serve_all(&cluster, &user_ids).await;
    let on_v1 = first_round
        .values()
        .filter(|version| **version == 1)
        .count();
    let on_v2 = first_round
        .values()
        .filter(|version| **version == 2)
        .count();
    assert_eq!(on_v1 + on_v2, USERS, "versions served: {first_round:?}");
    // ±4 points around 90/10.
    assert!(
        (860..=940).contains(&on_v1),
        "v1 got {on_v1} of {USERS} users, expected 900 ± 40"
    );

    // The same users again: each lands on the version it had.
    let sample: Vec<String> = user_ids.iter().step_by(10).cloned().collect();
    for _ in 0..3 {
        let again = serve_all(&cluster, &sample).await;
        for (user_id, version) in &again {
            assert_eq!(
                version, &first_round[user_id],
                "{user_id} moved between routes"
            );
        }
    }
    cluster.shutdown().await;
}

/// Queries once per user, IN_FLIGHT at a time; the served version per user.
async fn serve_all(cluster: &Cluster, user_ids: &[String]) -> HashMap<String, u32> {
    stream::iter(user_ids.iter().cloned())
        .map(|user_id| async move {
            let response =
                fixtures::query(cluster, SPLIT_ENDPOINT, SHIPPING_QUESTION.text, &user_id).await;
            let expected_target = format!("{CHAIN_MODEL}/{}", response.served_version);
            assert_eq!(response.route_target, expected_target);
            (user_id, response.served_version)
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

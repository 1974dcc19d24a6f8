//! (j) Shadow traffic: the endpoint mirrors every live query to chain v2.
//! The caller gets v1's answer only; v2's answer is in the inference log,
//! linked to the live request (`shadow_of`), found by it, and left out of a
//! replay of the endpoint's traffic.

use std::time::Duration;

use keel_proto::v1::{ListInferencesRequest, Shadow, UpdateEndpointRequest};
use keel_tests::fixtures::{self, CHAIN_MODEL, ENDPOINT, REFUND_QUESTION};
use keel_tests::{eventually, on_both_backends, Backend, Cluster, Storage};

use crate::streaming::inference_record;

on_both_backends!(shadow_traffic);

async fn shadow_traffic(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;
    let mut serving = cluster.serving.clone();
    let updated = serving
        .update_endpoint(UpdateEndpointRequest {
            name: ENDPOINT.to_string(),
            routes: vec![keel_proto::v1::Route {
                target: fixtures::CHAMPION_TARGET.to_string(),
                weight: 100,
            }],
            description: "mirrored".to_string(),
            shadow: Some(Shadow {
                target: format!("{CHAIN_MODEL}/2"),
                percent: 100,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.shadow.as_ref().unwrap().percent, 100);

    let live = fixtures::query(&cluster, ENDPOINT, REFUND_QUESTION.text, "erin").await;
    assert_eq!(
        live.served_version, 1,
        "the caller gets the live route's answer"
    );
    assert_eq!(live.citations.len(), fixtures::V1_TOP_K as usize);

    let live_record = inference_record(&cluster, &live.request_id).await;
    assert_eq!(live_record.shadow_of, "");
    let mut monitoring = cluster.monitoring.clone();
    let shadows = eventually(
        "the shadow answer's record",
        Duration::from_secs(15),
        || {
            let mut monitoring = monitoring.clone();
            let request = ListInferencesRequest {
                shadow_of: live.request_id.clone(),
                ..Default::default()
            };
            async move {
                let records = monitoring
                    .list_inferences(request)
                    .await
                    .ok()?
                    .into_inner()
                    .records;
                (!records.is_empty()).then_some(records)
            }
        },
    )
    .await;
    assert_eq!(shadows.len(), 1);
    let shadow = &shadows[0];
    assert_eq!(shadow.shadow_of, live.request_id);
    assert_eq!(shadow.route_target, format!("{CHAIN_MODEL}/2"));
    assert_eq!(shadow.served_version, 2);
    assert_eq!(shadow.question, REFUND_QUESTION.text);
    assert_eq!(shadow.contexts.len(), fixtures::V2_TOP_K as usize);
    assert_ne!(shadow.request_id, live.request_id);
    // One trace: the shadow answer is a child of the live query.
    assert_eq!(shadow.trace_id, live.trace_id);

    // Listing the endpoint shows both, side by side; a filter on another
    // request finds nothing.
    let all = monitoring
        .list_inferences(ListInferencesRequest {
            endpoint: ENDPOINT.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(all.len(), 2);
    let none = monitoring
        .list_inferences(ListInferencesRequest {
            shadow_of: shadow.request_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(none.is_empty(), "a shadow answer is not mirrored again");

    // The endpoint's metrics count what callers got: v1's answer only.
    let metrics = monitoring
        .get_metrics(keel_proto::v1::GetMetricsRequest {
            endpoint: ENDPOINT.to_string(),
            window_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    let counted: Vec<(u32, u64)> = metrics
        .versions
        .iter()
        .map(|version| (version.served_version, version.request_count))
        .collect();
    assert_eq!(counted, [(1, 1)]);
    cluster.shutdown().await;
}

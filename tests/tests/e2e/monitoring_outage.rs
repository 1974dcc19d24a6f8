//! (f) With monitoring down, queries still succeed at the same speed, and
//! their records wait in serving's spill log, none dropped. Spans go to the
//! same monitoring (its trace store): their export failing must not slow a
//! query either.

use std::time::{Duration, Instant};

use keel::cluster::Service;
use keel_proto::v1::GetServingStatsRequest;
use keel_tests::fixtures::{self, ENDPOINT, REFUND_QUESTION, SHIPPING_QUESTION};
use keel_tests::{eventually, on_both_backends, Backend, Cluster, Storage};

on_both_backends!(monitoring_outage);

const QUERIES: usize = 40;

async fn monitoring_outage(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start_with(&storage, |config| {
        // Small and quick, so waiting records show up within the test.
        config.serving.inference_batch_size = 4;
        config.serving.inference_flush_interval_ms = 10;
        config.serving.delivery_timeout_ms = 200;
        config.telemetry.to_monitoring = true;
    })
    .await;
    fixtures::setup_application(&cluster).await;
    // Warm up connections and caches before measuring.
    fixtures::query(&cluster, ENDPOINT, SHIPPING_QUESTION.text, "warm-up").await;

    let median_up = median_latency(&cluster, "up").await;
    let mut cluster = cluster;
    cluster.keel.stop_service(Service::Monitoring).await;
    let median_down = median_latency(&cluster, "down").await;
    let limit = median_up * 2 + Duration::from_millis(20);
    assert!(
        median_down < limit,
        "median query latency with monitoring down {median_down:?} >= 2 x {median_up:?} + 20 ms"
    );

    let stats = eventually(
        "serving to hold the undelivered records",
        Duration::from_secs(15),
        || {
            let mut serving = cluster.serving.clone();
            async move {
                let stats = serving
                    .get_serving_stats(GetServingStatsRequest {})
                    .await
                    .ok()?
                    .into_inner();
                (stats.queue_depth >= QUERIES as u64).then_some(stats)
            }
        },
    )
    .await;
    // Every query's record was kept: the ones made while monitoring was
    // down wait on disk, none dropped or refused.
    assert!(stats.records_enqueued >= (2 * QUERIES) as u64, "{stats:?}");
    assert!(stats.spill_bytes > 0, "{stats:?}");
    assert_eq!(
        stats.records_dropped_disk_budget
            + stats.records_dropped_queue_full
            + stats.records_failed_delivery,
        0,
        "{stats:?}"
    );
    cluster.shutdown().await;
}

/// The median client-side latency of QUERIES queries, all of which succeed.
async fn median_latency(cluster: &Cluster, phase: &str) -> Duration {
    let mut latencies = Vec::with_capacity(QUERIES);
    for index in 0..QUERIES {
        let started = Instant::now();
        let response = fixtures::query(
            cluster,
            ENDPOINT,
            REFUND_QUESTION.text,
            &format!("{phase}-{index}"),
        )
        .await;
        latencies.push(started.elapsed());
        assert_eq!(response.citations[0].point_id, REFUND_QUESTION.passage_id);
    }
    latencies.sort();
    latencies[QUERIES / 2]
}

//! The outage scenario: monitoring stopped for 30 s and restarted, twice,
//! during 5,000 queries, with every service its own process. Every
//! inference record reaches monitoring exactly once (they wait in
//! serving's spill log, or in the NATS JetStream stream), and feedback
//! posted during the outages on those requests is accepted and joined once
//! the records land. Through NATS, the spans of the queries answered during
//! the outages take the stream too, and every one of those traces arrives.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_core::channel::ServiceChannel;
use keel_core::jetstream::JetStreamConfig;
use keel_proto::v1 as pb;
use keel_proto::v1::feedback_service_client::FeedbackServiceClient;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_testkit::eventually;

use super::{
    keyed_channel, set_up_application, stored_request_ids, Backend, Deployment, Service,
    START_ORDER,
};

const QUERIES: usize = 5_000;
const CLIENTS: usize = 4;
/// Queries per second, all clients together: the load spans both outages.
const RATE: f64 = 60.0;
const OUTAGE: Duration = Duration::from_secs(30);
/// Feedback on every this many answers given while monitoring is down.
const FEEDBACK_EVERY: usize = 10;

#[derive(Default)]
struct Load {
    answered: Vec<String>,
    /// Answered while monitoring was down.
    during_outage: Vec<String>,
    /// The trace ids of all of those.
    traces_during_outage: Vec<String>,
    monitoring_down: bool,
}

/// Where serving delivers its inference records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Monitoring's RecordInferences.
    Monitoring,
    /// A NATS JetStream stream (a fresh one) that monitoring drains.
    Nats,
}

/// Runs the outage scenario on `backend`, delivering through `delivery`.
pub async fn monitoring_down_twice(backend: Backend, delivery: Delivery) {
    let mut deployment = Deployment::new(backend).await;
    let nats = (delivery == Delivery::Nats).then(|| JetStreamConfig {
        stream: format!("KEEL_TEST_{}", uuid::Uuid::new_v4().simple()),
        ..JetStreamConfig::default()
    });
    if let Some(nats) = &nats {
        deployment.set("KEEL_SERVING__INFERENCE_DELIVERY", "nats");
        deployment.set("KEEL_SERVING__NATS__STREAM", &nats.stream);
        deployment.set("KEEL_MONITORING__NATS_INTAKE", "true");
        deployment.set("KEEL_MONITORING__NATS__STREAM", &nats.stream);
        // Spans go to monitoring's OTLP intake, and through the stream
        // while monitoring is down.
        let monitoring_url = deployment.url(Service::Monitoring);
        deployment.set("KEEL_TELEMETRY__ENABLED", "true");
        deployment.set("KEEL_TELEMETRY__MONITORING_URL", &monitoring_url);
        deployment.set("KEEL_TELEMETRY__EXPORT_INTERVAL_MS", "200");
        deployment.set("KEEL_TELEMETRY__NATS__STREAM", &nats.stream);
    }
    deployment.set("KEEL_SERVING__INFERENCE_FLUSH_INTERVAL_MS", "50");
    deployment.set("KEEL_SERVING__DELIVERY_MAX_BACKOFF_MS", "1000");
    deployment.set("KEEL_FEEDBACK__JOIN_INTERVAL_MS", "200");
    for service in START_ORDER {
        deployment.start(service).await;
    }
    let endpoint = set_up_application(&deployment).await;

    let load = Arc::new(Mutex::new(Load::default()));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            tokio::spawn(ask(
                deployment.url(Service::Serving),
                endpoint.clone(),
                client,
                load.clone(),
                started,
            ))
        })
        .collect();
    let mut feedback = FeedbackServiceClient::new(deployment.channel(Service::Feedback));
    let mut posted = Vec::new();
    for outage in 0..2 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        deployment.stop(Service::Monitoring).await;
        load.lock().unwrap().monitoring_down = true;
        let down_since = Instant::now();
        while down_since.elapsed() < OUTAGE {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let fresh: Vec<String> = {
                let mut load = load.lock().unwrap();
                std::mem::take(&mut load.during_outage)
            };
            for request_id in fresh.into_iter().step_by(FEEDBACK_EVERY) {
                let record = feedback
                    .submit_feedback(pb::SubmitFeedbackRequest {
                        request_id: request_id.clone(),
                        kind: pb::FeedbackKind::Thumbs as i32,
                        value: 1.0,
                        user_id: format!("outage-{outage}"),
                        ..Default::default()
                    })
                    .await
                    .expect("feedback is accepted while monitoring is down")
                    .into_inner();
                assert!(!record.joined, "{record:?}");
                posted.push(record.id);
            }
        }
        load.lock().unwrap().monitoring_down = false;
        deployment.start(Service::Monitoring).await;
    }
    for client in clients {
        client.await.unwrap();
    }
    let answered: BTreeSet<String> = load.lock().unwrap().answered.iter().cloned().collect();
    assert_eq!(answered.len(), QUERIES);
    assert!(posted.len() >= 20, "only {} feedback posted", posted.len());

    let monitoring = MonitoringServiceClient::new(deployment.channel(Service::Monitoring));
    eventually(
        "every record delivered",
        Duration::from_secs(120),
        async || {
            let stored = stored_request_ids(&monitoring, &answered).await;
            (stored == answered).then_some(())
        },
    )
    .await;
    let stats = ServingServiceClient::new(deployment.channel(Service::Serving))
        .get_serving_stats(pb::GetServingStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.queue_depth, 0, "{stats:?}");
    assert_eq!(
        stats.records_dropped_disk_budget + stats.records_failed_delivery,
        0,
        "{stats:?}"
    );

    let posted: BTreeSet<String> = posted.into_iter().collect();
    eventually("feedback joined", Duration::from_secs(60), async || {
        let joined = joined_feedback_ids(&feedback).await;
        posted.is_subset(&joined).then_some(())
    })
    .await;
    let traces = load.lock().unwrap().traces_during_outage.clone();
    if nats.is_some() {
        assert!(traces.len() >= 1_000, "{} outage traces", traces.len());
        every_trace_stored(&deployment, &monitoring, &traces).await;
    }
    if let Some(nats) = nats {
        let context = nats.connect().await.unwrap();
        context.delete_stream(&nats.stream).await.unwrap();
    }
    eprintln!(
        "{backend:?}, {delivery:?}: {} queries, {} records stored once each, {} feedback joined late, {} outage traces complete, {:.0} s",
        answered.len(),
        answered.len(),
        posted.len(),
        if delivery == Delivery::Nats { traces.len() } else { 0 },
        started.elapsed().as_secs_f64()
    );
}

/// Asks this client's share of QUERIES at its share of RATE.
async fn ask(
    serving_url: String,
    endpoint: String,
    client: usize,
    load: Arc<Mutex<Load>>,
    started: Instant,
) {
    let mut serving = ServingServiceClient::new(keyed_channel(&serving_url));
    let share = QUERIES / CLIENTS;
    let interval = Duration::from_secs_f64(CLIENTS as f64 / RATE);
    for index in 0..share {
        let due = started + interval.mul_f64(index as f64);
        tokio::time::sleep_until(due.into()).await;
        let response = serving
            .query(pb::QueryRequest {
                endpoint: endpoint.clone(),
                question: format!("How do refunds work? ({client}-{index})"),
                user_id: format!("user-{client}"),
                ..Default::default()
            })
            .await
            .expect("queries are answered while monitoring is down")
            .into_inner();
        let mut load = load.lock().unwrap();
        load.answered.push(response.request_id.clone());
        if load.monitoring_down {
            load.during_outage.push(response.request_id);
            load.traces_during_outage.push(response.trace_id);
        }
    }
}

async fn joined_feedback_ids(feedback: &FeedbackServiceClient<ServiceChannel>) -> BTreeSet<String> {
    let mut joined = BTreeSet::new();
    let mut page_token = String::new();
    loop {
        let page = feedback
            .clone()
            .list_feedback(pb::ListFeedbackRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        joined.extend(
            page.records
                .into_iter()
                .filter(|record| record.joined)
                .map(|record| record.id),
        );
        if page.next_page_token.is_empty() {
            return joined;
        }
        page_token = page.next_page_token;
    }
}

/// Waits until monitoring holds each trace with serving's `query
/// {endpoint}` span and the vector index's `retrieval {collection}` span:
/// spans of two processes, both sent
/// while monitoring was down. On a timeout, says what the first missing
/// trace holds and what the services logged about span exports.
async fn every_trace_stored(
    deployment: &Deployment,
    monitoring: &MonitoringServiceClient<ServiceChannel>,
    trace_ids: &[String],
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut missing: Vec<String> = trace_ids.to_vec();
    loop {
        let mut still_missing = Vec::new();
        let mut first_missing = None;
        for trace_id in &missing {
            let spans = match monitoring
                .clone()
                .get_trace(pb::GetTraceRequest {
                    trace_id: trace_id.clone(),
                })
                .await
            {
                Ok(trace) => trace.into_inner().spans,
                Err(_) => Vec::new(),
            };
            let has = |service: &str, name: &str| {
                spans
                    .iter()
                    .any(|span| span.service_name == service && span.name.starts_with(name))
            };
            if !(has("keel-serving", "query ") && has("keel-vector-index", "retrieval ")) {
                still_missing.push(trace_id.clone());
                if first_missing.is_none() {
                    let held: Vec<(String, String)> = spans
                        .iter()
                        .map(|span| (span.service_name.clone(), span.name.clone()))
                        .collect();
                    first_missing = Some((trace_id.clone(), held));
                }
            }
        }
        missing = still_missing;
        if missing.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = [Service::Serving, Service::VectorIndex]
                .into_iter()
                .flat_map(|service| {
                    std::fs::read_to_string(deployment.log_path(service))
                        .unwrap_or_default()
                        .lines()
                        .filter(|line| line.contains("span") || line.contains("NATS"))
                        .take(20)
                        .map(|line| format!("{}: {line}", service.name()))
                        .collect::<Vec<_>>()
                })
                .collect();
            panic!(
                "{} of {} outage traces incomplete; the first, {:?}, holds {:?}; span log lines:\n{}",
                missing.len(),
                trace_ids.len(),
                first_missing.as_ref().map(|(id, _)| id),
                first_missing.as_ref().map(|(_, held)| held),
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! serving killed with SIGKILL ten times under load, as separate processes:
//! every inference record whose query was answered more than the spill
//! log's commit window (plus an fsync's time) before a kill reaches
//! monitoring, none twice; a torn spill tail does not stop serving from
//! starting again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_proto::v1 as pb;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_testkit::eventually;
use tokio_util::sync::CancellationToken;

use support::{
    keyed_channel, set_up_application, stored_request_ids, Backend, Deployment, Service,
};

const KILLS: usize = 10;
const CLIENTS: usize = 4;
const COMMIT_WINDOW_MS: u64 = 10;
/// What a commit's write and fsync may add to the window on a busy VM.
const FSYNC_ALLOWANCE: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    serving_killed_under_load(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    serving_killed_under_load(Backend::Postgres).await;
}

/// An answered query: its request id, when the answer came, and which run
/// of serving gave it (`None` when a kill fell during the call).
#[derive(Debug, Clone)]
struct Answer {
    request_id: String,
    answered_at: Instant,
    run: Option<usize>,
}

type Answers = Arc<Mutex<Vec<Answer>>>;

async fn serving_killed_under_load(backend: Backend) {
    let mut deployment = Deployment::new(backend).await;
    deployment.set(
        "KEEL_SERVING__SPILL_COMMIT_WINDOW_MS",
        &COMMIT_WINDOW_MS.to_string(),
    );
    deployment.set("KEEL_SERVING__INFERENCE_FLUSH_INTERVAL_MS", "20");
    for service in [
        Service::Registry,
        Service::VectorIndex,
        Service::Monitoring,
        Service::Serving,
    ] {
        deployment.start(service).await;
    }
    let endpoint = set_up_application(&deployment).await;

    let answers: Answers = Arc::default();
    // Counts the kills: the run a query was answered by.
    let run = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            tokio::spawn(ask_until_stopped(
                deployment.url(Service::Serving),
                endpoint.clone(),
                client,
                answers.clone(),
                run.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let mut kills = Vec::with_capacity(KILLS);
    for kill in 0..KILLS {
        // Let queries be answered, and their records be in flight, first.
        let answered_before = answers.lock().unwrap().len();
        eventually("queries answered", Duration::from_secs(30), async || {
            (answers.lock().unwrap().len() >= answered_before + 50).then_some(())
        })
        .await;
        run.fetch_add(1, Ordering::SeqCst);
        kills.push(Instant::now());
        deployment.kill(Service::Serving);
        if kill == KILLS / 2 {
            tear_the_spill_tail(&deployment);
        }
        deployment.start(Service::Serving).await;
        if kill == KILLS / 2 {
            let stats = serving_stats(&deployment).await;
            assert_eq!(stats.spill_torn_tails, 1, "{stats:?}");
        }
    }
    let answered_before = answers.lock().unwrap().len();
    eventually(
        "queries answered after the last restart",
        Duration::from_secs(30),
        async || (answers.lock().unwrap().len() >= answered_before + 50).then_some(()),
    )
    .await;
    stop.cancel();
    for client in clients {
        client.await.unwrap();
    }

    let answers = answers.lock().unwrap().clone();
    // Required: answered by a run more than the window before that run was
    // killed (or by the last run). An answer whose call saw a kill may have
    // come from either side of it, so it is not required.
    let window = Duration::from_millis(COMMIT_WINDOW_MS) + FSYNC_ALLOWANCE;
    let must_arrive: BTreeSet<String> = answers
        .iter()
        .filter(|answer| {
            answer.run.is_some_and(|run| {
                kills
                    .get(run)
                    .is_none_or(|kill| kill.duration_since(answer.answered_at) > window)
            })
        })
        .map(|answer| answer.request_id.clone())
        .collect();
    let answered: BTreeSet<String> = answers
        .iter()
        .map(|answer| answer.request_id.clone())
        .collect();
    assert_eq!(answered.len(), answers.len(), "request ids are unique");

    let monitoring = MonitoringServiceClient::new(deployment.channel(Service::Monitoring));
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let stored = stored_request_ids(&monitoring, &answered).await;
        if must_arrive.is_subset(&stored) {
            break stored;
        }
        if Instant::now() >= deadline {
            // Which records, and how long before their run's kill they were
            // answered: a loss just past the window is a slow fsync, one
            // long before it is a lost record.
            let missing: Vec<String> = answers
                .iter()
                .filter(|answer| {
                    must_arrive.contains(&answer.request_id) && !stored.contains(&answer.request_id)
                })
                .map(|answer| {
                    let before_kill = answer
                        .run
                        .and_then(|run| kills.get(run))
                        .map(|kill| kill.duration_since(answer.answered_at));
                    format!(
                        "{} (run {:?}, answered {before_kill:?} before its kill)",
                        answer.request_id, answer.run
                    )
                })
                .collect();
            panic!(
                "{backend:?}: {} of {} required records not stored after 60 s: {missing:#?}",
                missing.len(),
                must_arrive.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lost = answered.difference(&stored).count();
    eprintln!(
        "{backend:?}: {} answered, {} required, {} stored, {lost} lost (answered within {} ms of a kill)",
        answered.len(),
        must_arrive.len(),
        stored.len(),
        window.as_millis()
    );
    // Each record stored once: a row per request id, and no record of a
    // request the clients never saw answered beyond those cut off by a kill.
    let rows = all_inference_rows(&monitoring).await;
    assert_eq!(
        rows.len(),
        BTreeSet::from_iter(rows.iter()).len(),
        "a request id stored twice"
    );

    let stats = serving_stats(&deployment).await;
    assert_eq!(
        stats.records_dropped_disk_budget + stats.records_lost_write_error,
        0,
        "{stats:?}"
    );
}

async fn serving_stats(deployment: &Deployment) -> pb::ServingStats {
    ServingServiceClient::new(deployment.channel(Service::Serving))
        .get_serving_stats(pb::GetServingStatsRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn ask_until_stopped(
    serving_url: String,
    endpoint: String,
    client: usize,
    answers: Answers,
    run: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let mut serving = ServingServiceClient::new(keyed_channel(&serving_url));
    let mut asked = 0usize;
    while !stop.is_cancelled() {
        asked += 1;
        let request = pb::QueryRequest {
            endpoint: endpoint.clone(),
            question: format!("How do refunds work? ({client}-{asked})"),
            user_id: format!("user-{client}"),
            ..Default::default()
        };
        let run_before = run.load(Ordering::SeqCst);
        match serving.query(request).await {
            Ok(response) => {
                let answered_at = Instant::now();
                let run_after = run.load(Ordering::SeqCst);
                answers.lock().unwrap().push(Answer {
                    request_id: response.into_inner().request_id,
                    answered_at,
                    run: (run_before == run_after).then_some(run_before),
                });
            }
            // serving is down or restarting.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Half a record at the end of the newest spill segment, as a crash in
/// the middle of a write leaves it.
fn tear_the_spill_tail(deployment: &Deployment) {
    let spill = deployment.data_dir.path().join("serving-spill");
    let newest = std::fs::read_dir(&spill)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "spill")
        })
        .max()
        .expect("a spill segment");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(newest)
        .unwrap();
    // A frame header promising 100 bytes, and 10 of them.
    file.write_all(&100u32.to_le_bytes()).unwrap();
    file.write_all(&[0xab; 14]).unwrap();
}

/// Every stored record's request id, one per row.
async fn all_inference_rows(
    monitoring: &MonitoringServiceClient<keel_core::channel::ServiceChannel>,
) -> Vec<String> {
    let mut rows = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = monitoring
            .clone()
            .list_inferences(pb::ListInferencesRequest {
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        rows.extend(page.records.into_iter().map(|record| record.request_id));
        if page.next_page_token.is_empty() {
            return rows;
        }
        page_token = page.next_page_token;
    }
}

//! `keel-loadtest run`: offers load to serving's `Query` in a closed or an
//! open loop and tallies what came back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use keel_core::channel::ServiceChannel;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_proto::v1::QueryRequest;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{code_name, connect};
use crate::error::Error;
use crate::schedule::{OpenLoopSchedule, Window};
use crate::sender::Sender;
use crate::summary::{Load, RunLabel, Sample, Summary, Tally};
use crate::workload::{question_for, random_user_id};

const MAX_CONCURRENCY: u32 = 100_000;
const MAX_CONNECTIONS: u32 = 256;
const PROGRESS_TICK: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Serving's gRPC URL.
    pub target: String,
    pub endpoint: String,
    pub load: Load,
    pub warmup: Duration,
    pub duration: Duration,
    /// Per-request deadline; a request past it counts as an error.
    pub timeout: Duration,
    /// HTTP/2 connections the requests are spread over.
    pub connections: u32,
    pub show_progress: bool,
    /// The key every request presents (serving with authentication on).
    pub api_key: Option<String>,
}

impl RunOptions {
    fn validate(&self) -> Result<(), Error> {
        match self.load {
            Load::Closed { concurrency } => {
                if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
                    return Err(invalid(
                        "--concurrency",
                        format!("must be in 1..={MAX_CONCURRENCY}, got {concurrency}"),
                    ));
                }
            }
            Load::Open {
                rate,
                max_outstanding,
            } => {
                if OpenLoopSchedule::new(rate).is_none() {
                    return Err(invalid(
                        "--rate",
                        format!("must be a number in 0.001..=1e9 requests per second, got {rate}"),
                    ));
                }
                if !(1..=MAX_CONCURRENCY).contains(&max_outstanding) {
                    return Err(invalid(
                        "--max-outstanding",
                        format!("must be in 1..={MAX_CONCURRENCY}, got {max_outstanding}"),
                    ));
                }
            }
        }
        if self.duration.is_zero() {
            return Err(invalid(
                "--duration",
                "must be positive, got 0s".to_string(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(invalid("--timeout", "must be positive, got 0s".to_string()));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(invalid(
                "--connections",
                format!("must be in 1..={MAX_CONNECTIONS}, got {}", self.connections),
            ));
        }
        Ok(())
    }

    fn label(&self) -> RunLabel {
        RunLabel {
            load: self.load,
            target: self.target.clone(),
            endpoint: self.endpoint.clone(),
            warmup: self.warmup,
            duration: self.duration,
        }
    }
}

fn invalid(flag: &'static str, rule: String) -> Error {
    Error::InvalidArgument { flag, rule }
}

/// Runs the load described by `options` and summarises the measured window.
pub async fn run(options: &RunOptions) -> Result<Summary, Error> {
    options.validate()?;
    let mut queriers = Vec::new();
    for _ in 0..options.connections {
        let client =
            ServingServiceClient::new(connect(&options.target, options.api_key.as_deref()).await?);
        queriers.push(Querier {
            client,
            endpoint: options.endpoint.clone(),
            timeout: options.timeout,
        });
    }
    let window = Window::after_warmup(options.warmup, options.duration);
    tracing::info!(target = %options.target, endpoint = %options.endpoint, load = ?options.load, "load test started");
    let tally = drive(&queriers, options.load, window, options.show_progress).await?;
    Ok(Summary::new(&options.label(), &tally))
}

/// Offers `load` through `senders` (spread over them in turn) and tallies
/// the requests due inside `window`; whatever the requests are, gRPC queries
/// or HTTP calls, the loops and their timing are these.
pub async fn drive<S: Sender>(
    senders: &[S],
    load: Load,
    window: Window,
    show_progress: bool,
) -> Result<Tally, Error> {
    if senders.is_empty() {
        return Err(invalid("--connections", "must be at least 1".to_string()));
    }
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let progress = Progress::start(show_progress, window, start, Arc::clone(&counters));
    let outcome = match load {
        Load::Closed { concurrency } => {
            run_closed(senders, concurrency, window, start, &counters).await
        }
        Load::Open {
            rate,
            max_outstanding,
        } => {
            let schedule = OpenLoopSchedule::new(rate)
                .ok_or_else(|| invalid("--rate", format!("unusable rate {rate}")))?;
            run_open(senders, schedule, max_outstanding, window, start, &counters).await
        }
    };
    progress.finish();
    outcome
}

/// One client of serving; clones share the HTTP/2 connection.
#[derive(Debug, Clone)]
struct Querier {
    client: ServingServiceClient<ServiceChannel>,
    endpoint: String,
    timeout: Duration,
}

impl Sender for Querier {
    async fn send(&mut self, index: u64) -> Option<String> {
        self.query(question_for(index)).await
    }
}

impl Querier {
    /// Sends one query; the gRPC code's name when it failed.
    async fn query(&mut self, question: &str) -> Option<String> {
        let mut request = tonic::Request::new(QueryRequest {
            endpoint: self.endpoint.clone(),
            question: question.to_string(),
            messages: Vec::new(),
            user_id: random_user_id(),
            session_id: String::new(),
            ..Default::default()
        });
        request.set_timeout(self.timeout);
        match self.client.query(request).await {
            Ok(_) => None,
            Err(status) => Some(code_name(status.code())),
        }
    }
}

/// Every finished request, warmup included, for the progress bar.
#[derive(Debug, Default)]
struct Counters {
    finished: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn count(&self, failed: bool) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `concurrency` tasks, each sending its next query when the previous one
/// returns, until the window ends. Latency is send to answer.
async fn run_closed<S: Sender>(
    senders: &[S],
    concurrency: u32,
    window: Window,
    start: Instant,
    counters: &Arc<Counters>,
) -> Result<Tally, Error> {
    let next_question = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for sender in senders.iter().cycle().take(concurrency as usize) {
        let mut sender = sender.clone();
        let mut tally = Tally::new(window)?;
        let next_question = Arc::clone(&next_question);
        let counters = Arc::clone(counters);
        tasks.spawn(async move {
            loop {
                let intended = start.elapsed();
                if intended >= window.end {
                    break;
                }
                let index = next_question.fetch_add(1, Ordering::Relaxed);
                let error_code = sender.send(index).await;
                counters.count(error_code.is_some());
                tally.record(Sample {
                    intended,
                    completed: start.elapsed(),
                    error_code,
                });
            }
            tally
        });
    }
    let mut total = Tally::new(window)?;
    while let Some(joined) = tasks.join_next().await {
        total.merge(&joined?)?;
    }
    Ok(total)
}

/// Requests sent on `schedule` whatever the answers do, at most
/// `max_outstanding` in flight. A request held back by the cap goes out as
/// soon as a slot frees, and its latency still counts from its due time.
async fn run_open<S: Sender>(
    senders: &[S],
    schedule: OpenLoopSchedule,
    max_outstanding: u32,
    window: Window,
    start: Instant,
    counters: &Arc<Counters>,
) -> Result<Tally, Error> {
    let mut tally = Tally::new(window)?;
    let mut in_flight = JoinSet::new();
    let mut turns = senders.iter().cycle();
    let mut index: u64 = 0;
    loop {
        let intended = schedule.intended_offset(index);
        if intended >= window.end {
            break;
        }
        while in_flight.len() >= max_outstanding as usize {
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            tally.record(joined?);
        }
        tokio::time::sleep_until(start + intended).await;
        while let Some(joined) = in_flight.try_join_next() {
            tally.record(joined?);
        }
        let Some(sender) = turns.next() else {
            break;
        };
        let mut sender = sender.clone();
        let counters = Arc::clone(counters);
        in_flight.spawn(async move {
            let error_code = sender.send(index).await;
            counters.count(error_code.is_some());
            Sample {
                intended,
                completed: start.elapsed(),
                error_code,
            }
        });
        index += 1;
    }
    while let Some(joined) = in_flight.join_next().await {
        tally.record(joined?);
    }
    Ok(tally)
}

/// The progress bar (on stderr, hidden when it is not a terminal), ticking
/// through warmup and the measured window.
struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(show: bool, window: Window, start: Instant, counters: Arc<Counters>) -> Progress {
        let total_ms = u64::try_from(window.end.as_millis()).unwrap_or(u64::MAX);
        let bar = if show {
            ProgressBar::new(total_ms)
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed:>4} [{wide_bar}] {percent:>3}% {msg}")
        {
            bar.set_style(style);
        }
        let ticking_bar = bar.clone();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(PROGRESS_TICK);
            loop {
                interval.tick().await;
                let elapsed = start.elapsed();
                let phase = if elapsed < window.start {
                    "warmup"
                } else {
                    "measuring"
                };
                let finished = counters.finished.load(Ordering::Relaxed);
                let errors = counters.errors.load(Ordering::Relaxed);
                ticking_bar.set_position(
                    u64::try_from(elapsed.as_millis())
                        .unwrap_or(u64::MAX)
                        .min(total_ms),
                );
                ticking_bar.set_message(format!("{phase}: {finished} requests, {errors} errors"));
            }
        });
        Progress { bar, ticker }
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use keel_proto::v1::serving_service_server::{ServingService, ServingServiceServer};
    use keel_proto::v1::*;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::workload::QUESTIONS;

    /// A stand-in for serving: answers at once, fails one question of the
    /// rotation, and can stall one call.
    #[derive(Default)]
    struct FakeServing {
        failing_question: Option<&'static str>,
        stall_call: Option<(u64, Duration)>,
        calls: AtomicU64,
        stalled: AtomicBool,
    }

    #[tonic::async_trait]
    impl ServingService for FakeServing {
        async fn create_endpoint(
            &self,
            _: Request<CreateEndpointRequest>,
        ) -> Result<Response<Endpoint>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn get_endpoint(
            &self,
            _: Request<GetEndpointRequest>,
        ) -> Result<Response<Endpoint>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn list_endpoints(
            &self,
            _: Request<ListEndpointsRequest>,
        ) -> Result<Response<ListEndpointsResponse>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn update_endpoint(
            &self,
            _: Request<UpdateEndpointRequest>,
        ) -> Result<Response<Endpoint>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn delete_endpoint(
            &self,
            _: Request<DeleteEndpointRequest>,
        ) -> Result<Response<DeleteEndpointResponse>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn query(
            &self,
            request: Request<QueryRequest>,
        ) -> Result<Response<QueryResponse>, Status> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let query = request.into_inner();
            assert_eq!(query.endpoint, "lt-endpoint");
            assert!(query.user_id.starts_with("lt-user-"));
            if let Some((stall_call, stall)) = self.stall_call {
                if call == stall_call && !self.stalled.swap(true, Ordering::SeqCst) {
                    tokio::time::sleep(stall).await;
                }
            }
            if self.failing_question == Some(query.question.as_str()) {
                return Err(Status::unavailable("fake outage"));
            }
            Ok(Response::new(QueryResponse {
                answer: "an answer".to_string(),
                ..Default::default()
            }))
        }
        type QueryStreamStream = tokio_stream::Empty<Result<QueryStreamEvent, Status>>;
        async fn query_stream(
            &self,
            _: Request<QueryRequest>,
        ) -> Result<Response<Self::QueryStreamStream>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn get_serving_stats(
            &self,
            _: Request<GetServingStatsRequest>,
        ) -> Result<Response<ServingStats>, Status> {
            Err(Status::unimplemented("fake"))
        }

        async fn start_experiment(
            &self,
            _: Request<keel_proto::v1::StartExperimentRequest>,
        ) -> Result<Response<keel_proto::v1::Experiment>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn get_experiment(
            &self,
            _: Request<keel_proto::v1::GetExperimentRequest>,
        ) -> Result<Response<keel_proto::v1::Experiment>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn list_experiments(
            &self,
            _: Request<keel_proto::v1::ListExperimentsRequest>,
        ) -> Result<Response<keel_proto::v1::ListExperimentsResponse>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn stop_experiment(
            &self,
            _: Request<keel_proto::v1::StopExperimentRequest>,
        ) -> Result<Response<keel_proto::v1::Experiment>, Status> {
            Err(Status::unimplemented("fake"))
        }

        async fn generate(
            &self,
            _: Request<keel_proto::v1::GenerateRequest>,
        ) -> Result<Response<keel_proto::v1::GenerateResponse>, Status> {
            Err(Status::unimplemented("fake"))
        }
    }

    async fn start_fake(fake: FakeServing) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ServingServiceServer::new(fake))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        url
    }

    fn options(target: String, load: Load, warmup_ms: u64, duration_ms: u64) -> RunOptions {
        RunOptions {
            target,
            endpoint: "lt-endpoint".to_string(),
            load,
            warmup: Duration::from_millis(warmup_ms),
            duration: Duration::from_millis(duration_ms),
            timeout: Duration::from_secs(10),
            connections: 2,
            show_progress: false,
            api_key: None,
        }
    }

    #[tokio::test]
    async fn closed_loop_counts_requests_and_errors_by_code() {
        let url = start_fake(FakeServing {
            failing_question: Some(QUESTIONS[3]),
            ..Default::default()
        })
        .await;
        let summary = run(&options(url, Load::Closed { concurrency: 3 }, 50, 400))
            .await
            .unwrap();
        assert_eq!(summary.mode, "closed");
        assert_eq!(summary.concurrency, Some(3));
        // One question in twenty fails, so a run of ≥ 20 requests sees errors.
        assert!(summary.requests >= 20, "requests {}", summary.requests);
        assert!(summary.errors >= 1);
        assert!(summary.ok > summary.errors);
        assert_eq!(summary.requests, summary.ok + summary.errors);
        assert_eq!(
            summary.errors_by_code.keys().collect::<Vec<_>>(),
            vec!["Unavailable"]
        );
        assert!(summary.window_s >= 0.4);
        assert!((summary.qps - summary.requests as f64 / summary.window_s).abs() < 1e-9);
        assert!(summary.latency_ms.p50 > 0.0);
        assert!(summary.latency_ms.p50 <= summary.latency_ms.p99);
        assert!(summary.latency_ms.p99 <= summary.latency_ms.max);
    }

    #[tokio::test]
    async fn open_loop_sends_exactly_the_scheduled_requests() {
        let url = start_fake(FakeServing::default()).await;
        let load = Load::Open {
            rate: 200.0,
            max_outstanding: 64,
        };
        let summary = run(&options(url, load, 100, 500)).await.unwrap();
        // Due at 100, 105, ..., 595 ms: the warmup's 20 are not counted.
        assert_eq!(summary.requests, 100);
        assert_eq!(summary.ok, 100);
        assert_eq!(summary.rate, Some(200.0));
        assert!(summary.window_s >= 0.5);
        assert!(summary.qps <= 200.0);
    }

    #[tokio::test]
    async fn open_loop_latency_includes_a_stall_behind_the_cap() {
        // One call stalls 300 ms while only one request may be in flight:
        // the requests due during the stall wait, and their latency counted
        // from the due time must show it. Call 30 is due at 300 ms.
        let url = start_fake(FakeServing {
            stall_call: Some((30, Duration::from_millis(300))),
            ..Default::default()
        })
        .await;
        let load = Load::Open {
            rate: 100.0,
            max_outstanding: 1,
        };
        let summary = run(&options(url, load, 100, 900)).await.unwrap();
        assert_eq!(summary.requests, 90);
        assert!(
            summary.latency_ms.max >= 300.0,
            "max {}",
            summary.latency_ms.max
        );
        // About 30 requests were due during the stall, 20 of them waited
        // over 100 ms: far more than the 5 % above p95.
        assert!(
            summary.latency_ms.p95 >= 100.0,
            "p95 {}",
            summary.latency_ms.p95
        );
    }

    #[tokio::test]
    async fn invalid_options_name_the_flag() {
        let url = "http://127.0.0.1:1".to_string();
        let zero_rate = Load::Open {
            rate: 0.0,
            max_outstanding: 10,
        };
        let error = run(&options(url.clone(), zero_rate, 0, 100))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid argument `--rate`: must be a number in 0.001..=1e9 requests per second, got 0"
        );
        let error = run(&options(
            url.clone(),
            Load::Closed { concurrency: 0 },
            0,
            100,
        ))
        .await
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid argument `--concurrency`: must be in 1..=100000, got 0"
        );
        let error = run(&options(url, Load::Closed { concurrency: 1 }, 0, 0))
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            Error::InvalidArgument {
                flag: "--duration",
                ..
            }
        ));
    }

    #[tokio::test]
    async fn unreachable_serving_fails_to_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let error = run(&options(url, Load::Closed { concurrency: 1 }, 0, 100))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Connect { .. }));
    }
}

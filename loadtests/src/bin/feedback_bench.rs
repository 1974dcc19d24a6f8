//! Feedback at scale, measured in one process on this machine:
//!
//! - ingest: SubmitFeedback over gRPC from concurrent clients (each
//!   feedback joined with its inference record in monitoring), one event
//!   per call, then SubmitFeedbackBatch (`--batch` events per call),
//!   against a raw sqlx loop inserting the same rows one committed row at
//!   a time into the same database: acknowledged durable events per
//!   second;
//! - export: ExportDataset (EVAL) of `--export-rows` feedback rows joined
//!   with as many inference records, in rows per second, with the peak
//!   RSS of the export (run it at 100k and at 1M rows to compare).
//!
//! `keel-feedback-bench --backend sqlite|postgres [--events N] [--clients N]
//! [--connections N] [--batch N] [--export-rows N]`; each client has its
//! own connection unless `--connections` says otherwise. Postgres:
//! KEEL_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test)
//! must accept CREATE DATABASE.

// A benchmark's report is its standard output.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context};
use clap::{Parser, ValueEnum};
use indicatif::ProgressBar;
use keel_core::{CancellationToken, Listeners};
use keel_proto::v1 as pb;
use keel_proto::v1::feedback_service_client::FeedbackServiceClient;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;
use keel_store::Store;
use tokio::net::TcpListener;
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// Feedback events submitted in the ingest run (0: skip it).
    #[arg(long, default_value_t = 60_000)]
    events: usize,
    /// Concurrent gRPC clients in the ingest run.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// HTTP/2 connections the ingest's clients share (0: one each, as
    /// clients in separate processes or browsers have).
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Events per SubmitFeedbackBatch call in the batched ingest run (1:
    /// only the one-event-per-call run).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Rows of the raw sqlx loop (one commit each).
    #[arg(long, default_value_t = 5_000)]
    raw_rows: usize,
    /// Feedback rows (and inference records) exported (0: skip it).
    #[arg(long, default_value_t = 0)]
    export_rows: usize,
}

// The allocator the services' binaries run with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Requests the ingest's feedback refers to.
const REQUESTS: usize = 10_000;
const RECORD_BATCH: usize = 1_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("cpu: {}", keel_loadtests::machine::cpu_model());
    let databases = Databases::create(args.backend).await?;
    let shutdown = CancellationToken::new();
    let monitoring_url = start_monitoring(&databases.monitoring, shutdown.clone()).await?;
    let feedback_url =
        start_feedback(&databases.feedback, &monitoring_url, shutdown.clone()).await?;
    let monitoring = MonitoringServiceClient::connect(monitoring_url.clone()).await?;
    let feedback_channel = Channel::from_shared(feedback_url.clone())?
        .connect()
        .await?;

    if args.events > 0 {
        record_inferences(&monitoring, REQUESTS, "seeding inference records").await?;
        let connections = if args.connections == 0 {
            args.clients
        } else {
            args.connections
        };
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections {
            channels.push(
                Channel::from_shared(feedback_url.clone())?
                    .connect()
                    .await?,
            );
        }
        let single_rate = ingest(&args, &channels, 1).await?;
        let batch_rate = if args.batch > 1 {
            Some(ingest(&args, &channels, args.batch).await?)
        } else {
            None
        };
        let raw_rate = raw_loop(&args, &databases.feedback).await?;
        println!(
            "ingest, one event per call / raw loop: {:.2}x ({:?})",
            single_rate / raw_rate,
            args.backend
        );
        if let Some(batch_rate) = batch_rate {
            println!(
                "ingest, {} events per call / raw loop: {:.2}x ({:?})",
                args.batch,
                batch_rate / raw_rate,
                args.backend
            );
        }
    }
    if args.export_rows > 0 {
        export(&args, &monitoring, &databases.feedback, &feedback_channel).await?;
    }
    shutdown.cancel();
    Ok(())
}

/// Peak resident memory of this process, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// Starts the peak over from the memory in use now (Linux: clear_refs 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Databases {
    feedback: String,
    monitoring: String,
    _dir: Option<tempfile::TempDir>,
}

impl Databases {
    async fn create(backend: Backend) -> anyhow::Result<Databases> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                Ok(Databases {
                    feedback: keel_store::default_sqlite_url(dir.path(), "feedback"),
                    monitoring: keel_store::default_sqlite_url(dir.path(), "monitoring"),
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => Ok(Databases {
                feedback: keel_store::testing::fresh_postgres_database().await?,
                monitoring: keel_store::testing::fresh_postgres_database().await?,
                _dir: None,
            }),
        }
    }
}

async fn listeners() -> anyhow::Result<(Listeners, String)> {
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", grpc.local_addr()?);
    Ok((Listeners { grpc, admin: None }, url))
}

async fn start_monitoring(
    database_url: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<String> {
    let (listeners, url) = listeners().await?;
    let config = keel_monitoring::Config {
        database_url: database_url.to_string(),
        ..keel_monitoring::Config::default()
    };
    tokio::spawn(keel_monitoring::serve(config, listeners, shutdown));
    Ok(url)
}

async fn start_feedback(
    database_url: &str,
    monitoring_url: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<String> {
    let (listeners, url) = listeners().await?;
    let config = keel_feedback::Config {
        database_url: database_url.to_string(),
        monitoring_url: monitoring_url.to_string(),
        ..keel_feedback::Config::default()
    };
    tokio::spawn(keel_feedback::serve(config, listeners, shutdown));
    Ok(url)
}

fn request_id(n: usize) -> String {
    uuid::Uuid::from_u128(n as u128 + 1)
        .hyphenated()
        .to_string()
}

fn inference(n: usize) -> pb::InferenceRecord {
    let question = format!("How do I change the delivery address of order {n}?");
    pb::InferenceRecord {
        request_id: request_id(n),
        trace_id: format!("{:032x}", n + 1),
        endpoint: "support".to_string(),
        route_target: "support-chain@champion".to_string(),
        served_model: "support-chain".to_string(),
        served_version: 1 + (n % 3) as u32,
        question: question.clone(),
        input_messages: vec![pb::ChatMessage {
            role: "user".to_string(),
            content: question.clone(),
        }],
        contexts: (0..3)
            .map(|passage| pb::Citation {
                point_id: format!("doc-{}-{passage}", n % 500),
                score: 0.8 - passage as f32 * 0.1,
                text: "Orders can be changed in Account > Orders until they ship; \
                       after that, contact support with the order number."
                    .to_string(),
            })
            .collect(),
        prompt_messages: vec![
            pb::ChatMessage {
                role: "system".to_string(),
                content: "Answer from the context.".to_string(),
            },
            pb::ChatMessage {
                role: "user".to_string(),
                content: question,
            },
        ],
        answer: format!("Open Account > Orders, pick order {n} and change the address."),
        latency_ms: 40.0,
        status: pb::InferenceStatus::Ok as i32,
        started_at_ms: 1_700_000_000_000 + n as i64,
        generator: "extractive".to_string(),
        ..Default::default()
    }
}

async fn record_inferences(
    monitoring: &MonitoringServiceClient<Channel>,
    count: usize,
    what: &str,
) -> anyhow::Result<()> {
    let bar = keel_loadtests::progress::bar(count as u64, what);
    for start in (0..count).step_by(RECORD_BATCH) {
        let records = (start..(start + RECORD_BATCH).min(count))
            .map(inference)
            .collect();
        monitoring
            .clone()
            .record_inferences(pb::RecordInferencesRequest { records })
            .await?;
        bar.inc(RECORD_BATCH.min(count - start) as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

fn thumbs(n: usize, run: &str) -> pb::SubmitFeedbackRequest {
    pb::SubmitFeedbackRequest {
        request_id: request_id(n % REQUESTS),
        kind: pb::FeedbackKind::Thumbs as i32,
        value: if n.is_multiple_of(4) { -1.0 } else { 1.0 },
        user_id: format!("user-{}", n % 97),
        idempotency_key: format!("{run}-{n}"),
        ..Default::default()
    }
}

/// Returns the acknowledged events per second, `batch` events per call.
async fn ingest(args: &Args, channels: &[Channel], batch: usize) -> anyhow::Result<f64> {
    let call = if batch == 1 {
        "SubmitFeedback".to_string()
    } else {
        format!("SubmitFeedbackBatch of {batch}")
    };
    let warm_run = format!("warm-{batch}");
    let run = format!("run-{batch}");
    // Warm-up: connections, statement caches.
    let warm = Submit {
        events: 1_000.max(batch),
        clients: args.clients,
        batch,
        run: &warm_run,
    };
    warm.all(channels, None).await?;
    let bar = keel_loadtests::progress::bar(args.events as u64, &call);
    let started = Instant::now();
    let measured = Submit {
        events: args.events,
        run: &run,
        ..warm
    };
    measured.all(channels, Some(bar.clone())).await?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let rate = args.events as f64 / elapsed.as_secs_f64();
    println!(
        "ingest ({call}): {} acknowledged feedback events from {} clients over {} connections in {:.2} s: {rate:.0} events/s",
        args.events,
        args.clients,
        channels.len(),
        elapsed.as_secs_f64(),
    );
    Ok(rate)
}

/// One ingest run: `events` from `clients`, `batch` per call.
#[derive(Clone, Copy)]
struct Submit<'a> {
    events: usize,
    clients: usize,
    batch: usize,
    /// Makes the idempotency keys of each run its own.
    run: &'a str,
}

impl Submit<'_> {
    async fn all(&self, channels: &[Channel], bar: Option<ProgressBar>) -> anyhow::Result<()> {
        let Submit {
            events,
            clients,
            batch,
            run,
        } = *self;
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(clients);
        for index in 0..clients {
            let mut client = FeedbackServiceClient::new(channels[index % channels.len()].clone());
            let next = next.clone();
            let bar = bar.clone();
            let run = run.to_string();
            tasks.push(tokio::spawn(async move {
                loop {
                    let first = next.fetch_add(batch, std::sync::atomic::Ordering::Relaxed);
                    if first >= events {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let last = (first + batch).min(events);
                    if batch == 1 {
                        client.submit_feedback(thumbs(first, &run)).await?;
                    } else {
                        let items = (first..last).map(|n| thumbs(n, &run)).collect();
                        client
                            .submit_feedback_batch(pb::SubmitFeedbackBatchRequest { items })
                            .await?;
                    }
                    if let Some(bar) = &bar {
                        bar.inc((last - first) as u64);
                    }
                }
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    }
}

/// One INSERT per committed row, on one connection, into the same table;
/// returns the rows per second.
async fn raw_loop(args: &Args, database_url: &str) -> anyhow::Result<f64> {
    let store = Store::open(database_url, keel_feedback::store::MIGRATIONS).await?;
    let bar = keel_loadtests::progress::bar(args.raw_rows as u64, "raw sqlx insert loop");
    let started = Instant::now();
    for n in 0..args.raw_rows {
        sqlx::query(
            "INSERT INTO feedback (id, request_id, kind, value, correction, comment, user_id,
                 idempotency_key, created_at_ms, endpoint, served_model, served_version,
                 joined_at_ms)
             VALUES ($1, $2, 'thumbs', 1, '', '', $3, $4, $5, 'support', 'support-chain', 1, $5)",
        )
        .bind(uuid::Uuid::now_v7().hyphenated().to_string())
        .bind(request_id(n % REQUESTS))
        .bind(format!("user-{}", n % 97))
        .bind(format!("raw-{n}"))
        .bind(keel_core::time::now_ms())
        .execute(store.pool())
        .await?;
        bar.inc(1);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let raw_rate = args.raw_rows as f64 / elapsed.as_secs_f64();
    println!(
        "raw sqlx loop: {} rows, one commit each, in {:.2} s: {:.0} rows/s",
        args.raw_rows,
        elapsed.as_secs_f64(),
        raw_rate
    );
    store.close().await;
    Ok(raw_rate)
}

async fn export(
    args: &Args,
    monitoring: &MonitoringServiceClient<Channel>,
    feedback_url: &str,
    channel: &Channel,
) -> anyhow::Result<()> {
    let rows = args.export_rows;
    record_inferences(monitoring, rows, "seeding inference records").await?;
    // Feedback rows go straight to the table, joined, in groups: seeding
    // through gRPC would measure the ingest again.
    let store = Store::open(feedback_url, keel_feedback::store::MIGRATIONS).await?;
    let bar = keel_loadtests::progress::bar(rows as u64, "seeding feedback rows");
    for start in (0..rows).step_by(RECORD_BATCH) {
        let group: Vec<keel_feedback::store::FeedbackRow> = (start
            ..(start + RECORD_BATCH).min(rows))
            .map(|n| keel_feedback::store::FeedbackRow {
                id: uuid::Uuid::now_v7().hyphenated().to_string(),
                request_id: request_id(n),
                session_id: String::new(),
                passage_id: String::new(),
                kind: "rating".to_string(),
                value: 1.0 + (n % 5) as f64,
                correction: String::new(),
                comment: String::new(),
                reason: String::new(),
                tags: "[]".to_string(),
                user_id: format!("user-{}", n % 97),
                idempotency_key: None,
                created_at_ms: 1_700_000_000_000 + n as i64,
                endpoint: "support".to_string(),
                served_model: "support-chain".to_string(),
                served_version: 1 + (n % 3) as i64,
                joined_at_ms: Some(1_700_000_000_000 + n as i64),
            })
            .collect();
        keel_feedback::store::insert_feedback_group(&store, &group).await?;
        bar.inc(group.len() as u64);
    }
    bar.finish_and_clear();
    store.close().await;

    reset_peak_rss();
    let before = peak_rss_mib();
    let bar = keel_loadtests::progress::bar(rows as u64, "ExportDataset EVAL");
    let started = Instant::now();
    let mut stream = FeedbackServiceClient::new(channel.clone())
        .export_dataset(pb::ExportDatasetRequest {
            kind: pb::DatasetKind::Eval as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut lines = 0_u64;
    let mut bytes = 0_u64;
    let mut summary = None;
    while let Some(message) = stream.message().await? {
        if message.summary.is_some() {
            summary = message.summary;
            break;
        }
        if !message.json.is_empty() {
            lines += 1;
            bytes += message.json.len() as u64 + 1;
            bar.set_position(message.requests_done);
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let summary = summary.ok_or_else(|| anyhow!("the export ended without its summary"))?;
    if summary.lines != rows as u64 {
        return Err(anyhow!("exported {} lines of {rows}", summary.lines))
            .context("every row has a rating: each should give an EVAL line");
    }
    let peak = peak_rss_mib();
    println!(
        "export: {lines} EVAL lines ({:.0} MiB of JSONL) in {:.2} s: {:.0} rows/s; peak RSS {:.0} MiB \
         during the export (from {:.0} MiB before it; both services and the reader in this process)",
        bytes as f64 / (1024.0 * 1024.0),
        elapsed.as_secs_f64(),
        lines as f64 / elapsed.as_secs_f64(),
        peak,
        before
    );
    Ok(())
}

//! keel-serving: endpoints that route traffic to registered RAG chains, and
//! the query pipeline (resolve, retrieve, render, generate) with inference
//! records shipped to monitoring off the request path.

pub mod api;
pub mod cache;
pub mod clients;
pub mod completion;
pub mod config;
pub mod encoded_records;
pub mod endpoint;
pub mod endpoints;
pub mod error;
pub mod experiment;
pub mod experiment_cache;
pub mod experiment_figures;
pub mod experiment_store;
pub mod experiment_verdict;
pub mod experiments;
pub mod fallback;
pub mod generation;
pub mod guardrails;
pub mod inference_delivery;
pub mod inference_log;
pub mod jetstream_sink;
pub mod limits;
pub mod metrics;
pub mod openai;
pub mod pipeline;
pub mod prompt;
pub mod record_sink;
pub mod registry;
pub mod resolver;
pub mod retrieval;
pub mod routing;
pub mod standalone;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use keel_core::metrics::{MetricsError, ServiceMetrics};
use keel_core::{CancellationToken, GrpcService, Listeners};
use keel_models::ModelCatalog;
use keel_proto::v1::serving_service_server::ServingServiceServer;
use keel_proto::v1::vector_index_service_client::VectorIndexServiceClient;

pub use config::Config;
pub use error::Error;

use crate::api::ServingApi;
use crate::completion::Completions;
use crate::config::DeliveryTarget;
use crate::endpoints::Endpoints;
use crate::experiment_figures::FigureSources;
use crate::experiments::Experiments;
use crate::generation::GenerationPool;
use crate::inference_log::InferenceLog;
use crate::jetstream_sink::JetStreamSink;
use crate::metrics::QueryMetrics;
use crate::pipeline::Pipeline;
use crate::record_sink::RecordSink;
use crate::registry::RegistryClient;
use crate::resolver::Resolver;
use crate::retrieval::Retriever;

/// Serves the serving service on `listeners` until `shutdown` is cancelled,
/// then drains in-flight calls, flushes the queued inference records
/// (bounded by a deadline) and returns.
pub async fn serve(
    config: Config,
    catalog: ModelCatalog,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.check().map_err(Error::Config)?;
    let store = keel_store::Store::open(&config.database_url, store::MIGRATIONS).await?;
    let tls = config.tls.load()?;
    let auth = keel_core::auth::Auth::through_registry(&config.auth, &tls.client)?;
    let key = auth.own_key();
    let dependency_timeout = Duration::from_millis(config.dependency_timeout_ms);
    let delivery_timeout = Duration::from_millis(config.delivery_timeout_ms);
    let registry = RegistryClient::new(
        clients::lazy_channel(&config.registry_url, dependency_timeout, key, &tls.client)?,
        dependency_timeout,
    );
    let vector_index_channel = clients::lazy_channel(
        &config.vector_index_url,
        dependency_timeout,
        key,
        &tls.client,
    )?;
    let retriever = Retriever::new(vector_index_channel.clone(), dependency_timeout);
    let sink = match config.inference_delivery {
        DeliveryTarget::Monitoring => RecordSink::monitoring(clients::lazy_channel(
            &config.monitoring_url,
            delivery_timeout,
            key,
            &tls.client,
        )?),
        DeliveryTarget::Nats => RecordSink::JetStream(
            JetStreamSink::connect(&config.nats)
                .await
                .map_err(|error| Error::Config(format!("serving.nats.url: {error}")))?,
        ),
    };

    // Background tasks stop after the gRPC server drained, so the last
    // queries still get their records delivered.
    let background_shutdown = CancellationToken::new();
    let (inference_log, delivery_worker) = inference_log::open(&config)?;
    let delivery_task = tokio::spawn(delivery_worker.run(sink, background_shutdown.clone()));
    let resolver = Arc::new(Resolver::new(
        registry.clone(),
        Duration::from_millis(config.resolver_ttl_ms),
    ));
    let service_metrics = ServiceMetrics::new("serving");
    let answer_cache = cache::AnswerCache::new(vector_index_channel.clone(), config.cache.clone())
        .with_metrics(&service_metrics)?;
    let cache_task = (!config.cache.endpoints.is_empty()).then(|| {
        tokio::spawn(cache::forget_on_alias_moves(
            answer_cache.clone(),
            resolver.subscribe_moves(),
            background_shutdown.clone(),
        ))
    });
    let watch_task = tokio::spawn(resolver.clone().watch_aliases(background_shutdown.clone()));

    let generation_pool = GenerationPool::new(config.generation_workers, config.generation_queue);
    register_queue_metrics(&service_metrics, &inference_log, &generation_pool)?;
    let completions = Completions::new(
        catalog.clone(),
        generation_pool.clone(),
        config.prices.clone(),
    );
    let limiter =
        limits::Limiter::open(&config.limits, &config.database_url, config.prices.clone())
            .await?
            .with_metrics(&service_metrics)?;
    let pipeline = Arc::new(
        Pipeline::new(
            store.clone(),
            resolver,
            retriever,
            catalog,
            generation_pool,
            inference_log.clone(),
            QueryMetrics::new(&service_metrics, config.prices.clone())?,
        )
        .with_limiter(limiter)
        .with_cache(answer_cache.clone())
        .with_guardrails(
            guardrails::Guardrails::new(
                vector_index_channel.clone(),
                config.guardrails.clone(),
                dependency_timeout,
            )
            .with_metrics(&service_metrics)?,
        ),
    );
    let experiments = Arc::new(Experiments::new(
        store.clone(),
        pipeline.running_experiments(),
        registry.clone(),
        FigureSources::new(
            clients::lazy_channel(&config.monitoring_url, dependency_timeout, key, &tls.client)?,
            clients::lazy_channel(&config.feedback_url, dependency_timeout, key, &tls.client)?,
            dependency_timeout,
        ),
    ));
    let refresher_task = tokio::spawn(experiments.clone().run_refresher(
        Duration::from_millis(config.experiment_refresh_ms),
        background_shutdown.clone(),
    ));
    let openai_routes = openai::router(openai::OpenAiState {
        pipeline: pipeline.clone(),
        endpoints: Endpoints::new(store.clone(), registry.clone()),
        vector_index: VectorIndexServiceClient::new(vector_index_channel),
        dependency_timeout,
    });
    let api = ServingApi::new(
        Endpoints::new(store.clone(), registry),
        pipeline.clone(),
        completions,
        inference_log.clone(),
        experiments,
    );
    let service = GrpcService {
        name: "serving",
        grpc_names: vec!["keel.v1.ServingService"],
        routes: tonic::service::Routes::new(ServingServiceServer::new(api)),
        store: Some(store.clone()),
        extra_descriptor_sets: Vec::new(),
        metrics: service_metrics,
        cors_allowed_origins: Vec::new(),
        warmup: None,
        auth: auth.clone(),
        tls: tls.server.clone(),
    };
    let served = keel_core::run_service(service, openai_routes, listeners, shutdown).await;

    // The last queries' records are committed before delivery winds down.
    inference_log.close().await;
    background_shutdown.cancel();
    if let Err(error) = refresher_task.await {
        tracing::warn!(%error, "experiment refresher failed");
    }
    if let Some(task) = cache_task {
        if let Err(error) = task.await {
            tracing::warn!(%error, "cache invalidation task failed");
        }
    }
    if let Err(error) = watch_task.await {
        tracing::warn!(%error, "alias watch task failed");
    }
    if let Err(error) = delivery_task.await {
        tracing::warn!(%error, "inference delivery task failed");
    }
    let stats = inference_log.stats();
    tracing::info!(
        delivered = stats.delivered,
        waiting = stats.queue_depth,
        failed_delivery = stats.failed_delivery,
        dropped_queue_full = stats.dropped_queue_full,
        dropped_disk_budget = stats.dropped_disk_budget,
        "inference log closed"
    );
    store.close().await;
    served?;
    Ok(())
}

/// The queues a query may wait in: inference records on their way to
/// monitoring, and queries waiting for a generation worker.
fn register_queue_metrics(
    registry: &ServiceMetrics,
    inference_log: &InferenceLog,
    generation_pool: &GenerationPool,
) -> Result<(), MetricsError> {
    type Read = fn(&inference_log::DeliveryStats) -> u64;
    let gauges: [(&str, &str, Read); 2] = [
        (
            "keel_serving_inference_queue_depth",
            "Inference records waiting for delivery to monitoring.",
            |stats| stats.queue_depth,
        ),
        (
            "keel_serving_inference_spill_bytes",
            "The inference spill log's size on disk.",
            |stats| stats.spill_bytes,
        ),
    ];
    for (name, help, read) in gauges {
        let log = inference_log.clone();
        registry.gauge_fn(name, help, move || {
            i64::try_from(read(&log.stats())).unwrap_or(i64::MAX)
        })?;
    }
    let counters: [(&str, &str, Read); 7] = [
        (
            "keel_serving_inference_records_enqueued_total",
            "Inference records accepted by the inference log.",
            |stats| stats.enqueued,
        ),
        (
            "keel_serving_inference_records_delivered_total",
            "Inference records acknowledged by monitoring.",
            |stats| stats.delivered,
        ),
        (
            "keel_serving_inference_records_dropped_queue_full_total",
            "Inference records dropped because the in-memory queue was full.",
            |stats| stats.dropped_queue_full,
        ),
        (
            "keel_serving_inference_records_dropped_disk_budget_total",
            "Inference records dropped because the spill log reached its disk budget.",
            |stats| stats.dropped_disk_budget,
        ),
        (
            "keel_serving_inference_records_lost_write_error_total",
            "Inference records lost to a failed spill log write.",
            |stats| stats.lost_write_error,
        ),
        (
            "keel_serving_inference_records_failed_delivery_total",
            "Inference records monitoring refused as invalid.",
            |stats| stats.failed_delivery,
        ),
        (
            "keel_serving_inference_records_recovered_total",
            "Inference records found undelivered in the spill log at start.",
            |stats| stats.recovered,
        ),
    ];
    for (name, help, read) in counters {
        let log = inference_log.clone();
        registry.counter_fn(name, help, move || read(&log.stats()))?;
    }
    let pool = generation_pool.clone();
    registry.gauge_fn(
        "keel_serving_generation_queue_depth",
        "Queries waiting for a generation worker.",
        move || i64::try_from(pool.waiting()).unwrap_or(i64::MAX),
    )
}

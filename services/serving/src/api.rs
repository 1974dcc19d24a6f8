//! The gRPC edge: converts requests, calls the domain, converts answers.

use std::pin::Pin;
use std::sync::Arc;

use keel_core::telemetry::CallerTrace;
use keel_proto::v1 as pb;
use keel_proto::v1::serving_service_server::ServingService;
use keel_types::Scope;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::completion::{CompletionInput, Completions};
use crate::endpoint::{Endpoint, EndpointInput, RouteInput};
use crate::endpoints::Endpoints;
use crate::experiment::StartInput;
use crate::experiments::Experiments;
use crate::inference_log::InferenceLog;
use crate::pipeline::{MessageInput, Pipeline, QueryEvent, QueryInput, QueryOutput};

type QueryEventStream = Pin<Box<dyn Stream<Item = Result<pb::QueryStreamEvent, Status>> + Send>>;

pub struct ServingApi {
    endpoints: Endpoints,
    pipeline: Arc<Pipeline>,
    completions: Completions,
    inference_log: InferenceLog,
    experiments: Arc<Experiments>,
}

impl ServingApi {
    pub fn new(
        endpoints: Endpoints,
        pipeline: Arc<Pipeline>,
        completions: Completions,
        inference_log: InferenceLog,
        experiments: Arc<Experiments>,
    ) -> ServingApi {
        ServingApi {
            endpoints,
            pipeline,
            completions,
            inference_log,
            experiments,
        }
    }
}

fn endpoint_input(
    name: String,
    routes: Vec<pb::Route>,
    description: String,
    shadow: Option<pb::Shadow>,
) -> EndpointInput {
    EndpointInput {
        shadow: shadow.map(|shadow| (shadow.target, shadow.percent)),
        name,
        routes: routes
            .into_iter()
            .map(|route| RouteInput {
                target: route.target,
                weight: route.weight,
            })
            .collect(),
        description,
    }
}

fn endpoint_to_proto(endpoint: Endpoint) -> pb::Endpoint {
    pb::Endpoint {
        name: endpoint.name,
        routes: endpoint
            .routes
            .into_iter()
            .map(|route| pb::Route {
                target: route.target.to_string(),
                weight: route.weight,
            })
            .collect(),
        description: endpoint.description,
        created_at_ms: endpoint.created_at_ms,
        updated_at_ms: endpoint.updated_at_ms,
        shadow: endpoint.shadow.map(|shadow| pb::Shadow {
            target: shadow.target.to_string(),
            percent: shadow.percent,
        }),
    }
}

/// A conversation as the caller sent it; roles are checked in validation.
fn messages_input(messages: Vec<pb::ChatMessage>) -> Vec<MessageInput> {
    messages
        .into_iter()
        .map(|chat| MessageInput {
            role: chat.role,
            content: chat.content,
        })
        .collect()
}

/// The query a call asks, once its key is known to hold `query:<endpoint>`
/// for the endpoint it names (the auth layer cannot read the message).
fn query_input(request: Request<pb::QueryRequest>) -> Result<QueryInput, Status> {
    let endpoint_scope = Scope::Query(Some(request.get_ref().endpoint.clone()));
    keel_core::auth::require(request.extensions(), &endpoint_scope)?;
    // The query's span is the call's server span: no tower layer span
    // wraps this call (see `grpc_tracing::HANDLER_TRACED_PATHS`).
    let caller = CallerTrace::from_headers(request.metadata().as_ref());
    let caller_key = keel_core::auth::caller_name(request.extensions());
    let message = request.into_inner();
    Ok(QueryInput {
        caller_key,
        endpoint: message.endpoint,
        question: message.question,
        messages: messages_input(message.messages),
        user_id: message.user_id,
        session_id: message.session_id,
        target: message.target,
        full_citation_text: message.full_citation_text,
        caller,
    })
}

fn query_output_to_proto(output: QueryOutput) -> pb::QueryResponse {
    pb::QueryResponse {
        answer: output.answer,
        citations: output.citations.into_iter().map(Into::into).collect(),
        request_id: output.request_id.to_string(),
        trace_id: output.trace_id,
        served_model: output.served_model,
        served_version: output.served_version,
        route_target: output.route_target,
        usage: Some(pb::TokenUsage {
            input_tokens: output.input_tokens,
            output_tokens: output.output_tokens,
        }),
        latency_ms: output.latency_ms,
        finish_reason: pb::FinishReason::from(output.finish_reason) as i32,
        generator: output.generator,
        cost_usd: output.cost_usd,
        cache_hit: pb::CacheHit::from(output.cache_hit) as i32,
    }
}

fn query_event_to_proto(event: QueryEvent) -> pb::QueryStreamEvent {
    use pb::query_stream_event::Event;
    let event = match event {
        QueryEvent::Citations {
            citations,
            request_id,
            trace_id,
        } => Event::Citations(pb::Citations {
            citations: citations.into_iter().map(Into::into).collect(),
            request_id: request_id.to_string(),
            trace_id,
        }),
        QueryEvent::Delta(text) => Event::Delta(pb::AnswerDelta { text }),
        QueryEvent::Done(output) => Event::Done(pb::QueryDone {
            usage: Some(pb::TokenUsage {
                input_tokens: output.input_tokens,
                output_tokens: output.output_tokens,
            }),
            latency_ms: output.latency_ms,
            request_id: output.request_id.to_string(),
            trace_id: output.trace_id,
            served_model: output.served_model,
            served_version: output.served_version,
            route_target: output.route_target,
            finish_reason: pb::FinishReason::from(output.finish_reason) as i32,
            generator: output.generator,
            cost_usd: output.cost_usd,
            cache_hit: pb::CacheHit::from(output.cache_hit) as i32,
        }),
    };
    pb::QueryStreamEvent { event: Some(event) }
}

#[tonic::async_trait]
impl ServingService for ServingApi {
    async fn create_endpoint(
        &self,
        request: Request<pb::CreateEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let message = request.into_inner();
        let input = endpoint_input(
            message.name,
            message.routes,
            message.description,
            message.shadow,
        );
        let endpoint = self.endpoints.create(&input).await?;
        Ok(Response::new(endpoint_to_proto(endpoint)))
    }

    async fn get_endpoint(
        &self,
        request: Request<pb::GetEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let endpoint = self.endpoints.get(&request.into_inner().name).await?;
        Ok(Response::new(endpoint_to_proto(endpoint)))
    }

    async fn list_endpoints(
        &self,
        _request: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let endpoints = self.endpoints.list().await?;
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints: endpoints.into_iter().map(endpoint_to_proto).collect(),
        }))
    }

    async fn update_endpoint(
        &self,
        request: Request<pb::UpdateEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let message = request.into_inner();
        let input = endpoint_input(
            message.name,
            message.routes,
            message.description,
            message.shadow,
        );
        let endpoint = self.endpoints.update(&input).await?;
        Ok(Response::new(endpoint_to_proto(endpoint)))
    }

    async fn delete_endpoint(
        &self,
        request: Request<pb::DeleteEndpointRequest>,
    ) -> Result<Response<pb::DeleteEndpointResponse>, Status> {
        self.endpoints.delete(&request.into_inner().name).await?;
        Ok(Response::new(pb::DeleteEndpointResponse {}))
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let output = self.pipeline.query(query_input(request)?).await?;
        Ok(Response::new(query_output_to_proto(output)))
    }

    type QueryStreamStream = QueryEventStream;

    async fn query_stream(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<QueryEventStream>, Status> {
        let stream = self.pipeline.query_stream(query_input(request)?).await?;
        let first = tokio_stream::once(Ok(query_event_to_proto(stream.first)));
        // Dropping this stream (the client cancelled) drops the receiver,
        // which is what tells the generator to stop.
        let rest = ReceiverStream::new(stream.rest)
            .map(|item| item.map(query_event_to_proto).map_err(Status::from));
        Ok(Response::new(Box::pin(first.chain(rest))))
    }

    async fn get_serving_stats(
        &self,
        _request: Request<pb::GetServingStatsRequest>,
    ) -> Result<Response<pb::ServingStats>, Status> {
        let stats = self.inference_log.stats();
        Ok(Response::new(pb::ServingStats {
            records_enqueued: stats.enqueued,
            records_delivered: stats.delivered,
            records_dropped_queue_full: stats.dropped_queue_full,
            records_failed_delivery: stats.failed_delivery,
            queue_depth: stats.queue_depth,
            records_dropped_disk_budget: stats.dropped_disk_budget,
            records_lost_write_error: stats.lost_write_error,
            spill_bytes: stats.spill_bytes,
            records_recovered: stats.recovered,
            spill_torn_tails: stats.spill_torn_tails,
        }))
    }

    async fn generate(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let message = request.into_inner();
        let input = CompletionInput {
            generator: message.generator,
            messages: messages_input(message.messages),
            params: message.params.unwrap_or_default().into(),
        };
        let completion = self.completions.complete(input).await?;
        let generation = completion.generation;
        Ok(Response::new(pb::GenerateResponse {
            text: generation.text,
            usage: Some(pb::TokenUsage {
                input_tokens: generation.input_tokens,
                output_tokens: generation.output_tokens,
            }),
            finish_reason: pb::FinishReason::from(generation.finish_reason) as i32,
            latency_ms: completion.latency_ms,
            cost_usd: completion.cost_usd,
        }))
    }

    async fn start_experiment(
        &self,
        request: Request<pb::StartExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let input = StartInput::from_proto(request.into_inner());
        let experiment = self.experiments.start(&input).await?;
        Ok(Response::new(experiment.into()))
    }

    async fn get_experiment(
        &self,
        request: Request<pb::GetExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let message = request.into_inner();
        let experiment = self.experiments.get(&message.id, message.refresh).await?;
        Ok(Response::new(experiment.into()))
    }

    async fn list_experiments(
        &self,
        request: Request<pb::ListExperimentsRequest>,
    ) -> Result<Response<pb::ListExperimentsResponse>, Status> {
        let message = request.into_inner();
        let experiments = self
            .experiments
            .list(&message.endpoint, message.running_only)
            .await?;
        Ok(Response::new(pb::ListExperimentsResponse {
            experiments: experiments.into_iter().map(Into::into).collect(),
        }))
    }

    async fn stop_experiment(
        &self,
        request: Request<pb::StopExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let message = request.into_inner();
        let experiment = self
            .experiments
            .stop(&message.id, &message.reason, &message.actor)
            .await?;
        Ok(Response::new(experiment.into()))
    }
}

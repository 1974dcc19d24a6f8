//! The gRPC edge: validates requests, converts protobuf <-> domain and maps
//! errors. The only module that sees generated types.

use keel_core::validate;
use keel_core::FieldError;
use keel_proto::v1 as pb;
use keel_proto::v1::monitoring_service_server::MonitoringService;
use tonic::{Request, Response, Status};

use crate::inferences::{
    ChatMessage, Context, FinishReason, InferenceCursor, InferenceFilter, InferenceLog,
    InferenceRecord, InferenceStatus, RequestId,
};
use crate::metrics::VersionMetrics;

pub const MAX_BATCH: usize = 1000;
pub const DEFAULT_WINDOW_SECONDS: u32 = 3600;
pub const MAX_WINDOW_SECONDS: u32 = 30 * 24 * 3600;

pub struct MonitoringApi {
    log: InferenceLog,
}

impl MonitoringApi {
    pub fn new(log: InferenceLog) -> MonitoringApi {
        MonitoringApi { log }
    }
}

#[tonic::async_trait]
impl MonitoringService for MonitoringApi {
    async fn record_inferences(
        &self,
        request: Request<pb::RecordInferencesRequest>,
    ) -> Result<Response<pb::RecordInferencesResponse>, Status> {
        let wire_records = request.into_inner().records;
        if wire_records.len() > MAX_BATCH {
            return Err(FieldError::new(
                "records",
                format!(
                    "must hold at most {MAX_BATCH} records, got {}",
                    wire_records.len()
                ),
            )
            .into());
        }
        let mut records = Vec::with_capacity(wire_records.len());
        for (index, wire_record) in wire_records.into_iter().enumerate() {
            records.push(record_from_proto(index, wire_record)?);
        }
        let stored = self.log.record(records).await?;
        Ok(Response::new(pb::RecordInferencesResponse { stored }))
    }

    async fn get_inference(
        &self,
        request: Request<pb::GetInferenceRequest>,
    ) -> Result<Response<pb::InferenceRecord>, Status> {
        let request_id = RequestId::parse("request_id", &request.into_inner().request_id)?;
        let record = self.log.get(request_id).await?;
        Ok(Response::new(record_to_proto(record)))
    }

    async fn batch_get_inferences(
        &self,
        request: Request<pb::BatchGetInferencesRequest>,
    ) -> Result<Response<pb::BatchGetInferencesResponse>, Status> {
        let wire_ids = request.into_inner().request_ids;
        if wire_ids.is_empty() || wire_ids.len() > MAX_BATCH {
            return Err(FieldError::new(
                "request_ids",
                format!("must hold 1..={MAX_BATCH} ids, got {}", wire_ids.len()),
            )
            .into());
        }
        let mut request_ids = Vec::with_capacity(wire_ids.len());
        for (index, wire_id) in wire_ids.iter().enumerate() {
            request_ids.push(RequestId::parse(&format!("request_ids[{index}]"), wire_id)?);
        }
        let records = self.log.batch_get(&request_ids).await?;
        Ok(Response::new(pb::BatchGetInferencesResponse {
            records: records.into_iter().map(record_to_proto).collect(),
        }))
    }

    async fn list_inferences(
        &self,
        request: Request<pb::ListInferencesRequest>,
    ) -> Result<Response<pb::ListInferencesResponse>, Status> {
        let list = request.into_inner();
        let filter = filter_from_proto(&list)?;
        let page_size = validate::page_size("page_size", list.page_size)?;
        let after = if list.page_token.is_empty() {
            None
        } else {
            Some(InferenceCursor::decode("page_token", &list.page_token)?)
        };
        let page = self.log.list(&filter, after, page_size).await?;
        Ok(Response::new(pb::ListInferencesResponse {
            records: page.records.into_iter().map(record_to_proto).collect(),
            next_page_token: page.next.map(|cursor| cursor.encode()).unwrap_or_default(),
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let metrics_request = request.into_inner();
        validate::name("endpoint", &metrics_request.endpoint)?;
        let window_seconds = if metrics_request.window_seconds == 0 {
            DEFAULT_WINDOW_SECONDS
        } else {
            metrics_request.window_seconds
        };
        validate::in_range(
            "window_seconds",
            u64::from(window_seconds),
            1,
            u64::from(MAX_WINDOW_SECONDS),
        )?;
        let since_ms = keel_core::time::now_ms() - i64::from(window_seconds) * 1000;
        let versions = self
            .log
            .metrics(&metrics_request.endpoint, since_ms)
            .await?;
        Ok(Response::new(pb::GetMetricsResponse {
            endpoint: metrics_request.endpoint,
            window_seconds,
            versions: versions.into_iter().map(metrics_to_proto).collect(),
        }))
    }

    async fn get_trace(
        &self,
        _request: Request<pb::GetTraceRequest>,
    ) -> Result<Response<pb::Trace>, Status> {
        Err(Status::unimplemented("the trace store is not built yet"))
    }

    async fn search_traces(
        &self,
        _request: Request<pb::SearchTracesRequest>,
    ) -> Result<Response<pb::SearchTracesResponse>, Status> {
        Err(Status::unimplemented("the trace store is not built yet"))
    }
}

fn filter_from_proto(list: &pb::ListInferencesRequest) -> Result<InferenceFilter, FieldError> {
    let mut filter = InferenceFilter::default();
    if !list.endpoint.is_empty() {
        validate::name("endpoint", &list.endpoint)?;
        filter.endpoint = Some(list.endpoint.clone());
    }
    if !list.served_model.is_empty() {
        validate::name("served_model", &list.served_model)?;
        filter.served_model = Some(list.served_model.clone());
    }
    if list.served_version != 0 {
        filter.served_version = Some(list.served_version);
    }
    if list.since_ms < 0 {
        return Err(FieldError::new(
            "since_ms",
            format!("must be >= 0 (0: unbounded), got {}", list.since_ms),
        ));
    }
    if list.until_ms < 0 {
        return Err(FieldError::new(
            "until_ms",
            format!("must be >= 0 (0: unbounded), got {}", list.until_ms),
        ));
    }
    if list.since_ms != 0 {
        filter.since_ms = Some(list.since_ms);
    }
    if list.until_ms != 0 {
        filter.until_ms = Some(list.until_ms);
    }
    if list.since_ms != 0 && list.until_ms != 0 && list.until_ms < list.since_ms {
        return Err(FieldError::new(
            "until_ms",
            format!(
                "must be >= since_ms ({}), got {}",
                list.since_ms, list.until_ms
            ),
        ));
    }
    Ok(filter)
}

fn record_from_proto(
    index: usize,
    record: pb::InferenceRecord,
) -> Result<InferenceRecord, FieldError> {
    let field = |name: &str| format!("records[{index}].{name}");
    let request_id = RequestId::parse(&field("request_id"), &record.request_id)?;
    validate::name(&field("endpoint"), &record.endpoint)?;
    if !record.latency_ms.is_finite() || record.latency_ms < 0.0 {
        return Err(FieldError::new(
            field("latency_ms"),
            format!("must be finite and >= 0, got {}", record.latency_ms),
        ));
    }
    let status = match pb::InferenceStatus::try_from(record.status) {
        Ok(pb::InferenceStatus::Ok) => InferenceStatus::Ok,
        Ok(pb::InferenceStatus::Error) => InferenceStatus::Error,
        _ => {
            return Err(FieldError::new(
                field("status"),
                format!(
                    "must be INFERENCE_STATUS_OK or INFERENCE_STATUS_ERROR, got {}",
                    record.status
                ),
            ))
        }
    };
    if record.started_at_ms < 0 {
        return Err(FieldError::new(
            field("started_at_ms"),
            format!("must be >= 0, got {}", record.started_at_ms),
        ));
    }
    let mut contexts = Vec::with_capacity(record.contexts.len());
    for (context_index, citation) in record.contexts.into_iter().enumerate() {
        if !citation.score.is_finite() {
            return Err(FieldError::new(
                field(&format!("contexts[{context_index}].score")),
                format!("must be finite, got {}", citation.score),
            ));
        }
        contexts.push(Context {
            point_id: citation.point_id,
            score: citation.score,
            text: citation.text,
        });
    }
    let finish_reason = match pb::FinishReason::try_from(record.finish_reason) {
        Ok(pb::FinishReason::Unspecified) => FinishReason::Unspecified,
        Ok(pb::FinishReason::Stop) => FinishReason::Stop,
        Ok(pb::FinishReason::Length) => FinishReason::Length,
        Ok(pb::FinishReason::StopSequence) => FinishReason::StopSequence,
        Ok(pb::FinishReason::Cancelled) => FinishReason::Cancelled,
        Err(_) => {
            return Err(FieldError::new(
                field("finish_reason"),
                format!("must be a FinishReason value, got {}", record.finish_reason),
            ))
        }
    };
    let usage = record.usage.unwrap_or_default();
    Ok(InferenceRecord {
        request_id,
        trace_id: record.trace_id,
        span_id: record.span_id,
        endpoint: record.endpoint,
        route_target: record.route_target,
        served_model: record.served_model,
        served_version: record.served_version,
        user_id: record.user_id,
        session_id: record.session_id,
        question: record.question,
        input_messages: messages_from_proto(record.input_messages),
        contexts,
        prompt_messages: messages_from_proto(record.prompt_messages),
        answer: record.answer,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        latency_ms: record.latency_ms,
        status,
        error: record.error,
        started_at_ms: record.started_at_ms,
        generator: record.generator,
        finish_reason,
    })
}

fn messages_from_proto(messages: Vec<pb::ChatMessage>) -> Vec<ChatMessage> {
    messages
        .into_iter()
        .map(|message| ChatMessage {
            role: message.role,
            content: message.content,
        })
        .collect()
}

fn messages_to_proto(messages: Vec<ChatMessage>) -> Vec<pb::ChatMessage> {
    messages
        .into_iter()
        .map(|message| pb::ChatMessage {
            role: message.role,
            content: message.content,
        })
        .collect()
}

fn record_to_proto(record: InferenceRecord) -> pb::InferenceRecord {
    let status = match record.status {
        InferenceStatus::Ok => pb::InferenceStatus::Ok,
        InferenceStatus::Error => pb::InferenceStatus::Error,
    };
    pb::InferenceRecord {
        request_id: record.request_id.to_string(),
        trace_id: record.trace_id,
        span_id: record.span_id,
        endpoint: record.endpoint,
        route_target: record.route_target,
        served_model: record.served_model,
        served_version: record.served_version,
        user_id: record.user_id,
        session_id: record.session_id,
        question: record.question,
        input_messages: messages_to_proto(record.input_messages),
        contexts: record
            .contexts
            .into_iter()
            .map(|context| pb::Citation {
                point_id: context.point_id,
                score: context.score,
                text: context.text,
            })
            .collect(),
        prompt_messages: messages_to_proto(record.prompt_messages),
        answer: record.answer,
        usage: Some(pb::TokenUsage {
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
        }),
        latency_ms: record.latency_ms,
        status: status as i32,
        error: record.error,
        started_at_ms: record.started_at_ms,
        generator: record.generator,
        finish_reason: finish_reason_to_proto(record.finish_reason) as i32,
    }
}

fn finish_reason_to_proto(reason: FinishReason) -> pb::FinishReason {
    match reason {
        FinishReason::Unspecified => pb::FinishReason::Unspecified,
        FinishReason::Stop => pb::FinishReason::Stop,
        FinishReason::Length => pb::FinishReason::Length,
        FinishReason::StopSequence => pb::FinishReason::StopSequence,
        FinishReason::Cancelled => pb::FinishReason::Cancelled,
    }
}

fn metrics_to_proto(metrics: VersionMetrics) -> pb::VersionMetrics {
    pb::VersionMetrics {
        served_model: metrics.served_model,
        served_version: metrics.served_version,
        request_count: metrics.request_count,
        error_count: metrics.error_count,
        error_rate: metrics.error_rate,
        latency_p50_ms: metrics.latency_p50_ms,
        latency_p95_ms: metrics.latency_p95_ms,
        latency_p99_ms: metrics.latency_p99_ms,
        input_tokens: metrics.input_tokens,
        output_tokens: metrics.output_tokens,
    }
}

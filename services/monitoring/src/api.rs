//! The gRPC edge: validates requests, converts protobuf <-> domain and maps
//! errors. The only module that sees generated Keel types; OTLP export
//! requests go to `otlp`, which converts them itself because the HTTP
//! intake sends the same messages.

use keel_core::payload::json_to_struct;
use keel_proto::v1 as pb;
use keel_proto::v1::monitoring_service_server::MonitoringService;
use keel_types::{validate, FieldError, InferenceRecord, RequestId};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

use crate::inferences::{InferenceCursor, InferenceFilter, InferenceLog};
use crate::metrics::VersionMetrics;
use crate::otlp;
use crate::span_writer::SpanWriter;
use crate::traces::{
    SpanKind, SpanStatus, StoredEvent, StoredSpan, TraceCursor, TraceFilter, TraceId,
    TraceStatusFilter, TraceStore, TraceSummary,
};

pub const MAX_BATCH: usize = 1000;
pub const DEFAULT_WINDOW_SECONDS: u32 = 3600;
pub const MAX_WINDOW_SECONDS: u32 = 30 * 24 * 3600;

/// Longest `model` and `service_name` filter: attribute values, not Keel
/// names, so only their length is bounded.
pub const MAX_FILTER_BYTES: usize = 256;

/// `since_ms`/`until_ms` beyond this overflow Unix nanoseconds in an i64
/// (the year 2262).
pub const MAX_TIME_MS: i64 = i64::MAX / 1_000_000;

pub struct MonitoringApi {
    log: InferenceLog,
    traces: TraceStore,
}

impl MonitoringApi {
    pub fn new(log: InferenceLog, traces: TraceStore) -> MonitoringApi {
        MonitoringApi { log, traces }
    }
}

/// The OTLP collector's TraceService: any OpenTelemetry SDK exports here.
pub struct OtlpTraceApi {
    writer: SpanWriter,
}

impl OtlpTraceApi {
    pub fn new(writer: SpanWriter) -> OtlpTraceApi {
        OtlpTraceApi { writer }
    }
}

#[tonic::async_trait]
impl TraceService for OtlpTraceApi {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let outcome = otlp::export(&self.writer, request.into_inner()).await?;
        let partial = outcome.rejected_spans > 0 || !outcome.error_message.is_empty();
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: partial.then_some(ExportTracePartialSuccess {
                rejected_spans: outcome.rejected_spans,
                error_message: outcome.error_message,
            }),
        }))
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
            records.push(InferenceRecord::from_proto(
                &format!("records[{index}]"),
                wire_record,
            )?);
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
        Ok(Response::new(record.into()))
    }

    async fn batch_get_inferences(
        &self,
        request: Request<pb::BatchGetInferencesRequest>,
    ) -> Result<Response<pb::BatchGetInferencesResponse>, Status> {
        let request = request.into_inner();
        let wire_ids = request.request_ids;
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
        if request.keep_until_ms < 0 {
            return Err(FieldError::new(
                "keep_until_ms",
                format!("must be >= 0 (0: not set), got {}", request.keep_until_ms),
            )
            .into());
        }
        let keep_until_ms = (request.keep_until_ms > 0).then_some(request.keep_until_ms);
        let records = self.log.batch_get(&request_ids, keep_until_ms).await?;
        Ok(Response::new(pb::BatchGetInferencesResponse {
            records: records.into_iter().map(pb::InferenceRecord::from).collect(),
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
            records: page
                .records
                .into_iter()
                .map(pb::InferenceRecord::from)
                .collect(),
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
        request: Request<pb::GetTraceRequest>,
    ) -> Result<Response<pb::Trace>, Status> {
        let trace_id = TraceId::parse("trace_id", &request.into_inner().trace_id)?;
        let spans = self.traces.get(&trace_id).await?;
        Ok(Response::new(pb::Trace {
            trace_id: trace_id.to_string(),
            spans: spans.into_iter().map(span_to_proto).collect(),
        }))
    }

    async fn search_traces(
        &self,
        request: Request<pb::SearchTracesRequest>,
    ) -> Result<Response<pb::SearchTracesResponse>, Status> {
        let search = request.into_inner();
        let filter = trace_filter_from_proto(&search)?;
        let page_size = validate::page_size("page_size", search.page_size)?;
        let after = if search.page_token.is_empty() {
            None
        } else {
            Some(TraceCursor::decode("page_token", &search.page_token)?)
        };
        let page = self.traces.search(&filter, after, page_size).await?;
        Ok(Response::new(pb::SearchTracesResponse {
            traces: page.traces.into_iter().map(summary_to_proto).collect(),
            next_page_token: page.next.map(|cursor| cursor.encode()).unwrap_or_default(),
        }))
    }
}

fn trace_filter_from_proto(search: &pb::SearchTracesRequest) -> Result<TraceFilter, FieldError> {
    let mut filter = TraceFilter::default();
    if !search.endpoint.is_empty() {
        validate::name("endpoint", &search.endpoint)?;
        filter.endpoint = Some(search.endpoint.clone());
    }
    if !search.model.is_empty() {
        validate::max_len("model", &search.model, MAX_FILTER_BYTES)?;
        filter.model = Some(search.model.clone());
    }
    if !search.service_name.is_empty() {
        validate::max_len("service_name", &search.service_name, MAX_FILTER_BYTES)?;
        filter.service_name = Some(search.service_name.clone());
    }
    filter.since_unix_nano = time_ms_to_nanos("since_ms", search.since_ms)?;
    filter.until_unix_nano = time_ms_to_nanos("until_ms", search.until_ms)?;
    if search.since_ms != 0 && search.until_ms != 0 && search.since_ms >= search.until_ms {
        return Err(FieldError::new(
            "until_ms",
            format!(
                "must be > since_ms ({}), got {}",
                search.since_ms, search.until_ms
            ),
        ));
    }
    let min_duration_ms = search.min_duration_ms;
    if !min_duration_ms.is_finite() || min_duration_ms < 0.0 {
        return Err(FieldError::new(
            "min_duration_ms",
            format!("must be finite and >= 0 (0: any), got {min_duration_ms}"),
        ));
    }
    if min_duration_ms > 0.0 {
        // Rounded up, so a trace shorter than asked never matches; the cast
        // saturates, and then nothing lasts that long.
        filter.min_duration_nanos = Some((min_duration_ms * 1_000_000.0).ceil() as i64);
    }
    filter.status = match pb::TraceStatusFilter::try_from(search.status) {
        Ok(pb::TraceStatusFilter::Any) => TraceStatusFilter::Any,
        Ok(pb::TraceStatusFilter::Ok) => TraceStatusFilter::Ok,
        Ok(pb::TraceStatusFilter::Error) => TraceStatusFilter::Error,
        Err(_) => {
            return Err(FieldError::new(
                "status",
                format!(
                    "must be TRACE_STATUS_FILTER_ANY, _OK or _ERROR, got {}",
                    search.status
                ),
            ))
        }
    };
    Ok(filter)
}

/// Unix ms as Unix ns; 0 is unbounded (`None`).
fn time_ms_to_nanos(field: &str, ms: i64) -> Result<Option<i64>, FieldError> {
    if !(0..=MAX_TIME_MS).contains(&ms) {
        return Err(FieldError::new(
            field,
            format!("must be in 0..={MAX_TIME_MS} (Unix ms; 0: unbounded), got {ms}"),
        ));
    }
    Ok((ms != 0).then_some(ms * 1_000_000))
}

fn span_kind_to_proto(kind: SpanKind) -> pb::SpanKind {
    match kind {
        SpanKind::Unspecified => pb::SpanKind::Unspecified,
        SpanKind::Internal => pb::SpanKind::Internal,
        SpanKind::Server => pb::SpanKind::Server,
        SpanKind::Client => pb::SpanKind::Client,
        SpanKind::Producer => pb::SpanKind::Producer,
        SpanKind::Consumer => pb::SpanKind::Consumer,
    }
}

fn span_status_to_proto(status: SpanStatus) -> pb::SpanStatus {
    match status {
        SpanStatus::Unset => pb::SpanStatus::Unset,
        SpanStatus::Ok => pb::SpanStatus::Ok,
        SpanStatus::Error => pb::SpanStatus::Error,
    }
}

fn span_to_proto(span: StoredSpan) -> pb::Span {
    let duration_ms = span.duration_ms();
    pb::Span {
        trace_id: span.trace_id,
        span_id: span.span_id,
        parent_span_id: span.parent_span_id,
        name: span.name,
        kind: span_kind_to_proto(span.kind) as i32,
        service_name: span.service_name,
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        duration_ms,
        status: span_status_to_proto(span.status) as i32,
        status_message: span.status_message,
        attributes: Some(json_to_struct(&span.attributes)),
        events: span.events.into_iter().map(event_to_proto).collect(),
        scope_name: span.scope_name,
    }
}

fn event_to_proto(event: StoredEvent) -> pb::SpanEvent {
    pb::SpanEvent {
        name: event.name,
        time_unix_nano: event.time_unix_nano,
        attributes: Some(json_to_struct(&event.attributes)),
    }
}

fn summary_to_proto(summary: TraceSummary) -> pb::TraceSummary {
    pb::TraceSummary {
        trace_id: summary.trace_id,
        root_span_name: summary.root_span_name,
        service_name: summary.service_name,
        start_time_unix_nano: summary.start_time_unix_nano,
        duration_ms: summary.duration_ms,
        span_count: summary.span_count,
        status: span_status_to_proto(summary.status) as i32,
        endpoint: summary.endpoint,
        models: summary.models,
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
    if !list.shadow_of.is_empty() {
        filter.shadow_of = Some(RequestId::parse("shadow_of", &list.shadow_of)?);
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

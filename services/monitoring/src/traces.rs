//! The trace store: spans as OpenTelemetry exporters send them, stored as
//! one chunk per trace and write (OTLP protobuf; see `span_encoding`), one
//! summary row per trace written beside them in the same transaction, and
//! the queries over both (a whole trace by id; traces by endpoint, model,
//! duration, status and time, newest first).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use keel_store::{Backend, Store, WriteTx};
use keel_types::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::otlp;
use crate::store::{self, TraceQuery, TraceRow, TraceUpsert};
use keel_types::page_cursor::{CursorKey, PageCursor};

/// The span attribute naming the Keel endpoint a trace served.
pub const ENDPOINT_ATTRIBUTE: &str = "keel.endpoint";
/// The span attribute naming the model a generation asked for.
pub const MODEL_ATTRIBUTE: &str = "gen_ai.request.model";
/// Indexed summary values (endpoint, root service, models) are cut to this
/// many bytes: a Postgres btree entry holds at most about 2.7 kB, and one
/// oversized attribute must not fail the batch it arrived in.
pub const MAX_INDEXED_BYTES: usize = 256;

/// A trace id: 32 lowercase hex digits, not all zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(String);

impl TraceId {
    /// Accepts upper case, and stores the id lowered so lookups agree.
    pub fn parse(field: &str, text: &str) -> Result<TraceId, FieldError> {
        let well_formed = text.len() == 32
            && text.bytes().all(|byte| byte.is_ascii_hexdigit())
            && text.bytes().any(|byte| byte != b'0');
        if !well_formed {
            let shown: String = text.chars().take(64).collect();
            return Err(FieldError::new(
                field,
                format!("must be 32 hex digits, not all zero, got {shown:?}"),
            ));
        }
        Ok(TraceId(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

impl CursorKey for TraceId {
    fn parse_key(text: &str) -> Option<TraceId> {
        // Tokens carry the lowered id; anything else was not handed out here.
        let id = TraceId::parse("page_token", text).ok()?;
        (id.0 == text).then_some(id)
    }
}

/// OpenTelemetry's span kind, numbered as OTLP and keel.v1 number it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanKind {
    #[default]
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// Unknown codes read as unspecified: a newer exporter's kind is still
    /// a span worth keeping.
    pub fn from_code(code: i64) -> SpanKind {
        match code {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    pub fn code(self) -> i64 {
        match self {
            SpanKind::Unspecified => 0,
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
            SpanKind::Producer => 4,
            SpanKind::Consumer => 5,
        }
    }
}

/// OpenTelemetry's span status. Ordered so that the worst status of a
/// trace is the maximum of its spans' statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum SpanStatus {
    #[default]
    Unset,
    Ok,
    Error,
}

impl SpanStatus {
    pub fn from_code(code: i64) -> SpanStatus {
        match code {
            1 => SpanStatus::Ok,
            store::SPAN_STATUS_ERROR => SpanStatus::Error,
            _ => SpanStatus::Unset,
        }
    }

    pub fn code(self) -> i64 {
        match self {
            SpanStatus::Unset => 0,
            SpanStatus::Ok => 1,
            SpanStatus::Error => store::SPAN_STATUS_ERROR,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub name: String,
    pub time_unix_nano: i64,
    pub attributes: Map<String, Value>,
}

/// One span as the store reads it back: ids in lowercase hex, attribute
/// values as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: SpanKind,
    /// The resource's `service.name`.
    pub service_name: String,
    pub scope_name: String,
    pub start_time_unix_nano: i64,
    pub end_time_unix_nano: i64,
    pub status: SpanStatus,
    pub status_message: String,
    pub attributes: Map<String, Value>,
    pub events: Vec<StoredEvent>,
}

impl StoredSpan {
    /// 0 when the span ends before it starts (a clock step, an exporter bug).
    pub fn duration_ms(&self) -> f64 {
        nanos_to_ms(
            self.end_time_unix_nano
                .saturating_sub(self.start_time_unix_nano),
        )
    }
}

fn nanos_to_ms(nanos: i64) -> f64 {
    nanos.max(0) as f64 / 1_000_000.0
}

/// What a search answers for one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    pub trace_id: String,
    /// Empty while the root span has not arrived.
    pub root_span_name: String,
    /// The root span's service.
    pub service_name: String,
    pub start_time_unix_nano: i64,
    /// First start to last end.
    pub duration_ms: f64,
    pub span_count: u32,
    /// The worst status of its spans.
    pub status: SpanStatus,
    pub endpoint: String,
    /// Sorted.
    pub models: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceStatusFilter {
    #[default]
    Any,
    /// No ERROR span.
    Ok,
    /// At least one ERROR span.
    Error,
}

/// Which traces a search returns; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceFilter {
    pub endpoint: Option<String>,
    pub model: Option<String>,
    /// The root span's service.
    pub service_name: Option<String>,
    /// Trace start, inclusive.
    pub since_unix_nano: Option<i64>,
    /// Trace start, exclusive.
    pub until_unix_nano: Option<i64>,
    pub min_duration_nanos: Option<i64>,
    pub status: TraceStatusFilter,
}

/// Where the next page of traces starts: `position` is the last trace's
/// start in Unix nanoseconds.
pub type TraceCursor = PageCursor<TraceId>;

#[derive(Debug, Clone, PartialEq)]
pub struct TracePage {
    pub traces: Vec<TraceSummary>,
    pub next: Option<TraceCursor>,
}

/// A span encoded for storage, with what the trace summary needs of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// No parent span.
    pub is_root: bool,
    pub name: String,
    pub service_name: String,
    pub start_time_unix_nano: i64,
    pub end_time_unix_nano: i64,
    pub status: SpanStatus,
    /// `keel.endpoint`, when the span has it as a string.
    pub endpoint: Option<String>,
    /// `gen_ai.request.model`, when the span has it as a string.
    pub model: Option<String>,
    /// The span as a one-span OTLP `TracesData`: chunks concatenate them.
    pub encoded: Vec<u8>,
}

/// A span as chunks stored before the protobuf encoding hold it: a JSON
/// array of these, which migration 3 wrote from the one-row-per-span
/// table. The chunk's row has the trace id.
#[derive(Debug, Deserialize)]
struct SpanDocument {
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i64,
    service_name: String,
    scope_name: String,
    start_time_unix_nano: i64,
    end_time_unix_nano: i64,
    status_code: i64,
    status_message: String,
    attributes: Map<String, Value>,
    events: Vec<StoredEvent>,
}

/// A string attribute as a trace summary keeps it (endpoint, model): none
/// when empty, else cut to [`MAX_INDEXED_BYTES`] and cleaned of NUL.
pub(crate) fn indexed_text(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| otlp::clean_text(truncate(text, MAX_INDEXED_BYTES).to_string()))
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The root span a batch brought for a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct RootSpan {
    pub span_id: String,
    pub name: String,
    pub service_name: String,
}

/// What a batch of newly stored spans adds to one trace's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceDelta {
    pub trace_id: String,
    pub start_time_unix_nano: i64,
    pub end_time_unix_nano: i64,
    /// The earliest of the batch's spans without a parent.
    pub root: Option<RootSpan>,
    pub new_spans: u64,
    pub status: SpanStatus,
    /// From the earliest of the batch's spans that name one.
    pub endpoint: Option<String>,
    pub models: BTreeSet<String>,
}

/// Folds the newly stored spans of one trace (at least one) into what
/// they add to its summary. Merging a delta into the stored summary keeps
/// the earlier start, the later end, the worst status, the first root and
/// endpoint stored, and adds the span counts (see `store::merge_traces`).
pub fn summarize(spans: &[&PreparedSpan]) -> TraceDelta {
    let mut ordered: Vec<&PreparedSpan> = spans.to_vec();
    ordered.sort_by(|a, b| {
        (a.start_time_unix_nano, &a.span_id).cmp(&(b.start_time_unix_nano, &b.span_id))
    });
    let mut delta = TraceDelta {
        trace_id: ordered
            .first()
            .map(|span| span.trace_id.clone())
            .unwrap_or_default(),
        start_time_unix_nano: i64::MAX,
        end_time_unix_nano: i64::MIN,
        root: None,
        new_spans: 0,
        status: SpanStatus::Unset,
        endpoint: None,
        models: BTreeSet::new(),
    };
    // By start time: the first root and the first endpoint seen are the
    // earliest.
    for span in ordered {
        delta.start_time_unix_nano = delta.start_time_unix_nano.min(span.start_time_unix_nano);
        delta.end_time_unix_nano = delta.end_time_unix_nano.max(span.end_time_unix_nano);
        delta.new_spans += 1;
        delta.status = delta.status.max(span.status);
        if delta.root.is_none() && span.is_root {
            delta.root = Some(RootSpan {
                span_id: span.span_id.clone(),
                name: span.name.clone(),
                service_name: truncate(&span.service_name, MAX_INDEXED_BYTES).to_string(),
            });
        }
        if delta.endpoint.is_none() {
            delta.endpoint.clone_from(&span.endpoint);
        }
        if let Some(model) = &span.model {
            delta.models.insert(model.clone());
        }
    }
    delta
}

/// Stores the spans not stored yet and folds them into their traces'
/// summaries, all in one transaction. Returns how many spans were new.
///
/// A trace's new spans go in one chunk row. A span is stored once: copies
/// within the call are dropped, and so are spans a chunk of the trace
/// already holds (an exporter's retry, spans re-sent in another batch).
/// Most traces arrive whole in one write: their summaries are inserted
/// first, and only the traces that turn out to be stored already have
/// their chunks read and their summaries merged.
pub async fn write_spans(store: &Store, spans: &[&PreparedSpan]) -> Result<u64, Error> {
    let mut by_trace: BTreeMap<&str, Vec<&PreparedSpan>> = BTreeMap::new();
    for span in spans {
        by_trace.entry(&span.trace_id).or_default().push(span);
    }
    for spans in by_trace.values_mut() {
        spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
        spans.dedup_by(|a, b| a.span_id == b.span_id);
    }
    let backend = store.backend();
    let mut tx = store.begin_write().await?;
    let summaries: Vec<TraceUpsert> = by_trace
        .values()
        .map(|spans| summary_row(&summarize(spans), &BTreeSet::new()))
        .collect();
    let new_traces: HashSet<String> = store::insert_new_traces(&mut tx, backend, &summaries)
        .await?
        .into_iter()
        .collect();
    let stored: Vec<&str> = by_trace
        .keys()
        .copied()
        .filter(|trace_id| !new_traces.contains(*trace_id))
        .collect();
    if !stored.is_empty() {
        let merges = drop_stored_spans(&mut tx, backend, &stored, &mut by_trace).await?;
        store::merge_traces(&mut tx, backend, &merges).await?;
    }
    let by_trace: Vec<(&str, Vec<&PreparedSpan>)> = by_trace
        .into_iter()
        .filter(|(_, spans)| !spans.is_empty())
        .collect();
    let models: Vec<(&str, &str)> = by_trace
        .iter()
        .flat_map(|(trace_id, spans)| {
            let models: BTreeSet<&str> = spans
                .iter()
                .filter_map(|span| span.model.as_deref())
                .collect();
            models.into_iter().map(move |model| (model, *trace_id))
        })
        .collect();
    store::insert_trace_models(&mut tx, backend, &models).await?;
    let new_spans = by_trace.iter().map(|(_, spans)| spans.len() as u64).sum();
    let chunks = by_trace
        .iter()
        .map(|(trace_id, spans)| (trace_id.to_string(), chunk(spans)))
        .collect();
    store::insert_span_chunks(&mut tx, backend, chunks).await?;
    tx.commit().await?;
    Ok(new_spans)
}

/// For traces already stored: drops from `by_trace` the spans their chunks
/// hold, and returns what the remaining spans add to each summary.
async fn drop_stored_spans(
    tx: &mut WriteTx,
    backend: Backend,
    trace_ids: &[&str],
    by_trace: &mut BTreeMap<&str, Vec<&PreparedSpan>>,
) -> Result<Vec<TraceUpsert>, Error> {
    let stored_models: HashMap<String, String> = store::lock_traces(tx, backend, trace_ids)
        .await?
        .into_iter()
        .collect();
    for (trace_id, chunk) in store::chunks_of_traces(tx, backend, trace_ids).await? {
        // A chunk that cannot be read must not make the trace's later
        // spans unstorable too: they are stored, at the risk of a copy.
        let stored: HashSet<String> = match decode_chunks(&trace_id, &[chunk]) {
            Ok(spans) => spans.into_iter().map(|old| old.span_id).collect(),
            Err(error) => {
                tracing::warn!(%error, "stored spans unreadable; new spans stored beside them");
                continue;
            }
        };
        if let Some(spans) = by_trace.get_mut(trace_id.as_str()) {
            spans.retain(|span| !stored.contains(&span.span_id));
        }
    }
    let mut merges = Vec::new();
    for trace_id in trace_ids {
        let Some(spans) = by_trace.get(trace_id).filter(|spans| !spans.is_empty()) else {
            continue;
        };
        let stored: BTreeSet<String> = stored_models
            .get(*trace_id)
            .map(|models| parse_models(trace_id, models))
            .unwrap_or_default()
            .into_iter()
            .collect();
        merges.push(summary_row(&summarize(spans), &stored));
    }
    Ok(merges)
}

/// The spans of one trace, concatenated: concatenated protobuf messages
/// are one message whose repeated fields hold all of theirs, so the chunk
/// decodes as one `TracesData`.
fn chunk(spans: &[&PreparedSpan]) -> Vec<u8> {
    let length = spans.iter().map(|span| span.encoded.len()).sum();
    let mut encoded = Vec::with_capacity(length);
    for span in spans {
        encoded.extend_from_slice(&span.encoded);
    }
    encoded
}

/// The summary row of `delta`, listing its models with `stored_models`.
fn summary_row(delta: &TraceDelta, stored_models: &BTreeSet<String>) -> TraceUpsert {
    let (root_span_id, root_span_name, root_service_name) = match &delta.root {
        Some(root) => (
            root.span_id.clone(),
            root.name.clone(),
            root.service_name.clone(),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    let models: BTreeSet<&String> = delta.models.iter().chain(stored_models).collect();
    TraceUpsert {
        trace_id: delta.trace_id.clone(),
        start_time_unix_nano: delta.start_time_unix_nano,
        end_time_unix_nano: delta.end_time_unix_nano,
        root_span_id,
        root_span_name,
        root_service_name,
        span_count: i64::try_from(delta.new_spans).unwrap_or(i64::MAX),
        status_code: delta.status.code(),
        endpoint: delta.endpoint.clone().unwrap_or_default(),
        models: serde_json::to_string(&models).unwrap_or_else(|_| "[]".to_string()),
    }
}

/// A summary's model list; one that cannot be read counts as empty (it is
/// only shown and rewritten, never searched: `trace_models` is).
fn parse_models(trace_id: &str, models: &str) -> Vec<String> {
    serde_json::from_str(models).unwrap_or_else(|error| {
        tracing::warn!(%trace_id, %error, "stored model list unreadable");
        Vec::new()
    })
}

/// The read side of the trace store.
#[derive(Clone)]
pub struct TraceStore {
    store: Store,
}

impl TraceStore {
    pub fn new(store: Store) -> TraceStore {
        TraceStore { store }
    }

    /// Every stored span of the trace, by start time then span id.
    pub async fn get(&self, trace_id: &TraceId) -> Result<Vec<StoredSpan>, Error> {
        let chunks = store::get_span_chunks(&self.store, trace_id.as_str()).await?;
        if chunks.is_empty() {
            return Err(Error::TraceNotFound {
                trace_id: trace_id.to_string(),
            });
        }
        let trace_id = trace_id.to_string();
        tokio::task::spawn_blocking(move || decode_chunks(&trace_id, &chunks)).await?
    }

    /// One page of matching traces, newest first by (start, trace id).
    pub async fn search(
        &self,
        filter: &TraceFilter,
        after: Option<TraceCursor>,
        page_size: u32,
    ) -> Result<TracePage, Error> {
        let page_len = page_size as usize;
        let query = TraceQuery {
            endpoint: filter.endpoint.clone(),
            model: filter.model.clone(),
            service_name: filter.service_name.clone(),
            since_unix_nano: filter.since_unix_nano,
            until_unix_nano: filter.until_unix_nano,
            min_duration_nanos: filter.min_duration_nanos,
            errors: match filter.status {
                TraceStatusFilter::Any => None,
                TraceStatusFilter::Ok => Some(false),
                TraceStatusFilter::Error => Some(true),
            },
            before: after.map(|cursor| (cursor.position, cursor.key.to_string())),
            // One more than asked tells whether another page follows.
            limit: i64::from(page_size) + 1,
        };
        let mut rows = store::search_traces(&self.store, &query).await?;
        let has_more = rows.len() > page_len;
        rows.truncate(page_len);
        let next = match rows.last() {
            Some(last) if has_more => Some(TraceCursor {
                position: last.start_time_unix_nano,
                key: TraceId(last.trace_id.clone()),
            }),
            _ => None,
        };
        let traces = rows.into_iter().map(summary_from_row).collect();
        Ok(TracePage { traces, next })
    }
}

fn summary_from_row(row: TraceRow) -> TraceSummary {
    TraceSummary {
        models: parse_models(&row.trace_id, &row.models),
        duration_ms: nanos_to_ms(
            row.end_time_unix_nano
                .saturating_sub(row.start_time_unix_nano),
        ),
        trace_id: row.trace_id,
        root_span_name: row.root_span_name,
        service_name: row.root_service_name,
        start_time_unix_nano: row.start_time_unix_nano,
        span_count: u32::try_from(row.span_count).unwrap_or(u32::MAX),
        status: SpanStatus::from_code(row.status_code),
        endpoint: row.endpoint,
    }
}

/// Every span of the chunks, by start time then span id; a span that two
/// racing writers both stored is kept once.
fn decode_chunks(trace_id: &str, chunks: &[Vec<u8>]) -> Result<Vec<StoredSpan>, Error> {
    let mut seen = HashSet::new();
    let mut spans = Vec::new();
    for chunk in chunks {
        for span in decode_chunk(trace_id, chunk)? {
            if seen.insert(span.span_id.clone()) {
                spans.push(span);
            }
        }
    }
    spans.sort_by(|a, b| {
        (a.start_time_unix_nano, &a.span_id).cmp(&(b.start_time_unix_nano, &b.span_id))
    });
    Ok(spans)
}

/// A chunk is protobuf (`TracesData`, whose first byte is field 1's tag,
/// 0x0a) or, written by migration 3 from older rows, a JSON array (`[`).
fn decode_chunk(trace_id: &str, chunk: &[u8]) -> Result<Vec<StoredSpan>, Error> {
    let corrupt = |reason: String| Error::CorruptSpans {
        trace_id: trace_id.to_string(),
        reason,
    };
    if chunk.first() == Some(&b'[') {
        let documents: Vec<SpanDocument> =
            serde_json::from_slice(chunk).map_err(|error| corrupt(error.to_string()))?;
        return Ok(documents
            .into_iter()
            .map(|document| decode_span(trace_id, document))
            .collect());
    }
    otlp::decode_stored(chunk).map_err(|error| corrupt(error.to_string()))
}

fn decode_span(trace_id: &str, document: SpanDocument) -> StoredSpan {
    StoredSpan {
        trace_id: trace_id.to_string(),
        span_id: document.span_id,
        parent_span_id: document.parent_span_id,
        name: document.name,
        kind: SpanKind::from_code(document.kind),
        service_name: document.service_name,
        scope_name: document.scope_name,
        start_time_unix_nano: document.start_time_unix_nano,
        end_time_unix_nano: document.end_time_unix_nano,
        status: SpanStatus::from_code(document.status_code),
        status_message: document.status_message,
        attributes: document.attributes,
        events: document.events,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{
        ResourceSpans, ScopeSpans, Span as OtlpSpan, Status,
    };

    use super::*;

    /// A span of trace `trace` (a number, as 32 hex digits) with span id
    /// `span` (16 hex digits), starting at `start` ns and lasting `nanos`.
    pub(crate) fn span(trace: u128, span: u64, parent: Option<u64>, start: i64) -> StoredSpan {
        StoredSpan {
            trace_id: format!("{trace:032x}"),
            span_id: format!("{span:016x}"),
            parent_span_id: parent.map(|id| format!("{id:016x}")).unwrap_or_default(),
            name: format!("span {span}"),
            kind: SpanKind::Internal,
            service_name: "serving".to_string(),
            scope_name: "keel".to_string(),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000_000,
            status: SpanStatus::Unset,
            status_message: String::new(),
            attributes: Map::new(),
            events: Vec::new(),
        }
    }

    /// Encodes `spans` as span intake does: through an OTLP request, each
    /// span under its own service and scope.
    pub(crate) fn prepare_spans(spans: Vec<StoredSpan>) -> Result<Vec<PreparedSpan>, Error> {
        let resource_spans = spans.into_iter().map(resource_spans).collect();
        let prepared = otlp::prepare(ExportTraceServiceRequest { resource_spans });
        assert_eq!(prepared.rejected_spans, 0, "{}", prepared.error_message);
        Ok(prepared.spans)
    }

    fn resource_spans(span: StoredSpan) -> ResourceSpans {
        let key_value = |key: String, value: Value| KeyValue {
            key,
            value: Some(any_value(value)),
            ..Default::default()
        };
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![key_value(
                    crate::span_encoding::SERVICE_NAME_ATTRIBUTE.to_string(),
                    Value::String(span.service_name),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: span.scope_name,
                    ..Default::default()
                }),
                spans: vec![OtlpSpan {
                    trace_id: unhex(&span.trace_id),
                    span_id: unhex(&span.span_id),
                    parent_span_id: unhex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind.code() as i32,
                    start_time_unix_nano: span.start_time_unix_nano as u64,
                    end_time_unix_nano: span.end_time_unix_nano as u64,
                    attributes: span
                        .attributes
                        .into_iter()
                        .map(|(key, value)| key_value(key, value))
                        .collect(),
                    events: span
                        .events
                        .into_iter()
                        .map(|event| Event {
                            time_unix_nano: event.time_unix_nano as u64,
                            name: event.name,
                            attributes: event
                                .attributes
                                .into_iter()
                                .map(|(key, value)| key_value(key, value))
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    status: Some(Status {
                        message: span.status_message,
                        code: span.status.code() as i32,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// The OTLP value that reads back as `value` (the JSON kinds tests use).
    fn any_value(value: Value) -> AnyValue {
        let value = match value {
            Value::Null => None,
            Value::Bool(flag) => Some(OtlpValue::BoolValue(flag)),
            Value::Number(number) => Some(match number.as_i64() {
                Some(integer) => OtlpValue::IntValue(integer),
                None => OtlpValue::DoubleValue(number.as_f64().unwrap()),
            }),
            Value::String(text) => Some(OtlpValue::StringValue(text)),
            Value::Array(values) => Some(OtlpValue::ArrayValue(ArrayValue {
                values: values.into_iter().map(any_value).collect(),
            })),
            Value::Object(_) => panic!("nested attributes are not used here"),
        };
        AnyValue { value }
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|index| u8::from_str_radix(&text[index..index + 2], 16).unwrap())
            .collect()
    }

    pub(crate) fn with_attribute(mut span: StoredSpan, key: &str, value: Value) -> StoredSpan {
        span.attributes.insert(key.to_string(), value);
        span
    }

    #[test]
    fn trace_ids_are_lowered_and_checked() {
        let upper = TraceId::parse("trace_id", "4BF92F3577B34DA6A3CE929D0E0E4736").unwrap();
        assert_eq!(upper.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4bf92f3577b34da6a3ce929d0e0e47361",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "00000000000000000000000000000000",
        ] {
            let error = TraceId::parse("trace_id", bad).unwrap_err();
            assert_eq!(error.field, "trace_id");
            assert!(
                error
                    .rule
                    .starts_with("must be 32 hex digits, not all zero"),
                "{error}"
            );
        }
    }

    #[test]
    fn trace_cursor_round_trips_and_refuses_foreign_keys() {
        let cursor = TraceCursor {
            position: 1_700_000_000_000_000_000,
            key: TraceId::parse("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        };
        assert_eq!(
            TraceCursor::decode("page_token", &cursor.encode()).unwrap(),
            cursor
        );
        // Upper case is not what this service hands out.
        assert!(TraceCursor::decode("page_token", "5_4BF92F3577B34DA6A3CE929D0E0E4736").is_err());
        assert!(TraceCursor::decode("page_token", "5_abc").is_err());
    }

    #[test]
    fn prepare_keeps_the_first_copy_and_orders_by_ids() {
        let mut first = span(2, 9, None, 100);
        first.name = "first".to_string();
        let mut resent = first.clone();
        resent.name = "resent".to_string();
        let prepared = prepare_spans(vec![first, span(1, 3, None, 50), resent]).unwrap();
        let keys: Vec<(&str, &str, &str)> = prepared
            .iter()
            .map(|span| {
                (
                    span.trace_id.as_str(),
                    span.span_id.as_str(),
                    span.name.as_str(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                (
                    "00000000000000000000000000000001",
                    "0000000000000003",
                    "span 3"
                ),
                (
                    "00000000000000000000000000000002",
                    "0000000000000009",
                    "first"
                ),
            ]
        );
    }

    #[test]
    fn prepare_encodes_attributes_and_picks_summary_facts() {
        let mut stored = span(1, 1, None, 0);
        stored.end_time_unix_nano = 2_500_000;
        stored.status = SpanStatus::Error;
        stored.attributes.insert(
            ENDPOINT_ATTRIBUTE.to_string(),
            Value::String("support".to_string()),
        );
        stored
            .attributes
            .insert(MODEL_ATTRIBUTE.to_string(), Value::String("m".repeat(300)));
        stored
            .attributes
            .insert("count".to_string(), Value::from(7));
        stored.events.push(StoredEvent {
            name: "retry".to_string(),
            time_unix_nano: 5,
            attributes: Map::new(),
        });
        let prepared = prepare_spans(vec![stored.clone()]).unwrap().remove(0);
        assert_eq!(prepared.endpoint.as_deref(), Some("support"));
        assert_eq!(prepared.model, Some("m".repeat(MAX_INDEXED_BYTES)));
        assert_eq!(prepared.status, SpanStatus::Error);
        assert!(prepared.is_root);
        // What is stored decodes back to the same span.
        assert_eq!(
            decode_chunks(&stored.trace_id, &[chunk(&[&prepared])]).unwrap(),
            vec![stored]
        );

        // A non-string endpoint is no endpoint.
        let odd = with_attribute(span(1, 2, Some(1), 10), ENDPOINT_ATTRIBUTE, Value::from(3));
        let prepared = prepare_spans(vec![odd]).unwrap().remove(0);
        assert_eq!(prepared.endpoint, None);
        assert!(!prepared.is_root);
    }

    #[test]
    fn chunks_decode_by_start_keeping_one_copy_of_a_span() {
        let spans: Vec<PreparedSpan> = prepare_spans(vec![
            span(1, 3, Some(1), 30),
            span(1, 1, None, 10),
            span(1, 2, Some(1), 10),
        ])
        .unwrap();
        let first = chunk(&[&spans[0], &spans[2]]);
        // A second chunk holding span 3 again, as an unreadable chunk
        // beside it might leave.
        let second = chunk(&[&spans[1], &spans[2]]);
        let decoded = decode_chunks(&spans[0].trace_id, &[first, second]).unwrap();
        let ids: Vec<&str> = decoded.iter().map(|span| span.span_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                format!("{:016x}", 1),
                format!("{:016x}", 2),
                format!("{:016x}", 3)
            ]
        );
        for corrupt in [b"[{".to_vec(), vec![0x0a, 0xff]] {
            let error = decode_chunks(&spans[0].trace_id, &[corrupt]).unwrap_err();
            assert!(matches!(error, Error::CorruptSpans { .. }), "{error:?}");
        }
    }

    /// Spans stored one row each, before migration 3, read back the same
    /// from their chunks after it; a later write of the trace skips them.
    #[tokio::test]
    async fn spans_stored_before_chunks_survive_the_migration() {
        for backend in keel_testkit::BACKENDS {
            let database = keel_testkit::TestDatabase::fresh(backend).await;
            let old = database.open(&store::MIGRATIONS[..2]).await;
            let mut stored = with_attribute(
                span(7, 1, None, 1_000),
                ENDPOINT_ATTRIBUTE,
                Value::String("support".to_string()),
            );
            stored.kind = SpanKind::Server;
            stored.status = SpanStatus::Error;
            stored.status_message = "boom".to_string();
            stored.events.push(StoredEvent {
                name: "retry".to_string(),
                time_unix_nano: 5,
                attributes: Map::from_iter([("attempt".to_string(), Value::from(2))]),
            });
            let child = span(7, 2, Some(1), 2_000);
            for span in [&stored, &child] {
                sqlx::query(
                    "INSERT INTO spans (trace_id, span_id, parent_span_id, name, kind,
                        service_name, scope_name, start_time_unix_nano, end_time_unix_nano,
                        duration_ms, status_code, status_message, attributes, events)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                )
                .bind(span.trace_id.clone())
                .bind(span.span_id.clone())
                .bind(span.parent_span_id.clone())
                .bind(span.name.clone())
                .bind(span.kind.code())
                .bind(span.service_name.clone())
                .bind(span.scope_name.clone())
                .bind(span.start_time_unix_nano)
                .bind(span.end_time_unix_nano)
                .bind(span.duration_ms())
                .bind(span.status.code())
                .bind(span.status_message.clone())
                .bind(serde_json::to_string(&span.attributes).unwrap())
                .bind(serde_json::to_string(&span.events).unwrap())
                .execute(old.pool())
                .await
                .unwrap();
            }
            sqlx::query(
                "INSERT INTO traces (trace_id, start_time_unix_nano, end_time_unix_nano,
                    root_span_id, root_span_name, root_service_name, span_count, status_code,
                    endpoint)
                 VALUES ($1, 1000, 1002000, $2, 'span 1', 'serving', 2, 2, 'support')",
            )
            .bind(stored.trace_id.clone())
            .bind(stored.span_id.clone())
            .execute(old.pool())
            .await
            .unwrap();
            sqlx::query("INSERT INTO trace_models (trace_id, model) VALUES ($1, 'minilm')")
                .bind(stored.trace_id.clone())
                .execute(old.pool())
                .await
                .unwrap();
            old.close().await;

            let migrated = database.open(store::MIGRATIONS).await;
            let trace_id = TraceId::parse("trace_id", &stored.trace_id).unwrap();
            let reader = TraceStore::new(migrated.clone());
            assert_eq!(
                reader.get(&trace_id).await.unwrap(),
                vec![stored.clone(), child.clone()],
                "{backend:?}"
            );
            let page = reader
                .search(&TraceFilter::default(), None, 10)
                .await
                .unwrap();
            assert_eq!(page.traces[0].models, ["minilm"], "{backend:?}");
            // Re-sent with a new span: only the new one is stored and
            // counted, and its model joins the migrated one.
            let new_span = with_attribute(
                span(7, 3, Some(1), 3_000),
                MODEL_ATTRIBUTE,
                Value::String("smollm2".to_string()),
            );
            let resent = prepare_spans(vec![child, new_span]).unwrap();
            let references: Vec<&PreparedSpan> = resent.iter().collect();
            assert_eq!(write_spans(&migrated, &references).await.unwrap(), 1);
            assert_eq!(reader.get(&trace_id).await.unwrap().len(), 3);
            let page = reader
                .search(&TraceFilter::default(), None, 10)
                .await
                .unwrap();
            assert_eq!(page.traces[0].span_count, 3, "{backend:?}");
            assert_eq!(page.traces[0].endpoint, "support");
            assert_eq!(page.traces[0].models, ["minilm", "smollm2"]);
            for model in ["minilm", "smollm2"] {
                let filter = TraceFilter {
                    model: Some(model.to_string()),
                    ..TraceFilter::default()
                };
                let page = reader.search(&filter, None, 10).await.unwrap();
                assert_eq!(page.traces.len(), 1, "{model} on {backend:?}");
            }
        }
    }

    /// An unreadable stored chunk does not make the trace's later spans
    /// unstorable; reading the trace names the bad chunk.
    #[tokio::test]
    async fn a_corrupt_chunk_does_not_block_later_spans_of_its_trace() {
        let database = keel_testkit::TestDatabase::sqlite();
        let store = database.open(store::MIGRATIONS).await;
        let trace_id = format!("{:032x}", 5);
        let first = prepare_spans(vec![span(5, 1, None, 5)]).unwrap();
        assert_eq!(write_spans(&store, &[&first[0]]).await.unwrap(), 1);
        sqlx::query("UPDATE span_chunks SET spans = $1 WHERE trace_id = $2")
            .bind(vec![0x0a_u8, 0xff])
            .bind(trace_id.clone())
            .execute(store.pool())
            .await
            .unwrap();
        let later = prepare_spans(vec![span(5, 2, Some(1), 10)]).unwrap();
        let references: Vec<&PreparedSpan> = later.iter().collect();
        assert_eq!(write_spans(&store, &references).await.unwrap(), 1);
        let page = TraceStore::new(store.clone())
            .search(&TraceFilter::default(), None, 10)
            .await
            .unwrap();
        assert_eq!(page.traces[0].span_count, 2);
        let error = TraceStore::new(store)
            .get(&TraceId::parse("trace_id", &trace_id).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(error, Error::CorruptSpans { .. }), "{error:?}");
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("ééé", 4), "éé");
    }

    #[test]
    fn summary_folds_a_batch_per_trace() {
        let spans = vec![
            // Trace 1: a child that starts first, then the root; an error.
            with_attribute(
                span(1, 20, Some(10), 1_000),
                MODEL_ATTRIBUTE,
                Value::String("smollm2".to_string()),
            ),
            with_attribute(
                span(1, 10, None, 2_000),
                ENDPOINT_ATTRIBUTE,
                Value::String("support".to_string()),
            ),
            {
                let mut failed = with_attribute(
                    span(1, 30, Some(10), 3_000),
                    MODEL_ATTRIBUTE,
                    Value::String("minilm".to_string()),
                );
                failed.status = SpanStatus::Error;
                failed.end_time_unix_nano = 9_000_000;
                with_attribute(
                    failed,
                    ENDPOINT_ATTRIBUTE,
                    Value::String("later".to_string()),
                )
            },
            {
                let mut ok = with_attribute(
                    span(1, 40, Some(10), 4_000),
                    MODEL_ATTRIBUTE,
                    Value::String("smollm2".to_string()),
                );
                ok.status = SpanStatus::Ok;
                ok
            },
            // Trace 2: no root yet, status OK.
            {
                let mut ok = span(2, 50, Some(99), 500);
                ok.status = SpanStatus::Ok;
                ok
            },
        ];
        let prepared = prepare_spans(spans).unwrap();
        let first: Vec<&PreparedSpan> = prepared
            .iter()
            .filter(|span| span.trace_id == format!("{:032x}", 1))
            .collect();
        let first = summarize(&first);
        assert_eq!(first.trace_id, format!("{:032x}", 1));
        assert_eq!(first.start_time_unix_nano, 1_000);
        assert_eq!(first.end_time_unix_nano, 9_000_000);
        assert_eq!(first.new_spans, 4);
        assert_eq!(first.status, SpanStatus::Error);
        assert_eq!(
            first.root,
            Some(RootSpan {
                span_id: format!("{:016x}", 10),
                name: "span 10".to_string(),
                service_name: "serving".to_string(),
            })
        );
        // The earliest span naming an endpoint wins.
        assert_eq!(first.endpoint.as_deref(), Some("support"));
        assert_eq!(
            first.models.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["minilm", "smollm2"]
        );
        // Models already stored for the trace are listed with the new ones.
        let stored = BTreeSet::from(["e5".to_string(), "minilm".to_string()]);
        assert_eq!(
            summary_row(&first, &stored).models,
            r#"["e5","minilm","smollm2"]"#
        );

        let second: Vec<&PreparedSpan> = prepared
            .iter()
            .filter(|span| span.trace_id == format!("{:032x}", 2))
            .collect();
        let second = summarize(&second);
        assert_eq!(second.root, None);
        assert_eq!(second.status, SpanStatus::Ok);
        assert_eq!(second.new_spans, 1);
        assert_eq!(second.endpoint, None);
        assert!(second.models.is_empty());

        let row = summary_row(&second, &BTreeSet::new());
        assert_eq!(
            (
                row.root_span_id.as_str(),
                row.endpoint.as_str(),
                row.span_count,
                row.models.as_str()
            ),
            ("", "", 1, "[]")
        );
    }
}

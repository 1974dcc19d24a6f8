//! `keel trace TRACE_ID`: one stored trace as a tree of spans, children
//! indented under their parents by start time, with the attributes that
//! tell what a request did (`gen_ai.*`, `rpc.*`, `keel.*`).
//! `keel traces`: the newest traces matching filters, one line each.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use keel_proto::v1::{
    GetTraceRequest, SearchTracesRequest, Span, SpanStatus, Trace, TraceStatusFilter, TraceSummary,
};

use crate::cli::error::rpc;
use crate::cli::{output, CliError, ServiceUrls};

/// Attribute keys shown under a span; the others stay in the store.
const SHOWN_ATTRIBUTE_PREFIXES: [&str; 3] = ["gen_ai.", "rpc.", "keel."];

/// Longest attribute value printed, in characters (prompts can be long).
const VALUE_CHARS: usize = 200;

#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// 32 hex digits, as `keel query` prints it
    pub trace_id: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TracesArgs {
    /// Only traces of this Keel endpoint
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only traces that used this model (`gen_ai.request.model`)
    #[arg(long)]
    pub model: Option<String>,
    /// Only traces lasting at least this long
    #[arg(long, value_name = "MS")]
    pub min_duration_ms: Option<f64>,
    /// Only traces with an error span
    #[arg(long)]
    pub errors: bool,
    /// How many traces, newest first
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

pub async fn run_trace(urls: &ServiceUrls, args: TraceArgs) -> Result<(), CliError> {
    let trace = urls
        .monitoring()
        .await?
        .get_trace(GetTraceRequest {
            trace_id: args.trace_id,
        })
        .await
        .map_err(rpc("monitoring GetTrace"))?
        .into_inner();
    output::trace(&render_trace(&trace));
    Ok(())
}

pub async fn run_traces(urls: &ServiceUrls, args: TracesArgs) -> Result<(), CliError> {
    let request = SearchTracesRequest {
        endpoint: args.endpoint.unwrap_or_default(),
        model: args.model.unwrap_or_default(),
        min_duration_ms: args.min_duration_ms.unwrap_or_default(),
        status: if args.errors {
            TraceStatusFilter::Error as i32
        } else {
            TraceStatusFilter::Any as i32
        },
        page_size: args.limit,
        ..Default::default()
    };
    let found = urls
        .monitoring()
        .await?
        .search_traces(request)
        .await
        .map_err(rpc("monitoring SearchTraces"))?
        .into_inner();
    output::traces(&render_summaries(&found.traces));
    Ok(())
}

/// The trace as text: a header line, then each span as
/// `name [service] 12.5 ms status`, indented two spaces per level under
/// its parent, siblings by start time, its shown attributes on the lines
/// below it. A span whose parent is not stored is shown at the top level,
/// saying so.
pub fn render_trace(trace: &Trace) -> String {
    let mut text = format!("trace {} ({} spans)\n", trace.trace_id, trace.spans.len());
    let known: HashSet<&str> = trace
        .spans
        .iter()
        .map(|span| span.span_id.as_str())
        .collect();
    let mut children: HashMap<&str, Vec<&Span>> = HashMap::new();
    let mut top_level: Vec<&Span> = Vec::new();
    for span in &trace.spans {
        if span.parent_span_id.is_empty()
            || span.parent_span_id == span.span_id
            || !known.contains(span.parent_span_id.as_str())
        {
            top_level.push(span);
        } else {
            children
                .entry(span.parent_span_id.as_str())
                .or_default()
                .push(span);
        }
    }
    let by_start = |spans: &mut Vec<&Span>| {
        spans.sort_by(|a, b| {
            (a.start_time_unix_nano, &a.span_id).cmp(&(b.start_time_unix_nano, &b.span_id))
        });
    };
    by_start(&mut top_level);
    for siblings in children.values_mut() {
        by_start(siblings);
    }
    let mut shown: HashSet<&str> = HashSet::new();
    for root in &top_level {
        render_subtree(&mut text, root, &children, &known, &mut shown);
    }
    // Spans on a parent loop have no way up to the top level: still shown.
    let mut unreached: Vec<&Span> = trace
        .spans
        .iter()
        .filter(|span| !shown.contains(span.span_id.as_str()))
        .collect();
    by_start(&mut unreached);
    for span in unreached {
        if !shown.contains(span.span_id.as_str()) {
            render_subtree(&mut text, span, &children, &known, &mut shown);
        }
    }
    text
}

/// Depth first without recursion, so a deep trace cannot overflow the stack.
fn render_subtree<'a>(
    text: &mut String,
    root: &'a Span,
    children: &HashMap<&str, Vec<&'a Span>>,
    known: &HashSet<&str>,
    shown: &mut HashSet<&'a str>,
) {
    let mut stack: Vec<(&Span, usize)> = vec![(root, 0)];
    while let Some((span, depth)) = stack.pop() {
        if !shown.insert(span.span_id.as_str()) {
            continue;
        }
        render_span(text, span, depth, known);
        if let Some(kids) = children.get(span.span_id.as_str()) {
            // Reversed onto the stack, so the earliest child comes out first.
            for child in kids.iter().rev() {
                stack.push((child, depth + 1));
            }
        }
    }
}

fn render_span(text: &mut String, span: &Span, depth: usize, known: &HashSet<&str>) {
    let indent = "  ".repeat(depth);
    let service = if span.service_name.is_empty() {
        "-"
    } else {
        span.service_name.as_str()
    };
    let _ = write!(
        text,
        "{indent}{} [{service}] {:.1} ms {}",
        span.name,
        span.duration_ms,
        status_text(span.status, &span.status_message)
    );
    if depth == 0
        && !span.parent_span_id.is_empty()
        && !known.contains(span.parent_span_id.as_str())
    {
        let _ = write!(text, " (parent {} not stored)", span.parent_span_id);
    }
    text.push('\n');
    let Some(attributes) = &span.attributes else {
        return;
    };
    let mut keys: Vec<&String> = attributes
        .fields
        .keys()
        .filter(|key| {
            SHOWN_ATTRIBUTE_PREFIXES
                .iter()
                .any(|prefix| key.starts_with(prefix))
        })
        .collect();
    keys.sort();
    for key in keys {
        let value = attributes
            .fields
            .get(key)
            .map(value_text)
            .unwrap_or_default();
        let _ = writeln!(text, "{indent}    {key} = {value}");
    }
}

fn status_text(status: i32, message: &str) -> String {
    match SpanStatus::try_from(status) {
        Ok(SpanStatus::Ok) => "ok".to_string(),
        Ok(SpanStatus::Error) if message.is_empty() => "error".to_string(),
        Ok(SpanStatus::Error) => format!("error: {message}"),
        Ok(SpanStatus::Unset) => "unset".to_string(),
        Err(_) => status.to_string(),
    }
}

/// A value as JSON on one line, cut at `VALUE_CHARS` characters.
fn value_text(value: &prost_types::Value) -> String {
    let json = keel_core::payload::value_to_json("attribute", value)
        .map(|json| json.to_string())
        .unwrap_or_else(|_| "?".to_string());
    if json.chars().count() <= VALUE_CHARS {
        return json;
    }
    let cut: String = json.chars().take(VALUE_CHARS).collect();
    format!("{cut}...")
}

/// One line per trace, newest first, under a header.
pub fn render_summaries(traces: &[TraceSummary]) -> String {
    if traces.is_empty() {
        return "no traces\n".to_string();
    }
    let mut text = format!(
        "{:<32}  {:<23}  {:>10}  {:>5}  {:<6}  {:<16}  {:<24}  ROOT\n",
        "TRACE ID", "START (UTC)", "MS", "SPANS", "STATUS", "ENDPOINT", "MODELS"
    );
    for trace in traces {
        let root = match (
            trace.root_span_name.is_empty(),
            trace.service_name.is_empty(),
        ) {
            (true, _) => "(root not stored)".to_string(),
            (false, true) => trace.root_span_name.clone(),
            (false, false) => format!("{} [{}]", trace.root_span_name, trace.service_name),
        };
        let status = match SpanStatus::try_from(trace.status) {
            Ok(SpanStatus::Error) => "error",
            Ok(SpanStatus::Ok) => "ok",
            _ => "unset",
        };
        let models = if trace.models.is_empty() {
            "-".to_string()
        } else {
            trace.models.join(",")
        };
        let endpoint = if trace.endpoint.is_empty() {
            "-"
        } else {
            trace.endpoint.as_str()
        };
        let _ = writeln!(
            text,
            "{:<32}  {:<23}  {:>10.1}  {:>5}  {:<6}  {:<16}  {:<24}  {root}",
            trace.trace_id,
            utc_text(trace.start_time_unix_nano),
            trace.duration_ms,
            trace.span_count,
            status,
            endpoint,
            models,
        );
    }
    text
}

/// Unix nanoseconds as `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
fn utc_text(unix_nanos: i64) -> String {
    let millis = unix_nanos.div_euclid(1_000_000);
    let days = millis.div_euclid(86_400_000);
    let of_day = millis.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days: days since 1970-01-01 to a date.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1_000 % 60,
        of_day % 1_000
    )
}

#[cfg(test)]
mod tests {
    use keel_proto::v1::SpanKind;
    use prost_types::value::Kind;
    use prost_types::{Struct, Value};

    use super::*;

    fn string(text: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(text.to_string())),
        }
    }

    fn number(number: f64) -> Value {
        Value {
            kind: Some(Kind::NumberValue(number)),
        }
    }

    fn span(id: &str, parent: &str, name: &str, start: i64, attributes: &[(&str, Value)]) -> Span {
        Span {
            trace_id: "ab".repeat(16),
            span_id: id.to_string(),
            parent_span_id: parent.to_string(),
            name: name.to_string(),
            kind: SpanKind::Internal as i32,
            service_name: "serving".to_string(),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 2_500_000,
            duration_ms: 2.5,
            status: SpanStatus::Unset as i32,
            attributes: Some(Struct {
                fields: attributes
                    .iter()
                    .map(|(key, value)| (key.to_string(), value.clone()))
                    .collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn children_are_indented_under_parents_by_start_time() {
        let mut root = span(
            "0000000000000001",
            "",
            "Query",
            0,
            &[
                ("keel.endpoint", string("support")),
                ("rpc.method", string("Query")),
                ("http.user_agent", string("curl")),
            ],
        );
        root.status = SpanStatus::Ok as i32;
        root.duration_ms = 120.0;
        let mut generate = span(
            "0000000000000004",
            "0000000000000001",
            "generate",
            30,
            &[
                ("gen_ai.request.model", string("smollm2")),
                ("gen_ai.usage.output_tokens", number(42.0)),
            ],
        );
        generate.status = SpanStatus::Error as i32;
        generate.status_message = "out of memory".to_string();
        let mut search = span(
            "0000000000000003",
            "0000000000000002",
            "hnsw search",
            6,
            &[],
        );
        search.service_name = "vector-index".to_string();
        // Sent in no particular order; siblings sort by start time.
        let trace = Trace {
            trace_id: "ab".repeat(16),
            spans: vec![
                generate,
                search,
                root,
                span("0000000000000002", "0000000000000001", "retrieve", 5, &[]),
            ],
        };
        assert_eq!(
            render_trace(&trace),
            format!(
                "trace {} (4 spans)\n\
                 Query [serving] 120.0 ms ok\n\
                 \x20   keel.endpoint = \"support\"\n\
                 \x20   rpc.method = \"Query\"\n\
                 \x20 retrieve [serving] 2.5 ms unset\n\
                 \x20   hnsw search [vector-index] 2.5 ms unset\n\
                 \x20 generate [serving] 2.5 ms error: out of memory\n\
                 \x20     gen_ai.request.model = \"smollm2\"\n\
                 \x20     gen_ai.usage.output_tokens = 42\n",
                "ab".repeat(16)
            )
        );
    }

    #[test]
    fn orphans_loops_and_long_values_are_still_shown() {
        let long = "x".repeat(500);
        let trace = Trace {
            trace_id: "cd".repeat(16),
            spans: vec![
                span(
                    "00000000000000aa",
                    "00000000000000ff",
                    "orphan",
                    10,
                    &[("gen_ai.prompt", string(&long))],
                ),
                // Two spans naming each other as parent.
                span("00000000000000b1", "00000000000000b2", "loop one", 20, &[]),
                span("00000000000000b2", "00000000000000b1", "loop two", 30, &[]),
            ],
        };
        let text = render_trace(&trace);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "orphan [serving] 2.5 ms unset (parent 00000000000000ff not stored)"
        );
        assert_eq!(
            lines[2],
            format!("    gen_ai.prompt = \"{}...", "x".repeat(VALUE_CHARS - 1))
        );
        assert_eq!(lines[3], "loop one [serving] 2.5 ms unset");
        assert_eq!(lines[4], "  loop two [serving] 2.5 ms unset");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn summaries_are_one_line_each() {
        let traces = vec![
            TraceSummary {
                trace_id: "ab".repeat(16),
                root_span_name: "Query".to_string(),
                service_name: "serving".to_string(),
                start_time_unix_nano: 1_700_000_000_123_000_000,
                duration_ms: 120.0,
                span_count: 6,
                status: SpanStatus::Error as i32,
                endpoint: "support".to_string(),
                models: vec!["minilm".to_string(), "smollm2".to_string()],
            },
            TraceSummary {
                trace_id: "cd".repeat(16),
                start_time_unix_nano: 0,
                span_count: 1,
                ..Default::default()
            },
        ];
        let text = render_summaries(&traces);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TRACE ID"));
        assert_eq!(
            lines[1],
            format!(
                "{}  2023-11-14 22:13:20.123       120.0      6  error   support           minilm,smollm2            Query [serving]",
                "ab".repeat(16)
            )
        );
        assert!(lines[2].contains("1970-01-01 00:00:00.000"));
        assert!(lines[2].ends_with("(root not stored)"));
        assert_eq!(render_summaries(&[]), "no traces\n");
    }

    #[test]
    fn command_lines_parse() {
        use clap::Parser;

        use crate::cli::{Cli, Command};

        let cli = Cli::try_parse_from([
            "keel",
            "traces",
            "--endpoint",
            "support",
            "--model",
            "smollm2",
            "--min-duration-ms",
            "250.5",
            "--errors",
            "--limit",
            "5",
        ])
        .unwrap();
        let Command::Traces(args) = cli.command else {
            panic!("expected traces");
        };
        assert_eq!(args.endpoint.as_deref(), Some("support"));
        assert_eq!(args.model.as_deref(), Some("smollm2"));
        assert_eq!(args.min_duration_ms, Some(250.5));
        assert!(args.errors);
        assert_eq!(args.limit, 5);
        let Command::Traces(defaults) = Cli::try_parse_from(["keel", "traces"]).unwrap().command
        else {
            panic!("expected traces");
        };
        assert_eq!((defaults.limit, defaults.errors), (20, false));
        assert!(Cli::try_parse_from(["keel", "traces", "--limit", "1001"]).is_err());
        assert!(Cli::try_parse_from(["keel", "trace"]).is_err());
        let Command::Trace(args) = Cli::try_parse_from(["keel", "trace", "ABCD"])
            .unwrap()
            .command
        else {
            panic!("expected trace");
        };
        assert_eq!(args.trace_id, "ABCD");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc_text(951_782_400_000_000_000), "2000-02-29 00:00:00.000");
        assert_eq!(utc_text(-1_000_000), "1969-12-31 23:59:59.999");
    }
}

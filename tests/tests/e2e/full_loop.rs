//! (a) The whole loop: index a corpus, register a prompt and a chain, serve
//! it, see the inference in monitoring, give feedback, export datasets and
//! read the metrics.

use std::time::Duration;

use keel_proto::v1::{
    DatasetKind, ExportDatasetRequest, FeedbackKind, FeedbackRecord, GetInferenceRequest,
    GetMetricsRequest, InferenceRecord, InferenceStatus, ListFeedbackRequest, QueryResponse,
    SubmitFeedbackRequest,
};
use keel_tests::fixtures::{
    self, CHAIN_MODEL, CHAMPION_TARGET, ENDPOINT, REFUND_QUESTION, SHIPPING_QUESTION,
};
use keel_tests::{eventually, on_both_backends, Backend, Cluster, Storage};
use serde_json::Value;

on_both_backends!(full_loop);

const CORRECTION: &str = "Acme accepts refunds for 30 days after delivery.";

async fn full_loop(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;

    let refund = fixtures::query(&cluster, ENDPOINT, REFUND_QUESTION.text, "alice").await;
    assert!(
        refund.answer.contains(REFUND_QUESTION.fact),
        "answer {:?} misses {:?}",
        refund.answer,
        REFUND_QUESTION.fact
    );
    assert_eq!(refund.citations.len(), fixtures::V1_TOP_K as usize);
    assert_eq!(refund.citations[0].point_id, REFUND_QUESTION.passage_id);
    for pair in refund.citations.windows(2) {
        assert!(
            pair[0].score >= pair[1].score,
            "citations not best first: {:?}",
            refund.citations
        );
    }
    let request_id = uuid::Uuid::parse_str(&refund.request_id).expect("request_id is a uuid");
    assert_eq!(
        request_id.get_version_num(),
        7,
        "request_id {} is not a UUIDv7",
        refund.request_id
    );
    assert_eq!(refund.trace_id.len(), 32, "trace_id {:?}", refund.trace_id);
    assert!(
        refund
            .trace_id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "trace_id {:?} is not lowercase hex",
        refund.trace_id
    );
    assert_ne!(refund.trace_id, "0".repeat(32));
    assert_eq!(refund.served_model, CHAIN_MODEL);
    assert_eq!(refund.served_version, 1);
    assert_eq!(refund.route_target, CHAMPION_TARGET);
    let usage = refund.usage.expect("usage");
    assert!(
        usage.input_tokens > 0 && usage.output_tokens > 0,
        "{usage:?}"
    );

    let refund_record = wait_for_inference(&cluster, &refund).await;
    assert_eq!(refund_record.question, REFUND_QUESTION.text);
    assert_eq!(refund_record.user_id, "alice");
    let prompt_text: String = refund_record
        .prompt_messages
        .iter()
        .map(|message| message.content.as_str())
        .collect();
    assert!(
        prompt_text.contains(&format!("Question: {}", REFUND_QUESTION.text)),
        "rendered prompt {prompt_text:?} lacks the question"
    );
    assert!(
        prompt_text.contains("[refunds] The refund window at Acme is 30 days"),
        "rendered prompt {prompt_text:?} lacks the context"
    );

    let shipping = fixtures::query(&cluster, ENDPOINT, SHIPPING_QUESTION.text, "bob").await;
    assert!(
        shipping.answer.contains(SHIPPING_QUESTION.fact),
        "{:?}",
        shipping.answer
    );
    assert_eq!(shipping.citations[0].point_id, SHIPPING_QUESTION.passage_id);
    assert_ne!(shipping.request_id, refund.request_id);
    assert_ne!(shipping.trace_id, refund.trace_id);
    wait_for_inference(&cluster, &shipping).await;

    // Feedback: alice's answer gets a thumbs down and a correction, bob's a thumbs up.
    let thumbs_down = submit(&cluster, &refund, FeedbackKind::Thumbs, -1.0, "", "alice").await;
    let correction = submit(
        &cluster,
        &refund,
        FeedbackKind::Correction,
        0.0,
        CORRECTION,
        "alice",
    )
    .await;
    let thumbs_up = submit(&cluster, &shipping, FeedbackKind::Thumbs, 1.0, "", "bob").await;
    for record in [&thumbs_down, &correction, &thumbs_up] {
        let id = uuid::Uuid::parse_str(&record.id).expect("feedback id is a uuid");
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(record.endpoint, ENDPOINT);
        assert_eq!(record.served_model, CHAIN_MODEL);
        assert_eq!(record.served_version, 1);
    }
    assert_eq!(thumbs_down.value, -1.0);
    assert_eq!(correction.correction, CORRECTION);

    let mut feedback = cluster.feedback.clone();
    let everything = feedback
        .list_feedback(ListFeedbackRequest::default())
        .await
        .expect("list feedback")
        .into_inner();
    let newest_first = vec![thumbs_up.clone(), correction.clone(), thumbs_down.clone()];
    assert_eq!(everything.records, newest_first);
    let refund_only = feedback
        .list_feedback(ListFeedbackRequest {
            request_id: refund.request_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list feedback of one request")
        .into_inner();
    assert_eq!(
        refund_only.records,
        vec![correction.clone(), thumbs_down.clone()]
    );

    // SFT: what the assistant should say — the correction and the liked answer,
    // never the disliked one.
    let sft = export(&cluster, DatasetKind::Sft).await;
    let mut sft_answers = Vec::new();
    for line in &sft {
        let messages = line["messages"].as_array().expect("sft line has messages");
        let last = messages.last().expect("sft line has a message");
        assert_eq!(last["role"], "assistant", "{line}");
        let user_turns: Vec<&Value> = messages
            .iter()
            .filter(|message| message["role"] == "user")
            .collect();
        assert!(!user_turns.is_empty(), "{line}");
        sft_answers.push(last["content"].as_str().expect("content").to_string());
    }
    sft_answers.sort();
    let mut expected_sft_answers = vec![CORRECTION.to_string(), shipping.answer.clone()];
    expected_sft_answers.sort();
    assert_eq!(sft_answers, expected_sft_answers);

    // PREFERENCE: the correction is preferred over the answer it corrects.
    let preference = export(&cluster, DatasetKind::Preference).await;
    assert_eq!(preference.len(), 1, "{preference:?}");
    assert_eq!(preference[0]["chosen"], CORRECTION);
    assert_eq!(preference[0]["rejected"], refund.answer.as_str());
    let prompt = preference[0]["prompt"].to_string();
    assert!(prompt.contains(REFUND_QUESTION.text), "{prompt}");

    // EVAL: one line per request with feedback: question, answer, the whole
    // retrieved passages, and what the user said.
    let eval = export(&cluster, DatasetKind::Eval).await;
    assert_eq!(eval.len(), 2, "{eval:?}");
    for (response, question, rating, correction) in [
        (&refund, REFUND_QUESTION.text, -1, Value::from(CORRECTION)),
        (&shipping, SHIPPING_QUESTION.text, 1, Value::Null),
    ] {
        let line = eval
            .iter()
            .find(|line| line["request_id"] == response.request_id.as_str())
            .unwrap_or_else(|| panic!("no eval line for {} in {eval:?}", response.request_id));
        assert_eq!(line["question"], question);
        assert_eq!(line["answer"], response.answer.as_str());
        assert_eq!(line["served_version"], 1);
        assert_eq!(line["rating"], rating, "{line}");
        assert_eq!(line["correction"], correction, "{line}");
        let context_ids: Vec<Value> = response
            .citations
            .iter()
            .map(|citation| Value::from(citation.point_id.as_str()))
            .collect();
        assert_eq!(line["context_ids"], Value::Array(context_ids), "{line}");
        let whole_texts: Vec<Value> = response
            .citations
            .iter()
            .map(|citation| {
                let passage = fixtures::CORPUS
                    .iter()
                    .find(|passage| passage.id == citation.point_id)
                    .expect("a citation from the corpus");
                Value::from(passage.text)
            })
            .collect();
        assert_eq!(line["contexts"], Value::Array(whole_texts), "{line}");
    }

    let metrics = cluster
        .monitoring
        .clone()
        .get_metrics(GetMetricsRequest {
            endpoint: ENDPOINT.to_string(),
            window_seconds: 3600,
        })
        .await
        .expect("get metrics")
        .into_inner();
    assert_eq!(metrics.endpoint, ENDPOINT);
    assert_eq!(metrics.versions.len(), 1, "{:?}", metrics.versions);
    let v1 = &metrics.versions[0];
    assert_eq!(
        (v1.served_model.as_str(), v1.served_version),
        (CHAIN_MODEL, 1)
    );
    assert_eq!(v1.request_count, 2);
    assert_eq!(v1.error_count, 0);
    assert!(
        v1.latency_p50_ms > 0.0 && v1.latency_p50_ms <= v1.latency_p99_ms,
        "{v1:?}"
    );

    cluster.shutdown().await;
}

/// Polls monitoring until serving's record of `response` arrives, and checks
/// it says what the caller was told.
pub async fn wait_for_inference(cluster: &Cluster, response: &QueryResponse) -> InferenceRecord {
    let record = eventually(
        &format!("inference {} in monitoring", response.request_id),
        Duration::from_secs(10),
        || {
            let mut monitoring = cluster.monitoring.clone();
            let request = GetInferenceRequest {
                request_id: response.request_id.clone(),
            };
            async move {
                monitoring
                    .get_inference(request)
                    .await
                    .ok()
                    .map(|answer| answer.into_inner())
            }
        },
    )
    .await;
    assert_eq!(record.request_id, response.request_id);
    assert_eq!(record.trace_id, response.trace_id);
    assert_eq!(record.endpoint, ENDPOINT);
    assert_eq!(record.route_target, response.route_target);
    assert_eq!(record.served_model, response.served_model);
    assert_eq!(record.served_version, response.served_version);
    assert_eq!(record.answer, response.answer);
    assert_eq!(record.status(), InferenceStatus::Ok);
    assert_eq!(record.generator, "extractive");
    let context_ids: Vec<&str> = record
        .contexts
        .iter()
        .map(|context| context.point_id.as_str())
        .collect();
    let citation_ids: Vec<&str> = response
        .citations
        .iter()
        .map(|citation| citation.point_id.as_str())
        .collect();
    assert_eq!(context_ids, citation_ids);
    for context in &record.contexts {
        let passage = fixtures::CORPUS
            .iter()
            .find(|passage| passage.id == context.point_id)
            .expect("a context from the corpus");
        assert_eq!(
            context.text, passage.text,
            "contexts carry the whole passage"
        );
    }
    record
}

async fn submit(
    cluster: &Cluster,
    response: &QueryResponse,
    kind: FeedbackKind,
    value: f64,
    correction: &str,
    user_id: &str,
) -> FeedbackRecord {
    let record = cluster
        .feedback
        .clone()
        .submit_feedback(SubmitFeedbackRequest {
            request_id: response.request_id.clone(),
            kind: kind as i32,
            value,
            correction: correction.to_string(),
            comment: String::new(),
            user_id: user_id.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("submit {kind:?} feedback: {status}"))
        .into_inner();
    assert_eq!(record.request_id, response.request_id);
    assert_eq!(record.kind(), kind);
    assert_eq!(record.user_id, user_id);
    record
}

/// The export's lines as JSON, checking the line numbering and progress on
/// the way, and that the summary comes last and counts them.
async fn export(cluster: &Cluster, kind: DatasetKind) -> Vec<Value> {
    let mut stream = cluster
        .feedback
        .clone()
        .export_dataset(ExportDatasetRequest {
            kind: kind as i32,
            endpoint: ENDPOINT.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("export {kind:?}: {status}"))
        .into_inner();
    let mut lines = Vec::new();
    let mut summary = None;
    while let Some(line) = stream
        .message()
        .await
        .unwrap_or_else(|status| panic!("export {kind:?}: {status}"))
    {
        assert!(summary.is_none(), "{kind:?}: a message after the summary");
        assert!(
            line.requests_done <= line.requests_total,
            "{kind:?} progress {}/{}",
            line.requests_done,
            line.requests_total
        );
        if line.summary.is_some() {
            summary = line.summary;
            continue;
        }
        if line.json.is_empty() {
            continue;
        }
        assert_eq!(
            line.line_number,
            lines.len() as u64 + 1,
            "{kind:?} line numbers"
        );
        lines.push(line);
    }
    let summary = summary.unwrap_or_else(|| panic!("export {kind:?} ended without its summary"));
    assert_eq!(summary.lines, lines.len() as u64, "{kind:?} summary");
    let mut values = Vec::new();
    for line in lines {
        assert!(
            !line.json.contains('\n'),
            "{kind:?} line spans lines: {:?}",
            line.json
        );
        values.push(
            serde_json::from_str(&line.json)
                .unwrap_or_else(|error| panic!("{kind:?} line {:?}: {error}", line.json)),
        );
    }
    values
}

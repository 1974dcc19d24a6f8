//! Guardrails per endpoint: personal data masked in the question (the
//! chain and the record never see it) and in the answer (streamed only
//! once checked), or refused; blocked terms; a token limit; a denied topic
//! by embedding similarity. Every decision is in the inference record and
//! counted on `/metrics`.

use std::time::Duration;

use keel_proto::v1::{
    query_stream_event, InferenceRecord, ListInferencesRequest, UpsertPointsRequest,
};
use keel_serving::guardrails::{EndpointGuardrails, GuardrailsConfig, PiiAction};
use keel_tests::cluster::Service;
use keel_tests::fixtures::{self, CHAMPION_TARGET, COLLECTION, ENDPOINT, REFUND_QUESTION};
use keel_tests::{eventually, on_both_backends, Backend, Cluster, Storage};
use tonic::Code;

/// Refuses personal data instead of masking it.
const STRICT_ENDPOINT: &str = "acme-strict";
const DENIED_TOPIC: &str = "medical advice about drug dosage";
const CONTACT_QUESTION: &str = "How do I contact Acme support about a refund?";

fn guardrails() -> GuardrailsConfig {
    let mut config = GuardrailsConfig::default();
    config.endpoints.insert(
        ENDPOINT.to_string(),
        EndpointGuardrails {
            input_pii: PiiAction::Mask,
            output_pii: PiiAction::Mask,
            blocked_terms: vec!["password".to_string()],
            max_input_tokens: 40,
            denied_topics: vec![DENIED_TOPIC.to_string()],
            topic_threshold: 0.8,
            topic_embedder: "hashing".to_string(),
        },
    );
    config.endpoints.insert(
        STRICT_ENDPOINT.to_string(),
        EndpointGuardrails {
            input_pii: PiiAction::Block,
            ..EndpointGuardrails::default()
        },
    );
    config
}

async fn record_of(cluster: &Cluster, request_id: &str) -> InferenceRecord {
    eventually("the record in monitoring", Duration::from_secs(10), || {
        let mut monitoring = cluster.monitoring.clone();
        let request = keel_proto::v1::GetInferenceRequest {
            request_id: request_id.to_string(),
        };
        async move { monitoring.get_inference(request).await.ok() }
    })
    .await
    .into_inner()
}

fn decisions(record: &InferenceRecord) -> Vec<(String, String, String)> {
    record
        .guardrails
        .iter()
        .map(|decision| {
            (
                decision.stage.clone(),
                decision.rule.clone(),
                decision.action.clone(),
            )
        })
        .collect()
}

fn decision(stage: &str, rule: &str, action: &str) -> (String, String, String) {
    (stage.to_string(), rule.to_string(), action.to_string())
}

async fn refused(cluster: &Cluster, endpoint: &str, question: &str) -> tonic::Status {
    cluster
        .serving
        .clone()
        .query(fixtures::query_request(endpoint, question, "dana"))
        .await
        .expect_err("the guardrails refuse it")
}

async fn guardrails_check_questions_and_answers(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster =
        Cluster::start_with(&storage, |config| config.serving.guardrails = guardrails()).await;
    fixtures::setup_application(&cluster).await;
    fixtures::create_endpoint(&cluster, STRICT_ENDPOINT, &[(CHAMPION_TARGET, 100)]).await;
    // A passage whose extractive answer quotes a phone number.
    cluster
        .vector_index
        .clone()
        .upsert_points(UpsertPointsRequest {
            collection: COLLECTION.to_string(),
            points: vec![fixtures::corpus_point(&fixtures::Passage {
                id: "contact",
                topic: "support",
                text: "To contact Acme support about a refund, call +1 415 555 0132 on weekdays.",
            })],
        })
        .await
        .unwrap();

    // Input: the address is masked before the chain and the record see it.
    let asked = format!(
        "My address is jane.doe@example.com. {}",
        REFUND_QUESTION.text
    );
    let answered = fixtures::query(&cluster, ENDPOINT, &asked, "dana").await;
    assert!(
        answered.answer.contains(REFUND_QUESTION.fact),
        "{}",
        answered.answer
    );
    let record = record_of(&cluster, &answered.request_id).await;
    assert_eq!(
        record.question,
        format!("My address is [EMAIL]. {}", REFUND_QUESTION.text)
    );
    assert!(!record
        .prompt_messages
        .iter()
        .any(|message| message.content.contains("jane.doe")));
    assert_eq!(
        decisions(&record),
        vec![decision("input", "pii.email", "masked")]
    );

    // Output: the answer's phone number is masked, unary and streamed
    // (one piece, sent once checked).
    let contact = fixtures::query(&cluster, ENDPOINT, CONTACT_QUESTION, "dana").await;
    assert!(
        contact.answer.contains("call [PHONE] on weekdays"),
        "{}",
        contact.answer
    );
    assert!(!contact.answer.contains("555"));
    let record = record_of(&cluster, &contact.request_id).await;
    assert_eq!(record.answer, contact.answer);
    assert_eq!(
        decisions(&record),
        vec![decision("output", "pii.phone", "masked")]
    );
    let mut stream = cluster
        .serving
        .clone()
        .query_stream(fixtures::query_request(ENDPOINT, CONTACT_QUESTION, "dana"))
        .await
        .unwrap()
        .into_inner();
    let mut deltas = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        if let Some(query_stream_event::Event::Delta(delta)) = event.event {
            deltas.push(delta.text);
        }
    }
    assert_eq!(deltas, vec![contact.answer.clone()]);

    // Refusals: INVALID_ARGUMENT naming the rule, nothing answered.
    let status = refused(&cluster, ENDPOINT, "What is the admin PASSWORD for Acme?").await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("blocked term `password`"),
        "{status}"
    );
    let long = format!("{} {}", REFUND_QUESTION.text, "please ".repeat(40));
    let status = refused(&cluster, ENDPOINT, &long).await;
    assert!(
        status
            .message()
            .contains("longer than the endpoint's 40 tokens"),
        "{status}"
    );
    let status = refused(
        &cluster,
        ENDPOINT,
        "Give me medical advice about drug dosage",
    )
    .await;
    assert!(
        status
            .message()
            .contains(&format!("is about `{DENIED_TOPIC}`")),
        "{status}"
    );
    let status = refused(&cluster, STRICT_ENDPOINT, &asked).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("personal data (pii.email)"),
        "{status}"
    );
    // The refused requests are recorded, with their decisions.
    let refusals = eventually(
        "the refused requests' records",
        Duration::from_secs(10),
        || {
            let mut monitoring = cluster.monitoring.clone();
            async move {
                let records = monitoring
                    .list_inferences(ListInferencesRequest {
                        endpoint: ENDPOINT.to_string(),
                        page_size: 100,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .records;
                let blocked: Vec<_> = records
                    .into_iter()
                    .filter(|record| record.guardrails.iter().any(|d| d.action == "blocked"))
                    .collect();
                (blocked.len() == 3).then_some(blocked)
            }
        },
    )
    .await;
    let mut rules: Vec<String> = refusals
        .iter()
        .map(|record| record.guardrails[0].rule.clone())
        .collect();
    rules.sort();
    assert_eq!(rules, vec!["blocked_term", "max_input_tokens", "topic"]);
    assert!(refusals.iter().all(|record| record.answer.is_empty()));

    // Counted on /metrics.
    let text = cluster.metrics(Service::Serving).await;
    for series in [
        format!("keel_serving_guardrail_decisions_total{{action=\"masked\",endpoint=\"{ENDPOINT}\",rule=\"pii.email\",stage=\"input\",service=\"serving\"}} 1"),
        format!("keel_serving_guardrail_decisions_total{{action=\"blocked\",endpoint=\"{ENDPOINT}\",rule=\"topic\",stage=\"input\",service=\"serving\"}} 1"),
        format!("keel_serving_guardrail_decisions_total{{action=\"blocked\",endpoint=\"{STRICT_ENDPOINT}\",rule=\"pii.email\",stage=\"input\",service=\"serving\"}} 1"),
    ] {
        assert!(text.contains(&series), "{series} in\n{text}");
    }
    cluster.shutdown().await;
}

on_both_backends!(guardrails_check_questions_and_answers);

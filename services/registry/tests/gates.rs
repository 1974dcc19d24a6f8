//! Promotion gates through the registry's gRPC API, on SQLite and on
//! Postgres: a gated alias refuses a version and names every failed rule,
//! a version that shows what the gate asks passes, a regression against the
//! current holder is caught, an override needs a reason and is audited,
//! ungated aliases move freely, and gates survive a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use keel_proto::v1 as pb;
use keel_testkit::{assert_status, BACKENDS};
use tonic::Code;

use support::{create_model, prompt_version, Client, Registry};

const DIGEST: &str = "9f86d081884c7d659a2feb0c9ae2b9a1e3e0d3f5c0e8a6b1d2c3e4f5a6b7c8d9";

fn gate() -> pb::PromotionGate {
    pb::PromotionGate {
        model: "p".to_string(),
        alias: "champion".to_string(),
        require_description: true,
        required_tags: [("owner".to_string(), String::new())].into(),
        evaluation_dataset: "eval.jsonl".to_string(),
        min_scores: [("contains".to_string(), 0.8)].into(),
        max_scores: [("latency_ms".to_string(), 500.0)].into(),
        max_regression: [("token_f1".to_string(), 0.05)].into(),
        updated_at_ms: 0,
    }
}

async fn set_gate(
    client: &mut Client,
    gate: pb::PromotionGate,
) -> Result<pb::PromotionGate, tonic::Status> {
    client
        .set_promotion_gate(pb::SetPromotionGateRequest { gate: Some(gate) })
        .await
        .map(tonic::Response::into_inner)
}

async fn version(client: &mut Client, description: &str, owner: Option<&str>) -> u32 {
    let mut request = prompt_version("p", "{{ question }}");
    request.description = description.to_string();
    if let Some(owner) = owner {
        request.tags = [("owner".to_string(), owner.to_string())].into();
    }
    client
        .create_version(request)
        .await
        .unwrap()
        .into_inner()
        .version
}

/// A finished run of p/`version` on eval.jsonl with these means (one
/// example each, so the mean is the value).
async fn run(client: &mut Client, version: u32, scores: &[(&str, f64)]) -> String {
    let scorers: Vec<String> = scores.iter().map(|(name, _)| name.to_string()).collect();
    let run = client
        .create_evaluation_run(pb::CreateEvaluationRunRequest {
            model: "p".to_string(),
            version,
            endpoint: "support".to_string(),
            dataset: Some(pb::DatasetSource {
                name: "eval.jsonl".to_string(),
                digest: DIGEST.to_string(),
                examples: 1,
            }),
            scorers,
            actor: "ci".to_string(),
            tags: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    client
        .append_evaluation_examples(pb::AppendEvaluationExamplesRequest {
            run_id: run.id.clone(),
            examples: vec![pb::EvaluationExample {
                index: 0,
                question: "q?".to_string(),
                scores: scores
                    .iter()
                    .map(|(name, value)| (name.to_string(), *value))
                    .collect(),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    client
        .finish_evaluation_run(pb::FinishEvaluationRunRequest {
            run_id: run.id.clone(),
        })
        .await
        .unwrap();
    run.id
}

fn promote(version: u32) -> pb::SetAliasRequest {
    pb::SetAliasRequest {
        model: "p".to_string(),
        alias: "champion".to_string(),
        version,
        expected_current_version: None,
        actor: "ci".to_string(),
        reason: format!("promote v{version}"),
        override_gate: false,
    }
}

async fn champion(client: &mut Client) -> Option<u32> {
    let model = client
        .get_model(pb::GetModelRequest {
            name: "p".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    model.aliases.get("champion").copied()
}

#[tokio::test]
async fn a_gated_alias_moves_only_to_versions_that_pass_or_by_an_audited_override() {
    for backend in BACKENDS {
        let mut registry = Registry::start(backend).await;
        let client = &mut registry.client;
        create_model(client, "p", pb::ModelKind::Prompt).await;
        let stored = set_gate(client, gate()).await.unwrap();
        assert!(stored.updated_at_ms > 0, "{backend:?}");

        // v1 shows nothing the gate asks for: every rule is named.
        let bare = version(client, "", None).await;
        let refused = client.set_alias(promote(bare)).await;
        assert_status(
            "a bare version",
            refused,
            Code::FailedPrecondition,
            &[
                "promotion gate of @champion",
                "version 1 has no description",
                "tag `owner` is missing",
                "no finished evaluation run on dataset `eval.jsonl`",
            ],
        );
        assert_eq!(
            champion(client).await,
            None,
            "a refused move changes nothing"
        );

        // v2 has it all, and nothing holds @champion yet to regress from.
        let good = version(client, "retrieval v2", Some("search-team")).await;
        run(
            client,
            good,
            &[("contains", 0.9), ("latency_ms", 120.0), ("token_f1", 0.6)],
        )
        .await;
        let moved = client.set_alias(promote(good)).await.unwrap().into_inner();
        assert!(moved.overridden_gates.is_empty());
        assert_eq!(champion(client).await, Some(good));

        // v3 scores too low, too slow, and worse than v2 on token F1.
        let worse = version(client, "cheaper prompt", Some("search-team")).await;
        run(
            client,
            worse,
            &[("contains", 0.7), ("latency_ms", 900.0), ("token_f1", 0.5)],
        )
        .await;
        let refused = client.set_alias(promote(worse)).await;
        assert_status(
            "a regressing version",
            refused,
            Code::FailedPrecondition,
            &[
                "contains is 0.7000",
                "at least 0.8",
                "latency_ms is 900.0000",
                "at most 500",
                "token_f1 is 0.5000 against 0.6000 for version 2: worse by 0.1000",
            ],
        );
        // Within the margin on every rule: v4 passes against v2.
        let close = version(client, "close enough", Some("search-team")).await;
        run(
            client,
            close,
            &[
                ("contains", 0.85),
                ("latency_ms", 300.0),
                ("token_f1", 0.56),
            ],
        )
        .await;
        client.set_alias(promote(close)).await.unwrap();
        assert_eq!(champion(client).await, Some(close));

        // An override needs a reason; with one the move is made and the
        // failed rules are in the audit trail.
        let mut without_reason = promote(worse);
        without_reason.override_gate = true;
        without_reason.reason.clear();
        assert_status(
            "an override without a reason",
            client.set_alias(without_reason).await,
            Code::InvalidArgument,
            &["reason", "override_gate"],
        );
        assert_eq!(champion(client).await, Some(close));
        let mut overriding = promote(worse);
        overriding.override_gate = true;
        overriding.reason = "incident 42: roll forward to the cheaper prompt".to_string();
        let event = client.set_alias(overriding).await.unwrap().into_inner();
        assert_eq!(event.new_version, worse);
        assert_eq!(
            event.overridden_gates.len(),
            3,
            "{:?}",
            event.overridden_gates
        );
        let history = client
            .list_alias_history(pb::ListAliasHistoryRequest {
                model: "p".to_string(),
                alias: "champion".to_string(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        let last = history.last().unwrap();
        assert_eq!(
            last.reason,
            "incident 42: roll forward to the cheaper prompt"
        );
        assert_eq!(last.overridden_gates, event.overridden_gates);
        assert!(history[..history.len() - 1]
            .iter()
            .all(|event| event.overridden_gates.is_empty()));

        // Other aliases are not gated.
        let mut staging = promote(bare);
        staging.alias = "staging".to_string();
        client.set_alias(staging).await.unwrap();

        // The gate survives a restart; deleting it frees the alias.
        let database = registry.stop().await;
        let mut registry = Registry::start_on(database).await;
        let client = &mut registry.client;
        let gates = client
            .list_promotion_gates(pb::ListPromotionGatesRequest {
                model: "p".to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .gates;
        assert_eq!(gates, vec![stored.clone()]);
        assert_status(
            "still gated after the restart",
            client.set_alias(promote(bare)).await,
            Code::FailedPrecondition,
            &["version 1 has no description"],
        );
        client
            .delete_promotion_gate(pb::DeletePromotionGateRequest {
                model: "p".to_string(),
                alias: "champion".to_string(),
            })
            .await
            .unwrap();
        client.set_alias(promote(bare)).await.unwrap();
        assert_eq!(champion(client).await, Some(bare));
        registry.stop().await;
    }
}

#[tokio::test]
async fn bad_gates_name_the_field_and_change_nothing() {
    for backend in BACKENDS {
        let mut registry = Registry::start(backend).await;
        let client = &mut registry.client;
        create_model(client, "p", pb::ModelKind::Prompt).await;
        let cases = [
            (
                pb::PromotionGate {
                    model: "nope".to_string(),
                    ..gate()
                },
                Code::NotFound,
                "model `nope`",
            ),
            (
                pb::PromotionGate {
                    alias: "12".to_string(),
                    ..gate()
                },
                Code::InvalidArgument,
                "gate.alias",
            ),
            (
                pb::PromotionGate {
                    min_scores: [("bleu".to_string(), 0.5)].into(),
                    ..gate()
                },
                Code::InvalidArgument,
                "unknown scorer `bleu`",
            ),
            (
                pb::PromotionGate {
                    evaluation_dataset: String::new(),
                    ..gate()
                },
                Code::InvalidArgument,
                "needs `gate.evaluation_dataset`",
            ),
            (
                pb::PromotionGate {
                    max_regression: [("token_f1".to_string(), -0.1)].into(),
                    ..gate()
                },
                Code::InvalidArgument,
                "gate.max_regression",
            ),
            (
                pb::PromotionGate {
                    min_scores: [("contains".to_string(), f64::NAN)].into(),
                    ..gate()
                },
                Code::InvalidArgument,
                "finite",
            ),
        ];
        for (bad, code, needle) in cases {
            assert_status(needle, set_gate(client, bad).await, code, &[needle]);
        }
        assert_status(
            "no gate at all",
            client
                .set_promotion_gate(pb::SetPromotionGateRequest { gate: None })
                .await,
            Code::InvalidArgument,
            &["gate"],
        );
        assert_status(
            "deleting a gate that is not there",
            client
                .delete_promotion_gate(pb::DeletePromotionGateRequest {
                    model: "p".to_string(),
                    alias: "champion".to_string(),
                })
                .await,
            Code::NotFound,
            &["no promotion gate"],
        );
        let gates = client
            .list_promotion_gates(pb::ListPromotionGatesRequest {
                model: "p".to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .gates;
        assert!(gates.is_empty(), "{backend:?}: {gates:?}");
        registry.stop().await;
    }
}

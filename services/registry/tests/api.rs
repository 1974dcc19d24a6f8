//! The registry through its gRPC API on port 0, on SQLite and on Postgres:
//! version numbering, alias compare-and-set, the audit trail, watch
//! streams, and input validation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

mod support;

use keel_core::payload;
use keel_proto::v1 as pb;
use keel_testkit::{assert_status, BACKENDS};
use prost_types::value::Kind;
use tonic::Code;

use support::{create_model, prompt_version, Client, Registry};

const DEADLINE: Duration = Duration::from_secs(10);

fn chain_spec(prompt: &str) -> pb::ChainSpec {
    pb::ChainSpec {
        collection: "docs".to_string(),
        top_k: 4,
        filter: Some(payload::json_to_struct(
            serde_json::json!({"lang": "en", "tier": 2})
                .as_object()
                .unwrap(),
        )),
        prompt: prompt.to_string(),
        generator: Some(pb::GeneratorSpec {
            name: "extractive".to_string(),
            params: Some(pb::GenerationParams {
                temperature: Some(0.5),
                top_p: Some(0.9),
                max_tokens: Some(256),
                stop: vec!["\n\n".to_string()],
                seed: Some(7),
            }),
            model: String::new(),
        }),
        // Stored and returned as sent, params and order included.
        fallbacks: vec![
            pb::GeneratorSpec {
                name: "openai".to_string(),
                params: Some(pb::GenerationParams {
                    temperature: Some(0.0),
                    max_tokens: Some(128),
                    ..Default::default()
                }),
                model: String::new(),
            },
            pb::GeneratorSpec {
                name: "extractive".to_string(),
                params: Some(pb::GenerationParams::default()),
                model: String::new(),
            },
        ],
        retrieval_mode: pb::SearchMode::Hybrid as i32,
    }
}

fn chain_version(model: &str, spec: pb::ChainSpec) -> pb::CreateVersionRequest {
    pb::CreateVersionRequest {
        model: model.to_string(),
        spec: Some(pb::create_version_request::Spec::Chain(spec)),
        description: "a chain".to_string(),
        tags: Default::default(),
        lineage: None,
    }
}

fn alias_move(
    model: &str,
    alias: &str,
    version: u32,
    expected: Option<u32>,
) -> pb::SetAliasRequest {
    pb::SetAliasRequest {
        model: model.to_string(),
        alias: alias.to_string(),
        version,
        expected_current_version: expected,
        actor: String::new(),
        reason: String::new(),
        override_gate: false,
    }
}

async fn set_alias(client: &mut Client, request: pb::SetAliasRequest) -> pb::AliasEvent {
    client.set_alias(request).await.unwrap().into_inner()
}

async fn history(client: &mut Client, model: &str, alias: &str) -> Vec<pb::AliasEvent> {
    let request = pb::ListAliasHistoryRequest {
        model: model.to_string(),
        alias: alias.to_string(),
        page_size: 1000,
        page_token: String::new(),
    };
    client
        .list_alias_history(request)
        .await
        .unwrap()
        .into_inner()
        .events
}

async fn by_version(client: &mut Client, model: &str, version: u32) -> pb::ModelVersion {
    let request = pb::GetVersionRequest {
        model: model.to_string(),
        selector: Some(pb::get_version_request::Selector::Version(version)),
    };
    client.get_version(request).await.unwrap().into_inner()
}

#[tokio::test]
async fn versions_are_numbered_in_order_even_when_created_concurrently() {
    for backend in BACKENDS {
        let mut server = Registry::start(backend).await;
        let client = &mut server.client;
        let model = create_model(client, "qa-prompt", pb::ModelKind::Prompt).await;
        assert_eq!(
            (model.latest_version, model.kind),
            (0, pb::ModelKind::Prompt as i32)
        );
        assert_eq!(model.tags.get("team").map(String::as_str), Some("search"));

        let first = client
            .create_version(prompt_version("qa-prompt", "Q: {{ question }}"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.version, 1, "{backend:?}");
        let mut racers = Vec::new();
        for index in 0..8 {
            let mut racer = client.clone();
            racers.push(tokio::spawn(async move {
                let request = prompt_version("qa-prompt", &format!("{index}: {{{{ question }}}}"));
                racer
                    .create_version(request)
                    .await
                    .unwrap()
                    .into_inner()
                    .version
            }));
        }
        let mut numbers = Vec::new();
        for racer in racers {
            numbers.push(racer.await.unwrap());
        }
        numbers.sort_unstable();
        assert_eq!(numbers, (2..=9).collect::<Vec<u32>>(), "{backend:?}");
        let model = client
            .get_model(pb::GetModelRequest {
                name: "qa-prompt".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(model.latest_version, 9);

        let mut listed = Vec::new();
        let mut page_token = String::new();
        let mut pages = 0;
        loop {
            let request = pb::ListVersionsRequest {
                model: "qa-prompt".into(),
                page_size: 4,
                page_token: page_token.clone(),
            };
            let page = client.list_versions(request).await.unwrap().into_inner();
            pages += 1;
            listed.extend(page.versions.iter().map(|version| version.version));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(listed, (1..=9).collect::<Vec<u32>>());
        assert_eq!(pages, 3);

        // A chain pointing at the prompt keeps its whole spec.
        create_model(client, "qa-chain", pb::ModelKind::Chain).await;
        let created = client
            .create_version(chain_version("qa-chain", chain_spec("qa-prompt/3")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (created.version, created.kind),
            (1, pb::ModelKind::Chain as i32)
        );
        assert_eq!(
            created.spec,
            Some(pb::model_version::Spec::Chain(chain_spec("qa-prompt/3")))
        );
        let resolved = client
            .resolve_reference(pb::ResolveReferenceRequest {
                reference: "qa-chain/1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resolved, created);
        // An alias that does not exist yet is a valid prompt reference.
        let by_alias = client
            .create_version(chain_version("qa-chain", chain_spec("qa-prompt@champion")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_alias.version, 2);

        set_alias(client, alias_move("qa-chain", "champion", 1, None)).await;
        let champion = client
            .resolve_reference(pb::ResolveReferenceRequest {
                reference: "qa-chain@champion".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (champion.version, champion.aliases.clone()),
            (1, vec!["champion".to_string()])
        );
        let chain_model = client
            .get_model(pb::GetModelRequest {
                name: "qa-chain".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(chain_model.latest_version, 2);
        assert_eq!(chain_model.aliases, [("champion".to_string(), 1)].into());

        let listed_models = client
            .list_models(pb::ListModelsRequest {
                page_size: 1,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed_models.models[0].name, "qa-chain");
        assert_eq!(listed_models.models[0].aliases, chain_model.aliases);
        let second_page = client
            .list_models(pb::ListModelsRequest {
                page_size: 1,
                page_token: listed_models.next_page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(second_page.models[0].name, "qa-prompt");
        server.stop().await;
    }
}

#[tokio::test]
async fn racing_promoters_have_exactly_one_winner() {
    for backend in BACKENDS {
        let mut server = Registry::start(backend).await;
        let client = &mut server.client;
        create_model(client, "p", pb::ModelKind::Prompt).await;
        for _ in 0..7 {
            client
                .create_version(prompt_version("p", "{{ question }}"))
                .await
                .unwrap();
        }
        set_alias(client, alias_move("p", "champion", 1, Some(0))).await;

        let mut racers = Vec::new();
        for target in 2..=7u32 {
            let mut racer = client.clone();
            racers.push(tokio::spawn(async move {
                let mut request = alias_move("p", "champion", target, Some(1));
                request.actor = format!("promoter-{target}");
                racer
                    .set_alias(request)
                    .await
                    .map(tonic::Response::into_inner)
            }));
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for racer in racers {
            match racer.await.unwrap() {
                Ok(event) => winners.push(event),
                Err(status) => losers.push(status),
            }
        }
        assert_eq!(winners.len(), 1, "{backend:?}: {winners:?}");
        let winner = &winners[0];
        assert_eq!(winner.previous_version, 1);
        assert_eq!(winner.actor, format!("promoter-{}", winner.new_version));
        assert_eq!(losers.len(), 5);
        for loser in &losers {
            assert_eq!(
                loser.code(),
                Code::FailedPrecondition,
                "{}",
                loser.message()
            );
            let expected = format!(
                "points at version {}, expected version 1",
                winner.new_version
            );
            assert!(loser.message().contains(&expected), "{}", loser.message());
        }
        let current = client
            .get_version(pb::GetVersionRequest {
                model: "p".into(),
                selector: Some(pb::get_version_request::Selector::Alias("champion".into())),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(current.version, winner.new_version);

        // Racing to create an alias that must not exist yet.
        let mut creators = Vec::new();
        for target in 1..=5u32 {
            let mut racer = client.clone();
            creators.push(tokio::spawn(async move {
                racer
                    .set_alias(alias_move("p", "challenger", target, Some(0)))
                    .await
            }));
        }
        let mut created = 0;
        for creator in creators {
            match creator.await.unwrap() {
                Ok(_) => created += 1,
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition);
                    assert!(
                        status.message().contains("already exists"),
                        "{}",
                        status.message()
                    );
                }
            }
        }
        assert_eq!(created, 1, "{backend:?}");
        assert_eq!(history(client, "p", "").await.len(), 3);
        server.stop().await;
    }
}

#[tokio::test]
async fn the_audit_trail_records_every_move_in_order() {
    for backend in BACKENDS {
        let mut server = Registry::start(backend).await;
        let client = &mut server.client;
        create_model(client, "p", pb::ModelKind::Prompt).await;
        create_model(client, "q", pb::ModelKind::Prompt).await;
        for _ in 0..2 {
            client
                .create_version(prompt_version("p", "{{ question }}"))
                .await
                .unwrap();
        }
        client
            .create_version(prompt_version("q", "{{ question }}"))
            .await
            .unwrap();

        let mut launch = alias_move("p", "champion", 1, None);
        launch.actor = "alice".into();
        launch.reason = "launch".into();
        let first = set_alias(client, launch).await;
        assert_eq!(
            (
                first.model.as_str(),
                first.alias.as_str(),
                first.previous_version,
                first.new_version
            ),
            ("p", "champion", 0, 1)
        );
        assert_eq!(
            (first.actor.as_str(), first.reason.as_str()),
            ("alice", "launch")
        );
        assert!(first.at_ms > 0);
        let second = set_alias(client, alias_move("p", "champion", 2, Some(1))).await;
        assert_eq!((second.previous_version, second.new_version), (1, 2));
        assert_eq!(second.actor, "anonymous");
        // Setting the version the alias already has returns the move
        // that put it there and writes nothing.
        let mut again = alias_move("p", "champion", 2, None);
        again.actor = "bob".into();
        let no_op = set_alias(client, again).await;
        assert_eq!(no_op, second);
        let third = set_alias(client, alias_move("p", "challenger", 1, None)).await;
        let deleted = client
            .delete_alias(pb::DeleteAliasRequest {
                model: "p".into(),
                alias: "challenger".into(),
                expected_current_version: Some(1),
                actor: "carol".into(),
                reason: "experiment over".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((deleted.previous_version, deleted.new_version), (1, 0));
        assert_eq!(deleted.actor, "carol");
        let fifth = set_alias(client, alias_move("q", "champion", 1, None)).await;

        let everything = history(client, "", "").await;
        assert_eq!(
            everything,
            vec![
                first.clone(),
                second.clone(),
                third.clone(),
                deleted.clone(),
                fifth.clone()
            ]
        );
        for pair in everything.windows(2) {
            assert!(pair[0].sequence < pair[1].sequence, "{backend:?}: {pair:?}");
        }
        assert_eq!(history(client, "p", "").await.len(), 4);
        assert_eq!(
            history(client, "p", "champion").await,
            vec![first.clone(), second.clone()]
        );
        assert_eq!(
            history(client, "", "champion").await,
            vec![first.clone(), second.clone(), fifth.clone()]
        );
        assert!(history(client, "missing", "").await.is_empty());

        let mut paged = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListAliasHistoryRequest {
                model: String::new(),
                alias: String::new(),
                page_size: 2,
                page_token: page_token.clone(),
            };
            let page = client
                .list_alias_history(request)
                .await
                .unwrap()
                .into_inner();
            assert!(page.events.len() <= 2);
            paged.extend(page.events);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(paged, everything);

        let model = client
            .get_model(pb::GetModelRequest { name: "p".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(model.aliases, [("champion".to_string(), 2)].into());
        assert!(by_version(client, "p", 1).await.aliases.is_empty());
        assert_eq!(
            by_version(client, "p", 2).await.aliases,
            vec!["champion".to_string()]
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn watchers_receive_moves_and_streams_end_on_shutdown() {
    for backend in BACKENDS {
        let mut server = Registry::start(backend).await;
        let client = &mut server.client;
        create_model(client, "p", pb::ModelKind::Prompt).await;
        create_model(client, "q", pb::ModelKind::Prompt).await;
        for _ in 0..2 {
            client
                .create_version(prompt_version("p", "{{ question }}"))
                .await
                .unwrap();
        }
        client
            .create_version(prompt_version("q", "{{ question }}"))
            .await
            .unwrap();
        set_alias(client, alias_move("p", "champion", 1, None)).await;

        let mut everything = client
            .watch_aliases(pb::WatchAliasesRequest {
                model: String::new(),
                send_initial_state: true,
            })
            .await
            .unwrap()
            .into_inner();
        let mut only_q = client
            .watch_aliases(pb::WatchAliasesRequest {
                model: "q".into(),
                send_initial_state: false,
            })
            .await
            .unwrap()
            .into_inner();
        let initial = tokio::time::timeout(DEADLINE, everything.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                initial.model.as_str(),
                initial.alias.as_str(),
                initial.previous_version,
                initial.new_version,
                initial.sequence
            ),
            ("p", "champion", 0, 1, 0)
        );

        let moved = set_alias(client, alias_move("p", "champion", 2, Some(1))).await;
        let received = tokio::time::timeout(DEADLINE, everything.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(received, moved, "{backend:?}");
        let q_move = set_alias(client, alias_move("q", "canary", 1, None)).await;
        // The filtered watcher's first event is q's: p's move was skipped.
        let q_received = tokio::time::timeout(DEADLINE, only_q.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(q_received, q_move);
        let also_received = tokio::time::timeout(DEADLINE, everything.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(also_received, q_move);

        // Open watch streams must not keep the server from draining.
        server.server.shutdown_token().cancel();
        let ended = tokio::time::timeout(DEADLINE, everything.message())
            .await
            .unwrap();
        assert!(matches!(ended, Ok(None)), "{ended:?}");
        server.stop().await;
    }
}

async fn snapshot(
    client: &mut Client,
) -> (Vec<pb::Model>, Vec<pb::ModelVersion>, Vec<pb::AliasEvent>) {
    let models = client
        .list_models(pb::ListModelsRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .models;
    let mut versions = Vec::new();
    for model in &models {
        let request = pb::ListVersionsRequest {
            model: model.name.clone(),
            page_size: 1000,
            page_token: String::new(),
        };
        versions.extend(
            client
                .list_versions(request)
                .await
                .unwrap()
                .into_inner()
                .versions,
        );
    }
    let events = history(client, "", "").await;
    (models, versions, events)
}

fn with_chain(mutate: impl FnOnce(&mut pb::ChainSpec)) -> pb::CreateVersionRequest {
    let mut spec = chain_spec("p@champion");
    mutate(&mut spec);
    chain_version("c", spec)
}

fn params(spec: &mut pb::ChainSpec) -> &mut pb::GenerationParams {
    spec.generator
        .get_or_insert_with(Default::default)
        .params
        .get_or_insert_with(Default::default)
}

#[tokio::test]
async fn bad_inputs_are_rejected_with_the_field_and_change_nothing() {
    use Code::{AlreadyExists, FailedPrecondition, InvalidArgument, NotFound};
    for backend in BACKENDS {
        let mut server = Registry::start(backend).await;
        let client = &mut server.client;
        create_model(client, "p", pb::ModelKind::Prompt).await;
        create_model(client, "c", pb::ModelKind::Chain).await;
        client
            .create_version(prompt_version("p", "{{ question }}"))
            .await
            .unwrap();
        set_alias(client, alias_move("p", "champion", 1, None)).await;
        let before = snapshot(client).await;

        let model = |name: &str, kind: i32| pb::CreateModelRequest {
            name: name.to_string(),
            kind,
            description: String::new(),
            tags: Default::default(),
        };
        let prompt_kind = pb::ModelKind::Prompt as i32;
        let mut too_many_tags = model("tagged", prompt_kind);
        too_many_tags.tags = (0..65)
            .map(|index| (format!("k{index}"), String::new()))
            .collect();
        let mut long_key = model("tagged", prompt_kind);
        long_key.tags = [("k".repeat(65), String::new())].into();
        let mut long_value = model("tagged", prompt_kind);
        long_value.tags = [("k".to_string(), "v".repeat(1025))].into();
        let mut long_description = model("described", prompt_kind);
        long_description.description = "d".repeat(4097);
        let create_model_cases = [
            (
                "empty name",
                model("", prompt_kind),
                InvalidArgument,
                "`name`",
            ),
            (
                "bad name",
                model("bad name", prompt_kind),
                InvalidArgument,
                "`name`",
            ),
            ("unspecified kind", model("x", 0), InvalidArgument, "`kind`"),
            ("unknown kind", model("x", 9), InvalidArgument, "`kind`"),
            ("too many tags", too_many_tags, InvalidArgument, "`tags`"),
            ("long tag key", long_key, InvalidArgument, "`tags`"),
            ("long tag value", long_value, InvalidArgument, "`tags`"),
            (
                "long description",
                long_description,
                InvalidArgument,
                "`description`",
            ),
            ("duplicate", model("p", prompt_kind), AlreadyExists, "`p`"),
        ];
        for (label, request, code, needle) in create_model_cases {
            assert_status(label, client.create_model(request).await, code, &[needle]);
        }

        for (label, name, code, needle) in [
            ("empty", "", InvalidArgument, "`name`"),
            ("leading dash", "-p", InvalidArgument, "`name`"),
            ("too long", &"n".repeat(129), InvalidArgument, "`name`"),
            ("unknown", "missing", NotFound, "`missing`"),
        ] {
            let request = pb::GetModelRequest {
                name: name.to_string(),
            };
            assert_status(label, client.get_model(request).await, code, &[needle]);
        }

        for (label, page_size, page_token) in [
            ("page too large", 1001, ""),
            ("odd token", 0, "abc"),
            ("not hex", 0, "zz"),
            ("prefix only", 0, "6b313a"),
        ] {
            let request = pb::ListModelsRequest {
                page_size,
                page_token: page_token.to_string(),
            };
            let field = if page_size > 0 {
                "`page_size`"
            } else {
                "`page_token`"
            };
            assert_status(
                label,
                client.list_models(request).await,
                InvalidArgument,
                &[field],
            );
        }

        let mut no_spec = prompt_version("p", "");
        no_spec.spec = None;
        let mut long_version_description = prompt_version("p", "{{ question }}");
        long_version_description.description = "d".repeat(4097);
        let nan_filter = with_chain(|spec| {
            let filter = spec.filter.get_or_insert_with(Default::default);
            filter.fields.insert(
                "x".to_string(),
                prost_types::Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            );
        });
        let create_version_cases = [
            ("no spec", no_spec, InvalidArgument, "`spec`"),
            (
                "empty model",
                prompt_version("", "{{ question }}"),
                InvalidArgument,
                "`model`",
            ),
            (
                "unknown model",
                prompt_version("missing", "{{ question }}"),
                NotFound,
                "`missing`",
            ),
            (
                "prompt on a chain model",
                prompt_version("c", "{{ question }}"),
                FailedPrecondition,
                "`spec`",
            ),
            (
                "chain on a prompt model",
                chain_version("p", chain_spec("p@champion")),
                FailedPrecondition,
                "`spec`",
            ),
            (
                "empty template",
                prompt_version("p", ""),
                InvalidArgument,
                "`prompt.template`",
            ),
            (
                "unclosed block",
                prompt_version("p", "{% for c in contexts %}"),
                InvalidArgument,
                "`prompt.template`",
            ),
            (
                "template syntax",
                prompt_version("p", "{{ question "),
                InvalidArgument,
                "minijinja",
            ),
            (
                "huge template",
                prompt_version("p", &"x".repeat(64 * 1024 + 1)),
                InvalidArgument,
                "`prompt.template`",
            ),
            (
                "long description",
                long_version_description,
                InvalidArgument,
                "`description`",
            ),
            (
                "top_k 0",
                with_chain(|spec| spec.top_k = 0),
                InvalidArgument,
                "`chain.top_k`",
            ),
            (
                "top_k 1001",
                with_chain(|spec| spec.top_k = 1001),
                InvalidArgument,
                "`chain.top_k`",
            ),
            (
                "bad collection",
                with_chain(|spec| spec.collection = "a b".into()),
                InvalidArgument,
                "`chain.collection`",
            ),
            (
                "prompt without selector",
                with_chain(|spec| spec.prompt = "p".into()),
                InvalidArgument,
                "`chain.prompt`",
            ),
            (
                "prompt model missing",
                with_chain(|spec| spec.prompt = "missing/1".into()),
                FailedPrecondition,
                "`chain.prompt`",
            ),
            (
                "prompt is a chain",
                with_chain(|spec| spec.prompt = "c@champion".into()),
                FailedPrecondition,
                "`chain.prompt`",
            ),
            (
                "prompt version missing",
                with_chain(|spec| spec.prompt = "p/7".into()),
                FailedPrecondition,
                "`chain.prompt`",
            ),
            (
                "no generator",
                with_chain(|spec| spec.generator = None),
                InvalidArgument,
                "`chain.generator.name`",
            ),
            (
                "hot",
                with_chain(|spec| params(spec).temperature = Some(2.5)),
                InvalidArgument,
                "`chain.generator.params.temperature`",
            ),
            (
                "top_p 0",
                with_chain(|spec| params(spec).top_p = Some(0.0)),
                InvalidArgument,
                "`chain.generator.params.top_p`",
            ),
            (
                "max_tokens 0",
                with_chain(|spec| params(spec).max_tokens = Some(0)),
                InvalidArgument,
                "`chain.generator.params.max_tokens`",
            ),
            (
                "five fallbacks",
                with_chain(|spec| spec.fallbacks = vec![spec.fallbacks[0].clone(); 5]),
                InvalidArgument,
                "`chain.fallbacks`",
            ),
            (
                "nameless fallback",
                with_chain(|spec| spec.fallbacks[1].name = String::new()),
                InvalidArgument,
                "`chain.fallbacks[1].name`",
            ),
            (
                "nan filter",
                nan_filter,
                InvalidArgument,
                "`chain.filter.x`",
            ),
            (
                "unknown retrieval mode",
                with_chain(|spec| spec.retrieval_mode = 9),
                InvalidArgument,
                "`chain.retrieval_mode`",
            ),
        ];
        for (label, request, code, needle) in create_version_cases {
            assert_status(label, client.create_version(request).await, code, &[needle]);
        }

        let get = |model: &str, selector: Option<pb::get_version_request::Selector>| {
            pb::GetVersionRequest {
                model: model.to_string(),
                selector,
            }
        };
        use pb::get_version_request::Selector as Pick;
        let get_version_cases = [
            ("no selector", get("p", None), InvalidArgument, "`selector`"),
            (
                "version 0",
                get("p", Some(Pick::Version(0))),
                InvalidArgument,
                "`version`",
            ),
            (
                "bad alias",
                get("p", Some(Pick::Alias("Champion".into()))),
                InvalidArgument,
                "`alias`",
            ),
            (
                "bad model",
                get("", Some(Pick::Version(1))),
                InvalidArgument,
                "`model`",
            ),
            (
                "unknown version",
                get("p", Some(Pick::Version(9))),
                NotFound,
                "version 9 of model `p`",
            ),
            (
                "unknown alias",
                get("p", Some(Pick::Alias("nope".into()))),
                NotFound,
                "alias `nope` of model `p`",
            ),
            (
                "unknown model",
                get("missing", Some(Pick::Version(1))),
                NotFound,
                "`missing`",
            ),
        ];
        for (label, request, code, needle) in get_version_cases {
            assert_status(label, client.get_version(request).await, code, &[needle]);
        }

        for (label, reference, code, needle) in [
            ("empty", "", InvalidArgument, "`reference`"),
            ("no selector", "p", InvalidArgument, "`reference`"),
            ("version 0", "p/0", InvalidArgument, "`reference`"),
            (
                "upper-case alias",
                "p@Champion",
                InvalidArgument,
                "`reference`",
            ),
            ("unknown model", "missing@champion", NotFound, "`missing`"),
            ("unknown version", "p/3", NotFound, "version 3 of model `p`"),
        ] {
            let request = pb::ResolveReferenceRequest {
                reference: reference.to_string(),
            };
            assert_status(
                label,
                client.resolve_reference(request).await,
                code,
                &[needle],
            );
        }

        for (label, model, page_size, page_token, code, needle) in [
            ("empty model", "", 0, "", InvalidArgument, "`model`"),
            (
                "page too large",
                "p",
                5000,
                "",
                InvalidArgument,
                "`page_size`",
            ),
            ("bad token", "p", 0, "xyz", InvalidArgument, "`page_token`"),
            (
                "non-numeric token",
                "p",
                0,
                pagination_token("abc").as_str(),
                InvalidArgument,
                "`page_token`",
            ),
            ("unknown model", "missing", 0, "", NotFound, "`missing`"),
        ] {
            let request = pb::ListVersionsRequest {
                model: model.to_string(),
                page_size,
                page_token: page_token.to_string(),
            };
            assert_status(label, client.list_versions(request).await, code, &[needle]);
        }

        let mut long_actor = alias_move("p", "canary", 1, None);
        long_actor.actor = "a".repeat(257);
        let set_alias_cases = [
            (
                "empty alias",
                alias_move("p", "", 1, None),
                InvalidArgument,
                "`alias`",
            ),
            (
                "digit alias",
                alias_move("p", "123", 1, None),
                InvalidArgument,
                "`alias`",
            ),
            (
                "upper-case alias",
                alias_move("p", "Prod", 1, None),
                InvalidArgument,
                "`alias`",
            ),
            (
                "long alias",
                alias_move("p", &"a".repeat(65), 1, None),
                InvalidArgument,
                "`alias`",
            ),
            (
                "version 0",
                alias_move("p", "canary", 0, None),
                InvalidArgument,
                "`version`",
            ),
            (
                "bad model",
                alias_move("bad name", "canary", 1, None),
                InvalidArgument,
                "`model`",
            ),
            ("long actor", long_actor, InvalidArgument, "`actor`"),
            (
                "unknown model",
                alias_move("missing", "canary", 1, None),
                NotFound,
                "`missing`",
            ),
            (
                "unknown version",
                alias_move("p", "canary", 5, None),
                NotFound,
                "version 5 of model `p`",
            ),
            (
                "stale expectation",
                alias_move("p", "champion", 1, Some(2)),
                FailedPrecondition,
                "points at version 1",
            ),
            (
                "must not exist",
                alias_move("p", "champion", 1, Some(0)),
                FailedPrecondition,
                "already exists at version 1",
            ),
            (
                "must exist",
                alias_move("p", "canary", 1, Some(1)),
                FailedPrecondition,
                "does not exist",
            ),
        ];
        for (label, request, code, needle) in set_alias_cases {
            assert_status(label, client.set_alias(request).await, code, &[needle]);
        }

        let delete = |model: &str, alias: &str, expected: Option<u32>, reason_len: usize| {
            pb::DeleteAliasRequest {
                model: model.to_string(),
                alias: alias.to_string(),
                expected_current_version: expected,
                actor: String::new(),
                reason: "r".repeat(reason_len),
            }
        };
        let delete_alias_cases = [
            (
                "empty alias",
                delete("p", "", None, 0),
                InvalidArgument,
                "`alias`",
            ),
            (
                "empty model",
                delete("", "champion", None, 0),
                InvalidArgument,
                "`model`",
            ),
            (
                "long reason",
                delete("p", "champion", None, 4097),
                InvalidArgument,
                "`reason`",
            ),
            (
                "unknown alias",
                delete("p", "nope", None, 0),
                NotFound,
                "alias `nope` of model `p`",
            ),
            (
                "unknown model",
                delete("missing", "champion", None, 0),
                NotFound,
                "`missing`",
            ),
            (
                "stale expectation",
                delete("p", "champion", Some(3), 0),
                FailedPrecondition,
                "points at version 1",
            ),
        ];
        for (label, request, code, needle) in delete_alias_cases {
            assert_status(label, client.delete_alias(request).await, code, &[needle]);
        }

        for (label, model, alias, page_size, page_token, needle) in [
            ("bad model", "bad name", "", 0, "", "`model`"),
            ("bad alias", "p", "A", 0, "", "`alias`"),
            ("page too large", "", "", 1001, "", "`page_size`"),
            ("bad token", "", "", 0, "zz", "`page_token`"),
        ] {
            let request = pb::ListAliasHistoryRequest {
                model: model.to_string(),
                alias: alias.to_string(),
                page_size,
                page_token: page_token.to_string(),
            };
            assert_status(
                label,
                client.list_alias_history(request).await,
                InvalidArgument,
                &[needle],
            );
        }

        for (label, model) in [
            ("space", "a b"),
            ("leading dot", ".p"),
            ("too long", &"m".repeat(129)),
        ] {
            let request = pb::WatchAliasesRequest {
                model: model.to_string(),
                send_initial_state: true,
            };
            assert_status(
                label,
                client.watch_aliases(request).await,
                InvalidArgument,
                &["`model`"],
            );
        }

        let after = snapshot(client).await;
        assert_eq!(
            before, after,
            "{backend:?}: a rejected call changed something"
        );
        server.stop().await;
    }
}

fn pagination_token(key: &str) -> String {
    keel_registry::pagination::encode(key)
}

//! (e) Bad input over the real cluster: every RPC that takes input refuses at
//! least three invalid requests with the right code and a message naming the
//! field (or the unknown thing), and none of them changes anything.
//! ListCollections, ListEndpoints and GetServingStats take no input.

use std::time::Duration;

use keel_proto::v1::{
    create_version_request, get_version_request, AliasEvent, BatchGetInferencesRequest, ChainSpec,
    ChatMessage, Collection, CreateCollectionRequest, CreateEndpointRequest, CreateModelRequest,
    CreateVersionRequest, DatasetKind, DeleteAliasRequest, DeleteEndpointRequest,
    DeletePointsRequest, DropCollectionRequest, Endpoint, ExportDatasetRequest, FeedbackKind,
    FeedbackRecord, GetCollectionRequest, GetEndpointRequest, GetInferenceRequest,
    GetMetricsRequest, GetModelRequest, GetVersionRequest, HnswParams, InferenceRecord,
    InferenceStatus, ListAliasHistoryRequest, ListCollectionsRequest, ListEndpointsRequest,
    ListFeedbackRequest, ListInferencesRequest, ListModelsRequest, ListOrphanedFeedbackRequest,
    ListVersionsRequest, Model, ModelKind, ModelVersion, Point, PromptSpec, QueryRequest,
    RecordInferencesRequest, ResolveReferenceRequest, Route, SearchRequest, SetAliasRequest,
    SubmitFeedbackRequest, UpdateEndpointRequest, UpsertPointsRequest, WatchAliasesRequest,
};
use keel_tests::fixtures::{
    self, CHAIN_MODEL, COLLECTION, ENDPOINT, PROMPT_MODEL, REFUND_QUESTION,
};
use keel_tests::{assert_status, on_both_backends, Backend, Cluster, Storage};
use tonic::Code::{AlreadyExists, FailedPrecondition, InvalidArgument, NotFound};

use crate::full_loop::wait_for_inference;

on_both_backends!(bad_input);

/// 129 characters: one over every name limit.
fn long_name() -> String {
    "a".repeat(129)
}

const BAD_NAME: &str = "bad name!";
/// A well-formed UUIDv7 nothing was ever stored under.
const UNKNOWN_REQUEST_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";
const DIMENSION: usize = 384;

fn vector_with(value: f32) -> Vec<f32> {
    let mut vector = vec![0.1; DIMENSION];
    vector[7] = value;
    vector
}

/// What the list calls return: must be the same before and after the bad calls.
#[derive(Debug, PartialEq)]
struct State {
    models: Vec<Model>,
    chain_versions: Vec<ModelVersion>,
    prompt_versions: Vec<ModelVersion>,
    alias_history: Vec<AliasEvent>,
    collections: Vec<Collection>,
    search_ids: Vec<String>,
    endpoints: Vec<Endpoint>,
    feedback: Vec<FeedbackRecord>,
    inferences: Vec<InferenceRecord>,
}

async fn bad_input(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;
    let served = fixtures::query(&cluster, ENDPOINT, REFUND_QUESTION.text, "alice").await;
    wait_for_inference(&cluster, &served).await;
    cluster
        .feedback
        .clone()
        .submit_feedback(SubmitFeedbackRequest {
            request_id: served.request_id.clone(),
            kind: FeedbackKind::Thumbs as i32,
            value: 1.0,
            ..Default::default()
        })
        .await
        .expect("valid feedback");

    let before = state(&cluster, &[]).await;
    registry_cases(&cluster).await;
    vector_index_cases(&cluster).await;
    serving_cases(&cluster).await;
    feedback_cases(&cluster, &served.request_id).await;
    monitoring_cases(&cluster).await;

    // A good query after the bad ones: once its record is in monitoring, any
    // record a bad query might have queued before it is there too.
    let marker = fixtures::query(&cluster, ENDPOINT, REFUND_QUESTION.text, "marker").await;
    wait_for_inference(&cluster, &marker).await;
    let after = state(&cluster, &[marker.request_id.as_str()]).await;
    assert_eq!(after, before);
    cluster.shutdown().await;
}

async fn registry_cases(cluster: &Cluster) {
    let mut registry = cluster.registry.clone();
    let create_model = |name: String, kind: ModelKind| CreateModelRequest {
        name,
        kind: kind as i32,
        ..Default::default()
    };
    for (case, request, code, needle) in [
        (
            "create model: empty name",
            create_model(String::new(), ModelKind::Chain),
            InvalidArgument,
            "name",
        ),
        (
            "create model: long name",
            create_model(long_name(), ModelKind::Chain),
            InvalidArgument,
            "name",
        ),
        (
            "create model: bad characters",
            create_model(BAD_NAME.into(), ModelKind::Chain),
            InvalidArgument,
            "name",
        ),
        (
            "create model: no kind",
            create_model("fresh".into(), ModelKind::Unspecified),
            InvalidArgument,
            "kind",
        ),
        (
            "create model: taken name",
            create_model(CHAIN_MODEL.into(), ModelKind::Chain),
            AlreadyExists,
            CHAIN_MODEL,
        ),
    ] {
        assert_status(case, registry.create_model(request).await, code, &[needle]);
    }

    for (case, name, code, needle) in [
        ("get model: empty", String::new(), InvalidArgument, "name"),
        ("get model: long", long_name(), InvalidArgument, "name"),
        (
            "get model: unknown",
            "no-such-model".to_string(),
            NotFound,
            "no-such-model",
        ),
    ] {
        assert_status(
            case,
            registry.get_model(GetModelRequest { name }).await,
            code,
            &[needle],
        );
    }

    for (case, request) in [
        (
            "list models: page_size 1001",
            ListModelsRequest {
                page_size: 1001,
                ..Default::default()
            },
        ),
        (
            "list models: page_size 5000",
            ListModelsRequest {
                page_size: 5000,
                ..Default::default()
            },
        ),
    ] {
        assert_status(
            case,
            registry.list_models(request).await,
            InvalidArgument,
            &["page_size"],
        );
    }
    let garbage_token = ListModelsRequest {
        page_token: "%%% not a token".to_string(),
        ..Default::default()
    };
    assert_status(
        "list models: bad token",
        registry.list_models(garbage_token).await,
        InvalidArgument,
        &["page_token"],
    );

    let chain = |top_k: u32, prompt: &str, collection: &str| {
        Some(create_version_request::Spec::Chain(ChainSpec {
            top_k,
            prompt: prompt.to_string(),
            collection: collection.to_string(),
            ..fixtures::chain_spec(top_k)
        }))
    };
    let good_prompt = format!("{PROMPT_MODEL}/1");
    let create_version = |model: &str, spec| CreateVersionRequest {
        model: model.to_string(),
        spec,
        ..Default::default()
    };
    let malformed_template = Some(create_version_request::Spec::Prompt(PromptSpec {
        template: "{% for context in %}{{ question".to_string(),
    }));
    for (case, request, code, needle) in [
        (
            "create version: empty model",
            create_version("", chain(3, &good_prompt, COLLECTION)),
            InvalidArgument,
            "model",
        ),
        (
            "create version: unknown model",
            create_version("no-such-model", chain(3, &good_prompt, COLLECTION)),
            NotFound,
            "no-such-model",
        ),
        (
            "create version: no spec",
            create_version(CHAIN_MODEL, None),
            InvalidArgument,
            "spec",
        ),
        (
            "create version: top_k 0",
            create_version(CHAIN_MODEL, chain(0, &good_prompt, COLLECTION)),
            InvalidArgument,
            "top_k",
        ),
        (
            "create version: top_k 1001",
            create_version(CHAIN_MODEL, chain(1001, &good_prompt, COLLECTION)),
            InvalidArgument,
            "top_k",
        ),
        (
            "create version: malformed prompt reference",
            create_version(CHAIN_MODEL, chain(3, "acme-prompt", COLLECTION)),
            InvalidArgument,
            "prompt",
        ),
        (
            "create version: empty collection",
            create_version(CHAIN_MODEL, chain(3, &good_prompt, "")),
            InvalidArgument,
            "collection",
        ),
        (
            "create version: malformed template",
            create_version(PROMPT_MODEL, malformed_template),
            InvalidArgument,
            "template",
        ),
    ] {
        assert_status(
            case,
            registry.create_version(request).await,
            code,
            &[needle],
        );
    }

    let get_version = |model: &str, selector| GetVersionRequest {
        model: model.to_string(),
        selector: Some(selector),
    };
    for (case, request, code, needle) in [
        (
            "get version: empty model",
            get_version("", get_version_request::Selector::Version(1)),
            InvalidArgument,
            "model",
        ),
        (
            "get version: unknown model",
            get_version("no-such-model", get_version_request::Selector::Version(1)),
            NotFound,
            "no-such-model",
        ),
        (
            "get version: unknown version",
            get_version(CHAIN_MODEL, get_version_request::Selector::Version(99)),
            NotFound,
            "99",
        ),
        (
            "get version: unknown alias",
            get_version(
                CHAIN_MODEL,
                get_version_request::Selector::Alias("no-such-alias".into()),
            ),
            NotFound,
            "no-such-alias",
        ),
    ] {
        assert_status(case, registry.get_version(request).await, code, &[needle]);
    }

    for (case, reference, code, needle) in [
        ("resolve: empty", "", InvalidArgument, "reference"),
        (
            "resolve: neither @ nor /",
            "acme-chain",
            InvalidArgument,
            "reference",
        ),
        (
            "resolve: version not a number",
            "acme-chain/abc",
            InvalidArgument,
            "reference",
        ),
        (
            "resolve: unknown alias",
            "acme-chain@no-such-alias",
            NotFound,
            "no-such-alias",
        ),
        (
            "resolve: unknown model",
            "no-such-model/1",
            NotFound,
            "no-such-model",
        ),
    ] {
        let request = ResolveReferenceRequest {
            reference: reference.to_string(),
        };
        assert_status(
            case,
            registry.resolve_reference(request).await,
            code,
            &[needle],
        );
    }

    let list_versions = |model: &str, page_size: u32| ListVersionsRequest {
        model: model.to_string(),
        page_size,
        ..Default::default()
    };
    for (case, request, code, needle) in [
        (
            "list versions: empty model",
            list_versions("", 0),
            InvalidArgument,
            "model",
        ),
        (
            "list versions: unknown model",
            list_versions("no-such-model", 0),
            NotFound,
            "no-such-model",
        ),
        (
            "list versions: page_size 1001",
            list_versions(CHAIN_MODEL, 1001),
            InvalidArgument,
            "page_size",
        ),
    ] {
        assert_status(case, registry.list_versions(request).await, code, &[needle]);
    }

    let set_alias =
        |model: &str, alias: &str, version: u32, expected: Option<u32>| SetAliasRequest {
            model: model.to_string(),
            alias: alias.to_string(),
            version,
            expected_current_version: expected,
            ..Default::default()
        };
    for (case, request, code, needle) in [
        (
            "set alias: empty alias",
            set_alias(CHAIN_MODEL, "", 1, None),
            InvalidArgument,
            "alias",
        ),
        (
            "set alias: all digits",
            set_alias(CHAIN_MODEL, "123", 1, None),
            InvalidArgument,
            "alias",
        ),
        (
            "set alias: upper case",
            set_alias(CHAIN_MODEL, "Champion", 1, None),
            InvalidArgument,
            "alias",
        ),
        (
            "set alias: unknown model",
            set_alias("no-such-model", "champion", 1, None),
            NotFound,
            "no-such-model",
        ),
        (
            "set alias: unknown version",
            set_alias(CHAIN_MODEL, "champion", 99, None),
            NotFound,
            "99",
        ),
        (
            "set alias: stale expectation",
            set_alias(CHAIN_MODEL, "champion", 2, Some(2)),
            FailedPrecondition,
            "champion",
        ),
    ] {
        assert_status(case, registry.set_alias(request).await, code, &[needle]);
    }

    let delete_alias = |model: &str, alias: &str, expected: Option<u32>| DeleteAliasRequest {
        model: model.to_string(),
        alias: alias.to_string(),
        expected_current_version: expected,
        ..Default::default()
    };
    for (case, request, code, needle) in [
        (
            "delete alias: empty alias",
            delete_alias(CHAIN_MODEL, "", None),
            InvalidArgument,
            "alias",
        ),
        (
            "delete alias: unknown alias",
            delete_alias(CHAIN_MODEL, "no-such-alias", None),
            NotFound,
            "no-such-alias",
        ),
        (
            "delete alias: unknown model",
            delete_alias("no-such-model", "champion", None),
            NotFound,
            "no-such-model",
        ),
        (
            "delete alias: stale expectation",
            delete_alias(CHAIN_MODEL, "champion", Some(2)),
            FailedPrecondition,
            "champion",
        ),
    ] {
        assert_status(case, registry.delete_alias(request).await, code, &[needle]);
    }

    for (case, request, needle) in [
        (
            "alias history: page_size 1001",
            ListAliasHistoryRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            "alias history: bad model name",
            ListAliasHistoryRequest {
                model: BAD_NAME.into(),
                ..Default::default()
            },
            "model",
        ),
        (
            "alias history: long model name",
            ListAliasHistoryRequest {
                model: long_name(),
                ..Default::default()
            },
            "model",
        ),
    ] {
        assert_status(
            case,
            registry.list_alias_history(request).await,
            InvalidArgument,
            &[needle],
        );
    }

    for (case, model) in [
        ("watch aliases: bad model name", BAD_NAME.to_string()),
        ("watch aliases: long model name", long_name()),
        ("watch aliases: leading dash", "-acme".to_string()),
    ] {
        let request = WatchAliasesRequest {
            model,
            send_initial_state: true,
        };
        let first = first_message(registry.watch_aliases(request).await).await;
        assert_status(case, first, InvalidArgument, &["model"]);
    }
}

async fn vector_index_cases(cluster: &Cluster) {
    let mut vector_index = cluster.vector_index.clone();
    let create = |name: String, dimension: u32, embedder: &str, hnsw: Option<HnswParams>| {
        CreateCollectionRequest {
            name,
            dimension,
            embedder: embedder.to_string(),
            hnsw,
            ..Default::default()
        }
    };
    let hnsw = |m: u32, ef_construction: u32| {
        Some(HnswParams {
            m,
            ef_construction,
            ef_search: 64,
        })
    };
    for (case, request, code, needle) in [
        (
            "create collection: empty name",
            create(String::new(), 8, "none", None),
            InvalidArgument,
            "name",
        ),
        (
            "create collection: long name",
            create(long_name(), 8, "none", None),
            InvalidArgument,
            "name",
        ),
        (
            "create collection: no dimension, no embedder",
            create("fresh".into(), 0, "none", None),
            InvalidArgument,
            "dimension",
        ),
        (
            "create collection: dimension 65537",
            create("fresh".into(), 65537, "none", None),
            InvalidArgument,
            "dimension",
        ),
        (
            "create collection: dimension differs from embedder",
            create("fresh".into(), 128, "hashing", None),
            InvalidArgument,
            "dimension",
        ),
        (
            "create collection: hnsw m 1",
            create("fresh".into(), 8, "none", hnsw(1, 200)),
            InvalidArgument,
            "m",
        ),
        (
            "create collection: ef_construction 5000",
            create("fresh".into(), 8, "none", hnsw(16, 5000)),
            InvalidArgument,
            "ef_construction",
        ),
        (
            "create collection: taken name",
            create(COLLECTION.into(), 0, "hashing", None),
            AlreadyExists,
            COLLECTION,
        ),
    ] {
        assert_status(
            case,
            vector_index.create_collection(request).await,
            code,
            &[needle],
        );
    }
    let unknown_embedder = create("fresh".into(), 0, "no-such-embedder", None);
    let status = vector_index
        .create_collection(unknown_embedder)
        .await
        .expect_err("unknown embedder accepted");
    assert!(
        matches!(status.code(), InvalidArgument | NotFound)
            && status.message().contains("no-such-embedder"),
        "create collection: unknown embedder: {status:?}"
    );

    for (case, name, code, needle) in [
        (
            "get collection: empty",
            String::new(),
            InvalidArgument,
            "name",
        ),
        ("get collection: long", long_name(), InvalidArgument, "name"),
        (
            "get collection: unknown",
            "no-such-collection".to_string(),
            NotFound,
            "no-such-collection",
        ),
    ] {
        assert_status(
            case,
            vector_index
                .get_collection(GetCollectionRequest { name })
                .await,
            code,
            &[needle],
        );
    }
    for (case, name, code, needle) in [
        (
            "drop collection: empty",
            String::new(),
            InvalidArgument,
            "name",
        ),
        (
            "drop collection: long",
            long_name(),
            InvalidArgument,
            "name",
        ),
        (
            "drop collection: unknown",
            "no-such-collection".to_string(),
            NotFound,
            "no-such-collection",
        ),
    ] {
        assert_status(
            case,
            vector_index
                .drop_collection(DropCollectionRequest { name })
                .await,
            code,
            &[needle],
        );
    }

    let point = |id: &str, vector: Vec<f32>| Point {
        id: id.to_string(),
        vector,
        text: "a new passage".to_string(),
        payload: None,
    };
    let upsert = |collection: &str, points: Vec<Point>| UpsertPointsRequest {
        collection: collection.to_string(),
        points,
    };
    let mut nan_payload = serde_json::Map::new();
    nan_payload.insert(
        "topic".to_string(),
        serde_json::Value::String("x".to_string()),
    );
    let mut payload = keel_core::payload::json_to_struct(&nan_payload);
    payload.fields.insert(
        "score".to_string(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)),
        },
    );
    let nan_payload_point = Point {
        payload: Some(payload),
        ..point("new-1", Vec::new())
    };
    let too_many: Vec<Point> = (0..1001)
        .map(|index| point(&format!("new-{index}"), Vec::new()))
        .collect();
    for (case, request, code, needle) in [
        (
            "upsert: unknown collection",
            upsert("no-such-collection", vec![point("new-1", Vec::new())]),
            NotFound,
            "no-such-collection",
        ),
        (
            "upsert: no points",
            upsert(COLLECTION, Vec::new()),
            InvalidArgument,
            "points",
        ),
        (
            "upsert: 1001 points",
            upsert(COLLECTION, too_many),
            InvalidArgument,
            "points",
        ),
        (
            "upsert: empty id",
            upsert(COLLECTION, vec![point("", Vec::new())]),
            InvalidArgument,
            "id",
        ),
        (
            "upsert: long id",
            upsert(COLLECTION, vec![point(&"p".repeat(257), Vec::new())]),
            InvalidArgument,
            "id",
        ),
        (
            "upsert: wrong dimension",
            upsert(COLLECTION, vec![point("new-1", vec![0.5, 0.5, 0.5])]),
            InvalidArgument,
            "vector",
        ),
        // The valid first point must not be stored either.
        (
            "upsert: NaN after a valid point",
            upsert(
                COLLECTION,
                vec![
                    point("new-1", Vec::new()),
                    point("new-2", vector_with(f32::NAN)),
                ],
            ),
            InvalidArgument,
            "vector",
        ),
        (
            "upsert: infinity",
            upsert(COLLECTION, vec![point("new-1", vector_with(f32::INFINITY))]),
            InvalidArgument,
            "vector",
        ),
        (
            "upsert: NaN in payload",
            upsert(COLLECTION, vec![nan_payload_point]),
            InvalidArgument,
            "payload",
        ),
    ] {
        assert_status(
            case,
            vector_index.upsert_points(request).await,
            code,
            &[needle],
        );
    }

    let delete = |collection: String| DeletePointsRequest {
        collection,
        ids: vec!["refunds".to_string()],
    };
    for (case, request, code, needle) in [
        (
            "delete points: empty collection",
            delete(String::new()),
            InvalidArgument,
            "collection",
        ),
        (
            "delete points: long collection",
            delete(long_name()),
            InvalidArgument,
            "collection",
        ),
        (
            "delete points: unknown collection",
            delete("no-such-collection".into()),
            NotFound,
            "no-such-collection",
        ),
    ] {
        assert_status(
            case,
            vector_index.delete_points(request).await,
            code,
            &[needle],
        );
    }

    let search = |collection: &str, text: &str, vector: Vec<f32>, top_k: u32| SearchRequest {
        collection: collection.to_string(),
        text: text.to_string(),
        vector,
        top_k,
        ..Default::default()
    };
    for (case, request, code, needle) in [
        (
            "search: top_k 0",
            search(COLLECTION, "refund", Vec::new(), 0),
            InvalidArgument,
            "top_k",
        ),
        (
            "search: top_k 1001",
            search(COLLECTION, "refund", Vec::new(), 1001),
            InvalidArgument,
            "top_k",
        ),
        (
            "search: wrong dimension",
            search(COLLECTION, "", vec![1.0, 0.0], 3),
            InvalidArgument,
            "vector",
        ),
        (
            "search: NaN",
            search(COLLECTION, "", vector_with(f32::NAN), 3),
            InvalidArgument,
            "vector",
        ),
        (
            "search: negative infinity",
            search(COLLECTION, "", vector_with(f32::NEG_INFINITY), 3),
            InvalidArgument,
            "vector",
        ),
        (
            "search: text and vector",
            search(COLLECTION, "refund", vector_with(0.2), 3),
            InvalidArgument,
            "vector",
        ),
        (
            "search: neither text nor vector",
            search(COLLECTION, "", Vec::new(), 3),
            InvalidArgument,
            "text",
        ),
        (
            "search: unknown collection",
            search("no-such-collection", "refund", Vec::new(), 3),
            NotFound,
            "no-such-collection",
        ),
    ] {
        assert_status(case, vector_index.search(request).await, code, &[needle]);
    }
}

async fn serving_cases(cluster: &Cluster) {
    let mut serving = cluster.serving.clone();
    let routes = |pairs: &[(&str, u32)]| -> Vec<Route> {
        pairs
            .iter()
            .map(|(target, weight)| Route {
                target: target.to_string(),
                weight: *weight,
            })
            .collect()
    };
    let seventeen: Vec<(&str, u32)> = (0..17).map(|_| (fixtures::CHAMPION_TARGET, 1)).collect();
    let create = |name: String, routes: Vec<Route>| CreateEndpointRequest {
        name,
        routes,
        description: String::new(),
        shadow: None,
    };
    let good = routes(&[(fixtures::CHAMPION_TARGET, 1)]);
    for (case, request, code, needle) in [
        (
            "create endpoint: empty name",
            create(String::new(), good.clone()),
            InvalidArgument,
            "name",
        ),
        (
            "create endpoint: long name",
            create(long_name(), good.clone()),
            InvalidArgument,
            "name",
        ),
        (
            "create endpoint: no routes",
            create("fresh".into(), Vec::new()),
            InvalidArgument,
            "routes",
        ),
        (
            "create endpoint: 17 routes",
            create("fresh".into(), routes(&seventeen)),
            InvalidArgument,
            "routes",
        ),
        (
            "create endpoint: weights sum to 0",
            create(
                "fresh".into(),
                routes(&[(fixtures::CHAMPION_TARGET, 0), ("acme-chain/2", 0)]),
            ),
            InvalidArgument,
            "weight",
        ),
        (
            "create endpoint: malformed target",
            create("fresh".into(), routes(&[("acme-chain", 1)])),
            InvalidArgument,
            "target",
        ),
        (
            "create endpoint: taken name",
            create(ENDPOINT.into(), good.clone()),
            AlreadyExists,
            ENDPOINT,
        ),
    ] {
        assert_status(
            case,
            serving.create_endpoint(request).await,
            code,
            &[needle],
        );
    }

    for (case, name, code, needle) in [
        (
            "get endpoint: empty",
            String::new(),
            InvalidArgument,
            "name",
        ),
        ("get endpoint: long", long_name(), InvalidArgument, "name"),
        (
            "get endpoint: unknown",
            "no-such-endpoint".to_string(),
            NotFound,
            "no-such-endpoint",
        ),
    ] {
        assert_status(
            case,
            serving.get_endpoint(GetEndpointRequest { name }).await,
            code,
            &[needle],
        );
    }

    let update = |name: &str, routes: Vec<Route>| UpdateEndpointRequest {
        name: name.to_string(),
        routes,
        description: String::new(),
        shadow: None,
    };
    for (case, request, code, needle) in [
        (
            "update endpoint: empty name",
            update("", good.clone()),
            InvalidArgument,
            "name",
        ),
        (
            "update endpoint: unknown",
            update("no-such-endpoint", good.clone()),
            NotFound,
            "no-such-endpoint",
        ),
        (
            "update endpoint: no routes",
            update(ENDPOINT, Vec::new()),
            InvalidArgument,
            "routes",
        ),
        (
            "update endpoint: weights sum to 0",
            update(ENDPOINT, routes(&[(fixtures::CHAMPION_TARGET, 0)])),
            InvalidArgument,
            "weight",
        ),
    ] {
        assert_status(
            case,
            serving.update_endpoint(request).await,
            code,
            &[needle],
        );
    }

    for (case, name, code, needle) in [
        (
            "delete endpoint: empty",
            String::new(),
            InvalidArgument,
            "name",
        ),
        (
            "delete endpoint: long",
            long_name(),
            InvalidArgument,
            "name",
        ),
        (
            "delete endpoint: unknown",
            "no-such-endpoint".to_string(),
            NotFound,
            "no-such-endpoint",
        ),
    ] {
        assert_status(
            case,
            serving
                .delete_endpoint(DeleteEndpointRequest { name })
                .await,
            code,
            &[needle],
        );
    }

    let user_message = ChatMessage {
        role: "user".to_string(),
        content: REFUND_QUESTION.text.to_string(),
    };
    let query = |endpoint: &str, question: &str, messages: Vec<ChatMessage>| QueryRequest {
        endpoint: endpoint.to_string(),
        question: question.to_string(),
        messages,
        ..Default::default()
    };
    for (case, request, code, needle) in [
        (
            "query: empty endpoint",
            query("", REFUND_QUESTION.text, Vec::new()),
            InvalidArgument,
            "endpoint",
        ),
        (
            "query: unknown endpoint",
            query("no-such-endpoint", REFUND_QUESTION.text, Vec::new()),
            NotFound,
            "no-such-endpoint",
        ),
        (
            "query: neither question nor messages",
            query(ENDPOINT, "", Vec::new()),
            InvalidArgument,
            "question",
        ),
        (
            "query: both question and messages",
            query(ENDPOINT, REFUND_QUESTION.text, vec![user_message]),
            InvalidArgument,
            "messages",
        ),
    ] {
        assert_status(case, serving.query(request).await, code, &[needle]);
    }
}

async fn feedback_cases(cluster: &Cluster, request_id: &str) {
    let mut feedback = cluster.feedback.clone();
    let submit =
        |id: &str, kind: FeedbackKind, value: f64, correction: &str| SubmitFeedbackRequest {
            request_id: id.to_string(),
            kind: kind as i32,
            value,
            correction: correction.to_string(),
            ..Default::default()
        };
    for (case, request, code, needle) in [
        (
            "submit: empty request_id",
            submit("", FeedbackKind::Thumbs, 1.0, ""),
            InvalidArgument,
            "request_id",
        ),
        (
            "submit: request_id not a uuid",
            submit("not-a-uuid", FeedbackKind::Thumbs, 1.0, ""),
            InvalidArgument,
            "request_id",
        ),
        (
            "submit: no kind",
            submit(request_id, FeedbackKind::Unspecified, 1.0, ""),
            InvalidArgument,
            "kind",
        ),
        (
            "submit: thumbs 0.5",
            submit(request_id, FeedbackKind::Thumbs, 0.5, ""),
            InvalidArgument,
            "value",
        ),
        (
            "submit: rating 6",
            submit(request_id, FeedbackKind::Rating, 6.0, ""),
            InvalidArgument,
            "value",
        ),
        (
            "submit: rating NaN",
            submit(request_id, FeedbackKind::Rating, f64::NAN, ""),
            InvalidArgument,
            "value",
        ),
        (
            "submit: empty correction",
            submit(request_id, FeedbackKind::Correction, 0.0, ""),
            InvalidArgument,
            "correction",
        ),
    ] {
        assert_status(
            case,
            feedback.submit_feedback(request).await,
            code,
            &[needle],
        );
    }

    for (case, request, needle) in [
        (
            "list feedback: page_size 1001",
            ListFeedbackRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            "list feedback: bad token",
            ListFeedbackRequest {
                page_token: "%%% not a token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            "list feedback: bad endpoint",
            ListFeedbackRequest {
                endpoint: BAD_NAME.into(),
                ..Default::default()
            },
            "endpoint",
        ),
    ] {
        assert_status(
            case,
            feedback.list_feedback(request).await,
            InvalidArgument,
            &[needle],
        );
    }
    for (case, request, needle) in [
        (
            "list orphaned feedback: page_size 1001",
            ListOrphanedFeedbackRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            "list orphaned feedback: bad token",
            ListOrphanedFeedbackRequest {
                page_token: "%%% not a token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            "list orphaned feedback: a token that is not a cursor",
            ListOrphanedFeedbackRequest {
                page_token: "bm90LWEtY3Vyc29y".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        assert_status(
            case,
            feedback.list_orphaned_feedback(request).await,
            InvalidArgument,
            &[needle],
        );
    }

    let export =
        |kind: DatasetKind, since_ms: i64, until_ms: i64, endpoint: &str| ExportDatasetRequest {
            kind: kind as i32,
            since_ms,
            until_ms,
            endpoint: endpoint.to_string(),
            ..Default::default()
        };
    for (case, request, needle) in [
        (
            "export: no kind",
            export(DatasetKind::Unspecified, 0, 0, ""),
            "kind",
        ),
        (
            "export: since after until",
            export(DatasetKind::Sft, 2_000, 1_000, ""),
            "until_ms",
        ),
        (
            "export: negative since",
            export(DatasetKind::Eval, -5, 0, ""),
            "since_ms",
        ),
        (
            "export: bad endpoint",
            export(DatasetKind::Preference, 0, 0, BAD_NAME),
            "endpoint",
        ),
    ] {
        let first = first_message(feedback.export_dataset(request).await).await;
        assert_status(case, first, InvalidArgument, &[needle]);
    }
}

async fn monitoring_cases(cluster: &Cluster) {
    let mut monitoring = cluster.monitoring.clone();
    let record = |id: &str, latency_ms: f64| InferenceRecord {
        request_id: id.to_string(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_string(),
        endpoint: ENDPOINT.to_string(),
        served_model: CHAIN_MODEL.to_string(),
        served_version: 1,
        question: "q".to_string(),
        answer: "a".to_string(),
        latency_ms,
        status: InferenceStatus::Ok as i32,
        started_at_ms: 1_700_000_000_000,
        ..Default::default()
    };
    let valid_but_new = "01890a5d-ac96-774b-bcce-b302099a8058";
    for (case, records, needle) in [
        (
            "record: 1001 records",
            (0..1001).map(|_| record(valid_but_new, 1.0)).collect(),
            "records",
        ),
        (
            "record: no status",
            vec![InferenceRecord {
                status: 0,
                ..record(valid_but_new, 1.0)
            }],
            "status",
        ),
        (
            "record: bad endpoint",
            vec![InferenceRecord {
                endpoint: BAD_NAME.into(),
                ..record(valid_but_new, 1.0)
            }],
            "endpoint",
        ),
        (
            "record: empty request_id",
            vec![record("", 1.0)],
            "request_id",
        ),
        (
            "record: request_id not a uuid",
            vec![record("nope", 1.0)],
            "request_id",
        ),
        // The valid first record must not be stored either.
        (
            "record: NaN latency after a valid record",
            vec![
                record(valid_but_new, 1.0),
                record(UNKNOWN_REQUEST_ID, f64::NAN),
            ],
            "latency_ms",
        ),
        (
            "record: negative latency",
            vec![record(valid_but_new, -1.0)],
            "latency_ms",
        ),
    ] {
        let request = RecordInferencesRequest { records };
        assert_status(
            case,
            monitoring.record_inferences(request).await,
            InvalidArgument,
            &[needle],
        );
    }

    for (case, request_id, code, needle) in [
        ("get inference: empty", "", InvalidArgument, "request_id"),
        (
            "get inference: not a uuid",
            "not-a-uuid",
            InvalidArgument,
            "request_id",
        ),
        (
            "get inference: unknown",
            UNKNOWN_REQUEST_ID,
            NotFound,
            UNKNOWN_REQUEST_ID,
        ),
    ] {
        let request = GetInferenceRequest {
            request_id: request_id.to_string(),
        };
        assert_status(
            case,
            monitoring.get_inference(request).await,
            code,
            &[needle],
        );
    }

    let too_many: Vec<String> = (0..1001).map(|_| UNKNOWN_REQUEST_ID.to_string()).collect();
    for (case, request_ids) in [
        ("batch get: no ids", Vec::new()),
        ("batch get: 1001 ids", too_many),
        (
            "batch get: one not a uuid",
            vec![UNKNOWN_REQUEST_ID.to_string(), "not-a-uuid".to_string()],
        ),
    ] {
        let request = BatchGetInferencesRequest {
            request_ids,
            ..Default::default()
        };
        assert_status(
            case,
            monitoring.batch_get_inferences(request).await,
            InvalidArgument,
            &["request_ids"],
        );
    }

    for (case, request, needle) in [
        (
            "list inferences: page_size 1001",
            ListInferencesRequest {
                page_size: 1001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            "list inferences: since after until",
            ListInferencesRequest {
                since_ms: 2_000,
                until_ms: 1_000,
                ..Default::default()
            },
            "until_ms",
        ),
        (
            "list inferences: bad token",
            ListInferencesRequest {
                page_token: "%%% not a token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            "list inferences: bad endpoint",
            ListInferencesRequest {
                endpoint: BAD_NAME.into(),
                ..Default::default()
            },
            "endpoint",
        ),
    ] {
        assert_status(
            case,
            monitoring.list_inferences(request).await,
            InvalidArgument,
            &[needle],
        );
    }

    for (case, request, needle) in [
        (
            "metrics: window too long",
            GetMetricsRequest {
                endpoint: ENDPOINT.into(),
                window_seconds: 2_592_001,
            },
            "window_seconds",
        ),
        (
            "metrics: bad endpoint",
            GetMetricsRequest {
                endpoint: BAD_NAME.into(),
                window_seconds: 60,
            },
            "endpoint",
        ),
        (
            "metrics: long endpoint",
            GetMetricsRequest {
                endpoint: long_name(),
                window_seconds: 60,
            },
            "endpoint",
        ),
    ] {
        assert_status(
            case,
            monitoring.get_metrics(request).await,
            InvalidArgument,
            &[needle],
        );
    }
}

/// The first message of a server stream, or the status it failed with
/// (on the call or on the first read). A stream that stays open and silent
/// for 5 s counts as accepted.
async fn first_message<T>(
    opened: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
) -> Result<Option<T>, tonic::Status> {
    let mut stream = opened?.into_inner();
    match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
        Ok(first) => first,
        Err(_elapsed) => Ok(None),
    }
}

/// Reads every list; records whose request_id is in `ignore` are left out.
async fn state(cluster: &Cluster, ignore: &[&str]) -> State {
    let mut registry = cluster.registry.clone();
    let models = registry
        .list_models(ListModelsRequest::default())
        .await
        .expect("list models")
        .into_inner()
        .models;
    let mut versions = Vec::new();
    for model in [CHAIN_MODEL, PROMPT_MODEL] {
        let listed = registry
            .list_versions(ListVersionsRequest {
                model: model.to_string(),
                ..Default::default()
            })
            .await
            .expect("list versions")
            .into_inner()
            .versions;
        versions.push(listed);
    }
    let alias_history = registry
        .list_alias_history(ListAliasHistoryRequest::default())
        .await
        .expect("alias history")
        .into_inner()
        .events;
    let mut vector_index = cluster.vector_index.clone();
    let collections = vector_index
        .list_collections(ListCollectionsRequest {})
        .await
        .expect("list collections")
        .into_inner()
        .collections;
    let search_ids = vector_index
        .search(SearchRequest {
            collection: COLLECTION.to_string(),
            text: "a new passage refund".to_string(),
            top_k: 100,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner()
        .points
        .into_iter()
        .map(|point| point.id)
        .collect();
    let endpoints = cluster
        .serving
        .clone()
        .list_endpoints(ListEndpointsRequest {})
        .await
        .expect("list endpoints")
        .into_inner()
        .endpoints;
    let feedback = cluster
        .feedback
        .clone()
        .list_feedback(ListFeedbackRequest::default())
        .await
        .expect("list feedback")
        .into_inner()
        .records;
    let inferences = cluster
        .monitoring
        .clone()
        .list_inferences(ListInferencesRequest::default())
        .await
        .expect("list inferences")
        .into_inner()
        .records
        .into_iter()
        .filter(|record| !ignore.contains(&record.request_id.as_str()))
        .filter(|record| {
            // Serving logs a refused query it got past validation (an unknown
            // endpoint) as an ERROR inference: observability, not state.
            let logged_refusal =
                record.status() == InferenceStatus::Error && record.endpoint == "no-such-endpoint";
            !logged_refusal
        })
        .collect();
    let mut versions = versions.into_iter();
    State {
        models,
        chain_versions: versions.next().unwrap_or_default(),
        prompt_versions: versions.next().unwrap_or_default(),
        alias_history,
        collections,
        search_ids,
        endpoints,
        feedback,
        inferences,
    }
}

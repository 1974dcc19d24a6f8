//! (d) Everything a service acknowledged survives a restart of the whole
//! cluster on the same data.

use keel_proto::v1::{
    AliasEvent, Collection, DeleteAliasRequest, DeletePointsRequest, Endpoint, FeedbackKind,
    FeedbackRecord, GetCollectionRequest, GetInferenceRequest, GetModelRequest, InferenceRecord,
    ListAliasHistoryRequest, ListCollectionsRequest, ListEndpointsRequest, ListFeedbackRequest,
    ListModelsRequest, ListVersionsRequest, Model, ModelVersion, SearchRequest, SetAliasRequest,
    SubmitFeedbackRequest,
};
use keel_tests::fixtures::{
    self, CHAIN_MODEL, COLLECTION, ENDPOINT, LOYALTY_QUESTION, PROMPT_MODEL, REFUND_QUESTION,
    SHIPPING_QUESTION, WARRANTY_QUESTION,
};
use keel_tests::{on_both_backends, Backend, Cluster, Storage};

use crate::full_loop::wait_for_inference;

on_both_backends!(restart);

const DELETED_POINT: &str = "loyalty";

/// Everything the test wrote, as read back through the APIs.
#[derive(Debug, PartialEq)]
struct Snapshot {
    models: Vec<Model>,
    prompt_model: Model,
    chain_model: Model,
    prompt_versions: Vec<ModelVersion>,
    chain_versions: Vec<ModelVersion>,
    alias_history: Vec<AliasEvent>,
    collections: Vec<Collection>,
    collection: Collection,
    /// Per question: the ids, best first.
    search_ids: Vec<Vec<String>>,
    endpoints: Vec<Endpoint>,
    inferences: Vec<InferenceRecord>,
    feedback: Vec<FeedbackRecord>,
}

async fn restart(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;

    // Alias moves: champion 1 -> 2, challenger created then deleted.
    fixtures::set_champion(&cluster, 2).await;
    let mut registry = cluster.registry.clone();
    registry
        .set_alias(SetAliasRequest {
            model: CHAIN_MODEL.to_string(),
            alias: "challenger".to_string(),
            version: 1,
            expected_current_version: Some(0),
            actor: "e2e".to_string(),
            reason: "try v1 again".to_string(),
            override_gate: false,
        })
        .await
        .expect("set challenger");
    registry
        .delete_alias(DeleteAliasRequest {
            model: CHAIN_MODEL.to_string(),
            alias: "challenger".to_string(),
            expected_current_version: Some(1),
            actor: "e2e".to_string(),
            reason: "done".to_string(),
        })
        .await
        .expect("delete challenger");

    let deleted = cluster
        .vector_index
        .clone()
        .delete_points(DeletePointsRequest {
            collection: COLLECTION.to_string(),
            ids: vec![DELETED_POINT.to_string()],
        })
        .await
        .expect("delete point")
        .into_inner();
    assert_eq!(deleted.deleted, 1);

    let v1_target = format!("{CHAIN_MODEL}/1");
    let v2_target = format!("{CHAIN_MODEL}/2");
    fixtures::create_endpoint(
        &cluster,
        "acme-split",
        &[(&v1_target, 90), (&v2_target, 10)],
    )
    .await;

    let refund = fixtures::query(&cluster, ENDPOINT, REFUND_QUESTION.text, "alice").await;
    let shipping = fixtures::query(&cluster, ENDPOINT, SHIPPING_QUESTION.text, "bob").await;
    assert_eq!((refund.served_version, shipping.served_version), (2, 2));
    let mut request_ids = Vec::new();
    for response in [&refund, &shipping] {
        wait_for_inference(&cluster, response).await;
        request_ids.push(response.request_id.clone());
    }
    let mut feedback = cluster.feedback.clone();
    for (request_id, kind, value) in [
        (&refund.request_id, FeedbackKind::Thumbs, 1.0),
        (&shipping.request_id, FeedbackKind::Rating, 4.0),
    ] {
        feedback
            .submit_feedback(SubmitFeedbackRequest {
                request_id: request_id.clone(),
                kind: kind as i32,
                value,
                user_id: "alice".to_string(),
                idempotency_key: format!("{request_id}-{value}"),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("submit {kind:?}: {status}"));
    }

    let before = snapshot(&cluster, &request_ids).await;
    assert_eq!(before.alias_history.len(), 4, "{:?}", before.alias_history);
    assert_eq!(before.chain_model.aliases.get("champion"), Some(&2));
    assert_eq!(
        before.collection.point_count,
        (fixtures::CORPUS.len() - 1) as u64
    );
    assert_eq!(before.endpoints.len(), 2);
    assert_eq!(before.feedback.len(), 2);
    assert_eq!(before.search_ids[0][0], REFUND_QUESTION.passage_id);
    for ids in &before.search_ids {
        assert!(
            !ids.iter().any(|id| id == DELETED_POINT),
            "deleted point found: {ids:?}"
        );
    }
    cluster.shutdown().await;

    let restarted = Cluster::start(&storage).await;
    let after = snapshot(&restarted, &request_ids).await;
    assert_eq!(after, before);
    // The restarted serving resolves aliases from the restarted registry.
    let again = fixtures::query(&restarted, ENDPOINT, REFUND_QUESTION.text, "alice").await;
    assert_eq!(again.served_version, 2);
    assert_eq!(again.answer, refund.answer);
    restarted.shutdown().await;
}

async fn snapshot(cluster: &Cluster, request_ids: &[String]) -> Snapshot {
    let mut registry = cluster.registry.clone();
    let mut vector_index = cluster.vector_index.clone();
    let models = registry
        .list_models(ListModelsRequest::default())
        .await
        .expect("list models")
        .into_inner()
        .models;
    let mut by_name = Vec::new();
    for name in [PROMPT_MODEL, CHAIN_MODEL] {
        let model = registry
            .get_model(GetModelRequest {
                name: name.to_string(),
            })
            .await
            .unwrap_or_else(|status| panic!("get model {name}: {status}"))
            .into_inner();
        let versions = registry
            .list_versions(ListVersionsRequest {
                model: name.to_string(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("list versions of {name}: {status}"))
            .into_inner()
            .versions;
        by_name.push((model, versions));
    }
    let alias_history = registry
        .list_alias_history(ListAliasHistoryRequest::default())
        .await
        .expect("alias history")
        .into_inner()
        .events;

    let collections = vector_index
        .list_collections(ListCollectionsRequest {})
        .await
        .expect("list collections")
        .into_inner()
        .collections;
    let collection = vector_index
        .get_collection(GetCollectionRequest {
            name: COLLECTION.to_string(),
        })
        .await
        .expect("get collection")
        .into_inner();
    let mut search_ids = Vec::new();
    for question in [
        REFUND_QUESTION,
        SHIPPING_QUESTION,
        WARRANTY_QUESTION,
        LOYALTY_QUESTION,
    ] {
        let points = vector_index
            .search(SearchRequest {
                collection: COLLECTION.to_string(),
                text: question.text.to_string(),
                top_k: 10,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("search {:?}: {status}", question.text))
            .into_inner()
            .points;
        search_ids.push(points.into_iter().map(|point| point.id).collect());
    }

    let endpoints = cluster
        .serving
        .clone()
        .list_endpoints(ListEndpointsRequest {})
        .await
        .expect("list endpoints")
        .into_inner()
        .endpoints;
    let mut inferences = Vec::new();
    for request_id in request_ids {
        let record = cluster
            .monitoring
            .clone()
            .get_inference(GetInferenceRequest {
                request_id: request_id.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("get inference {request_id}: {status}"))
            .into_inner();
        inferences.push(record);
    }
    let feedback = cluster
        .feedback
        .clone()
        .list_feedback(ListFeedbackRequest::default())
        .await
        .expect("list feedback")
        .into_inner()
        .records;

    let mut by_name = by_name.into_iter();
    let (prompt_model, prompt_versions) = by_name.next().expect("prompt model");
    let (chain_model, chain_versions) = by_name.next().expect("chain model");
    Snapshot {
        models,
        prompt_model,
        chain_model,
        prompt_versions,
        chain_versions,
        alias_history,
        collections,
        collection,
        search_ids,
        endpoints,
        inferences,
        feedback,
    }
}

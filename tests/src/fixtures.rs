//! A small support-bot application: a collection of passages that each hold
//! one distinct fact, a prompt, a chain with two versions and an endpoint.

use keel_proto::v1::{
    create_version_request, ChainSpec, Collection, CreateCollectionRequest, CreateEndpointRequest,
    CreateModelRequest, CreateVersionRequest, GeneratorSpec, Metric, ModelKind, ModelVersion,
    Point, PromptSpec, QueryRequest, QueryResponse, Route, SetAliasRequest, UpsertPointsRequest,
};

use crate::Cluster;

pub const COLLECTION: &str = "acme-docs";
pub const PROMPT_MODEL: &str = "acme-prompt";
pub const CHAIN_MODEL: &str = "acme-chain";
pub const ENDPOINT: &str = "acme-support";
pub const CHAMPION_TARGET: &str = "acme-chain@champion";

/// Chain v1 retrieves this many passages, v2 one fewer.
pub const V1_TOP_K: u32 = 3;
pub const V2_TOP_K: u32 = 2;

pub struct Passage {
    pub id: &'static str,
    pub topic: &'static str,
    pub text: &'static str,
}

pub const CORPUS: &[Passage] = &[
    Passage {
        id: "refunds",
        topic: "billing",
        text: "The refund window at Acme is 30 days from delivery. Refunds go back to the original payment method.",
    },
    Passage {
        id: "shipping",
        topic: "logistics",
        text: "Acme ships every order from its warehouse in Rotterdam. Standard shipping takes four business days.",
    },
    Passage {
        id: "warranty",
        topic: "product",
        text: "Every Acme kettle carries a two year warranty. The warranty covers the heating element but not limescale.",
    },
    Passage {
        id: "support-hours",
        topic: "support",
        text: "Acme support answers the phone from 9 to 17 on weekdays. Email support replies within one business day.",
    },
    Passage {
        id: "loyalty",
        topic: "billing",
        text: "Members of the Acme loyalty club earn one point per euro spent. Loyalty points expire after eighteen months.",
    },
];

pub struct Question {
    pub text: &'static str,
    /// The passage holding the fact.
    pub passage_id: &'static str,
    /// A phrase of the fact the extractive answer quotes.
    pub fact: &'static str,
}

pub const REFUND_QUESTION: Question = Question {
    text: "How long is the refund window at Acme?",
    passage_id: "refunds",
    fact: "30 days",
};

pub const SHIPPING_QUESTION: Question = Question {
    text: "Which warehouse ships every order?",
    passage_id: "shipping",
    fact: "Rotterdam",
};

pub const WARRANTY_QUESTION: Question = Question {
    text: "How long is the kettle warranty?",
    passage_id: "warranty",
    fact: "two year warranty",
};

pub const LOYALTY_QUESTION: Question = Question {
    text: "When do loyalty points expire?",
    passage_id: "loyalty",
    fact: "eighteen months",
};

pub const PROMPT_TEMPLATE: &str = "Answer the question using only the context below.\n\
{% for context in contexts %}[{{ context.id }}] {{ context.text }}\n{% endfor %}\n\
Question: {{ question }}";

pub async fn create_collection(cluster: &Cluster) {
    create_text_collection(cluster, COLLECTION, "hashing").await;
}

/// A cosine collection whose points and queries `embedder` embeds (empty:
/// the service's default embedder).
pub async fn create_text_collection(cluster: &Cluster, name: &str, embedder: &str) -> Collection {
    cluster
        .vector_index
        .clone()
        .create_collection(CreateCollectionRequest {
            name: name.to_string(),
            dimension: 0,
            metric: Metric::Cosine as i32,
            embedder: embedder.to_string(),
            hnsw: None,
            indexed_payload_keys: Vec::new(),
        })
        .await
        .unwrap_or_else(|status| panic!("create collection {name}: {status}"))
        .into_inner()
}

pub fn corpus_point(passage: &Passage) -> Point {
    let mut payload = serde_json::Map::new();
    payload.insert(
        "topic".to_string(),
        serde_json::Value::String(passage.topic.to_string()),
    );
    Point {
        id: passage.id.to_string(),
        vector: Vec::new(),
        text: passage.text.to_string(),
        payload: Some(keel_core::payload::json_to_struct(&payload)),
    }
}

pub async fn upsert_corpus(cluster: &Cluster) {
    let response = cluster
        .vector_index
        .clone()
        .upsert_points(UpsertPointsRequest {
            collection: COLLECTION.to_string(),
            points: CORPUS.iter().map(corpus_point).collect(),
        })
        .await
        .expect("upsert corpus")
        .into_inner();
    assert_eq!(response.upserted, CORPUS.len() as u64);
}

pub fn chain_spec(top_k: u32) -> ChainSpec {
    ChainSpec {
        collection: COLLECTION.to_string(),
        top_k,
        filter: None,
        prompt: format!("{PROMPT_MODEL}/1"),
        generator: Some(GeneratorSpec {
            name: "extractive".to_string(),
            params: None,
            model: String::new(),
        }),
        fallbacks: Vec::new(),
        retrieval_mode: 0,
    }
}

pub async fn create_model(cluster: &Cluster, name: &str, kind: ModelKind) {
    cluster
        .registry
        .clone()
        .create_model(CreateModelRequest {
            name: name.to_string(),
            kind: kind as i32,
            description: format!("{name} for the end-to-end tests"),
            tags: [("team".to_string(), "e2e".to_string())]
                .into_iter()
                .collect(),
        })
        .await
        .unwrap_or_else(|status| panic!("create model {name}: {status}"));
}

pub async fn create_version(
    cluster: &Cluster,
    model: &str,
    spec: create_version_request::Spec,
) -> ModelVersion {
    cluster
        .registry
        .clone()
        .create_version(CreateVersionRequest {
            model: model.to_string(),
            spec: Some(spec),
            description: String::new(),
            tags: Default::default(),
            lineage: None,
        })
        .await
        .unwrap_or_else(|status| panic!("create version of {model}: {status}"))
        .into_inner()
}

pub async fn set_champion(cluster: &Cluster, version: u32) {
    cluster
        .registry
        .clone()
        .set_alias(SetAliasRequest {
            model: CHAIN_MODEL.to_string(),
            alias: "champion".to_string(),
            version,
            expected_current_version: None,
            actor: "e2e".to_string(),
            reason: format!("promote v{version}"),
            override_gate: false,
        })
        .await
        .unwrap_or_else(|status| panic!("set champion to {version}: {status}"));
}

/// The prompt (v1), the chain (v1: top_k 3, v2: top_k 2) with @champion on
/// v1.
pub async fn register_models(cluster: &Cluster) {
    create_model(cluster, PROMPT_MODEL, ModelKind::Prompt).await;
    let prompt = create_version(
        cluster,
        PROMPT_MODEL,
        create_version_request::Spec::Prompt(PromptSpec {
            template: PROMPT_TEMPLATE.to_string(),
        }),
    )
    .await;
    assert_eq!(prompt.version, 1);
    create_model(cluster, CHAIN_MODEL, ModelKind::Chain).await;
    let v1 = create_version(
        cluster,
        CHAIN_MODEL,
        create_version_request::Spec::Chain(chain_spec(V1_TOP_K)),
    )
    .await;
    let v2 = create_version(
        cluster,
        CHAIN_MODEL,
        create_version_request::Spec::Chain(chain_spec(V2_TOP_K)),
    )
    .await;
    assert_eq!((v1.version, v2.version), (1, 2));
    set_champion(cluster, 1).await;
}

/// A CHAIN model with one version of `spec`, and an endpoint routing all of
/// its traffic to that version.
pub async fn register_chain_endpoint(
    cluster: &Cluster,
    chain_model: &str,
    spec: ChainSpec,
    endpoint: &str,
) {
    create_model(cluster, chain_model, ModelKind::Chain).await;
    let version = create_version(
        cluster,
        chain_model,
        create_version_request::Spec::Chain(spec),
    )
    .await;
    let target = format!("{chain_model}/{}", version.version);
    create_endpoint(cluster, endpoint, &[(target.as_str(), 100)]).await;
}

pub async fn create_endpoint(cluster: &Cluster, name: &str, routes: &[(&str, u32)]) {
    cluster
        .serving
        .clone()
        .create_endpoint(CreateEndpointRequest {
            name: name.to_string(),
            routes: routes
                .iter()
                .map(|(target, weight)| Route {
                    target: target.to_string(),
                    weight: *weight,
                })
                .collect(),
            description: format!("{name} for the end-to-end tests"),
            shadow: None,
        })
        .await
        .unwrap_or_else(|status| panic!("create endpoint {name}: {status}"));
}

/// Collection, corpus, models and the endpoint routing 100% to
/// `acme-chain@champion`.
pub async fn setup_application(cluster: &Cluster) {
    create_collection(cluster).await;
    upsert_corpus(cluster).await;
    register_models(cluster).await;
    create_endpoint(cluster, ENDPOINT, &[(CHAMPION_TARGET, 100)]).await;
}

pub fn query_request(endpoint: &str, question: &str, user_id: &str) -> QueryRequest {
    QueryRequest {
        endpoint: endpoint.to_string(),
        question: question.to_string(),
        messages: Vec::new(),
        user_id: user_id.to_string(),
        session_id: format!("session-{user_id}"),
        ..Default::default()
    }
}

pub async fn query(
    cluster: &Cluster,
    endpoint: &str,
    question: &str,
    user_id: &str,
) -> QueryResponse {
    cluster
        .serving
        .clone()
        .query(query_request(endpoint, question, user_id))
        .await
        .unwrap_or_else(|status| panic!("query {question:?} on {endpoint}: {status}"))
        .into_inner()
}

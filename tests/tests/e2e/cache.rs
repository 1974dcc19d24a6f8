//! The answer cache: an exact hit for the same prompt, a semantic hit for
//! a question worded differently, both scoped to the chain version and
//! forgotten when the alias moves; streamed like generated answers;
//! `cache_hit` in the response and the inference record; the hit rate on
//! `/metrics`.

use std::time::Duration;

use keel_proto::v1::{
    query_stream_event, CacheHit, CountPointsRequest, GetInferenceRequest, QueryResponse,
};
use keel_serving::cache::{CacheConfig, EndpointCache};
use keel_tests::cluster::Service;
use keel_tests::fixtures::{self, CHAMPION_TARGET, ENDPOINT, REFUND_QUESTION, SHIPPING_QUESTION};
use keel_tests::{eventually, on_both_backends, Backend, Cluster, Storage};

/// Answers only for a similar question, never for the same prompt.
const SEMANTIC_ENDPOINT: &str = "acme-similar";
/// Exact answers that live half a second.
const BRIEF_ENDPOINT: &str = "acme-brief";

fn cache_config() -> CacheConfig {
    let mut config = CacheConfig {
        embedder: "hashing".to_string(),
        lookup_timeout_ms: 2_000,
        ..CacheConfig::default()
    };
    config
        .endpoints
        .insert(ENDPOINT.to_string(), EndpointCache::default());
    config.endpoints.insert(
        SEMANTIC_ENDPOINT.to_string(),
        EndpointCache {
            exact: false,
            semantic_threshold: 0.9,
            ..EndpointCache::default()
        },
    );
    config.endpoints.insert(
        BRIEF_ENDPOINT.to_string(),
        EndpointCache {
            ttl_ms: 500,
            ..EndpointCache::default()
        },
    );
    config
}

async fn ask(cluster: &Cluster, endpoint: &str, question: &str) -> QueryResponse {
    fixtures::query(cluster, endpoint, question, "carol").await
}

/// Asks until the answer comes from the cache: it is kept in the
/// background after the first answer.
async fn ask_until_cached(cluster: &Cluster, endpoint: &str, question: &str) -> QueryResponse {
    eventually(
        &format!("a cached answer on {endpoint}"),
        Duration::from_secs(10),
        || async {
            let response = ask(cluster, endpoint, question).await;
            (response.cache_hit() != CacheHit::None).then_some(response)
        },
    )
    .await
}

async fn cached_points(cluster: &Cluster, endpoint: &str) -> u64 {
    cluster
        .vector_index
        .clone()
        .count_points(CountPointsRequest {
            collection: format!("keel-cache.{endpoint}"),
            ..Default::default()
        })
        .await
        .map(|response| response.into_inner().count)
        .unwrap_or(0)
}

async fn answers_come_from_the_cache(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster =
        Cluster::start_with(&storage, |config| config.serving.cache = cache_config()).await;
    fixtures::setup_application(&cluster).await;
    for endpoint in [SEMANTIC_ENDPOINT, BRIEF_ENDPOINT] {
        fixtures::create_endpoint(&cluster, endpoint, &[(CHAMPION_TARGET, 100)]).await;
    }

    // Exact: the same question again is answered from the cache, word for
    // word, with no tokens, and its record says so.
    let first = ask(&cluster, ENDPOINT, REFUND_QUESTION.text).await;
    assert_eq!(first.cache_hit(), CacheHit::None);
    assert!(first.usage.unwrap().output_tokens > 0);
    let cached = ask_until_cached(&cluster, ENDPOINT, REFUND_QUESTION.text).await;
    assert_eq!(cached.cache_hit(), CacheHit::Exact);
    assert_eq!(cached.answer, first.answer);
    assert_eq!(cached.served_version, first.served_version);
    assert_eq!(cached.usage.unwrap().output_tokens, 0);
    assert_eq!(cached.cost_usd, 0.0);
    assert_eq!(
        cached
            .citations
            .iter()
            .map(|c| &c.point_id)
            .collect::<Vec<_>>(),
        first
            .citations
            .iter()
            .map(|c| &c.point_id)
            .collect::<Vec<_>>()
    );
    assert_ne!(cached.request_id, first.request_id);
    let record = eventually(
        "the cached answer's record",
        Duration::from_secs(10),
        || {
            let mut monitoring = cluster.monitoring.clone();
            let request = GetInferenceRequest {
                request_id: cached.request_id.clone(),
            };
            async move { monitoring.get_inference(request).await.ok() }
        },
    )
    .await
    .into_inner();
    assert_eq!(record.cache_hit(), CacheHit::Exact);
    assert_eq!(record.answer, first.answer);
    // Another question is not a hit.
    let other = ask(&cluster, ENDPOINT, SHIPPING_QUESTION.text).await;
    assert_eq!(other.cache_hit(), CacheHit::None);

    // Streamed from the cache: citations, the answer in pieces, done.
    let mut stream = cluster
        .serving
        .clone()
        .query_stream(fixtures::query_request(
            ENDPOINT,
            REFUND_QUESTION.text,
            "carol",
        ))
        .await
        .unwrap()
        .into_inner();
    let mut streamed = String::new();
    let mut deltas = 0;
    let mut done = None;
    while let Some(event) = stream.message().await.unwrap() {
        match event.event.unwrap() {
            query_stream_event::Event::Citations(citations) => {
                assert!(!citations.citations.is_empty())
            }
            query_stream_event::Event::Delta(delta) => {
                streamed.push_str(&delta.text);
                deltas += 1;
            }
            query_stream_event::Event::Done(finished) => done = Some(finished),
        }
    }
    assert_eq!(streamed, first.answer);
    assert!(deltas > 1, "the answer arrives in pieces");
    assert_eq!(done.unwrap().cache_hit(), CacheHit::Exact);

    // Semantic: the same question worded differently, before retrieval;
    // a different question is not close enough.
    let asked = ask(&cluster, SEMANTIC_ENDPOINT, REFUND_QUESTION.text).await;
    assert_eq!(asked.cache_hit(), CacheHit::None);
    let reworded = "how long is the REFUND window at acme";
    let similar = ask_until_cached(&cluster, SEMANTIC_ENDPOINT, reworded).await;
    assert_eq!(similar.cache_hit(), CacheHit::Semantic);
    assert_eq!(similar.answer, asked.answer);
    assert_eq!(
        ask(&cluster, SEMANTIC_ENDPOINT, SHIPPING_QUESTION.text)
            .await
            .cache_hit(),
        CacheHit::None
    );

    // Expiry: half a second later the answer is generated again.
    ask(&cluster, BRIEF_ENDPOINT, REFUND_QUESTION.text).await;
    ask_until_cached(&cluster, BRIEF_ENDPOINT, REFUND_QUESTION.text).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        ask(&cluster, BRIEF_ENDPOINT, REFUND_QUESTION.text)
            .await
            .cache_hit(),
        CacheHit::None
    );

    // The alias moves: version 1's answers are forgotten, and version 2
    // answers for itself.
    assert!(cached_points(&cluster, ENDPOINT).await > 0);
    fixtures::set_champion(&cluster, 2).await;
    eventually(
        "version 1's answers forgotten",
        Duration::from_secs(10),
        || async { (cached_points(&cluster, ENDPOINT).await == 0).then_some(()) },
    )
    .await;
    let moved = eventually(
        "answers from version 2",
        Duration::from_secs(10),
        || async {
            let response = ask(&cluster, ENDPOINT, REFUND_QUESTION.text).await;
            (response.served_version == 2).then_some(response)
        },
    )
    .await;
    assert_eq!(moved.cache_hit(), CacheHit::None);

    // The hit rate, on /metrics.
    let text = cluster.metrics(Service::Serving).await;
    for series in [
        format!("keel_serving_cache_lookups_total{{endpoint=\"{ENDPOINT}\",kind=\"exact\",outcome=\"hit\",service=\"serving\"}}"),
        format!("keel_serving_cache_lookups_total{{endpoint=\"{SEMANTIC_ENDPOINT}\",kind=\"semantic\",outcome=\"hit\",service=\"serving\"}}"),
        format!("keel_serving_cache_lookups_total{{endpoint=\"{ENDPOINT}\",kind=\"exact\",outcome=\"miss\",service=\"serving\"}}"),
    ] {
        assert!(text.contains(&series), "{series} in\n{text}");
    }
    cluster.shutdown().await;
}

on_both_backends!(answers_come_from_the_cache);

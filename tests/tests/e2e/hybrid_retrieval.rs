//! A chain names its retrieval mode and serving searches that way: the
//! same question through a keyword (BM25) chain and a hybrid (rank-fused)
//! chain finds the passage holding the fact first, with the scores of the
//! mode that ran.

use keel_proto::v1::{create_version_request, PromptSpec, SearchMode};
use keel_tests::fixtures::{self, PROMPT_MODEL, PROMPT_TEMPLATE, REFUND_QUESTION};
use keel_tests::{on_both_backends, Backend, Cluster, Storage};

on_both_backends!(hybrid_retrieval);

async fn hybrid_retrieval(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::create_collection(&cluster).await;
    fixtures::upsert_corpus(&cluster).await;
    fixtures::create_model(&cluster, PROMPT_MODEL, keel_proto::v1::ModelKind::Prompt).await;
    fixtures::create_version(
        &cluster,
        PROMPT_MODEL,
        create_version_request::Spec::Prompt(PromptSpec {
            template: PROMPT_TEMPLATE.to_string(),
        }),
    )
    .await;
    for (mode, chain, endpoint) in [
        (SearchMode::Keyword, "keyword-chain", "keyword-support"),
        (SearchMode::Hybrid, "hybrid-chain", "hybrid-support"),
    ] {
        let spec = keel_proto::v1::ChainSpec {
            retrieval_mode: mode as i32,
            ..fixtures::chain_spec(3)
        };
        fixtures::register_chain_endpoint(&cluster, chain, spec, endpoint).await;
    }

    let keyword = fixtures::query(&cluster, "keyword-support", REFUND_QUESTION.text, "kim").await;
    assert_eq!(keyword.citations[0].point_id, REFUND_QUESTION.passage_id);
    assert!(
        keyword.answer.contains(REFUND_QUESTION.fact),
        "{}",
        keyword.answer
    );
    // BM25 of several matching terms, far above what rank fusion gives.
    assert!(keyword.citations[0].score > 0.5, "{:?}", keyword.citations);

    let hybrid = fixtures::query(&cluster, "hybrid-support", REFUND_QUESTION.text, "kim").await;
    assert_eq!(hybrid.citations[0].point_id, REFUND_QUESTION.passage_id);
    // First in both rankings: weight 1/(60+1) from each.
    let top = hybrid.citations[0].score;
    assert!(
        (top - 2.0 / 61.0).abs() < 1e-4,
        "fused score {top} of {:?}",
        hybrid.citations
    );
    assert!(
        hybrid.answer.contains(REFUND_QUESTION.fact),
        "{}",
        hybrid.answer
    );
    cluster.shutdown().await;
}

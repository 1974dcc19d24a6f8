//! The retrieval test set of `tests/retrieval`: Python 3.11's library
//! reference (about 300 HTML pages) ingested by `keel ingest`'s code with
//! the real `minilm` embedder, and 40 questions whose answering passage
//! was checked in the text. Hybrid retrieval (BM25 and dense fused by
//! rank) finds the answers better than dense alone: higher hit@5 and MRR.
//!
//! Ingesting the corpus takes minutes, too long for every CI run: the test
//! runs when KEEL_TEST_RETRIEVAL_CORPUS names the directory
//! `tests/retrieval/build_corpus.sh` built, and says why it skipped
//! otherwise. Best in release:
//! `KEEL_TEST_RETRIEVAL_CORPUS=.retrieval-corpus cargo test --release -p keel-tests --test e2e retrieval_eval -- --nocapture`

use std::path::PathBuf;

use keel::cli::eval_retrieval::{evaluate_retrieval, read_questions};
use keel::cli::{ingest, ServiceUrls};
use keel_tests::{fixtures, on_both_backends, real_model_catalog, Backend, Cluster, Storage};

on_both_backends!(retrieval_eval);

const CORPUS_VARIABLE: &str = "KEEL_TEST_RETRIEVAL_CORPUS";
const COLLECTION: &str = "python-docs";
const K: usize = 5;

async fn retrieval_eval(backend: Backend) {
    let Some(corpus) = std::env::var_os(CORPUS_VARIABLE).map(PathBuf::from) else {
        eprintln!(
            "skipped: set {CORPUS_VARIABLE} to the directory tests/retrieval/build_corpus.sh builds"
        );
        return;
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let questions = read_questions(&repo.join("tests/retrieval/questions.jsonl")).unwrap();
    assert_eq!(questions.len(), 40);

    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start_with_catalog(storage.config(), real_model_catalog().await).await;
    let urls = ServiceUrls::of_cluster(&cluster.keel);
    let collection = fixtures::create_text_collection(&cluster, COLLECTION, "minilm").await;
    assert_eq!(collection.embedder, "minilm");
    let started = std::time::Instant::now();
    let summary = ingest::ingest(&urls, &corpus, COLLECTION, ingest::ChunkOptions::default())
        .await
        .expect("ingest the retrieval corpus");
    eprintln!(
        "{backend:?}: ingested {} files, {} chunks in {:.1} s",
        summary.files,
        summary.chunks,
        started.elapsed().as_secs_f64()
    );
    assert!(summary.files >= 300, "{} files", summary.files);

    let report = evaluate_retrieval(&urls, COLLECTION, &questions, K)
        .await
        .unwrap();
    for scores in &report.modes {
        eprintln!(
            "{backend:?} {:<8} hit@1 {:.3} hit@{K} {:.3} MRR {:.3} recall@{K} {:.3}",
            scores.mode, scores.hit_at_1, scores.hit_at_k, scores.mrr, scores.recall_at_k
        );
    }
    let unanswerable: Vec<&str> = report
        .per_question
        .iter()
        .filter(|question| question.relevant_passages == 0)
        .map(|question| question.question.as_str())
        .collect();
    assert!(
        unanswerable.is_empty(),
        "no passage holds the evidence of: {unanswerable:?}"
    );
    let mode = |name: &str| {
        report
            .modes
            .iter()
            .find(|scores| scores.mode == name)
            .unwrap()
            .clone()
    };
    let (dense, hybrid) = (mode("dense"), mode("hybrid"));
    assert!(
        hybrid.hit_at_k > dense.hit_at_k && hybrid.mrr > dense.mrr,
        "hybrid {hybrid:?} does not beat dense {dense:?}"
    );
}

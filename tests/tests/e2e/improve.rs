//! (l) `keel improve` closes the loop on the sample corpus: scripted
//! feedback is exported, a few-shot challenger is built from the liked
//! answers, evaluated against the champion on the held-out ones, put in an
//! experiment that scripted users prefer, and promoted — each step in the
//! lineage, the evaluation runs and the alias audit trail.

use std::time::Duration;

use keel::cli::eval_run::ScoringArgs;
use keel::cli::experiment::AllocationArg;
use keel::cli::improve::{improve, ImproveArgs, Outcome};
use keel::cli::ServiceUrls;
use keel_proto::v1::{
    model_version, FeedbackKind, GetVersionRequest, ListAliasHistoryRequest,
    ListEvaluationRunsRequest, ListExperimentsRequest, SubmitFeedbackRequest,
};
use keel_tests::fixtures::{
    self, CHAIN_MODEL, ENDPOINT, LOYALTY_QUESTION, PROMPT_MODEL, REFUND_QUESTION,
    SHIPPING_QUESTION, WARRANTY_QUESTION,
};
use keel_tests::{on_both_backends, Backend, Cluster, Storage};

use crate::streaming::inference_record;

on_both_backends!(improve_promotes_a_few_shot_challenger);

/// The first version `keel improve` registers: the fixtures hold chain v1
/// and v2.
const CHALLENGER_VERSION: u32 = 3;

async fn thumbs(cluster: &Cluster, request_id: &str, value: f64, user: &str) {
    cluster
        .feedback
        .clone()
        .submit_feedback(SubmitFeedbackRequest {
            request_id: request_id.to_string(),
            kind: FeedbackKind::Thumbs as i32,
            value,
            user_id: user.to_string(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("thumbs: {status}"));
}

/// One user of the experiment: asks, and likes the challenger's answer or
/// dislikes the champion's. Users arrive once the experiment runs: their
/// thumbs must not be in the export the challenger is built from.
async fn scripted_user(cluster: &Cluster, index: usize) {
    if !experiment_running(cluster).await {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return;
    }
    let user = format!("user-{index}");
    let answer = fixtures::query(cluster, ENDPOINT, REFUND_QUESTION.text, &user).await;
    let value = if answer.served_version == CHALLENGER_VERSION {
        1.0
    } else {
        -1.0
    };
    thumbs(cluster, &answer.request_id, value, &user).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn experiment_running(cluster: &Cluster) -> bool {
    let running = cluster
        .serving
        .clone()
        .list_experiments(ListExperimentsRequest {
            endpoint: ENDPOINT.to_string(),
            running_only: true,
        })
        .await
        .unwrap()
        .into_inner()
        .experiments;
    !running.is_empty()
}

fn improve_args(work_dir: &std::path::Path) -> ImproveArgs {
    ImproveArgs {
        endpoint: ENDPOINT.to_string(),
        examples: 4,
        work_dir: work_dir.to_path_buf(),
        challenger_alias: "challenger".to_string(),
        max_regression: vec!["token_f1=0.05".to_string()],
        scoring: ScoringArgs {
            scorers: vec!["token_f1".to_string(), "contains".to_string()],
            judge: None,
            concurrency: 2,
            actor: "e2e-improve".to_string(),
        },
        allocation: AllocationArg::Fixed,
        min_ratings: 5,
        alpha: 0.05,
        max_thumbs_down: 0.0,
        max_error_rate: 0.0,
        wait: Duration::from_secs(60),
    }
}

async fn improve_promotes_a_few_shot_challenger(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;
    let urls = ServiceUrls::of_cluster(&cluster.keel);
    let work_dir = tempfile::tempdir().unwrap();

    // Nothing rated yet: nothing to learn from, nothing registered.
    let error = improve(&urls, &improve_args(work_dir.path()))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("no rated requests"), "{error}");

    // Four liked answers: two become few-shot examples, two are held out.
    let questions = [
        REFUND_QUESTION,
        SHIPPING_QUESTION,
        WARRANTY_QUESTION,
        LOYALTY_QUESTION,
    ];
    let mut liked_answers = Vec::new();
    for (index, question) in questions.iter().enumerate() {
        let user = format!("early-{index}");
        let answer = fixtures::query(&cluster, ENDPOINT, question.text, &user).await;
        inference_record(&cluster, &answer.request_id).await;
        thumbs(&cluster, &answer.request_id, 1.0, &user).await;
        liked_answers.push(answer.answer);
    }

    // `keel improve` runs while scripted users query the endpoint, liking
    // the challenger's answers and disliking the champion's.
    let args = improve_args(work_dir.path());
    let running = improve(&urls, &args);
    tokio::pin!(running);
    let mut index = 0;
    let report = loop {
        tokio::select! {
            report = &mut running => break report.unwrap(),
            () = scripted_user(&cluster, index) => index += 1,
        }
    };
    assert_eq!(report.outcome, Outcome::Promoted, "{report:?}");
    assert_eq!(report.champion_target, fixtures::CHAMPION_TARGET);
    assert_eq!(report.champion_version, 1);
    assert_eq!(report.challenger_version, CHALLENGER_VERSION);
    assert_eq!((report.few_shot_examples, report.held_out_examples), (2, 2));
    assert!(report.regressions.is_empty());
    assert!(report
        .verdict
        .starts_with("challenger beats control with 95% confidence"));

    // Lineage: the chain came from v1 and the export; its prompt from
    // prompt v1 and the few-shot set, whose liked answers it quotes.
    let mut registry = cluster.registry.clone();
    let version = |model: &str, number: u32| GetVersionRequest {
        model: model.to_string(),
        selector: Some(keel_proto::v1::get_version_request::Selector::Version(
            number,
        )),
    };
    let chain = registry
        .get_version(version(CHAIN_MODEL, CHALLENGER_VERSION))
        .await
        .unwrap()
        .into_inner();
    assert!(chain.aliases.contains(&"champion".to_string()));
    let lineage = chain.lineage.unwrap();
    assert_eq!(lineage.parent_version, 1);
    let names: Vec<&str> = lineage
        .datasets
        .iter()
        .map(|dataset| dataset.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            format!("feedback:eval:{ENDPOINT}"),
            format!("keel-improve:few-shot:{ENDPOINT}")
        ]
    );
    assert_eq!(lineage.datasets[0].examples, 4);
    assert_eq!(lineage.datasets[0].digest.len(), 64);
    let Some(model_version::Spec::Chain(spec)) = chain.spec else {
        panic!("a chain version");
    };
    assert_eq!(
        spec.prompt,
        format!("{PROMPT_MODEL}/{}", report.prompt_version)
    );
    assert_eq!(
        spec.top_k,
        fixtures::V1_TOP_K,
        "the champion's chain otherwise"
    );
    let prompt = registry
        .get_version(version(PROMPT_MODEL, report.prompt_version))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(prompt.lineage.as_ref().unwrap().parent_version, 1);
    let Some(model_version::Spec::Prompt(prompt_spec)) = prompt.spec else {
        panic!("a prompt version");
    };
    assert!(prompt_spec
        .template
        .contains("Examples of good answers to earlier questions"));
    let quoted = liked_answers
        .iter()
        .filter(|answer| prompt_spec.template.contains(answer.trim()))
        .count();
    assert_eq!(quoted, 2, "two liked answers are the few-shot examples");
    assert!(prompt_spec.template.ends_with(fixtures::PROMPT_TEMPLATE));

    // Both were evaluated on the held-out set.
    let runs = registry
        .list_evaluation_runs(ListEvaluationRunsRequest {
            model: CHAIN_MODEL.to_string(),
            dataset: format!("keel-improve:held-out:{ENDPOINT}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    let mut evaluated: Vec<(u32, u64)> = runs
        .iter()
        .map(|run| (run.version, run.example_count))
        .collect();
    evaluated.sort_unstable();
    assert_eq!(evaluated, [(1, 2), (CHALLENGER_VERSION, 2)]);

    // The audit trail: the challenger alias set by keel improve, the
    // champion moved by the experiment.
    let history = registry
        .list_alias_history(ListAliasHistoryRequest {
            model: CHAIN_MODEL.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let challenger_set = history
        .iter()
        .find(|event| event.alias == "challenger")
        .expect("the challenger alias event");
    assert_eq!(challenger_set.new_version, CHALLENGER_VERSION);
    assert_eq!(challenger_set.actor, "e2e-improve");
    assert!(challenger_set.reason.starts_with("keel improve"));
    let promotion = history
        .iter()
        .find(|event| event.alias == "champion" && event.new_version == CHALLENGER_VERSION)
        .expect("the promotion event");
    assert_eq!(promotion.previous_version, 1);
    assert_eq!(
        promotion.actor,
        format!("experiment {}", report.experiment_id)
    );
    cluster.shutdown().await;
}

//! (l) `keel improve` closes the loop on the sample corpus: scripted
//! feedback is exported, a challenger is built from the liked answers —
//! a few-shot prompt, or a model fine-tuned through a stand-in for OpenAI's
//! fine-tuning API — evaluated against the champion on the held-out ones,
//! put in an experiment that scripted users prefer, and promoted — each
//! step in the lineage, the evaluation runs and the alias audit trail.

use std::sync::Arc;
use std::time::Duration;

use keel::cli::eval_run::ScoringArgs;
use keel::cli::experiment::AllocationArg;
use keel::cli::improve::{improve, ChallengerKind, ImproveArgs, ImproveReport, Outcome};
use keel::cli::improve_fine_tune::FineTuneArgs;
use keel::cli::ServiceUrls;
use keel_models::{ModelCatalog, OpenAiConfig, OpenAiGenerator};
use keel_proto::v1::{
    model_version, FeedbackKind, GetVersionRequest, Lineage, ListAliasHistoryRequest,
    ListEvaluationRunsRequest, ListExperimentsRequest, ModelVersion, SubmitFeedbackRequest,
};
use keel_testkit::fakes::FakeOpenAi;
use keel_tests::fixtures::{
    self, CHAIN_MODEL, ENDPOINT, LOYALTY_QUESTION, PROMPT_MODEL, REFUND_QUESTION,
    SHIPPING_QUESTION, WARRANTY_QUESTION,
};
use keel_tests::{eventually, on_both_backends, Backend, Cluster, Storage};

use crate::streaming::inference_record;

on_both_backends!(improve_promotes_a_few_shot_challenger);
on_both_backends!(improve_promotes_a_fine_tuned_challenger);

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

async fn version(cluster: &Cluster, model: &str, number: u32) -> ModelVersion {
    cluster
        .registry
        .clone()
        .get_version(GetVersionRequest {
            model: model.to_string(),
            selector: Some(keel_proto::v1::get_version_request::Selector::Version(
                number,
            )),
        })
        .await
        .unwrap_or_else(|status| panic!("{model}/{number}: {status}"))
        .into_inner()
}

fn dataset_names(lineage: &Lineage) -> Vec<&str> {
    lineage
        .datasets
        .iter()
        .map(|dataset| dataset.name.as_str())
        .collect()
}

/// Four liked answers (two to learn from, two held out), returned.
async fn liked_history(cluster: &Cluster) -> Vec<String> {
    let questions = [
        REFUND_QUESTION,
        SHIPPING_QUESTION,
        WARRANTY_QUESTION,
        LOYALTY_QUESTION,
    ];
    let mut liked_answers = Vec::new();
    for (index, question) in questions.iter().enumerate() {
        let user = format!("early-{index}");
        let answer = fixtures::query(cluster, ENDPOINT, question.text, &user).await;
        inference_record(cluster, &answer.request_id).await;
        thumbs(cluster, &answer.request_id, 1.0, &user).await;
        liked_answers.push(answer.answer);
    }
    liked_answers
}

/// Runs `keel improve` while scripted users query the endpoint, liking the
/// challenger's answers and disliking the champion's.
async fn improve_with_users(
    cluster: &Cluster,
    urls: &ServiceUrls,
    args: &ImproveArgs,
) -> ImproveReport {
    let running = improve(urls, args);
    tokio::pin!(running);
    let mut index = 0;
    loop {
        tokio::select! {
            report = &mut running => break report.unwrap(),
            () = scripted_user(cluster, index) => index += 1,
        }
    }
}

fn improve_args(work_dir: &std::path::Path) -> ImproveArgs {
    ImproveArgs {
        endpoint: ENDPOINT.to_string(),
        challenger: ChallengerKind::FewShot,
        fine_tune: FineTuneArgs {
            url: String::new(),
            key_env: "KEEL_E2E_UNSET_KEY".to_string(),
            base_model: "gpt-4o-mini".to_string(),
            generator: "openai".to_string(),
            poll: Duration::from_millis(20),
            timeout: Duration::from_secs(30),
        },
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

    let liked_answers = liked_history(&cluster).await;
    let report = improve_with_users(&cluster, &urls, &improve_args(work_dir.path())).await;
    assert_eq!(report.outcome, Outcome::Promoted, "{report:?}");
    assert_eq!(report.champion_target, fixtures::CHAMPION_TARGET);
    assert_eq!(report.champion_version, 1);
    assert_eq!(report.challenger_version, CHALLENGER_VERSION);
    assert_eq!((report.training_examples, report.held_out_examples), (2, 2));
    assert!(report.regressions.is_empty());
    assert!(report
        .verdict
        .starts_with("challenger beats control with 95% confidence"));

    // Lineage: the chain came from v1 and the export; its prompt from
    // prompt v1 and the few-shot set, whose liked answers it quotes.
    let mut registry = cluster.registry.clone();
    let chain = version(&cluster, CHAIN_MODEL, CHALLENGER_VERSION).await;
    assert!(chain.aliases.contains(&"champion".to_string()));
    let lineage = chain.lineage.unwrap();
    assert_eq!(lineage.parent_version, 1);
    assert_eq!(
        dataset_names(&lineage),
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
    let prompt = version(&cluster, PROMPT_MODEL, report.prompt_version).await;
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

async fn improve_promotes_a_fine_tuned_challenger(backend: Backend) {
    let server = FakeOpenAi::answering("The fine-tuned model says: refunds within 30 days.").await;
    let storage = Storage::fresh(backend).await;
    let mut catalog = ModelCatalog::builtin();
    let config = OpenAiConfig {
        base_url: server.base_url(),
        model: "gpt-4o-mini".to_string(),
        ..OpenAiConfig::default()
    };
    let generator = OpenAiGenerator::with_api_key(config, None)
        .unwrap()
        .named("openai");
    catalog.add_generator("openai", Arc::new(generator));
    let cluster = Cluster::start_with_catalog(storage.config(), catalog).await;
    fixtures::setup_application(&cluster).await;
    let urls = ServiceUrls::of_cluster(&cluster.keel);
    let work_dir = tempfile::tempdir().unwrap();
    liked_history(&cluster).await;

    let mut args = improve_args(work_dir.path());
    args.challenger = ChallengerKind::FineTune;
    args.fine_tune.url = server.base_url();
    // The fine-tuned stand-in answers one fixed sentence: on the held-out
    // references (liked extractive answers) it scores lower, which this
    // run accepts so that users decide.
    args.max_regression = vec!["token_f1=1.0".to_string()];
    let report = improve_with_users(&cluster, &urls, &args).await;
    assert_eq!(report.outcome, Outcome::Promoted, "{report:?}");
    let tuned = format!("ft:gpt-4o-mini:keel:keel-{ENDPOINT}:ftjob-1");
    assert_eq!(report.fine_tuned_model, tuned);
    assert_eq!(report.fine_tune_job, "ftjob-1");
    assert_eq!(report.prompt_version, 1, "the champion's prompt");
    assert_eq!((report.training_examples, report.held_out_examples), (2, 2));

    // The API saw one upload of the two training questions only, one job
    // on it, read until it succeeded; the challenger asked for the model.
    let calls = server.calls();
    assert_eq!(calls.uploads.len(), 1);
    let uploaded = &calls.uploads[0];
    let questions = [
        REFUND_QUESTION,
        SHIPPING_QUESTION,
        WARRANTY_QUESTION,
        LOYALTY_QUESTION,
    ];
    let in_upload = questions
        .iter()
        .filter(|question| uploaded.contains(question.text))
        .count();
    assert_eq!(in_upload, 2, "held-out questions are not trained on");
    assert_eq!(calls.jobs.len(), 1);
    assert_eq!(calls.jobs[0].model, "gpt-4o-mini");
    assert_eq!(calls.jobs[0].training_file, "file-1");
    assert!(calls.jobs[0].reads >= 2);
    assert!(calls.chat_models.iter().all(|model| model == &tuned));
    assert!(!calls.chat_models.is_empty());

    let chain = version(&cluster, CHAIN_MODEL, CHALLENGER_VERSION).await;
    assert!(chain.aliases.contains(&"champion".to_string()));
    assert_eq!(chain.tags["fine_tune_job"], "ftjob-1");
    let lineage = chain.lineage.unwrap();
    assert_eq!(lineage.parent_version, 1);
    assert_eq!(
        dataset_names(&lineage),
        [
            format!("feedback:eval:{ENDPOINT}"),
            format!("feedback:sft:{ENDPOINT}")
        ]
    );
    assert_eq!(lineage.datasets[1].examples, 2);
    let Some(model_version::Spec::Chain(spec)) = chain.spec else {
        panic!("a chain version");
    };
    let generator = spec.generator.unwrap();
    assert_eq!(
        (generator.name.as_str(), generator.model.as_str()),
        ("openai", tuned.as_str())
    );
    assert_eq!(spec.prompt, format!("{PROMPT_MODEL}/1"));

    // Everyone now gets the fine-tuned model's answer.
    let cluster_ref = &cluster;
    let after = eventually(
        "the fine-tuned challenger answers everyone",
        Duration::from_secs(2),
        || async move {
            let answer = fixtures::query(cluster_ref, ENDPOINT, REFUND_QUESTION.text, "late").await;
            (answer.served_version == CHALLENGER_VERSION).then_some(answer)
        },
    )
    .await;
    assert!(
        after.answer.starts_with("The fine-tuned model says"),
        "{}",
        after.answer
    );
    cluster.shutdown().await;
}

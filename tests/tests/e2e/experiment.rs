//! (k) Experiments: @champion (v1) and @challenger (v2) share the endpoint,
//! each user stays on one arm, scripted thumbs decide. A winning challenger
//! takes @champion (in the audit trail, by the experiment); a challenger
//! past its thumbs-down guard is stopped and @challenger moved back; bad
//! input and a second experiment on one endpoint are refused.

use std::collections::HashMap;
use std::time::Duration;

use keel_proto::v1::{
    Allocation, Experiment, ExperimentGuards, ExperimentState, FeedbackKind, GetExperimentRequest,
    ListAliasHistoryRequest, ListExperimentsRequest, ResolveReferenceRequest, SetAliasRequest,
    StartExperimentRequest, StickyBy, StopExperimentRequest, SubmitFeedbackRequest, VerdictKind,
};
use keel_tests::fixtures::{self, CHAIN_MODEL, ENDPOINT, REFUND_QUESTION};
use keel_tests::{assert_status, eventually, on_both_backends, Backend, Cluster, Storage};
use tonic::Code;

on_both_backends!(experiment_promotes_a_winning_challenger);
on_both_backends!(experiment_guard_rolls_the_challenger_back);

const RATINGS_PER_ARM: u64 = 8;

async fn set_alias(cluster: &Cluster, alias: &str, version: u32) {
    cluster
        .registry
        .clone()
        .set_alias(SetAliasRequest {
            model: CHAIN_MODEL.to_string(),
            alias: alias.to_string(),
            version,
            actor: "e2e".to_string(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("set {alias} to {version}: {status}"));
}

fn start_request(promote_on_win: bool, guards: ExperimentGuards) -> StartExperimentRequest {
    StartExperimentRequest {
        endpoint: ENDPOINT.to_string(),
        name: "v2 against v1".to_string(),
        control: fixtures::CHAMPION_TARGET.to_string(),
        challenger: format!("{CHAIN_MODEL}@challenger"),
        allocation: Allocation::Fixed as i32,
        challenger_percent: 50,
        sticky_by: StickyBy::User as i32,
        guards: Some(guards),
        min_ratings_per_arm: RATINGS_PER_ARM,
        promote_on_win,
        actor: "e2e".to_string(),
        ..Default::default()
    }
}

/// Queries as new users until each arm answered `per_arm` of them, rating
/// each answer with `rate(version)`; checks on the way that a user keeps
/// their arm. Returns the users per served version.
async fn rated_traffic(
    cluster: &Cluster,
    per_arm: u64,
    rate: impl Fn(u32) -> f64,
) -> HashMap<u32, Vec<String>> {
    let mut users: HashMap<u32, Vec<String>> = HashMap::new();
    for index in 0..200 {
        if users
            .values()
            .filter(|list| list.len() as u64 >= per_arm)
            .count()
            == 2
        {
            break;
        }
        let user = format!("user-{index}");
        let answer = fixtures::query(cluster, ENDPOINT, REFUND_QUESTION.text, &user).await;
        let again = fixtures::query(cluster, ENDPOINT, REFUND_QUESTION.text, &user).await;
        assert_eq!(
            again.served_version, answer.served_version,
            "{user} changed arms"
        );
        assert_eq!(
            answer.route_target,
            format!("{CHAIN_MODEL}/{}", answer.served_version),
            "an arm serves its pinned version"
        );
        let list = users.entry(answer.served_version).or_default();
        if list.len() as u64 >= per_arm {
            continue;
        }
        list.push(user.clone());
        cluster
            .feedback
            .clone()
            .submit_feedback(SubmitFeedbackRequest {
                request_id: answer.request_id.clone(),
                kind: FeedbackKind::Thumbs as i32,
                value: rate(answer.served_version),
                user_id: user,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("thumbs: {status}"));
    }
    let mut versions: Vec<u32> = users.keys().copied().collect();
    versions.sort_unstable();
    assert_eq!(versions, [1, 2], "both arms served");
    users
}

/// Refreshes the experiment until it is no longer running.
async fn ended(cluster: &Cluster, id: &str) -> Experiment {
    eventually("the experiment ends", Duration::from_secs(30), || async {
        let experiment = cluster
            .serving
            .clone()
            .get_experiment(GetExperimentRequest {
                id: id.to_string(),
                refresh: true,
            })
            .await
            .ok()?
            .into_inner();
        (experiment.state() != ExperimentState::Running).then_some(experiment)
    })
    .await
}

async fn champion_version(cluster: &Cluster, alias: &str) -> u32 {
    cluster
        .registry
        .clone()
        .resolve_reference(ResolveReferenceRequest {
            reference: format!("{CHAIN_MODEL}@{alias}"),
        })
        .await
        .unwrap()
        .into_inner()
        .version
}

async fn experiment_promotes_a_winning_challenger(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;
    set_alias(&cluster, "challenger", 2).await;
    let mut serving = cluster.serving.clone();

    // Refused, and nothing started.
    let same = StartExperimentRequest {
        challenger: fixtures::CHAMPION_TARGET.to_string(),
        ..start_request(false, ExperimentGuards::default())
    };
    assert_status(
        "same arms",
        serving.start_experiment(same).await,
        Code::InvalidArgument,
        &["challenger", "must differ from control"],
    );
    let pinned_control = StartExperimentRequest {
        control: format!("{CHAIN_MODEL}/1"),
        ..start_request(true, ExperimentGuards::default())
    };
    assert_status(
        "promotion without a control alias",
        serving.start_experiment(pinned_control).await,
        Code::InvalidArgument,
        &["promote_on_win", "alias"],
    );
    let unknown = StartExperimentRequest {
        endpoint: "nowhere".to_string(),
        ..start_request(false, ExperimentGuards::default())
    };
    assert_status(
        "unknown endpoint",
        serving.start_experiment(unknown).await,
        Code::NotFound,
        &["nowhere"],
    );
    let listed = serving
        .list_experiments(ListExperimentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.experiments.is_empty());

    let started = serving
        .start_experiment(start_request(true, ExperimentGuards::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.state(), ExperimentState::Running);
    assert_eq!(started.control.as_ref().unwrap().version, 1);
    assert_eq!(started.challenger.as_ref().unwrap().version, 2);
    assert_eq!(started.verdict_kind(), VerdictKind::NotEnoughData);
    assert_status(
        "a second experiment on the endpoint",
        serving
            .start_experiment(start_request(false, ExperimentGuards::default()))
            .await,
        Code::FailedPrecondition,
        &[ENDPOINT, &started.id],
    );

    // Users like v2's answers and dislike v1's.
    let users = rated_traffic(&cluster, RATINGS_PER_ARM, |version| {
        if version == 2 {
            1.0
        } else {
            -1.0
        }
    })
    .await;
    let experiment = ended(&cluster, &started.id).await;
    assert_eq!(experiment.state(), ExperimentState::Concluded);
    assert_eq!(experiment.verdict_kind(), VerdictKind::ChallengerWins);
    assert!(
        experiment
            .verdict
            .starts_with("challenger beats control with 95% confidence"),
        "{}",
        experiment.verdict
    );
    let control = experiment.control.as_ref().unwrap();
    let challenger = experiment.challenger.as_ref().unwrap();
    assert_eq!((control.liked, control.disliked), (0, RATINGS_PER_ARM));
    assert_eq!(
        (challenger.liked, challenger.disliked),
        (RATINGS_PER_ARM, 0)
    );
    assert!(challenger.like_rate_low > control.like_rate_high);
    assert!(challenger.requests >= RATINGS_PER_ARM * 2);
    assert!(
        experiment.stop_reason.ends_with(&format!(
            "promoted: {CHAIN_MODEL}@champion moved to version 2"
        )),
        "{}",
        experiment.stop_reason
    );

    // The promotion is in the audit trail, by the experiment.
    assert_eq!(champion_version(&cluster, "champion").await, 2);
    let history = cluster
        .registry
        .clone()
        .list_alias_history(ListAliasHistoryRequest {
            model: CHAIN_MODEL.to_string(),
            alias: "champion".to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let promotion = history
        .iter()
        .find(|event| event.new_version == 2)
        .expect("the promotion event");
    assert_eq!(promotion.previous_version, 1);
    assert_eq!(promotion.actor, format!("experiment {}", started.id));
    assert!(promotion.reason.contains("challenger beats control"));

    // The endpoint's routes answer again: @champion, now v2, for everyone.
    let former_control_user = &users[&1][0];
    let cluster_ref = &cluster;
    eventually(
        "the former control user gets v2",
        Duration::from_secs(2),
        || async move {
            let answer = fixtures::query(
                cluster_ref,
                ENDPOINT,
                REFUND_QUESTION.text,
                former_control_user,
            )
            .await;
            (answer.served_version == 2 && answer.route_target == fixtures::CHAMPION_TARGET)
                .then_some(())
        },
    )
    .await;
    assert_status(
        "stopping an ended experiment",
        serving
            .stop_experiment(StopExperimentRequest {
                id: started.id.clone(),
                reason: "done".to_string(),
                actor: "e2e".to_string(),
            })
            .await,
        Code::FailedPrecondition,
        &["not running", "concluded"],
    );
    cluster.shutdown().await;
}

async fn experiment_guard_rolls_the_challenger_back(backend: Backend) {
    let storage = Storage::fresh(backend).await;
    let cluster = Cluster::start(&storage).await;
    fixtures::setup_application(&cluster).await;
    set_alias(&cluster, "challenger", 2).await;
    let mut serving = cluster.serving.clone();
    assert_status(
        "a bad id",
        serving
            .stop_experiment(StopExperimentRequest {
                id: "nope".to_string(),
                reason: "x".to_string(),
                actor: String::new(),
            })
            .await,
        Code::InvalidArgument,
        &["id", "UUID"],
    );

    // A manual stop ends an experiment and leaves the aliases alone.
    let first = serving
        .start_experiment(start_request(false, ExperimentGuards::default()))
        .await
        .unwrap()
        .into_inner();
    assert_status(
        "deleting the endpoint under a running experiment",
        serving
            .delete_endpoint(keel_proto::v1::DeleteEndpointRequest {
                name: ENDPOINT.to_string(),
            })
            .await,
        Code::FailedPrecondition,
        &[ENDPOINT, &first.id, "stop it first"],
    );
    assert_status(
        "a stop without a reason",
        serving
            .stop_experiment(StopExperimentRequest {
                id: first.id.clone(),
                reason: String::new(),
                actor: String::new(),
            })
            .await,
        Code::InvalidArgument,
        &["reason"],
    );
    let stopped = serving
        .stop_experiment(StopExperimentRequest {
            id: first.id.clone(),
            reason: "wrong arms".to_string(),
            actor: "e2e".to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state(), ExperimentState::Stopped);
    assert_eq!(stopped.stop_reason, "stopped by e2e: wrong arms");
    assert_eq!(champion_version(&cluster, "challenger").await, 2);

    // Users dislike v2's answers: past half thumbs down on at least 4
    // ratings, the guard stops the experiment and @challenger goes back to
    // v1.
    let guards = ExperimentGuards {
        max_thumbs_down_rate: 0.5,
        min_requests: 4,
        ..Default::default()
    };
    let started = serving
        .start_experiment(start_request(false, guards))
        .await
        .unwrap()
        .into_inner();
    rated_traffic(&cluster, 4, |version| if version == 2 { -1.0 } else { 1.0 }).await;
    let experiment = ended(&cluster, &started.id).await;
    assert_eq!(experiment.state(), ExperimentState::GuardBreached);
    assert!(
        experiment
            .stop_reason
            .starts_with("guard breached: challenger thumbs-down rate 1.000 over the limit 0.5"),
        "{}",
        experiment.stop_reason
    );
    assert!(
        experiment
            .stop_reason
            .ends_with(&format!("{CHAIN_MODEL}@challenger moved back to version 1")),
        "{}",
        experiment.stop_reason
    );
    assert_eq!(champion_version(&cluster, "challenger").await, 1);
    assert_eq!(champion_version(&cluster, "champion").await, 1);
    let history = cluster
        .registry
        .clone()
        .list_alias_history(ListAliasHistoryRequest {
            model: CHAIN_MODEL.to_string(),
            alias: "challenger".to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let rollback = history
        .iter()
        .find(|event| event.new_version == 1)
        .expect("the rollback event");
    assert_eq!(rollback.actor, format!("experiment {}", started.id));
    assert!(
        rollback.reason.contains("guard breached"),
        "{}",
        rollback.reason
    );

    let listed = serving
        .list_experiments(ListExperimentsRequest {
            endpoint: ENDPOINT.to_string(),
            running_only: false,
        })
        .await
        .unwrap()
        .into_inner()
        .experiments;
    let ids: Vec<&str> = listed
        .iter()
        .map(|experiment| experiment.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [started.id.as_str(), first.id.as_str()],
        "newest first"
    );
    cluster.shutdown().await;
}

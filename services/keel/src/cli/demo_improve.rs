//! The demo's last act: `keel improve` on the feedback the demo posted.
//! The demo has no real users, so once the experiment runs, simulated
//! users ask the demo's questions and like the challenger's answers and
//! dislike the champion's — said plainly in the output — so that the
//! experiment reaches a verdict and the challenger is promoted.

use std::path::Path;
use std::time::Duration;

use keel_proto::v1 as pb;

use crate::cli::error::rpc;
use crate::cli::eval_run::ScoringArgs;
use crate::cli::experiment::AllocationArg;
use crate::cli::feedback::{self, Verdict};
use crate::cli::improve::{improve, ChallengerKind, ImproveArgs};
use crate::cli::improve_fine_tune::FineTuneArgs;
use crate::cli::{output, CliError, ServiceUrls};

/// Ratings each arm needs: the fewest at which all-liked against
/// all-disliked is a verdict at 95%.
const MIN_RATINGS: u64 = 6;
/// The longest the demo waits for the verdict.
const VERDICT_WAIT: Duration = Duration::from_secs(300);

pub async fn close_the_loop(
    urls: &ServiceUrls,
    endpoint: &str,
    work_dir: &Path,
    questions: &[&str],
) -> Result<(), CliError> {
    let args = ImproveArgs {
        endpoint: endpoint.to_string(),
        challenger: ChallengerKind::FewShot,
        fine_tune: FineTuneArgs {
            url: String::new(),
            key_env: String::new(),
            base_model: String::new(),
            generator: String::new(),
            poll: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
        },
        examples: 4,
        work_dir: work_dir.to_path_buf(),
        challenger_alias: "challenger".to_string(),
        // The demo's held-out set is one example: any score passes, so the
        // experiment runs (the default allows 0.05 of token F1).
        max_regression: vec!["token_f1=1.0".to_string()],
        scoring: ScoringArgs {
            scorers: ["token_f1", "groundedness", "latency_ms"]
                .map(String::from)
                .to_vec(),
            judge: None,
            concurrency: 2,
            actor: "keel-demo".to_string(),
        },
        allocation: AllocationArg::Fixed,
        min_ratings: MIN_RATINGS,
        alpha: 0.05,
        max_thumbs_down: 0.0,
        max_error_rate: 0.0,
        wait: VERDICT_WAIT,
    };
    let running = improve(urls, &args);
    tokio::pin!(running);
    let mut index = 0;
    let report = loop {
        tokio::select! {
            report = &mut running => break report?,
            simulated = simulated_user(urls, endpoint, questions, index) => {
                if simulated? {
                    index += 1;
                }
            }
        }
    };
    output::demo_note(&format!("{index} simulated users rated the arms' answers"));
    output::improve_report(&report);
    Ok(())
}

/// One simulated user of the running experiment: asks a question and
/// likes the answer when the challenger gave it. `false` while no
/// experiment runs yet (after a short wait).
async fn simulated_user(
    urls: &ServiceUrls,
    endpoint: &str,
    questions: &[&str],
    index: usize,
) -> Result<bool, CliError> {
    let mut serving = urls.serving().await?;
    let running = serving
        .list_experiments(pb::ListExperimentsRequest {
            endpoint: endpoint.to_string(),
            running_only: true,
        })
        .await
        .map_err(rpc("serving ListExperiments"))?
        .into_inner()
        .experiments;
    let Some(challenger) = running
        .first()
        .and_then(|experiment| experiment.challenger.clone())
    else {
        tokio::time::sleep(Duration::from_millis(200)).await;
        return Ok(false);
    };
    let user = format!("simulated-user-{index}");
    let answer = serving
        .query(pb::QueryRequest {
            endpoint: endpoint.to_string(),
            question: questions[index % questions.len()].to_string(),
            user_id: user.clone(),
            session_id: user.clone(),
            ..Default::default()
        })
        .await
        .map_err(rpc("serving Query"))?
        .into_inner();
    let verdict = if answer.served_version == challenger.version {
        Verdict::Up
    } else {
        Verdict::Down
    };
    let request = feedback::submit_request(&answer.request_id, &verdict, &user, "");
    feedback::submit(urls, request).await?;
    Ok(true)
}

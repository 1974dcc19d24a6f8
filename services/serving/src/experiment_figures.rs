//! Where an experiment's figures come from: each arm's requests, errors
//! and p95 latency from monitoring's inference records, and its thumbs
//! from the feedback service, both since the experiment started and both
//! keyed by the version the arm serves.

use std::time::Duration;

use keel_core::channel::ServiceChannel;
use keel_proto::v1 as pb;
use keel_proto::v1::feedback_service_client::FeedbackServiceClient;
use keel_proto::v1::monitoring_service_client::MonitoringServiceClient;

use crate::clients::{dependency_error, with_deadline};
use crate::error::Error;
use crate::experiment::{Arm, ArmFigures, Experiment};

/// Monitoring's longest metrics window: an experiment older than this is
/// measured over its last 30 days.
const MAX_WINDOW_SECONDS: i64 = 30 * 24 * 3600;

#[derive(Clone)]
pub struct FigureSources {
    monitoring: MonitoringServiceClient<ServiceChannel>,
    feedback: FeedbackServiceClient<ServiceChannel>,
    timeout: Duration,
}

impl FigureSources {
    pub fn new(
        monitoring: ServiceChannel,
        feedback: ServiceChannel,
        timeout: Duration,
    ) -> FigureSources {
        FigureSources {
            monitoring: MonitoringServiceClient::new(monitoring),
            feedback: FeedbackServiceClient::new(feedback),
            timeout,
        }
    }

    /// (control, challenger) figures of `experiment` as of `now_ms`.
    pub async fn figures(
        &self,
        experiment: &Experiment,
        now_ms: i64,
    ) -> Result<(ArmFigures, ArmFigures), Error> {
        let elapsed_seconds = (now_ms - experiment.started_at_ms).max(0) / 1000 + 1;
        let metrics_request = pb::GetMetricsRequest {
            endpoint: experiment.endpoint.clone(),
            window_seconds: elapsed_seconds.clamp(1, MAX_WINDOW_SECONDS) as u32,
        };
        let feedback_request = pb::SummarizeFeedbackRequest {
            endpoint: experiment.endpoint.clone(),
            since_ms: experiment.started_at_ms,
            ..pb::SummarizeFeedbackRequest::default()
        };
        // Independent questions to two services: asked at once.
        let mut monitoring = self.monitoring.clone();
        let mut feedback_client = self.feedback.clone();
        let (metrics, feedback) = tokio::try_join!(
            async {
                with_deadline(self.timeout, monitoring.get_metrics(metrics_request))
                    .await
                    .map_err(|status| dependency_error("monitoring", &status))
            },
            async {
                with_deadline(
                    self.timeout,
                    feedback_client.summarize_feedback(feedback_request),
                )
                .await
                .map_err(|status| dependency_error("feedback", &status))
            },
        )?;
        let (metrics, feedback) = (metrics.into_inner(), feedback.into_inner());
        let spec = &experiment.spec;
        Ok((
            arm_figures(&spec.control, &metrics, &feedback),
            arm_figures(&spec.challenger, &metrics, &feedback),
        ))
    }
}

fn arm_figures(
    arm: &Arm,
    metrics: &pb::GetMetricsResponse,
    feedback: &pb::SummarizeFeedbackResponse,
) -> ArmFigures {
    let is_arm = |model: &str, version: u32| model == arm.model && version == arm.version;
    let mut figures = ArmFigures::default();
    if let Some(version) = metrics
        .versions
        .iter()
        .find(|version| is_arm(&version.served_model, version.served_version))
    {
        figures.requests = version.request_count;
        figures.errors = version.error_count;
        figures.latency_p95_ms = version.latency_p95_ms;
    }
    if let Some(version) = feedback
        .versions
        .iter()
        .find(|version| is_arm(&version.served_model, version.served_version))
    {
        figures.liked = version.liked;
        figures.disliked = version.disliked;
    }
    figures
}

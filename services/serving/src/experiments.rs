//! Running experiments: starting one (its arms resolved to fixed versions),
//! reading and stopping them, and the refresher that recomputes each
//! running experiment's figures, verdict and traffic share, stops it when
//! the challenger breaches a guard (moving a challenger alias back to the
//! control's version) and, when asked to, promotes a winning challenger.
//!
//! Every serving replica refreshes; the database decides which replica's
//! stop or promotion happens (a conditional update that only one wins), so
//! an alias is moved once.

use std::sync::Arc;
use std::time::Duration;

use keel_core::CancellationToken;
use keel_store::Store;
use keel_types::ModelRef;
use uuid::Uuid;

use crate::error::Error;
use crate::experiment::{
    parse_id, validate_reason, validate_start, Arm, Assessment, Experiment, ExperimentSpec,
    ExperimentState, StartInput, VerdictKind,
};
use crate::experiment_cache::RunningExperiments;
use crate::experiment_figures::FigureSources;
use crate::experiment_verdict::{assess, breached_guard};
use crate::registry::{RegistryClient, VersionSpec};
use crate::{experiment_store, store};

/// Marks, in a concluded experiment's stop reason, that the challenger took
/// the control's alias.
pub const PROMOTED: &str = "; promoted: ";

pub struct Experiments {
    store: Store,
    /// What queries read; told of every change made here.
    running: Arc<RunningExperiments>,
    registry: RegistryClient,
    figures: FigureSources,
}

impl Experiments {
    pub fn new(
        store: Store,
        running: Arc<RunningExperiments>,
        registry: RegistryClient,
        figures: FigureSources,
    ) -> Experiments {
        Experiments {
            store,
            running,
            registry,
            figures,
        }
    }

    pub async fn start(&self, input: &StartInput) -> Result<Experiment, Error> {
        let valid = validate_start(input)?;
        if store::get_endpoint(&self.store, &valid.endpoint)
            .await?
            .is_none()
        {
            return Err(Error::NotFound(format!(
                "endpoint `{}` not found",
                valid.endpoint
            )));
        }
        let control = self.resolve_arm("control", &valid.control).await?;
        let challenger = self.resolve_arm("challenger", &valid.challenger).await?;
        if (&control.model, control.version) == (&challenger.model, challenger.version) {
            return Err(keel_types::FieldError::new(
                "challenger",
                format!(
                    "resolves to {}/{}, the version control serves",
                    challenger.model, challenger.version
                ),
            )
            .into());
        }
        let spec = ExperimentSpec {
            control,
            challenger,
            settings: valid.settings,
        };
        let experiment = Experiment {
            id: Uuid::new_v4(),
            endpoint: valid.endpoint,
            name: valid.name,
            assessment: Assessment::initial(&spec),
            spec,
            state: ExperimentState::Running,
            stop_reason: String::new(),
            actor: valid.actor,
            started_at_ms: keel_core::time::now_ms(),
            stopped_at_ms: 0,
            refreshed_at_ms: 0,
        };
        if !experiment_store::insert(&self.store, &experiment).await? {
            let running = experiment_store::list(&self.store, &experiment.endpoint, true).await?;
            let id = running
                .first()
                .map_or_else(String::new, |other| other.id.to_string());
            return Err(Error::FailedPrecondition(format!(
                "endpoint `{}` has a running experiment `{id}`: stop it first",
                experiment.endpoint
            )));
        }
        self.running.forget(&experiment.endpoint);
        tracing::info!(
            experiment = %experiment.id,
            endpoint = %experiment.endpoint,
            control = %experiment.spec.control.pinned(),
            challenger = %experiment.spec.challenger.pinned(),
            actor = %experiment.actor,
            "experiment started"
        );
        Ok(experiment)
    }

    /// The arm `target` names, resolved now; it must be a CHAIN version.
    async fn resolve_arm(&self, field: &str, target: &ModelRef) -> Result<Arm, Error> {
        let resolved = self
            .registry
            .resolve(&target.to_string())
            .await?
            .ok_or_else(|| Error::NotFound(format!("{field} `{target}` not found")))?;
        match resolved.spec {
            VersionSpec::Chain(_) => Ok(Arm {
                target: target.to_string(),
                model: resolved.model,
                version: resolved.version,
            }),
            _ => Err(Error::FailedPrecondition(format!(
                "{field} `{target}` is not a CHAIN version"
            ))),
        }
    }

    /// With `refresh`, the figures are computed now (and acted on) instead
    /// of read as the refresher last left them.
    pub async fn get(&self, id: &str, refresh: bool) -> Result<Experiment, Error> {
        let id = parse_id("id", id)?;
        let experiment = self.load(id).await?;
        if refresh && experiment.state == ExperimentState::Running {
            return self.refresh(experiment).await;
        }
        Ok(experiment)
    }

    async fn load(&self, id: Uuid) -> Result<Experiment, Error> {
        experiment_store::get(&self.store, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("experiment `{id}` not found")))
    }

    pub async fn list(&self, endpoint: &str, running_only: bool) -> Result<Vec<Experiment>, Error> {
        if !endpoint.is_empty() {
            keel_types::validate::name("endpoint", endpoint)?;
        }
        experiment_store::list(&self.store, endpoint, running_only).await
    }

    pub async fn stop(&self, id: &str, reason: &str, actor: &str) -> Result<Experiment, Error> {
        let id = parse_id("id", id)?;
        validate_reason(reason)?;
        keel_types::validate::max_len("actor", actor, keel_types::validate::MAX_ID_BYTES)?;
        let actor = if actor.is_empty() { "anonymous" } else { actor };
        let stop_reason = format!("stopped by {actor}: {reason}");
        let now = keel_core::time::now_ms();
        if !experiment_store::finish(&self.store, id, ExperimentState::Stopped, &stop_reason, now)
            .await?
        {
            let experiment = self.load(id).await?;
            return Err(Error::FailedPrecondition(format!(
                "experiment `{id}` is not running (it is {})",
                experiment.state.as_str()
            )));
        }
        tracing::info!(experiment = %id, %actor, %reason, "experiment stopped");
        let stopped = self.load(id).await?;
        self.running.forget(&stopped.endpoint);
        Ok(stopped)
    }

    /// Recomputes a running experiment's figures and acts on them: a
    /// breached guard stops it and rolls the challenger back; with
    /// `promote_on_win`, a verdict ends it and a winning challenger is
    /// promoted.
    pub async fn refresh(&self, experiment: Experiment) -> Result<Experiment, Error> {
        let id = experiment.id;
        let now = keel_core::time::now_ms();
        let (control, challenger) = self.figures.figures(&experiment, now).await?;
        let settings = &experiment.spec.settings;
        let assessment = assess(settings, control, challenger, &mut rand::rng());
        if !experiment_store::save_assessment(&self.store, id, &assessment, now).await? {
            // Ended elsewhere meanwhile.
            self.running.forget(&experiment.endpoint);
            return self.load(id).await;
        }
        if let Some(breach) = breached_guard(&settings.guards, &assessment.challenger) {
            let reason = format!("guard breached: challenger {breach}");
            if experiment_store::finish(
                &self.store,
                id,
                ExperimentState::GuardBreached,
                &reason,
                now,
            )
            .await?
            {
                tracing::warn!(experiment = %id, %reason, "experiment stopped");
                let outcome = self.roll_back(&experiment, &reason).await;
                experiment_store::append_stop_reason(&self.store, id, &outcome).await?;
            }
        } else if settings.promote_on_win {
            match assessment.verdict_kind {
                VerdictKind::ChallengerWins => {
                    if experiment_store::finish(
                        &self.store,
                        id,
                        ExperimentState::Concluded,
                        &assessment.verdict,
                        now,
                    )
                    .await?
                    {
                        let outcome = self.promote(&experiment, &assessment.verdict).await;
                        experiment_store::append_stop_reason(&self.store, id, &outcome).await?;
                    }
                }
                VerdictKind::ControlWins => {
                    let reason = format!("{}; control kept", assessment.verdict);
                    experiment_store::finish(
                        &self.store,
                        id,
                        ExperimentState::Concluded,
                        &reason,
                        now,
                    )
                    .await?;
                }
                VerdictKind::NotEnoughData | VerdictKind::NoDifferenceYet => {}
            }
        }
        // A new share, or the end: queries here see it at once.
        self.running.forget(&experiment.endpoint);
        self.load(id).await
    }

    /// Points a challenger alias back at the control's version, so routes
    /// through it serve the champion again. Returns what was done, for the
    /// stop reason.
    async fn roll_back(&self, experiment: &Experiment, reason: &str) -> String {
        let (control, challenger) = (&experiment.spec.control, &experiment.spec.challenger);
        let Some(alias) = challenger.alias() else {
            return "; the challenger was a fixed version: no alias to move".to_string();
        };
        if challenger.model != control.model {
            return format!(
                "; `{}` belongs to another model than the control: left as is",
                challenger.target
            );
        }
        let moved = self
            .registry
            .set_alias(
                &challenger.model,
                &alias,
                control.version,
                challenger.version,
                &format!("experiment {}", experiment.id),
                &format!("experiment {} {reason}", experiment.id),
            )
            .await;
        match moved {
            Ok(()) => format!(
                "; {}@{alias} moved back to version {}",
                challenger.model, control.version
            ),
            Err(error) => {
                tracing::warn!(experiment = %experiment.id, %error, "rollback failed");
                format!("; moving {}@{alias} back failed: {error}", challenger.model)
            }
        }
    }

    /// Moves the control's alias to the challenger's version (through the
    /// alias's promotion gate). Returns what was done, for the stop reason.
    async fn promote(&self, experiment: &Experiment, verdict: &str) -> String {
        let (control, challenger) = (&experiment.spec.control, &experiment.spec.challenger);
        let Some(alias) = control.alias() else {
            return "; the control was a fixed version: nothing to promote".to_string();
        };
        let moved = self
            .registry
            .set_alias(
                &control.model,
                &alias,
                challenger.version,
                control.version,
                &format!("experiment {}", experiment.id),
                &format!("experiment {}: {verdict}", experiment.id),
            )
            .await;
        match moved {
            Ok(()) => {
                tracing::info!(experiment = %experiment.id, alias = %alias, version = challenger.version, "challenger promoted");
                format!(
                    "{PROMOTED}{}@{alias} moved to version {}",
                    control.model, challenger.version
                )
            }
            Err(error) => {
                tracing::warn!(experiment = %experiment.id, %error, "promotion refused");
                format!("; promotion refused: {error}")
            }
        }
    }

    /// Refreshes every running experiment; a failure is logged and the
    /// experiment tried again on the next round.
    pub async fn refresh_running(&self) {
        let running = match experiment_store::list(&self.store, "", true).await {
            Ok(running) => running,
            Err(error) => {
                tracing::warn!(%error, "cannot list running experiments");
                return;
            }
        };
        for experiment in running {
            let id = experiment.id;
            if let Err(error) = self.refresh(experiment).await {
                tracing::warn!(experiment = %id, %error, "experiment refresh failed");
            }
        }
    }

    /// Refreshes running experiments every `interval` until `shutdown`.
    pub async fn run_refresher(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => self.refresh_running().await,
            }
        }
    }
}

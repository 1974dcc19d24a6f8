//! The running experiment of each endpoint as queries need it, kept for at
//! most a second: every query of an endpoint asks, and the database need
//! not answer each time. Starts, stops and new shares made in this process
//! clear the endpoint's entry at once; another replica's are seen within
//! the second. Only endpoints that exist are asked about, so the map stays
//! as small as the endpoint table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use keel_store::Store;

use crate::error::Error;
use crate::experiment_store::{self, RunningArms};

/// How long an answer is kept.
const TTL: Duration = Duration::from_secs(1);

type Entry = (Instant, Option<Arc<RunningArms>>);

pub struct RunningExperiments {
    store: Store,
    entries: Mutex<HashMap<String, Entry>>,
}

impl RunningExperiments {
    pub fn new(store: Store) -> RunningExperiments {
        RunningExperiments {
            store,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The endpoint's running experiment; `None` when none runs.
    pub async fn of(&self, endpoint: &str) -> Result<Option<Arc<RunningArms>>, Error> {
        if let Some((read_at, arms)) = self.lock().get(endpoint) {
            if read_at.elapsed() < TTL {
                return Ok(arms.clone());
            }
        }
        let arms = experiment_store::running_arms(&self.store, endpoint)
            .await?
            .map(Arc::new);
        self.lock()
            .insert(endpoint.to_string(), (Instant::now(), arms.clone()));
        Ok(arms)
    }

    /// The endpoint's experiment changed here: read it again next time.
    pub fn forget(&self, endpoint: &str) {
        self.lock().remove(endpoint);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use keel_testkit::{Backend, TestDatabase};
    use uuid::Uuid;

    use super::*;
    use crate::experiment::{
        Allocation, Arm, Assessment, Experiment, ExperimentSpec, ExperimentState, Guards, Settings,
        StickyBy,
    };

    fn experiment(endpoint: &str) -> Experiment {
        let arm = |version| Arm {
            target: format!("bot/{version}"),
            model: "bot".to_string(),
            version,
        };
        let spec = ExperimentSpec {
            control: arm(1),
            challenger: arm(2),
            settings: Settings {
                allocation: Allocation::Fixed,
                challenger_percent: 30,
                floor: 0.05,
                sticky_by: StickyBy::User,
                guards: Guards {
                    max_error_rate: None,
                    max_p95_latency_ms: None,
                    max_thumbs_down_rate: None,
                    min_requests: 20,
                },
                alpha: 0.05,
                min_ratings_per_arm: 100,
                promote_on_win: false,
            },
        };
        Experiment {
            id: Uuid::new_v4(),
            endpoint: endpoint.to_string(),
            name: String::new(),
            assessment: Assessment::initial(&spec),
            spec,
            state: ExperimentState::Running,
            stop_reason: String::new(),
            actor: "t".to_string(),
            started_at_ms: 1,
            stopped_at_ms: 0,
            refreshed_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn answers_are_kept_a_second_unless_forgotten() {
        let database = TestDatabase::fresh(Backend::Sqlite).await;
        let store = database.open(crate::store::MIGRATIONS).await;
        let running = RunningExperiments::new(store.clone());
        assert_eq!(running.of("support").await.unwrap(), None);

        // Started elsewhere: unseen until forgotten here or a second passed.
        let started = experiment("support");
        assert!(experiment_store::insert(&store, &started).await.unwrap());
        assert_eq!(running.of("support").await.unwrap(), None);
        running.forget("support");
        let arms = running.of("support").await.unwrap().unwrap();
        assert_eq!((arms.id, arms.challenger_share), (started.id, 0.3));

        let stopped =
            experiment_store::finish(&store, started.id, ExperimentState::Stopped, "x", 2);
        assert!(stopped.await.unwrap());
        assert!(running.of("support").await.unwrap().is_some(), "kept");
        tokio::time::sleep(TTL + Duration::from_millis(50)).await;
        assert_eq!(running.of("support").await.unwrap(), None);
    }
}

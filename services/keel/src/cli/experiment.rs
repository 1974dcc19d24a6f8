//! `keel experiment start|status|list|stop`: champion and challenger
//! sharing an endpoint's traffic until feedback decides.

use clap::{Subcommand, ValueEnum};
use keel_proto::v1::{
    Allocation, ExperimentGuards, GetExperimentRequest, ListExperimentsRequest,
    StartExperimentRequest, StickyBy, StopExperimentRequest,
};

use crate::cli::error::rpc;
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Start an experiment on ENDPOINT: CONTROL and CHALLENGER share its traffic
    Start(StartArgs),
    /// An experiment's arms, figures and verdict, computed now
    Status { id: String },
    /// Experiments, newest first
    List {
        /// Only this endpoint's
        #[arg(long)]
        endpoint: Option<String>,
        /// Only running ones
        #[arg(long)]
        running: bool,
    },
    /// Stop a running experiment: the endpoint's routes answer again
    Stop(StopArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AllocationArg {
    /// The challenger gets --challenger-percent of the traffic throughout
    Fixed,
    /// Traffic follows each arm's chance of being the better one
    Thompson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StickyArg {
    User,
    Session,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    pub endpoint: String,
    /// The champion: MODEL@ALIAS or MODEL/VERSION of a CHAIN model
    #[arg(long)]
    pub control: String,
    /// MODEL@ALIAS or MODEL/VERSION of a CHAIN model
    #[arg(long)]
    pub challenger: String,
    #[arg(long, default_value = "")]
    pub name: String,
    #[arg(long, value_enum, default_value = "fixed")]
    pub allocation: AllocationArg,
    /// Fixed allocation: the challenger's share of the traffic, 1..=99
    #[arg(long, default_value_t = 50)]
    pub challenger_percent: u32,
    /// Thompson allocation: the least share of each arm
    #[arg(long, default_value_t = 0.05)]
    pub floor: f64,
    /// What keeps a caller on one arm
    #[arg(long, value_enum, default_value = "user")]
    pub sticky_by: StickyArg,
    /// Stop when the challenger's error rate passes this (0..=1)
    #[arg(long, default_value_t = 0.0)]
    pub max_error_rate: f64,
    /// Stop when the challenger's p95 latency passes this
    #[arg(long, default_value_t = 0.0)]
    pub max_p95_ms: f64,
    /// Stop when the challenger's thumbs-down rate passes this (0..=1)
    #[arg(long, default_value_t = 0.0)]
    pub max_thumbs_down: f64,
    /// Requests (ratings) the challenger needs before a guard is checked
    #[arg(long, default_value_t = 20)]
    pub guard_min_requests: u64,
    /// The verdict's false-winner rate
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Ratings each arm needs before any verdict
    #[arg(long, default_value_t = 100)]
    pub min_ratings: u64,
    /// On a verdict, end the experiment; a winning challenger takes the
    /// control's alias (through its promotion gate)
    #[arg(long)]
    pub promote_on_win: bool,
    /// Who starts it, for the audit trail
    #[arg(long, env = "USER", default_value = "keel-cli")]
    pub actor: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StopArgs {
    pub id: String,
    /// Why, for the record
    #[arg(long)]
    pub reason: String,
    #[arg(long, env = "USER", default_value = "keel-cli")]
    pub actor: String,
}

pub fn start_request(args: &StartArgs) -> StartExperimentRequest {
    StartExperimentRequest {
        endpoint: args.endpoint.clone(),
        name: args.name.clone(),
        control: args.control.clone(),
        challenger: args.challenger.clone(),
        allocation: match args.allocation {
            AllocationArg::Fixed => Allocation::Fixed,
            AllocationArg::Thompson => Allocation::Thompson,
        } as i32,
        challenger_percent: args.challenger_percent,
        floor: args.floor,
        sticky_by: match args.sticky_by {
            StickyArg::User => StickyBy::User,
            StickyArg::Session => StickyBy::Session,
        } as i32,
        guards: Some(ExperimentGuards {
            max_error_rate: args.max_error_rate,
            max_p95_latency_ms: args.max_p95_ms,
            max_thumbs_down_rate: args.max_thumbs_down,
            min_requests: args.guard_min_requests,
        }),
        alpha: args.alpha,
        min_ratings_per_arm: args.min_ratings,
        promote_on_win: args.promote_on_win,
        actor: args.actor.clone(),
    }
}

pub async fn run(urls: &ServiceUrls, command: ExperimentCommand) -> Result<(), CliError> {
    let mut serving = urls.serving().await?;
    match command {
        ExperimentCommand::Start(args) => {
            let experiment = serving
                .start_experiment(start_request(&args))
                .await
                .map_err(rpc("serving StartExperiment"))?
                .into_inner();
            output::experiment(&experiment);
        }
        ExperimentCommand::Status { id } => {
            let experiment = serving
                .get_experiment(GetExperimentRequest { id, refresh: true })
                .await
                .map_err(rpc("serving GetExperiment"))?
                .into_inner();
            output::experiment(&experiment);
        }
        ExperimentCommand::List { endpoint, running } => {
            let experiments = serving
                .list_experiments(ListExperimentsRequest {
                    endpoint: endpoint.unwrap_or_default(),
                    running_only: running,
                })
                .await
                .map_err(rpc("serving ListExperiments"))?
                .into_inner()
                .experiments;
            output::experiments(&experiments);
        }
        ExperimentCommand::Stop(args) => {
            let experiment = serving
                .stop_experiment(StopExperimentRequest {
                    id: args.id,
                    reason: args.reason,
                    actor: args.actor,
                })
                .await
                .map_err(rpc("serving StopExperiment"))?
                .into_inner();
            output::experiment(&experiment);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(subcommand)]
        command: ExperimentCommand,
    }

    #[test]
    fn flags_become_the_start_request() {
        let parsed = Wrapper::try_parse_from([
            "experiment",
            "start",
            "support",
            "--control",
            "bot@champion",
            "--challenger",
            "bot@challenger",
            "--allocation",
            "thompson",
            "--sticky-by",
            "session",
            "--max-thumbs-down",
            "0.4",
            "--min-ratings",
            "50",
            "--promote-on-win",
            "--actor",
            "ops",
        ])
        .unwrap();
        let ExperimentCommand::Start(args) = parsed.command else {
            panic!("not a start");
        };
        let request = start_request(&args);
        assert_eq!(request.endpoint, "support");
        assert_eq!(request.allocation(), Allocation::Thompson);
        assert_eq!(request.sticky_by(), StickyBy::Session);
        assert_eq!(request.challenger_percent, 50);
        assert_eq!(request.floor, 0.05);
        let guards = request.guards.unwrap();
        assert_eq!(guards.max_thumbs_down_rate, 0.4);
        assert_eq!(guards.max_error_rate, 0.0);
        assert_eq!(guards.min_requests, 20);
        assert_eq!(request.min_ratings_per_arm, 50);
        assert!(request.promote_on_win);
        assert_eq!(request.actor, "ops");
    }
}

//! `keel gate set|list|delete`: the promotion gates of a model's aliases.

use std::collections::HashMap;

use clap::Subcommand;
use keel_proto::v1::{
    DeletePromotionGateRequest, ListPromotionGatesRequest, PromotionGate, SetPromotionGateRequest,
};

use crate::cli::error::rpc;
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Subcommand)]
pub enum GateCommand {
    /// Set (or replace) the gate ALIAS of MODEL must pass to move
    Set(SetGateArgs),
    /// The gates of MODEL's aliases
    List { model: String },
    /// Remove the gate of ALIAS of MODEL
    Delete { model: String, alias: String },
}

#[derive(Debug, Clone, clap::Args)]
pub struct SetGateArgs {
    pub model: String,
    pub alias: String,
    /// The version must have a description
    #[arg(long)]
    pub require_description: bool,
    /// A tag the version (or its model) must carry: KEY, or KEY=VALUE
    #[arg(long = "require-tag", value_name = "KEY[=VALUE]")]
    pub required_tags: Vec<String>,
    /// A finished evaluation run of the version on this dataset is required;
    /// the score rules read its newest one
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,
    /// SCORER=X: the run's mean must be at least X
    #[arg(long = "min", value_name = "SCORER=X")]
    pub min_scores: Vec<String>,
    /// SCORER=X: the run's mean must be at most X (latency_ms, cost_usd)
    #[arg(long = "max", value_name = "SCORER=X")]
    pub max_scores: Vec<String>,
    /// SCORER=X: no worse than the current holder's run by more than X
    #[arg(long = "max-regression", value_name = "SCORER=X")]
    pub max_regression: Vec<String>,
}

pub async fn run(urls: &ServiceUrls, command: GateCommand) -> Result<(), CliError> {
    let mut registry = urls.registry().await?;
    match command {
        GateCommand::Set(args) => {
            let gate = gate_from_args(&args)?;
            let stored = registry
                .set_promotion_gate(SetPromotionGateRequest { gate: Some(gate) })
                .await
                .map_err(rpc("registry SetPromotionGate"))?
                .into_inner();
            output::gates(&[stored]);
        }
        GateCommand::List { model } => {
            let gates = registry
                .list_promotion_gates(ListPromotionGatesRequest { model })
                .await
                .map_err(rpc("registry ListPromotionGates"))?
                .into_inner()
                .gates;
            output::gates(&gates);
        }
        GateCommand::Delete { model, alias } => {
            registry
                .delete_promotion_gate(DeletePromotionGateRequest { model, alias })
                .await
                .map_err(rpc("registry DeletePromotionGate"))?;
        }
    }
    Ok(())
}

pub fn gate_from_args(args: &SetGateArgs) -> Result<PromotionGate, CliError> {
    let required_tags = args
        .required_tags
        .iter()
        .map(|tag| match tag.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (tag.clone(), String::new()),
        })
        .collect();
    Ok(PromotionGate {
        model: args.model.clone(),
        alias: args.alias.clone(),
        require_description: args.require_description,
        required_tags,
        evaluation_dataset: args.dataset.clone().unwrap_or_default(),
        min_scores: thresholds("--min", &args.min_scores)?,
        max_scores: thresholds("--max", &args.max_scores)?,
        max_regression: thresholds("--max-regression", &args.max_regression)?,
        updated_at_ms: 0,
    })
}

pub fn thresholds(flag: &str, values: &[String]) -> Result<HashMap<String, f64>, CliError> {
    values
        .iter()
        .map(|value| {
            let parsed = value
                .split_once('=')
                .and_then(|(scorer, number)| Some((scorer.to_string(), number.parse().ok()?)));
            parsed.ok_or_else(|| {
                CliError::Invalid(format!("{flag} takes SCORER=NUMBER, got {value:?}"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_the_gate() {
        let args = SetGateArgs {
            model: "bot".to_string(),
            alias: "champion".to_string(),
            require_description: true,
            required_tags: vec!["owner".to_string(), "tier=gold".to_string()],
            dataset: Some("eval.jsonl".to_string()),
            min_scores: vec!["contains=0.8".to_string()],
            max_scores: vec!["latency_ms=500".to_string()],
            max_regression: vec!["token_f1=0.05".to_string()],
        };
        let gate = gate_from_args(&args).unwrap();
        assert_eq!(gate.required_tags["owner"], "");
        assert_eq!(gate.required_tags["tier"], "gold");
        assert_eq!(gate.min_scores["contains"], 0.8);
        assert_eq!(gate.max_scores["latency_ms"], 500.0);
        assert_eq!(gate.max_regression["token_f1"], 0.05);
        let bad = SetGateArgs {
            min_scores: vec!["contains".to_string()],
            ..args
        };
        let error = gate_from_args(&bad).unwrap_err().to_string();
        assert_eq!(error, "--min takes SCORER=NUMBER, got \"contains\"");
    }
}

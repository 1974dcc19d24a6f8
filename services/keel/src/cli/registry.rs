//! `keel model create`, `keel version create`, `keel alias set`: the
//! registry's models, versions and aliases.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use keel_proto::v1::{
    AliasEvent, CreateModelRequest, Model, ModelKind, ModelVersion, SetAliasRequest,
};

use crate::cli::error::rpc;
use crate::cli::spec::load_version_request;
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Register a model (a RAG chain or a prompt template)
    Create(CreateModelArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct CreateModelArgs {
    pub name: String,
    #[arg(long, value_enum)]
    pub kind: ModelKindArg,
    #[arg(long, default_value = "")]
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelKindArg {
    Chain,
    Prompt,
}

#[derive(Debug, Subcommand)]
pub enum VersionCommand {
    /// Create the next version of MODEL from a spec file (.yaml, .yml or .toml)
    Create {
        model: String,
        #[arg(long, value_name = "SPEC")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Point ALIAS of MODEL at VERSION
    Set(SetAliasArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct SetAliasArgs {
    pub model: String,
    pub alias: String,
    pub version: u32,
    /// Move the alias only if it points at this version now (0: only if it does not exist yet)
    #[arg(long, value_name = "CURRENT")]
    pub expect: Option<u32>,
    /// Who moves the alias, for the audit trail
    #[arg(long, env = "USER", default_value = "keel-cli")]
    pub actor: String,
    /// Why, for the audit trail
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Move even when the alias's promotion gate refuses the version (needs
    /// --reason; the failed rules go into the audit trail)
    #[arg(long)]
    pub override_gate: bool,
}

pub async fn run_model(urls: &ServiceUrls, command: ModelCommand) -> Result<(), CliError> {
    match command {
        ModelCommand::Create(args) => {
            let model = create_model(urls, &args).await?;
            output::model(&model);
        }
    }
    Ok(())
}

pub async fn run_version(urls: &ServiceUrls, command: VersionCommand) -> Result<(), CliError> {
    match command {
        VersionCommand::Create { model, file } => {
            let version = create_version(urls, &model, &file).await?;
            output::version(&version);
        }
    }
    Ok(())
}

pub async fn run_alias(urls: &ServiceUrls, command: AliasCommand) -> Result<(), CliError> {
    match command {
        AliasCommand::Set(args) => {
            let event = set_alias(urls, &args).await?;
            output::alias_moved(&event);
        }
    }
    Ok(())
}

pub async fn create_model(urls: &ServiceUrls, args: &CreateModelArgs) -> Result<Model, CliError> {
    let kind = match args.kind {
        ModelKindArg::Chain => ModelKind::Chain,
        ModelKindArg::Prompt => ModelKind::Prompt,
    };
    let request = CreateModelRequest {
        name: args.name.clone(),
        kind: kind as i32,
        description: args.description.clone(),
        tags: Default::default(),
    };
    let response = urls
        .registry()
        .await?
        .create_model(request)
        .await
        .map_err(rpc("registry CreateModel"))?;
    Ok(response.into_inner())
}

/// Reads the spec file first, so a bad file fails before any call.
pub async fn create_version(
    urls: &ServiceUrls,
    model: &str,
    spec_file: &Path,
) -> Result<ModelVersion, CliError> {
    let request = load_version_request(model, spec_file).await?;
    let response = urls
        .registry()
        .await?
        .create_version(request)
        .await
        .map_err(rpc("registry CreateVersion"))?;
    Ok(response.into_inner())
}

pub async fn set_alias(urls: &ServiceUrls, args: &SetAliasArgs) -> Result<AliasEvent, CliError> {
    let request = SetAliasRequest {
        model: args.model.clone(),
        alias: args.alias.clone(),
        version: args.version,
        expected_current_version: args.expect,
        actor: args.actor.clone(),
        reason: args.reason.clone(),
        override_gate: args.override_gate,
    };
    let response = urls
        .registry()
        .await?
        .set_alias(request)
        .await
        .map_err(rpc("registry SetAlias"))?;
    Ok(response.into_inner())
}

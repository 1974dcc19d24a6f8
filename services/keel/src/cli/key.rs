//! `keel key create|list|revoke`: API keys with scopes. The secret is
//! printed once, at creation; the registry keeps only its hash.

use std::time::Duration;

use clap::Subcommand;
use keel_proto::v1::{CreateApiKeyRequest, ListApiKeysRequest, RevokeApiKeyRequest};

use crate::cli::error::rpc;
use crate::cli::{output, CliError, ServiceUrls};

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; its secret is printed this once
    Create(CreateKeyArgs),
    /// Keys that work now (with --all: revoked and expired ones too)
    List {
        #[arg(long)]
        all: bool,
    },
    /// Revoke a key by its id
    Revoke {
        id: String,
        #[arg(long, env = "USER", default_value = "keel-cli")]
        actor: String,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct CreateKeyArgs {
    pub name: String,
    /// query:<endpoint>, query:*, feedback:write, traces:write, read, admin
    #[arg(long = "scope", value_name = "SCOPE", required = true)]
    pub scopes: Vec<String>,
    /// The key stops working after this long (e.g. 30d); default: never
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires_in: Option<Duration>,
    #[arg(long, env = "USER", default_value = "keel-cli")]
    pub actor: String,
}

pub async fn run(urls: &ServiceUrls, command: KeyCommand) -> Result<(), CliError> {
    let mut registry = urls.registry().await?;
    match command {
        KeyCommand::Create(args) => {
            let expires_at_ms = args.expires_in.map_or(0, |lifetime| {
                keel_core::time::now_ms()
                    + i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX / 2)
            });
            let created = registry
                .create_api_key(CreateApiKeyRequest {
                    name: args.name,
                    scopes: args.scopes,
                    expires_at_ms,
                    actor: args.actor,
                })
                .await
                .map_err(rpc("registry CreateApiKey"))?
                .into_inner();
            output::api_keys(created.key.as_slice());
            output::api_key_secret(&created.secret);
        }
        KeyCommand::List { all } => {
            let keys = registry
                .list_api_keys(ListApiKeysRequest {
                    include_inactive: all,
                })
                .await
                .map_err(rpc("registry ListApiKeys"))?
                .into_inner()
                .keys;
            output::api_keys(&keys);
        }
        KeyCommand::Revoke { id, actor } => {
            let key = registry
                .revoke_api_key(RevokeApiKeyRequest { id, actor })
                .await
                .map_err(rpc("registry RevokeApiKey"))?
                .into_inner();
            output::api_keys(&[key]);
        }
    }
    Ok(())
}

//! The registry as serving sees it: model kinds, reference resolution and
//! the stream of alias moves. Converts the registry's protobuf types into
//! serving's own.

use std::fmt;
use std::time::Duration;

use keel_core::channel::ServiceChannel;
use keel_proto::v1 as pb;
use keel_proto::v1::registry_service_client::RegistryServiceClient;
use tonic::Code;

use crate::clients::{dependency_error, with_deadline};
use crate::error::Error;

const REGISTRY: &str = "registry";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Chain,
    Prompt,
    Unspecified,
}

impl fmt::Display for ModelKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ModelKind::Chain => "CHAIN",
            ModelKind::Prompt => "PROMPT",
            ModelKind::Unspecified => "UNSPECIFIED",
        };
        formatter.write_str(text)
    }
}

/// The specification of a RAG chain version.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainSpec {
    pub collection: String,
    pub top_k: u32,
    /// Equality filter on payload keys; empty: no filter.
    pub filter: serde_json::Map<String, serde_json::Value>,
    /// "model@alias" or "model/version" of a PROMPT model.
    pub prompt: String,
    pub generator: String,
    pub params: keel_models::GenerationParams,
    /// The remote model the generator asks for; empty: its configured one.
    pub generator_model: String,
    /// Tried in order when the generator before is unavailable.
    pub fallbacks: Vec<GeneratorChoice>,
    pub retrieval_mode: keel_types::SearchMode,
}

/// A generator by name, with the parameters to call it with.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorChoice {
    pub name: String,
    pub params: keel_models::GenerationParams,
    /// The remote model asked for instead of the configured one; empty:
    /// the configured one.
    pub model: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VersionSpec {
    Chain(ChainSpec),
    Prompt { template: String },
    Missing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredVersion {
    pub model: String,
    pub version: u32,
    pub spec: VersionSpec,
}

#[derive(Clone)]
pub struct RegistryClient {
    client: RegistryServiceClient<ServiceChannel>,
    /// The alias watch lives as long as serving: a span for it would be a
    /// trace that never ends.
    watch_client: RegistryServiceClient<ServiceChannel>,
    timeout: Duration,
}

impl RegistryClient {
    pub fn new(channel: ServiceChannel, timeout: Duration) -> RegistryClient {
        RegistryClient {
            client: RegistryServiceClient::new(channel.clone()),
            watch_client: RegistryServiceClient::new(channel.without_trace_context()),
            timeout,
        }
    }

    /// `None` when the model does not exist.
    pub async fn model_kind(&self, model: &str) -> Result<Option<ModelKind>, Error> {
        let mut client = self.client.clone();
        let request = pb::GetModelRequest {
            name: model.to_string(),
        };
        match with_deadline(self.timeout, client.get_model(request)).await {
            Ok(response) => Ok(Some(kind_from_proto(response.into_inner().kind))),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(dependency_error(REGISTRY, &status)),
        }
    }

    /// The version `reference` points at now; `None` when the model, the
    /// alias or the version does not exist.
    pub async fn resolve(&self, reference: &str) -> Result<Option<RegisteredVersion>, Error> {
        let mut client = self.client.clone();
        let request = pb::ResolveReferenceRequest {
            reference: reference.to_string(),
        };
        let version = match with_deadline(self.timeout, client.resolve_reference(request)).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::NotFound => return Ok(None),
            Err(status) if status.code() == Code::InvalidArgument => {
                return Err(Error::FailedPrecondition(format!(
                    "registry rejected reference `{reference}`: {}",
                    status.message()
                )))
            }
            Err(status) => return Err(dependency_error(REGISTRY, &status)),
        };
        version_from_proto(version).map(Some)
    }

    /// Moves `model@alias` from `expected_version` to `version`, for the
    /// audit trail as `actor` with `reason`. A failed promotion gate or a
    /// moved alias is FAILED_PRECONDITION with the registry's message.
    pub async fn set_alias(
        &self,
        model: &str,
        alias: &str,
        version: u32,
        expected_version: u32,
        actor: &str,
        reason: &str,
    ) -> Result<(), Error> {
        let mut client = self.client.clone();
        let request = pb::SetAliasRequest {
            model: model.to_string(),
            alias: alias.to_string(),
            version,
            expected_current_version: Some(expected_version),
            actor: actor.to_string(),
            reason: reason.to_string(),
            override_gate: false,
        };
        match with_deadline(self.timeout, client.set_alias(request)).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::FailedPrecondition => {
                Err(Error::FailedPrecondition(status.message().to_string()))
            }
            Err(status) if status.code() == Code::NotFound => {
                Err(Error::NotFound(status.message().to_string()))
            }
            Err(status) => Err(dependency_error(REGISTRY, &status)),
        }
    }

    /// Subscribes to every alias move from now on.
    pub async fn watch_aliases(&self) -> Result<AliasWatch, Error> {
        let mut client = self.watch_client.clone();
        let request = pb::WatchAliasesRequest {
            model: String::new(),
            send_initial_state: false,
        };
        match with_deadline(self.timeout, client.watch_aliases(request)).await {
            Ok(response) => Ok(AliasWatch {
                stream: response.into_inner(),
            }),
            Err(status) => Err(dependency_error(REGISTRY, &status)),
        }
    }
}

/// A live subscription to alias moves.
pub struct AliasWatch {
    stream: tonic::Streaming<pb::AliasEvent>,
}

impl AliasWatch {
    /// The model whose alias moved next; `None` when the registry ended the
    /// stream.
    pub async fn next_moved_model(&mut self) -> Result<Option<String>, Error> {
        match self.stream.message().await {
            Ok(Some(event)) => Ok(Some(event.model)),
            Ok(None) => Ok(None),
            Err(status) => Err(dependency_error(REGISTRY, &status)),
        }
    }
}

fn kind_from_proto(kind: i32) -> ModelKind {
    match pb::ModelKind::try_from(kind) {
        Ok(pb::ModelKind::Chain) => ModelKind::Chain,
        Ok(pb::ModelKind::Prompt) => ModelKind::Prompt,
        _ => ModelKind::Unspecified,
    }
}

fn generator_from_proto(generator: pb::GeneratorSpec) -> GeneratorChoice {
    GeneratorChoice {
        name: generator.name,
        params: generator.params.unwrap_or_default().into(),
        model: generator.model,
    }
}

fn version_from_proto(version: pb::ModelVersion) -> Result<RegisteredVersion, Error> {
    let spec = match version.spec {
        Some(pb::model_version::Spec::Chain(chain)) => {
            let filter = match &chain.filter {
                Some(filter) => {
                    keel_core::payload::struct_to_json("filter", filter).map_err(|error| {
                        Error::FailedPrecondition(format!(
                            "chain {}/{} has an invalid filter: {error}",
                            version.model, version.version
                        ))
                    })?
                }
                None => serde_json::Map::new(),
            };
            let generator = generator_from_proto(chain.generator.unwrap_or_default());
            let fallbacks = chain
                .fallbacks
                .into_iter()
                .map(generator_from_proto)
                .collect();
            let retrieval_mode =
                keel_types::SearchMode::from_proto("retrieval_mode", chain.retrieval_mode)
                    .map_err(|error| {
                        Error::FailedPrecondition(format!(
                            "chain {}/{} has an invalid retrieval mode: {error}",
                            version.model, version.version
                        ))
                    })?;
            VersionSpec::Chain(ChainSpec {
                collection: chain.collection,
                top_k: chain.top_k,
                filter,
                prompt: chain.prompt,
                generator: generator.name,
                params: generator.params,
                generator_model: generator.model,
                fallbacks,
                retrieval_mode,
            })
        }
        Some(pb::model_version::Spec::Prompt(prompt)) => VersionSpec::Prompt {
            template: prompt.template,
        },
        None => VersionSpec::Missing,
    };
    Ok(RegisteredVersion {
        model: version.model,
        version: version.version,
        spec,
    })
}

//! `keel-gateway-bench setup`: Keel as a gateway in front of one model —
//! a prompt passing the question through, a chain without retrieval whose
//! generator is the OpenAI-compatible one configured for the mock, an
//! endpoint routing to it — and an API key that may query only that
//! endpoint, so the benchmark's calls go through the key check as a
//! caller's do.

use keel_proto::v1::registry_service_client::RegistryServiceClient;
use keel_proto::v1::serving_service_client::ServingServiceClient;
use keel_proto::v1::{
    create_version_request, ChainSpec, CreateApiKeyRequest, GenerationParams, GeneratorSpec,
    ModelKind, PromptSpec,
};

use crate::client::connect;
use crate::error::Error;
use crate::gateway_call::MAX_TOKENS;
use crate::setup::{ensure_champion, ensure_endpoint, ensure_model};

/// The messages pass through as they came: what a gateway does.
const PROMPT_TEMPLATE: &str = "{% for message in messages %}{{ message.content }}{% endfor %}";
const KEY_NAME: &str = "gateway-bench";

#[derive(Debug, Clone)]
pub struct GatewaySetupOptions {
    pub registry_url: String,
    pub serving_url: String,
    /// A key with `admin` (the master key): models, an endpoint, a key.
    pub api_key: Option<String>,
    pub endpoint: String,
    /// The OpenAI-compatible generator's name in Keel's `[models.openai]`.
    pub generator: String,
}

/// Creates (idempotently) the endpoint and a new key scoped to it; returns
/// the key's secret.
pub async fn setup_gateway(options: &GatewaySetupOptions) -> Result<String, Error> {
    let api_key = options.api_key.as_deref();
    let mut registry = RegistryServiceClient::new(connect(&options.registry_url, api_key).await?);
    let mut serving = ServingServiceClient::new(connect(&options.serving_url, api_key).await?);

    let prompt_model = format!("{}-prompt", options.endpoint);
    ensure_model(&mut registry, &prompt_model, ModelKind::Prompt).await?;
    let prompt = create_version_request::Spec::Prompt(PromptSpec {
        template: PROMPT_TEMPLATE.to_string(),
    });
    ensure_champion(&mut registry, &prompt_model, prompt).await?;

    let chain_model = format!("{}-chain", options.endpoint);
    ensure_model(&mut registry, &chain_model, ModelKind::Chain).await?;
    let chain = create_version_request::Spec::Chain(ChainSpec {
        // No collection: no retrieval.
        collection: String::new(),
        top_k: 0,
        filter: None,
        prompt: format!("{prompt_model}@champion"),
        generator: Some(GeneratorSpec {
            name: options.generator.clone(),
            params: Some(GenerationParams {
                max_tokens: Some(MAX_TOKENS),
                ..Default::default()
            }),
            model: String::new(),
        }),
        fallbacks: Vec::new(),
        retrieval_mode: 0,
    });
    ensure_champion(&mut registry, &chain_model, chain).await?;
    ensure_endpoint(
        &mut serving,
        &options.endpoint,
        &format!("{chain_model}@champion"),
    )
    .await?;

    let key = CreateApiKeyRequest {
        name: KEY_NAME.to_string(),
        scopes: vec![format!("query:{}", options.endpoint)],
        expires_at_ms: 0,
        actor: KEY_NAME.to_string(),
    };
    let created = registry
        .create_api_key(key)
        .await
        .map_err(|status| Error::rpc("create API key", status))?
        .into_inner();
    tracing::info!(endpoint = %options.endpoint, key = KEY_NAME, "gateway endpoint and key ready");
    Ok(created.secret)
}

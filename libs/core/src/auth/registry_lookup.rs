//! Keys checked by the registry, for the services that do not hold them.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use keel_proto::v1::registry_service_client::RegistryServiceClient;
use keel_proto::v1::AuthenticateApiKeyRequest;

use super::authenticator::{KeyLookup, LookupError};
use super::principal::Principal;
use crate::channel::ServiceChannel;

pub struct RegistryLookup {
    client: RegistryServiceClient<ServiceChannel>,
    timeout: Duration,
}

impl RegistryLookup {
    /// `channel` carries this service's own key: the registry answers
    /// AuthenticateApiKey to a key with `read`.
    pub fn new(channel: ServiceChannel, timeout: Duration) -> RegistryLookup {
        RegistryLookup {
            client: RegistryServiceClient::new(channel),
            timeout,
        }
    }
}

impl KeyLookup for RegistryLookup {
    fn lookup<'a>(
        &'a self,
        secret: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Principal>, LookupError>> + Send + 'a>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            let request = AuthenticateApiKeyRequest {
                secret: secret.to_string(),
            };
            let answer = tokio::time::timeout(self.timeout, client.authenticate_api_key(request))
                .await
                .map_err(|_| {
                    LookupError(format!(
                        "the registry did not answer within {:?}",
                        self.timeout
                    ))
                })?;
            match answer {
                Ok(key) => {
                    let key = key.into_inner();
                    Ok(Some(Principal::of_key(key.id, key.name, &key.scopes)))
                }
                Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
                Err(status) => Err(LookupError(format!(
                    "the registry answered {:?}: {}",
                    status.code(),
                    status.message()
                ))),
            }
        })
    }
}

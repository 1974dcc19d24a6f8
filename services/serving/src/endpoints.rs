//! Create, read, update and delete of endpoints: input is validated
//! (`endpoint`), targets are checked against the registry, and rows are
//! kept in serving's own database.

use keel_store::Store;
use keel_types::{validate, Selector};

use crate::endpoint::{validate_endpoint, Endpoint, EndpointInput, Route, Shadow};
use crate::error::Error;
use crate::registry::{ModelKind, RegistryClient};
use crate::store;

/// Create, read, update and delete of endpoints.
#[derive(Clone)]
pub struct Endpoints {
    store: Store,
    registry: RegistryClient,
}

impl Endpoints {
    pub fn new(store: Store, registry: RegistryClient) -> Endpoints {
        Endpoints { store, registry }
    }

    pub async fn create(&self, input: &EndpointInput) -> Result<Endpoint, Error> {
        let valid = validate_endpoint(input)?;
        if store::get_endpoint(&self.store, &valid.name)
            .await?
            .is_some()
        {
            return Err(already_exists(&valid.name));
        }
        self.check_targets(&valid.routes, valid.shadow.as_ref())
            .await?;
        let now = keel_core::time::now_ms();
        let endpoint = Endpoint {
            name: valid.name,
            routes: valid.routes,
            description: valid.description,
            created_at_ms: now,
            updated_at_ms: now,
            shadow: valid.shadow,
        };
        let inserted = store::insert_endpoint(&self.store, &endpoint).await?;
        if !inserted {
            return Err(already_exists(&endpoint.name));
        }
        tracing::info!(endpoint = %endpoint.name, routes = endpoint.routes.len(), "endpoint created");
        Ok(endpoint)
    }

    pub async fn get(&self, name: &str) -> Result<Endpoint, Error> {
        validate::name("name", name)?;
        store::get_endpoint(&self.store, name)
            .await?
            .ok_or_else(|| not_found(name))
    }

    /// Every endpoint, ordered by name.
    pub async fn list(&self) -> Result<Vec<Endpoint>, Error> {
        store::list_endpoints(&self.store).await
    }

    /// Replaces the routes and the description.
    pub async fn update(&self, input: &EndpointInput) -> Result<Endpoint, Error> {
        let valid = validate_endpoint(input)?;
        if store::get_endpoint(&self.store, &valid.name)
            .await?
            .is_none()
        {
            return Err(not_found(&valid.name));
        }
        self.check_targets(&valid.routes, valid.shadow.as_ref())
            .await?;
        let now = keel_core::time::now_ms();
        let updated = store::update_endpoint(
            &self.store,
            &valid.name,
            &valid.routes,
            &valid.description,
            valid.shadow.as_ref(),
            now,
        )
        .await?;
        let endpoint = updated.ok_or_else(|| not_found(&valid.name))?;
        tracing::info!(endpoint = %endpoint.name, routes = endpoint.routes.len(), "endpoint updated");
        Ok(endpoint)
    }

    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        validate::name("name", name)?;
        // Its experiment would run on with nothing to run on.
        if let Some(running) = crate::experiment_store::running_arms(&self.store, name).await? {
            return Err(Error::FailedPrecondition(format!(
                "endpoint `{name}` has a running experiment `{}`: stop it first",
                running.id
            )));
        }
        if !store::delete_endpoint(&self.store, name).await? {
            return Err(not_found(name));
        }
        tracing::info!(endpoint = %name, "endpoint deleted");
        Ok(())
    }

    /// Every target (the routes' and the shadow's) must name an existing
    /// CHAIN model; a "model/version" target must name an existing version
    /// too (versions never change, so checking once is enough). An alias
    /// may be set later.
    async fn check_targets(&self, routes: &[Route], shadow: Option<&Shadow>) -> Result<(), Error> {
        let targets = routes
            .iter()
            .map(|route| &route.target)
            .chain(shadow.map(|shadow| &shadow.target));
        for target in targets {
            let kind = self.registry.model_kind(&target.model).await?;
            match kind {
                None => {
                    return Err(Error::NotFound(format!(
                        "route target `{target}`: model `{}` not found",
                        target.model
                    )))
                }
                Some(ModelKind::Chain) => {}
                Some(other) => {
                    return Err(Error::FailedPrecondition(format!(
                        "route target `{target}`: model `{}` is a {other} model, expected a CHAIN model",
                        target.model
                    )))
                }
            }
            if let Selector::Version(version) = &target.selector {
                let model = &target.model;
                if self.registry.resolve(&target.to_string()).await?.is_none() {
                    return Err(Error::NotFound(format!(
                        "route target `{target}`: version {version} of model `{model}` not found"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("endpoint `{name}` not found"))
}

fn already_exists(name: &str) -> Error {
    Error::AlreadyExists(format!("endpoint `{name}` already exists"))
}

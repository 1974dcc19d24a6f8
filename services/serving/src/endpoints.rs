//! Endpoints: a name and weighted routes to registered RAG chains. Input is
//! validated here, targets are checked against the registry, and rows are
//! kept in serving's own database.

use std::collections::HashMap;
use std::fmt;

use keel_core::validate;
use keel_core::FieldError;
use keel_store::Store;

use crate::error::Error;
use crate::registry::{ModelKind, RegistryClient};
use crate::store;

pub const MAX_ROUTES: usize = 16;
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
pub const MAX_ALIAS_LEN: usize = 64;

/// What a route points at: a movable alias or an immutable version of a model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Alias { model: String, alias: String },
    Version { model: String, version: u32 },
}

impl Target {
    /// Parses "model@alias" or "model/version"; errors name `field`.
    pub fn parse(field: &str, text: &str) -> Result<Target, FieldError> {
        let expected = "must be \"model@alias\" or \"model/version\"";
        if let Some((model, alias)) = text.split_once('@') {
            validate::name(field, model).map_err(|_| {
                FieldError::new(
                    field,
                    format!("{expected} with a valid model name, got {text:?}"),
                )
            })?;
            check_alias(field, alias)?;
            return Ok(Target::Alias {
                model: model.to_string(),
                alias: alias.to_string(),
            });
        }
        if let Some((model, version_text)) = text.split_once('/') {
            validate::name(field, model).map_err(|_| {
                FieldError::new(
                    field,
                    format!("{expected} with a valid model name, got {text:?}"),
                )
            })?;
            let version = match version_text.parse::<u32>() {
                Ok(version) if version >= 1 && version_text.bytes().all(|b| b.is_ascii_digit()) => {
                    version
                }
                _ => {
                    return Err(FieldError::new(
                        field,
                        format!("version must be a positive integer, got {text:?}"),
                    ))
                }
            };
            return Ok(Target::Version {
                model: model.to_string(),
                version,
            });
        }
        Err(FieldError::new(field, format!("{expected}, got {text:?}")))
    }

    pub fn model(&self) -> &str {
        match self {
            Target::Alias { model, .. } | Target::Version { model, .. } => model,
        }
    }

    pub fn is_alias(&self) -> bool {
        matches!(self, Target::Alias { .. })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Alias { model, alias } => write!(formatter, "{model}@{alias}"),
            Target::Version { model, version } => write!(formatter, "{model}/{version}"),
        }
    }
}

/// The registry's alias rule: 1..=64 characters of [a-z0-9_-], not all digits.
fn check_alias(field: &str, alias: &str) -> Result<(), FieldError> {
    let well_formed = !alias.is_empty()
        && alias.len() <= MAX_ALIAS_LEN
        && alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let all_digits = alias.bytes().all(|b| b.is_ascii_digit());
    if !well_formed || all_digits {
        return Err(FieldError::new(
            field,
            format!("alias must be 1..={MAX_ALIAS_LEN} characters of [a-z0-9_-], not all digits, got {alias:?}"),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub target: Target,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub routes: Vec<Route>,
    pub description: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A route as the caller sent it.
#[derive(Debug, Clone)]
pub struct RouteInput {
    pub target: String,
    pub weight: u32,
}

/// An endpoint as the caller sent it, for create and update.
#[derive(Debug, Clone)]
pub struct EndpointInput {
    pub name: String,
    pub routes: Vec<RouteInput>,
    pub description: String,
}

/// An endpoint that passed every input rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidEndpoint {
    pub name: String,
    pub routes: Vec<Route>,
    pub description: String,
}

pub fn validate_endpoint(input: &EndpointInput) -> Result<ValidEndpoint, FieldError> {
    validate::name("name", &input.name)?;
    validate::max_len("description", &input.description, MAX_DESCRIPTION_BYTES)?;
    if input.routes.is_empty() || input.routes.len() > MAX_ROUTES {
        return Err(FieldError::new(
            "routes",
            format!(
                "must hold 1..={MAX_ROUTES} routes, got {}",
                input.routes.len()
            ),
        ));
    }
    let mut routes = Vec::with_capacity(input.routes.len());
    let mut first_index_of: HashMap<Target, usize> = HashMap::new();
    let mut weight_sum: u64 = 0;
    for (index, route) in input.routes.iter().enumerate() {
        let field = format!("routes[{index}].target");
        let target = Target::parse(&field, &route.target)?;
        if let Some(first_index) = first_index_of.get(&target) {
            return Err(FieldError::new(
                field,
                format!("duplicates routes[{first_index}] ({target})"),
            ));
        }
        first_index_of.insert(target.clone(), index);
        weight_sum += u64::from(route.weight);
        routes.push(Route {
            target,
            weight: route.weight,
        });
    }
    if weight_sum == 0 {
        return Err(FieldError::new(
            "routes",
            "weights must sum to a positive number, got 0",
        ));
    }
    Ok(ValidEndpoint {
        name: input.name.clone(),
        routes,
        description: input.description.clone(),
    })
}

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
        self.check_targets(&valid.routes).await?;
        let now = keel_core::time::now_ms();
        let endpoint = Endpoint {
            name: valid.name,
            routes: valid.routes,
            description: valid.description,
            created_at_ms: now,
            updated_at_ms: now,
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
        self.check_targets(&valid.routes).await?;
        let now = keel_core::time::now_ms();
        let updated = store::update_endpoint(
            &self.store,
            &valid.name,
            &valid.routes,
            &valid.description,
            now,
        )
        .await?;
        let endpoint = updated.ok_or_else(|| not_found(&valid.name))?;
        tracing::info!(endpoint = %endpoint.name, routes = endpoint.routes.len(), "endpoint updated");
        Ok(endpoint)
    }

    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        validate::name("name", name)?;
        if !store::delete_endpoint(&self.store, name).await? {
            return Err(not_found(name));
        }
        tracing::info!(endpoint = %name, "endpoint deleted");
        Ok(())
    }

    /// Every target must name an existing CHAIN model; a "model/version"
    /// target must name an existing version too (versions never change, so
    /// checking once is enough). An alias may be set later.
    async fn check_targets(&self, routes: &[Route]) -> Result<(), Error> {
        for route in routes {
            let target = &route.target;
            let kind = self.registry.model_kind(target.model()).await?;
            match kind {
                None => {
                    return Err(Error::NotFound(format!(
                        "route target `{target}`: model `{}` not found",
                        target.model()
                    )))
                }
                Some(ModelKind::Chain) => {}
                Some(other) => {
                    return Err(Error::FailedPrecondition(format!(
                        "route target `{target}`: model `{}` is a {other} model, expected a CHAIN model",
                        target.model()
                    )))
                }
            }
            if let Target::Version { model, version } = target {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, routes: &[(&str, u32)]) -> EndpointInput {
        EndpointInput {
            name: name.to_string(),
            routes: routes
                .iter()
                .map(|(target, weight)| RouteInput {
                    target: target.to_string(),
                    weight: *weight,
                })
                .collect(),
            description: String::new(),
        }
    }

    #[test]
    fn targets_parse_and_print_back() {
        let alias = Target::parse("t", "support-bot@champion").unwrap();
        assert_eq!(
            alias,
            Target::Alias {
                model: "support-bot".to_string(),
                alias: "champion".to_string()
            }
        );
        assert_eq!(alias.to_string(), "support-bot@champion");
        let version = Target::parse("t", "bot/12").unwrap();
        assert_eq!(
            version,
            Target::Version {
                model: "bot".to_string(),
                version: 12
            }
        );
        assert_eq!(version.to_string(), "bot/12");
        assert!(alias.is_alias());
        assert!(!version.is_alias());
    }

    #[test]
    fn bad_targets_name_the_field() {
        let cases = [
            "bot",
            "",
            "bot@",
            "bot@Champion",
            "bot@123",
            "bot/0",
            "bot/-1",
            "bot/+1",
            "bot/x",
            "bot/99999999999",
            "@champion",
            "-bot@champion",
            "bot@champ@ion",
        ];
        for case in cases {
            let error = Target::parse("routes[0].target", case).unwrap_err();
            assert_eq!(error.field, "routes[0].target", "case {case:?}");
        }
        assert!(Target::parse("t", &format!("bot@{}", "a".repeat(64))).is_ok());
        assert!(Target::parse("t", &format!("bot@{}", "a".repeat(65))).is_err());
    }

    #[test]
    fn endpoint_validation_table() {
        let seventeen: Vec<String> = (0..17).map(|i| format!("m{i}@champion")).collect();
        let seventeen_routes: Vec<(&str, u32)> =
            seventeen.iter().map(|t| (t.as_str(), 1)).collect();
        let cases: Vec<(EndpointInput, &str, &str)> = vec![
            (
                input("", &[("bot@champion", 1)]),
                "name",
                "must not be empty",
            ),
            (input("-x", &[("bot@champion", 1)]), "name", "must match"),
            (input("ep", &[]), "routes", "must hold 1..=16 routes, got 0"),
            (
                input("ep", &seventeen_routes),
                "routes",
                "must hold 1..=16 routes, got 17",
            ),
            (
                input("ep", &[("bot", 1)]),
                "routes[0].target",
                "\"model@alias\" or \"model/version\"",
            ),
            (
                input("ep", &[("bot@champion", 1), ("bot/0", 1)]),
                "routes[1].target",
                "positive integer",
            ),
            (
                input("ep", &[("bot@champion", 0), ("bot/2", 0)]),
                "routes",
                "weights must sum to a positive number, got 0",
            ),
            (
                input(
                    "ep",
                    &[("bot@champion", 1), ("bot/2", 1), ("bot@champion", 3)],
                ),
                "routes[2].target",
                "duplicates routes[0] (bot@champion)",
            ),
        ];
        for (case, field, rule_part) in cases {
            let error = validate_endpoint(&case).unwrap_err();
            assert_eq!(error.field, field, "{case:?}");
            assert!(error.rule.contains(rule_part), "{case:?}: {}", error.rule);
        }
        let mut long_description = input("ep", &[("bot@champion", 1)]);
        long_description.description = "x".repeat(MAX_DESCRIPTION_BYTES + 1);
        assert_eq!(
            validate_endpoint(&long_description).unwrap_err().field,
            "description"
        );
    }

    #[test]
    fn valid_endpoint_keeps_order_and_weights() {
        let valid = validate_endpoint(&input(
            "ep",
            &[("bot@champion", 90), ("bot@challenger", 10), ("bot/3", 0)],
        ))
        .unwrap();
        let targets: Vec<String> = valid.routes.iter().map(|r| r.target.to_string()).collect();
        assert_eq!(targets, ["bot@champion", "bot@challenger", "bot/3"]);
        let weights: Vec<u32> = valid.routes.iter().map(|r| r.weight).collect();
        assert_eq!(weights, [90, 10, 0]);
        // u32::MAX weights must not overflow the sum.
        assert!(validate_endpoint(&input("ep", &[("a@x", u32::MAX), ("b@x", u32::MAX)])).is_ok());
    }
}

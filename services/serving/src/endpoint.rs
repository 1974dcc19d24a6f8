//! An endpoint: a name and weighted routes to registered RAG chains, and
//! the input rules a created or updated endpoint must pass.

use std::collections::HashMap;

use keel_types::{validate, FieldError, ModelRef};

pub const MAX_ROUTES: usize = 16;
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub target: ModelRef,
    pub weight: u32,
}

/// A share of live queries answered again, unseen, by another chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    pub target: ModelRef,
    /// 1..=100.
    pub percent: u32,
}

impl Shadow {
    /// Whether the live request `request_id` is mirrored: decided by its
    /// random bits, so the same request always gets the same answer.
    pub fn mirrors(&self, request_id: keel_types::RequestId) -> bool {
        let random_bits = request_id.as_uuid().as_u128() as u64;
        random_bits % 100 < u64::from(self.percent)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub routes: Vec<Route>,
    pub description: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub shadow: Option<Shadow>,
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
    /// (target, percent)
    pub shadow: Option<(String, u32)>,
}

/// An endpoint that passed every input rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidEndpoint {
    pub name: String,
    pub routes: Vec<Route>,
    pub description: String,
    pub shadow: Option<Shadow>,
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
    let mut first_index_of: HashMap<ModelRef, usize> = HashMap::new();
    let mut weight_sum: u64 = 0;
    for (index, route) in input.routes.iter().enumerate() {
        let field = format!("routes[{index}].target");
        let target = ModelRef::parse(&field, &route.target)?;
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
    let shadow = match &input.shadow {
        None => None,
        Some((target, percent)) => {
            let target = ModelRef::parse("shadow.target", target)?;
            validate::in_range("shadow.percent", u64::from(*percent), 1, 100)?;
            Some(Shadow {
                target,
                percent: *percent,
            })
        }
    };
    Ok(ValidEndpoint {
        name: input.name.clone(),
        routes,
        description: input.description.clone(),
        shadow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shadow_mirrors_its_share_of_requests_and_always_the_same_ones() {
        let shadow = Shadow {
            target: ModelRef::parse("target", "bot/2").unwrap(),
            percent: 30,
        };
        let ids: Vec<keel_types::RequestId> = (0..10_000)
            .map(|_| keel_types::RequestId::generate())
            .collect();
        let mirrored = ids.iter().filter(|id| shadow.mirrors(**id)).count();
        assert!(
            (2700..=3300).contains(&mirrored),
            "{mirrored} of 10000 at 30%"
        );
        assert!(ids
            .iter()
            .all(|id| shadow.mirrors(*id) == shadow.mirrors(*id)));
        let all = Shadow {
            percent: 100,
            ..shadow
        };
        assert!(ids.iter().all(|id| all.mirrors(*id)));
    }

    #[test]
    fn shadow_rules_name_their_field() {
        let mut zero = input("support", &[("bot@champion", 1)]);
        zero.shadow = Some(("bot/2".to_string(), 0));
        assert_eq!(
            validate_endpoint(&zero).unwrap_err().field,
            "shadow.percent"
        );
        let mut over = zero.clone();
        over.shadow = Some(("bot/2".to_string(), 101));
        assert_eq!(
            validate_endpoint(&over).unwrap_err().field,
            "shadow.percent"
        );
        let mut malformed = zero.clone();
        malformed.shadow = Some(("bot@@2".to_string(), 10));
        assert_eq!(
            validate_endpoint(&malformed).unwrap_err().field,
            "shadow.target"
        );
        let mut fine = zero;
        fine.shadow = Some(("bot/2".to_string(), 10));
        assert_eq!(
            validate_endpoint(&fine).unwrap().shadow.unwrap().percent,
            10
        );
    }

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
            shadow: None,
        }
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
                "must be a number >= 1",
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

//! Traffic splitting: picks one of an endpoint's routes by weight. With a
//! user id the pick is sticky, so one user keeps seeing one variant while
//! the routes stay the same.

use rand::Rng;
use xxhash_rust::xxh3::xxh3_64;

use crate::endpoint::Route;

/// The route for this request; `None` only when no route has a positive
/// weight, which endpoint validation rules out.
pub fn pick_route<'a>(endpoint: &str, routes: &'a [Route], user_id: &str) -> Option<&'a Route> {
    let weight_sum: u64 = routes.iter().map(|route| u64::from(route.weight)).sum();
    if weight_sum == 0 {
        return None;
    }
    let point = if user_id.is_empty() {
        rand::rng().random_range(0..weight_sum)
    } else {
        sticky_point(endpoint, user_id) % weight_sum
    };
    route_at(routes, point)
}

/// A stable hash of (endpoint, user). The separator keeps ("ab", "c") and
/// ("a", "bc") apart; endpoint names cannot contain a NUL byte.
fn sticky_point(endpoint: &str, user_id: &str) -> u64 {
    let mut key = Vec::with_capacity(endpoint.len() + 1 + user_id.len());
    key.extend_from_slice(endpoint.as_bytes());
    key.push(0);
    key.extend_from_slice(user_id.as_bytes());
    xxh3_64(&key)
}

/// The route whose cumulative weight range holds `point` (< the weight sum).
fn route_at(routes: &[Route], point: u64) -> Option<&Route> {
    let mut range_end: u64 = 0;
    for route in routes {
        range_end += u64::from(route.weight);
        if point < range_end {
            return Some(route);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::ModelRef;

    fn routes(weights: &[(&str, u32)]) -> Vec<Route> {
        weights
            .iter()
            .map(|(target, weight)| Route {
                target: ModelRef::parse("target", target).unwrap(),
                weight: *weight,
            })
            .collect()
    }

    fn share_of_first(endpoint: &str, routes: &[Route], users: usize, sticky: bool) -> f64 {
        let mut first = 0;
        for index in 0..users {
            let user = if sticky {
                format!("user-{index}")
            } else {
                String::new()
            };
            let picked = pick_route(endpoint, routes, &user).unwrap();
            if picked.target == routes[0].target {
                first += 1;
            }
        }
        first as f64 * 100.0 / users as f64
    }

    #[test]
    fn the_same_user_lands_on_the_same_route() {
        let split = routes(&[("bot@champion", 50), ("bot@challenger", 50)]);
        for index in 0..200 {
            let user = format!("user-{index}");
            let first = pick_route("support", &split, &user).unwrap();
            for _ in 0..5 {
                assert_eq!(pick_route("support", &split, &user).unwrap(), first);
            }
        }
    }

    #[test]
    fn sticky_split_of_90_10_over_1000_users_is_within_4_points() {
        let split = routes(&[("bot@champion", 90), ("bot@challenger", 10)]);
        let share = share_of_first("support", &split, 1000, true);
        assert!((86.0..=94.0).contains(&share), "champion got {share}%");
    }

    #[test]
    fn sticky_assignment_differs_between_endpoints() {
        let split = routes(&[("bot@champion", 50), ("bot@challenger", 50)]);
        let differing = (0..200)
            .filter(|index| {
                let user = format!("user-{index}");
                pick_route("support", &split, &user) != pick_route("billing", &split, &user)
            })
            .count();
        // Independent hashes disagree on about half of the users.
        assert!((60..=140).contains(&differing), "{differing}");
    }

    #[test]
    fn random_split_follows_weights_and_skips_zero_weights() {
        let split = routes(&[("bot@champion", 90), ("bot@challenger", 10), ("bot/1", 0)]);
        let share = share_of_first("support", &split, 10_000, false);
        assert!((87.0..=93.0).contains(&share), "champion got {share}%");
        for _ in 0..1000 {
            assert_ne!(
                pick_route("support", &split, "")
                    .unwrap()
                    .target
                    .to_string(),
                "bot/1"
            );
        }
    }

    #[test]
    fn cumulative_ranges() {
        let split = routes(&[("a@x", 2), ("b@x", 0), ("c@x", 3)]);
        let picked: Vec<String> = (0..5)
            .map(|point| route_at(&split, point).unwrap().target.to_string())
            .collect();
        assert_eq!(picked, ["a@x", "a@x", "c@x", "c@x", "c@x"]);
        assert_eq!(route_at(&split, 5), None);
        assert_eq!(pick_route("e", &routes(&[("a@x", 0)]), "u"), None);
    }
}

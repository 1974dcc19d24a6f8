//! The caller a request was authenticated as, put in the request's
//! extensions by the auth layer so a handler can check what the layer
//! cannot see: the endpoint a query names.

use keel_types::Scope;

use super::error::AuthError;

/// The id (and name) the master key goes by; stored keys have 12 hex digits.
pub const MASTER_KEY_ID: &str = "master";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's id, or `master` for the master key.
    pub key_id: String,
    /// The key's name: who acted, in audit trails.
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// The deployment's master key: every scope.
    pub fn master() -> Principal {
        Principal {
            key_id: MASTER_KEY_ID.to_string(),
            name: MASTER_KEY_ID.to_string(),
            scopes: vec![Scope::Admin],
        }
    }

    /// A stored key's principal. Its scopes were checked when it was
    /// created; one this build cannot read (written by a newer Keel)
    /// grants nothing.
    pub fn of_key(key_id: String, name: String, scopes: &[String]) -> Principal {
        Principal {
            key_id,
            name,
            scopes: scopes
                .iter()
                .filter_map(|text| Scope::parse("scopes", text).ok())
                .collect(),
        }
    }

    pub fn grants(&self, needed: &Scope) -> bool {
        self.scopes.iter().any(|held| held.grants(needed))
    }

    /// Whether the key may query some endpoint (which one the handler
    /// checks once it has read the request).
    pub fn may_query_some_endpoint(&self) -> bool {
        self.scopes
            .iter()
            .any(|held| matches!(held, Scope::Query(_) | Scope::Admin))
    }

    pub fn require(&self, needed: &Scope) -> Result<(), AuthError> {
        if self.grants(needed) {
            Ok(())
        } else {
            Err(AuthError::Denied {
                key: self.name.clone(),
                needed: needed.to_string(),
            })
        }
    }
}

/// Checks the request's caller holds `needed`. A request without a
/// principal came through a server with authentication off: allowed.
pub fn require(extensions: &http::Extensions, needed: &Scope) -> Result<(), AuthError> {
    match extensions.get::<Principal>() {
        Some(principal) => principal.require(needed),
        None => Ok(()),
    }
}

/// The name of the key that made a call, as limits count it: `master` for
/// the master key, `anonymous` with authentication off.
pub fn caller_name(extensions: &http::Extensions) -> String {
    match extensions.get::<Principal>() {
        Some(principal) => principal.name.clone(),
        None => ANONYMOUS.to_string(),
    }
}

/// The caller's name when no key is checked.
pub const ANONYMOUS: &str = "anonymous";

/// Who an audit trail records for a call: the key's name (`key:<name>`)
/// when a key other than the master made it, since a request's own
/// `actor` field is whatever the caller wrote; otherwise (the master key,
/// which the services use on behalf of someone they name, or
/// authentication off) the `actor` the request claims.
pub fn audited_actor(extensions: &http::Extensions, claimed: String) -> String {
    match extensions.get::<Principal>() {
        Some(principal) if principal.key_id != MASTER_KEY_ID => {
            format!("key:{}", principal.name)
        }
        _ => claimed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scopes: &[Scope]) -> Principal {
        Principal {
            key_id: "0123456789ab".to_string(),
            name: "support-bot".to_string(),
            scopes: scopes.to_vec(),
        }
    }

    #[test]
    fn a_query_key_for_one_endpoint_is_denied_another_naming_the_scope() {
        let support = Scope::Query(Some("support".to_string()));
        let billing = Scope::Query(Some("billing".to_string()));
        let principal = key(std::slice::from_ref(&support));
        assert!(principal.require(&support).is_ok());
        let denied = principal.require(&billing).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "api key `support-bot` lacks scope `query:billing`"
        );
        assert!(principal.may_query_some_endpoint());
        assert!(!key(&[Scope::Read]).may_query_some_endpoint());
        assert!(key(&[Scope::Admin]).may_query_some_endpoint());
    }

    #[test]
    fn an_audit_names_the_key_unless_the_master_key_acts_for_someone() {
        let mut extensions = http::Extensions::new();
        assert_eq!(audited_actor(&extensions, "ops".to_string()), "ops");
        extensions.insert(Principal::master());
        assert_eq!(
            audited_actor(&extensions, "experiment 7".to_string()),
            "experiment 7"
        );
        extensions.insert(key(&[Scope::Admin]));
        assert_eq!(
            audited_actor(&extensions, "someone else".to_string()),
            "key:support-bot"
        );
    }

    #[test]
    fn without_a_principal_authentication_is_off_and_everything_passes() {
        let mut extensions = http::Extensions::new();
        assert!(require(&extensions, &Scope::Admin).is_ok());
        extensions.insert(key(&[Scope::Read]));
        assert!(require(&extensions, &Scope::Read).is_ok());
        assert!(require(&extensions, &Scope::Admin).is_err());
    }
}

//! Who may call what: every gRPC method and HTTP route of every service
//! checks the API key in `authorization: Bearer …` through one tower layer
//! ([`AuthLayer`]), against the scope the call needs ([`access`]). Keys
//! live in the registry; the other services ask it and cache the answer
//! for a second, so a revocation takes effect within one.

pub mod access;
mod authenticator;
mod config;
mod error;
mod layer;
mod principal;
mod registry_lookup;

pub use access::Need;
pub use authenticator::{Authenticator, KeyLookup, LookupError};
pub use config::{Auth, AuthConfig, AuthConfigError, MIN_MASTER_KEY_BYTES};
pub use error::AuthError;
pub use layer::{AuthLayer, AuthService, GrpcCalls, HttpRoutes};
pub use principal::{audited_actor, caller_name, require, Principal, ANONYMOUS};
pub use registry_lookup::RegistryLookup;

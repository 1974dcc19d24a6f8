//! The tower layer in front of every gRPC port and admin HTTP port: reads
//! `authorization: Bearer <key>`, authenticates it, checks the scope the
//! call needs and either refuses the call (UNAUTHENTICATED /
//! PERMISSION_DENIED on gRPC, 401 / 403 on HTTP) or passes it on with the
//! caller's [`Principal`] in the request's extensions.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use tower::{Layer, Service};

use super::access::{self, Need};
use super::authenticator::Authenticator;
use super::error::AuthError;
use super::principal::Principal;

/// How a port names what a call needs and answers a refusal.
pub trait Protocol: Send + Sync + 'static {
    type Body;
    fn need<B>(request: &http::Request<B>) -> Need;
    fn reject(error: AuthError) -> http::Response<Self::Body>;
}

/// gRPC ports: statuses in trailers-only responses.
pub struct GrpcCalls;

impl Protocol for GrpcCalls {
    type Body = tonic::body::Body;

    fn need<B>(request: &http::Request<B>) -> Need {
        access::grpc_need(request.uri().path())
    }

    fn reject(error: AuthError) -> http::Response<tonic::body::Body> {
        tonic::Status::from(error).into_http()
    }
}

/// Admin HTTP ports: 401 / 403 with OpenAI's error JSON.
pub struct HttpRoutes;

impl Protocol for HttpRoutes {
    type Body = axum::body::Body;

    fn need<B>(request: &http::Request<B>) -> Need {
        access::http_need(request.method(), request.uri().path())
    }

    fn reject(error: AuthError) -> http::Response<axum::body::Body> {
        let status = error.http_status();
        let body = serde_json::json!({
            "error": {
                "message": error.to_string(),
                "type": error.http_type(),
                "code": status.as_u16(),
            }
        });
        let mut response = http::Response::new(axum::body::Body::from(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub struct AuthLayer<P> {
    /// `None`: authentication is off and every call passes.
    authenticator: Option<Arc<Authenticator>>,
    protocol: PhantomData<fn() -> P>,
}

impl<P> Clone for AuthLayer<P> {
    fn clone(&self) -> Self {
        AuthLayer {
            authenticator: self.authenticator.clone(),
            protocol: PhantomData,
        }
    }
}

impl<P> AuthLayer<P> {
    pub fn new(authenticator: Option<Arc<Authenticator>>) -> AuthLayer<P> {
        AuthLayer {
            authenticator,
            protocol: PhantomData,
        }
    }
}

impl<S, P> Layer<S> for AuthLayer<P> {
    type Service = AuthService<S, P>;

    fn layer(&self, inner: S) -> AuthService<S, P> {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

pub struct AuthService<S, P> {
    inner: S,
    layer: AuthLayer<P>,
}

impl<S: Clone, P> Clone for AuthService<S, P> {
    fn clone(&self) -> Self {
        AuthService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

/// The key in `authorization: Bearer <key>` (the scheme in any case).
fn bearer_key(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// Whether `principal` may make a call that needs `need`.
fn check(principal: &Principal, need: Need) -> Result<(), AuthError> {
    match need {
        Need::Open => Ok(()),
        Need::SomeQuery if principal.may_query_some_endpoint() => Ok(()),
        Need::SomeQuery => Err(AuthError::Denied {
            key: principal.name.clone(),
            needed: "query:<endpoint>".to_string(),
        }),
        other => match other.scope() {
            Some(scope) => principal.require(&scope),
            None => Ok(()),
        },
    }
}

impl<S, P, RequestBody> Service<http::Request<RequestBody>> for AuthService<S, P>
where
    P: Protocol,
    S: Service<http::Request<RequestBody>, Response = http::Response<P::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RequestBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        let Some(authenticator) = self.layer.authenticator.clone() else {
            return Box::pin(self.inner.call(request));
        };
        let need = P::need(&request);
        if need == Need::Open {
            return Box::pin(self.inner.call(request));
        }
        // The clone that was driven to ready serves this call; the fresh
        // one waits for the next (tower's rule for services called later).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let key = bearer_key(request.headers()).map(str::to_string);
        Box::pin(async move {
            let checked = match key {
                None => Err(AuthError::Missing),
                Some(key) => match authenticator.authenticate(&key).await {
                    Ok(principal) => check(&principal, need).map(|()| principal),
                    Err(error) => Err(error),
                },
            };
            match checked {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(error) => {
                    tracing::debug!(path = request.uri().path(), %error, "call refused");
                    Ok(P::reject(error))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use keel_types::Scope;

    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_a_bearer_key_is_read() {
        assert_eq!(bearer_key(&headers("Bearer keel_x")), Some("keel_x"));
        assert_eq!(bearer_key(&headers("bearer  keel_x ")), Some("keel_x"));
        assert_eq!(bearer_key(&headers("Basic dXNlcg==")), None);
        assert_eq!(bearer_key(&headers("Bearer ")), None);
        assert_eq!(bearer_key(&http::HeaderMap::new()), None);
    }

    #[test]
    fn a_query_call_needs_some_query_scope_and_names_it() {
        let reader = Principal {
            key_id: "k".to_string(),
            name: "dash".to_string(),
            scopes: vec![Scope::Read],
        };
        let denied = check(&reader, Need::SomeQuery).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "api key `dash` lacks scope `query:<endpoint>`"
        );
        assert_eq!(
            check(&reader, Need::Admin).unwrap_err().to_string(),
            "api key `dash` lacks scope `admin`"
        );
        assert!(check(&reader, Need::Read).is_ok());
        let support = Principal {
            scopes: vec![Scope::Query(Some("support".to_string()))],
            ..reader
        };
        assert!(check(&support, Need::SomeQuery).is_ok());
        assert!(check(&support, Need::AllQueries).is_err());
    }

    #[test]
    fn http_refusals_are_openai_shaped_json() {
        let response = HttpRoutes::reject(AuthError::Missing);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
        let denied = HttpRoutes::reject(AuthError::Denied {
            key: "k".to_string(),
            needed: "admin".to_string(),
        });
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    }
}

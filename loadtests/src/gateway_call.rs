//! One gateway's request as an HTTP call: Keel's OpenAI-compatible
//! `POST /v1/chat/completions`, TensorZero's `POST /inference`, or the mock
//! OpenAI server asked directly (the baseline both are measured against).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use crate::error::Error;
use crate::openai_mock::ANSWER;
use crate::sender::Sender;
use crate::workload::QUESTIONS;

/// The output tokens every gateway lets the model use, as TensorZero's
/// load-test function sets (`max_tokens = 100`).
pub const MAX_TOKENS: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Gateway {
    Keel,
    #[value(name = "tensorzero")]
    TensorZero,
    Mock,
}

impl Gateway {
    pub fn label(self) -> &'static str {
        match self {
            Gateway::Keel => "Keel",
            Gateway::TensorZero => "TensorZero",
            Gateway::Mock => "mock alone",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Gateway::Keel | Gateway::Mock => "/v1/chat/completions",
            Gateway::TensorZero => "/inference",
        }
    }

    /// The body asking `model` (Keel: an endpoint; TensorZero: a function;
    /// the mock: any model name) `question`.
    pub fn body(self, model: &str, question: &str) -> serde_json::Value {
        let messages = serde_json::json!([{"role": "user", "content": question}]);
        match self {
            Gateway::Keel | Gateway::Mock => serde_json::json!({
                "model": model,
                "messages": messages,
                "max_tokens": MAX_TOKENS,
            }),
            Gateway::TensorZero => serde_json::json!({
                "function_name": model,
                "input": {"messages": messages},
            }),
        }
    }
}

/// Calls one gateway; clones share the connection pool.
#[derive(Clone)]
pub struct GatewayCall {
    client: reqwest::Client,
    url: Arc<str>,
    /// One body per question of the workload's rotation.
    bodies: Arc<[Bytes]>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl GatewayCall {
    /// `base_url` is the gateway's root, e.g. `http://127.0.0.1:7202`.
    pub fn new(
        gateway: Gateway,
        base_url: &str,
        model: &str,
        api_key: Option<&str>,
        timeout: Duration,
    ) -> Result<GatewayCall, Error> {
        // reqwest is built with rustls and no crypto provider of its own.
        keel_core::crypto::install_default_tls_provider();
        let client = reqwest::Client::builder()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .build()
            .map_err(|error| Error::InvalidArgument {
                flag: "--url",
                rule: format!("cannot build an HTTP client: {error}"),
            })?;
        let authorization = api_key
            .map(|key| HeaderValue::from_str(&format!("Bearer {key}")))
            .transpose()
            .map_err(|error| Error::InvalidArgument {
                flag: "--api-key",
                rule: format!("must be a valid header value: {error}"),
            })?;
        let bodies = QUESTIONS
            .iter()
            .map(|question| Bytes::from(gateway.body(model, question).to_string()))
            .collect();
        Ok(GatewayCall {
            client,
            url: format!("{}{}", base_url.trim_end_matches('/'), gateway.path()).into(),
            bodies,
            authorization,
            timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Sender for GatewayCall {
    async fn send(&mut self, index: u64) -> Option<String> {
        let body = self.bodies[(index % self.bodies.len() as u64) as usize].clone();
        let mut request = self
            .client
            .post(&*self.url)
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.timeout)
            .body(body);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Some(transport_failure(&error)),
        };
        let status = response.status();
        match response.bytes().await {
            Err(error) => Some(transport_failure(&error)),
            Ok(_) if !status.is_success() => Some(format!("HTTP {}", status.as_u16())),
            Ok(answer) if !carries_the_answer(&answer) => Some("WrongAnswer".to_string()),
            Ok(_) => None,
        }
    }
}

fn transport_failure(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "Timeout".to_string()
    } else if error.is_connect() {
        "Connect".to_string()
    } else {
        "Transport".to_string()
    }
}

/// Whether the mock's answer came back: a gateway that answered anything
/// else did not do the job being timed.
fn carries_the_answer(body: &[u8]) -> bool {
    body.windows(ANSWER.len())
        .any(|window| window == ANSWER.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_gateway_is_asked_in_its_own_shape() {
        let keel = Gateway::Keel.body("gw", "why?");
        assert_eq!(keel["model"], "gw");
        assert_eq!(keel["messages"][0]["content"], "why?");
        assert_eq!(keel["max_tokens"], MAX_TOKENS);
        let tensorzero = Gateway::TensorZero.body("function1", "why?");
        assert_eq!(tensorzero["function_name"], "function1");
        assert_eq!(tensorzero["input"]["messages"][0]["role"], "user");
    }

    #[test]
    fn only_a_body_with_the_mock_answer_counts() {
        let completion = crate::openai_mock::completion("m");
        assert!(carries_the_answer(completion.as_bytes()));
        assert!(!carries_the_answer(b"{\"content\": \"something else\"}"));
    }

    #[tokio::test]
    async fn calls_reach_the_mock_and_failures_are_named() {
        let mock = crate::openai_mock::MockOpenAi::default();
        let url = mock.serve_on_any_port().await.unwrap();
        let timeout = Duration::from_secs(5);

        let mut call = GatewayCall::new(Gateway::Mock, &url, "gpt", None, timeout).unwrap();
        assert_eq!(call.send(0).await, None);
        assert_eq!(call.send(1).await, None);
        assert_eq!(mock.completions(), 2);

        // TensorZero's path does not exist on the mock.
        let mut wrong = GatewayCall::new(Gateway::TensorZero, &url, "f", None, timeout).unwrap();
        assert_eq!(wrong.send(0).await.as_deref(), Some("HTTP 404"));

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let mut nowhere =
            GatewayCall::new(Gateway::Mock, &closed_url, "gpt", None, timeout).unwrap();
        assert_eq!(nowhere.send(0).await.as_deref(), Some("Connect"));
    }
}

//! The OpenAI generator on async I/O (`reqwest`, server-sent events parsed
//! by `eventsource-stream`): the same request, retries, failure classes
//! and answer as the blocking transport, awaited instead of blocked on, so
//! a remote answer holds a task and a socket, not a thread. At most
//! `max_concurrent_requests` are in flight; more are refused at once as
//! unavailable, which lets a chain fall back or the caller back off.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, Semaphore};

use super::{
    parse_retry_after, status_failure, Answer, AttemptFailure, FailureKind, OpenAiConfig,
    OpenAiConfigError, OpenAiGenerator, Retries, MAX_QUOTED_ERROR_BYTES, MAX_RESPONSE_BYTES,
};
use crate::{Generation, GenerationRequest, ModelError, RemoteGenerator};

/// The connection pool and the in-flight limit, shared by every model of
/// one configured server.
#[derive(Clone)]
pub(super) struct RemoteClient {
    client: reqwest::Client,
    in_flight: Arc<Semaphore>,
}

impl RemoteClient {
    /// `trusted`: the only roots trusted, when set (else the public ones).
    pub(super) fn new(
        config: &OpenAiConfig,
        trusted: Option<Vec<CertificateDer<'static>>>,
    ) -> Result<RemoteClient, OpenAiConfigError> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(trusted)?)
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .tcp_nodelay(true)
            .build()
            .map_err(|error| OpenAiConfigError::HttpClient(error.to_string()))?;
        Ok(RemoteClient {
            client,
            in_flight: Arc::new(Semaphore::new(config.max_concurrent_requests as usize)),
        })
    }
}

/// rustls on ring with the Mozilla roots (`webpki-roots`) or `trusted`,
/// HTTP/2 offered.
fn tls_config(
    trusted: Option<Vec<CertificateDer<'static>>>,
) -> Result<rustls::ClientConfig, OpenAiConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match trusted {
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
        Some(cas) => {
            let mut roots = rustls::RootCertStore::empty();
            let (_added, ignored) = roots.add_parsable_certificates(cas);
            if ignored > 0 {
                return Err(OpenAiConfigError::HttpClient(format!(
                    "{ignored} certificate(s) in ca_path are not valid CA certificates"
                )));
            }
            roots
        }
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| OpenAiConfigError::HttpClient(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Appends a piece to the answer and hands it over; `Break` when nobody
/// listens any more.
async fn push(answer: &mut Answer, piece: &str, deltas: &mpsc::Sender<String>) -> ControlFlow<()> {
    if piece.is_empty() {
        return ControlFlow::Continue(());
    }
    answer.text.push_str(piece);
    if deltas.send(piece.to_string()).await.is_err() {
        answer.cancelled = true;
        return ControlFlow::Break(());
    }
    ControlFlow::Continue(())
}

impl OpenAiGenerator {
    /// One HTTP exchange. `Ok` also when the caller cancelled mid-answer.
    async fn attempt_remote(
        &self,
        body: &[u8],
        answer: &mut Answer,
        deltas: &mpsc::Sender<String>,
    ) -> Result<(), AttemptFailure> {
        let mut call = self
            .remote
            .client
            .post(self.endpoint.as_str())
            .header("content-type", "application/json")
            .body(body.to_vec());
        if self.config.stream {
            call = call.header("accept", "text/event-stream");
        }
        if let Some(key) = &self.api_key {
            call = call.header("authorization", format!("Bearer {key}"));
        }
        let response = call
            .send()
            .await
            .map_err(|error| self.reqwest_failure(error))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(parse_retry_after);
            let quoted = response.bytes().await.unwrap_or_default();
            let quoted = &quoted[..quoted.len().min(MAX_QUOTED_ERROR_BYTES as usize)];
            let explanation = String::from_utf8_lossy(quoted).trim().to_string();
            return Err(status_failure(status, &explanation, retry_after));
        }
        if !self.config.stream {
            return self.read_whole_remote(response, answer, deltas).await;
        }
        let mut events = response.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let event = event.map_err(|error| {
                AttemptFailure::unavailable(format!("the answer broke off: {error}"))
            })?;
            if event.data.trim() == "[DONE]" {
                return Ok(());
            }
            for content in answer.read_chunk(&event.data)? {
                // Returning drops the response, closing the connection:
                // that is how the server learns to stop generating.
                if push(answer, &content, deltas).await.is_break() {
                    return Ok(());
                }
            }
        }
        // Some servers close without `[DONE]`; what came is the answer.
        Ok(())
    }

    async fn read_whole_remote(
        &self,
        response: reqwest::Response,
        answer: &mut Answer,
        deltas: &mpsc::Sender<String>,
    ) -> Result<(), AttemptFailure> {
        if response
            .content_length()
            .is_some_and(|length| length > MAX_RESPONSE_BYTES)
        {
            return Err(AttemptFailure::protocol(format!(
                "the answer is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.reqwest_failure(error))?;
        let text = answer.read_completion(&bytes)?;
        // A whole answer arrives at once: a Break has nothing left to stop.
        let _break_is_noted_in_answer = push(answer, &text, deltas).await;
        Ok(())
    }

    fn reqwest_failure(&self, error: reqwest::Error) -> AttemptFailure {
        if error.is_timeout() {
            return AttemptFailure::unavailable(format!(
                "timed out (connect timeout {} ms, request timeout {} ms)",
                self.config.connect_timeout_ms, self.config.request_timeout_ms
            ));
        }
        if error.is_connect() {
            return AttemptFailure {
                kind: FailureKind::Transient,
                message: format!("cannot reach the server: {error}"),
                retry_after: None,
            };
        }
        AttemptFailure::unavailable(format!("the exchange failed: {error}"))
    }

    async fn generate_with_retries(
        &self,
        request: &GenerationRequest,
        deltas: mpsc::Sender<String>,
    ) -> Result<Generation, ModelError> {
        let Ok(_in_flight) = self.remote.in_flight.clone().try_acquire_owned() else {
            return Err(ModelError::Unavailable(format!(
                "openai model `{}` at {}: {} requests already in flight (max_concurrent_requests)",
                self.config.model, self.endpoint, self.config.max_concurrent_requests
            )));
        };
        let body = self.encode(request)?;
        let mut retries = Retries::new(&self.config);
        loop {
            let mut answer = Answer::default();
            let failure = match self.attempt_remote(&body, &mut answer, &deltas).await {
                Ok(()) => return Ok(answer.into_generation(request)),
                Err(failure) => failure,
            };
            match retries.pause_after(&failure, &answer, &self.config.model) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(self.model_error_for(failure, retries.attempts)),
            }
        }
    }
}

impl RemoteGenerator for OpenAiGenerator {
    fn generate_remote<'a>(
        &'a self,
        request: &'a GenerationRequest,
        deltas: mpsc::Sender<String>,
    ) -> Pin<Box<dyn Future<Output = Result<Generation, ModelError>> + Send + 'a>> {
        Box::pin(self.generate_with_retries(request, deltas))
    }
}

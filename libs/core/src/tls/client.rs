//! What the clients a Keel process opens trust: the public web roots, and
//! the CA certificates of `[tls] ca_path` (a private CA between services).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use super::config::{certificates, read};
use super::TlsError;
use crate::channel::ChannelError;

#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// The extra CAs, PEM as read (what tonic takes) and parsed.
    extra_ca_pem: Option<Arc<Vec<u8>>>,
    extra_cas: Arc<Vec<CertificateDer<'static>>>,
}

impl ClientTls {
    /// The public web roots (webpki-roots) only.
    pub fn public_roots() -> ClientTls {
        ClientTls::default()
    }

    /// The public roots and every certificate in the PEM file at `path`;
    /// `setting` names where the path came from, for errors.
    pub fn trusting_pem_file(path: &Path, setting: &'static str) -> Result<ClientTls, TlsError> {
        let pem = read(setting, path)?;
        let extra_cas = certificates(&pem, setting, path)?;
        Ok(ClientTls {
            extra_ca_pem: Some(Arc::new(pem)),
            extra_cas: Arc::new(extra_cas),
        })
    }

    /// The extra CA certificates (none: public roots only).
    pub fn extra_cas(&self) -> &[CertificateDer<'static>] {
        &self.extra_cas
    }

    /// The rustls settings of a tonic channel to an `https://` URL.
    pub fn tonic_config(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().with_webpki_roots();
        match &self.extra_ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem.as_slice())),
            None => config,
        }
    }

    /// A tonic endpoint for `url`, speaking TLS when it is `https://`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, ChannelError> {
        let invalid = |reason: String| ChannelError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let endpoint =
            Endpoint::from_shared(url.to_string()).map_err(|error| invalid(error.to_string()))?;
        if endpoint.uri().scheme_str() == Some("https") {
            crate::crypto::install_default_tls_provider();
            endpoint
                .tls_config(self.tonic_config())
                .map_err(|error| invalid(error.to_string()))
        } else {
            Ok(endpoint)
        }
    }
}

//! The `[tls]` section and what it takes to load it: every file is read
//! once at start, and a bad one stops the process naming the setting.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::{ClientTls, ServerTls, Tls};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain the gRPC and admin ports present; with
    /// `key_path`, they accept TLS connections only.
    pub cert_path: Option<PathBuf>,
    /// PEM private key of `cert_path` (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<PathBuf>,
    /// PEM CA certificates that the clients this process opens (to the
    /// other services, span export) trust besides the public web roots.
    pub ca_path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },
    #[error("{setting}: cannot read {path}: {reason}")]
    File {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
}

impl TlsConfig {
    /// Whether the listeners speak TLS (the URLs to them are `https://`).
    pub fn serves_tls(&self) -> bool {
        given(&self.cert_path).is_some()
    }

    /// `https` when the listeners speak TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.serves_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// Reads every file the section names.
    pub fn load(&self) -> Result<Tls, TlsError> {
        Ok(Tls {
            server: self.server()?,
            client: self.client()?,
        })
    }

    /// What the clients trust: the public web roots, and `ca_path`'s
    /// certificates when set.
    pub fn client(&self) -> Result<ClientTls, TlsError> {
        match given(&self.ca_path) {
            None => Ok(ClientTls::public_roots()),
            Some(path) => ClientTls::trusting_pem_file(path, "tls.ca_path"),
        }
    }

    fn server(&self) -> Result<Option<ServerTls>, TlsError> {
        let (cert_path, key_path) = match (given(&self.cert_path), given(&self.key_path)) {
            (None, None) => return Ok(None),
            (Some(cert_path), Some(key_path)) => (cert_path, key_path),
            (Some(_), None) => return Err(missing_pair("tls.key_path", "tls.cert_path")),
            (None, Some(_)) => return Err(missing_pair("tls.cert_path", "tls.key_path")),
        };
        let cert_pem = read("tls.cert_path", cert_path)?;
        let key_pem = read("tls.key_path", key_path)?;
        let chain = certificates(&cert_pem, "tls.cert_path", cert_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| TlsError::File {
            setting: "tls.key_path",
            path: key_path.clone(),
            reason: format!("no PEM private key: {error}"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut http = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|error| TlsError::Setting {
                setting: "tls.key_path",
                reason: format!("the key does not fit the certificate: {error}"),
            })?;
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        // tonic's own rustls config is built from the process default.
        crate::crypto::install_default_tls_provider();
        Ok(Some(ServerTls {
            cert_pem: Arc::new(cert_pem),
            key_pem: Arc::new(key_pem),
            http: Arc::new(http),
        }))
    }
}

/// A path that is set and not empty: an empty one (`KEEL_TLS__CERT_PATH=""`
/// in the environment) unsets the file's.
fn given(path: &Option<PathBuf>) -> Option<&PathBuf> {
    path.as_ref().filter(|path| !path.as_os_str().is_empty())
}

fn missing_pair(missing: &'static str, present: &str) -> TlsError {
    TlsError::Setting {
        setting: missing,
        reason: format!("must be set with {present} (a certificate needs its key)"),
    }
}

pub(super) fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::File {
        setting,
        path: path.to_path_buf(),
        reason: error.to_string(),
    })
}

/// Every certificate in a PEM file; none is an error.
pub(super) fn certificates(
    pem: &[u8],
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::File {
        setting,
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(format!("invalid PEM: {error}")))?;
    if chain.is_empty() {
        return Err(invalid("no PEM certificate in it".to_string()));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_section_serves_plain_and_trusts_public_roots() {
        let config = TlsConfig::default();
        assert!(config.load().unwrap().server.is_none());
        assert_eq!(config.scheme(), "http");
    }

    #[test]
    fn a_certificate_without_its_key_is_refused_naming_the_setting() {
        let config = TlsConfig {
            cert_path: Some(PathBuf::from("/nonexistent/cert.pem")),
            ..TlsConfig::default()
        };
        let error = config.load().unwrap_err().to_string();
        assert!(error.starts_with("tls.key_path: must be set"), "{error}");
    }

    #[test]
    fn empty_paths_are_unset() {
        let config = TlsConfig {
            cert_path: Some(PathBuf::new()),
            key_path: Some(PathBuf::new()),
            ca_path: Some(PathBuf::new()),
        };
        assert!(!config.serves_tls());
        assert!(config.load().unwrap().server.is_none());
    }

    #[test]
    fn an_unreadable_ca_names_the_setting_and_the_file() {
        let config = TlsConfig {
            ca_path: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..TlsConfig::default()
        };
        let error = config.load().unwrap_err().to_string();
        assert!(
            error.starts_with("tls.ca_path: cannot read /nonexistent/ca.pem"),
            "{error}"
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "not a certificate\n").unwrap();
        let config = TlsConfig {
            ca_path: Some(file.path().to_path_buf()),
            ..TlsConfig::default()
        };
        let error = config.load().unwrap_err().to_string();
        assert!(error.contains("no PEM certificate"), "{error}");
    }
}

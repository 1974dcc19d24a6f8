//! A certificate authority made for one test: a CA certificate and a
//! server certificate it signed for `127.0.0.1` and `localhost`, written as
//! PEM files the way an operator would hand them to Keel.

use std::path::PathBuf;

use keel_core::tls::{ClientTls, ServerTls, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Keel test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        server_params
            .distinguished_name
            .push(DnType::CommonName, "keel test server");
        let server_key = KeyPair::generate().unwrap();
        let server = server_params.signed_by(&server_key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        TestCa { dir }
    }

    /// The CA certificate, as a client trusts it.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A `[tls]` section: the server certificate on every listener, this
    /// CA trusted by every client.
    pub fn tls_config(&self) -> TlsConfig {
        TlsConfig {
            cert_path: Some(self.dir.path().join("server.pem")),
            key_path: Some(self.dir.path().join("server.key")),
            ca_path: Some(self.ca_path()),
        }
    }

    /// What a listener presents.
    pub fn server(&self) -> ServerTls {
        self.tls_config()
            .load()
            .unwrap()
            .server
            .expect("a certificate and key are configured")
    }

    /// A client that trusts this CA.
    pub fn client(&self) -> ClientTls {
        ClientTls::trusting_pem_file(&self.ca_path(), "ca_path").unwrap()
    }
}

impl Default for TestCa {
    fn default() -> TestCa {
        TestCa::new()
    }
}

//! TLS for every listener and every client Keel opens, on rustls with
//! ring. One `[tls]` section: the certificate and key the gRPC and admin
//! ports present (both ports speak TLS only when they are set), and the
//! CA certificates this process's clients trust besides the public web
//! roots (a private CA between the services).

mod client;
mod config;
mod listener;

pub use client::ClientTls;
pub use config::{TlsConfig, TlsError};
pub use listener::TlsListener;

use std::sync::Arc;

use tonic::transport::{Identity, ServerTlsConfig};

/// What a listener presents: the loaded certificate chain and key.
#[derive(Clone)]
pub struct ServerTls {
    cert_pem: Arc<Vec<u8>>,
    key_pem: Arc<Vec<u8>>,
    /// For the admin HTTP port (HTTP/1.1); the gRPC port builds its own
    /// from the same PEM (tonic offers h2 by ALPN).
    http: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ServerTls { .. }")
    }
}

impl ServerTls {
    /// The gRPC port's TLS.
    pub fn grpc(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(
            self.cert_pem.as_slice(),
            self.key_pem.as_slice(),
        ))
    }

    /// The admin HTTP port's TLS.
    pub fn http(&self) -> Arc<rustls::ServerConfig> {
        self.http.clone()
    }
}

/// A process's TLS, loaded from its `[tls]` section.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// `None`: the listeners speak plain HTTP/2 and HTTP/1.1.
    pub server: Option<ServerTls>,
    pub client: ClientTls,
}

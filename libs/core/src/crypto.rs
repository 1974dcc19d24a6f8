//! One TLS crypto backend for the process: rustls on ring, which ureq and
//! the remote generators' reqwest clients use. A reqwest client built
//! without TLS settings of its own (the OTLP/HTTP span exporter's) takes the
//! process's default provider, so it must be installed before one is built.

use std::sync::Once;

/// Installs ring as the process's rustls provider; later calls do nothing.
pub fn install_default_tls_provider() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // Err: another provider was installed first, which serves as well.
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_provider_is_installed_once() {
        install_default_tls_provider();
        install_default_tls_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}

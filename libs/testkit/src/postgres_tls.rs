//! Postgres over TLS for tests: a front on 127.0.0.1:0 that speaks
//! Postgres's TLS negotiation (answers the client's SSLRequest with `S`,
//! then the TLS handshake with the test CA's certificate) and relays the
//! decrypted protocol to the local Postgres. The server on this machine
//! runs without TLS and is shared with every other test; this puts the
//! TLS endpoint a managed database would have in front of it instead of
//! reconfiguring it. Clients that do not ask for TLS are turned away, as
//! a `hostssl`-only server does.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use keel_core::tls::ServerTls;
use keel_core::CancellationToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Length 8, then the SSLRequest code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

pub struct PostgresTlsFront {
    address: SocketAddr,
    /// `host:port` of the server behind, as database URLs spell it.
    upstream: String,
    sessions: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl PostgresTlsFront {
    /// Relays to the Postgres server of `server_url`, presenting `tls`.
    pub async fn start(tls: &ServerTls, server_url: &str) -> PostgresTlsFront {
        let authority = server_url
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
            .unwrap_or_else(|| panic!("{server_url} is not a postgres url"));
        let upstream = authority.rsplit('@').next().unwrap().to_string();
        let upstream_address = tokio::net::lookup_host(upstream.as_str())
            .await
            .unwrap()
            .next()
            .unwrap();
        let mut config = (*tls.http()).clone();
        config.alpn_protocols.clear();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let sessions = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let stopped = shutdown.clone();
        let counted = sessions.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let _ = relay(client, acceptor, upstream_address, &counted).await;
                });
            }
        });
        PostgresTlsFront {
            address,
            upstream,
            sessions,
            shutdown,
        }
    }

    /// `url` (a database on the upstream server) through this front, with
    /// `sslmode` and the CA to verify against.
    pub fn url(&self, url: &str, sslmode: &str, ca_path: &Path) -> String {
        let through = url.replacen(&self.upstream, &self.address.to_string(), 1);
        assert_ne!(through, url, "{url} is not on {}", self.upstream);
        let separator = if through.contains('?') { '&' } else { '?' };
        format!(
            "{through}{separator}sslmode={sslmode}&sslrootcert={}",
            ca_path.display()
        )
    }

    /// TLS sessions completed so far.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }
}

impl Drop for PostgresTlsFront {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn relay(
    mut client: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    upstream: SocketAddr,
    sessions: &AtomicUsize,
) -> std::io::Result<()> {
    let mut request = [0u8; 8];
    client.read_exact(&mut request).await?;
    if request != SSL_REQUEST {
        // A plaintext startup: refused, as by a TLS-only server.
        return Ok(());
    }
    client.write_all(b"S").await?;
    let mut client = acceptor.accept(client).await?;
    sessions.fetch_add(1, Ordering::SeqCst);
    let mut server = TcpStream::connect(upstream).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

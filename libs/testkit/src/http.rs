//! A plain HTTP/1.1 GET against a service's admin port, for the tests that
//! read `/healthz`, `/metrics` or a listing as text.

use std::io::{Read, Write};
use std::net::SocketAddr;

/// The whole response (status line, headers and body) of `GET path`, read
/// on a blocking thread until the server closes the connection.
pub async fn http_get(address: SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap()
}

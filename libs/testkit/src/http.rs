//! Plain HTTP/1.1 against a service's ports, for the tests that read
//! `/healthz` or `/metrics`, post JSON, or speak gRPC-Web by hand as a
//! browser does. Every request is sent with `Connection: close` on a
//! blocking thread, and the answer read until the server closes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// No test waits longer than this for an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// The status line and headers, lowercased.
    pub headers: String,
    /// De-chunked when the server sent it in chunks.
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A whole HTTP/1.1 request: `headers` besides Host, Content-Length and
/// Connection.
pub fn http_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends `request` and parses the answer; `None` when nothing listens at
/// `address` or the answer is not HTTP.
pub async fn try_http_exchange(address: SocketAddr, request: Vec<u8>) -> Option<HttpResponse> {
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect_timeout(&address, READ_TIMEOUT).ok()?;
        stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
        stream.write_all(&request).ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).ok()?;
        parse(&response)
    })
    .await
    .ok()?
}

/// `try_http_exchange`, panicking when there is no HTTP answer.
pub async fn http_exchange(address: SocketAddr, request: Vec<u8>) -> HttpResponse {
    try_http_exchange(address, request)
        .await
        .unwrap_or_else(|| panic!("no HTTP answer from {address}"))
}

/// The whole response (status line, headers and body) of `GET path`.
pub async fn http_get(address: SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap()
}

fn parse(response: &[u8]) -> Option<HttpResponse> {
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")?;
    let headers = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = headers.split(' ').nth(1)?.parse().ok()?;
    let mut body = response[split + 4..].to_vec();
    if headers.contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut chunked: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = chunked.windows(2).position(|window| window == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&chunked[..line_end]).ok()?, 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        let start = line_end + 2;
        body.extend_from_slice(chunked.get(start..start + size)?);
        chunked = chunked.get(start + size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_answers_parse() {
        let plain = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
        let parsed = parse(plain).unwrap();
        assert_eq!((parsed.status, parsed.text().as_str()), (404, "no"));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let parsed = parse(chunked).unwrap();
        assert_eq!(parsed.body, b"abcde");
        assert!(parsed.headers.contains("transfer-encoding: chunked"));
        assert!(parse(b"garbage").is_none());
    }
}

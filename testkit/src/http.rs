//! A small HTTP/1.1 client on a tokio socket, so the tests pull in no HTTP
//! client crate: one request per connection (`Connection: close`, so the reply
//! ends where the stream does), the head parsed by hand, a chunked body
//! decoded. Plus the two requests the tests make most: a JSON request with an
//! optional bearer token, and a function call as the npm `ConvexHttpClient`
//! makes it.

use std::net::{IpAddr, SocketAddr};

use livebase_schema::Value;
use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use crate::PATIENCE;

/// A response: status, headers (names lowercased) and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as sent (after undoing chunked transfer encoding).
    pub bytes: Vec<u8>,
    /// The body as JSON, `Json::Null` if it is not JSON.
    pub body: Json,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; fails the test if it is not JSON.
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the
/// whole response.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let stream = TcpStream::connect(addr).await.expect("connecting");
    http_on(stream, method, path, headers, body).await
}

/// As [`http`], from the local address `from` (any of 127.0.0.0/8 reaches a
/// server on 127.0.0.1): another client address, for per-address caps.
pub async fn http_from(from: IpAddr, addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("binding the client address");
    let stream = socket.connect(addr).await.expect("connecting");
    http_on(stream, method, path, &[], b"").await
}

/// A JSON request as the application's clients send it: `Content-Type:
/// application/json` (whatever the method), the token as `Authorization:
/// Bearer`, and `headers` besides.
pub async fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Json>,
) -> HttpResponse {
    let body = body.map(Json::to_string).unwrap_or_default();
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(bearer) = &bearer {
        all.push(("Authorization", bearer));
    }
    all.push(("Content-Type", "application/json"));
    http(addr, method, path, &all, body.as_bytes()).await
}

/// Sends one request (`Connection: close`) on `stream` and reads the whole
/// response.
pub async fn http_on(
    stream: TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let addr = stream.peer_addr().expect("a connected stream");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    http_raw(stream, &raw).await
}

/// Writes `request` as it is (a head announcing more body than it carries,
/// say) and reads the whole response, until the server closes.
pub async fn http_raw(mut stream: TcpStream, request: &[u8]) -> HttpResponse {
    let exchange = async {
        // A server may answer (413) and close before reading a large body:
        // a failed write is fine as long as the response can be read.
        let _ = stream.write_all(request).await;
        let mut raw = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                Err(e) if raw.is_empty() => panic!("reading the response: {e}"),
                Err(_) => break, // reset after a complete answer
            }
        }
        raw
    };
    let raw = timeout(PATIENCE, exchange)
        .await
        .expect("an HTTP response in time");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = std::str::from_utf8(&raw[..split]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status in {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut bytes = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        bytes = dechunk(&bytes);
    }
    let body = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
    HttpResponse {
        status,
        headers,
        bytes,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).expect("a chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("a hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// `POST` a JSON body; the status and the JSON reply.
pub async fn post_json(addr: SocketAddr, path: &str, body: &Json) -> (u16, Json) {
    let response = http_json(addr, "POST", path, None, &[], Some(body)).await;
    (response.status, response.json())
}

/// Calls a function as the npm `ConvexHttpClient` does, with `token` if one
/// is given: `POST /api/<kind> {path, format, args: [args]}`; the status and
/// the JSON reply. `args` goes on the wire as it is (malformed included).
pub async fn call_json(
    addr: SocketAddr,
    kind: &str,
    path: &str,
    token: Option<&str>,
    args: Json,
) -> (u16, Json) {
    let body = serde_json::json!({
        "path": path,
        "format": "convex_encoded_json",
        "args": [args],
    });
    let response = http_json(
        addr,
        "POST",
        &format!("/api/{kind}"),
        token,
        &[],
        Some(&body),
    )
    .await;
    (response.status, response.json())
}

/// [`call_json`] without a token, with arguments that are a value.
pub async fn call(addr: SocketAddr, kind: &str, path: &str, fields: Value) -> (u16, Json) {
    call_json(addr, kind, path, None, fields.to_json()).await
}

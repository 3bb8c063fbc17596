//! What the end-to-end auth and permission tests share: the real server on
//! port 0 over a temporary data folder, a forty-line HTTP/1.1 client on a
//! tokio socket (so the tests pull in no HTTP client crate), function calls
//! through the HTTP API, and a sync-protocol WebSocket client speaking the
//! message types of `livebase_schema::protocol`.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use livebase_runtime::server::{serve, RunningServer, ServerOptions};
use livebase_schema::protocol::{
    AuthenticationToken, ClientMessage, FunctionError, QueryId, QuerySetModification,
    ServerMessage, SessionId, StateModification,
};
use livebase_schema::Value;
use serde_json::{json, Value as Json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// How long any one reply may take before a test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The password every test user signs up with.
pub const PASSWORD: &str = "correct horse battery";

/// The application of `functions/`, served on a free port over a fresh data
/// folder (removed on drop).
pub struct TestServer {
    pub server: RunningServer,
    pub dir: TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().to_path_buf(),
            ..ServerOptions::default()
        };
        let server = serve(livebase_functions::app(), options)
            .await
            .expect("server starts");
        TestServer { server, dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Json) -> Reply {
        http(self.addr(), "POST", path, token, Some(body)).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        http(self.addr(), "GET", path, token, None).await
    }

    /// Signs up `email` (with [`PASSWORD`]) and returns the session.
    pub async fn sign_up(&self, email: &str, name: &str) -> User {
        let reply = self
            .post(
                "/api/auth/sign-up/email",
                None,
                json!({"email": email, "password": PASSWORD, "name": name}),
            )
            .await;
        assert_eq!(reply.status, 200, "sign-up of {email}: {}", reply.body);
        User::from_reply(&reply, email)
    }

    /// Signs up `email` and follows the verification link mailed to it, as
    /// a person would: the user may then accept invitations.
    pub async fn sign_up_verified(&self, email: &str, name: &str) -> User {
        let user = self.sign_up(email, name).await;
        self.verify_email(&user.email).await;
        user
    }

    /// Follows the newest verification link in the outbox mailed to `email`
    /// (waiting for the mail job) and expects it to work.
    pub async fn verify_email(&self, email: &str) {
        let link = outbox_link(self.data_dir(), email, "/api/auth/verify-email?").await;
        let reply = self.get(&path_of(&link), None).await;
        assert_eq!(reply.status, 200, "following {link}: {}", reply.body);
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/api/auth/sign-in/email",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }

    /// Calls a function through the HTTP API: its value, or its error's code
    /// and message.
    pub async fn call(&self, kind: &str, path: &str, token: Option<&str>, args: Json) -> Outcome {
        let reply = self
            .post(
                &format!("/api/{kind}"),
                token,
                json!({"path": path, "format": "convex_encoded_json", "args": [args]}),
            )
            .await;
        match (reply.status, reply.body["status"].as_str()) {
            (200, Some("success")) => Ok(reply.body["value"].clone()),
            (560, Some("error")) => Err(Failure {
                code: reply.body["errorData"]["code"]
                    .as_str()
                    .unwrap_or("(no code)")
                    .to_string(),
                message: reply.body["errorMessage"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            }),
            _ => panic!(
                "{kind} {path}: unexpected reply {} {}",
                reply.status, reply.body
            ),
        }
    }

    pub async fn query(&self, path: &str, user: &User, args: Json) -> Outcome {
        self.call("query", path, Some(&user.token), args).await
    }

    pub async fn mutation(&self, path: &str, user: &User, args: Json) -> Outcome {
        self.call("mutation", path, Some(&user.token), args).await
    }

    /// Every row of a table, read on the server's own database.
    pub async fn rows(&self, table: &'static str) -> Vec<Json> {
        self.server
            .state
            .executor
            .database()
            .query(move |tx| tx.query(table).collect())
            .await
            .expect("table reads")
            .value
            .iter()
            .map(Value::to_json)
            .collect()
    }
}

/// A signed-up user and their token.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
}

impl User {
    pub fn from_reply(reply: &Reply, email: &str) -> User {
        User {
            id: reply.body["user"]["id"]
                .as_str()
                .expect("user.id")
                .to_string(),
            email: email.to_string(),
            token: reply.body["token"].as_str().expect("token").to_string(),
        }
    }
}

/// A function's error as the HTTP API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

pub type Outcome = Result<Json, Failure>;

/// The code of a failed call (panics on success).
pub fn code(outcome: &Outcome) -> &str {
    match outcome {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(f) => &f.code,
    }
}

/// An HTTP reply.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Json::Null` if it is not JSON).
    pub body: Json,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The path and query of a link (`https://host/p?q` → `/p?q`): mailed links
/// point at the app's URL, which forwards `/api` to the server.
pub fn path_of(link: &str) -> String {
    let after_scheme = link.split_once("://").map_or(link, |(_, rest)| rest);
    after_scheme
        .find('/')
        .map_or("/".to_string(), |i| after_scheme[i..].to_string())
}

/// Undoes quoted-printable (what lettre uses for text parts with long lines).
pub fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first link containing `marker` in a mail text, up to whitespace.
pub fn link_in(text: &str, marker: &str) -> Option<String> {
    let at = text.find(marker)?;
    let start = text[..at]
        .rfind(|c: char| c.is_whitespace() || c == '"')
        .map_or(0, |i| i + 1);
    let end = text[at..]
        .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .map_or(text.len(), |i| at + i);
    Some(text[start..end].to_string())
}

/// The link containing `marker` in the newest outbox mail to `to`, waiting
/// (up to [`PATIENCE`]) for the job that writes it.
pub async fn outbox_link(data_dir: &Path, to: &str, marker: &str) -> String {
    let outbox = data_dir.join("outbox");
    let started = Instant::now();
    loop {
        let mut files: Vec<_> = std::fs::read_dir(&outbox)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for file in files.iter().rev() {
            let raw = std::fs::read_to_string(file).unwrap_or_default();
            let addressed = raw
                .lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("To: {to}")));
            if !addressed {
                continue;
            }
            if let Some(link) = link_in(&decode_quoted_printable(&raw), marker) {
                return link;
            }
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no mail to {to} with a link containing {marker} in {}",
            outbox.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`, so the
/// reply ends where the stream does).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Json>,
) -> Reply {
    http_with_headers(addr, method, path, token, &[], body).await
}

/// [`http`] with extra request headers.
pub async fn http_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Json>,
) -> Reply {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        stream.write_all(request.as_bytes()).await.expect("sends");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("reads");
        raw
    };
    let raw = tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("the server answers in time");
    let text = String::from_utf8(raw).expect("a UTF-8 reply");
    let (head, payload) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let payload = if chunked {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    Reply {
        status,
        headers,
        body: serde_json::from_str(&payload).unwrap_or(Json::Null),
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

/// A sync-protocol connection.
pub struct Ws {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    query_set: u32,
    identity: u32,
    /// Messages read by [`Ws::authenticate`], handed out again by [`Ws::next`].
    unread: std::collections::VecDeque<ServerMessage>,
}

impl Ws {
    /// Connects and sends `Connect`.
    pub async fn connect(addr: SocketAddr) -> Ws {
        Ws::connect_as(addr, SessionId::random()).await
    }

    /// Connects and sends `Connect` with this session id.
    pub async fn connect_as(addr: SocketAddr, session_id: SessionId) -> Ws {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/sync"))
            .await
            .expect("websocket connects");
        let mut ws = Ws {
            socket,
            query_set: 0,
            identity: 0,
            unread: std::collections::VecDeque::new(),
        };
        ws.send(ClientMessage::Connect {
            session_id,
            connection_count: 0,
            last_close_reason: Some("InitialConnect".into()),
            max_observed_timestamp: None,
            client_ts: None,
        })
        .await;
        ws
    }

    pub async fn send(&mut self, msg: ClientMessage) {
        self.socket
            .send(Message::text(msg.to_text()))
            .await
            .expect("sends");
    }

    /// The next message other than `Ping`, within [`PATIENCE`].
    pub async fn next(&mut self) -> ServerMessage {
        self.next_before(Instant::now() + PATIENCE).await
    }

    /// The next message other than `Ping`; the test fails at `deadline`
    /// (pings do not extend it, so a missing push cannot hang the test).
    async fn next_before(&mut self, deadline: Instant) -> ServerMessage {
        if let Some(msg) = self.unread.pop_front() {
            return msg;
        }
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("a message in time")
                .expect("the connection is open")
                .expect("a frame");
            if let Message::Text(text) = frame {
                match ServerMessage::from_text(text.as_str()).expect("a server message") {
                    ServerMessage::Ping => continue,
                    msg => return msg,
                }
            }
        }
    }

    /// Sends `Authenticate` with a token; the server answers with a Transition
    /// (accepted) or an `AuthError` (refused), which is returned. A Transition
    /// may carry the queries' new results, so it is also left for
    /// [`Ws::next_result`] to read.
    pub async fn authenticate(&mut self, token: &str) -> ServerMessage {
        let base_version = self.identity;
        self.send(ClientMessage::Authenticate {
            base_version,
            token: AuthenticationToken::User(token.to_string()),
        })
        .await;
        let reply = self.next().await;
        if matches!(reply, ServerMessage::Transition { .. }) {
            self.identity += 1;
            self.unread.push_back(reply.clone());
        }
        reply
    }

    /// Adds a query to the query set.
    pub async fn subscribe(&mut self, query_id: u32, path: &str, args: Json) {
        let base_version = self.query_set;
        self.query_set += 1;
        self.send(ClientMessage::ModifyQuerySet {
            base_version,
            new_version: self.query_set,
            modifications: vec![QuerySetModification::Add {
                query_id: QueryId(query_id),
                udf_path: path.to_string(),
                args: vec![Value::from_json(&args, "args").expect("convex JSON")],
                journal: None,
                component_path: None,
            }],
        })
        .await;
    }

    /// The next result pushed for `query_id`, skipping Transitions that do not
    /// mention it.
    pub async fn next_result(&mut self, query_id: u32) -> Result<Json, FunctionError> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let ServerMessage::Transition { modifications, .. } =
                self.next_before(deadline).await
            {
                for m in modifications {
                    match m {
                        StateModification::QueryUpdated {
                            query_id: id,
                            value,
                            ..
                        } if id.0 == query_id => return Ok(value.to_json()),
                        StateModification::QueryFailed {
                            query_id: id,
                            error,
                            ..
                        } if id.0 == query_id => return Err(error),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The `errorData.code` of a pushed query failure.
pub fn error_code(error: &FunctionError) -> String {
    error
        .data
        .as_ref()
        .and_then(|d| d.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("(no code)")
        .to_string()
}

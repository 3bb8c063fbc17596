//! A lean sync-protocol client: one WebSocket, the protocol types of
//! `livebase_schema::protocol`, nothing else — so the figures are the server's.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use livebase_schema::protocol::{
    AuthenticationToken, ClientMessage, QueryId, QuerySetModification, RequestId, ServerMessage,
    SessionId,
};
use livebase_schema::Value;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct Conn {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    query_set: u32,
    next_request: u32,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Conn {
    pub async fn connect(base: &str) -> Result<Conn, BoxError> {
        let url = format!("{}/api/sync", base.replacen("http://", "ws://", 1));
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(small_buffers()), true).await?;
        let mut c = Conn {
            ws,
            query_set: 0,
            next_request: 0,
        };
        c.send(ClientMessage::Connect {
            session_id: SessionId::random(),
            connection_count: 0,
            last_close_reason: Some("InitialConnect".into()),
            max_observed_timestamp: None,
            client_ts: None,
        })
        .await?;
        Ok(c)
    }

    pub async fn send(&mut self, msg: ClientMessage) -> Result<(), BoxError> {
        self.ws.send(Message::Text(msg.to_text().into())).await?;
        Ok(())
    }

    /// Adds queries `(query_id, org, tag)` of `bench:list` in one ModifyQuerySet.
    pub async fn subscribe(
        &mut self,
        queries: &[(u32, String, Option<f64>)],
    ) -> Result<(), BoxError> {
        let base = self.query_set;
        self.query_set += 1;
        let modifications = queries
            .iter()
            .map(|(id, org, tag)| QuerySetModification::Add {
                query_id: QueryId(*id),
                udf_path: "bench:list".into(),
                args: vec![list_args(org, *tag)],
                journal: None,
                component_path: None,
            })
            .collect();
        self.send(ClientMessage::ModifyQuerySet {
            base_version: base,
            new_version: base + 1,
            modifications,
        })
        .await
    }

    /// Sends `bench:add` and returns its request id (the response is not awaited).
    pub async fn add(&mut self, org: &str, n: f64) -> Result<RequestId, BoxError> {
        let request_id = RequestId(self.next_request);
        self.next_request += 1;
        let mut args = org_args(org);
        if let Value::Object(o) = &mut args {
            o.insert("n".into(), Value::Float64(n));
        }
        self.send(ClientMessage::Mutation {
            request_id,
            udf_path: "bench:add".into(),
            args: vec![args],
            component_path: None,
        })
        .await?;
        Ok(request_id)
    }

    /// Reads until the response to mutation `id` (what comes before it, a
    /// read-your-writes Transition say, is dropped); an error if it failed.
    pub async fn await_response(&mut self, id: RequestId) -> Result<(), BoxError> {
        loop {
            if let ServerMessage::MutationResponse {
                request_id, result, ..
            } = self.recv(Duration::from_secs(60)).await?
            {
                if request_id == id {
                    return result
                        .map(drop)
                        .map_err(|e| format!("mutation {}: {}", id.0, e.message).into());
                }
            }
        }
    }

    /// The next protocol message (pings skipped), or an error after `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Result<ServerMessage, BoxError> {
        loop {
            let msg = ServerMessage::from_text(&self.recv_text(limit).await?)?;
            if !matches!(msg, ServerMessage::Ping) {
                return Ok(msg);
            }
        }
    }

    /// The next text frame, unparsed (pings included), or an error after `limit`.
    pub async fn recv_text(&mut self, limit: Duration) -> Result<String, BoxError> {
        loop {
            let frame = tokio::time::timeout(limit, self.ws.next())
                .await
                .map_err(|_| "timed out waiting for the server")?
                .ok_or("the server closed the connection")??;
            if let Message::Text(text) = frame {
                return Ok(text.as_str().to_owned());
            }
        }
    }

    /// Waits for a Transition that ends at query set version `version`.
    pub async fn await_query_set(&mut self, version: u32, limit: Duration) -> Result<(), BoxError> {
        loop {
            if let ServerMessage::Transition { end_version, .. } = self.recv(limit).await? {
                if end_version.query_set >= version {
                    return Ok(());
                }
            }
        }
    }

    /// Sends `bench:add` and waits for its MutationResponse (read leanly: the
    /// type, the request id and the outcome).
    pub async fn add_and_wait(&mut self, org: &str, n: f64) -> Result<(), BoxError> {
        let id = self.add(org, n).await?;
        loop {
            let text = self.recv_text(Duration::from_secs(30)).await?;
            let frame: LeanResponse = serde_json::from_str(&text)?;
            if frame.kind == "MutationResponse" && frame.request_id == Some(id.0) {
                return match frame.success {
                    Some(true) => Ok(()),
                    _ => Err(format!("bench:add failed: {}", frame.result).into()),
                };
            }
        }
    }

    /// Sends `count` `bench:add`s numbered from `first`, keeping `depth`
    /// in flight (the next is sent as each answer comes, as a client that
    /// does not wait does), and waits for every answer.
    pub async fn add_pipelined(
        &mut self,
        org: &str,
        first: f64,
        count: usize,
        depth: usize,
    ) -> Result<(), BoxError> {
        let mut sent = 0;
        let mut answered = 0;
        while sent < count.min(depth.max(1)) {
            self.add(org, first + sent as f64).await?;
            sent += 1;
        }
        while answered < count {
            let text = self.recv_text(Duration::from_secs(30)).await?;
            let frame: LeanResponse = serde_json::from_str(&text)?;
            if frame.kind != "MutationResponse" {
                continue;
            }
            if frame.success != Some(true) {
                return Err(format!("bench:add failed: {}", frame.result).into());
            }
            answered += 1;
            if sent < count {
                self.add(org, first + sent as f64).await?;
                sent += 1;
            }
        }
        Ok(())
    }

    pub fn query_set(&self) -> u32 {
        self.query_set
    }

    /// Sends one `ModifyQuerySet` (not awaited); returns its new version.
    pub async fn modify(
        &mut self,
        modifications: Vec<QuerySetModification>,
    ) -> Result<u32, BoxError> {
        let base = self.query_set;
        self.query_set += 1;
        self.send(ClientMessage::ModifyQuerySet {
            base_version: base,
            new_version: base + 1,
            modifications,
        })
        .await?;
        Ok(self.query_set)
    }

    /// Sends `Authenticate` with a user's token and waits for the Transition
    /// that moves the identity version past `base_version`.
    pub async fn authenticate(
        &mut self,
        base_version: u32,
        token: &str,
        limit: Duration,
    ) -> Result<(), BoxError> {
        self.send(ClientMessage::Authenticate {
            base_version,
            token: AuthenticationToken::User(token.to_string()),
        })
        .await?;
        loop {
            match self.recv(limit).await? {
                ServerMessage::Transition { end_version, .. }
                    if end_version.identity > base_version =>
                {
                    return Ok(())
                }
                ServerMessage::AuthError { error, .. } => {
                    return Err(format!("Authenticate failed: {error}").into())
                }
                _ => {}
            }
        }
    }

    /// Sends a mutation and returns its request id (the response is not
    /// awaited).
    pub async fn send_mutation(&mut self, path: &str, args: Value) -> Result<RequestId, BoxError> {
        let request_id = RequestId(self.next_request);
        self.next_request += 1;
        self.send(ClientMessage::Mutation {
            request_id,
            udf_path: path.into(),
            args: vec![args],
            component_path: None,
        })
        .await?;
        Ok(request_id)
    }

    /// Runs a mutation and waits for its response.
    pub async fn mutate(&mut self, path: &str, args: Value) -> Result<(), BoxError> {
        let request_id = self.send_mutation(path, args).await?;
        loop {
            if let ServerMessage::MutationResponse {
                request_id: id,
                result,
                ..
            } = self.recv(Duration::from_secs(60)).await?
            {
                if id == request_id {
                    return result
                        .map(|_| ())
                        .map_err(|e| format!("{path} failed: {}", e.message).into());
                }
            }
        }
    }
}

/// An `Add` of `path` with `args`.
pub fn add(query_id: u32, path: &str, args: Value) -> QuerySetModification {
    QuerySetModification::Add {
        query_id: QueryId(query_id),
        udf_path: path.into(),
        args: vec![args],
        journal: None,
        component_path: None,
    }
}

/// Signs up (`POST /api/auth/sign-up/email`, one plain HTTP/1.1 request on
/// loopback) or, with `sign_in`, signs in again for a second session; returns
/// the token.
pub async fn sign_up(base: &str, email: &str, sign_in: bool) -> Result<String, BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let (path, body) = if sign_in {
        (
            "/api/auth/sign-in/email",
            serde_json::json!({"email": email, "password": "bench-password-1"}),
        )
    } else {
        (
            "/api/auth/sign-up/email",
            serde_json::json!({"email": email, "password": "bench-password-1", "name": "Bench"}),
        )
    };
    let body = body.to_string();
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (_, reply) = text.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    let json: serde_json::Value =
        serde_json::from_str(reply.trim()).map_err(|e| format!("{path}: {e} in {reply:?}"))?;
    json.get("token")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("{path} gave no token: {reply}").into())
}

/// Buffers of 4 KiB each way, like the server's: tungstenite's 128 KiB
/// defaults cost every one of thousands of benchmark clients a large zeroed
/// buffer, and the clients share the machine with the server.
pub fn small_buffers() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
}

/// The parts of a server frame the benchmark checks. serde still reads the
/// whole frame (so it must be valid JSON) but keeps only these fields, which
/// is what a lean client holding one query's result would do; decoding every
/// document into a `Value` would make the 1,000 fan-out clients, which share
/// the two cores with the server, the thing measured.
#[derive(Deserialize)]
struct LeanFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    modifications: Vec<LeanModification>,
}

#[derive(Deserialize)]
struct LeanResponse {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "requestId", default)]
    request_id: Option<u32>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct LeanModification {
    #[serde(default)]
    value: Option<Vec<LeanDoc>>,
}

#[derive(Deserialize)]
struct LeanDoc {
    n: f64,
}

/// For a Transition frame, the `n` of the newest document of each updated
/// `bench:list` result in it; `None` for any other frame.
pub fn lean_newest(text: &str) -> Result<Option<Vec<f64>>, BoxError> {
    let frame: LeanFrame = serde_json::from_str(text)?;
    if frame.kind != "Transition" {
        return Ok(None);
    }
    Ok(Some(
        frame
            .modifications
            .into_iter()
            .filter_map(|m| m.value?.first().map(|d| d.n))
            .collect(),
    ))
}

/// Whether a Transition frame updates a result holding a document whose `n`
/// is `n` (read leanly, as [`lean_newest`] reads).
pub fn lean_holds(text: &str, n: f64) -> Result<bool, BoxError> {
    let frame: LeanFrame = serde_json::from_str(text)?;
    Ok(frame.kind == "Transition"
        && frame.modifications.iter().any(|m| {
            m.value
                .as_ref()
                .is_some_and(|docs| docs.iter().any(|d| d.n == n))
        }))
}

fn org_args(org: &str) -> Value {
    livebase_schema::obj! { "organizationId" => org }
}

fn list_args(org: &str, tag: Option<f64>) -> Value {
    let mut args = org_args(org);
    if let (Value::Object(o), Some(tag)) = (&mut args, tag) {
        o.insert("tag".into(), Value::Float64(tag));
    }
    args
}

/// A bare HTTP/1.1 client for `POST /api/mutation`, as the npm
/// `ConvexHttpClient` calls it: one request at a time, either on a fresh
/// connection per call (`Connection: close`) or on one kept-alive connection.
pub struct HttpCaller {
    addr: String,
    token: Option<String>,
    /// The kept-alive connection, when calls share one.
    kept: Option<tokio::io::BufReader<TcpStream>>,
    keep_alive: bool,
}

impl HttpCaller {
    pub fn new(base: &str, token: Option<String>, keep_alive: bool) -> HttpCaller {
        HttpCaller {
            addr: base.trim_start_matches("http://").to_string(),
            token,
            kept: None,
            keep_alive,
        }
    }

    /// Calls mutation `path` with `args` and checks that it succeeded.
    pub async fn mutation(&mut self, path: &str, args: Value) -> Result<(), BoxError> {
        self.call("mutation", path, args).await.map(|_| ())
    }

    /// Calls function `path` of `kind` (`query`, `mutation`) with `args`;
    /// its reply's `value`, once it succeeded.
    pub async fn call_value(
        &mut self,
        kind: &str,
        path: &str,
        args: Value,
    ) -> Result<serde_json::Value, BoxError> {
        let reply = self.call(kind, path, args).await?;
        let reply: serde_json::Value = serde_json::from_slice(&reply)?;
        match reply.get("status").and_then(serde_json::Value::as_str) {
            Some("success") => Ok(reply["value"].clone()),
            _ => Err(format!("{path}: {reply}").into()),
        }
    }

    /// `POST /api/<kind>`; the reply's body, once its status is 200.
    async fn call(&mut self, kind: &str, path: &str, args: Value) -> Result<Vec<u8>, BoxError> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let body = format!(
            r#"{{"path":"{path}","format":"convex_encoded_json","args":[{}]}}"#,
            args.to_json_text()
        );
        let auth = self
            .token
            .as_deref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let connection = if self.keep_alive {
            "keep-alive"
        } else {
            "close"
        };
        let head = format!(
            "POST /api/{kind} HTTP/1.1\r\nHost: {}\r\nConnection: {connection}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let mut stream = match self.kept.take() {
            Some(s) => s,
            None => {
                let tcp = TcpStream::connect(&self.addr).await?;
                tcp.set_nodelay(true)?;
                BufReader::new(tcp)
            }
        };
        let mut request = head.into_bytes();
        request.extend_from_slice(body.as_bytes());
        stream.get_mut().write_all(&request).await?;
        // The head, then exactly Content-Length bytes of body.
        let mut status = None;
        let mut length = None;
        let mut line = String::new();
        loop {
            line.clear();
            if stream.read_line(&mut line).await? == 0 {
                return Err("the server closed the connection mid-response".into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if status.is_none() {
                status = l.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok());
            } else if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let length = length.ok_or("a response without Content-Length")?;
        let mut reply = vec![0u8; length];
        stream.read_exact(&mut reply).await?;
        if status != Some(200) {
            return Err(format!(
                "{path} over HTTP: {status:?} {}",
                String::from_utf8_lossy(&reply)
            )
            .into());
        }
        if self.keep_alive {
            self.kept = Some(stream);
        }
        Ok(reply)
    }
}

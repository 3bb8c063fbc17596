//! Writes a follower passes to the writer: mutations, as calls to the
//! writer's [`FORWARD_PATH`]; the rows of files whose bytes it wrote into
//! the store the nodes share, at [`FILE_PATH`] ([`Node::commit_file`]); and
//! whole HTTP requests of the routes that write outside of functions
//! ([`Node::proxy`]).
//!
//! A forwarded mutation carries the caller's identity, which the follower
//! checked, and its `(sessionId, requestId)`: the writer runs it as if the
//! caller had sent it there, so a resend after a failover is answered from
//! the stored outcome. The writer believes the identity only of a request
//! that presents the nodes' secret ([`NODE_HEADER`]).

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use livebase_schema::{DocumentId, Timestamp, Value};
use serde_json::{json, Value as JsonValue};

use super::Node;
use crate::error::{Error, ErrorCode, Result};
use crate::executor::{Caller, Forward, RequestKey};
use crate::identity::Identity;
use crate::server::client_addr::ClientAddr;
use crate::storage::{NotCommitted, RowsOnWriter, StoredBlob};

/// Where the writer takes forwarded mutations.
pub const FORWARD_PATH: &str = "/_node/mutation";
/// Where the writer commits the row of a file whose bytes a follower
/// wrote into the shared store ([`Node::commit_file`]).
pub const FILE_PATH: &str = "/_node/file";
/// Where the writer takes the sessions a follower saw, due to end.
pub const END_SESSIONS_PATH: &str = "/_node/end-sessions";
/// Most session ids one hand-off to [`END_SESSIONS_PATH`] carries (the
/// writer refuses more; a follower sends more in several).
pub const MAX_SESSIONS_PER_HANDOFF: usize = 10_000;
/// The header a node proves itself with: the nodes' secret.
pub const NODE_HEADER: &str = "livebase-node";
/// The header a follower names the client's address in, on a request it
/// passes on whole (believed only beside [`NODE_HEADER`]).
pub const FORWARDED_FOR: &str = "livebase-forwarded-for";
/// How long a follower keeps trying to reach a writer (one may be taking
/// over the lease) before the write fails.
pub const WRITER_WAIT: Duration = Duration::from_secs(15);

/// Calls a follower has in flight to the writer at most (more wait for
/// one to end): each holds a connection, and the writer's listener caps the
/// connections of one address (`MAX_HTTP_CONNECTIONS_PER_ADDRESS`, 256).
pub const MAX_CALLS_TO_WRITER: usize = 128;

/// Uploads a follower passes to the writer at once, at most (more wait,
/// unread): each body is held whole in memory until the writer took it, up
/// to `--max-upload-bytes`. Only a follower whose files are not in a store
/// the nodes share passes uploads on; one that shares it stores the bytes
/// itself and has the writer commit the row ([`Node::commit_file`]).
pub const MAX_UPLOADS_PASSED_ON: usize = 4;

/// A request body a follower reads before passing it on.
#[derive(Clone, Copy, Debug)]
pub enum PassedBody {
    /// An upload: waits for one of [`MAX_UPLOADS_PASSED_ON`] before it is
    /// read.
    Upload { limit: usize, timeout: Duration },
    /// Any other body (auth's).
    Message { limit: usize, timeout: Duration },
}

/// How often a follower waiting for the writer's answer checks that the
/// lease has not moved on.
pub const WRITER_CHECK: Duration = Duration::from_millis(500);

/// The [`NODE_HEADER`] value of `secret`.
pub fn encode_secret(secret: &[u8]) -> String {
    B64.encode(secret)
}

/// What went wrong reaching the writer, for a retry to decide on.
enum Failure {
    /// Nothing ran: the request did not arrive, or arrived at a node that
    /// is not the writer (any longer).
    NotRun(String),
    /// It may have run.
    Unknown(String),
}

impl Node {
    /// Runs a mutation on the writer, as `identity` calling as `caller`,
    /// keyed by `key`; the value and commit timestamp it answered. While no
    /// writer answers (one is taking over) it tries again for up to
    /// [`WRITER_WAIT`]; a request that may have run is sent again only when
    /// keyed, since the writer then answers a resend from its outcome.
    pub async fn forward_mutation(
        &self,
        path: &str,
        args: &[Value],
        identity: &Identity,
        caller: Caller,
        key: Option<&RequestKey>,
    ) -> Result<(Value, Timestamp)> {
        let body = json!({
            "path": path,
            "args": args.iter().map(Value::to_json).collect::<Vec<_>>(),
            "identity": match identity {
                Identity::Anonymous => JsonValue::Null,
                Identity::User { user_id, session_id } =>
                    json!({"userId": user_id, "sessionId": session_id}),
            },
            "caller": match caller { Caller::Client => "client", Caller::Server => "server" },
            "sessionId": key.map(|k| k.session_id.clone()),
            "requestId": key.map(|k| k.request_id),
        });
        let body = Bytes::from(body.to_string());
        // The writer answers a keyed resend from its stored outcome.
        match self
            .call_until_answered(FORWARD_PATH, body, key.is_some(), decode_answer)
            .await
        {
            Ok(answer) => answer,
            Err(Failure::NotRun(message)) => Err(Error::internal(format!(
                "forwarding mutation {path}: {message}"
            ))),
            Err(Failure::Unknown(message)) => {
                tracing::error!("forwarding mutation {path}: {message}");
                Err(Error::internal(format!(
                    "forwarding mutation {path} to the writer: {message}; \
                     it may or may not have run"
                )))
            }
        }
    }

    /// `POST`s `body` to the writer's `path` until an answer `decode` reads.
    /// While nothing ran (no writer yet, one taking over) it tries again for
    /// up to [`WRITER_WAIT`]; after a try that may have run, only if
    /// `resend`. Else why there is none: [`Failure::NotRun`] when no writer
    /// answered in time, [`Failure::Unknown`] when a try may have run.
    async fn call_until_answered<T>(
        &self,
        path: &str,
        body: Bytes,
        resend: bool,
        decode: impl Fn(&[u8]) -> std::result::Result<T, String>,
    ) -> std::result::Result<T, Failure> {
        let started = Instant::now();
        let mut refresh = false;
        let mut pause = Duration::from_millis(50);
        loop {
            let tried = self
                .post_to_writer(refresh, path, body.clone())
                .await
                .and_then(|answer| decode(&answer).map_err(Failure::Unknown));
            let message = match tried {
                Ok(answer) => return Ok(answer),
                Err(Failure::NotRun(message)) => message,
                Err(Failure::Unknown(message)) if resend => message,
                Err(unknown) => return Err(unknown),
            };
            if started.elapsed() >= WRITER_WAIT {
                return Err(Failure::NotRun(format!(
                    "no writer answered within {WRITER_WAIT:?} (last: {message})"
                )));
            }
            tracing::debug!("calling the writer's {path}: {message}; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
            refresh = true;
        }
    }

    /// `POST`s `body` (JSON) to the writer's `path` as a node; the body of
    /// its `200` answer.
    async fn post_to_writer(
        &self,
        refresh: bool,
        path: &str,
        body: Bytes,
    ) -> std::result::Result<Bytes, Failure> {
        let _slot = self
            .calls
            .acquire()
            .await
            .map_err(|e| Failure::NotRun(e.to_string()))?;
        let writer = self
            .writer_url(refresh)
            .await
            .map_err(|e| Failure::NotRun(format!("reading the writer's address: {e}")))?
            .ok_or_else(|| Failure::NotRun("no writer has taken the lease yet".into()))?;
        let authority = authority(&writer).map_err(Failure::NotRun)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static(NODE_HEADER),
            HeaderValue::from_str(&self.secret).map_err(|e| Failure::NotRun(e.to_string()))?,
        );
        let send = self
            .client
            .send(&authority, Method::POST, path, &headers, body);
        // A writer that stopped (a paused process, a lost host) answers
        // nothing: the call is given up once the lease has moved on.
        let response = tokio::select! {
            sent = send => sent.map_err(|e| {
                if e.maybe_sent {
                    Failure::Unknown(e.message)
                } else {
                    Failure::NotRun(e.message)
                }
            })?,
            () = self.writer_moved_from(&writer) => {
                return Err(Failure::Unknown(format!("the lease moved on from {writer}")))
            }
        };
        // `503` from a node route is "not the writer"; `503` and `429` from
        // the writer's listener are a connection over its caps, refused
        // before any request was read: neither ran anything.
        if response.status() == StatusCode::SERVICE_UNAVAILABLE
            || response.status() == StatusCode::TOO_MANY_REQUESTS
        {
            return Err(Failure::NotRun(format!(
                "{writer} answered {}",
                response.status()
            )));
        }
        if response.status() != StatusCode::OK {
            return Err(Failure::Unknown(format!(
                "{writer} answered {}: {}",
                response.status(),
                String::from_utf8_lossy(response.body())
            )));
        }
        Ok(response.into_body())
    }

    /// Has the writer commit the `_storage` row of `blob`, which this node
    /// wrote into the store the nodes share, after consuming upload token
    /// `token` (if any): the new file's id. While no writer answers (one is
    /// taking over) it tries again for up to [`WRITER_WAIT`]; a request
    /// that may have run is not sent again (a token is used once; without
    /// one, a resend could store the file twice).
    pub async fn commit_file(
        &self,
        blob: &StoredBlob,
        content_type: Option<&str>,
        token: Option<&str>,
    ) -> std::result::Result<DocumentId, NotCommitted> {
        let body = Bytes::from(
            json!({
                "sha256": blob.sha256.as_str(),
                "size": blob.size,
                "contentType": content_type,
                "token": token,
            })
            .to_string(),
        );
        // Not resent: a token is used once, and without one a resend could
        // store the file twice.
        match self
            .call_until_answered(FILE_PATH, body, false, decode_file_answer)
            .await
        {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(refused)) => Err(NotCommitted::Refused(refused)),
            Err(Failure::NotRun(message)) => Err(NotCommitted::Refused(Error::internal(format!(
                "storing a file: {message}"
            )))),
            Err(Failure::Unknown(message)) => {
                tracing::error!("storing a file through the writer: {message}");
                Err(NotCommitted::Unknown(Error::internal(format!(
                    "storing a file through the writer: {message}; \
                     it may or may not have been stored"
                ))))
            }
        }
    }

    /// Hands the sessions of `ids`, due to end, to the writer, which ends
    /// those whose expiry has passed; whether it got them. (Ending one twice
    /// is harmless, so a try that may have got there is as good.)
    pub async fn end_sessions(&self, ids: Vec<String>) -> bool {
        for chunk in ids.chunks(MAX_SESSIONS_PER_HANDOFF) {
            let body = Bytes::from(json!({ "sessionIds": chunk }).to_string());
            if let Err(Failure::NotRun(e) | Failure::Unknown(e)) =
                self.post_to_writer(true, END_SESSIONS_PATH, body).await
            {
                tracing::debug!("handing expired sessions to the writer: {e}");
                return false;
            }
        }
        true
    }

    /// Returns once the writer is no longer the one at `url`: this node took
    /// the lease over, or another one advertised itself.
    async fn writer_moved_from(&self, url: &str) {
        loop {
            tokio::time::sleep(WRITER_CHECK).await;
            if self.is_writer() {
                return;
            }
            if let Ok(Some(now)) = self.writer_url(true).await {
                if now != url {
                    return;
                }
            }
        }
    }

    /// Passes `request` whole to the writer and its answer back, naming the
    /// client's address. A request that may have reached the writer is not
    /// sent again. Its body is read only once it has a place among the calls
    /// to the writer (and, an upload, among the uploads passed on), so what
    /// a follower holds is bounded.
    pub async fn proxy(&self, request: Request, passed: PassedBody) -> Response {
        let Ok(_slot) = self.calls.acquire().await else {
            return unavailable("this node is stopping");
        };
        let (_upload_slot, limit, timeout) = match passed {
            PassedBody::Upload { limit, timeout } => match self.uploads.acquire().await {
                Ok(slot) => (Some(slot), limit, timeout),
                Err(_) => return unavailable("this node is stopping"),
            },
            PassedBody::Message { limit, timeout } => (None, limit, timeout),
        };
        let (parts, body) = request.into_parts();
        let announced = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if announced.is_some_and(|n| n > limit) {
            return too_large(limit);
        }
        let read = read_whole(body, limit, announced.unwrap_or(0));
        let body = match tokio::time::timeout(timeout, read).await {
            Ok(Ok(body)) => body,
            Ok(Err(ReadFailed::TooLarge)) => return too_large(limit),
            Ok(Err(ReadFailed::Broken(e))) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body failed: {e}"),
                )
                    .into_response()
            }
            Err(_) => {
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request body did not arrive within {timeout:?}"),
                )
                    .into_response()
            }
        };
        let mut headers = parts.headers.clone();
        for hop in [header::CONNECTION, header::HOST, header::TRANSFER_ENCODING] {
            headers.remove(hop);
        }
        if let Ok(secret) = HeaderValue::from_str(&self.secret) {
            headers.insert(HeaderName::from_static(NODE_HEADER), secret);
        }
        if let Some(ClientAddr(ip)) = parts.extensions.get::<ClientAddr>() {
            if let Ok(ip) = HeaderValue::from_str(&ip.to_string()) {
                headers.insert(HeaderName::from_static(FORWARDED_FOR), ip);
            }
        }
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let started = Instant::now();
        let mut refresh = false;
        loop {
            let writer = match self.writer_url(refresh).await {
                Ok(Some(w)) => w,
                Ok(None) => String::new(),
                Err(e) => return unavailable(&format!("reading the writer's address: {e}")),
            };
            let sent = match authority(&writer) {
                Ok(authority) => {
                    let send = self.client.send(
                        &authority,
                        parts.method.clone(),
                        &path,
                        &headers,
                        body.clone(),
                    );
                    tokio::select! {
                        sent = send => sent,
                        () = self.writer_moved_from(&writer) => Err(super::client::SendError {
                            message: format!("the lease moved on from {writer}"),
                            maybe_sent: true,
                        }),
                    }
                }
                Err(e) => Err(super::client::SendError {
                    message: e,
                    maybe_sent: false,
                }),
            };
            match sent {
                Ok(response)
                    if response.status() != StatusCode::SERVICE_UNAVAILABLE
                        || response.headers().get(NOT_WRITER).is_none() =>
                {
                    let (mut parts, body) = response.into_parts();
                    parts.headers.remove(header::CONNECTION);
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    return Response::from_parts(parts, Body::from(body));
                }
                Ok(_) => {}
                Err(e) if e.maybe_sent => {
                    tracing::error!("passing {path} to the writer: {}", e.message);
                    return unavailable(
                        "the writer did not answer; the request may or may not have been handled",
                    );
                }
                Err(_) => {}
            }
            if started.elapsed() >= WRITER_WAIT {
                return unavailable("no writer answered; try again");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            refresh = true;
        }
    }
}

fn too_large(limit: usize) -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONNECTION, "close")],
        format!("the request body is larger than {limit} bytes"),
    )
        .into_response()
}

enum ReadFailed {
    TooLarge,
    Broken(axum::Error),
}

/// Reads `body` into one buffer of `expected` bytes reserved up front (the
/// announced length), so a body is held once, not copied at the end.
async fn read_whole(
    body: Body,
    limit: usize,
    expected: usize,
) -> std::result::Result<Bytes, ReadFailed> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut whole = Vec::with_capacity(expected.min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadFailed::Broken)?;
        if let Ok(data) = frame.into_data() {
            if whole.len() + data.len() > limit {
                return Err(ReadFailed::TooLarge);
            }
            whole.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(whole))
}

/// The header a node that is not the writer answers a forwarded write with
/// (`503`), so the sender looks the writer up again.
pub const NOT_WRITER: &str = "livebase-not-writer";

fn unavailable(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        message.to_string(),
    )
        .into_response()
}

/// `host:port` of an `http://` URL.
fn authority(url: &str) -> std::result::Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("the writer's address `{url}`: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "the writer's address `{url}`: nodes talk plain http:// on a private network"
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("the writer's address `{url}` has no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(80);
    Ok(format!("{host}:{port}"))
}

fn decode_answer(body: &[u8]) -> std::result::Result<Result<(Value, Timestamp)>, String> {
    let json: JsonValue =
        serde_json::from_slice(body).map_err(|e| format!("the writer's answer: {e}"))?;
    if let Some(error) = json.get("error") {
        return Ok(Err(decode_error(error)));
    }
    let value = json
        .get("value")
        .ok_or("the writer's answer has no value")
        .and_then(|v| Value::from_json(v, "value").map_err(|_| "the writer's answer: a bad value"))
        .map_err(str::to_string)?;
    let ts = json
        .get("ts")
        .and_then(JsonValue::as_str)
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or("the writer's answer has no ts")?;
    Ok(Ok((value, Timestamp::new(ts))))
}

/// The writer's answer to [`Node::commit_file`]: `{storageId}`, or
/// `{error}` (nothing committed); an answer that cannot be read is an
/// `Err`.
fn decode_file_answer(body: &[u8]) -> std::result::Result<Result<DocumentId>, String> {
    let json: JsonValue =
        serde_json::from_slice(body).map_err(|e| format!("the writer's answer: {e}"))?;
    if let Some(error) = json.get("error") {
        return Ok(Err(decode_error(error)));
    }
    json.get("storageId")
        .and_then(JsonValue::as_str)
        .and_then(DocumentId::parse)
        .map(Ok)
        .ok_or_else(|| "the writer's answer has no file id".to_string())
}

fn decode_error(json: &JsonValue) -> Error {
    if let Some(code) = json.get("code").and_then(JsonValue::as_str) {
        let message = json
            .get("message")
            .and_then(JsonValue::as_str)
            .unwrap_or_default()
            .to_string();
        let data = json
            .get("data")
            .and_then(|d| Value::from_json(d, "data").ok())
            .and_then(|d| match d {
                Value::Object(o) => Some(o),
                _ => None,
            })
            .unwrap_or_default();
        let code = code
            .parse::<ErrorCode>()
            .unwrap_or(ErrorCode::Custom(code.into()));
        return Error::App {
            code,
            message,
            data: data.into_fields(),
        };
    }
    Error::Server {
        request_id: json
            .get("requestId")
            .and_then(JsonValue::as_str)
            .unwrap_or_default()
            .to_string(),
    }
}

impl RowsOnWriter for Node {
    fn is_writer(&self) -> bool {
        Node::is_writer(self)
    }

    fn commit_file<'a>(
        &'a self,
        blob: &'a StoredBlob,
        content_type: Option<&'a str>,
        token: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, std::result::Result<DocumentId, NotCommitted>> {
        Box::pin(Node::commit_file(self, blob, content_type, token))
    }
}

impl Forward for Node {
    fn is_writer(&self) -> bool {
        Node::is_writer(self)
    }

    fn forward<'a>(
        &'a self,
        path: &'a str,
        args: &'a [Value],
        identity: &'a Identity,
        caller: Caller,
        key: Option<&'a RequestKey>,
    ) -> futures::future::BoxFuture<'a, Result<(Value, Timestamp)>> {
        Box::pin(self.forward_mutation(path, args, identity, caller, key))
    }
}

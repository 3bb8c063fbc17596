//! The server's end of several nodes on one store ([`crate::node`]): the
//! writer's [`crate::node::FORWARD_PATH`], which runs a mutation a follower
//! forwarded, and [`crate::node::forward::FILE_PATH`], which commits the row
//! of a file a follower stored; and the outermost layer ([`route`]) that, on
//! a follower, passes the routes that write outside of functions to the
//! writer whole, and on the writer believes the client address a follower
//! names.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use livebase_schema::Value;
use serde_json::{json, Value as JsonValue};

use super::files::UPLOAD_PATH;
use super::{AppState, ClientAddr, MAX_MESSAGE_SIZE};
use crate::error::Error;
use crate::executor::{Caller, RequestKey};
use crate::identity::Identity;
use crate::node::forward::{FORWARDED_FOR, MAX_SESSIONS_PER_HANDOFF, NOT_WRITER};
use crate::node::{Node, NODE_HEADER};
use crate::storage::{BlobHash, StoredBlob};

/// The writer's end of [`crate::node::Node::forward_mutation`], at
/// [`crate::node::FORWARD_PATH`].
pub async fn accept_mutation(State(state): State<AppState>, request: Request) -> Response {
    if let Some(refused) = refused_unless_writer_for_node(&state, &request) {
        return refused;
    }
    let Ok(body) = axum::body::to_bytes(request.into_body(), usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let call = match ForwardedCall::decode(&body) {
        Ok(call) => call,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let answer = match state
        .executor
        .mutation(&call.path, call.args, call.identity, call.caller, call.key)
        .await
    {
        Ok((value, ts)) => json!({"value": value.to_json(), "ts": ts.get().to_string()}),
        Err(e) => json!({"error": encode_error(&e)}),
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}

/// The writer's end of [`crate::node::Node::commit_file`], at
/// [`crate::node::forward::FILE_PATH`]: commits the `_storage` row of a
/// blob a follower wrote into the shared store (and pins there until this
/// answers), consuming the upload token it names. The answer is
/// `{storageId}` or, as [`accept_mutation`]'s, `{error}`.
pub async fn accept_file(State(state): State<AppState>, request: Request) -> Response {
    if let Some(refused) = refused_unless_writer_for_node(&state, &request) {
        return refused;
    }
    let Some(files) = state.executor.files().cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(body) = axum::body::to_bytes(request.into_body(), MAX_MESSAGE_SIZE).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let (blob, content_type, token) = match decode_file(&body) {
        Ok(file) => file,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let answer = match files.commit_stored(blob, content_type, token).await {
        Ok(id) => json!({"storageId": id.as_str()}),
        Err(e) => json!({"error": encode_error(&e)}),
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}

/// What [`accept_file`] is sent: the blob, its content type, its token.
fn decode_file(
    body: &[u8],
) -> std::result::Result<(StoredBlob, Option<String>, Option<String>), String> {
    let json: JsonValue = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let sha256 = json
        .get("sha256")
        .and_then(JsonValue::as_str)
        .and_then(BlobHash::parse)
        .ok_or("sha256: expected 64 lowercase hex digits")?;
    let size = json
        .get("size")
        .and_then(JsonValue::as_u64)
        .ok_or("size: expected a whole number")?;
    let text = |name: &str| match json.get(name) {
        None | Some(JsonValue::Null) => Ok(None),
        Some(JsonValue::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{name}: expected a string or null")),
    };
    Ok((
        StoredBlob { sha256, size },
        text("contentType")?,
        text("token")?,
    ))
}

struct ForwardedCall {
    path: String,
    args: Vec<Value>,
    identity: Identity,
    caller: Caller,
    key: Option<RequestKey>,
}

impl ForwardedCall {
    fn decode(body: &[u8]) -> std::result::Result<ForwardedCall, String> {
        let json: JsonValue = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let field = |name: &str| json.get(name).filter(|v| !v.is_null());
        let text = |v: Option<&JsonValue>, name: &str| {
            v.and_then(JsonValue::as_str)
                .map(str::to_string)
                .ok_or(format!("{name}: expected a string"))
        };
        let path = text(field("path"), "path")?;
        let args = field("args")
            .and_then(JsonValue::as_array)
            .ok_or("args: expected an array")?
            .iter()
            .map(|a| Value::from_json(a, "args").map_err(|e| e.to_string()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let identity = match field("identity") {
            None => Identity::Anonymous,
            Some(i) => Identity::User {
                user_id: text(i.get("userId"), "identity.userId")?,
                session_id: text(i.get("sessionId"), "identity.sessionId")?,
            },
        };
        let caller = match field("caller").and_then(JsonValue::as_str) {
            Some("client") => Caller::Client,
            Some("server") => Caller::Server,
            _ => return Err("caller: expected client or server".into()),
        };
        let key = match (field("sessionId"), field("requestId")) {
            (Some(s), Some(r)) => Some(RequestKey {
                session_id: text(Some(s), "sessionId")?,
                request_id: r
                    .as_u64()
                    .and_then(|r| u32::try_from(r).ok())
                    .ok_or("requestId: expected a u32")?,
            }),
            _ => None,
        };
        Ok(ForwardedCall {
            path,
            args,
            identity,
            caller,
            key,
        })
    }
}

/// The writer's end of [`crate::node::Node::end_sessions`], at
/// [`crate::node::forward::END_SESSIONS_PATH`]: ends those of the sessions
/// whose expiry has passed (the others, and ones already gone, are left
/// alone, so the call can end nothing that should live).
pub async fn accept_expired_sessions(State(state): State<AppState>, request: Request) -> Response {
    if let Some(refused) = refused_unless_writer_for_node(&state, &request) {
        return refused;
    }
    let Some(sessions) = &state.sessions else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(body) = axum::body::to_bytes(request.into_body(), usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let ids: Option<Vec<String>> = serde_json::from_slice::<JsonValue>(&body)
        .ok()
        .and_then(|j| {
            j.get("sessionIds")?
                .as_array()?
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect()
        });
    let Some(ids) = ids.filter(|ids| ids.len() <= MAX_SESSIONS_PER_HANDOFF) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("expected {{sessionIds: [...]}}, at most {MAX_SESSIONS_PER_HANDOFF}"),
        )
            .into_response();
    };
    let ended = sessions.end_expired(ids).await;
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "ended": ended }).to_string(),
    )
        .into_response()
}

/// Whether `request` presents the nodes' secret.
fn from_node(node: &Node, request: &Request) -> bool {
    request
        .headers()
        .get(NODE_HEADER)
        .is_some_and(|v| node.is_node(v.as_bytes()))
}

/// What a node route asks first, and its answer if the request may not go
/// on: it must come from a node (else `404`, as if the route did not exist)
/// to the writer (else `503` with [`NOT_WRITER`], so the sender looks the
/// writer up again).
fn refused_unless_writer_for_node(state: &AppState, request: &Request) -> Option<Response> {
    match &state.node {
        Some(node) if from_node(node, request) => (!node.is_writer()).then(not_the_writer),
        _ => Some(StatusCode::NOT_FOUND.into_response()),
    }
}

fn not_the_writer() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(NOT_WRITER, "1")],
        "this node is not the writer",
    )
        .into_response()
}

/// The routes that write outside of functions and so go to the writer whole
/// when this node is a follower: auth and files (but for a download from
/// the shared store, see [`route`]).
pub fn writes_outside_functions(path: &str) -> bool {
    path.starts_with("/api/auth/") || path.starts_with("/api/storage/")
}

/// The file routes (`/api/storage/…`), which a follower whose files' bytes
/// are in the store the nodes share serves itself: a download writes
/// nothing, and an upload's bytes go into the shared store from here, the
/// writer committing only its row ([`crate::node::Node::commit_file`]) — so
/// no file passes through the follower's memory whole.
fn served_from_shared_files(path: &str) -> bool {
    path.starts_with("/api/storage/")
}

/// On a follower, passes the requests of [`writes_outside_functions`] to
/// the writer; on the writer, believes the client address a follower names
/// beside the nodes' secret.
pub async fn route(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(node) = state.node.clone() else {
        return next.run(request).await;
    };
    if node.is_writer() {
        if from_node(&node, &request) {
            let client = request
                .headers()
                .get(FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            if let Some(ip) = client {
                request.extensions_mut().insert(ClientAddr(ip));
            }
        }
        return next.run(request).await;
    }
    if from_node(&node, &request) {
        // Passed on by a node that took this one for the writer: it looks
        // the writer up again rather than have it go round.
        return not_the_writer();
    }
    let path = request.uri().path();
    let served_here = state.shared_files && served_from_shared_files(path);
    if writes_outside_functions(path) && !served_here {
        // An upload's body is as large, and may take as long, as on the
        // writer; every other body is a message.
        let body = if path == UPLOAD_PATH {
            let max = state.edge.max_upload_bytes;
            crate::node::PassedBody::Upload {
                limit: usize::try_from(max).unwrap_or(usize::MAX),
                timeout: super::files::upload_deadline(state.edge.body_timeout, max),
            }
        } else {
            crate::node::PassedBody::Message {
                limit: MAX_MESSAGE_SIZE,
                timeout: state.edge.body_timeout,
            }
        };
        return node.proxy(request, body).await;
    }
    next.run(request).await
}

fn encode_error(e: &Error) -> JsonValue {
    match e {
        Error::App {
            code,
            message,
            data,
        } => json!({
            "code": code.as_str(),
            "message": message,
            "data": Value::Object(data.clone().into()).to_json(),
        }),
        Error::Server { request_id } => json!({"requestId": request_id}),
        // Redacted before it gets here; logged by the writer if not.
        _ => json!({"requestId": format!("{:016x}", rand::random::<u64>())}),
    }
}

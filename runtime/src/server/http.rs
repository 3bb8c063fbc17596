//! The HTTP function API, as the npm `ConvexHttpClient` uses it:
//! `POST /api/query|mutation|action` with `{path, format, args: [{..}]}` and an
//! optional `Authorization: Bearer` token; `200 {status: "success", value,
//! logLines}` or `560 {status: "error", errorMessage, errorData?, logLines}`;
//! `400` for a body that is not a request. Plus `GET /health`, and
//! [`read_body`], which reads every route's request body under a timeout.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::LengthLimitError;
use livebase_schema::Value;
use serde_json::{json, Value as JsonValue};

use super::inflight::to_its_end;
use super::listener::ClientAddr;
use super::{AppState, MAX_MESSAGE_SIZE};
use crate::error::{Error, Result};
use crate::executor::Caller;
use crate::function::FunctionKind;
use crate::identity::Identity;

/// The status the npm client expects for a function's error.
const FUNCTION_ERROR: u16 = 560;

/// Time a client has to send a request's whole body once its headers are in:
/// a `POST` announcing a megabyte and sending nothing (or a byte a second)
/// is answered `408` and its connection closed. 2 MiB at 100 KB/s fits.
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the request body — at most [`MAX_MESSAGE_SIZE`] bytes, within
/// `timeout` — before any handler runs, so that no route waits on a stalled
/// body. Too slow: `408`; too big: `413`; both close the connection.
pub async fn read_body(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_MESSAGE_SIZE as u64) {
        return refuse_body(StatusCode::PAYLOAD_TOO_LARGE, too_large());
    }
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_MESSAGE_SIZE)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) if over_limit(&e) => refuse_body(StatusCode::PAYLOAD_TOO_LARGE, too_large()),
        Ok(Err(e)) => refuse_body(
            StatusCode::BAD_REQUEST,
            format!("reading the request body failed: {e}"),
        ),
        Err(_) => refuse_body(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {timeout:?}"),
        ),
    }
}

/// Whether reading a body failed for its size (rather than the connection).
fn over_limit(e: &axum::Error) -> bool {
    std::error::Error::source(e).is_some_and(|source| source.is::<LengthLimitError>())
}

fn too_large() -> String {
    format!("the request body is larger than {MAX_MESSAGE_SIZE} bytes")
}

/// An answer to a request whose body was not read whole: the connection
/// cannot carry another request, so it is closed.
fn refuse_body(status: StatusCode, message: String) -> Response {
    let code = match status {
        StatusCode::REQUEST_TIMEOUT => "RequestTimeout",
        StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
        _ => "BadRequest",
    };
    let mut response = (status, Json(json!({"code": code, "message": message}))).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

pub async fn health() -> &'static str {
    "ok"
}

struct Call {
    path: String,
    args: Vec<Value>,
}

/// A body that is not a request: the message says what is wrong with it.
struct BadRequest(String);

fn bad_request(message: String) -> BadRequest {
    BadRequest(message)
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": "BadRequest", "message": self.0})),
        )
            .into_response()
    }
}

fn parse_call(body: &[u8]) -> Result<Call, BadRequest> {
    let json: JsonValue = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("the body is not JSON: {e}")))?;
    let path = json
        .get("path")
        .and_then(JsonValue::as_str)
        .ok_or_else(|| bad_request("body.path: expected a function path string".into()))?
        .to_string();
    if let Some(format) = json.get("format").and_then(JsonValue::as_str) {
        if format != "convex_encoded_json" && format != "json" {
            return Err(bad_request(format!(
                "body.format: unsupported format `{format}`"
            )));
        }
    }
    let args = match json.get("args") {
        None | Some(JsonValue::Null) => Vec::new(),
        Some(JsonValue::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, a)| Value::from_json(a, &format!("args[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad_request(e.to_string()))?,
        Some(obj @ JsonValue::Object(_)) => {
            vec![Value::from_json(obj, "args").map_err(|e| bad_request(e.to_string()))?]
        }
        Some(_) => {
            return Err(bad_request(
                "body.args: expected an array holding one object".into(),
            ))
        }
    };
    Ok(Call { path, args })
}

/// The caller an `Authorization: Bearer` header names; anonymous without one.
pub(crate) async fn identity(state: &AppState, headers: &HeaderMap) -> Result<Identity> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(Identity::Anonymous);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Error::unauthenticated("the Authorization header must be `Bearer <token>`")
        })?;
    state.authenticator.authenticate(token.trim()).await
}

/// A success answer, its text written straight from the value (as the
/// WebSocket path writes a result) instead of through a JSON tree.
fn success(value: &Value) -> Response {
    let mut body = Vec::with_capacity(128);
    body.extend_from_slice(br#"{"status":"success","value":"#);
    value.write_json(&mut body);
    body.extend_from_slice(br#","logLines":[]}"#);
    let json = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, json)], body).into_response()
}

fn reply(result: Result<Value>) -> Response {
    match result {
        Ok(value) => success(&value),
        Err(e) => {
            let error = e.to_function_error();
            let mut body =
                json!({"status": "error", "errorMessage": error.message, "logLines": []});
            if let Some(data) = error.data {
                body["errorData"] = data.to_json();
            }
            let status =
                StatusCode::from_u16(FUNCTION_ERROR).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(body)).into_response()
        }
    }
}

/// One function call over HTTP. The request is taken whole so that its
/// headers are read in place, not copied (its body was read whole already,
/// by [`read_body`]).
async fn call(state: AppState, request: Request, kind: FunctionKind) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_MESSAGE_SIZE).await {
        Ok(b) => b,
        Err(e) => {
            return refuse_body(
                StatusCode::BAD_REQUEST,
                format!("reading the request body failed: {e}"),
            )
        }
    };
    let call = match parse_call(&body) {
        Ok(c) => c,
        Err(bad) => return bad.into_response(),
    };
    let identity = match identity(&state, &parts.headers).await {
        Ok(i) => i,
        Err(e) => return reply(Err(e)),
    };
    let client = parts.extensions.get::<ClientAddr>().map(|c| c.0);
    let slot = match state.calls.start(&identity, client) {
        Ok(slot) => slot,
        Err(e) => return reply(Err(e)),
    };
    let ex = &state.executor;
    let result = match kind {
        FunctionKind::Query => ex
            .query(&call.path, call.args, identity, Caller::Client)
            .await
            .map(|o| o.value),
        // Queued on the writer now, it runs whether or not the client stays.
        FunctionKind::Mutation => {
            let outcome = ex.start_mutation(&call.path, call.args, identity, Caller::Client, None);
            to_its_end(
                async move { outcome.await.map(|(v, _)| v) },
                slot,
                "mutation",
            )
            .await
        }
        FunctionKind::Action => {
            let ex = ex.clone();
            let run = async move {
                ex.action(&call.path, call.args, identity, Caller::Client)
                    .await
            };
            to_its_end(run, slot, "action").await
        }
    };
    reply(result)
}

pub async fn query(State(state): State<AppState>, request: Request) -> Response {
    call(state, request, FunctionKind::Query).await
}

pub async fn mutation(State(state): State<AppState>, request: Request) -> Response {
    call(state, request, FunctionKind::Mutation).await
}

pub async fn action(State(state): State<AppState>, request: Request) -> Response {
    call(state, request, FunctionKind::Action).await
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;

    use super::*;

    /// A body over the limit is told from a failed read by the error's type,
    /// whether or not it announced its length.
    #[test]
    fn a_body_over_the_limit_is_told_from_a_failed_read() {
        let read = |body: Body| futures::executor::block_on(axum::body::to_bytes(body, 5));
        let long = read(Body::from(vec![b'x'; 10])).unwrap_err();
        assert!(over_limit(&long), "{long}");
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"def")),
        ];
        let streamed = read(Body::from_stream(futures::stream::iter(chunks))).unwrap_err();
        assert!(over_limit(&streamed), "{streamed}");
        let broken: Vec<Result<Bytes, std::io::Error>> =
            vec![Err(std::io::Error::other("connection reset"))];
        let failed = read(Body::from_stream(futures::stream::iter(broken))).unwrap_err();
        assert!(!over_limit(&failed), "{failed}");
        assert!(read(Body::from("ok")).is_ok());
    }
}

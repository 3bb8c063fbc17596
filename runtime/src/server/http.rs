//! The HTTP function API, as the npm `ConvexHttpClient` uses it:
//! `POST /api/query|mutation|action` with `{path, format, args: [{..}]}` and an
//! optional `Authorization: Bearer` token; `200 {status: "success", value,
//! logLines}` or `560 {status: "error", errorMessage, errorData?, logLines}`;
//! `400` for a body that is not a request. Plus `GET /health`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use livebase_schema::Value;
use serde_json::{json, Value as JsonValue};

use super::AppState;
use crate::error::{Error, Result};
use crate::executor::Caller;
use crate::registry::Identity;

/// The status the npm client expects for a function's error.
const FUNCTION_ERROR: u16 = 560;

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

async fn identity(state: &AppState, headers: &HeaderMap) -> Result<Identity> {
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

fn reply(result: Result<Value>) -> Response {
    match result {
        Ok(value) => (
            StatusCode::OK,
            Json(json!({"status": "success", "value": value.to_json(), "logLines": []})),
        )
            .into_response(),
        Err(e) => {
            let mut body =
                json!({"status": "error", "errorMessage": e.client_message(), "logLines": []});
            if let Some(data) = e.error_data() {
                body["errorData"] = data.to_json();
            }
            let status =
                StatusCode::from_u16(FUNCTION_ERROR).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(body)).into_response()
        }
    }
}

async fn call(state: AppState, headers: HeaderMap, body: Bytes, kind: &str) -> Response {
    let call = match parse_call(&body) {
        Ok(c) => c,
        Err(bad) => return bad.into_response(),
    };
    let identity = match identity(&state, &headers).await {
        Ok(i) => i,
        Err(e) => return reply(Err(e)),
    };
    let ex = &state.executor;
    let result = match kind {
        "query" => ex
            .query(&call.path, call.args, identity, Caller::Client)
            .await
            .map(|o| o.value),
        "mutation" => ex
            .mutation(&call.path, call.args, identity, Caller::Client, None)
            .await
            .map(|(v, _)| v),
        _ => {
            ex.action(&call.path, call.args, identity, Caller::Client)
                .await
        }
    };
    reply(result)
}

pub async fn query(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    call(state, headers, body, "query").await
}

pub async fn mutation(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    call(state, headers, body, "mutation").await
}

pub async fn action(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    call(state, headers, body, "action").await
}

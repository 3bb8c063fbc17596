//! Serves the application's HTTP routes ([`crate::route`]) as the router's
//! fallback: a request no built-in route took (`/api/*`, `/health`, the
//! dashboard) comes here. In order:
//!
//! 1. a path under a reserved prefix is `404` — never a route's, so an
//!    unknown `/api/…` or a `/_dashboard` that `serve` does not have stays
//!    unanswered whatever the application declared;
//! 2. the route is found by method and path (none: `404`; the path with
//!    other methods only: `405` with `Allow`; a `HEAD` that no route
//!    declares runs the `GET` route); an `OPTIONS` that no route
//!    declares is a CORS preflight, answered for a route with a CORS policy
//!    that allows the `Origin`;
//! 3. the caller: an `Authorization: Bearer` token the authenticator accepts
//!    names a user; anything else (no header, another scheme, a token it
//!    refuses) is anonymous, with the header left for the handler — a
//!    webhook may carry a provider's own bearer token;
//! 4. the call takes a place in its caller's budget
//!    ([`super::inflight::CallsInFlight`], anonymous callers by client
//!    address) exactly as an HTTP function call does, or is refused;
//! 5. the handler runs on its own task (a panic is an internal error), with
//!    an [`ActionCtx`] over the executor and the whole body — read by
//!    [`super::http::read_body`] under the body limit and timeout before the
//!    router ran;
//! 6. an `Err` becomes its code's status ([`Error::http_status`]) with
//!    `{code, message}` (internal errors redacted to a request id); the call
//!    is logged like a function call, in the dev log and the call log.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::inflight::{to_its_end, CallSlot};
use super::listener::ClientAddr;
use super::{http, AppState, MAX_MESSAGE_SIZE};
use crate::calllog::{CallKind, CallOutcome};
use crate::context::ActionCtx;
use crate::database::catch_panic;
use crate::error::{Error, ErrorCode, Result};
use crate::identity::Identity;
use crate::route::{
    is_reserved, Cors, Found, HeaderValue, HttpRequest, HttpResponse, Method, Route, StatusCode,
};

/// The router's fallback: the application's routes.
pub async fn serve(state: AppState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    if is_reserved(&path) {
        return not_found(&parts.method, &path);
    }
    let routes = state.executor.registry().routes();
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string);
    let found = match routes.find(&parts.method, &path) {
        // A `HEAD` no route declares is the `GET` without its body (hyper
        // sends none in answer to a `HEAD`), as axum does for its own routes.
        Found::OtherMethods(_) if parts.method == Method::HEAD => routes.find(&Method::GET, &path),
        found => found,
    };
    let (route, params) = match found {
        Found::Route(route, params) => (route.clone(), params),
        Found::OtherMethods(_) | Found::Nothing if parts.method == Method::OPTIONS => {
            return preflight(&state, &parts.headers, &path, origin.as_deref());
        }
        Found::OtherMethods(methods) => return method_not_allowed(&methods),
        Found::Nothing => return not_found(&parts.method, &path),
    };
    // The body was read whole by `read_body`; this only takes it out.
    let body = match axum::body::to_bytes(body, MAX_MESSAGE_SIZE).await {
        Ok(bytes) => bytes,
        Err(e) => return error_response(Error::invalid(format!("reading the body: {e}"))),
    };
    let identity = match http::identity(&state, &parts.headers).await {
        Ok(identity) => identity,
        Err(_) => Identity::Anonymous,
    };
    let client = parts.extensions.get::<ClientAddr>().map(|c| c.0);
    let request = HttpRequest {
        method: parts.method.clone(),
        path: path.clone(),
        params,
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    };
    let label = format!("{} {}", request.method, route.pattern());
    let started = Instant::now();
    let (outcome, busy) = match state.calls.start(&identity, client) {
        Ok(slot) => (run(&state, &route, identity, request, slot).await, false),
        Err(e) => (Err(e), true),
    };
    log_call(&state, &label, &path, started, &outcome);
    let mut response = match outcome {
        Ok(response) => into_response(response),
        // Past the caller's calls in flight: 429 with `Retry-After`.
        Err(e) if busy => super::inflight::too_many_calls(&e),
        Err(e) => error_response(e.redact(&label)),
    };
    if let (Some(cors), Some(origin)) = (route.cors_policy(), origin) {
        allow_origin(&mut response, cors, &origin);
    }
    response
}

/// Runs the route's handler on its own task: a panic, in building the
/// future or in polling it, is an internal error. The task runs to its end
/// even if the client leaves first, and holds the caller's place among
/// calls in flight (`slot`) until then.
async fn run(
    state: &AppState,
    route: &Route,
    identity: Identity,
    request: HttpRequest,
    slot: Option<CallSlot>,
) -> Result<HttpResponse> {
    let ctx = ActionCtx::new(identity, Arc::new(state.executor.clone()));
    let handler = route.handler().clone();
    let future = catch_panic(|| Ok(handler(ctx, request)))?;
    to_its_end(future, slot, "route handler").await
}

/// The route call's line in the dev log and its entry in the call log, as
/// the executor writes a function call's.
fn log_call(
    state: &AppState,
    label: &str,
    path: &str,
    started: Instant,
    outcome: &Result<HttpResponse>,
) {
    let elapsed = started.elapsed();
    let ms = format!("{:.2}", elapsed.as_secs_f64() * 1e3);
    if let Some(calls) = state.executor.call_log() {
        let recorded = match outcome {
            Ok(_) => CallOutcome::Success,
            Err(e) => CallOutcome::Failed(e.to_string()),
        };
        calls.record(label, CallKind::Route, elapsed, recorded);
    }
    match outcome {
        Ok(response) => {
            // The status is the outcome: `dev` shows `http  GET /p/{x}  1.20ms  200`.
            tracing::info!(target: "livebase::call", path = label, request = path, kind = "http", ms, "{}", response.status.as_u16())
        }
        Err(e) => {
            tracing::info!(target: "livebase::call", path = label, request = path, kind = "http", status = e.http_status(), ms, error = %e, "failed")
        }
    }
}

fn into_response(answer: HttpResponse) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    response
}

/// An error as a route answers it: its code's status and `{code,
/// message}`; a server error `500` with only its request id.
pub fn error_response(error: Error) -> Response {
    let status =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match error.code() {
        Some(code) => json!({"code": code.as_str(), "message": error.client_message()}),
        None => json!({"code": "SERVER_ERROR", "message": error.client_message()}),
    };
    (status, axum::Json(body)).into_response()
}

fn not_found(method: &Method, path: &str) -> Response {
    error_response(Error::app(
        ErrorCode::NotFound,
        format!("no route for {method} {path}"),
    ))
}

fn method_not_allowed(methods: &[Method]) -> Response {
    let allow: Vec<&str> = methods.iter().map(Method::as_str).collect();
    let allow = allow.join(", ");
    let mut response = (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(json!({"code": "METHOD_NOT_ALLOWED", "message": format!("allowed: {allow}")})),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// Answers a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`)
/// for the route it asks about: `204` with the allowed origin, methods and
/// headers if that route has a CORS policy allowing `origin`; `403` without
/// any CORS header otherwise (the browser then refuses the real request);
/// `404` if no route has the path.
fn preflight(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    path: &str,
    origin: Option<&str>,
) -> Response {
    let routes = state.executor.registry().routes();
    let requested = headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
    let route = match requested.as_ref().map(|m| routes.find(m, path)) {
        Some(Found::Route(route, _)) => route,
        Some(Found::OtherMethods(methods)) => return method_not_allowed(&methods),
        Some(Found::Nothing) => return not_found(&Method::OPTIONS, path),
        None => {
            return match routes.find(&Method::GET, path) {
                Found::Nothing => not_found(&Method::OPTIONS, path),
                Found::Route(route, _) => method_not_allowed(&[route.method().clone()]),
                Found::OtherMethods(methods) => method_not_allowed(&methods),
            };
        }
    };
    let (Some(cors), Some(origin)) = (route.cors_policy(), origin) else {
        return forbidden_preflight(path);
    };
    if cors.allow_origin(origin).is_none() {
        return forbidden_preflight(path);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    allow_origin(&mut response, cors, origin);
    let h = response.headers_mut();
    if let Ok(method) = HeaderValue::from_str(route.method().as_str()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, method);
    }
    if let Ok(allowed) = HeaderValue::from_str(&cors.allowed_headers()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age_secs()),
    );
    response
}

fn forbidden_preflight(path: &str) -> Response {
    error_response(Error::forbidden(format!(
        "cross-origin requests to {path} are not allowed from this origin"
    )))
}

/// Adds `Access-Control-Allow-Origin` for `origin` if `cors` allows it, and
/// `Vary: Origin` when the answer depends on it.
fn allow_origin(response: &mut Response, cors: &Cors, origin: &str) {
    let headers = response.headers_mut();
    if cors.varies_by_origin() {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    if let Some(allowed) = cors.allow_origin(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    }
}

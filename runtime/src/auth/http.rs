//! The auth endpoints, with JSON bodies, as `docs/reference/app.md` fixes them:
//!
//! | endpoint | reply |
//! | --- | --- |
//! | `POST /api/auth/sign-up/email` `{email, password, name}` | `200 {token, user}`, `400`, `422` |
//! | `POST /api/auth/sign-in/email` `{email, password}` | `200 {token, user}`, `401`, `429` + `Retry-After` |
//! | `POST /api/auth/sign-out` (Bearer) | `200 {success: true}`, `401` |
//! | `GET /api/auth/get-session` (Bearer) | `200 {session, user}`, `401` |
//! | `POST /api/auth/send-verification-email` `{email, callbackURL?}` | `200 {status: true}` whether or not the address has an account |
//! | `GET /api/auth/verify-email?token=…` | `302` to the `callbackURL`, else `200 {status: true}`; `400` |
//! | `POST /api/auth/request-password-reset` `{email, redirectTo?}` | `200 {status: true}` whether or not the address has an account |
//! | `POST /api/auth/reset-password` `{newPassword, token}` | `200 {status: true}`, `400` |
//! | `POST /api/auth/change-password` `{currentPassword, newPassword, revokeOtherSessions?}` (Bearer) | `200 {token}` (`null` unless sessions were revoked), `401` |
//! | `GET /api/auth/list-sessions` (Bearer) | `200 [{id, token, createdAt, expiresAt, current}]` |
//! | `POST /api/auth/revoke-session` `{token}` (Bearer) | `200 {status: true}`, `404` |
//!
//! Errors are `{code, message}`; the codes follow Better Auth's where it has
//! one, so a client written against the seed's auth reads them unchanged.

use axum::body::Bytes;
use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use serde_json::{json, Value as JsonValue};

use super::{AuthError, SessionAuth, SignedIn};
use crate::server::client_addr::ClientAddr;

/// Largest auth request body: these bodies hold an email, a name and a
/// password.
pub const MAX_BODY: usize = 16 * 1024;

/// The auth routes, to merge into the server's router.
pub fn routes(auth: SessionAuth) -> Router {
    Router::new()
        .route("/api/auth/sign-up/email", post(sign_up))
        .route("/api/auth/sign-in/email", post(sign_in))
        .route("/api/auth/sign-out", post(sign_out))
        .route("/api/auth/get-session", get(get_session))
        .route(
            "/api/auth/send-verification-email",
            post(send_verification_email),
        )
        .route("/api/auth/verify-email", get(verify_email))
        .route(
            "/api/auth/request-password-reset",
            post(request_password_reset),
        )
        .route("/api/auth/reset-password", post(reset_password))
        .route("/api/auth/change-password", post(change_password))
        .route("/api/auth/list-sessions", get(list_sessions))
        .route("/api/auth/revoke-session", post(revoke_session))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(auth)
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        // The status comes from the error's class, through the one table
        // beside `ErrorCode`; the body's `code` is Better Auth's.
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = self.wire_code();
        let retry_after = match &self {
            // Whole seconds, rounded up so a client that waits them is let in.
            AuthError::TooManyAttempts { retry_after } => {
                Some((retry_after.as_secs_f64().ceil() as u64).max(1))
            }
            _ => None,
        };
        let message = match self {
            // Logged under a request id; the client sees only that id.
            AuthError::Internal(e) => e.redact("auth").client_message(),
            other => other.to_string(),
        };
        let mut response =
            (status, Json(json!({"code": code, "message": message}))).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Decodes a JSON object body and reads its string fields.
struct Body(serde_json::Map<String, JsonValue>);

impl Body {
    fn parse(bytes: &[u8]) -> Result<Body, AuthError> {
        match serde_json::from_slice(bytes) {
            Ok(JsonValue::Object(map)) => Ok(Body(map)),
            _ => Err(AuthError::InvalidInput {
                code: "INVALID_BODY",
                message: "the body must be a JSON object".into(),
            }),
        }
    }

    fn string(&self, field: &'static str) -> Result<&str, AuthError> {
        self.0
            .get(field)
            .and_then(JsonValue::as_str)
            .ok_or_else(|| AuthError::InvalidInput {
                code: "INVALID_BODY",
                message: format!("body.{field}: expected a string"),
            })
    }
}

impl Body {
    /// An optional string field: absent or `null` is `None`.
    fn optional(&self, field: &'static str) -> Result<Option<&str>, AuthError> {
        match self.0.get(field) {
            None | Some(JsonValue::Null) => Ok(None),
            Some(JsonValue::String(s)) => Ok(Some(s)),
            Some(_) => Err(AuthError::InvalidInput {
                code: "INVALID_BODY",
                message: format!("body.{field}: expected a string"),
            }),
        }
    }

    fn flag(&self, field: &'static str) -> Result<bool, AuthError> {
        match self.0.get(field) {
            None | Some(JsonValue::Null) => Ok(false),
            Some(JsonValue::Bool(b)) => Ok(*b),
            Some(_) => Err(AuthError::InvalidInput {
                code: "INVALID_BODY",
                message: format!("body.{field}: expected a boolean"),
            }),
        }
    }
}

/// The client's address, when the listener recorded it for the connection.
type Client = Option<Extension<ClientAddr>>;

/// The client address the per-client limits key on: the peer's; but when the
/// peer is a proxy on this machine (loopback) that says whom it forwards for
/// (`X-Forwarded-For`, last entry — the one it added itself), that address,
/// so that clients behind a local reverse proxy do not share one bucket.
fn ip(client: Client, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = client.map(|Extension(ClientAddr(addr))| addr)?;
    if !peer.is_loopback() {
        return Some(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|last| last.trim().parse::<IpAddr>().ok());
    Some(forwarded.unwrap_or(peer))
}

fn status_true() -> Response {
    Json(json!({"status": true})).into_response()
}

fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            AuthError::Unauthenticated("expected an `Authorization: Bearer <token>` header".into())
        })
}

fn signed_in(s: SignedIn) -> Response {
    Json(json!({"token": s.token, "user": s.user.to_value().to_json()})).into_response()
}

fn reply<T>(result: Result<T, AuthError>, ok: impl FnOnce(T) -> Response) -> Response {
    result.map_or_else(IntoResponse::into_response, ok)
}

async fn sign_up(
    State(auth): State<SessionAuth>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let body = Body::parse(&body)?;
        let (email, password, name) = (
            body.string("email")?,
            body.string("password")?,
            body.string("name")?,
        );
        auth.sign_up(ip(client, &headers), email, password.to_string(), name)
            .await
    }
    .await;
    reply(result, signed_in)
}

async fn sign_in(
    State(auth): State<SessionAuth>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let body = Body::parse(&body)?;
        let (email, password) = (body.string("email")?, body.string("password")?);
        auth.sign_in(ip(client, &headers), email, password.to_string())
            .await
    }
    .await;
    reply(result, signed_in)
}

async fn sign_out(State(auth): State<SessionAuth>, headers: HeaderMap) -> Response {
    let result = async { auth.sign_out(bearer(&headers)?).await }.await;
    reply(result, |()| Json(json!({"success": true})).into_response())
}

async fn get_session(State(auth): State<SessionAuth>, headers: HeaderMap) -> Response {
    let result = async { auth.get_session(bearer(&headers)?).await }.await;
    reply(result, |info| {
        Json(json!({
            "session": {
                "id": info.session_id.as_str(),
                "userId": info.user.id.as_str(),
                "expiresAt": info.expires_at,
            },
            "user": info.user.to_value().to_json(),
        }))
        .into_response()
    })
}

async fn send_verification_email(
    State(auth): State<SessionAuth>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let body = Body::parse(&body)?;
        let email = body.string("email")?;
        auth.send_verification_email(ip(client, &headers), email, body.optional("callbackURL")?)
            .await
    }
    .await;
    reply(result, |()| status_true())
}

async fn verify_email(
    State(auth): State<SessionAuth>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let result = async {
        let token = query.get("token").ok_or_else(|| AuthError::InvalidInput {
            code: "INVALID_TOKEN",
            message: "expected `?token=` from the mailed link".into(),
        })?;
        auth.verify_email(token).await
    }
    .await;
    reply(result, |callback| match callback {
        Some(url) => match HeaderValue::from_str(&url) {
            Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
            Err(_) => status_true(),
        },
        None => status_true(),
    })
}

async fn request_password_reset(
    State(auth): State<SessionAuth>,
    client: Client,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let body = Body::parse(&body)?;
        let email = body.string("email")?;
        auth.request_password_reset(ip(client, &headers), email, body.optional("redirectTo")?)
            .await
    }
    .await;
    reply(result, |()| status_true())
}

async fn reset_password(State(auth): State<SessionAuth>, body: Bytes) -> Response {
    let result = async {
        let body = Body::parse(&body)?;
        let (password, token) = (body.string("newPassword")?, body.string("token")?);
        auth.reset_password(token, password.to_string()).await
    }
    .await;
    reply(result, |()| status_true())
}

async fn change_password(
    State(auth): State<SessionAuth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let token = bearer(&headers)?;
        let body = Body::parse(&body)?;
        let current = body.string("currentPassword")?.to_string();
        let new = body.string("newPassword")?.to_string();
        let revoke = body.flag("revokeOtherSessions")?;
        auth.change_password(token, current, new, revoke).await
    }
    .await;
    reply(result, |signed_in| match signed_in {
        Some(s) => {
            Json(json!({"token": s.token, "user": s.user.to_value().to_json()})).into_response()
        }
        None => Json(json!({"token": null})).into_response(),
    })
}

async fn list_sessions(State(auth): State<SessionAuth>, headers: HeaderMap) -> Response {
    let result = async { auth.list_sessions(bearer(&headers)?).await }.await;
    reply(result, |sessions| {
        let sessions: Vec<JsonValue> = sessions
            .iter()
            .map(|s| {
                json!({
                    "id": s.id.as_str(),
                    // Better Auth's clients revoke a listed session by its
                    // `token`; here that is the session id, since tokens are
                    // not stored.
                    "token": s.id.as_str(),
                    "createdAt": s.created_at,
                    "expiresAt": s.expires_at,
                    "current": s.current,
                })
            })
            .collect();
        Json(JsonValue::Array(sessions)).into_response()
    })
}

async fn revoke_session(
    State(auth): State<SessionAuth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let token = bearer(&headers)?;
        let body = Body::parse(&body)?;
        auth.revoke_session(token, body.string("token")?).await
    }
    .await;
    reply(result, |()| status_true())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::Error;

    /// Each refusal's status and code, as Better Auth's clients expect them.
    #[test]
    fn every_refusal_has_its_status_and_code() {
        let cases = [
            (
                AuthError::InvalidInput {
                    code: "INVALID_EMAIL",
                    message: "bad".into(),
                },
                400,
                "INVALID_EMAIL",
            ),
            (AuthError::EmailTaken, 422, "USER_ALREADY_EXISTS"),
            (
                AuthError::InvalidCredentials,
                401,
                "INVALID_EMAIL_OR_PASSWORD",
            ),
            (
                AuthError::TooManyAttempts {
                    retry_after: Duration::from_millis(1500),
                },
                429,
                "TOO_MANY_ATTEMPTS",
            ),
            (
                AuthError::Unauthenticated("expired".into()),
                401,
                "UNAUTHENTICATED",
            ),
            (AuthError::InvalidToken, 400, "INVALID_TOKEN"),
            (AuthError::WrongPassword, 401, "INVALID_PASSWORD"),
            (AuthError::SessionNotFound, 404, "SESSION_NOT_FOUND"),
            (
                AuthError::Internal(Error::internal("disk")),
                500,
                "INTERNAL",
            ),
        ];
        for (error, status, code) in cases {
            let name = format!("{error:?}");
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status, "{name}");
            let retry_after = response.headers().get(header::RETRY_AFTER);
            assert_eq!(
                retry_after.map(|v| v.to_str().unwrap().to_string()),
                (status == 429).then(|| "2".to_string()),
                "{name}"
            );
            let body =
                futures::executor::block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
                    .unwrap();
            let body: JsonValue = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["code"], code, "{name}");
        }
    }
}

//! Signing up and in over the server's HTTP auth endpoints
//! (`POST /api/auth/sign-up/email`, `POST /api/auth/sign-in/email`), for the
//! token that [`Client::set_auth`](crate::Client::set_auth) takes; and the
//! account calls beside them: email verification, password reset and change,
//! and the caller's sessions (`docs/reference/app.md`, "Auth").
//!
//! ```no_run
//! use livebase_sdk::{auth, Client};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let url = "http://127.0.0.1:3900";
//! let session = match auth::sign_in(url, "ada@example.com", "correct horse").await {
//!     Ok(session) => session,
//!     // No such user (or a wrong password): try signing up.
//!     Err(auth::AuthError::InvalidCredentials(_)) => {
//!         auth::sign_up(url, "ada@example.com", "correct horse", "Ada").await?
//!     }
//!     Err(e) => return Err(e.into()),
//! };
//! let client = Client::connect(url).await?;
//! client.set_auth(Some(session.token)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The requests are plain HTTP/1.1 on a tokio `TcpStream`, one connection per
//! call: like the sync client, the SDK builds no TLS stack, so `https://` URLs
//! are refused.

use std::time::Duration;

use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one sign-up or sign-in may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// A signed-in user: the token for [`Client::set_auth`](crate::Client::set_auth)
/// and who it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// A signed JWT; valid until it expires or the session is signed out.
    pub token: String,
    /// The user's id: what the application's `createdBy` fields hold.
    pub user_id: String,
    pub email: String,
    pub name: String,
}

/// Why signing up or in failed. The server's refusals carry its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// `400`: a malformed email, or a password shorter than 8 characters.
    #[error("invalid input ({code}): {message}")]
    InvalidInput { code: String, message: String },
    /// `401`: the email or the password is wrong (the server does not say
    /// which); on sign-in also what an unknown email gets. For the calls
    /// that take a token: the token is not (or no longer) valid, or
    /// `change_password`'s current password is wrong.
    #[error("invalid email or password: {0}")]
    InvalidCredentials(String),
    /// `422`: sign-up with an email that already has a user.
    #[error("the email is already used: {0}")]
    EmailTaken(String),
    /// `429`: too many failed sign-ins for this email; retry after the
    /// given number of seconds, when the server said.
    #[error("too many attempts: {message}")]
    TooManyAttempts {
        message: String,
        retry_after: Option<u64>,
    },
    /// Any other status the server answered with.
    #[error("the server answered {status}: {message}")]
    Server { status: u16, message: String },
    /// The URL is not `http://host[:port]`.
    #[error("`{0}` is not an http:// URL (the SDK has no TLS; use plain http://)")]
    InvalidUrl(String),
    /// The server could not be reached, or the exchange broke off or timed out.
    #[error("could not reach {url}: {message}")]
    Connect { url: String, message: String },
    /// The reply was not the HTTP and JSON the endpoint documents.
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),
}

/// Creates a user and signs them in.
pub async fn sign_up(
    base_url: &str,
    email: &str,
    password: &str,
    name: &str,
) -> Result<Session, AuthError> {
    let body = json!({ "email": email, "password": password, "name": name });
    session_from(post_json(base_url, "/api/auth/sign-up/email", None, &body).await?)
}

/// Signs an existing user in.
pub async fn sign_in(base_url: &str, email: &str, password: &str) -> Result<Session, AuthError> {
    let body = json!({ "email": email, "password": password });
    session_from(post_json(base_url, "/api/auth/sign-in/email", None, &body).await?)
}

/// Asks the server to mail `email` a new verification link (to
/// `GET /api/auth/verify-email`). Answers `Ok` whether or not the address has
/// an account; `callback_url` (a path, or a URL under the app's) is where the
/// link redirects once followed.
pub async fn send_verification_email(
    base_url: &str,
    email: &str,
    callback_url: Option<&str>,
) -> Result<(), AuthError> {
    let body = json!({ "email": email, "callbackURL": callback_url });
    post_json(base_url, "/api/auth/send-verification-email", None, &body)
        .await
        .map(drop)
}

/// Follows a verification link's `token` (what a person's click does): the
/// user's email is verified. A used, expired or unknown token is
/// [`AuthError::InvalidInput`] with code `INVALID_TOKEN`.
pub async fn verify_email(base_url: &str, token: &str) -> Result<(), AuthError> {
    let token: String = token
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let path = format!("/api/auth/verify-email?token={token}");
    // A link issued with a callback answers with a redirect: verified too.
    request(base_url, "GET", &path, None, None, &[302, 303])
        .await
        .map(drop)
}

/// Asks the server to mail `email` a one-time link to set a new password.
/// Answers `Ok` whether or not the address has an account; `redirect_to` is
/// the app page the link opens (`/reset-password` when `None`), with
/// `?token=` added.
pub async fn request_password_reset(
    base_url: &str,
    email: &str,
    redirect_to: Option<&str>,
) -> Result<(), AuthError> {
    let body = json!({ "email": email, "redirectTo": redirect_to });
    post_json(base_url, "/api/auth/request-password-reset", None, &body)
        .await
        .map(drop)
}

/// Sets a new password with the `token` of a reset link. Every session of
/// the user ends, their live subscriptions included.
pub async fn reset_password(
    base_url: &str,
    token: &str,
    new_password: &str,
) -> Result<(), AuthError> {
    let body = json!({ "newPassword": new_password, "token": token });
    post_json(base_url, "/api/auth/reset-password", None, &body)
        .await
        .map(drop)
}

/// Changes the password of `token`'s user. A wrong `current_password` is
/// [`AuthError::InvalidCredentials`]. With `revoke_other_sessions` every
/// session ends (this one too) and the new session's token is returned.
pub async fn change_password(
    base_url: &str,
    token: &str,
    current_password: &str,
    new_password: &str,
    revoke_other_sessions: bool,
) -> Result<Option<String>, AuthError> {
    let body = json!({
        "currentPassword": current_password,
        "newPassword": new_password,
        "revokeOtherSessions": revoke_other_sessions,
    });
    let reply = post_json(base_url, "/api/auth/change-password", Some(token), &body).await?;
    Ok(reply
        .get("token")
        .and_then(Json::as_str)
        .map(str::to_string))
}

/// One of the caller's live sessions.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionSummary {
    /// What [`revoke_session`] takes.
    pub id: String,
    /// Milliseconds since the epoch.
    pub created_at: f64,
    pub expires_at: f64,
    /// Whether it is the session of the token that asked.
    pub current: bool,
}

/// The live sessions of `token`'s user, oldest first.
pub async fn list_sessions(base_url: &str, token: &str) -> Result<Vec<SessionSummary>, AuthError> {
    let reply = request(
        base_url,
        "GET",
        "/api/auth/list-sessions",
        Some(token),
        None,
        &[],
    )
    .await?;
    let items = reply
        .as_array()
        .ok_or_else(|| AuthError::Protocol("list-sessions did not answer a list".into()))?;
    items
        .iter()
        .map(|s| {
            Some(SessionSummary {
                id: s.get("id")?.as_str()?.to_string(),
                created_at: s.get("createdAt")?.as_f64()?,
                expires_at: s.get("expiresAt")?.as_f64()?,
                current: s.get("current")?.as_bool()?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| AuthError::Protocol(format!("a malformed session in {reply}")))
}

/// Ends one of the caller's sessions, by the id [`list_sessions`] gives. A
/// session that is not the caller's is `Server { status: 404, .. }`.
pub async fn revoke_session(
    base_url: &str,
    token: &str,
    session_id: &str,
) -> Result<(), AuthError> {
    let body = json!({ "token": session_id });
    post_json(base_url, "/api/auth/revoke-session", Some(token), &body)
        .await
        .map(drop)
}

/// `{token, user: {id, email, name}}` as a [`Session`].
fn session_from(reply: Json) -> Result<Session, AuthError> {
    let text = |v: Option<&Json>, what: &str| {
        v.and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| AuthError::Protocol(format!("the reply has no string `{what}`")))
    };
    let user = reply.get("user");
    Ok(Session {
        token: text(reply.get("token"), "token")?,
        user_id: text(user.and_then(|u| u.get("id")), "user.id")?,
        email: text(user.and_then(|u| u.get("email")), "user.email")?,
        name: text(user.and_then(|u| u.get("name")), "user.name")?,
    })
}

/// POSTs `body` to `path` on the server at `base_url` (with `token` as a
/// bearer) and returns the JSON of a `200` reply; any other status becomes
/// its [`AuthError`].
async fn post_json(
    base_url: &str,
    path: &str,
    token: Option<&str>,
    body: &Json,
) -> Result<Json, AuthError> {
    request(base_url, "POST", path, token, Some(body), &[]).await
}

/// One request; a `200` (or a status of `also_ok`, answered as `null`)
/// returns its JSON, any other status its [`AuthError`].
async fn request(
    base_url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Json>,
    also_ok: &[u16],
) -> Result<Json, AuthError> {
    let body = body.map(Json::to_string).unwrap_or_default();
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
    ];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer));
    }
    let reply = exchange(base_url, method, path, &headers, body.as_bytes(), TIMEOUT).await?;
    let json: Option<Json> = serde_json::from_slice(&reply.body).ok();
    if reply.status == 200 {
        return json.ok_or_else(|| AuthError::Protocol("a 200 reply that is not JSON".into()));
    }
    if also_ok.contains(&reply.status) {
        return Ok(Json::Null);
    }
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(Json::as_str)
            .map(str::to_string)
    };
    let message =
        field("message").unwrap_or_else(|| String::from_utf8_lossy(&reply.body).trim().to_string());
    Err(match reply.status {
        400 => AuthError::InvalidInput {
            code: field("code").unwrap_or_else(|| "INVALID_INPUT".into()),
            message,
        },
        401 => AuthError::InvalidCredentials(message),
        422 => AuthError::EmailTaken(message),
        429 => AuthError::TooManyAttempts {
            message,
            retry_after: reply.retry_after,
        },
        status => AuthError::Server { status, message },
    })
}

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`): sends
/// `method target` with `headers` and `body` (its `Content-Length` added) to
/// the server at `base_url` and reads the whole reply, all within `timeout`.
pub(crate) async fn exchange(
    base_url: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, AuthError> {
    let (host, port) = host_port(base_url)?;
    let connect_error = |message: String| AuthError::Connect {
        url: base_url.to_string(),
        message,
    };
    let exchange = async {
        let mut stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        // The server may answer (a refusal) before the whole body is in: the
        // reply is what counts.
        let sent = stream.write_all(body).await;
        // `Connection: close`: the server ends the stream after the reply.
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw).await;
        if raw.is_empty() {
            if let Err(e) = sent.and(read) {
                return Err(connect_error(e.to_string()));
            }
        }
        Ok::<_, AuthError>(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| connect_error(format!("no reply within {timeout:?}")))??;
    parse_response(&raw)
}

/// `http://host[:port][/...]` → (host, port).
fn host_port(base_url: &str) -> Result<(String, u16), AuthError> {
    let invalid = || AuthError::InvalidUrl(base_url.to_string());
    let rest = base_url.strip_prefix("http://").ok_or_else(invalid)?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(invalid());
    }
    // `[::1]:3900`, `localhost:3900`, `example.com`.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            (host, port.parse::<u16>().map_err(|_| invalid())?)
        }
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port))
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
    pub(crate) body: Vec<u8>,
}

/// Parses an HTTP/1.1 response read to its end: the status, `Retry-After`,
/// and the body as `Content-Length` (or chunked encoding) delimits it.
fn parse_response(raw: &[u8]) -> Result<Response, AuthError> {
    let protocol = |m: &str| AuthError::Protocol(m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| protocol("the reply ended inside its headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| protocol("headers not UTF-8"))?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| AuthError::Protocol(format!("not an HTTP status line: {status_line}")))?;
    let mut content_length = None;
    let mut chunked = false;
    let mut retry_after = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                content_length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| protocol("a bad Content-Length"))?,
                )
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "retry-after" => retry_after = value.parse().ok(),
            _ => {}
        }
    }
    let body = if chunked {
        dechunk(rest).ok_or_else(|| protocol("a malformed chunked body"))?
    } else if let Some(length) = content_length {
        rest.get(..length)
            .ok_or_else(|| protocol("the reply is shorter than its Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        retry_after,
        body,
    })
}

/// The body of a `Transfer-Encoding: chunked` reply.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_host_and_port() {
        let hp = host_port;
        assert_eq!(hp("http://127.0.0.1:3900"), Ok(("127.0.0.1".into(), 3900)));
        assert_eq!(hp("http://localhost:3900/"), Ok(("localhost".into(), 3900)));
        assert_eq!(hp("http://example.com"), Ok(("example.com".into(), 80)));
        assert_eq!(hp("http://[::1]:8080"), Ok(("::1".into(), 8080)));
        assert!(matches!(
            hp("https://example.com"),
            Err(AuthError::InvalidUrl(_))
        ));
        assert!(matches!(hp("http://"), Err(AuthError::InvalidUrl(_))));
    }

    #[test]
    fn replies_are_read_by_content_length_or_chunks() {
        let raw = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 2\r\nretry-after: 30\r\n\r\n{}trailing";
        let r = parse_response(raw).unwrap();
        assert_eq!(
            (r.status, r.retry_after, r.body),
            (429, Some(30), b"{}".to_vec())
        );
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().body, b"{\"a\":1}".to_vec());
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}"),
            Err(AuthError::Protocol(_))
        ));
    }
}

//! Authentication: how a token from `Authenticate` or an `Authorization:
//! Bearer` header becomes an [`Identity`], and the built-in users and sessions
//! behind the `/api/auth/*` endpoints.
//!
//! # Layout
//!
//! - [`tables`]: the users, sessions, organizations, members and invitations
//!   tables the runtime adds to every schema;
//! - [`users`]: who the caller is, read through a function's transaction;
//! - [`tokens`]: signed JWTs and their key;
//! - [`passwords`]: argon2id, off the async threads;
//! - [`throttle`]: the limit on repeated failed sign-ins;
//! - [`http`]: the endpoints, translating [`SessionAuth`]'s flows to HTTP.
//!
//! **Invariant:** a token is honoured only while its session row exists.
//! [`SessionAuth::authenticate`] checks the row when a token is presented, and
//! functions re-read it inside their own transaction (see
//! [`users::current_user`]), so deleting the row — sign-out — ends the token
//! everywhere, open subscriptions included.

pub mod http;
pub mod passwords;
pub mod tables;
pub mod throttle;
pub mod tokens;
pub mod users;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livebase_schema::{obj, DocumentId, Value};

use crate::database::Database;
use crate::error::{Error, Result};
use crate::registry::{BoxFuture, Identity};
use crate::system::schedule;
use tables::{SESSIONS, USERS};
use throttle::SignInThrottle;
use tokens::{Claims, TokenKeys};
use users::{normalize_email, session_user, user_by_email, User};

/// Checks tokens.
pub trait Authenticator: Send + Sync + 'static {
    /// The identity a token stands for, or `UNAUTHENTICATED` with the reason.
    fn authenticate(&self, token: &str) -> BoxFuture<Result<Identity>>;
}

/// Refuses every token: the server runs without sign-in.
pub struct NoAuth;

impl Authenticator for NoAuth {
    fn authenticate(&self, _token: &str) -> BoxFuture<Result<Identity>> {
        Box::pin(async { Err(Error::unauthenticated("this server does not accept tokens")) })
    }
}

/// How long a session (and its token) lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// Longest display name accepted at sign-up, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// The function that sends templated emails; sign-up schedules the `welcome`
/// one through it.
pub const SEND_EMAIL: &str = "emails:send";

/// Why an auth flow failed. [`http`] maps each to its status code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A malformed email, a short password, a missing field (`400`).
    #[error("{message}")]
    InvalidInput { code: &'static str, message: String },
    /// Sign-up with an email that already has a user (`422`).
    #[error("a user with this email already exists")]
    EmailTaken,
    /// Wrong password or unknown email — deliberately one error (`401`).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Too many sign-in attempts for this email (`429`).
    #[error("too many sign-in attempts; try again later")]
    TooManyAttempts { retry_after: Duration },
    /// A missing, forged, expired or revoked token (`401`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The server failed (`500`); the detail is logged, not sent.
    #[error(transparent)]
    Internal(Error),
}

impl From<Error> for AuthError {
    fn from(e: Error) -> Self {
        match e {
            Error::App {
                code: crate::ErrorCode::Unauthenticated,
                message,
                ..
            } => AuthError::Unauthenticated(message),
            other => AuthError::Internal(other),
        }
    }
}

/// A signed-in session: its token and user.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub token: String,
    pub user: User,
}

/// A live session, as `get-session` reports it.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub session_id: DocumentId,
    /// Milliseconds since the epoch.
    pub expires_at: f64,
    pub user: User,
}

/// The built-in users and sessions; cheap to clone.
#[derive(Clone)]
pub struct SessionAuth {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    keys: TokenKeys,
    throttle: SignInThrottle,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn invalid(code: &'static str, e: Error) -> AuthError {
    AuthError::InvalidInput {
        code,
        message: e.client_message(),
    }
}

impl SessionAuth {
    /// Users and sessions on `db`, signing with the key of `data_dir` (see
    /// [`TokenKeys::load`]).
    pub fn open(data_dir: &Path, db: Database) -> Result<SessionAuth> {
        Ok(SessionAuth::with_keys(TokenKeys::load(data_dir)?, db))
    }

    pub fn with_keys(keys: TokenKeys, db: Database) -> SessionAuth {
        passwords::warm_up();
        SessionAuth {
            inner: Arc::new(Inner {
                db,
                keys,
                throttle: SignInThrottle::default(),
            }),
        }
    }

    /// Creates a user and signs them in. Schedules the `welcome` email in the
    /// same transaction.
    pub async fn sign_up(
        &self,
        email: &str,
        password: String,
        name: &str,
    ) -> Result<SignedIn, AuthError> {
        let email = normalize_email(email).map_err(|e| invalid("INVALID_EMAIL", e))?;
        passwords::check_strength(&password).map_err(|e| invalid("INVALID_PASSWORD", e))?;
        let name = name.trim().to_string();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(AuthError::InvalidInput {
                code: "INVALID_NAME",
                message: format!("the name must be 1 to {MAX_NAME_CHARS} characters long"),
            });
        }
        // Checked before hashing so a taken email costs no hash; checked again
        // in the transaction below, which is what decides.
        let lookup = email.clone();
        let existing = self
            .inner
            .db
            .query(move |tx| user_by_email(tx, &lookup))
            .await?;
        if existing.value.is_some() {
            return Err(AuthError::EmailTaken);
        }
        let hash = passwords::hash(password).await?;
        let (iat, exp) = self.lifetime();
        let created = self
            .inner
            .db
            .mutate(move |tx| {
                if user_by_email(tx, &email)?.is_some() {
                    return Ok(None);
                }
                let fields = obj! {
                    "email" => email.as_str(),
                    "name" => name.as_str(),
                    "passwordHash" => hash.as_str(),
                };
                let id = tx.insert(USERS, fields)?;
                let session = insert_session(tx, &id, exp)?;
                let welcome = obj! {
                    "to" => email.as_str(),
                    "template" => "welcome",
                    "data" => obj! { "name" => name.as_str() },
                };
                schedule(tx, 0.0, SEND_EMAIL, welcome)?;
                Ok(Some((User { id, email, name }, session)))
            })
            .await?;
        let Some((user, session)) = created.value else {
            return Err(AuthError::EmailTaken);
        };
        self.signed_in(user, session, iat, exp)
    }

    /// Checks an email and password and opens a session. Wrong password and
    /// unknown email fail alike, in the same time.
    pub async fn sign_in(&self, email: &str, password: String) -> Result<SignedIn, AuthError> {
        let Ok(email) = normalize_email(email) else {
            return Err(AuthError::InvalidCredentials);
        };
        if let Err(retry_after) = self.inner.throttle.begin(&email) {
            return Err(AuthError::TooManyAttempts { retry_after });
        }
        let lookup = email.clone();
        let found = self
            .inner
            .db
            .query(move |tx| {
                let doc = tx
                    .query(USERS)
                    .with_index("by_email", |q| q.eq("email", lookup.as_str()))
                    .first()?;
                Ok(doc.and_then(|d| {
                    let hash = d.get("passwordHash")?.as_str()?.to_string();
                    Some((User::from_document(&d)?, hash))
                }))
            })
            .await?
            .value;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        // Over-long passwords are answered like wrong ones, after the same
        // work, rather than with a different error.
        let password = if password.len() > passwords::MAX_PASSWORD_BYTES {
            String::new()
        } else {
            password
        };
        let matches = passwords::verify(password, hash).await?;
        let user = match user {
            Some(user) if matches => user,
            _ => return Err(AuthError::InvalidCredentials),
        };
        self.inner.throttle.succeeded(&email);
        let (iat, exp) = self.lifetime();
        let user_id = user.id.clone();
        let session = self
            .inner
            .db
            .mutate(move |tx| {
                // The user may have been deleted while the password was hashed.
                if tx.get(&user_id)?.is_none() {
                    return Ok(None);
                }
                insert_session(tx, &user_id, exp).map(Some)
            })
            .await?
            .value
            .ok_or(AuthError::InvalidCredentials)?;
        self.signed_in(user, session, iat, exp)
    }

    /// Ends the token's session: the token stops working everywhere at once.
    /// A token whose session already ended signs out successfully again.
    pub async fn sign_out(&self, token: &str) -> Result<(), AuthError> {
        let claims = self.inner.keys.verify(token)?;
        let Some(session_id) = DocumentId::parse_in(&claims.sid, SESSIONS) else {
            return Err(AuthError::Unauthenticated("the token is not valid".into()));
        };
        self.inner
            .db
            .mutate(move |tx| {
                let owned = tx
                    .get(&session_id)?
                    .is_some_and(|s| s.get("userId").and_then(Value::as_str) == Some(&claims.sub));
                if owned {
                    tx.delete(&session_id)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// The token's live session and its user.
    pub async fn get_session(&self, token: &str) -> Result<SessionInfo, AuthError> {
        let claims = self.inner.keys.verify(token)?;
        let info = self
            .inner
            .db
            .query(move |tx| {
                let user = session_user(tx, &claims.sid, &claims.sub)?;
                let session_id = DocumentId::parse_in(&claims.sid, SESSIONS)
                    .ok_or_else(|| Error::unauthenticated("the token is not valid"))?;
                let expires_at = tx
                    .get(&session_id)?
                    .and_then(|s| s.get("expiresAt").and_then(Value::as_f64))
                    .unwrap_or_default();
                Ok(SessionInfo {
                    session_id,
                    expires_at,
                    user,
                })
            })
            .await?;
        Ok(info.value)
    }

    /// `iat` and `exp` of a session starting now.
    fn lifetime(&self) -> (u64, u64) {
        let iat = unix_now();
        (iat, iat + SESSION_LIFETIME.as_secs())
    }

    fn signed_in(
        &self,
        user: User,
        session: DocumentId,
        iat: u64,
        exp: u64,
    ) -> Result<SignedIn, AuthError> {
        let token = self.inner.keys.issue(&Claims {
            sub: user.id.as_str().to_string(),
            sid: session.as_str().to_string(),
            iat,
            exp,
        })?;
        Ok(SignedIn { token, user })
    }
}

fn insert_session(
    tx: &mut crate::transaction::Transaction,
    user: &DocumentId,
    exp: u64,
) -> Result<DocumentId> {
    tx.insert(
        SESSIONS,
        obj! { "userId" => user.as_str(), "expiresAt" => exp as f64 * 1e3 },
    )
}

impl Authenticator for SessionAuth {
    /// Checks the signature and `exp`, then that the session row still exists
    /// for this user.
    fn authenticate(&self, token: &str) -> BoxFuture<Result<Identity>> {
        let claims = self.inner.keys.verify(token);
        let db = self.inner.db.clone();
        Box::pin(async move {
            let claims = claims?;
            let checked = claims.clone();
            db.query(move |tx| session_user(tx, &checked.sid, &checked.sub))
                .await?;
            Ok(Identity::User {
                user_id: claims.sub,
                session_id: claims.sid,
            })
        })
    }
}

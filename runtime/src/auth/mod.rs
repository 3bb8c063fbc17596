//! Authentication: how a token from `Authenticate` or an `Authorization:
//! Bearer` header becomes an [`Identity`], and the built-in users and sessions
//! behind the `/api/auth/*` endpoints.
//!
//! # Layout
//!
//! - [`tables`]: the users, sessions, organizations, members and invitations
//!   tables the runtime adds to every schema;
//! - [`cache`]: tokens that passed the check, until their session or user is
//!   written or their time runs out;
//! - [`users`]: who the caller is, read through a function's transaction;
//! - [`tokens`]: signed JWTs and their key;
//! - [`passwords`]: argon2id, off the async threads;
//! - [`expiry`]: ends each session when it expires, live queries included;
//! - [`mail_tokens`]: the one-time tokens of mailed links (verification,
//!   password reset), stored hashed;
//! - [`limits`]: the rate limits per address and per client (`429`);
//! - [`http`]: the endpoints, translating [`SessionAuth`]'s flows to HTTP.
//!
//! **Invariant:** a token is honoured only while its session row exists.
//! [`SessionAuth::authenticate`] checks the row when a token is presented, and
//! functions re-read it inside their own transaction (see
//! [`users::current_user`]), so deleting the row — sign-out — ends the token
//! everywhere, open subscriptions included. A checked token is answered from
//! [`cache`] only until a commit writes its session or user row (the commit
//! forgets it before its mutation is answered) or its time runs out.

pub mod cache;
pub mod expiry;
pub mod http;
pub mod limits;
pub mod mail_tokens;
pub mod passwords;
pub mod tables;
pub mod tokens;
pub mod users;

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livebase_schema::{obj, DocumentId, Value};

use crate::context::{BoxFuture, Reader};
use crate::database::Database;
use crate::error::{Error, ErrorCode, Result};
use crate::identity::Identity;
use crate::system::schedule;
use limits::{Action, AuthLimits};
use mail_tokens::Purpose;
use tables::{SESSIONS, USERS};
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
pub use tables::MAX_NAME_CHARS;
/// The function that sends templated emails: sign-up schedules the
/// `verify-email` one through it, verification the `welcome` one, a reset
/// request the `reset-password` one.
pub const SEND_EMAIL: &str = "emails:send";
/// The frontend page a reset link opens when the request names none; it reads
/// `?token=` and posts the new password to `/api/auth/reset-password`.
pub const RESET_PAGE: &str = "/reset-password";

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
    /// Over one of [`limits`] (`429`).
    #[error("too many requests; try again later")]
    TooManyAttempts { retry_after: Duration },
    /// A mailed link's token that is unknown, used or expired (`400`).
    #[error("this link is invalid, used or expired; ask for a new one")]
    InvalidToken,
    /// `change-password` with a wrong current password (`401`).
    #[error("the current password is wrong")]
    WrongPassword,
    /// `revoke-session` naming no session of the caller's (`404`).
    #[error("you have no such session")]
    SessionNotFound,
    /// A missing, forged, expired or revoked token (`401`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The server failed (`500`); the detail is logged, not sent.
    #[error(transparent)]
    Internal(Error),
}

impl AuthError {
    /// What kind of failure this is, in the runtime's one classification;
    /// `None` for a failure of the server.
    pub fn class(&self) -> Option<ErrorCode> {
        Some(match self {
            AuthError::InvalidInput { .. } | AuthError::InvalidToken => ErrorCode::InvalidArgument,
            AuthError::EmailTaken => ErrorCode::Conflict,
            AuthError::InvalidCredentials
            | AuthError::WrongPassword
            | AuthError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            AuthError::TooManyAttempts { .. } => ErrorCode::RateLimited,
            AuthError::SessionNotFound => ErrorCode::NotFound,
            AuthError::Internal(_) => return None,
        })
    }

    /// The HTTP status the auth endpoints answer with: the class's
    /// ([`ErrorCode::http_status`]), `500` for a failure of the server.
    pub fn http_status(&self) -> u16 {
        self.class().map_or(500, |code| code.http_status())
    }

    /// The `code` of the endpoints' error body, as Better Auth names it.
    pub fn wire_code(&self) -> &'static str {
        match self {
            AuthError::InvalidInput { code, .. } => code,
            AuthError::EmailTaken => "USER_ALREADY_EXISTS",
            AuthError::InvalidCredentials => "INVALID_EMAIL_OR_PASSWORD",
            AuthError::TooManyAttempts { .. } => "TOO_MANY_ATTEMPTS",
            AuthError::Unauthenticated(_) => "UNAUTHENTICATED",
            AuthError::InvalidToken => "INVALID_TOKEN",
            AuthError::WrongPassword => "INVALID_PASSWORD",
            AuthError::SessionNotFound => "SESSION_NOT_FOUND",
            AuthError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<Error> for AuthError {
    fn from(e: Error) -> Self {
        match e {
            Error::App {
                code: ErrorCode::Unauthenticated,
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
    limits: AuthLimits,
    /// The sessions to end when they expire.
    expiry: Arc<expiry::Expiry>,
    /// Tokens that passed the check, with their identities.
    tokens: Arc<cache::TokenCache>,
    /// Whether [`Inner::tokens`] hears of commits: set by the first check,
    /// which registers its commit listener; nothing is cached before.
    listening: tokio::sync::OnceCell<bool>,
    /// Where mailed links point (`--app-url`, else the server's own URL),
    /// without a trailing `/`; set once the server knows its address.
    app_url: OnceLock<String>,
}

/// One of the caller's sessions, as `list-sessions` reports it.
#[derive(Clone, Debug)]
pub struct SessionRow {
    pub id: DocumentId,
    /// Milliseconds since the epoch.
    pub created_at: f64,
    pub expires_at: f64,
    /// Whether it is the session of the token that asked.
    pub current: bool,
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
        let expiry = Arc::new(expiry::Expiry::new(db.clone()));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(expiry::run(Arc::downgrade(&expiry)));
        }
        SessionAuth {
            inner: Arc::new(Inner {
                db,
                keys,
                limits: AuthLimits::default(),
                expiry,
                tokens: Arc::default(),
                listening: tokio::sync::OnceCell::new(),
                app_url: OnceLock::new(),
            }),
        }
    }

    /// On one of several nodes: while this node is not the writer, the
    /// sessions due to end are handed to `send` (the writer's
    /// [`SessionAuth::end_expired`]).
    pub fn end_expired_elsewhere(&self, send: expiry::EndElsewhere) {
        self.inner.expiry.end_elsewhere(send);
    }

    /// Ends each of the sessions `ids` whose expiry has passed (another
    /// node's due sessions, on the writer); how many it ended.
    pub async fn end_expired(&self, ids: Vec<String>) -> usize {
        expiry::end_expired(&self.inner.db, ids).await
    }

    /// Sets where mailed links point; the first call wins.
    pub fn set_app_url(&self, app_url: &str) {
        let _ = self
            .inner
            .app_url
            .set(app_url.trim_end_matches('/').to_string());
    }

    /// Counts `action` against the limits, or refuses it (`429`).
    fn limit(
        &self,
        action: Action,
        client: Option<IpAddr>,
        address: Option<&str>,
    ) -> Result<(), AuthError> {
        self.inner
            .limits
            .check(action, client, address)
            .map_err(|retry_after| AuthError::TooManyAttempts { retry_after })
    }

    fn app_url(&self) -> &str {
        self.inner.app_url.get().map_or("", String::as_str)
    }

    /// `callbackURL`/`redirectTo` as an absolute URL on the app: a path
    /// (`/welcome`) is taken relative to the app URL; an absolute URL must be
    /// under it. Anything else would make our mail an open redirect.
    pub fn app_link(&self, given: &str) -> Result<String, AuthError> {
        let app = self.app_url();
        let refuse = || AuthError::InvalidInput {
            code: "INVALID_CALLBACK_URL",
            message: format!(
                "`{}`: a callback must be a path (`/…`) or a URL under {app}",
                given.chars().take(100).collect::<String>()
            ),
        };
        if given.len() > 2048 || given.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(refuse());
        }
        if given.starts_with('/') && !given.starts_with("//") && !given.starts_with("/\\") {
            return Ok(format!("{app}{given}"));
        }
        match given.strip_prefix(app) {
            Some(rest)
                if !app.is_empty() && (rest.is_empty() || rest.starts_with(['/', '?', '#'])) =>
            {
                Ok(given.to_string())
            }
            _ => Err(refuse()),
        }
    }

    /// Schedules a mail of `template` to `to` with a link carrying `token`
    /// (`{"name", "url"}` for the template).
    fn schedule_link_mail(
        tx: &mut crate::transaction::Transaction,
        to: &str,
        name: &str,
        template: &str,
        url: String,
    ) -> Result<()> {
        let mail = obj! {
            "to" => to,
            "template" => template,
            "data" => obj! { "name" => name, "url" => url },
        };
        schedule(tx, 0.0, SEND_EMAIL, mail).map(|_| ())
    }

    fn verify_url(&self, token: &str) -> String {
        format!("{}/api/auth/verify-email?token={token}", self.app_url())
    }

    /// Mails `email`'s user a new verification link, unless there is no such
    /// user or they are verified already. Answers the same either way.
    pub async fn send_verification_email(
        &self,
        client: Option<IpAddr>,
        email: &str,
        callback_url: Option<&str>,
    ) -> Result<(), AuthError> {
        let callback = callback_url.map(|c| self.app_link(c)).transpose()?;
        let email = normalize_email(email).ok();
        self.limit(Action::Mail, client, email.as_deref())?;
        let Some(email) = email else {
            return Ok(());
        };
        let this = self.clone();
        self.inner
            .db
            .mutate(move |tx| {
                let Some(user) = user_by_email(tx, &email)? else {
                    return Ok(());
                };
                if user.email_verified {
                    return Ok(());
                }
                let token =
                    mail_tokens::issue(tx, &user.id, Purpose::VerifyEmail, callback.as_deref())?;
                let url = this.verify_url(&token);
                SessionAuth::schedule_link_mail(tx, &user.email, &user.name, "verify-email", url)
            })
            .await?;
        Ok(())
    }

    /// Follows a verification link: marks its user's email verified and
    /// schedules the `welcome` mail. Returns where to redirect, if the link
    /// was issued with a `callbackURL`.
    pub async fn verify_email(&self, token: &str) -> Result<Option<String>, AuthError> {
        let token = token.to_string();
        let done = self
            .inner
            .db
            .mutate(move |tx| {
                let Some(taken) = mail_tokens::take(tx, &token, Purpose::VerifyEmail)? else {
                    return Ok(None);
                };
                let Some(user) = tx
                    .get(&taken.user_id)?
                    .as_ref()
                    .and_then(User::from_document)
                else {
                    return Ok(None);
                };
                if !user.email_verified {
                    tx.patch(&user.id, obj! { "emailVerified" => true })?;
                    let welcome = obj! {
                        "to" => user.email.as_str(),
                        "template" => "welcome",
                        "data" => obj! { "name" => user.name.as_str() },
                    };
                    schedule(tx, 0.0, SEND_EMAIL, welcome)?;
                }
                Ok(Some(taken.callback_url))
            })
            .await?;
        done.value.ok_or(AuthError::InvalidToken)
    }

    /// Mails `email`'s user a one-time link to set a new password, if there
    /// is such a user. Answers the same either way.
    pub async fn request_password_reset(
        &self,
        client: Option<IpAddr>,
        email: &str,
        redirect_to: Option<&str>,
    ) -> Result<(), AuthError> {
        let page = match redirect_to {
            Some(r) => self.app_link(r)?,
            None => format!("{}{RESET_PAGE}", self.app_url()),
        };
        let email = normalize_email(email).ok();
        self.limit(Action::Mail, client, email.as_deref())?;
        let Some(email) = email else {
            return Ok(());
        };
        self.inner
            .db
            .mutate(move |tx| {
                let Some(user) = user_by_email(tx, &email)? else {
                    return Ok(());
                };
                let token = mail_tokens::issue(tx, &user.id, Purpose::ResetPassword, None)?;
                let separator = if page.contains('?') { '&' } else { '?' };
                let url = format!("{page}{separator}token={token}");
                SessionAuth::schedule_link_mail(tx, &user.email, &user.name, "reset-password", url)
            })
            .await?;
        Ok(())
    }

    /// Sets a new password with a reset link's token and ends every session
    /// of the user: their tokens stop working everywhere at once, live
    /// subscriptions included, as with sign-out.
    pub async fn reset_password(&self, token: &str, new_password: String) -> Result<(), AuthError> {
        passwords::check_strength(&new_password).map_err(|e| invalid("INVALID_PASSWORD", e))?;
        // Checked before hashing so a bad token costs no hash; taken below,
        // which is what decides.
        let hashed = mail_tokens::hash(token);
        let known = self
            .inner
            .db
            .query(move |tx| {
                Ok(tx
                    .query(tables::AUTH_TOKENS)
                    .with_index("by_hash", |q| q.eq("tokenHash", hashed.as_str()))
                    .first()?
                    .is_some())
            })
            .await?
            .value;
        if !known {
            return Err(AuthError::InvalidToken);
        }
        let hash = passwords::hash(new_password).await?;
        let token = token.to_string();
        let done = self
            .inner
            .db
            .mutate(move |tx| {
                let Some(taken) = mail_tokens::take(tx, &token, Purpose::ResetPassword)? else {
                    return Ok(false);
                };
                if tx.get(&taken.user_id)?.is_none() {
                    return Ok(false);
                }
                // Following the mailed link proves the address, too.
                tx.patch(
                    &taken.user_id,
                    obj! { "passwordHash" => hash.as_str(), "emailVerified" => true },
                )?;
                revoke_sessions(tx, &taken.user_id)?;
                Ok(true)
            })
            .await?;
        if done.value {
            Ok(())
        } else {
            Err(AuthError::InvalidToken)
        }
    }

    /// Changes the caller's password after checking the current one. With
    /// `revoke_other_sessions`, every session of the user ends and a new one
    /// is returned in their place.
    pub async fn change_password(
        &self,
        token: &str,
        current: String,
        new_password: String,
        revoke_other_sessions: bool,
    ) -> Result<Option<SignedIn>, AuthError> {
        let claims = self.inner.keys.verify(token)?;
        passwords::check_strength(&new_password).map_err(|e| invalid("INVALID_PASSWORD", e))?;
        let checked = claims.clone();
        let (user, stored) = self
            .inner
            .db
            .query(move |tx| {
                let user = session_user(&mut Reader::new(tx), &checked.sid, &checked.sub)?;
                let stored = tx
                    .get(&user.id)?
                    .and_then(|d| d.get("passwordHash")?.as_str().map(str::to_string));
                Ok((user, stored))
            })
            .await?
            .value;
        // Guessing the current password through a stolen token is guessing a
        // password: it shares sign-in's per-address limit.
        if let Err(retry_after) = self.inner.limits.check_password(&user.email) {
            return Err(AuthError::TooManyAttempts { retry_after });
        }
        let current = if current.len() > passwords::MAX_PASSWORD_BYTES {
            String::new()
        } else {
            current
        };
        if !passwords::verify(current, stored).await? {
            return Err(AuthError::WrongPassword);
        }
        let hash = passwords::hash(new_password).await?;
        let (iat, exp) = self.lifetime();
        let user_id = user.id.clone();
        let session_id = DocumentId::parse_in(&claims.sid, SESSIONS);
        let session = self
            .inner
            .db
            .mutate(move |tx| {
                // The session may have ended while the passwords were hashed.
                let live = match &session_id {
                    Some(id) => tx.get(id)?.is_some(),
                    None => false,
                };
                if !live {
                    return Err(Error::unauthenticated(
                        "the session has ended; sign in again",
                    ));
                }
                tx.patch(&user_id, obj! { "passwordHash" => hash.as_str() })?;
                if !revoke_other_sessions {
                    return Ok(None);
                }
                // As Better Auth does: every session ends, the caller's
                // included, and the caller gets a new one.
                revoke_sessions(tx, &user_id)?;
                insert_session(tx, &user_id, exp).map(Some)
            })
            .await?
            .value;
        match session {
            Some(session) => self.signed_in(user, session, iat, exp).map(Some),
            None => Ok(None),
        }
    }

    /// The caller's live sessions, oldest first.
    pub async fn list_sessions(&self, token: &str) -> Result<Vec<SessionRow>, AuthError> {
        let claims = self.inner.keys.verify(token)?;
        let rows = self
            .inner
            .db
            .query(move |tx| {
                let user = session_user(&mut Reader::new(tx), &claims.sid, &claims.sub)?;
                let now = users::now_ms();
                let rows = tx
                    .query(SESSIONS)
                    .with_index("by_user", |q| q.eq("userId", user.id.as_str()))
                    .collect()?;
                Ok(rows
                    .iter()
                    .filter_map(|s| {
                        let id = DocumentId::parse_in(s.get("_id")?.as_str()?, SESSIONS)?;
                        let expires_at = s.get("expiresAt")?.as_f64()?;
                        (expires_at > now).then(|| SessionRow {
                            current: id.as_str() == claims.sid,
                            id,
                            created_at: s
                                .get("_creationTime")
                                .and_then(Value::as_f64)
                                .unwrap_or_default(),
                            expires_at,
                        })
                    })
                    .collect())
            })
            .await?;
        Ok(rows.value)
    }

    /// Ends one of the caller's sessions, named by its id (as `list-sessions`
    /// gives it, in both `id` and `token`) or by a token of it.
    pub async fn revoke_session(&self, token: &str, which: &str) -> Result<(), AuthError> {
        let claims = self.inner.keys.verify(token)?;
        let target = DocumentId::parse_in(which, SESSIONS)
            .or_else(|| {
                let other = self.inner.keys.verify(which).ok()?;
                (other.sub == claims.sub)
                    .then(|| DocumentId::parse_in(&other.sid, SESSIONS))
                    .flatten()
            })
            .ok_or(AuthError::SessionNotFound)?;
        let revoked = self
            .inner
            .db
            .mutate(move |tx| {
                let user = session_user(&mut Reader::new(tx), &claims.sid, &claims.sub)?;
                let owned = tx.get(&target)?.is_some_and(|s| {
                    s.get("userId").and_then(Value::as_str) == Some(user.id.as_str())
                });
                if owned {
                    tx.delete(&target)?;
                }
                Ok(owned)
            })
            .await?;
        if revoked.value {
            Ok(())
        } else {
            Err(AuthError::SessionNotFound)
        }
    }

    /// Creates a user and signs them in. Schedules the `verify-email` mail in
    /// the same transaction; the user is unverified until its link is
    /// followed.
    pub async fn sign_up(
        &self,
        client: Option<IpAddr>,
        email: &str,
        password: String,
        name: &str,
    ) -> Result<SignedIn, AuthError> {
        let email = normalize_email(email).map_err(|e| invalid("INVALID_EMAIL", e))?;
        self.limit(Action::SignUp, client, Some(&email))?;
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
        let this = self.clone();
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
                    "emailVerified" => false,
                };
                let id = tx.insert(USERS, fields)?;
                let session = insert_session(tx, &id, exp)?;
                let token = mail_tokens::issue(tx, &id, Purpose::VerifyEmail, None)?;
                let url = this.verify_url(&token);
                SessionAuth::schedule_link_mail(tx, &email, &name, "verify-email", url)?;
                let user = User {
                    id,
                    email,
                    name,
                    email_verified: false,
                };
                Ok(Some((user, session)))
            })
            .await?;
        let Some((user, session)) = created.value else {
            return Err(AuthError::EmailTaken);
        };
        self.signed_in(user, session, iat, exp)
    }

    /// Checks an email and password and opens a session. Wrong password and
    /// unknown email fail alike, in the same time.
    pub async fn sign_in(
        &self,
        client: Option<IpAddr>,
        email: &str,
        password: String,
    ) -> Result<SignedIn, AuthError> {
        let email = normalize_email(email).ok();
        self.limit(Action::SignIn, client, email.as_deref())?;
        let Some(email) = email else {
            return Err(AuthError::InvalidCredentials);
        };
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
                let user = session_user(&mut Reader::new(tx), &claims.sid, &claims.sub)?;
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

    /// The token cache, once its commit listener is registered (the first
    /// call registers it); `None` if the writer thread has stopped.
    async fn token_cache(&self) -> Option<&cache::TokenCache> {
        let listening = *self
            .inner
            .listening
            .get_or_init(|| async {
                let tokens = self.inner.tokens.clone();
                self.inner
                    .db
                    .on_commit(Box::new(move |commit| tokens.committed(&commit)))
                    .await
                    .is_ok()
            })
            .await;
        listening.then_some(&*self.inner.tokens)
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

/// Deletes every session of `user`: the write that ends their tokens
/// everywhere, live queries included.
fn revoke_sessions(tx: &mut crate::transaction::Transaction, user: &DocumentId) -> Result<()> {
    let sessions = tx
        .query(SESSIONS)
        .with_index("by_user", |q| q.eq("userId", user.as_str()))
        .collect()?;
    for s in sessions {
        let Some(id) = s
            .get("_id")
            .and_then(Value::as_str)
            .and_then(|id| DocumentId::parse_in(id, SESSIONS))
        else {
            continue;
        };
        tx.delete(&id)?;
    }
    Ok(())
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
    /// for this user. A token that passed is answered from [`cache`] until a
    /// commit writes its session or its user, or its time runs out.
    fn authenticate(&self, token: &str) -> BoxFuture<Result<Identity>> {
        if let Some(identity) = self.inner.tokens.get(token, users::now_ms()) {
            return Box::pin(async move { Ok(identity) });
        }
        let claims = self.inner.keys.verify(token);
        let this = self.clone();
        let token = token.to_string();
        Box::pin(async move {
            let claims = claims?;
            // Taken before the rows are read: see `cache` for the race.
            let tokens = this.token_cache().await;
            let generation = tokens.map(cache::TokenCache::generation);
            let checked = claims.clone();
            let expires_at = this
                .inner
                .db
                .query(move |tx| {
                    session_user(&mut Reader::new(tx), &checked.sid, &checked.sub)?;
                    let id = DocumentId::parse_in(&checked.sid, SESSIONS);
                    Ok(match id {
                        Some(id) => tx
                            .get(&id)?
                            .and_then(|s| s.get("expiresAt").and_then(Value::as_f64)),
                        None => None,
                    })
                })
                .await?
                .value;
            // Whoever holds this token may subscribe with it: end the session
            // (and so those subscriptions) the moment it expires.
            if let Some(at) = expires_at {
                this.inner.expiry.watch(&claims.sid, at);
                if let (Some(tokens), Some(generation)) = (tokens, generation) {
                    let until = at.min(claims.exp as f64 * 1e3);
                    tokens.insert(generation, &token, &claims.sub, &claims.sid, until);
                }
            }
            Ok(Identity::User {
                user_id: claims.sub,
                session_id: claims.sid,
            })
        })
    }
}

//! One error classification for everything a function call can fail with. Each
//! error has a [`ErrorCode`]; this module alone turns it into what leaves the
//! server — the wire's `FunctionError` and `errorData`
//! ([`Error::to_function_error`]), an HTTP status ([`ErrorCode::http_status`],
//! [`Error::http_status`]) — and a code's string back into the code
//! ([`ErrorCode::from_str`]). The WebSocket, the subscription worker, the HTTP
//! function API, the auth endpoints and the application's HTTP routes all go
//! through these. Internal failures
//! carry their detail for the log only: clients see `Server error` and a
//! request id.
//!
//! A storage engine fails with a [`StoreError`] of its own; it becomes an
//! internal [`Error`] in one place, its `From` conversion.

use std::convert::Infallible;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use livebase_schema::protocol::FunctionError;
use livebase_schema::{DocumentId, Object, Value};

/// What kind of failure an application error is. The string forms are the
/// `errorData.code` values of the wire protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not signed in, or the token is expired, forged or revoked.
    Unauthenticated,
    /// Signed in but not allowed: not a member, or the role lacks a permission.
    Forbidden,
    /// The document does not exist — or exists in an organization the caller is
    /// not in, which is reported the same way.
    NotFound,
    /// Arguments or a document failed validation, or the call named something
    /// that does not exist (an unknown function, table or index).
    InvalidArgument,
    /// The request conflicts with current state (a slug taken, the last owner).
    Conflict,
    /// A documented limit was exceeded (size, reads, queries per connection).
    LimitExceeded,
    /// Too many requests from one caller or address in a while (the auth
    /// endpoints' rate limits).
    RateLimited,
    /// An application-defined code.
    Custom(String),
}

/// The codes with a variant of their own, for [`ErrorCode::from_str`].
const NAMED: [ErrorCode; 7] = [
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::InvalidArgument,
    ErrorCode::Conflict,
    ErrorCode::LimitExceeded,
    ErrorCode::RateLimited,
];

impl ErrorCode {
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Custom(code) => code,
        }
    }

    /// The HTTP status of an error with this code, where an endpoint answers
    /// with a status of its own (the auth endpoints, an application's HTTP
    /// routes; the function API answers
    /// every function error `560`, as the npm client expects). `CONFLICT` is
    /// `422`, as Better Auth answers a taken email.
    pub fn http_status(&self) -> u16 {
        match self {
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::InvalidArgument | ErrorCode::LimitExceeded => 400,
            ErrorCode::Conflict => 422,
            ErrorCode::RateLimited => 429,
            // An application's own refusal is about the request.
            ErrorCode::Custom(_) => 400,
        }
    }
}

/// The code a wire string names; any other string is an application's
/// [`ErrorCode::Custom`] code. The inverse of [`ErrorCode::as_str`].
impl FromStr for ErrorCode {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<ErrorCode, Infallible> {
        Ok(NAMED
            .into_iter()
            .find(|code| code.as_str() == s)
            .unwrap_or_else(|| ErrorCode::Custom(s.to_string())))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a function call ends with.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// An error meant for the caller: its code and message reach the client as
    /// `errorData`.
    App {
        code: ErrorCode,
        message: String,
        /// Extra fields merged into `errorData`.
        data: Object,
    },
    /// A failure of the server itself (the store, a panicking handler). Its
    /// message is logged, never sent.
    Internal(String),
    /// An internal failure that has been logged under `request_id`; this is the
    /// form that reaches clients: `[Request ID: …] Server error`.
    Server { request_id: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn app(code: ErrorCode, message: impl Into<String>) -> Error {
        Error::App {
            code,
            message: message.into(),
            data: Object::new(),
        }
    }
    pub fn unauthenticated(message: impl Into<String>) -> Error {
        Error::app(ErrorCode::Unauthenticated, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::app(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::app(ErrorCode::NotFound, message)
    }
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::app(ErrorCode::InvalidArgument, message)
    }
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::app(ErrorCode::Conflict, message)
    }
    pub fn limit(message: impl Into<String>) -> Error {
        Error::app(ErrorCode::LimitExceeded, message)
    }
    pub fn internal(message: impl Into<String>) -> Error {
        Error::Internal(message.into())
    }

    /// The code, for application errors.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Error::App { code, .. } => Some(code),
            Error::Internal(_) | Error::Server { .. } => None,
        }
    }

    /// Logs an internal error under a fresh request id and returns the form
    /// clients may see; application errors pass through unchanged.
    pub fn redact(self, path: &str) -> Error {
        match self {
            Error::Internal(detail) => {
                let request_id = format!("{:016x}", rand::random::<u64>());
                tracing::error!(%request_id, path, "server error: {detail}");
                Error::Server { request_id }
            }
            other => other,
        }
    }

    /// The message a client is shown.
    pub fn client_message(&self) -> String {
        match self {
            Error::App { message, .. } => message.clone(),
            Error::Internal(_) => "Server error".to_string(),
            Error::Server { request_id } => format!("[Request ID: {request_id}] Server error"),
        }
    }

    /// `errorData` as the wire carries it: `{code, message, ...data}`; `None` for
    /// internal errors.
    pub fn error_data(&self) -> Option<Value> {
        match self {
            Error::App {
                code,
                message,
                data,
            } => {
                let mut o = data.clone();
                o.insert("code".into(), Value::from(code.as_str()));
                o.insert("message".into(), Value::from(message.as_str()));
                Some(Value::Object(o.into()))
            }
            Error::Internal(_) | Error::Server { .. } => None,
        }
    }
}

impl Error {
    /// The wire form of this error, as `MutationResponse`, `ActionResponse`,
    /// `QueryFailed` and the HTTP function API carry it: the client message,
    /// and `errorData` for application errors.
    pub fn to_function_error(&self) -> FunctionError {
        FunctionError {
            message: self.client_message(),
            data: self.error_data(),
        }
    }

    /// The HTTP status of this error where an endpoint answers with one:
    /// its code's ([`ErrorCode::http_status`]), `500` for a server error.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::App { code, .. } => code.http_status(),
            Error::Internal(_) | Error::Server { .. } => 500,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::App { code, message, .. } => write!(f, "{code}: {message}"),
            Error::Internal(message) => write!(f, "internal error: {message}"),
            Error::Server { request_id } => write!(f, "[Request ID: {request_id}] Server error"),
        }
    }
}

impl std::error::Error for Error {}

/// How a storage engine fails. None of these is a caller's mistake, so each
/// reaches callers of the store as an internal error (logged, never sent).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The engine itself failed: SQLite busy past its timeout, a full disk,
    /// an I/O error, a constraint.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Another engine failed (PostgreSQL: a refused or lost connection, a
    /// failed statement); `engine` names it in the log.
    #[error("{engine}: {source}")]
    Engine {
        engine: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database file could not be opened.
    #[error("opening {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// A file of the store could not be created.
    #[error("creating {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Stored data that does not decode: a malformed id, a body that is not
    /// an object.
    #[error("{0}")]
    Corrupt(String),
    /// A new document's id is already stored (`insert_document`); nothing
    /// was written.
    #[error("a new document's id {0} is already taken")]
    IdTaken(DocumentId),
    /// A connection used out of order, such as `begin_read` inside a
    /// transaction: a bug of the caller.
    #[error("{0}")]
    Misuse(&'static str),
}

/// What a storage engine's calls return.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// The boundary: an engine's failure is the server's, not the caller's.
impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_and_its_string_round_trip() {
        for code in NAMED {
            assert_eq!(code.as_str().parse(), Ok(code.clone()), "{code}");
        }
        let custom = ErrorCode::Custom("NOTE_REJECTED".into());
        assert_eq!("NOTE_REJECTED".parse(), Ok(custom));
    }

    #[test]
    fn every_named_code_has_its_own_string_and_a_client_status() {
        let strings: std::collections::HashSet<&str> =
            NAMED.iter().map(ErrorCode::as_str).collect();
        assert_eq!(strings.len(), NAMED.len());
        for code in NAMED {
            assert!((400..500).contains(&code.http_status()), "{code}");
        }
    }

    #[test]
    fn the_wire_form_carries_the_code_and_hides_internals() {
        let app = Error::conflict("slug taken").to_function_error();
        assert_eq!(app.message, "slug taken");
        let data = app.data.expect("errorData").to_json();
        assert_eq!(data["code"], "CONFLICT");
        assert_eq!(data["message"], "slug taken");

        let internal = Error::internal("disk on fire");
        assert_eq!(internal.http_status(), 500);
        let wire = internal.to_function_error();
        assert_eq!(wire.message, "Server error");
        assert_eq!(wire.data, None);
    }
}

//! One error classification for everything a function call can fail with. Each
//! error has a [`ErrorCode`]; `protocol` edges (WebSocket, HTTP) turn it into wire
//! errors and status codes in one place. Internal failures carry their detail for
//! the log only: clients see `Server error` and a request id.
//!
//! A storage engine fails with a [`StoreError`] of its own; it becomes an
//! internal [`Error`] in one place, its `From` conversion.

use std::fmt;
use std::path::PathBuf;

use livebase_schema::{DocumentId, Object, Value};

/// What kind of failure an application error is. The string forms are the
/// `errorData.code` values of the wire protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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
    /// An application-defined code.
    Custom(String),
}

impl ErrorCode {
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::Custom(code) => code,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a function call ends with.
#[derive(Clone, Debug, PartialEq)]
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
                Some(Value::Object(o))
            }
            Error::Internal(_) | Error::Server { .. } => None,
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

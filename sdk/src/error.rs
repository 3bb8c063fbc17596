//! What a call through the [`Client`](crate::Client) can fail with.

use livebase_schema::protocol::FunctionError;
use livebase_schema::{DecodeError, Value};

/// Why a mutation, an action, `set_auth` or `connect` failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The function ran and failed, or the server refused the call (unknown
    /// function, invalid arguments). Application errors carry
    /// `data: {code, message, ...}`; see [`ClientError::code`].
    #[error(transparent)]
    Function(#[from] FunctionError),
    /// The result did not decode as the type the function reference declares:
    /// the client and the server disagree about the function.
    #[error("the result of `{path}` is not what its reference declares: result{error}")]
    Decode { path: String, error: DecodeError },
    /// The connection dropped while the action was running. It may or may not
    /// have run; actions are never resent.
    #[error("the connection was lost while the action was running")]
    ConnectionLost,
    /// The server refused the token given to `set_auth`; the client has
    /// signed out.
    #[error("the server refused the token: {0}")]
    Unauthenticated(String),
    /// The URL given to `connect` is not `http(s)://` or `ws(s)://`.
    #[error("`{0}` is not an http://, https://, ws:// or wss:// URL")]
    InvalidUrl(String),
    /// The first connection could not be opened (later ones are retried).
    #[error("could not connect to {url}: {message}")]
    Connect { url: String, message: String },
    /// The client's background task has stopped.
    #[error("the client has stopped")]
    Closed,
}

impl ClientError {
    /// The application error data (`errorData`) of a function's failure.
    pub fn data(&self) -> Option<&Value> {
        match self {
            ClientError::Function(e) => e.data.as_ref(),
            _ => None,
        }
    }

    /// The application error code (`errorData.code`: `NOT_FOUND`,
    /// `FORBIDDEN`, …, or one the application defined).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Function(e) => error_code(e),
            ClientError::Unauthenticated(_) => Some("UNAUTHENTICATED"),
            _ => None,
        }
    }
}

/// The `errorData.code` of a function's failure, as subscriptions report it.
pub fn error_code(error: &FunctionError) -> Option<&str> {
    error.data.as_ref()?.get("code")?.as_str()
}

//! The authentication hook: how a token from `Authenticate` or an
//! `Authorization: Bearer` header becomes an [`Identity`]. The server asks an
//! [`Authenticator`]; the built-in users-and-sessions implementation plugs in
//! here.

use crate::error::{Error, Result};
use crate::registry::{BoxFuture, Identity};

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

//! Function calls in flight, counted per caller: what one signed-in user, or
//! one client address calling anonymously, may have the server working on at
//! once — WebSocket actions and mutations, and HTTP queries, mutations and
//! actions — across all its connections. A call past the budget is answered
//! `LIMIT_EXCEEDED` at once, without being started. A mutation, an action or
//! an HTTP route runs to its end even if its client leaves first (a
//! mutation is queued on the writer when it starts; an action or a route may
//! have effects half done), and keeps its place until then, so leaving does
//! not free room to queue more.
//!
//! Each connection also bounds its own actions
//! ([`super::ws::MAX_ACTIONS_PER_CONNECTION`]) and mutations in flight
//! ([`super::ws::MAX_MUTATIONS_IN_FLIGHT_PER_CONNECTION`]), and an HTTP
//! connection carries one request at a time.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::listener::{Counts, Slot};
use crate::error::Error;
use crate::identity::Identity;

/// Most function calls one caller may have in flight at once (see the module
/// docs); more are refused with `LIMIT_EXCEEDED`.
pub const MAX_CALLS_IN_FLIGHT_PER_CALLER: usize = 256;

/// The `Retry-After` of an HTTP request refused for its caller's calls in
/// flight: calls are short, so a second is enough to find a place again.
pub const CALLS_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Who a call is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CallerKey {
    /// A signed-in user, whatever connection or address the call comes from.
    User(String),
    /// An anonymous caller, by client address (as the per-address
    /// connection caps count it).
    Address(IpAddr),
}

/// One call's place in the budget, given back when dropped (when the call
/// ends).
pub type CallSlot = Slot<CallerKey>;

/// The calls in flight of every caller.
#[derive(Clone)]
pub struct CallsInFlight {
    counts: Arc<Counts<CallerKey>>,
}

impl CallsInFlight {
    /// At most `max` calls in flight per caller.
    pub fn new(max: usize) -> CallsInFlight {
        CallsInFlight {
            counts: Counts::new(max),
        }
    }

    /// A place for one call of `identity`, made from client address `addr`;
    /// `Ok(None)` when an anonymous call has no address to count by (a router
    /// served without the listener).
    pub fn start(
        &self,
        identity: &Identity,
        addr: Option<IpAddr>,
    ) -> Result<Option<CallSlot>, Error> {
        let key = match (identity, addr) {
            (Identity::User { user_id, .. }, _) => CallerKey::User(user_id.clone()),
            (Identity::Anonymous, Some(addr)) => CallerKey::Address(addr),
            (Identity::Anonymous, None) => return Ok(None),
        };
        match self.counts.try_hold(key) {
            Some(slot) => Ok(Some(slot)),
            None => Err(Error::limit(format!(
                "too many calls in flight (at most {} at once per user or client address); \
                 wait for some to finish",
                self.counts.max()
            ))),
        }
    }

    /// How many calls `key` has in flight.
    pub fn held(&self, key: &CallerKey) -> usize {
        self.counts.held(key)
    }
}

/// Runs `call` — an HTTP mutation, action or route — to its end even if the
/// client leaves before the answer, in a task of its own that holds the
/// caller's place (`slot`) until then; `what` names it if the task panics.
pub async fn to_its_end<T: Send + 'static>(
    call: impl Future<Output = Result<T, Error>> + Send + 'static,
    slot: Option<CallSlot>,
    what: &str,
) -> Result<T, Error> {
    let task = tokio::spawn(async move {
        let outcome = call.await;
        drop(slot);
        outcome
    });
    task.await
        .unwrap_or_else(|e| Err(Error::internal(format!("{what} panicked: {e}"))))
}

/// The answer to an HTTP request (an HTTP route, an upload) refused by
/// [`CallsInFlight::start`]: `429` with [`CALLS_RETRY_AFTER`] and the
/// `LIMIT_EXCEEDED` error as `{code, message}`. (The function API answers
/// the npm client's way instead: `560` with `errorData`.)
pub fn too_many_calls(error: &Error) -> Response {
    let code = error.code().map_or("LIMIT_EXCEEDED", |c| c.as_str());
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"code": code, "message": error.client_message()})),
    )
        .into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(CALLS_RETRY_AFTER.as_secs()),
    );
    response
}

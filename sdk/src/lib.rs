//! The Rust client SDK for livebase: connect, sign in, subscribe to queries as
//! `Stream`s of results, and call mutations and actions — all over the Convex
//! sync protocol, on one WebSocket.
//!
//! ```no_run
//! use futures::StreamExt;
//! use livebase_sdk::{mutation, obj, query, Client, MutationRef, QueryRef, Value};
//!
//! // Typed references, usually written once per module of the application
//! // (see [`function`] for argument and result structs).
//! const LIST: QueryRef<Value, Vec<Value>> = query("notes:list");
//! const ADD: MutationRef<Value, String> = mutation("notes:add");
//!
//! # async fn run() -> Result<(), livebase_sdk::ClientError> {
//! let client = Client::connect("http://127.0.0.1:3210").await?;
//! let mut notes = client.subscribe(LIST, obj! { "organizationId" => "org1" });
//! let id = client.mutation(ADD, obj! { "organizationId" => "org1", "body" => "hi" }).await?;
//! // Resolved only once the subscription reflects the write:
//! println!("added {id}; the list is now {:?}", notes.current());
//! while let Some(result) = notes.next().await {
//!     match result {
//!         Ok(list) => println!("{} notes", list.len()),
//!         Err(e) => println!("the query failed: {e} (data: {:?})", e.data),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! - **Consistent results.** All of a client's query results are valid at one
//!   snapshot; a server Transition is applied whole or not at all.
//! - **Read your writes.** A mutation's future resolves only after every
//!   subscription of the client reflects the mutation.
//! - **Resume.** A dropped connection is reopened with exponential backoff and
//!   jitter; the session, the query set and the identity are restored, and
//!   mutations not yet answered are resent with their original request ids, so
//!   the server runs each exactly once.
//!
//! # Layout
//!
//! - [`state`] — the protocol as a state machine that does no I/O — calls and
//!   server messages in, frames to send and [`state::Notification`]s out.
//! - [`client`] — the tokio wrapper: [`Client`], [`Subscription`], and the
//!   background task (`worker.rs`) that owns the socket and the state.
//! - [`auth`] — signing up and in over HTTP, for the token [`Client::set_auth`]
//!   takes: [`auth::sign_up`], [`auth::sign_in`].
//! - [`files`] — uploading a file through an upload URL
//!   ([`Client::upload`], [`files::upload`]).
//! - [`options`] — [`ClientOptions`], shared by the handle and the worker.
//! - [`function`] — typed function references, [`IntoArgs`] and [`FromValue`].
//! - [`error`] — [`ClientError`].
//!
//! **Architecture Invariant:** the SDK never depends on the server
//! (`livebase-runtime` is only a dev-dependency of its tests); it speaks the
//! wire through `livebase_schema::protocol`, the one module that knows it.

pub mod auth;
pub mod client;
pub mod error;
pub mod files;
pub mod function;
pub mod options;
pub mod paginated;
mod slot;
pub mod state;
mod worker;

pub use client::{Client, ClientOptions, Subscription};
pub use error::{error_code, ClientError};
pub use function::{
    action, mutation, query, ActionRef, Fields, FromValue, FunctionRef, IntoArgs, MutationRef,
    Paginated, QueryRef,
};
/// The sync protocol's messages, for driving [`state::ClientState`] directly.
pub use livebase_schema::protocol;
pub use livebase_schema::protocol::{FunctionError, QueryId, RequestId, SessionId};
pub use livebase_schema::{obj, DecodeError, Object, Timestamp, Value};
pub use paginated::{PageStatus, PaginatedResult, PaginatedSubscription};

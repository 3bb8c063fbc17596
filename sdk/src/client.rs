//! The tokio client: a cheap-to-clone [`Client`] handle, live [`Subscription`]s
//! as `Stream`s, and mutations, actions and `set_auth` as futures. Every call
//! becomes a command to one background task (`worker`) that owns the socket and
//! the [`ClientState`]; the handle itself holds no state and takes no lock a
//! caller could wait on.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use livebase_schema::protocol::{FunctionError, SessionId};
use livebase_schema::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::ClientError;
use crate::function::{ActionRef, FromValue, IntoArgs, MutationRef, QueryRef};
pub use crate::options::ClientOptions;
use crate::slot::Slot;
use crate::state::ClientState;
use crate::worker::{self, Command, RequestKind, Worker};

/// A connection to a livebase server, kept open (and reopened) by a background
/// task until the last handle — the `Client` clones and every live
/// [`Subscription`] — is dropped and no call is still waiting for its answer.
///
/// ```no_run
/// use futures::StreamExt;
/// use livebase_sdk::{mutation, obj, query, Client, Value};
///
/// # async fn run() -> Result<(), livebase_sdk::ClientError> {
/// let client = Client::connect("http://127.0.0.1:3210").await?;
/// client.set_auth(Some("token from sign-in".into())).await?;
///
/// let list = query::<Value, Value>("notes:list");
/// let mut notes = client.subscribe(list, obj! { "organizationId" => "org1" });
/// let add = mutation::<Value, Value>("notes:add");
/// client.mutation(add, obj! { "organizationId" => "org1", "body" => "hi" }).await?;
/// // The mutation resolved, so the subscription already holds the new note.
/// println!("{:?}", notes.current());
/// while let Some(result) = notes.next().await {
///     println!("notes now: {result:?}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    session_id: SessionId,
    next_subscription: Arc<AtomicU64>,
}

impl Client {
    /// Connects to the server at `url`: `http://host:port` (the server's own
    /// address; the sync endpoint `/api/sync` is added) or a `ws://` URL. Fails
    /// if this first connection cannot be opened; later drops are retried with
    /// backoff for as long as the client lives. Needs a tokio runtime.
    ///
    /// The SDK builds no TLS stack: `https://` and `wss://` URLs are accepted
    /// but fail to connect. Put livebase behind a TLS-terminating proxy on the
    /// same network, or reach it over plain `http://`.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Client::connect_with(url, ClientOptions::default()).await
    }

    /// As [`Client::connect`], with options.
    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let url = sync_url(url)?;
        let socket = worker::open(url.clone(), options.connect_timeout)
            .await
            .map_err(|message| ClientError::Connect {
                url: url.clone(),
                message,
            })?;
        let state = ClientState::new();
        let session_id = state.session_id().clone();
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(Worker::new(url, options, state, receiver).run(socket));
        Ok(Client {
            commands,
            session_id,
            next_subscription: Arc::new(AtomicU64::new(0)),
        })
    }

    /// This client's session: it outlives reconnects, and the server keys
    /// mutation retries by it.
    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    /// Sets (`Some`) or clears (`None`) the token every query, mutation and
    /// action runs under. It applies at once — calls made after this one run
    /// under it — and holds across reconnects; queries already subscribed re-run
    /// under the new identity. Await the returned future to learn the server's
    /// answer: [`ClientError::Unauthenticated`] if it refused the token, in
    /// which case the client has signed out. If another `set_auth` replaces this
    /// one before the server answers, this resolves with that one's answer.
    pub fn set_auth(
        &self,
        token: Option<String>,
    ) -> impl Future<Output = Result<(), ClientError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let _ = self.commands.send(Command::SetAuth { token, reply });
        async move { answer.await.unwrap_or(Err(ClientError::Closed)) }
    }

    /// Subscribes to a query. The returned [`Subscription`] yields the query's
    /// result now and every time it changes, until it is dropped.
    pub fn subscribe<A: IntoArgs, O: FromValue>(
        &self,
        query: QueryRef<A, O>,
        args: A,
    ) -> Subscription<O> {
        let id = self.next_subscription.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        let command = Command::Subscribe {
            id,
            path: query.path().to_string(),
            args: args.into_args(),
            slot: slot.clone(),
        };
        if self.commands.send(command).is_err() {
            slot.close();
        }
        Subscription {
            id,
            path: query.path(),
            slot,
            commands: self.commands.clone(),
            _output: PhantomData,
        }
    }

    /// A query's current result, once: subscribes, takes the first result and
    /// unsubscribes.
    pub async fn query<A: IntoArgs, O: FromValue>(
        &self,
        query: QueryRef<A, O>,
        args: A,
    ) -> Result<O, ClientError> {
        let untyped = QueryRef::<A, Value>::new(query.path());
        let mut subscription = self.subscribe(untyped, args);
        match futures::StreamExt::next(&mut subscription).await {
            Some(result) => decode_reply(query.path(), result.map_err(ClientError::Function)),
            None => Err(ClientError::Closed),
        }
    }

    /// Runs a mutation. It is queued at once (mutations run in the order they
    /// are called) and resent after a reconnect until the server answers; the
    /// server runs it once however often it arrives. The future resolves only
    /// after every subscription of this client reflects the write.
    pub fn mutation<A: IntoArgs, O: FromValue>(
        &self,
        mutation: MutationRef<A, O>,
        args: A,
    ) -> impl Future<Output = Result<O, ClientError>> + Send + 'static {
        self.request(RequestKind::Mutation, mutation.path(), args.into_args())
    }

    /// Runs an action. It is queued at once; if the connection drops while it
    /// runs it fails with [`ClientError::ConnectionLost`] (it is not resent, as
    /// it may have had effects).
    pub fn action<A: IntoArgs, O: FromValue>(
        &self,
        action: ActionRef<A, O>,
        args: A,
    ) -> impl Future<Output = Result<O, ClientError>> + Send + 'static {
        self.request(RequestKind::Action, action.path(), args.into_args())
    }

    /// Uploads `bytes` as `content_type` to `upload_url` — the URL a
    /// mutation got from `ctx.storage().generate_upload_url()` — and returns
    /// the stored file's id, for a mutation to keep (see [`crate::files`]).
    /// The upload is its own HTTP request; the URL is the authority, not
    /// this client's identity.
    pub async fn upload(
        &self,
        upload_url: &str,
        bytes: impl AsRef<[u8]>,
        content_type: &str,
    ) -> Result<String, crate::files::UploadError> {
        crate::files::upload(upload_url, bytes, content_type).await
    }

    fn request<O: FromValue>(
        &self,
        kind: RequestKind,
        path: &'static str,
        args: Value,
    ) -> impl Future<Output = Result<O, ClientError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let _ = self.commands.send(Command::Request {
            kind,
            path: path.to_string(),
            args,
            reply,
        });
        async move { decode_reply(path, answer.await.unwrap_or(Err(ClientError::Closed))) }
    }
}

fn decode_reply<O: FromValue>(
    path: &str,
    reply: Result<Value, ClientError>,
) -> Result<O, ClientError> {
    O::from_value(reply?).map_err(|error| ClientError::Decode {
        path: path.to_string(),
        error,
    })
}

/// A live query: a `Stream` of its results, each valid at one snapshot, the
/// newest first. A consumer slower than the changes skips to the newest result
/// rather than queueing every intermediate one. Dropping it unsubscribes.
///
/// Every subscription of a client is updated from a Transition before any
/// mutation that Transition completes resolves.
///
/// A result that does not decode as `O` arrives as a [`FunctionError`] whose
/// message says so (and without `data`).
#[derive(Debug)]
pub struct Subscription<O = Value> {
    id: u64,
    path: &'static str,
    slot: Arc<Slot>,
    commands: mpsc::UnboundedSender<Command>,
    _output: PhantomData<fn() -> O>,
}

impl<O: FromValue> Subscription<O> {
    /// The latest result, without waiting (and without consuming it: the stream
    /// still yields it if it has not yet). `None` until the first one arrives.
    pub fn current(&self) -> Option<Result<O, FunctionError>> {
        let result = self.slot.latest()?;
        Some(decode(self.path, result))
    }

    /// The query's path.
    pub fn path(&self) -> &'static str {
        self.path
    }
}

impl<O: FromValue> Stream for Subscription<O> {
    type Item = Result<O, FunctionError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.slot
            .poll_next(cx)
            .map(|next| next.map(|result| decode(self.path, result)))
    }
}

impl<O> Drop for Subscription<O> {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Unsubscribe { id: self.id });
    }
}

fn decode<O: FromValue>(
    path: &str,
    result: Result<Value, FunctionError>,
) -> Result<O, FunctionError> {
    O::from_value(result?).map_err(|error| FunctionError {
        message: ClientError::Decode {
            path: path.to_string(),
            error,
        }
        .to_string(),
        data: None,
    })
}

/// The WebSocket URL of the sync endpoint for a server address.
fn sync_url(url: &str) -> Result<String, ClientError> {
    let invalid = || ClientError::InvalidUrl(url.to_string());
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    let (ws_scheme, is_http) = match scheme.to_ascii_lowercase().as_str() {
        "http" => ("ws", true),
        "https" => ("wss", true),
        "ws" => ("ws", false),
        "wss" => ("wss", false),
        _ => return Err(invalid()),
    };
    let rest = rest.trim_end_matches('/');
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(invalid());
    }
    // An http address names the server; a ws URL with a path names the endpoint.
    if is_http || rest == host {
        Ok(format!("{ws_scheme}://{rest}/api/sync"))
    } else {
        Ok(format!("{ws_scheme}://{rest}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_map_to_the_sync_endpoint() {
        let cases = [
            ("http://127.0.0.1:3210", "ws://127.0.0.1:3210/api/sync"),
            ("http://localhost:3210/", "ws://localhost:3210/api/sync"),
            (
                "https://example.com/base",
                "wss://example.com/base/api/sync",
            ),
            ("ws://127.0.0.1:1", "ws://127.0.0.1:1/api/sync"),
            ("ws://h:1/api/1.2.3/sync", "ws://h:1/api/1.2.3/sync"),
            ("HTTP://h", "ws://h/api/sync"),
        ];
        for (input, expected) in cases {
            assert_eq!(sync_url(input).as_deref(), Ok(expected), "{input}");
        }
        for bad in ["127.0.0.1:3210", "ftp://h", "http://", "http:///x"] {
            assert_eq!(
                sync_url(bad),
                Err(ClientError::InvalidUrl(bad.to_string())),
                "{bad}"
            );
        }
    }
}

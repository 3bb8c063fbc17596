//! The harness of the sync server's end-to-end tests (`tests/sync_*.rs`): a
//! small organization-scoped application, a real server on port 0 over a real
//! SQLite file in a temporary folder, a raw protocol client over
//! tokio-tungstenite that speaks [`ClientMessage`]/[`ServerMessage`], and a tiny
//! HTTP/1.1 client over a plain `TcpStream`.
//!
//! Every receive is bounded by [`RECV_TIMEOUT`], so a server that stays silent
//! fails the test instead of hanging it. The client checks on every Transition
//! it receives what the protocol promises about versions (DESIGN.md invariant
//! 4): `startVersion` is the previous `endVersion`, and `ts` never goes back.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use livebase_runtime::pagination::PaginationOpts;
use livebase_runtime::registry::Registry;
use livebase_runtime::server::{serve, RunningServer, ServerOptions};
use livebase_runtime::subscriptions::Stats;
use livebase_runtime::Error;
use livebase_schema::protocol::{
    ClientMessage, FunctionError, MutationSuccess, QueryId, QuerySetModification, RequestId,
    ServerMessage, SessionId, StateModification, StateVersion,
};
use livebase_schema::{define_table, obj, v, DocumentId, Object, Schema, Value};
use serde_json::Value as Json;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single receive waits before the test fails.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for. Used after a positive control
/// (another connection already got the same round's push), so it only has to
/// cover the gap between two sends of one flush.
pub const SILENCE: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------
// The application under test.

/// `notes`, shaped like the seed's tables: organization-scoped, with a second
/// index that range queries scan by `n`.
pub fn schema() -> Schema {
    Schema::new().table(
        "notes",
        define_table([
            ("organizationId", v::string()),
            ("body", v::string()),
            ("n", v::float64()),
            ("createdBy", v::string()),
        ])
        .index("by_organization", ["organizationId"])
        .index("by_organization_n", ["organizationId", "n"]),
    )
}

/// The registry every sync test serves:
///
/// | path | kind | what |
/// | --- | --- | --- |
/// | `notes:list {organizationId}` | query | the organization's notes, in creation order |
/// | `notes:range {organizationId, lo, hi}` | query | its notes with `lo <= n < hi`, by `n` |
/// | `notes:count {organizationId}` | query | how many notes it has (reads every one) |
/// | `notes:page {organizationId, paginationOpts}` | query | a page of its notes, newest first |
/// | `notes:add {organizationId, body, n}` | mutation | inserts one; returns its id |
/// | `notes:addMany {organizationId, body, count}` | mutation | inserts `count` (n = 0, 1, …) |
/// | `notes:set {id, body?, n?, organizationId?}` | mutation | patches the given fields |
/// | `notes:remove {id}` | mutation | deletes one |
/// | `notes:noop {}` | mutation | writes nothing |
/// | `notes:conflict {}` | mutation | fails with `CONFLICT` (and extra `errorData`) |
/// | `notes:conflictQuery {}` | query | fails the same way |
/// | `notes:panic {}` / `notes:panicQuery {}` / `notes:panicAction {}` | mutation / query / action | panic |
/// | `notes:secret {}` | internal query | |
/// | `notes:internalAdd {organizationId, body, n}` | internal mutation | as `notes:add` |
/// | `notes:addViaAction {organizationId, body, n}` | action | runs `notes:internalAdd` |
pub fn registry() -> Registry {
    let mut app = Registry::new(schema());
    let new_note = || {
        [
            ("organizationId", v::string()),
            ("body", v::string()),
            ("n", v::float64()),
        ]
    };

    app.query(
        "notes:list",
        [("organizationId", v::string())],
        |ctx, args| {
            let org = args.string("organizationId")?;
            let docs = ctx
                .db
                .query("notes")
                .with_index("by_organization", |q| q.eq("organizationId", org))
                .collect()?;
            Ok(Value::Array(docs))
        },
    );
    app.query(
        "notes:range",
        [
            ("organizationId", v::string()),
            ("lo", v::float64()),
            ("hi", v::float64()),
        ],
        |ctx, args| {
            let org = args.string("organizationId")?;
            let (lo, hi) = (args.f64("lo")?, args.f64("hi")?);
            let docs = ctx
                .db
                .query("notes")
                .with_index("by_organization_n", |q| {
                    q.eq("organizationId", org).gte("n", lo).lt("n", hi)
                })
                .collect()?;
            Ok(Value::Array(docs))
        },
    );
    app.query(
        "notes:count",
        [("organizationId", v::string())],
        |ctx, args| {
            let org = args.string("organizationId")?;
            let docs = ctx
                .db
                .query("notes")
                .with_index("by_organization", |q| q.eq("organizationId", org))
                .collect()?;
            Ok(docs.len() as f64)
        },
    );
    app.query(
        "notes:page",
        [
            ("organizationId", v::string()),
            ("paginationOpts", v::pagination_opts()),
        ],
        |ctx, args| {
            let org = args.string("organizationId")?;
            let opts = PaginationOpts::from_value(args.value("paginationOpts").expect("checked"))?;
            ctx.db
                .query("notes")
                .with_index("by_organization", |q| q.eq("organizationId", org))
                .order(livebase_runtime::store::Order::Desc)
                .paginate_with(&opts)
        },
    );
    app.mutation("notes:add", new_note(), |ctx, args| add_note(ctx.db, &args));
    app.internal_mutation("notes:internalAdd", new_note(), |ctx, args| {
        add_note(ctx.db, &args)
    });
    app.mutation(
        "notes:addMany",
        [
            ("organizationId", v::string()),
            ("body", v::string()),
            ("count", v::float64()),
        ],
        |ctx, args| {
            let org = args.string("organizationId")?;
            let body = args.string("body")?;
            for i in 0..args.f64("count")? as usize {
                ctx.db.insert(
                    "notes",
                    obj! {
                        "organizationId" => org.as_str(),
                        "body" => body.as_str(),
                        "n" => i as f64,
                        "createdBy" => "tester",
                    },
                )?;
            }
            Ok(Value::Null)
        },
    );
    app.mutation(
        "notes:set",
        [
            ("id", v::id("notes")),
            ("body", v::optional(v::string())),
            ("n", v::optional(v::float64())),
            ("organizationId", v::optional(v::string())),
        ],
        |ctx, args| {
            let id = args.id("id", "notes")?;
            let mut patch = Object::new();
            for field in ["body", "n", "organizationId"] {
                if let Some(value) = args.value(field) {
                    patch.insert(field.to_string(), value.clone());
                }
            }
            ctx.db.patch(&id, patch)?;
            Ok(Value::Null)
        },
    );
    app.mutation("notes:remove", [("id", v::id("notes"))], |ctx, args| {
        let id = args.id("id", "notes")?;
        ctx.db.delete(&id)?;
        Ok(Value::Null)
    });
    app.mutation("notes:noop", [], |_ctx, _args| Ok(Value::Null));
    app.mutation(
        "notes:conflict",
        [],
        |_ctx, _args| -> Result<Value, Error> { Err(conflict()) },
    );
    app.query(
        "notes:conflictQuery",
        [],
        |_ctx, _args| -> Result<Value, Error> { Err(conflict()) },
    );
    app.mutation("notes:panic", [], |_ctx, _args| -> Result<Value, Error> {
        panic!("the notes:panic handler panicked on purpose")
    });
    app.query(
        "notes:panicQuery",
        [],
        |_ctx, _args| -> Result<Value, Error> {
            panic!("the notes:panicQuery handler panicked on purpose")
        },
    );
    app.action("notes:panicAction", [], |_ctx, _args| async move {
        if true {
            panic!("the notes:panicAction handler panicked on purpose");
        }
        Ok(Value::Null)
    });
    app.internal_query("notes:secret", [], |_ctx, _args| Ok("the secret"));
    app.action("notes:addViaAction", new_note(), |ctx, args| async move {
        ctx.run_mutation("notes:internalAdd", args.into_value())
            .await
    });
    app
}

fn add_note(
    tx: &mut livebase_runtime::transaction::Transaction,
    args: &livebase_runtime::registry::Args,
) -> Result<Value, Error> {
    let id = tx.insert(
        "notes",
        obj! {
            "organizationId" => args.string("organizationId")?,
            "body" => args.string("body")?,
            "n" => args.f64("n")?,
            "createdBy" => "tester",
        },
    )?;
    Ok(Value::from(id.as_str()))
}

/// The error `notes:conflict` fails with: a code, a message and one extra field.
fn conflict() -> Error {
    let mut data = Object::new();
    data.insert("field".into(), Value::from("body"));
    Error::App {
        code: livebase_runtime::ErrorCode::Conflict,
        message: "that note is taken".into(),
        data,
    }
}

/// The `args` of a call: the wire carries one object in an array.
pub fn args(fields: Value) -> Vec<Value> {
    vec![fields]
}

/// `{organizationId}`.
pub fn org(organization_id: &str) -> Value {
    obj! { "organizationId" => organization_id }
}

/// `{organizationId, body, n}`, the arguments of `notes:add`.
pub fn note(organization_id: &str, body: &str, n: f64) -> Value {
    obj! { "organizationId" => organization_id, "body" => body, "n" => n }
}

/// The `_id` of a document value.
pub fn id_of(doc: &Value) -> String {
    doc.get("_id")
        .and_then(Value::as_str)
        .expect("a document has an _id")
        .to_string()
}

/// The documents of a query result that is an array.
pub fn docs(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        other => panic!("expected an array of documents, got {other:?}"),
    }
}

/// Checks that a string is a `notes` id.
pub fn is_note_id(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| DocumentId::parse_in(s, "notes").is_some())
}

// ---------------------------------------------------------------------------
// The server.

/// A server on port 0 over a SQLite file in its own temporary folder.
pub struct TestServer {
    server: RunningServer,
    dir: TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary folder");
        TestServer::start_in(dir).await
    }

    async fn start_in(dir: TempDir) -> TestServer {
        TestServer::start_with(dir, registry()).await
    }

    async fn start_with(dir: TempDir, app: Registry) -> TestServer {
        TestServer::start_with_options(dir, app, |_| {}).await
    }

    /// A server whose options `tune` changes first (shorter timeouts, lower
    /// caps).
    pub async fn start_tuned(tune: impl FnOnce(&mut ServerOptions)) -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary folder");
        TestServer::start_with_options(dir, registry(), tune).await
    }

    async fn start_with_options(
        dir: TempDir,
        app: Registry,
        tune: impl FnOnce(&mut ServerOptions),
    ) -> TestServer {
        let mut options = ServerOptions {
            listen: "127.0.0.1:0".parse().expect("an address"),
            data_dir: dir.path().to_path_buf(),
            ..ServerOptions::default()
        };
        tune(&mut options);
        let server = serve(app, options).await.expect("the server starts");
        TestServer { server, dir }
    }

    /// Shuts the server down and serves the same data folder with another
    /// application: a redeploy.
    pub async fn redeploy(self, app: Registry) -> TestServer {
        let TestServer { server, dir } = self;
        timeout(Duration::from_secs(20), server.shutdown())
            .await
            .expect("the server shuts down in time");
        TestServer::start_with(dir, app).await
    }

    /// Shuts the server down (closing every connection) and serves the same
    /// data folder again, on a new port.
    pub async fn restart(self) -> TestServer {
        let TestServer { server, dir } = self;
        timeout(Duration::from_secs(20), server.shutdown())
            .await
            .expect("the server shuts down in time");
        TestServer::start_in(dir).await
    }

    pub async fn shutdown(self) {
        timeout(Duration::from_secs(20), self.server.shutdown())
            .await
            .expect("the server shuts down in time");
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The server's data folder (its token key is there).
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The sync endpoint as the npm client names it (with its version).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/1.48.0/sync", self.server.addr)
    }

    /// The server's executor, to inspect its store in process.
    pub fn executor(&self) -> &livebase_runtime::executor::Executor {
        &self.server.state.executor
    }

    pub fn stats(&self) -> &Stats {
        self.server.state.subscriptions.stats()
    }

    /// Query evaluations the subscription worker has run so far.
    pub fn evaluations(&self) -> u64 {
        self.stats()
            .evaluations
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn dropped_slow(&self) -> u64 {
        self.stats()
            .dropped_slow
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A client connected with a fresh session.
    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url(), SessionId::random()).await
    }

    /// A fresh evaluation over HTTP (`POST /api/query`): the value, or the
    /// error message.
    pub async fn query(&self, path: &str, fields: Value) -> Result<Value, String> {
        let (status, body) = call(self.addr(), "query", path, fields).await;
        match status {
            200 => Ok(Value::from_json(&body["value"], "value").expect("a Convex value")),
            _ => Err(body["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .to_string()),
        }
    }

    /// Runs a mutation over HTTP and returns its value (panics on failure).
    pub async fn mutate(&self, path: &str, fields: Value) -> Value {
        let (status, body) = call(self.addr(), "mutation", path, fields).await;
        assert_eq!(status, 200, "{path} failed: {body}");
        Value::from_json(&body["value"], "value").expect("a Convex value")
    }

    /// The number of notes of an organization, evaluated fresh.
    pub async fn count(&self, organization_id: &str) -> f64 {
        let value = self
            .query("notes:count", org(organization_id))
            .await
            .expect("notes:count succeeds");
        value.as_f64().expect("a number")
    }
}

// ---------------------------------------------------------------------------
// The protocol client.

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A Transition, as received.
#[derive(Clone, Debug)]
pub struct Transition {
    pub start: StateVersion,
    pub end: StateVersion,
    pub modifications: Vec<StateModification>,
}

impl Transition {
    /// The value of `QueryUpdated` for `query`, if this Transition has one.
    pub fn updated(&self, query: u32) -> Option<&Value> {
        self.modifications.iter().find_map(|m| match m {
            StateModification::QueryUpdated {
                query_id, value, ..
            } if query_id.0 == query => Some(value.value()),
            _ => None,
        })
    }

    /// The error of `QueryFailed` for `query`, if this Transition has one.
    pub fn failed(&self, query: u32) -> Option<&FunctionError> {
        self.modifications.iter().find_map(|m| match m {
            StateModification::QueryFailed {
                query_id, error, ..
            } if query_id.0 == query => Some(error),
            _ => None,
        })
    }

    /// The query ids this Transition carries a modification for.
    pub fn query_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .modifications
            .iter()
            .map(|m| match m {
                StateModification::QueryUpdated { query_id, .. }
                | StateModification::QueryFailed { query_id, .. }
                | StateModification::QueryRemoved { query_id } => query_id.0,
            })
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// What arrived on a socket.
#[derive(Debug)]
pub enum Frame {
    Message(ServerMessage),
    /// A close frame: its code and reason, if it had them.
    Close(Option<(u16, String)>),
    /// The stream ended (or failed) without a close frame.
    Ended(String),
}

/// A raw sync-protocol client: sends [`ClientMessage`]s, receives
/// [`ServerMessage`]s, and checks versions on every Transition.
pub struct Client {
    socket: Socket,
    pub session: SessionId,
    /// Messages received while waiting for something else, oldest first.
    stash: VecDeque<ServerMessage>,
    /// The query-set version of the last `ModifyQuerySet` sent.
    pub query_set: u32,
    /// The `endVersion` of the last Transition received.
    pub version: StateVersion,
    next_request: u32,
}

/// Opens a WebSocket to `url` without sending anything.
pub async fn connect_raw(url: &str) -> Socket {
    let (socket, _) = timeout(RECV_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the WebSocket handshake in time")
        .expect("the WebSocket handshake succeeds");
    socket
}

/// The `Connect` message a client opens with.
pub fn connect_message(session: &SessionId, connection_count: u32) -> ClientMessage {
    ClientMessage::Connect {
        session_id: session.clone(),
        connection_count,
        last_close_reason: Some("InitialConnect".into()),
        max_observed_timestamp: None,
        client_ts: Some(0),
    }
}

impl Client {
    /// Connects and sends `Connect` for `session`.
    pub async fn connect(url: &str, session: SessionId) -> Client {
        Client::connect_with(url, connect_message(&session, 0)).await
    }

    /// Connects and sends this `Connect` message.
    pub async fn connect_with(url: &str, connect: ClientMessage) -> Client {
        let mut client = Client::without_connect(url).await;
        if let ClientMessage::Connect { session_id, .. } = &connect {
            client.session = session_id.clone();
        }
        client.send(&connect).await;
        client
    }

    /// Opens the WebSocket but sends nothing, not even `Connect`.
    pub async fn without_connect(url: &str) -> Client {
        Client {
            socket: connect_raw(url).await,
            session: SessionId::random(),
            stash: VecDeque::new(),
            query_set: 0,
            version: StateVersion::INITIAL,
            next_request: 0,
        }
    }

    pub async fn send(&mut self, msg: &ClientMessage) {
        self.send_raw(Message::text(msg.to_text())).await;
    }

    /// Sends any frame (malformed ones included).
    pub async fn send_raw(&mut self, frame: Message) {
        self.try_send_raw(frame).await.expect("sending succeeds");
    }

    /// Sends a frame the server may refuse before it has read all of it.
    pub async fn try_send_raw(
        &mut self,
        frame: Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        timeout(RECV_TIMEOUT, self.socket.send(frame))
            .await
            .expect("sending in time")
    }

    /// The next frame from the socket (not the stash), skipping pings at both
    /// levels; `None` when nothing arrives within `wait`.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Frame> {
        self.next_frame_inner(wait, true).await
    }

    /// As [`Client::next_frame`], but returns the protocol's `Ping` messages.
    pub async fn next_frame_with_pings(&mut self, wait: Duration) -> Option<Frame> {
        self.next_frame_inner(wait, false).await
    }

    async fn next_frame_inner(&mut self, wait: Duration, skip_pings: bool) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next()).await;
            let frame = match next {
                Err(_) => return None,
                Ok(None) => Frame::Ended("end of stream".into()),
                Ok(Some(Err(e))) => Frame::Ended(e.to_string()),
                Ok(Some(Ok(Message::Text(text)))) => {
                    let msg = ServerMessage::from_text(text.as_str())
                        .unwrap_or_else(|e| panic!("the server sent {text:?}: {e}"));
                    if skip_pings && msg == ServerMessage::Ping {
                        continue;
                    }
                    self.check_versions(&msg);
                    Frame::Message(msg)
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    Frame::Close(frame.map(|CloseFrame { code, reason }| {
                        (u16::from(code), reason.as_str().to_string())
                    }))
                }
                Ok(Some(Ok(Message::Binary(_)))) => panic!("the server sent a binary frame"),
                Ok(Some(Ok(_))) => continue, // WebSocket ping/pong
            };
            return Some(frame);
        }
    }

    /// Invariant 4, checked on every Transition that arrives.
    fn check_versions(&mut self, msg: &ServerMessage) {
        if let ServerMessage::Transition {
            start_version,
            end_version,
            ..
        } = msg
        {
            assert_eq!(
                *start_version, self.version,
                "a Transition's startVersion must be the previous endVersion"
            );
            assert!(
                end_version.ts >= start_version.ts,
                "ts went back: {start_version:?} -> {end_version:?}"
            );
            assert!(end_version.query_set >= start_version.query_set);
            assert!(end_version.identity >= start_version.identity);
            self.version = *end_version;
        }
    }

    /// The next message (stashed first); fails the test after
    /// [`RECV_TIMEOUT`] or when the connection ends.
    pub async fn recv(&mut self) -> ServerMessage {
        if let Some(msg) = self.stash.pop_front() {
            return msg;
        }
        match self.next_frame(RECV_TIMEOUT).await {
            Some(Frame::Message(msg)) => msg,
            None => panic!("no message within {RECV_TIMEOUT:?}"),
            Some(other) => panic!("the connection ended while a message was expected: {other:?}"),
        }
    }

    /// Fails the test if any message arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(msg) = self.stash.pop_front() {
            panic!("expected nothing, but {msg:?} had arrived");
        }
        if let Some(frame) = self.next_frame(wait).await {
            panic!("expected nothing within {wait:?}, got {frame:?}");
        }
    }

    /// The next Transition, failing the test on any other message.
    pub async fn transition(&mut self) -> Transition {
        match self.recv().await {
            ServerMessage::Transition {
                start_version,
                end_version,
                modifications,
                ..
            } => Transition {
                start: start_version,
                end: end_version,
                modifications,
            },
            other => panic!("expected a Transition, got {other:?}"),
        }
    }

    /// Transitions until one ends at `ts` or later; returns all of them.
    pub async fn transitions_until(&mut self, ts: livebase_schema::Timestamp) -> Vec<Transition> {
        let mut seen = Vec::new();
        loop {
            let t = self.transition().await;
            let done = t.end.ts >= ts;
            seen.push(t);
            if done {
                return seen;
            }
        }
    }

    /// Sends one `ModifyQuerySet` and returns the Transition that ends at its
    /// new version (after any Transition before it).
    pub async fn modify(&mut self, modifications: Vec<QuerySetModification>) -> Transition {
        let base = self.query_set;
        self.query_set += 1;
        self.send(&ClientMessage::ModifyQuerySet {
            base_version: base,
            new_version: self.query_set,
            modifications,
        })
        .await;
        loop {
            let t = self.transition().await;
            if t.end.query_set == self.query_set {
                return t;
            }
            assert!(t.end.query_set < self.query_set);
        }
    }

    /// Adds queries `(queryId, path, args)`; returns the Transition that
    /// answers them.
    pub async fn subscribe(&mut self, queries: &[(u32, &str, Value)]) -> Transition {
        let adds = queries
            .iter()
            .map(|(id, path, fields)| add(*id, path, fields.clone()))
            .collect();
        self.modify(adds).await
    }

    /// A fresh request id.
    pub fn request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    /// Sends a `Mutation` with this request id and waits for its response;
    /// anything else received meanwhile is stashed.
    pub async fn mutation_as(
        &mut self,
        request_id: RequestId,
        path: &str,
        fields: Value,
    ) -> Result<MutationSuccess, FunctionError> {
        self.send(&ClientMessage::Mutation {
            request_id,
            udf_path: path.to_string(),
            args: args(fields),
            component_path: None,
        })
        .await;
        self.response_to(request_id, true).await
    }

    /// A `Mutation` with a fresh request id.
    pub async fn mutation(
        &mut self,
        path: &str,
        fields: Value,
    ) -> Result<MutationSuccess, FunctionError> {
        let id = self.request_id();
        self.mutation_as(id, path, fields).await
    }

    /// An `Action` with a fresh request id.
    pub async fn action(&mut self, path: &str, fields: Value) -> Result<Value, FunctionError> {
        let request_id = self.request_id();
        self.send(&ClientMessage::Action {
            request_id,
            udf_path: path.to_string(),
            args: args(fields),
            component_path: None,
        })
        .await;
        self.response_to(request_id, false)
            .await
            .map(|success| success.value)
    }

    async fn response_to(
        &mut self,
        request_id: RequestId,
        mutation: bool,
    ) -> Result<MutationSuccess, FunctionError> {
        let mut skipped = VecDeque::new();
        let result = loop {
            let msg = match self.stash.pop_front() {
                Some(m) => m,
                None => match self.next_frame(RECV_TIMEOUT).await {
                    Some(Frame::Message(m)) => m,
                    None => panic!("no response to request {request_id} in {RECV_TIMEOUT:?}"),
                    Some(other) => panic!("the connection ended awaiting a response: {other:?}"),
                },
            };
            match msg {
                ServerMessage::MutationResponse {
                    request_id: id,
                    result,
                    ..
                } if mutation && id == request_id => break result,
                ServerMessage::ActionResponse {
                    request_id: id,
                    result,
                    ..
                } if !mutation && id == request_id => {
                    break result.map(|value| MutationSuccess {
                        value,
                        ts: livebase_schema::Timestamp::ZERO,
                    })
                }
                other => skipped.push_back(other),
            }
        };
        skipped.append(&mut self.stash);
        self.stash = skipped;
        result
    }

    /// Everything stashed so far, as Transitions (other messages fail the test).
    pub fn stashed_transitions(&mut self) -> Vec<Transition> {
        self.stash
            .drain(..)
            .map(|m| match m {
                ServerMessage::Transition {
                    start_version,
                    end_version,
                    modifications,
                    ..
                } => Transition {
                    start: start_version,
                    end: end_version,
                    modifications,
                },
                other => panic!("expected only Transitions, got {other:?}"),
            })
            .collect()
    }

    /// Expects `FatalError` and then a close frame; returns the error and the
    /// close code.
    pub async fn expect_fatal_then_close(&mut self) -> (String, Option<u16>) {
        let error = match self.next_frame(RECV_TIMEOUT).await {
            Some(Frame::Message(ServerMessage::FatalError { error })) => error,
            other => panic!("expected a FatalError, got {other:?}"),
        };
        (error, self.expect_close().await)
    }

    /// Reads (and drops) messages until the connection closes; returns the
    /// close code, `None` when it ended without a close frame.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next_frame(RECV_TIMEOUT).await {
                None => panic!("the connection stayed open for {RECV_TIMEOUT:?}"),
                Some(Frame::Message(_)) => continue,
                Some(Frame::Close(frame)) => return frame.map(|(code, _)| code),
                Some(Frame::Ended(_)) => return None,
            }
        }
    }

    /// Closes the connection from this side.
    pub async fn close(mut self) {
        let _ = timeout(RECV_TIMEOUT, self.socket.close(None)).await;
    }
}

/// An `Add` modification.
pub fn add(query_id: u32, path: &str, fields: Value) -> QuerySetModification {
    QuerySetModification::Add {
        query_id: QueryId(query_id),
        udf_path: path.to_string(),
        args: args(fields),
        journal: None,
        component_path: None,
    }
}

/// A `Remove` modification.
pub fn remove(query_id: u32) -> QuerySetModification {
    QuerySetModification::Remove {
        query_id: QueryId(query_id),
    }
}

/// The `code` of an error's `errorData`.
pub fn error_code(error: &FunctionError) -> Option<String> {
    error
        .data
        .as_ref()
        .and_then(|d| d.get("code"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Whether a message is exactly `[Request ID: <id>] Server error`; returns
/// the id.
pub fn server_error_request_id(message: &str) -> Option<String> {
    let id = message
        .strip_prefix("[Request ID: ")?
        .strip_suffix("] Server error")?;
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric())).then(|| id.to_string())
}

// ---------------------------------------------------------------------------
// A tiny HTTP/1.1 client.

/// A response: status, headers (names lowercased) and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one request on a fresh connection (`Connection: close`) and reads the
/// whole response.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let stream = TcpStream::connect(addr).await.expect("connecting");
    http_on(stream, method, path, headers, body).await
}

/// As [`http`], from the local address `from` (any of 127.0.0.0/8 reaches a
/// server on 127.0.0.1): another client address, for per-address caps.
pub async fn http_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> HttpResponse {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("binding the client address");
    let stream = socket.connect(addr).await.expect("connecting");
    http_on(stream, method, path, &[], b"").await
}

/// Sends one request (`Connection: close`) on `stream` and reads the whole
/// response.
pub async fn http_on(
    stream: TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let addr = stream.peer_addr().expect("a connected stream");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    http_raw(stream, &raw).await
}

/// Writes `request` as it is (a head announcing more body than it carries,
/// say) and reads the whole response, until the server closes.
pub async fn http_raw(mut stream: TcpStream, request: &[u8]) -> HttpResponse {
    let exchange = async {
        // A server may answer (413) and close before reading a large body:
        // a failed write is fine as long as the response can be read.
        let _ = stream.write_all(request).await;
        let mut raw = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                Err(e) if raw.is_empty() => panic!("reading the response: {e}"),
                Err(_) => break, // reset after a complete answer
            }
        }
        raw
    };
    let raw = timeout(RECV_TIMEOUT, exchange)
        .await
        .expect("an HTTP response in time");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = std::str::from_utf8(&raw[..split]).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status in {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).expect("a chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("a hex chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// `POST` a JSON body; the status and the JSON reply.
pub async fn post_json(addr: SocketAddr, path: &str, body: &Json) -> (u16, Json) {
    let response = http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    (response.status, response.json())
}

/// Calls a function as the npm `ConvexHttpClient` does:
/// `POST /api/<kind> {path, format, args: [{..}]}`.
pub async fn call(addr: SocketAddr, kind: &str, path: &str, fields: Value) -> (u16, Json) {
    let body = serde_json::json!({
        "path": path,
        "format": "convex_encoded_json",
        "args": [fields.to_json()],
    });
    post_json(addr, &format!("/api/{kind}"), &body).await
}

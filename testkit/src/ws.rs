//! A raw sync-protocol client over tokio-tungstenite: sends [`ClientMessage`]s,
//! receives [`ServerMessage`]s, and checks on every Transition it receives
//! what the protocol promises about versions (`docs/reference/protocol.md`):
//! `startVersion` is the previous `endVersion`, and `ts` never goes back.
//!
//! Every receive is bounded by [`PATIENCE`]; messages that arrive while the
//! test waits for something else are kept (the stash) and handed out first.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use livebase_schema::protocol::{
    AuthenticationToken, ClientMessage, FunctionError, MutationSuccess, QueryId,
    QuerySetModification, RequestId, ServerMessage, SessionId, StateModification, StateVersion,
};
use livebase_schema::Value;
use serde_json::Value as Json;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::PATIENCE;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A Transition, as received.
#[derive(Clone, Debug)]
pub struct Transition {
    pub start: StateVersion,
    pub end: StateVersion,
    pub modifications: Vec<StateModification>,
}

impl Transition {
    /// The Transition a message is, or the message back if it is another.
    pub fn of(msg: ServerMessage) -> Result<Transition, ServerMessage> {
        match msg {
            ServerMessage::Transition {
                start_version,
                end_version,
                modifications,
                ..
            } => Ok(Transition {
                start: start_version,
                end: end_version,
                modifications,
            }),
            other => Err(other),
        }
    }

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
    /// The identity version of the last `Authenticate` the server accepted.
    identity: u32,
    next_request: u32,
}

/// Opens a WebSocket to `url` without sending anything.
pub async fn connect_raw(url: &str) -> Socket {
    let (socket, _) = timeout(PATIENCE, tokio_tungstenite::connect_async(url))
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
            identity: 0,
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
        timeout(PATIENCE, self.socket.send(frame))
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

    /// Invariant 4 (`docs/reference/invariants.md`), checked on every
    /// Transition that arrives.
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
    /// [`PATIENCE`] or when the connection ends.
    pub async fn recv(&mut self) -> ServerMessage {
        if let Some(msg) = self.stash.pop_front() {
            return msg;
        }
        match self.next_frame(PATIENCE).await {
            Some(Frame::Message(msg)) => msg,
            None => panic!("no message within {PATIENCE:?}"),
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
        Transition::of(self.recv().await)
            .unwrap_or_else(|other| panic!("expected a Transition, got {other:?}"))
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

    /// Sends a `ModifyQuerySet` that adds query `query_id` (arguments as
    /// Convex JSON) without waiting for its answer: read it with
    /// [`Client::next_result`].
    pub async fn add_query(&mut self, query_id: u32, path: &str, args: Json) {
        let base = self.query_set;
        self.query_set += 1;
        let fields = Value::from_json(&args, "args").expect("Convex JSON arguments");
        self.send(&ClientMessage::ModifyQuerySet {
            base_version: base,
            new_version: self.query_set,
            modifications: vec![add(query_id, path, fields)],
        })
        .await;
    }

    /// The next result pushed for `query_id` (as Convex JSON), skipping
    /// Transitions that do not mention it; fails the test after [`PATIENCE`]
    /// in all.
    pub async fn next_result(&mut self, query_id: u32) -> Result<Json, FunctionError> {
        let wait = async {
            loop {
                if let ServerMessage::Transition { modifications, .. } = self.recv().await {
                    for m in modifications {
                        match m {
                            StateModification::QueryUpdated {
                                query_id: id,
                                value,
                                ..
                            } if id.0 == query_id => return Ok(value.to_json()),
                            StateModification::QueryFailed {
                                query_id: id,
                                error,
                                ..
                            } if id.0 == query_id => return Err(error),
                            _ => {}
                        }
                    }
                }
            }
        };
        timeout(PATIENCE, wait)
            .await
            .unwrap_or_else(|_| panic!("no result for query {query_id} in {PATIENCE:?}"))
    }

    /// Sends `Authenticate` with a token; the server answers with a Transition
    /// (accepted) or an `AuthError` (refused), which is returned. A Transition
    /// may carry the queries' new results, so it is also left for
    /// [`Client::next_result`] to read.
    pub async fn authenticate(&mut self, token: &str) -> ServerMessage {
        self.send(&ClientMessage::Authenticate {
            base_version: self.identity,
            token: AuthenticationToken::User(token.to_string()),
        })
        .await;
        let reply = self.recv().await;
        if matches!(reply, ServerMessage::Transition { .. }) {
            self.identity += 1;
            self.stash.push_front(reply.clone());
        }
        reply
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
            args: vec![fields],
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
            args: vec![fields],
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
                None => match self.next_frame(PATIENCE).await {
                    Some(Frame::Message(m)) => m,
                    None => panic!("no response to request {request_id} in {PATIENCE:?}"),
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
            .map(|m| {
                Transition::of(m)
                    .unwrap_or_else(|other| panic!("expected only Transitions, got {other:?}"))
            })
            .collect()
    }

    /// Expects `FatalError` and then a close frame; returns the error and the
    /// close code.
    pub async fn expect_fatal_then_close(&mut self) -> (String, Option<u16>) {
        let error = match self.next_frame(PATIENCE).await {
            Some(Frame::Message(ServerMessage::FatalError { error })) => error,
            other => panic!("expected a FatalError, got {other:?}"),
        };
        (error, self.expect_close().await)
    }

    /// Reads (and drops) messages until the connection closes; returns the
    /// close code, `None` when it ended without a close frame.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next_frame(PATIENCE).await {
                None => panic!("the connection stayed open for {PATIENCE:?}"),
                Some(Frame::Message(_)) => continue,
                Some(Frame::Close(frame)) => return frame.map(|(code, _)| code),
                Some(Frame::Ended(_)) => return None,
            }
        }
    }

    /// Closes the connection from this side.
    pub async fn close(mut self) {
        let _ = timeout(PATIENCE, self.socket.close(None)).await;
    }
}

/// An `Add` modification.
pub fn add(query_id: u32, path: &str, fields: Value) -> QuerySetModification {
    QuerySetModification::Add {
        query_id: QueryId(query_id),
        udf_path: path.to_string(),
        args: vec![fields],
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

/// The `code` of an error's `errorData`, if it has one.
pub fn error_code(error: &FunctionError) -> Option<&str> {
    error
        .data
        .as_ref()
        .and_then(|d| d.get("code"))
        .and_then(Value::as_str)
}

/// Whether a message is exactly `[Request ID: <id>] Server error`; returns
/// the id.
pub fn server_error_request_id(message: &str) -> Option<String> {
    let id = message
        .strip_prefix("[Request ID: ")?
        .strip_suffix("] Server error")?;
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric())).then(|| id.to_string())
}

impl Client {
    /// As a signed-in client of the application does: a
    /// `files:generateUploadUrl`, `bytes` `POST`ed to it as `content_type`
    /// (to `addr`, whatever host the URL names), and the file made the
    /// caller's avatar (`userProfiles:upsert`, `userProfiles:setAvatar`).
    /// The file's id.
    pub async fn upload_avatar(
        &mut self,
        addr: std::net::SocketAddr,
        content_type: &str,
        bytes: &[u8],
    ) -> String {
        let fields = |json: serde_json::Value| Value::from_json(&json, "args").expect("args");
        let url = self
            .mutation("files:generateUploadUrl", fields(serde_json::json!({})))
            .await
            .expect("an upload URL")
            .value
            .to_json();
        let path = crate::mail::path_of(url.as_str().expect("a URL"));
        let reply = crate::http::http(
            addr,
            "POST",
            &path,
            &[("Content-Type", content_type)],
            bytes,
        )
        .await;
        assert_eq!(reply.status, 200, "upload: {}", reply.body);
        let id = reply.body["storageId"].as_str().expect("an id").to_string();
        self.mutation(
            "userProfiles:upsert",
            fields(serde_json::json!({"displayName": "Ada"})),
        )
        .await
        .expect("a profile");
        self.mutation(
            "userProfiles:setAvatar",
            fields(serde_json::json!({"storageId": id})),
        )
        .await
        .expect("the avatar is set");
        id
    }
}

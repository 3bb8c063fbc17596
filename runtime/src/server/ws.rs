//! One WebSocket connection of the sync protocol: a [`Handler`] loops over a
//! closed set of events — a client frame, a Transition from the subscription
//! worker, an action's response, the idle timer — and answers each (the server's
//! shutdown ends every outbound queue).
//! A connection's mutations are queued on the writer as they arrive (up to
//! [`MAX_MUTATIONS_IN_FLIGHT_PER_CONNECTION`]), commit in the order sent —
//! together, when the client sends several without waiting — and are
//! answered in that order; actions run concurrently and answer when done.
//!
//! Connections are capped in total and per client address (refused before
//! the upgrade, `503` and `429`) and per signed-in user (closed, 1008, when
//! one more signs in as the user), must send `Connect` in time, and must
//! answer the WebSocket pings sent every [`PING_INTERVAL`]: a peer that is
//! gone, or that stopped reading, is closed (1008) instead of held. A
//! connection runs at most [`MAX_ACTIONS_PER_CONNECTION`] actions at once,
//! and every call it makes counts against its caller's calls in flight
//! ([`super::inflight`]); a call past either is answered `LIMIT_EXCEEDED`.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use livebase_schema::protocol::{
    AuthenticationToken, ClientMessage, MutationSuccess, RequestId, ServerMessage, SessionId,
};
use livebase_schema::{Timestamp, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, Instant};

use super::inflight::CallSlot;
use super::listener::{too_many, AddressSlot, ClientAddr, Slot};
use super::woken::Woken;
use super::{AppState, MAX_MESSAGE_SIZE, OUTBOUND_QUEUE};
use crate::context::BoxFuture;
use crate::error::{Error, ErrorCode};
use crate::executor::{Caller, RequestKey};
use crate::identity::Identity;
use crate::subscriptions::{ConnId, ConnectionBudget, Ended, Event, OutboundRx};

/// Most WebSocket connections served at once; more are refused with 503.
pub const MAX_CONNECTIONS: usize = 20_000;
/// Most WebSocket connections from one client address (as
/// [`super::listener::client_key`] counts them); more are refused with `429`
/// and `Retry-After`. Room for an office behind one NAT address.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 1_000;
/// Most WebSocket connections signed in as one user at once, whatever their
/// addresses; one more that signs in as the user is closed (1008). Room for
/// every tab and device of one person, not for a botnet sharing an account.
pub const MAX_CONNECTIONS_PER_USER: usize = 256;
/// Most actions one connection runs at once; one more is answered
/// `LIMIT_EXCEEDED` without being started.
pub const MAX_ACTIONS_PER_CONNECTION: usize = 64;
/// Most mutations one connection has in flight (queued on the writer, not
/// yet answered): while it has that many, its frames are not read, so a
/// client sending faster than the writer commits is slowed, not refused. A
/// client that sends without waiting (as the `convex` npm client does) has
/// up to this many committed together.
pub const MAX_MUTATIONS_IN_FLIGHT_PER_CONNECTION: usize = 32;
/// Time a new WebSocket has to send `Connect`; then it is closed (1002).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connection is sent a WebSocket ping (every browser and client
/// library answers with a pong on its own); an idle one also gets the
/// protocol's `Ping` after this long without a message.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Time a peer has to answer a ping before the connection is closed (1008):
/// a peer that is gone, or that stopped reading, no longer holds a slot.
pub const PONG_TIMEOUT: Duration = Duration::from_secs(30);
/// Time one outbound frame may take to be accepted by the socket.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Close codes this server uses.
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
/// A client past one of its budgets (see [`ConnectionBudget`]).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_OVERLOADED: u16 = 1013;

pub async fn upgrade(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddr>>,
    ws: WebSocketUpgrade,
) -> Response {
    // Without the listener (a router served some other way) there is no
    // address to count by, and only the global cap applies.
    let slot = match client {
        Some(Extension(ClientAddr(addr))) => match state.connections_per_address.try_hold(addr) {
            Some(slot) => Some(slot),
            None => {
                return too_many(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connections from your address",
                )
            }
        },
        None => None,
    };
    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
        return too_many(StatusCode::SERVICE_UNAVAILABLE, "too many connections");
    };
    let client = client.map(|Extension(ClientAddr(addr))| addr);
    // Small buffers: tungstenite's defaults (128 KiB each way) would cost an
    // idle connection a quarter of a megabyte.
    ws.max_message_size(MAX_MESSAGE_SIZE)
        .max_frame_size(MAX_MESSAGE_SIZE)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| async move {
            Handler::run(socket, state, client, (permit, slot)).await
        })
}

/// Why a connection ended.
enum End {
    ClientClosed,
    Close(u16, String),
}

struct Handler {
    state: AppState,
    conn: ConnId,
    sink: SplitSink<WebSocket, Message>,
    session: Option<SessionId>,
    identity: Identity,
    actions: mpsc::Sender<ServerMessage>,
    last_sent: Instant,
    /// When the unanswered WebSocket ping was sent, if one is.
    ping_sent: Option<Instant>,
    /// When the next WebSocket ping is due.
    next_ping: Instant,
    /// What this connection may make the subscription worker do.
    budget: ConnectionBudget,
    /// The client's address as the caps count it, if known.
    client: Option<IpAddr>,
    /// This connection's place among its user's connections, while signed in.
    user_slot: Option<Slot<String>>,
    /// Permits for the actions this connection may run at once.
    actions_running: Arc<Semaphore>,
    /// Actions started whose response has not come back yet: the responses'
    /// channel is looked at only while there are some.
    actions_awaited: usize,
    /// Mutations sent and not yet answered, oldest first. Each is queued on
    /// the writer as it arrives, so a client that sends several without
    /// waiting has them committed together, in order; they are answered in
    /// the order sent.
    mutations: VecDeque<Pending>,
}

/// A mutation in flight.
struct Pending {
    request_id: RequestId,
    outcome: BoxFuture<Result<(Value, Timestamp), Error>>,
    /// Its place among its caller's calls in flight, held until answered.
    _call: Option<CallSlot>,
}

impl Handler {
    async fn run(
        socket: WebSocket,
        state: AppState,
        client: Option<IpAddr>,
        _held: (OwnedSemaphorePermit, Option<AddressSlot>),
    ) {
        let (sink, mut stream) = socket.split();
        let conn = state.subscriptions.next_conn_id();
        let (out_tx, mut out_rx) = state.subscriptions.outbound_queue();
        let (actions, mut action_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let ping_interval = state.edge.ping_interval;
        let actions_running = Arc::new(Semaphore::new(state.edge.max_actions_per_connection));
        let now = state.clock.now();
        let mut h = Handler {
            state,
            conn,
            sink,
            session: None,
            identity: Identity::Anonymous,
            actions,
            last_sent: now,
            ping_sent: None,
            next_ping: now + ping_interval,
            budget: ConnectionBudget::default(),
            client,
            user_slot: None,
            actions_running,
            actions_awaited: 0,
            mutations: VecDeque::new(),
        };
        let end = match h.handshake(&mut stream).await {
            Err(end) => end,
            Ok(()) => {
                if h.state
                    .subscriptions
                    .send(Event::Connect { conn, out: out_tx })
                    .is_err()
                {
                    End::Close(CLOSE_OVERLOADED, "the server is overloaded".into())
                } else {
                    h.event_loop(&mut stream, &mut out_rx, &mut action_rx).await
                }
            }
        };
        let _ = h.state.subscriptions.send(Event::Disconnect { conn });
        // Mutations still in flight are queued on the writer and will run:
        // each keeps its place among its caller's calls until it has, or a
        // client that queues and leaves, again and again, would grow the
        // writer's queue past every budget.
        let left = std::mem::take(&mut h.mutations);
        if !left.is_empty() {
            tokio::spawn(async move {
                for pending in left {
                    let _ = pending.outcome.await;
                }
            });
        }
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            };
            let _ = timeout(SEND_TIMEOUT, h.sink.send(Message::Close(Some(frame)))).await;
        }
    }

    /// Waits for the `Connect` message that opens every session.
    async fn handshake(&mut self, stream: &mut SplitStream<WebSocket>) -> Result<(), End> {
        let first = timeout(self.state.edge.connect_timeout, stream.next()).await;
        let text = match first {
            Err(_) => {
                return Err(End::Close(
                    CLOSE_PROTOCOL,
                    "no Connect message in time".into(),
                ))
            }
            Ok(None) | Ok(Some(Err(_))) => return Err(End::ClientClosed),
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(Message::Close(_)))) => return Err(End::ClientClosed),
            Ok(Some(Ok(_))) => {
                return Err(self
                    .fatal("expected a Connect message as a text frame")
                    .await)
            }
        };
        match ClientMessage::from_text(&text) {
            Ok(ClientMessage::Connect { session_id, .. }) => {
                self.session = Some(session_id);
                Ok(())
            }
            Ok(other) => Err(self
                .fatal(&format!("expected Connect first, got {}", other.kind()))
                .await),
            Err(e) => Err(self.fatal(&format!("malformed message: {e}")).await),
        }
    }

    async fn event_loop(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        out_rx: &mut OutboundRx,
        action_rx: &mut mpsc::Receiver<ServerMessage>,
    ) -> End {
        let clock = self.state.clock.clone();
        // Looked at only once it has woken the task since its last `Pending`
        // (a turn that only sends skips it).
        let mut stream = Woken::new(stream);
        // One timer for both deadlines, armed again only when it fires: a
        // send moves the ping deadline later, which the timer then finds
        // not yet due; only the timer's own branch moves a deadline earlier.
        let mut timer = Box::pin(clock.sleep_until(self.next_deadline()));
        loop {
            // In this order, each looked at only until one is ready: the
            // client's frames first (its calls wait on nothing queued for
            // it) unless its mutations in flight are at their bound, then
            // the oldest mutation's outcome, then what the worker queued,
            // then actions' responses, then the timer.
            let result = tokio::select! {
                biased;
                frame = stream.next(), if self.mutations.len() < self.mutations_max() => match frame {
                    None => return End::ClientClosed,
                    Some(Err(e)) => return self.read_error(e),
                    Some(Ok(Message::Text(text))) => self.on_text(&text).await,
                    Some(Ok(Message::Binary(_))) => Err(self.fatal("binary frames are not part of the protocol").await),
                    Some(Ok(Message::Close(_))) => return End::ClientClosed,
                    Some(Ok(Message::Pong(_))) => {
                        self.ping_sent = None;
                        Ok(())
                    }
                    Some(Ok(_)) => Ok(()), // pings (answered by the socket)
                },
                outcome = oldest(&mut self.mutations), if !self.mutations.is_empty() => {
                    self.answer(outcome).await
                }
                out = out_rx.recv() => match out {
                    // The worker found a protocol violation (a wrong query-set
                    // or identity version) and has already dropped us: close as
                    // the handler's own `fatal` does, not as "too slow" when the
                    // queue then ends.
                    Ok(ServerMessage::FatalError { error }) => {
                        Err(self.fatal(&error).await)
                    }
                    Ok(msg) => self.send(&msg).await,
                    // The server is shutting down: every queue ends so.
                    Err(Ended::ShuttingDown) => {
                        Err(End::Close(CLOSE_GOING_AWAY, "server shutting down".into()))
                    }
                    // The worker dropped us: our queue overflowed.
                    Err(Ended::Dropped) => Err(End::Close(CLOSE_OVERLOADED, "connection too slow to keep up; reconnect".into())),
                },
                Some(msg) = action_rx.recv(), if self.actions_awaited > 0 => {
                    self.actions_awaited -= 1;
                    self.send(&msg).await
                }
                () = &mut timer => {
                    let due = self.on_deadline().await;
                    timer = Box::pin(clock.sleep_until(self.next_deadline()));
                    due
                }
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// When the idle ping is due: `last_sent` plus the ping interval.
    fn ping_at(&self) -> Instant {
        self.last_sent + self.state.edge.ping_interval
    }

    /// When the liveness check is due: the pong's deadline while a ping is
    /// out, else the next ping's time.
    fn liveness_at(&self) -> Instant {
        match self.ping_sent {
            Some(sent) => sent + self.state.edge.pong_timeout,
            None => self.next_ping,
        }
    }

    fn next_deadline(&self) -> Instant {
        self.ping_at().min(self.liveness_at())
    }

    /// The timer fired: runs the liveness check and sends the idle ping if
    /// either is due (a send since the timer was armed may have moved the
    /// ping's deadline on).
    async fn on_deadline(&mut self) -> Result<(), End> {
        let now = self.state.clock.now();
        if now >= self.liveness_at() {
            self.check_liveness().await?;
        }
        if now >= self.ping_at() {
            self.send(&ServerMessage::Ping).await?;
        }
        Ok(())
    }

    /// At the liveness deadline: closes a connection whose ping went
    /// unanswered, or sends the next ping.
    async fn check_liveness(&mut self) -> Result<(), End> {
        let edge = self.state.edge;
        if self.ping_sent.is_some() {
            return Err(End::Close(
                CLOSE_POLICY,
                format!("no pong within {:?}", edge.pong_timeout),
            ));
        }
        let now = self.state.clock.now();
        self.ping_sent = Some(now);
        self.next_ping = now + edge.ping_interval;
        match timeout(
            SEND_TIMEOUT,
            self.sink.send(Message::Ping(Default::default())),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::ClientClosed),
            Err(_) => Err(End::Close(
                CLOSE_OVERLOADED,
                "connection too slow to keep up; reconnect".into(),
            )),
        }
    }

    /// A failed read: a message or frame over [`MAX_MESSAGE_SIZE`] (the
    /// socket's capacity error) is closed 1009; anything else means the peer
    /// is gone.
    fn read_error(&self, e: axum::Error) -> End {
        let inner = e.into_inner();
        match inner.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Capacity(_)) => End::Close(
                CLOSE_TOO_BIG,
                format!("message larger than {MAX_MESSAGE_SIZE} bytes"),
            ),
            _ => {
                tracing::debug!(conn = self.conn, "websocket read error: {inner}");
                End::ClientClosed
            }
        }
    }

    async fn send(&mut self, msg: &ServerMessage) -> Result<(), End> {
        let text = msg.to_text();
        match timeout(SEND_TIMEOUT, self.sink.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => {
                self.last_sent = self.state.clock.now();
                Ok(())
            }
            Ok(Err(_)) => Err(End::ClientClosed),
            Err(_) => Err(End::Close(
                CLOSE_OVERLOADED,
                "connection too slow to keep up; reconnect".into(),
            )),
        }
    }

    /// Sends `FatalError` and ends the connection — this connection only.
    async fn fatal(&mut self, error: &str) -> End {
        tracing::info!(conn = self.conn, "closing a connection: {error}");
        let _ = self
            .send(&ServerMessage::FatalError {
                error: error.to_string(),
            })
            .await;
        End::Close(CLOSE_PROTOCOL, truncate(error, 120))
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let msg = match ClientMessage::from_text(text) {
            Ok(m) => m,
            Err(e) => return Err(self.fatal(&format!("malformed message: {e}")).await),
        };
        match msg {
            ClientMessage::Connect { .. } => {
                Err(self.fatal("Connect sent twice on one connection").await)
            }
            ClientMessage::ModifyQuerySet {
                base_version,
                new_version,
                modifications,
            } => {
                // Checked here, off the worker's thread: what is refused is
                // never queued or kept.
                let changes = self
                    .budget
                    .check(self.state.executor.registry(), modifications);
                let event = Event::ModifyQuerySet {
                    conn: self.conn,
                    base_version,
                    new_version,
                    changes,
                };
                self.tell_worker(event).await
            }
            ClientMessage::Authenticate {
                base_version,
                token,
            } => self.authenticate(base_version, token).await,
            ClientMessage::Mutation {
                request_id,
                udf_path,
                args,
                component_path,
            } => {
                self.mutation(request_id, udf_path, args, component_path);
                Ok(())
            }
            ClientMessage::Action {
                request_id,
                udf_path,
                args,
                component_path,
            } => {
                self.action(request_id, udf_path, args, component_path)
                    .await
            }
            ClientMessage::Event { .. } => Ok(()),
        }
    }

    async fn tell_worker(&mut self, event: Event) -> Result<(), End> {
        match self.state.subscriptions.send(event) {
            Ok(()) => Ok(()),
            Err(e) => Err(End::Close(CLOSE_OVERLOADED, e.to_string())),
        }
    }

    async fn authenticate(
        &mut self,
        base_version: u32,
        token: AuthenticationToken,
    ) -> Result<(), End> {
        if let Err(reason) = self.budget.authenticate() {
            return Err(End::Close(CLOSE_POLICY, reason));
        }
        let identity = match token {
            AuthenticationToken::None => Ok(Identity::Anonymous),
            AuthenticationToken::User(token) => self.state.authenticator.authenticate(&token).await,
            AuthenticationToken::Admin(_) => {
                Err(Error::unauthenticated("admin keys are not supported"))
            }
        };
        match identity {
            Ok(identity) => {
                self.hold_user_slot(&identity)?;
                self.identity = identity.clone();
                self.tell_worker(Event::SetIdentity {
                    conn: self.conn,
                    base_version,
                    identity,
                })
                .await
            }
            // The server is busy (its readers' queue is full): the token
            // was not checked, so it is not refused either.
            Err(e) if e.code() == Some(&ErrorCode::LimitExceeded) => {
                Err(End::Close(CLOSE_OVERLOADED, e.client_message()))
            }
            Err(e) => {
                // A refused token leaves no identity behind (as in Convex): the
                // connection runs as anonymous, and its queries re-run so.
                // The identity version does not move.
                self.identity = Identity::Anonymous;
                self.user_slot = None;
                let msg = ServerMessage::AuthError {
                    error: e.client_message(),
                    base_version,
                    auth_update_attempted: true,
                };
                self.send(&msg).await?;
                self.tell_worker(Event::ClearIdentity { conn: self.conn })
                    .await
            }
        }
    }

    /// How many mutations may be in flight at once: while that many are,
    /// the client's frames are not read. A follower forwards each mutation
    /// on its own, so they could commit out of order: there they run one at
    /// a time.
    fn mutations_max(&self) -> usize {
        if self.state.executor.starts_in_order() {
            self.state.edge.max_mutations_per_connection.max(1)
        } else {
            1
        }
    }

    /// Starts a mutation (queued on the writer at once) and adds it to the
    /// ones in flight; a mutation refused for its caller's calls in flight
    /// is answered in its turn too.
    fn mutation(
        &mut self,
        request_id: RequestId,
        path: String,
        args: Vec<Value>,
        component_path: Option<String>,
    ) {
        let path = with_component(path, component_path);
        let (outcome, call) = match self.state.calls.start(&self.identity, self.client) {
            Ok(call) => {
                let key = self.session.as_ref().map(|s| RequestKey {
                    session_id: s.as_str().to_string(),
                    request_id: request_id.0,
                });
                let outcome = self.state.executor.start_mutation(
                    &path,
                    args,
                    self.identity.clone(),
                    Caller::Client,
                    key,
                );
                (outcome, call)
            }
            Err(e) => {
                let refused: BoxFuture<_> = Box::pin(std::future::ready(Err(e)));
                (refused, None)
            }
        };
        self.mutations.push_back(Pending {
            request_id,
            outcome,
            _call: call,
        });
    }

    /// Answers the oldest mutation in flight, whose outcome is in.
    async fn answer(&mut self, outcome: Result<(Value, Timestamp), Error>) -> Result<(), End> {
        // Its place among the caller's calls is given back before the answer
        // is sent: a client that sends the next on hearing back finds it free.
        let Some(Pending {
            request_id, _call, ..
        }) = self.mutations.pop_front()
        else {
            return Ok(());
        };
        drop(_call);
        let (result, ts) = match outcome {
            Ok((value, ts)) => (Ok(MutationSuccess { value, ts }), Some(ts)),
            Err(e) => (Err(e.to_function_error()), None),
        };
        self.send(&ServerMessage::MutationResponse {
            request_id,
            result,
            log_lines: Vec::new(),
        })
        .await?;
        // Read your writes: a Transition at or after the commit follows.
        if let Some(ts) = ts {
            self.tell_worker(Event::AwaitTs {
                conn: self.conn,
                ts,
            })
            .await?;
        }
        Ok(())
    }

    async fn action(
        &mut self,
        request_id: RequestId,
        path: String,
        args: Vec<Value>,
        component_path: Option<String>,
    ) -> Result<(), End> {
        let path = with_component(path, component_path);
        let slots = match self.action_slots() {
            Ok(slots) => slots,
            Err(e) => {
                return self
                    .send(&ServerMessage::ActionResponse {
                        request_id,
                        result: Err(e.to_function_error()),
                        log_lines: Vec::new(),
                    })
                    .await
            }
        };
        let executor = self.state.executor.clone();
        let identity = self.identity.clone();
        let reply = self.actions.clone();
        tokio::spawn(async move {
            let result = executor
                .action(&path, args, identity, Caller::Client)
                .await
                .map_err(|e| e.to_function_error());
            // Given back before the answer is queued: a client that starts
            // the next action on hearing back finds its place free.
            drop(slots);
            let _ = reply
                .send(ServerMessage::ActionResponse {
                    request_id,
                    result,
                    log_lines: Vec::new(),
                })
                .await;
        });
        self.actions_awaited += 1;
        Ok(())
    }

    /// The places one more action takes: one of this connection's, and one
    /// of its caller's calls in flight.
    fn action_slots(&self) -> Result<(OwnedSemaphorePermit, Option<CallSlot>), Error> {
        let Ok(permit) = self.actions_running.clone().try_acquire_owned() else {
            return Err(Error::limit(format!(
                "too many actions running on this connection (at most {} at once); \
                 wait for some to finish",
                self.state.edge.max_actions_per_connection
            )));
        };
        let call = self.state.calls.start(&self.identity, self.client)?;
        Ok((permit, call))
    }

    /// Counts this connection among `identity`'s connections (a signed-in
    /// user's), giving back its place among another user's; closes it when
    /// the user already holds as many as allowed.
    fn hold_user_slot(&mut self, identity: &Identity) -> Result<(), End> {
        let Identity::User { user_id, .. } = identity else {
            self.user_slot = None;
            return Ok(());
        };
        if self.user_slot.as_ref().map(|s| s.key()) == Some(user_id) {
            return Ok(());
        }
        self.user_slot = None;
        match self.state.connections_per_user.try_hold(user_id.clone()) {
            Some(slot) => {
                self.user_slot = Some(slot);
                Ok(())
            }
            None => Err(End::Close(
                CLOSE_POLICY,
                format!(
                    "too many connections signed in as this user (at most {})",
                    self.state.edge.max_connections_per_user
                ),
            )),
        }
    }
}

/// The outcome of the oldest mutation in flight, when it is in (the later
/// ones are queued on the writer already and need no polling to run).
async fn oldest(mutations: &mut VecDeque<Pending>) -> Result<(Value, Timestamp), Error> {
    match mutations.front_mut() {
        Some(first) => first.outcome.as_mut().await,
        None => std::future::pending().await,
    }
}

fn with_component(path: String, component: Option<String>) -> String {
    match component {
        Some(c) if !c.is_empty() => format!("{c}/{path}"),
        _ => path,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

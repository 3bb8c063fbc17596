//! The client's side of the sync protocol as a state machine that does no I/O:
//! [`ClientState`] takes calls (`subscribe`, `mutation`, `set_auth`, …) and
//! server messages ([`ClientState::receive`]), and hands out the messages to send
//! ([`ClientState::next_outgoing`]) and what the application should hear
//! ([`Notification`]). Sockets, timers and tasks live in [`crate::client`]; the
//! tests here feed message sequences as plain data.
//!
//! **Invariant:** every result the state holds is valid at one timestamp — the
//! `ts` of the last Transition applied — because a Transition is checked
//! (`startVersion` must equal the version the state is at) before any of it is
//! applied, and then applied whole.
//!
//! **Invariant:** a mutation completes only once a Transition at or after its
//! commit timestamp has been applied, so whoever awaits it finds every query
//! result already reflecting the write (read your writes).
//!
//! # Resuming
//!
//! A session outlives its connections. After [`ClientState::on_disconnect`],
//! [`ClientState::on_connect`] queues the resume sequence:
//!
//! 1. `Connect` with the same session id, the connection count, why the last
//!    connection ended, and `maxObservedTimestamp`, so no result on the new
//!    connection is older than one already shown;
//! 2. `Authenticate` with the current token (before the queries, so they run
//!    under that identity from their first result — the npm client's order);
//! 3. `ModifyQuerySet` re-adding the whole query set from version 0;
//! 4. every mutation that has no response yet, with its original request id
//!    (the server answers one it already ran with the stored outcome), then any
//!    action not yet sent. An action that was sent but not answered is reported
//!    lost instead: actions are not idempotent, so it is never resent.
//!
//! Results already shown are kept until the new connection's first Transition
//! replaces them, so subscribers see no gap.

use std::collections::{BTreeMap, VecDeque};

use livebase_schema::protocol::{
    AuthenticationToken, ClientMessage, FunctionError, IdentityVersion, QueryId,
    QuerySetModification, QuerySetVersion, RequestId, ServerMessage, SessionId, StateModification,
    StateVersion,
};
use livebase_schema::{Timestamp, Value};

/// What `lastCloseReason` says on a client's first connection.
const INITIAL_CONNECT: &str = "InitialConnect";

/// Numbers the calls to [`ClientState::set_auth`], so a caller can match the
/// server's answer ([`Notification::AuthConfirmed`] / [`Notification::AuthFailed`])
/// to its call. Later calls have larger numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuthGeneration(pub u64);

/// Something the application should hear about, produced by applying a server
/// message (or by a disconnect). Within one `receive`, query updates come first,
/// so by the time a mutation is reported complete every subscriber can already
/// see its effect.
#[derive(Clone, Debug, PartialEq)]
pub enum Notification {
    /// A Transition was applied: these queries have new results (read them with
    /// [`ClientState::result`]); all results are now valid at `ts`.
    QueriesUpdated {
        queries: Vec<QueryId>,
        ts: Timestamp,
    },
    /// A mutation is done: it failed, or it committed and a Transition at or
    /// after its commit timestamp has been applied.
    MutationCompleted {
        request_id: RequestId,
        result: Result<Value, FunctionError>,
    },
    /// An action answered.
    ActionCompleted {
        request_id: RequestId,
        result: Result<Value, FunctionError>,
    },
    /// The connection dropped while an action was running; it may or may not
    /// have run, and it is not resent.
    ActionLost { request_id: RequestId },
    /// The server accepted the identity set by this [`ClientState::set_auth`]
    /// call (and any earlier one it replaced).
    AuthConfirmed { generation: AuthGeneration },
    /// The server refused the token of this call. The state has dropped the
    /// token and told the server to run anonymously.
    AuthFailed {
        generation: AuthGeneration,
        error: String,
    },
}

/// A server message that leaves the connection unusable. The caller should drop
/// the connection ([`ClientState::on_disconnect`]) and open a new one, which
/// resumes the session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A Transition did not start where the previous one ended; applying it
    /// could mix results from different snapshots.
    #[error("a Transition starts at {found:?} but the client is at {expected:?}")]
    VersionMismatch {
        expected: StateVersion,
        found: StateVersion,
    },
    /// The server sent `FatalError`; it closes the connection next.
    #[error("the server ended the connection: {0}")]
    Fatal(String),
    /// A message arrived while no connection is open (a bug in the caller).
    #[error("received {0} while not connected")]
    NotConnected(&'static str),
}

/// The client's view of its session: the query set and its results, pending
/// mutations and actions, the auth token, and where the current connection
/// stands. See the module documentation for the protocol it follows.
///
/// Driving it by hand, as a transport would:
///
/// ```
/// use livebase_sdk::protocol::{ClientMessage, ServerMessage, StateModification, StateVersion};
/// use livebase_sdk::state::{ClientState, Notification};
/// use livebase_sdk::{obj, Timestamp, Value};
///
/// let mut state = ClientState::new();
/// let notes = state.subscribe("notes:list", obj! { "organizationId" => "org1" });
/// state.on_connect(); // a socket is open
/// let frames: Vec<ClientMessage> = std::iter::from_fn(|| state.next_outgoing()).collect();
/// assert_eq!(frames.iter().map(|m| m.kind()).collect::<Vec<_>>(), ["Connect", "ModifyQuerySet"]);
///
/// // The server answers with a Transition from version zero.
/// let end = StateVersion { query_set: 1, identity: 0, ts: Timestamp::new(42) };
/// let updates = state.receive(ServerMessage::Transition {
///     start_version: StateVersion::INITIAL,
///     end_version: end,
///     modifications: vec![StateModification::QueryUpdated {
///         query_id: notes,
///         value: Value::Array(vec![]).into(),
///         log_lines: vec![],
///         journal: None,
///     }],
///     client_clock_skew: None,
///     server_ts: None,
/// })?;
/// assert_eq!(updates, [Notification::QueriesUpdated { queries: vec![notes], ts: end.ts }]);
/// assert_eq!(state.result(notes), Some(&Ok(Value::Array(vec![]))));
/// # Ok::<(), livebase_sdk::state::SyncError>(())
/// ```
#[derive(Debug)]
pub struct ClientState {
    session_id: SessionId,
    /// Connections opened before the current (or next) one.
    connection_count: u32,
    last_close_reason: String,
    /// The newest `ts` of any Transition applied, over all connections.
    max_observed_ts: Option<Timestamp>,
    queries: BTreeMap<QueryId, LocalQuery>,
    next_query_id: u32,
    requests: BTreeMap<RequestId, Request>,
    next_request_id: u32,
    auth: Auth,
    connection: Option<Connection>,
    outgoing: VecDeque<ClientMessage>,
    /// Notifications not yet handed out (see `on_connect`).
    stashed: Vec<Notification>,
}

#[derive(Debug)]
struct LocalQuery {
    path: String,
    args: Value,
    /// What the server last sent for it (pagination state), sent back on re-add.
    journal: Option<String>,
    result: Option<Result<Value, FunctionError>>,
}

#[derive(Debug)]
struct Request {
    kind: RequestKind,
    path: String,
    args: Value,
    status: RequestStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestKind {
    Mutation,
    Action,
}

#[derive(Debug)]
enum RequestStatus {
    /// Not sent on the current connection (made while disconnected, or a
    /// mutation whose connection dropped before it was answered).
    Unsent,
    /// Sent on the current connection, no response yet.
    Sent,
    /// A mutation that committed at `ts`, waiting for a Transition to reach it.
    Committed { value: Value, ts: Timestamp },
}

#[derive(Debug, Default)]
struct Auth {
    token: Option<String>,
    /// The last `set_auth` call's number.
    generation: u64,
    /// The last generation the server answered (confirmed or refused).
    settled: u64,
}

/// Where the current connection stands.
#[derive(Debug)]
struct Connection {
    /// The last applied Transition's `endVersion` (all zero at first).
    version: StateVersion,
    /// The query set version after the last `ModifyQuerySet` sent.
    query_set: QuerySetVersion,
    /// The identity version after the last `Authenticate` sent.
    identity: IdentityVersion,
    /// The last `Authenticate` sent and not yet answered: the identity version
    /// it moves to and the `set_auth` call it carries.
    auth_pending: Option<(IdentityVersion, u64)>,
}

impl Default for ClientState {
    fn default() -> Self {
        ClientState::new()
    }
}

impl ClientState {
    /// A fresh session with a random id, not connected.
    pub fn new() -> ClientState {
        ClientState::with_session(SessionId::random())
    }

    /// A fresh state for the given session (tests use a fixed one).
    pub fn with_session(session_id: SessionId) -> ClientState {
        ClientState {
            session_id,
            connection_count: 0,
            last_close_reason: INITIAL_CONNECT.to_string(),
            max_observed_ts: None,
            queries: BTreeMap::new(),
            next_query_id: 0,
            requests: BTreeMap::new(),
            next_request_id: 0,
            auth: Auth::default(),
            connection: None,
            outgoing: VecDeque::new(),
            stashed: Vec::new(),
        }
    }

    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    pub fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    /// The newest timestamp of any Transition applied: every result held is
    /// valid at it.
    pub fn max_observed_timestamp(&self) -> Option<Timestamp> {
        self.max_observed_ts
    }

    /// The current connection's version (the last applied Transition's
    /// `endVersion`), if connected.
    pub fn version(&self) -> Option<StateVersion> {
        self.connection.as_ref().map(|c| c.version)
    }

    /// The latest result of a query in the set; `None` until the server sent one.
    pub fn result(&self, query_id: QueryId) -> Option<&Result<Value, FunctionError>> {
        self.queries.get(&query_id)?.result.as_ref()
    }

    /// Mutations and actions not yet completed.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// Adds a query to the set. `args` is the argument object.
    pub fn subscribe(&mut self, path: impl Into<String>, args: Value) -> QueryId {
        let query_id = QueryId(self.next_query_id);
        self.next_query_id += 1;
        let query = LocalQuery {
            path: path.into(),
            args,
            journal: None,
            result: None,
        };
        let add = add_modification(query_id, &query);
        self.queries.insert(query_id, query);
        self.modify_query_set(add);
        query_id
    }

    /// Removes a query from the set; `false` if it was not in it.
    pub fn unsubscribe(&mut self, query_id: QueryId) -> bool {
        if self.queries.remove(&query_id).is_none() {
            return false;
        }
        self.modify_query_set(QuerySetModification::Remove { query_id });
        true
    }

    /// Queues a mutation; it completes with [`Notification::MutationCompleted`].
    pub fn mutation(&mut self, path: impl Into<String>, args: Value) -> RequestId {
        self.request(RequestKind::Mutation, path.into(), args)
    }

    /// Queues an action; it completes with [`Notification::ActionCompleted`] (or
    /// [`Notification::ActionLost`]).
    pub fn action(&mut self, path: impl Into<String>, args: Value) -> RequestId {
        self.request(RequestKind::Action, path.into(), args)
    }

    /// Sets (`Some`) or clears (`None`) the token every query and request runs
    /// under, from the next message on.
    pub fn set_auth(&mut self, token: Option<String>) -> AuthGeneration {
        self.auth.generation += 1;
        self.auth.token = token;
        if let Some(c) = &mut self.connection {
            let message = ClientMessage::Authenticate {
                base_version: c.identity,
                token: token_of(&self.auth.token),
            };
            c.identity += 1;
            c.auth_pending = Some((c.identity, self.auth.generation));
            self.outgoing.push_back(message);
        }
        AuthGeneration(self.auth.generation)
    }

    /// The next message to send, if any. Consecutive query set changes are
    /// merged into one `ModifyQuerySet`. Nothing is handed out while
    /// disconnected.
    pub fn next_outgoing(&mut self) -> Option<ClientMessage> {
        let mut message = self.outgoing.pop_front()?;
        while let ClientMessage::ModifyQuerySet {
            new_version,
            modifications,
            ..
        } = &mut message
        {
            match self.outgoing.pop_front() {
                Some(ClientMessage::ModifyQuerySet {
                    base_version,
                    new_version: next_version,
                    modifications: more,
                }) if base_version == *new_version => {
                    *new_version = next_version;
                    modifications.extend(more);
                }
                Some(other) => {
                    self.outgoing.push_front(other);
                    break;
                }
                None => break,
            }
        }
        Some(message)
    }

    /// A new connection is open: queues the (re)connect sequence described in
    /// the module documentation.
    pub fn on_connect(&mut self) {
        if self.connection.is_some() {
            // The caller skipped `on_disconnect`: do it now, and report what it
            // reports with the next `receive`.
            let lost = self.on_disconnect("reconnected");
            self.stashed.extend(lost);
        }
        self.outgoing.push_back(ClientMessage::Connect {
            session_id: self.session_id.clone(),
            connection_count: self.connection_count,
            last_close_reason: Some(self.last_close_reason.clone()),
            max_observed_timestamp: self.max_observed_ts,
            client_ts: None,
        });
        self.connection_count += 1;
        let mut connection = Connection {
            version: StateVersion::INITIAL,
            query_set: 0,
            identity: 0,
            auth_pending: None,
        };
        // A new connection starts anonymous: only a token, or a sign-out the
        // server has not yet acknowledged, needs saying.
        if self.auth.token.is_some() || self.auth.generation > self.auth.settled {
            self.outgoing.push_back(ClientMessage::Authenticate {
                base_version: 0,
                token: token_of(&self.auth.token),
            });
            connection.identity = 1;
            connection.auth_pending = Some((1, self.auth.generation));
        }
        // Always sent, even empty: its Transition also completes mutations
        // that committed before the old connection dropped.
        self.outgoing.push_back(ClientMessage::ModifyQuerySet {
            base_version: 0,
            new_version: 1,
            modifications: self
                .queries
                .iter()
                .map(|(id, q)| add_modification(*id, q))
                .collect(),
        });
        connection.query_set = 1;
        self.connection = Some(connection);
        for (request_id, request) in &mut self.requests {
            if let RequestStatus::Unsent = request.status {
                self.outgoing
                    .push_back(request_message(*request_id, request));
                request.status = RequestStatus::Sent;
            }
        }
    }

    /// The connection is gone (closed, failed, or dropped after a
    /// [`SyncError`]). Unanswered mutations wait to be resent; unanswered
    /// actions are reported lost.
    pub fn on_disconnect(&mut self, reason: &str) -> Vec<Notification> {
        self.connection = None;
        self.outgoing.clear();
        self.last_close_reason = reason.to_string();
        let mut notifications = std::mem::take(&mut self.stashed);
        self.requests.retain(
            |request_id, request| match (request.kind, &request.status) {
                (RequestKind::Mutation, RequestStatus::Sent) => {
                    request.status = RequestStatus::Unsent;
                    true
                }
                (RequestKind::Action, RequestStatus::Sent) => {
                    notifications.push(Notification::ActionLost {
                        request_id: *request_id,
                    });
                    false
                }
                _ => true,
            },
        );
        notifications
    }

    /// Applies one server message.
    pub fn receive(&mut self, message: ServerMessage) -> Result<Vec<Notification>, SyncError> {
        if self.connection.is_none() {
            return Err(SyncError::NotConnected(message.kind()));
        }
        let mut notifications = std::mem::take(&mut self.stashed);
        notifications.extend(self.apply(message)?);
        Ok(notifications)
    }

    fn apply(&mut self, message: ServerMessage) -> Result<Vec<Notification>, SyncError> {
        match message {
            ServerMessage::Transition {
                start_version,
                end_version,
                modifications,
                ..
            } => self.transition(start_version, end_version, modifications),
            ServerMessage::MutationResponse {
                request_id, result, ..
            } => Ok(self.mutation_response(request_id, result)),
            ServerMessage::ActionResponse {
                request_id, result, ..
            } => Ok(self.action_response(request_id, result)),
            ServerMessage::AuthError {
                error,
                base_version,
                auth_update_attempted,
            } => Ok(self.auth_error(error, base_version, auth_update_attempted)),
            ServerMessage::FatalError { error } => Err(SyncError::Fatal(error)),
            ServerMessage::Ping => Ok(Vec::new()),
        }
    }

    fn request(&mut self, kind: RequestKind, path: String, args: Value) -> RequestId {
        let request_id = RequestId(self.next_request_id);
        self.next_request_id += 1;
        let mut request = Request {
            kind,
            path,
            args,
            status: RequestStatus::Unsent,
        };
        if self.connection.is_some() {
            self.outgoing
                .push_back(request_message(request_id, &request));
            request.status = RequestStatus::Sent;
        }
        self.requests.insert(request_id, request);
        request_id
    }

    fn modify_query_set(&mut self, modification: QuerySetModification) {
        if let Some(c) = &mut self.connection {
            self.outgoing.push_back(ClientMessage::ModifyQuerySet {
                base_version: c.query_set,
                new_version: c.query_set + 1,
                modifications: vec![modification],
            });
            c.query_set += 1;
        }
    }

    fn transition(
        &mut self,
        start: StateVersion,
        end: StateVersion,
        modifications: Vec<StateModification>,
    ) -> Result<Vec<Notification>, SyncError> {
        let c = self.connection.as_mut().expect("checked by receive");
        if start != c.version {
            return Err(SyncError::VersionMismatch {
                expected: c.version,
                found: start,
            });
        }
        // Checked: from here on the whole Transition applies.
        c.version = end;
        let mut notifications = Vec::new();
        let mut updated = Vec::new();
        for modification in modifications {
            let (query_id, result, journal) = match modification {
                StateModification::QueryUpdated {
                    query_id,
                    value,
                    journal,
                    ..
                } => (
                    query_id,
                    Ok(std::sync::Arc::unwrap_or_clone(value).into_value()),
                    journal,
                ),
                StateModification::QueryFailed {
                    query_id,
                    error,
                    journal,
                    ..
                } => (query_id, Err(error), journal),
                // Already gone locally: `unsubscribe` removed it.
                StateModification::QueryRemoved { .. } => continue,
            };
            // Results for a query removed since are dropped.
            if let Some(q) = self.queries.get_mut(&query_id) {
                q.result = Some(result);
                q.journal = journal;
                if !updated.contains(&query_id) {
                    updated.push(query_id);
                }
            }
        }
        let ts = self.max_observed_ts.map_or(end.ts, |t| t.max(end.ts));
        self.max_observed_ts = Some(ts);
        if !updated.is_empty() {
            notifications.push(Notification::QueriesUpdated {
                queries: updated,
                ts,
            });
        }
        if let Some((identity, generation)) = c.auth_pending {
            if end.identity >= identity {
                c.auth_pending = None;
                self.auth.settled = self.auth.settled.max(generation);
                notifications.push(Notification::AuthConfirmed {
                    generation: AuthGeneration(generation),
                });
            }
        }
        self.requests.retain(|request_id, request| {
            let RequestStatus::Committed { value, ts: commit } = &mut request.status else {
                return true;
            };
            if *commit > ts {
                return true;
            }
            notifications.push(Notification::MutationCompleted {
                request_id: *request_id,
                result: Ok(std::mem::replace(value, Value::Null)),
            });
            false
        });
        Ok(notifications)
    }

    fn mutation_response(
        &mut self,
        request_id: RequestId,
        result: Result<livebase_schema::protocol::MutationSuccess, FunctionError>,
    ) -> Vec<Notification> {
        let Some(request) = self.requests.get_mut(&request_id) else {
            return Vec::new(); // a duplicate answer to a resent mutation
        };
        if request.kind != RequestKind::Mutation
            || matches!(request.status, RequestStatus::Committed { .. })
        {
            return Vec::new();
        }
        let result = match result {
            Ok(success) => {
                let reached = self.max_observed_ts.is_some_and(|t| t >= success.ts);
                if !reached {
                    request.status = RequestStatus::Committed {
                        value: success.value,
                        ts: success.ts,
                    };
                    return Vec::new();
                }
                Ok(success.value)
            }
            Err(error) => Err(error),
        };
        self.requests.remove(&request_id);
        vec![Notification::MutationCompleted { request_id, result }]
    }

    fn action_response(
        &mut self,
        request_id: RequestId,
        result: Result<Value, FunctionError>,
    ) -> Vec<Notification> {
        match self.requests.get(&request_id) {
            Some(r) if r.kind == RequestKind::Action => {
                self.requests.remove(&request_id);
                vec![Notification::ActionCompleted { request_id, result }]
            }
            _ => Vec::new(),
        }
    }

    fn auth_error(
        &mut self,
        error: String,
        base_version: IdentityVersion,
        attempted: bool,
    ) -> Vec<Notification> {
        let c = self.connection.as_mut().expect("checked by receive");
        // The identity version the server is at now.
        let server_version = if attempted {
            // Refused our Authenticate from `base_version`. If a later one is
            // already on its way, that one decides (and this answer is stale).
            if base_version + 1 != c.identity {
                return Vec::new();
            }
            base_version
        } else {
            // The identity in use expired — unless a newer one is on its way.
            if c.auth_pending.is_some() {
                return Vec::new();
            }
            c.identity
        };
        let generation = c
            .auth_pending
            .take()
            .map_or(self.auth.generation, |(_, g)| g);
        // Sign out on the server too, so it runs no query under an identity
        // the client no longer claims.
        self.auth.token = None;
        self.outgoing.push_back(ClientMessage::Authenticate {
            base_version: server_version,
            token: AuthenticationToken::None,
        });
        c.identity = server_version + 1;
        self.auth.settled = self.auth.settled.max(generation);
        vec![Notification::AuthFailed {
            generation: AuthGeneration(generation),
            error,
        }]
    }
}

fn token_of(token: &Option<String>) -> AuthenticationToken {
    match token {
        Some(t) => AuthenticationToken::User(t.clone()),
        None => AuthenticationToken::None,
    }
}

fn add_modification(query_id: QueryId, query: &LocalQuery) -> QuerySetModification {
    QuerySetModification::Add {
        query_id,
        udf_path: query.path.clone(),
        args: vec![query.args.clone()],
        journal: query.journal.clone(),
        component_path: None,
    }
}

fn request_message(request_id: RequestId, request: &Request) -> ClientMessage {
    let (udf_path, args) = (request.path.clone(), vec![request.args.clone()]);
    match request.kind {
        RequestKind::Mutation => ClientMessage::Mutation {
            request_id,
            udf_path,
            args,
            component_path: None,
        },
        RequestKind::Action => ClientMessage::Action {
            request_id,
            udf_path,
            args,
            component_path: None,
        },
    }
}

#[cfg(test)]
mod tests;

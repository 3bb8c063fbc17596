//! The Convex sync protocol: the messages the official clients and livebase exchange
//! over the WebSocket, as plain Rust types, and their wire JSON in both directions.
//!
//! **Invariant:** this is the only module that knows the sync protocol's wire JSON.
//! The server, the SDK and the tests hold the types below and convert only at the
//! edge (`from_text`/`from_json` in, `to_json`/`to_text` out); none of them derives
//! `Serialize`, so a renamed Rust field can never silently change the wire.
//!
//! The normative shapes are the `convex` npm package's `src/browser/sync/protocol.ts`
//! (checked against 1.48.0, whose real frames are pinned in the tests below).
//! Decoding also accepts what the `convex` crate's `sync_types` sends and what the
//! Convex backend emits, which differ in optional fields. Wire facts that matter:
//!
//! - Commit timestamps (`ts`, `maxObservedTimestamp`, the versions' `ts`) are base64
//!   of 8 little-endian bytes, because a JSON number loses precision above 2^53 in
//!   JavaScript. `serverTs` (nanoseconds) and `clientTs` (milliseconds) are plain
//!   numbers: they are only diagnostics.
//! - Ids and versions (`queryId`, `requestId`, `querySet`, `identity`, …) are numbers.
//! - `args`, `value`, `result` (on success) and `errorData` are Convex-encoded values
//!   ([`Value::to_json`]); `args` is an array (the clients send one object in it).
//! - For optional fields `null` and absence mean the same thing — except `errorData`,
//!   where `null` is a value (`ConvexError(null)`).
//! - Unknown fields are ignored, so newer clients keep working; an unknown `type`
//!   is an error.
//! - Each `logLines` entry starts with its level, `[LOG] 'hello'`; the npm client
//!   prints "Could not parse console.log" for a line without one.
//!
//! Decoding never panics on any input; every error names the path of what is wrong,
//! e.g. `ModifyQuerySet.modifications[2].queryId: expected a non-negative integer`.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use rand::Rng;
use serde_json::{Map, Value as Json};

use crate::json::{utf8, write_leaf, DecodeError};
use crate::timestamp::Timestamp;
use crate::value::Value;

/// Identifies one query within a client's query set; the client chooses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryId(pub u32);

/// Identifies one mutation or action within a session; the client numbers them from
/// 0 and reuses the number when it resends the request after a reconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u32);

/// Version of a connection's query set; each `ModifyQuerySet` moves it by one.
pub type QuerySetVersion = u32;

/// Version of a connection's identity; each `Authenticate` moves it by one.
pub type IdentityVersion = u32;

/// Application data attached to a function error (`ConvexError`'s `data`), e.g.
/// `{code: "NOT_FOUND", message: "…"}`.
pub type ErrorData = Value;

/// A client session, which outlives reconnects: a UUID in its hyphenated form,
/// kept lowercase.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// Parses the hyphenated form (`8-4-4-4-12` hex digits, either case).
    pub fn parse(s: &str) -> Option<SessionId> {
        let bytes = s.as_bytes();
        let well_formed = bytes.len() == 36
            && bytes.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        well_formed.then(|| SessionId(s.to_ascii_lowercase()))
    }

    /// A fresh random (version 4) session id, as a client makes one.
    pub fn random() -> SessionId {
        let mut bytes = [0u8; 16];
        rand::rng().fill(&mut bytes);
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        SessionId(format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A message from a client to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// The first message on every connection: starts or resumes a session.
    Connect {
        session_id: SessionId,
        /// How many connections this client object opened before this one.
        connection_count: u32,
        /// Why the previous connection ended (`"InitialConnect"` on the first).
        last_close_reason: Option<String>,
        /// The newest timestamp this client has seen; no result on this connection
        /// may be older.
        max_observed_timestamp: Option<Timestamp>,
        /// The client's clock in milliseconds, for clock-skew diagnostics.
        client_ts: Option<u64>,
    },
    /// Adds and removes queries; the server answers with a `Transition` whose
    /// `end_version.query_set` is `new_version`.
    ModifyQuerySet {
        base_version: QuerySetVersion,
        new_version: QuerySetVersion,
        modifications: Vec<QuerySetModification>,
    },
    /// Sets (or clears) the identity that every query and request runs under.
    Authenticate {
        base_version: IdentityVersion,
        token: AuthenticationToken,
    },
    Mutation {
        request_id: RequestId,
        udf_path: String,
        args: Vec<Value>,
        /// A Convex component to run in; livebase has none, so `Some` names a
        /// function that does not exist.
        component_path: Option<String>,
    },
    Action {
        request_id: RequestId,
        udf_path: String,
        args: Vec<Value>,
        /// As for [`ClientMessage::Mutation`].
        component_path: Option<String>,
    },
    /// Client telemetry; its payload is arbitrary JSON, kept undecoded.
    Event { event_type: String, event: Json },
}

/// One change to a client's query set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuerySetModification {
    Add {
        query_id: QueryId,
        udf_path: String,
        args: Vec<Value>,
        /// The journal the server last sent for this query (pagination cursors).
        journal: Option<String>,
        /// As for [`ClientMessage::Mutation`].
        component_path: Option<String>,
    },
    Remove {
        query_id: QueryId,
    },
}

/// Who the client says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthenticationToken {
    /// A user's token (a JWT).
    User(String),
    /// A deployment admin key. Convex clients may add an identity to impersonate;
    /// livebase has no impersonation, so that part is dropped on decoding.
    Admin(String),
    /// No identity.
    None,
}

/// A message from the server to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// Moves the client's view of its queries from `start_version` (which must equal
    /// the previous Transition's `end_version` on this connection, all zero at
    /// first) to `end_version`.
    Transition {
        start_version: StateVersion,
        end_version: StateVersion,
        modifications: Vec<StateModification>,
        /// Server wall clock minus the `Connect`'s `clientTs`, in milliseconds
        /// (diagnostic: with `server_ts` the npm client estimates transit time and
        /// warns about slow transitions when the two disagree).
        client_clock_skew: Option<i64>,
        /// The server's wall clock when it sent this, in nanoseconds since the
        /// epoch — a JSON number, not base64 (diagnostic).
        server_ts: Option<Timestamp>,
    },
    MutationResponse {
        request_id: RequestId,
        result: Result<MutationSuccess, FunctionError>,
        log_lines: Vec<String>,
    },
    ActionResponse {
        request_id: RequestId,
        result: Result<Value, FunctionError>,
        log_lines: Vec<String>,
    },
    /// An `Authenticate` was refused (`auth_update_attempted: true`) or a token in
    /// use expired (`false`). On `true` the npm client drops its token, reports
    /// itself signed out and restarts the connection (a new `Connect`).
    AuthError {
        error: String,
        base_version: IdentityVersion,
        auth_update_attempted: bool,
    },
    /// The connection is unusable; the server closes it next. The npm client gives
    /// up for good on this message: it terminates without reconnecting and throws
    /// (uncaught, which ends a Node process). Send it only for protocol violations,
    /// never for overload or shutdown, where a plain close lets the client resume.
    FatalError { error: String },
    /// Keeps an idle connection alive.
    Ping,
}

/// A query result on its way to subscribers: the value, and its Convex JSON
/// text, encoded the first time a Transition carrying it is written and then
/// reused by every other subscriber's Transition. Derefs to the [`Value`].
#[derive(Clone, Debug)]
pub struct ResultValue {
    value: Value,
    json: OnceLock<String>,
    size: OnceLock<usize>,
}

impl ResultValue {
    pub fn new(value: Value) -> ResultValue {
        ResultValue {
            value,
            json: OnceLock::new(),
            size: OnceLock::new(),
        }
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    pub fn into_value(self) -> Value {
        self.value
    }

    /// The value's Convex JSON text, encoded at most once.
    pub fn json_text(&self) -> &str {
        self.json.get_or_init(|| self.value.to_json_text())
    }

    /// [`Value::size`], computed at most once.
    pub fn size(&self) -> usize {
        *self.size.get_or_init(|| self.value.size())
    }
}

impl From<Value> for ResultValue {
    fn from(value: Value) -> ResultValue {
        ResultValue::new(value)
    }
}

impl From<Value> for Arc<ResultValue> {
    fn from(value: Value) -> Arc<ResultValue> {
        Arc::new(ResultValue::new(value))
    }
}

impl Deref for ResultValue {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.value
    }
}

impl PartialEq for ResultValue {
    fn eq(&self, other: &ResultValue) -> bool {
        self.value == other.value
    }
}

impl Eq for ResultValue {}

/// A committed mutation's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutationSuccess {
    pub value: Value,
    /// The commit timestamp: the client resolves the mutation only once a
    /// Transition reaches it.
    pub ts: Timestamp,
}

/// A function's failure, as the client shows it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FunctionError {
    pub message: String,
    /// Present for application errors (`ConvexError`); `Some(Value::Null)` is a
    /// `ConvexError` whose data is `null`.
    pub data: Option<ErrorData>,
}

/// Where a client's view stands: its query set, its identity and the snapshot its
/// results are valid at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StateVersion {
    pub query_set: QuerySetVersion,
    pub identity: IdentityVersion,
    pub ts: Timestamp,
}

impl StateVersion {
    /// Where every connection starts.
    pub const INITIAL: StateVersion = StateVersion {
        query_set: 0,
        identity: 0,
        ts: Timestamp::ZERO,
    };
}

/// One change inside a Transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateModification {
    QueryUpdated {
        query_id: QueryId,
        /// Shared: one result goes to every subscriber of a query, so each
        /// Transition holds a pointer to it, not a copy, and its JSON text is
        /// encoded once for all of them.
        value: Arc<ResultValue>,
        log_lines: Vec<String>,
        journal: Option<String>,
    },
    QueryFailed {
        query_id: QueryId,
        error: FunctionError,
        log_lines: Vec<String>,
        journal: Option<String>,
    },
    QueryRemoved {
        query_id: QueryId,
    },
}

/// A frame that is not a valid message. The `Display` form names the place and the
/// problem and is safe to send back to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame's text is not JSON.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// A `type` (or `tokenType`) names nothing this protocol has.
    #[error("{}unknown {what} type {found:?}", prefix(.path))]
    UnknownType {
        /// Where the tag is (empty for the message's own `type`).
        path: String,
        /// What kind of thing was being tagged: `message`, `modification`, …
        what: &'static str,
        /// The tag found, cut to 64 characters.
        found: String,
    },
    /// A field is missing or has the wrong shape.
    #[error("{}{message}", prefix(.path))]
    Invalid { path: String, message: String },
    /// A value field (`args`, `value`, `result`, `errorData`) is not valid Convex
    /// JSON; the path runs into the value, e.g. `Mutation.args[0].items[3]`.
    #[error(transparent)]
    Value(#[from] DecodeError),
}

fn prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

type Result<T, E = ProtocolError> = std::result::Result<T, E>;

impl ClientMessage {
    /// Parses one WebSocket text frame.
    pub fn from_text(text: &str) -> Result<ClientMessage> {
        ClientMessage::from_json(&parse_text(text)?)
    }

    pub fn from_json(json: &Json) -> Result<ClientMessage> {
        let (kind, map) = message_kind(json)?;
        match kind {
            "Connect" => {
                let f = Fields::new(map, "Connect");
                let session_path = f.path("sessionId");
                let session = f.string("sessionId")?;
                Ok(ClientMessage::Connect {
                    session_id: SessionId::parse(&session).ok_or_else(|| {
                        invalid(
                            session_path,
                            "expected a UUID like \"6564c72d-2e49-46b7-bbf8-a12881bf2ecb\"",
                        )
                    })?,
                    connection_count: f.u32("connectionCount")?,
                    last_close_reason: f.optional_string("lastCloseReason")?,
                    max_observed_timestamp: f.optional_timestamp("maxObservedTimestamp")?,
                    client_ts: f.optional_millis("clientTs")?,
                })
            }
            "ModifyQuerySet" => {
                let f = Fields::new(map, "ModifyQuerySet");
                let base_version = f.u32("baseVersion")?;
                let new_version = f.u32("newVersion")?;
                let modifications = f
                    .array("modifications")?
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        QuerySetModification::from_json(
                            m,
                            &format!("ModifyQuerySet.modifications[{i}]"),
                        )
                    })
                    .collect::<Result<_>>()?;
                Ok(ClientMessage::ModifyQuerySet {
                    base_version,
                    new_version,
                    modifications,
                })
            }
            "Authenticate" => {
                let f = Fields::new(map, "Authenticate");
                let base_version = f.u32("baseVersion")?;
                let token = match f.tag("tokenType")? {
                    "User" => AuthenticationToken::User(f.string("value")?),
                    "Admin" => AuthenticationToken::Admin(f.string("value")?),
                    "None" => AuthenticationToken::None,
                    other => return Err(unknown(f.path("tokenType"), "token", other)),
                };
                Ok(ClientMessage::Authenticate {
                    base_version,
                    token,
                })
            }
            "Mutation" => {
                let f = Fields::new(map, "Mutation");
                Ok(ClientMessage::Mutation {
                    request_id: RequestId(f.u32("requestId")?),
                    udf_path: f.string("udfPath")?,
                    args: f.values("args")?,
                    component_path: f.optional_string("componentPath")?,
                })
            }
            "Action" => {
                let f = Fields::new(map, "Action");
                Ok(ClientMessage::Action {
                    request_id: RequestId(f.u32("requestId")?),
                    udf_path: f.string("udfPath")?,
                    args: f.values("args")?,
                    component_path: f.optional_string("componentPath")?,
                })
            }
            "Event" => {
                let f = Fields::new(map, "Event");
                Ok(ClientMessage::Event {
                    event_type: f.string("eventType")?,
                    event: f.required("event")?.clone(),
                })
            }
            other => Err(unknown(String::new(), "message", other)),
        }
    }

    pub fn to_json(&self) -> Json {
        let mut m = tagged(self.kind());
        match self {
            ClientMessage::Connect {
                session_id,
                connection_count,
                last_close_reason,
                max_observed_timestamp,
                client_ts,
            } => {
                m.insert("sessionId".into(), session_id.as_str().into());
                m.insert("connectionCount".into(), (*connection_count).into());
                m.insert("lastCloseReason".into(), last_close_reason.clone().into());
                if let Some(ts) = max_observed_timestamp {
                    m.insert("maxObservedTimestamp".into(), ts.to_base64().into());
                }
                if let Some(ms) = client_ts {
                    m.insert("clientTs".into(), (*ms).into());
                }
            }
            ClientMessage::ModifyQuerySet {
                base_version,
                new_version,
                modifications,
            } => {
                m.insert("baseVersion".into(), (*base_version).into());
                m.insert("newVersion".into(), (*new_version).into());
                let mods = modifications.iter().map(QuerySetModification::to_json);
                m.insert("modifications".into(), Json::Array(mods.collect()));
            }
            ClientMessage::Authenticate {
                base_version,
                token,
            } => {
                m.insert("baseVersion".into(), (*base_version).into());
                let (token_type, value) = match token {
                    AuthenticationToken::User(v) => ("User", Some(v)),
                    AuthenticationToken::Admin(v) => ("Admin", Some(v)),
                    AuthenticationToken::None => ("None", None),
                };
                m.insert("tokenType".into(), token_type.into());
                if let Some(value) = value {
                    m.insert("value".into(), value.as_str().into());
                }
            }
            ClientMessage::Mutation {
                request_id,
                udf_path,
                args,
                component_path,
            }
            | ClientMessage::Action {
                request_id,
                udf_path,
                args,
                component_path,
            } => {
                m.insert("requestId".into(), request_id.0.into());
                m.insert("udfPath".into(), udf_path.as_str().into());
                m.insert("args".into(), values_to_json(args));
                if let Some(path) = component_path {
                    m.insert("componentPath".into(), path.as_str().into());
                }
            }
            ClientMessage::Event { event_type, event } => {
                m.insert("eventType".into(), event_type.as_str().into());
                m.insert("event".into(), event.clone());
            }
        }
        Json::Object(m)
    }

    /// The frame's text.
    pub fn to_text(&self) -> String {
        self.to_json().to_string()
    }

    /// The wire `type`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Connect { .. } => "Connect",
            ClientMessage::ModifyQuerySet { .. } => "ModifyQuerySet",
            ClientMessage::Authenticate { .. } => "Authenticate",
            ClientMessage::Mutation { .. } => "Mutation",
            ClientMessage::Action { .. } => "Action",
            ClientMessage::Event { .. } => "Event",
        }
    }
}

impl QuerySetModification {
    fn from_json(json: &Json, path: &str) -> Result<QuerySetModification> {
        let f = Fields::new(as_object(json, path)?, path);
        match f.tag("type")? {
            "Add" => Ok(QuerySetModification::Add {
                query_id: QueryId(f.u32("queryId")?),
                udf_path: f.string("udfPath")?,
                args: f.values("args")?,
                journal: f.optional_string("journal")?,
                component_path: f.optional_string("componentPath")?,
            }),
            "Remove" => Ok(QuerySetModification::Remove {
                query_id: QueryId(f.u32("queryId")?),
            }),
            other => Err(unknown(f.path("type"), "modification", other)),
        }
    }

    fn to_json(&self) -> Json {
        match self {
            QuerySetModification::Add {
                query_id,
                udf_path,
                args,
                journal,
                component_path,
            } => {
                let mut m = tagged("Add");
                m.insert("queryId".into(), query_id.0.into());
                m.insert("udfPath".into(), udf_path.as_str().into());
                m.insert("args".into(), values_to_json(args));
                if let Some(journal) = journal {
                    m.insert("journal".into(), journal.as_str().into());
                }
                if let Some(path) = component_path {
                    m.insert("componentPath".into(), path.as_str().into());
                }
                Json::Object(m)
            }
            QuerySetModification::Remove { query_id } => {
                let mut m = tagged("Remove");
                m.insert("queryId".into(), query_id.0.into());
                Json::Object(m)
            }
        }
    }
}

impl ServerMessage {
    /// Parses one WebSocket text frame.
    pub fn from_text(text: &str) -> Result<ServerMessage> {
        ServerMessage::from_json(&parse_text(text)?)
    }

    pub fn from_json(json: &Json) -> Result<ServerMessage> {
        let (kind, map) = message_kind(json)?;
        match kind {
            "Transition" => {
                let f = Fields::new(map, "Transition");
                let start_version = StateVersion::from_json(&f.object("startVersion")?)?;
                let end_version = StateVersion::from_json(&f.object("endVersion")?)?;
                let modifications = f
                    .array("modifications")?
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        StateModification::from_json(m, &format!("Transition.modifications[{i}]"))
                    })
                    .collect::<Result<_>>()?;
                Ok(ServerMessage::Transition {
                    start_version,
                    end_version,
                    modifications,
                    client_clock_skew: f.optional_i64("clientClockSkew")?,
                    server_ts: f.optional_u64("serverTs")?.map(Timestamp::new),
                })
            }
            "MutationResponse" => {
                let f = Fields::new(map, "MutationResponse");
                let request_id = RequestId(f.u32("requestId")?);
                let result = if f.bool("success")? {
                    Ok(MutationSuccess {
                        value: f.value("result")?,
                        ts: f.timestamp("ts")?,
                    })
                } else {
                    Err(f.function_error("result")?)
                };
                Ok(ServerMessage::MutationResponse {
                    request_id,
                    result,
                    log_lines: f.strings("logLines")?,
                })
            }
            "ActionResponse" => {
                let f = Fields::new(map, "ActionResponse");
                let request_id = RequestId(f.u32("requestId")?);
                let result = if f.bool("success")? {
                    Ok(f.value("result")?)
                } else {
                    Err(f.function_error("result")?)
                };
                Ok(ServerMessage::ActionResponse {
                    request_id,
                    result,
                    log_lines: f.strings("logLines")?,
                })
            }
            "AuthError" => {
                let f = Fields::new(map, "AuthError");
                Ok(ServerMessage::AuthError {
                    error: f.string("error")?,
                    base_version: f.u32("baseVersion")?,
                    auth_update_attempted: f.bool("authUpdateAttempted")?,
                })
            }
            "FatalError" => Ok(ServerMessage::FatalError {
                error: Fields::new(map, "FatalError").string("error")?,
            }),
            "Ping" => Ok(ServerMessage::Ping),
            other => Err(unknown(String::new(), "message", other)),
        }
    }

    pub fn to_json(&self) -> Json {
        let mut m = tagged(self.kind());
        match self {
            ServerMessage::Transition {
                start_version,
                end_version,
                modifications,
                client_clock_skew,
                server_ts,
            } => {
                m.insert("startVersion".into(), start_version.to_json());
                m.insert("endVersion".into(), end_version.to_json());
                let mods = modifications.iter().map(StateModification::to_json);
                m.insert("modifications".into(), Json::Array(mods.collect()));
                // Omitted rather than `null` when unknown: the npm client only
                // checks them against `undefined`.
                if let Some(skew) = client_clock_skew {
                    m.insert("clientClockSkew".into(), (*skew).into());
                }
                if let Some(ts) = server_ts {
                    m.insert("serverTs".into(), ts.get().into());
                }
            }
            ServerMessage::MutationResponse {
                request_id,
                result,
                log_lines,
            } => {
                m.insert("requestId".into(), request_id.0.into());
                match result {
                    Ok(MutationSuccess { value, ts }) => {
                        m.insert("success".into(), true.into());
                        m.insert("result".into(), value.to_json());
                        m.insert("ts".into(), ts.to_base64().into());
                        m.insert("logLines".into(), log_lines.clone().into());
                    }
                    Err(error) => insert_failure(&mut m, error, log_lines),
                }
            }
            ServerMessage::ActionResponse {
                request_id,
                result,
                log_lines,
            } => {
                m.insert("requestId".into(), request_id.0.into());
                match result {
                    Ok(value) => {
                        m.insert("success".into(), true.into());
                        m.insert("result".into(), value.to_json());
                        m.insert("logLines".into(), log_lines.clone().into());
                    }
                    Err(error) => insert_failure(&mut m, error, log_lines),
                }
            }
            ServerMessage::AuthError {
                error,
                base_version,
                auth_update_attempted,
            } => {
                m.insert("error".into(), error.as_str().into());
                m.insert("baseVersion".into(), (*base_version).into());
                m.insert(
                    "authUpdateAttempted".into(),
                    (*auth_update_attempted).into(),
                );
            }
            ServerMessage::FatalError { error } => {
                m.insert("error".into(), error.as_str().into());
            }
            ServerMessage::Ping => {}
        }
        Json::Object(m)
    }

    /// The frame's text: the text of [`ServerMessage::to_json`]. Transitions
    /// and successful mutation responses, the frames of every write, are
    /// written directly, splicing in each result's once-encoded JSON text.
    pub fn to_text(&self) -> String {
        match self {
            ServerMessage::Transition {
                start_version,
                end_version,
                modifications,
                client_clock_skew,
                server_ts,
            } => {
                let mut out = Vec::with_capacity(256);
                out.extend_from_slice(br#"{"type":"Transition","startVersion":"#);
                start_version.write_text(&mut out);
                out.extend_from_slice(br#","endVersion":"#);
                end_version.write_text(&mut out);
                out.extend_from_slice(br#","modifications":["#);
                for (i, m) in modifications.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    m.write_text(&mut out);
                }
                out.push(b']');
                if let Some(skew) = client_clock_skew {
                    out.extend_from_slice(br#","clientClockSkew":"#);
                    write_leaf(&mut out, skew);
                }
                if let Some(ts) = server_ts {
                    out.extend_from_slice(br#","serverTs":"#);
                    write_leaf(&mut out, &ts.get());
                }
                out.push(b'}');
                utf8(out)
            }
            ServerMessage::MutationResponse {
                request_id,
                result: Ok(MutationSuccess { value, ts }),
                log_lines,
            } => {
                let mut out = Vec::with_capacity(128);
                out.extend_from_slice(br#"{"type":"MutationResponse","requestId":"#);
                write_leaf(&mut out, &request_id.0);
                out.extend_from_slice(br#","success":true,"result":"#);
                value.write_json(&mut out);
                out.extend_from_slice(br#","ts":"#);
                write_leaf(&mut out, ts.to_base64().as_str());
                out.extend_from_slice(br#","logLines":"#);
                write_leaf(&mut out, log_lines);
                out.push(b'}');
                utf8(out)
            }
            _ => self.to_json().to_string(),
        }
    }

    /// The wire `type`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Transition { .. } => "Transition",
            ServerMessage::MutationResponse { .. } => "MutationResponse",
            ServerMessage::ActionResponse { .. } => "ActionResponse",
            ServerMessage::AuthError { .. } => "AuthError",
            ServerMessage::FatalError { .. } => "FatalError",
            ServerMessage::Ping => "Ping",
        }
    }
}

/// A failed request: `success: false`, the message in `result`, `errorData` only
/// when there is some.
fn insert_failure(m: &mut Map<String, Json>, error: &FunctionError, log_lines: &[String]) {
    m.insert("success".into(), false.into());
    m.insert("result".into(), error.message.as_str().into());
    m.insert("logLines".into(), log_lines.into());
    if let Some(data) = &error.data {
        m.insert("errorData".into(), data.to_json());
    }
}

impl StateVersion {
    fn from_json(f: &Fields<'_>) -> Result<StateVersion> {
        Ok(StateVersion {
            query_set: f.u32("querySet")?,
            identity: f.u32("identity")?,
            ts: f.timestamp("ts")?,
        })
    }

    fn write_text(self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"querySet":"#);
        write_leaf(out, &self.query_set);
        out.extend_from_slice(br#","identity":"#);
        write_leaf(out, &self.identity);
        out.extend_from_slice(br#","ts":"#);
        write_leaf(out, self.ts.to_base64().as_str());
        out.push(b'}');
    }

    fn to_json(self) -> Json {
        let mut m = Map::new();
        m.insert("querySet".into(), self.query_set.into());
        m.insert("identity".into(), self.identity.into());
        m.insert("ts".into(), self.ts.to_base64().into());
        Json::Object(m)
    }
}

impl StateModification {
    fn from_json(json: &Json, path: &str) -> Result<StateModification> {
        let f = Fields::new(as_object(json, path)?, path);
        match f.tag("type")? {
            "QueryUpdated" => Ok(StateModification::QueryUpdated {
                query_id: QueryId(f.u32("queryId")?),
                value: Arc::new(ResultValue::new(f.value("value")?)),
                log_lines: f.strings("logLines")?,
                journal: f.optional_string("journal")?,
            }),
            "QueryFailed" => Ok(StateModification::QueryFailed {
                query_id: QueryId(f.u32("queryId")?),
                error: f.function_error("errorMessage")?,
                log_lines: f.strings("logLines")?,
                journal: f.optional_string("journal")?,
            }),
            "QueryRemoved" => Ok(StateModification::QueryRemoved {
                query_id: QueryId(f.u32("queryId")?),
            }),
            other => Err(unknown(f.path("type"), "state modification", other)),
        }
    }

    fn write_text(&self, out: &mut Vec<u8>) {
        match self {
            StateModification::QueryUpdated {
                query_id,
                value,
                log_lines,
                journal,
            } => {
                out.extend_from_slice(br#"{"type":"QueryUpdated","queryId":"#);
                write_leaf(out, &query_id.0);
                out.extend_from_slice(br#","value":"#);
                out.extend_from_slice(value.json_text().as_bytes());
                out.extend_from_slice(br#","logLines":"#);
                write_leaf(out, log_lines);
                out.extend_from_slice(br#","journal":"#);
                write_leaf(out, journal);
                out.push(b'}');
            }
            other => write_leaf(out, &other.to_json()),
        }
    }

    fn to_json(&self) -> Json {
        match self {
            StateModification::QueryUpdated {
                query_id,
                value,
                log_lines,
                journal,
            } => {
                let mut m = tagged("QueryUpdated");
                m.insert("queryId".into(), query_id.0.into());
                m.insert("value".into(), value.to_json());
                m.insert("logLines".into(), log_lines.clone().into());
                // Always present (`null` when empty): the npm client stores it and
                // sends it back when it re-adds the query after a reconnect.
                m.insert("journal".into(), journal.clone().into());
                Json::Object(m)
            }
            StateModification::QueryFailed {
                query_id,
                error,
                log_lines,
                journal,
            } => {
                let mut m = tagged("QueryFailed");
                m.insert("queryId".into(), query_id.0.into());
                m.insert("errorMessage".into(), error.message.as_str().into());
                m.insert("logLines".into(), log_lines.clone().into());
                m.insert("journal".into(), journal.clone().into());
                if let Some(data) = &error.data {
                    m.insert("errorData".into(), data.to_json());
                }
                Json::Object(m)
            }
            StateModification::QueryRemoved { query_id } => {
                let mut m = tagged("QueryRemoved");
                m.insert("queryId".into(), query_id.0.into());
                Json::Object(m)
            }
        }
    }
}

// ---- decoding helpers ----

fn parse_text(text: &str) -> Result<Json> {
    // serde_json refuses nesting deeper than 128, so hostile input cannot overflow
    // the stack here.
    serde_json::from_str(text).map_err(|e| ProtocolError::NotJson(e.to_string()))
}

/// The message's `type` and its fields.
fn message_kind(json: &Json) -> Result<(&str, &Map<String, Json>)> {
    let map = json
        .as_object()
        .ok_or_else(|| invalid("", "expected a JSON object with a \"type\""))?;
    let kind = Fields::new(map, "").tag("type")?;
    Ok((kind, map))
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ProtocolError {
    ProtocolError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

fn unknown(path: String, what: &'static str, found: &str) -> ProtocolError {
    ProtocolError::UnknownType {
        path,
        what,
        found: found.chars().take(64).collect(),
    }
}

fn as_object<'a>(json: &'a Json, path: &str) -> Result<&'a Map<String, Json>> {
    json.as_object()
        .ok_or_else(|| invalid(path, "expected an object"))
}

fn as_string(json: &Json, path: &str) -> Result<String> {
    json.as_str()
        .map(str::to_string)
        .ok_or_else(|| invalid(path, "expected a string"))
}

fn as_u64(json: &Json, path: &str) -> Result<u64> {
    // `as_u64` is `None` for negative numbers and for anything written with a
    // fraction or exponent, which JavaScript never produces for an integer.
    json.as_u64()
        .ok_or_else(|| invalid(path, "expected a non-negative integer"))
}

fn tagged(kind: &str) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("type".into(), kind.into());
    m
}

fn values_to_json(values: &[Value]) -> Json {
    Json::Array(values.iter().map(Value::to_json).collect())
}

/// The fields of one JSON object, with the path that names it in errors.
struct Fields<'a> {
    map: &'a Map<String, Json>,
    path: String,
}

impl<'a> Fields<'a> {
    fn new(map: &'a Map<String, Json>, path: &str) -> Fields<'a> {
        Fields {
            map,
            path: path.to_string(),
        }
    }

    fn path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn required(&self, name: &str) -> Result<&'a Json> {
        self.map
            .get(name)
            .ok_or_else(|| invalid(self.path(name), "required field is missing"))
    }

    /// An optional field: absent and `null` are both `None`.
    fn optional(&self, name: &str) -> Option<&'a Json> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn tag(&self, name: &str) -> Result<&'a str> {
        self.required(name)?
            .as_str()
            .ok_or_else(|| invalid(self.path(name), "expected a string"))
    }

    fn string(&self, name: &str) -> Result<String> {
        as_string(self.required(name)?, &self.path(name))
    }

    fn optional_string(&self, name: &str) -> Result<Option<String>> {
        self.optional(name)
            .map(|v| as_string(v, &self.path(name)))
            .transpose()
    }

    fn bool(&self, name: &str) -> Result<bool> {
        self.required(name)?
            .as_bool()
            .ok_or_else(|| invalid(self.path(name), "expected a boolean"))
    }

    fn u32(&self, name: &str) -> Result<u32> {
        let path = self.path(name);
        let n = as_u64(self.required(name)?, &path)?;
        u32::try_from(n).map_err(|_| invalid(path, "expected a non-negative integer below 2^32"))
    }

    fn optional_u64(&self, name: &str) -> Result<Option<u64>> {
        self.optional(name)
            .map(|v| as_u64(v, &self.path(name)))
            .transpose()
    }

    fn optional_i64(&self, name: &str) -> Result<Option<i64>> {
        self.optional(name)
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| invalid(self.path(name), "expected an integer"))
            })
            .transpose()
    }

    /// Milliseconds as a JSON number; a fraction (older clients sent
    /// `performance.now()` sums unrounded) is rounded away.
    fn optional_millis(&self, name: &str) -> Result<Option<u64>> {
        let Some(v) = self.optional(name) else {
            return Ok(None);
        };
        if let Some(n) = v.as_u64() {
            return Ok(Some(n));
        }
        match v.as_f64() {
            // In range, so the cast neither saturates nor wraps.
            Some(f) if (0.0..1e18).contains(&f) => Ok(Some(f.round() as u64)),
            _ => Err(invalid(
                self.path(name),
                "expected a non-negative number of milliseconds",
            )),
        }
    }

    fn timestamp(&self, name: &str) -> Result<Timestamp> {
        decode_timestamp(self.required(name)?, &self.path(name))
    }

    fn optional_timestamp(&self, name: &str) -> Result<Option<Timestamp>> {
        self.optional(name)
            .map(|v| decode_timestamp(v, &self.path(name)))
            .transpose()
    }

    fn object(&self, name: &str) -> Result<Fields<'a>> {
        let path = self.path(name);
        Ok(Fields {
            map: as_object(self.required(name)?, &path)?,
            path,
        })
    }

    fn array(&self, name: &str) -> Result<&'a [Json]> {
        self.required(name)?
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| invalid(self.path(name), "expected an array"))
    }

    /// A Convex-encoded value.
    fn value(&self, name: &str) -> Result<Value> {
        Ok(Value::from_json(self.required(name)?, &self.path(name))?)
    }

    /// An array of Convex-encoded values (`args`).
    fn values(&self, name: &str) -> Result<Vec<Value>> {
        let path = self.path(name);
        self.array(name)?
            .iter()
            .enumerate()
            .map(|(i, v)| Ok(Value::from_json(v, &format!("{path}[{i}]"))?))
            .collect()
    }

    /// An array of strings (`logLines`).
    fn strings(&self, name: &str) -> Result<Vec<String>> {
        let path = self.path(name);
        self.array(name)?
            .iter()
            .enumerate()
            .map(|(i, v)| as_string(v, &format!("{path}[{i}]")))
            .collect()
    }

    /// The message in `message_field` plus the optional `errorData`, whose `null`
    /// is a value rather than absence.
    fn function_error(&self, message_field: &str) -> Result<FunctionError> {
        let message = self.string(message_field)?;
        let data = match self.map.get("errorData") {
            Some(v) => Some(Value::from_json(v, &self.path("errorData"))?),
            None => None,
        };
        Ok(FunctionError { message, data })
    }
}

fn decode_timestamp(json: &Json, path: &str) -> Result<Timestamp> {
    json.as_str()
        .and_then(Timestamp::from_base64)
        .ok_or_else(|| {
            invalid(
                path,
                "expected a timestamp: base64 of 8 little-endian bytes",
            )
        })
}

#[cfg(test)]
mod tests;

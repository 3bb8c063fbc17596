//! The subscription manager: one worker thread that owns every live query,
//! re-runs exactly the queries a commit touched, and pushes consistent
//! Transitions to connections.
//!
//! # How a commit reaches subscribers
//!
//! The writer thread hands each commit (its timestamp and write set) to the
//! worker's channel before the mutation's caller hears back. The worker, per
//! round:
//!
//! 1. takes every queued event (commits, query-set changes, identity changes,
//!    read-your-writes requests, connects and disconnects);
//! 2. looks each written key up in the [`InvalidationIndex`] — a hash map from
//!    the common prefix of each read interval to the queries that read it — so a
//!    commit costs in proportion to the queries it hits, not to all queries;
//! 3. if anything must be (re-)evaluated, opens one read snapshot at `S`, first
//!    drains the commits up to `S` (so it has seen every write the snapshot
//!    contains), then evaluates every affected or new query on that snapshot;
//! 4. sends each connection with changes (or waiting for its own write) one
//!    Transition ending at `S`: all its results are valid at `S`, because every
//!    query it holds was either re-run at `S` or untouched by every commit up to
//!    `S`.
//!
//! Identical subscriptions — same path, arguments and identity — share one
//! [`QueryState`] and one evaluation; a connection is sent only results that
//! changed. Each connection's outbound queue is bounded: a connection that does
//! not keep up is dropped (it reconnects and resyncs) rather than slowing the
//! worker or growing memory.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread;

use livebase_schema::protocol::{
    FunctionError, QueryId, QuerySetModification, ResultValue, ServerMessage, StateModification,
    StateVersion,
};
use livebase_schema::{Timestamp, Value};
use tokio::sync::mpsc;

use crate::database::Database;
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::readset::{Commit, KeyInterval, ReadSet};
use crate::registry::{Identity, Registry};
use crate::store::StoreConnection;
use crate::transaction::Transaction;

/// Most queries one connection may hold at once.
pub const MAX_QUERIES_PER_CONNECTION: usize = 1024;
/// Capacity of the worker's event queue. Connections that find it full are
/// told the server is overloaded; the writer waits (backpressure on commits).
pub const EVENT_QUEUE: usize = 65_536;

/// A connection, as the worker knows it.
pub type ConnId = u64;

/// Something the worker must handle.
pub enum Event {
    Commit(Commit),
    Connect {
        conn: ConnId,
        out: Outbound,
    },
    Disconnect {
        conn: ConnId,
    },
    ModifyQuerySet {
        conn: ConnId,
        base_version: u32,
        new_version: u32,
        modifications: Vec<QuerySetModification>,
    },
    /// The connection's identity changed (its token was already checked).
    SetIdentity {
        conn: ConnId,
        base_version: u32,
        identity: Identity,
    },
    /// A failed `Authenticate`: the connection runs as anonymous from now on
    /// (its queries re-run so), and its identity version stays where it was.
    ClearIdentity {
        conn: ConnId,
    },
    /// Read your writes: send this connection a Transition at `ts` or later.
    AwaitTs {
        conn: ConnId,
        ts: Timestamp,
    },
    Shutdown,
}

/// Counters for tests and the benchmark.
#[derive(Debug, Default)]
pub struct Stats {
    /// Query evaluations run by the worker.
    pub evaluations: AtomicU64,
    /// Commits processed.
    pub commits: AtomicU64,
    /// Live shared query states.
    pub live_queries: AtomicU64,
    /// Connections dropped because their outbound queue was full.
    pub dropped_slow: AtomicU64,
}

/// The handle to the worker; cheap to clone.
#[derive(Clone)]
pub struct Subscriptions {
    tx: std_mpsc::SyncSender<Event>,
    stats: Arc<Stats>,
    next_conn: Arc<AtomicU64>,
}

/// The worker's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is overloaded; try again")]
pub struct Overloaded;

impl Subscriptions {
    /// Starts the worker on its own store connection and subscribes it to every
    /// commit of `executor`'s database.
    pub async fn start(executor: &Executor) -> Result<Subscriptions> {
        let db: &Database = executor.database();
        let (tx, rx) = std_mpsc::sync_channel(EVENT_QUEUE);
        let conn = db.persistence().connect()?;
        let commit_tx = tx.clone();
        // Registered on the writer thread: every commit after `start_ts` reaches
        // the worker, none before it does.
        let start_ts = db
            .on_commit(Box::new(move |commit| {
                // Blocks when the queue is full: commits wait for the worker.
                let _ = commit_tx.send(Event::Commit(commit));
            }))
            .await?;
        let stats = Arc::new(Stats::default());
        let worker = Worker {
            conn,
            cursor_key: executor.cursor_key().clone(),
            registry: executor.registry().clone(),
            rx,
            deferred: VecDeque::new(),
            processed_ts: start_ts,
            connections: HashMap::new(),
            dirty: HashSet::new(),
            queries: HashMap::new(),
            by_key: HashMap::new(),
            next_handle: 0,
            index: InvalidationIndex::default(),
            stats: stats.clone(),
        };
        thread::Builder::new()
            .name("livebase-subscriptions".into())
            .spawn(move || worker.run())
            .map_err(|e| Error::internal(format!("spawning the subscription worker: {e}")))?;
        Ok(Subscriptions {
            tx,
            stats,
            next_conn: Arc::new(AtomicU64::new(1)),
        })
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues an event without waiting.
    pub fn send(&self, event: Event) -> Result<(), Overloaded> {
        self.tx.try_send(event).map_err(|_| Overloaded)
    }

    /// Stops the worker.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Event::Shutdown);
    }
}

/// Where live queries' read intervals are filed, by their common prefix.
///
/// **Invariant:** a key `k` lies inside interval `i` only if `k` starts with
/// `i.common_prefix()`, so looking up `k`'s prefixes — one hash lookup per
/// distinct prefix length in use — finds every candidate, and a commit touching
/// one organization's rows never visits another organization's queries.
#[derive(Default)]
pub struct InvalidationIndex {
    by_prefix: HashMap<Vec<u8>, HashMap<u64, Vec<KeyInterval>>>,
    /// How many prefixes of each length are filed (lengths to probe).
    lengths: BTreeMap<usize, usize>,
}

impl InvalidationIndex {
    pub fn insert(&mut self, handle: u64, reads: &ReadSet) {
        for interval in reads.intervals() {
            let prefix = interval.common_prefix().to_vec();
            let len = prefix.len();
            let bucket = self.by_prefix.entry(prefix).or_default();
            if bucket.is_empty() {
                *self.lengths.entry(len).or_default() += 1;
            }
            bucket.entry(handle).or_default().push(interval.clone());
        }
    }

    pub fn remove(&mut self, handle: u64, reads: &ReadSet) {
        for interval in reads.intervals() {
            let prefix = interval.common_prefix();
            let Some(bucket) = self.by_prefix.get_mut(prefix) else {
                continue;
            };
            bucket.remove(&handle);
            if bucket.is_empty() {
                let len = prefix.len();
                self.by_prefix.remove(prefix);
                if let Some(n) = self.lengths.get_mut(&len) {
                    *n -= 1;
                    if *n == 0 {
                        self.lengths.remove(&len);
                    }
                }
            }
        }
    }

    /// Adds to `hits` every query with a read interval holding `key`.
    pub fn hits(&self, key: &[u8], hits: &mut HashSet<u64>) {
        for &len in self.lengths.keys() {
            if len > key.len() {
                break;
            }
            if let Some(bucket) = self.by_prefix.get(&key[..len]) {
                for (handle, intervals) in bucket {
                    if intervals.iter().any(|i| i.contains(key)) {
                        hits.insert(*handle);
                    }
                }
            }
        }
    }
}

/// A query's latest result. The value is shared: every subscriber's
/// Transition points at the same one instead of holding a copy.
type QueryResult = std::result::Result<Arc<ResultValue>, FunctionError>;

/// One shared live query.
struct QueryState {
    path: String,
    args: Vec<Value>,
    identity: Identity,
    key: (String, String, String),
    result: Option<QueryResult>,
    /// The page end a paginated query keeps between runs: the journal the
    /// client sent back in `Add`, then whatever the last run left.
    journal: Option<String>,
    reads: ReadSet,
    subscribers: HashSet<(ConnId, QueryId)>,
    /// Subscribers that joined while an evaluation was due and have not been
    /// sent a result yet.
    awaiting_first: HashSet<(ConnId, QueryId)>,
}

/// A query a connection asks for: its function, arguments and journal.
struct Wanted {
    path: String,
    args: Vec<Value>,
    journal: Option<String>,
}

struct ConnState {
    out: Outbound,
    sent: StateVersion,
    query_set: u32,
    identity_version: u32,
    identity: Identity,
    queries: HashMap<QueryId, u64>,
    /// Queries refused for [`MAX_QUERIES_PER_CONNECTION`]: the client was
    /// sent `QueryFailed` and still holds them, so it may `Remove` them.
    over_cap: HashSet<QueryId>,
    pending: Vec<StateModification>,
    dirty: bool,
    await_ts: Option<Timestamp>,
}

struct Worker {
    conn: Box<dyn StoreConnection>,
    /// What live queries sign their cursors and journals with.
    cursor_key: Arc<crate::pagination::CursorKey>,
    registry: Arc<Registry>,
    rx: std_mpsc::Receiver<Event>,
    /// Events met while draining commits up to a snapshot, handled next round.
    deferred: VecDeque<Event>,
    processed_ts: Timestamp,
    connections: HashMap<ConnId, ConnState>,
    /// Connections with something to send; `flush` visits only these, so a
    /// round costs nothing for idle connections.
    dirty: HashSet<ConnId>,
    queries: HashMap<u64, QueryState>,
    by_key: HashMap<(String, String, String), u64>,
    next_handle: u64,
    index: InvalidationIndex,
    stats: Arc<Stats>,
}

/// The worker's end of one connection's outbound queue: at most
/// [`crate::server::OUTBOUND_QUEUE`] messages, and — because one message can
/// carry results of up to a megabyte each — at most
/// [`crate::server::OUTBOUND_QUEUE_BYTES`] of results waiting before the
/// connection counts as too slow.
#[derive(Clone, Debug)]
pub struct Outbound {
    tx: mpsc::Sender<ServerMessage>,
    queued: Arc<AtomicUsize>,
}

/// The connection's end of its outbound queue.
#[derive(Debug)]
pub struct OutboundRx {
    rx: mpsc::Receiver<ServerMessage>,
    queued: Arc<AtomicUsize>,
}

/// A connection's outbound queue.
pub fn outbound_queue() -> (Outbound, OutboundRx) {
    let (tx, rx) = mpsc::channel(crate::server::OUTBOUND_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbound {
            tx,
            queued: queued.clone(),
        },
        OutboundRx { rx, queued },
    )
}

/// Why a message could not be queued.
enum QueueError {
    /// Too many messages or too many bytes wait already.
    Full,
    /// The connection is gone.
    Closed,
}

impl Outbound {
    /// Queues `msg` unless the connection already has too much waiting; a
    /// single message over the byte budget is still accepted by an otherwise
    /// empty queue, so no result is too big to ever be sent.
    fn try_send(&self, msg: ServerMessage) -> std::result::Result<(), QueueError> {
        let size = queued_size(&msg);
        let before = self.queued.fetch_add(size, Ordering::AcqRel);
        if before > 0 && before + size > crate::server::OUTBOUND_QUEUE_BYTES {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return Err(QueueError::Full);
        }
        self.tx.try_send(msg).map_err(|e| {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => QueueError::Full,
                mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
            }
        })
    }

    /// Bytes of results waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

impl OutboundRx {
    /// The next message; `None` once the worker dropped the connection.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        let msg = self.rx.recv().await?;
        self.queued.fetch_sub(queued_size(&msg), Ordering::AcqRel);
        Some(msg)
    }
}

/// What a queued message counts for: its results' sizes plus a little for
/// the envelope. Results are shared between subscribers, so this is what the
/// message keeps alive at most, counted the same on both ends of the queue.
fn queued_size(msg: &ServerMessage) -> usize {
    const ENVELOPE: usize = 64;
    match msg {
        ServerMessage::Transition { modifications, .. } => {
            ENVELOPE
                + modifications
                    .iter()
                    .map(|m| match m {
                        StateModification::QueryUpdated { value, .. } => ENVELOPE + value.size(),
                        StateModification::QueryFailed { error, .. } => {
                            ENVELOPE
                                + error.message.len()
                                + error.data.as_ref().map_or(0, Value::size)
                        }
                        StateModification::QueryRemoved { .. } => ENVELOPE,
                    })
                    .sum::<usize>()
        }
        _ => ENVELOPE,
    }
}

fn to_wire(result: Result<Value>) -> QueryResult {
    match result {
        Ok(v) => Ok(v.into()),
        Err(e) => Err(FunctionError {
            message: e.client_message(),
            data: e.error_data(),
        }),
    }
}

fn modification(
    query_id: QueryId,
    result: &QueryResult,
    journal: Option<String>,
) -> StateModification {
    match result {
        Ok(value) => StateModification::QueryUpdated {
            query_id,
            value: value.clone(),
            log_lines: Vec::new(),
            journal,
        },
        Err(error) => StateModification::QueryFailed {
            query_id,
            error: error.clone(),
            log_lines: Vec::new(),
            journal,
        },
    }
}

impl Worker {
    fn run(mut self) {
        loop {
            let first = match self.deferred.pop_front() {
                Some(e) => e,
                None => match self.rx.recv() {
                    Ok(e) => e,
                    Err(_) => return,
                },
            };
            let mut events = vec![first];
            events.extend(self.deferred.drain(..));
            while events.len() < 4096 {
                match self.rx.try_recv() {
                    Ok(e) => events.push(e),
                    Err(_) => break,
                }
            }
            let mut to_eval: HashSet<u64> = HashSet::new();
            let mut last_commit = self.processed_ts;
            for event in events {
                match event {
                    Event::Shutdown => return,
                    Event::Commit(c) => {
                        self.invalidate(&c, &mut to_eval);
                        last_commit = last_commit.max(c.ts);
                    }
                    other => self.handle(other, &mut to_eval),
                }
            }
            if to_eval.is_empty() {
                self.processed_ts = last_commit;
            } else if let Err(e) = self.evaluate(&mut to_eval, last_commit) {
                tracing::error!("subscription worker: evaluation failed: {e}");
            }
            self.flush();
        }
    }

    fn invalidate(&mut self, commit: &Commit, to_eval: &mut HashSet<u64>) {
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        for key in commit.writes.keys() {
            self.index.hits(key, to_eval);
        }
    }

    fn handle(&mut self, event: Event, to_eval: &mut HashSet<u64>) {
        match event {
            Event::Connect { conn, out } => {
                self.connections.insert(
                    conn,
                    ConnState {
                        out,
                        sent: StateVersion::INITIAL,
                        query_set: 0,
                        identity_version: 0,
                        identity: Identity::Anonymous,
                        queries: HashMap::new(),
                        over_cap: HashSet::new(),
                        pending: Vec::new(),
                        dirty: false,
                        await_ts: None,
                    },
                );
            }
            Event::Disconnect { conn } => self.drop_connection(conn),
            Event::ModifyQuerySet {
                conn,
                base_version,
                new_version,
                modifications,
            } => self.modify(conn, base_version, new_version, modifications, to_eval),
            Event::SetIdentity {
                conn,
                base_version,
                identity,
            } => self.set_identity(conn, base_version, identity, to_eval),
            Event::ClearIdentity { conn } => {
                self.change_identity(conn, Identity::Anonymous, to_eval)
            }
            Event::AwaitTs { conn, ts } => {
                if let Some(c) = self.connections.get_mut(&conn) {
                    c.await_ts = Some(c.await_ts.map_or(ts, |t| t.max(ts)));
                    self.dirty.insert(conn);
                }
            }
            Event::Commit(_) | Event::Shutdown => {}
        }
    }

    fn fatal(&mut self, conn: ConnId, error: String) {
        if let Some(c) = self.connections.get(&conn) {
            let _ = c.out.try_send(ServerMessage::FatalError { error });
        }
        self.drop_connection(conn);
    }

    fn modify(
        &mut self,
        conn: ConnId,
        base_version: u32,
        new_version: u32,
        modifications: Vec<QuerySetModification>,
        to_eval: &mut HashSet<u64>,
    ) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        if base_version != c.query_set || new_version <= base_version {
            let msg = format!(
                "ModifyQuerySet: baseVersion {base_version} does not match the query set version {} (or newVersion {new_version} is not after it)",
                c.query_set
            );
            return self.fatal(conn, msg);
        }
        for m in modifications {
            match m {
                QuerySetModification::Add {
                    query_id,
                    udf_path,
                    args,
                    component_path,
                    journal,
                } => {
                    let c = &self.connections[&conn];
                    if c.queries.contains_key(&query_id) || c.over_cap.contains(&query_id) {
                        return self.fatal(
                            conn,
                            format!("ModifyQuerySet: query {query_id} is already in the query set"),
                        );
                    }
                    if c.queries.len() >= MAX_QUERIES_PER_CONNECTION {
                        let err = Error::limit(format!(
                            "a connection may hold at most {MAX_QUERIES_PER_CONNECTION} queries"
                        ));
                        let c = self.connections.get_mut(&conn).expect("checked");
                        c.over_cap.insert(query_id);
                        c.pending
                            .push(modification(query_id, &to_wire(Err(err)), None));
                        self.dirty.insert(conn);
                        continue;
                    }
                    let path = match component_path {
                        Some(p) if !p.is_empty() => format!("{p}/{udf_path}"),
                        _ => udf_path,
                    };
                    let identity = c.identity.clone();
                    let wanted = Wanted {
                        path,
                        args,
                        journal,
                    };
                    self.subscribe(conn, query_id, wanted, identity, to_eval);
                }
                QuerySetModification::Remove { query_id } => {
                    let Some(c) = self.connections.get_mut(&conn) else {
                        return;
                    };
                    let Some(handle) = c.queries.remove(&query_id) else {
                        if c.over_cap.remove(&query_id) {
                            c.pending.push(StateModification::QueryRemoved { query_id });
                            continue;
                        }
                        return self.fatal(
                            conn,
                            format!("ModifyQuerySet: query {query_id} is not in the query set"),
                        );
                    };
                    c.pending.push(StateModification::QueryRemoved { query_id });
                    self.unsubscribe(conn, query_id, handle);
                }
            }
        }
        if let Some(c) = self.connections.get_mut(&conn) {
            c.query_set = new_version;
            c.dirty = true;
            self.dirty.insert(conn);
        }
    }

    fn subscribe(
        &mut self,
        conn: ConnId,
        query_id: QueryId,
        wanted: Wanted,
        identity: Identity,
        to_eval: &mut HashSet<u64>,
    ) {
        let Wanted {
            path,
            args,
            journal,
        } = wanted;
        // A page re-added with a journal keeps its own end: it shares only
        // with subscriptions that sent the same journal.
        let mut args_key = Value::Array(args.clone()).to_json().to_string();
        if let Some(j) = &journal {
            args_key.push('\0');
            args_key.push_str(j);
        }
        let key = (path.clone(), args_key, identity.cache_key());
        let handle = match self.by_key.get(&key) {
            Some(h) => *h,
            None => {
                let h = self.next_handle;
                self.next_handle += 1;
                self.queries.insert(
                    h,
                    QueryState {
                        path,
                        args,
                        identity,
                        key: key.clone(),
                        result: None,
                        journal,
                        reads: ReadSet::new(),
                        subscribers: HashSet::new(),
                        awaiting_first: HashSet::new(),
                    },
                );
                self.by_key.insert(key, h);
                self.stats.live_queries.fetch_add(1, Ordering::Relaxed);
                to_eval.insert(h);
                h
            }
        };
        let q = self.queries.get_mut(&handle).expect("just found or made");
        q.subscribers.insert((conn, query_id));
        let c = self.connections.get_mut(&conn).expect("caller checked");
        c.queries.insert(query_id, handle);
        // A query whose result is current and not about to be re-run answers
        // from the shared result right away.
        match (&q.result, to_eval.contains(&handle)) {
            (Some(result), false) => {
                c.pending
                    .push(modification(query_id, result, q.journal.clone()))
            }
            _ => {
                q.awaiting_first.insert((conn, query_id));
            }
        }
    }

    fn unsubscribe(&mut self, conn: ConnId, query_id: QueryId, handle: u64) {
        let Some(q) = self.queries.get_mut(&handle) else {
            return;
        };
        q.subscribers.remove(&(conn, query_id));
        q.awaiting_first.remove(&(conn, query_id));
        if q.subscribers.is_empty() {
            let q = self.queries.remove(&handle).expect("present");
            self.index.remove(handle, &q.reads);
            self.by_key.remove(&q.key);
            self.stats.live_queries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn set_identity(
        &mut self,
        conn: ConnId,
        base_version: u32,
        identity: Identity,
        to_eval: &mut HashSet<u64>,
    ) {
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        if base_version != c.identity_version {
            let msg = format!(
                "Authenticate: baseVersion {base_version} does not match the identity version {}",
                c.identity_version
            );
            return self.fatal(conn, msg);
        }
        c.identity_version = base_version + 1;
        c.dirty = true;
        self.dirty.insert(conn);
        self.change_identity(conn, identity, to_eval);
    }

    /// Re-subscribes the connection's queries under `identity`, if it is new.
    fn change_identity(&mut self, conn: ConnId, identity: Identity, to_eval: &mut HashSet<u64>) {
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        if c.identity == identity {
            return;
        }
        c.identity = identity.clone();
        let held: Vec<(QueryId, u64)> = c.queries.drain().collect();
        for (query_id, handle) in held {
            let Some(q) = self.queries.get(&handle) else {
                continue;
            };
            let (path, args, journal) = (q.path.clone(), q.args.clone(), q.journal.clone());
            self.unsubscribe(conn, query_id, handle);
            let wanted = Wanted {
                path,
                args,
                journal,
            };
            self.subscribe(conn, query_id, wanted, identity.clone(), to_eval);
        }
    }

    fn drop_connection(&mut self, conn: ConnId) {
        let Some(c) = self.connections.remove(&conn) else {
            return;
        };
        for (query_id, handle) in c.queries {
            self.unsubscribe(conn, query_id, handle);
        }
    }

    /// Evaluates `to_eval` on one snapshot, after draining every commit the
    /// snapshot contains (which may add to `to_eval`).
    fn evaluate(&mut self, to_eval: &mut HashSet<u64>, mut last_commit: Timestamp) -> Result<()> {
        let snapshot = self.conn.begin_read()?;
        while last_commit < snapshot {
            match self.rx.recv() {
                Ok(Event::Commit(c)) => {
                    self.invalidate(&c, to_eval);
                    last_commit = last_commit.max(c.ts);
                }
                Ok(other) => self.deferred.push_back(other),
                Err(_) => break,
            }
        }
        let registry = self.registry.clone();
        let handles: Vec<u64> = to_eval.drain().collect();
        for handle in handles {
            let Some(q) = self.queries.get(&handle) else {
                continue; // unsubscribed in the meantime
            };
            let mut tx = Transaction::read_only(self.conn.as_mut(), registry.schema(), snapshot);
            tx.set_cursor_key(self.cursor_key.clone());
            tx.set_journal(q.journal.clone());
            let (result, reads, journal) =
                Executor::evaluate_in(&registry, tx, &q.path, &q.args, &q.identity);
            self.stats.evaluations.fetch_add(1, Ordering::Relaxed);
            let result = to_wire(result.map_err(|e| e.redact(&q.path)));
            let q = self.queries.get_mut(&handle).expect("present");
            // The page end, once set, stays (a failed run before `paginate`
            // leaves none and must not erase it).
            if journal.is_some() {
                q.journal = journal;
            }
            // A re-run usually reads the same ranges: refile only on change.
            if q.reads != reads {
                self.index.remove(handle, &q.reads);
                self.index.insert(handle, &reads);
                q.reads = reads;
            }
            let unchanged = q.result.as_ref() == Some(&result);
            let awaiting = std::mem::take(&mut q.awaiting_first);
            // Unchanged: only subscribers still waiting for a first result hear.
            let recipients = if unchanged { &awaiting } else { &q.subscribers };
            for (conn, query_id) in recipients {
                if let Some(c) = self.connections.get_mut(conn) {
                    c.pending
                        .push(modification(*query_id, &result, q.journal.clone()));
                    self.dirty.insert(*conn);
                }
            }
            q.result = Some(result);
        }
        self.conn.end_read()?;
        self.processed_ts = self.processed_ts.max(snapshot).max(last_commit);
        Ok(())
    }

    /// Sends each connection that has news one Transition ending at the
    /// processed timestamp.
    fn flush(&mut self) {
        let ts = self.processed_ts;
        let mut slow = Vec::new();
        let mut still_waiting = Vec::new();
        for id in self.dirty.drain() {
            let Some(c) = self.connections.get_mut(&id) else {
                continue;
            };
            let awaited = c.await_ts.is_some_and(|t| t <= ts);
            if !c.dirty && c.pending.is_empty() && !awaited {
                if c.await_ts.is_some() {
                    still_waiting.push(id);
                }
                continue;
            }
            if awaited {
                c.await_ts = None;
            }
            let end = StateVersion {
                query_set: c.query_set,
                identity: c.identity_version,
                ts: ts.max(c.sent.ts),
            };
            let msg = ServerMessage::Transition {
                start_version: c.sent,
                end_version: end,
                modifications: std::mem::take(&mut c.pending),
                client_clock_skew: None,
                server_ts: None,
            };
            c.dirty = false;
            if c.await_ts.is_some() {
                // Its own write is not processed yet: visit it again later.
                still_waiting.push(id);
            }
            match c.out.try_send(msg) {
                Ok(()) => c.sent = end,
                Err(QueueError::Full) => {
                    self.stats.dropped_slow.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        conn = id,
                        queued_bytes = c.out.queued_bytes(),
                        "dropping a connection whose outbound queue is full"
                    );
                    slow.push(id);
                }
                Err(QueueError::Closed) => slow.push(id),
            }
        }
        self.dirty.extend(still_waiting);
        for id in slow {
            self.drop_connection(id);
        }
    }
}

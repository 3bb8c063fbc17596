//! The subscription manager: one worker thread that owns every live query
//! and a pool of evaluator threads that run them; it re-runs exactly the
//! queries a commit touched and pushes consistent Transitions to connections.
//!
//! # How a commit reaches subscribers
//!
//! The writer thread hands each commit (its timestamp and write set) to the
//! worker's channel before the mutation's caller hears back. The worker:
//!
//! 1. takes every queued event (commits, finished evaluations, query-set
//!    changes, identity changes, read-your-writes requests, connects and
//!    disconnects);
//! 2. looks each written key up in the [`InvalidationIndex`] — a hash map from
//!    the common prefix of each read interval to the queries that read it — so a
//!    commit costs in proportion to the queries it hits, not to all queries;
//!    a hit query's result is valid up to that commit, and the query is due;
//! 3. hands due queries to idle evaluators ([`evaluator`]), in jobs of one
//!    tenant's queries; each job runs on its own read snapshot, so several
//!    run at once, on every core;
//! 4. takes each finished job's results in: a result read at snapshot `S` is
//!    valid from `S` until the first later commit that wrote into its read
//!    set — checked against the commits processed since the job was sent,
//!    and, for those still to come, by the index;
//! 5. sends each connection with changes (or waiting for its own write) one
//!    Transition ending at the latest timestamp, up to the last processed
//!    commit, at which every result it holds is valid (see [`valid_at`]);
//!    while no such timestamp exists (a query it holds is being re-run
//!    after a commit that touched it) it waits. So every Transition is valid
//!    at one timestamp, whichever snapshots its results were read at.
//!
//! Identical subscriptions — same path, arguments and identity — share one
//! [`QueryState`] and one evaluation; a connection is sent only results that
//! changed. Each connection's outbound queue is bounded: a connection that does
//! not keep up is dropped (it reconnects and resyncs) rather than slowing the
//! worker or growing memory.
//!
//! # Budgets and fairness
//!
//! Nothing a client asks for is kept before it is checked. Each connection
//! checks its `Add`s before they reach the worker ([`ConnectionBudget`]): the
//! function must be a public query, the arguments must pass its validator, and
//! a connection may add [`QUERY_CHURN_BURST`] queries at once and
//! [`QUERY_CHURN_PER_SECOND`] after (an `Authenticate`, which re-runs every
//! query held, counts as adding them all, and is itself limited to
//! [`AUTHENTICATE_BURST`] and [`AUTHENTICATE_PER_MINUTE`]). A refused query is
//! answered `QueryFailed` and only its id is remembered, so the client can
//! `Remove` it — at most [`MAX_REFUSED_QUERIES_PER_CONNECTION`] of them. The
//! worker holds a query's path and arguments once (the lookup key and the state
//! share them) and bounds what it holds per connection
//! ([`MAX_QUERIES_PER_CONNECTION`], [`MAX_QUERY_ARGS_BYTES_PER_CONNECTION`]) and
//! in total ([`MAX_QUERY_ARGS_BYTES_TOTAL`]).
//!
//! Evaluation is scheduled fairly between identities: due queries wait in one
//! queue per identity (anonymous callers share one); an idle evaluator is
//! given the queue of the identity that spent the least evaluation time
//! lately, and a job ends after [`ROUND_BUDGET`] of evaluation. One identity
//! has jobs on at most all but one evaluator ([`evaluator_count`]: one per
//! core, at least two), so another identity's query never waits for a heavy
//! one to finish, and one identity's churn leaves a core to everything else. An identity whose queries have been due without a
//! break for [`STARVATION_LIMIT`] (its data changes faster than its many
//! queries can all be re-run, so its connections are never sent anything)
//! gets one job with all of them, on one snapshot, not cut short.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use livebase_schema::protocol::{
    FunctionError, QueryId, QuerySetModification, ServerMessage, StateModification, StateVersion,
};
use livebase_schema::{Timestamp, Value};

use crate::database::Database;
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::function::{Access, FunctionKind};
use crate::identity::Identity;
use crate::readset::{Commit, InvalidationIndex, ReadSet};
use crate::registry::Registry;
use crate::store::StoreConnection;

mod cost;
mod evaluator;
mod outbound;
mod query;

pub use evaluator::{evaluator_count, EVALUATOR_NICENESS, ROUND_BUDGET, YIELD_EVERY};
use evaluator::{Done, Job, JobQuery, INLINE};
pub use outbound::{
    Ended, Outbound, OutboundRx, LAGGING_MESSAGES, MAX_QUEUED_RESULT_BYTES_TOTAL, OUTBOUND_QUEUE,
    OUTBOUND_QUEUE_BYTES,
};
use outbound::{OutboundQueues, QueueError};
use query::{QueryKey, SharedResult};

/// Most queries one connection may hold at once.
pub const MAX_QUERIES_PER_CONNECTION: usize = 1024;
/// Most bytes of arguments (as [`Value::size`] counts them) the queries one
/// connection holds may take together; an `Add` past it is refused with
/// `LIMIT_EXCEEDED`. Room for one maximal (1 MiB) argument and many small ones.
pub const MAX_QUERY_ARGS_BYTES_PER_CONNECTION: usize = 2 << 20;
/// Most bytes of arguments all live queries may take together (a query shared
/// by many connections counts once); a new query past it is refused with
/// `LIMIT_EXCEEDED`.
pub const MAX_QUERY_ARGS_BYTES_TOTAL: usize = 512 << 20;
/// Most refused queries (answered `QueryFailed` when added) one connection may
/// leave in its query set; only their ids are kept, so it can `Remove` them.
/// Past it the connection is closed.
pub const MAX_REFUSED_QUERIES_PER_CONNECTION: usize = 1024;
/// Queries one connection may add at once (room to subscribe to a full query
/// set, twice) ...
pub const QUERY_CHURN_BURST: u32 = 2 * MAX_QUERIES_PER_CONNECTION as u32;
/// ... and per second after that; more are refused with `LIMIT_EXCEEDED`.
pub const QUERY_CHURN_PER_SECOND: u32 = 100;
/// `Authenticate` messages one connection may send at once ...
pub const AUTHENTICATE_BURST: u32 = 10;
/// ... and per minute after that; one more closes the connection (1008).
pub const AUTHENTICATE_PER_MINUTE: u32 = 30;
/// How long an identity may have queries due, its jobs cut off by
/// [`ROUND_BUDGET`] one after another, before it gets one job that runs all
/// its due queries on one snapshot, however long that takes. Without this,
/// an identity whose data changes faster than its many queries can all be
/// re-run would never be sent a Transition; with it, such a turn takes one
/// evaluator at most once per this long (and one identity never holds
/// every evaluator, so others are not held back by it). What a connection
/// whose queries are re-run on several snapshots under steady writes waits
/// at most for its next Transition, besides the evaluation itself.
pub const STARVATION_LIMIT: Duration = Duration::from_millis(200);
/// How fast an identity's recent evaluation time is forgotten (halved).
const SPENT_HALF_LIFE: Duration = Duration::from_secs(1);
/// Most queries in one job while a tenant's queue is split between
/// evaluators (a job also ends after [`ROUND_BUDGET`]).
const JOB_QUERIES: usize = 64;
/// A job whose queries cost at most this much together when last run (their
/// time on their thread, running or blocked, but not waiting for a core:
/// `cost.rs`) is run by the worker itself, at once. Handing a job to an evaluator thread
/// and its results back costs two wake-ups of idle threads (on a virtual
/// machine, of idle CPUs): on the 2-core machine of BENCHMARKS.md that
/// added 0.15 ms to a small query's push and 0.8 ms to a 500-row one's ...
const INLINE_COST: Duration = Duration::from_millis(1);
/// ... if its tenant spent at most this much evaluation time lately (with
/// [`SPENT_HALF_LIFE`]): a query that ran fast last time may not this time
/// (its data grew), and an identity that makes its queries slow should not
/// get to stall the worker with them again and again.
const INLINE_TENANT_SPENT: Duration = Duration::from_millis(50);
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
    /// A `ModifyQuerySet`, its `Add`s checked by [`ConnectionBudget::check`].
    ModifyQuerySet {
        conn: ConnId,
        base_version: u32,
        new_version: u32,
        changes: Vec<Change>,
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
    /// An evaluator finished a job.
    Evaluated(Box<Done>),
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
    /// Bytes of arguments held by live queries (each shared query once).
    pub query_args_bytes: AtomicU64,
    /// Queries answered `QueryFailed` without being kept: unknown functions,
    /// invalid arguments, budgets.
    pub refused_queries: AtomicU64,
}

/// The handle to the worker; cheap to clone.
#[derive(Clone)]
pub struct Subscriptions {
    tx: std_mpsc::SyncSender<Event>,
    stats: Arc<Stats>,
    next_conn: Arc<AtomicU64>,
    queues: Arc<OutboundQueues>,
}

/// The worker's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is overloaded; try again")]
pub struct Overloaded;

impl Subscriptions {
    /// Starts the worker on its own store connection and subscribes it to every
    /// commit of `executor`'s database; the outbound queues of all connections
    /// together may hold `max_queued_bytes` of results
    /// ([`MAX_QUEUED_RESULT_BYTES_TOTAL`] by default).
    pub async fn start(executor: &Executor, max_queued_bytes: usize) -> Result<Subscriptions> {
        let db: &Database = executor.database();
        let (tx, rx) = std_mpsc::sync_channel(EVENT_QUEUE);
        let setup = evaluator::Setup {
            registry: executor.registry().clone(),
            cursor_key: executor.cursor_key().clone(),
            public_url: executor.public_url().cloned(),
        };
        let mut evaluators = Vec::new();
        for index in 0..evaluator_count() {
            let conn = db.persistence().connect()?;
            let done_tx = tx.clone();
            let done = move |done| done_tx.send(Event::Evaluated(Box::new(done))).is_ok();
            evaluators.push(evaluator::spawn(index, conn, setup.clone(), done)?);
        }
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
        let worker = SubscriptionWorker {
            inline: db.persistence().connect()?,
            setup,
            idle: (0..evaluators.len()).rev().collect(),
            in_flight: vec![None; evaluators.len()],
            evaluators,
            running: HashMap::new(),
            recent: VecDeque::new(),
            rx,
            processed_ts: start_ts,
            connections: HashMap::new(),
            to_flush: HashSet::new(),
            queries: HashMap::new(),
            by_key: HashMap::new(),
            next_handle: 0,
            index: InvalidationIndex::default(),
            due: HashSet::new(),
            queues: HashMap::new(),
            spent: HashMap::new(),
            cut_off: HashMap::new(),
            args_bytes: 0,
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
            queues: Arc::new(OutboundQueues::new(max_queued_bytes)),
        })
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// A new connection's outbound queue: the worker's end goes in its
    /// `Connect` event.
    pub fn outbound_queue(&self) -> (Outbound, OutboundRx) {
        self.queues.queue()
    }

    /// Bytes of results waiting in every connection's outbound queue.
    pub fn queued_bytes(&self) -> usize {
        self.queues.bytes()
    }

    /// Ends every connection's outbound queue, and those of connections yet
    /// to come, with [`Ended::ShuttingDown`]: each connection closes (1001).
    pub fn close_connections(&self) {
        self.queues.close_all();
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

/// One shared live query.
struct QueryState {
    key: Arc<QueryKey>,
    identity: Identity,
    /// Whose evaluation time this query counts against (see [`tenant_of`]).
    tenant: Arc<str>,
    /// Bytes of its path and arguments, counted against the budgets.
    size: usize,
    result: Option<SharedResult>,
    /// The snapshot `result` was read at ...
    evaluated_ts: Timestamp,
    /// ... and the first commit after it known to have written something it
    /// read: the result is valid at every timestamp from `evaluated_ts` up
    /// to, not including, this one.
    invalid_from: Option<Timestamp>,
    /// An evaluator is running it (then it is not in `due`).
    in_flight: bool,
    /// How long its recent runs took: the slowest, fading by half each run
    /// (`None` before the first).
    cost: Option<Duration>,
    /// The page end a paginated query keeps between runs: the journal the
    /// client sent back in `Add`, then whatever the last run left.
    journal: Option<String>,
    reads: ReadSet,
    subscribers: HashSet<(ConnId, QueryId)>,
    /// Subscribers that joined while an evaluation was due and have not been
    /// sent a result yet.
    awaiting_first: HashSet<(ConnId, QueryId)>,
}

/// The fairness key of an identity: the user, whatever the session; all
/// anonymous callers share one.
fn tenant_of(identity: &Identity) -> Arc<str> {
    match identity {
        Identity::Anonymous => Arc::from(""),
        Identity::User { user_id, .. } => Arc::from(format!("user:{user_id}")),
    }
}

struct ConnState {
    out: Outbound,
    sent: StateVersion,
    query_set: u32,
    identity_version: u32,
    identity: Identity,
    queries: HashMap<QueryId, u64>,
    /// Bytes of path and arguments of the queries it holds.
    args_bytes: usize,
    /// Queries refused when added (the client was sent `QueryFailed` and still
    /// holds them, so it may `Remove` them); at most
    /// [`MAX_REFUSED_QUERIES_PER_CONNECTION`].
    refused: HashSet<QueryId>,
    pending: Vec<StateModification>,
    /// Its query-set or identity version moved since the last Transition:
    /// one is owed even with no modification in it.
    version_moved: bool,
    await_ts: Option<Timestamp>,
}

impl ConnState {
    /// Queues a modification. A connection waiting for a due query may collect
    /// several results of one query: only the last of each counts, so past
    /// twice its query count the queue is compacted to that.
    fn push(&mut self, m: StateModification) {
        self.pending.push(m);
        let bound = 2 * (self.queries.len() + self.refused.len()) + 64;
        if self.pending.len() > bound {
            let mut seen = HashSet::new();
            let mut kept: Vec<StateModification> = std::mem::take(&mut self.pending)
                .into_iter()
                .rev()
                .filter(|m| seen.insert(query_of(m)))
                .collect();
            kept.reverse();
            self.pending = kept;
        }
    }
}

fn query_of(m: &StateModification) -> QueryId {
    match m {
        StateModification::QueryUpdated { query_id, .. }
        | StateModification::QueryFailed { query_id, .. }
        | StateModification::QueryRemoved { query_id } => *query_id,
    }
}

/// An identity's recent evaluation time, fading with [`SPENT_HALF_LIFE`].
#[derive(Clone, Copy)]
struct Spent {
    seconds: f64,
    at: Instant,
}

impl Spent {
    fn now(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.at).as_secs_f64();
        self.seconds * 0.5f64.powf(age / SPENT_HALF_LIFE.as_secs_f64())
    }
}

struct SubscriptionWorker {
    /// Each evaluator's job queue.
    evaluators: Vec<std_mpsc::Sender<Job>>,
    /// The worker's own connection, for the small jobs it runs itself.
    inline: Box<dyn StoreConnection>,
    setup: evaluator::Setup,
    /// Evaluators without a job.
    idle: Vec<usize>,
    /// For each evaluator with a job: the processed timestamp when it was
    /// sent (its snapshot is at or after it).
    in_flight: Vec<Option<Timestamp>>,
    /// Jobs in flight per tenant.
    running: HashMap<Arc<str>, usize>,
    /// The commits processed since the oldest job in flight was sent, in
    /// order: what a result read on an earlier snapshot is checked against.
    recent: VecDeque<Commit>,
    rx: std_mpsc::Receiver<Event>,
    /// Every commit up to here has been processed.
    processed_ts: Timestamp,
    connections: HashMap<ConnId, ConnState>,
    /// Connections with something to send; `flush` visits only these, so a
    /// round costs nothing for idle connections. (A query due for a re-run
    /// is in `due`.)
    to_flush: HashSet<ConnId>,
    queries: HashMap<u64, QueryState>,
    by_key: HashMap<Arc<QueryKey>, u64>,
    next_handle: u64,
    index: InvalidationIndex,
    /// Queries to (re-)evaluate and not in flight: new ones, and those a
    /// processed commit touched after their last snapshot.
    due: HashSet<u64>,
    /// The due queries by tenant, oldest first (entries no longer in `due`
    /// are skipped).
    queues: HashMap<Arc<str>, VecDeque<u64>>,
    spent: HashMap<Arc<str>, Spent>,
    /// Since when each tenant has had queries due without a break (see
    /// [`STARVATION_LIMIT`]).
    cut_off: HashMap<Arc<str>, Instant>,
    /// Bytes of path and arguments held by all live queries.
    args_bytes: usize,
    stats: Arc<Stats>,
}

/// A query-set change as the worker receives it: an `Add` already checked
/// against the registry and the connection's churn budget, or refused.
#[derive(Debug)]
pub enum Change {
    Add {
        query_id: QueryId,
        /// The canonical path of a public query.
        path: String,
        /// Arguments its validator accepted.
        args: Arc<Vec<Value>>,
        /// The page end the client sent back (a paginated query's journal).
        journal: Option<String>,
    },
    /// Answered `QueryFailed` with this error; only the id is kept.
    Refuse {
        query_id: QueryId,
        error: FunctionError,
    },
    Remove {
        query_id: QueryId,
    },
}

/// A token bucket: `capacity` at once, refilled at `per_second`.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(capacity: u32, per_second: f64) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(capacity),
            capacity: f64::from(capacity),
            per_second,
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.at = now;
    }

    /// Takes one token if there is one.
    fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One connection's budget for work it makes the worker do, kept by the
/// connection's handler: every `Add` is checked here before it is queued, and
/// identity changes are rate-limited.
#[derive(Debug)]
pub struct ConnectionBudget {
    adds: TokenBucket,
    authentications: TokenBucket,
    /// Queries the client holds (accepted or refused), for the cost of an
    /// identity change.
    held: usize,
}

impl Default for ConnectionBudget {
    fn default() -> Self {
        ConnectionBudget {
            adds: TokenBucket::new(QUERY_CHURN_BURST, f64::from(QUERY_CHURN_PER_SECOND)),
            authentications: TokenBucket::new(
                AUTHENTICATE_BURST,
                f64::from(AUTHENTICATE_PER_MINUTE) / 60.0,
            ),
            held: 0,
        }
    }
}

impl ConnectionBudget {
    /// Checks a `ModifyQuerySet`'s modifications: an `Add` of anything but a
    /// public query with valid arguments, or past the churn budget, becomes a
    /// refusal that keeps neither its path nor its arguments.
    pub fn check(
        &mut self,
        registry: &Registry,
        modifications: Vec<QuerySetModification>,
    ) -> Vec<Change> {
        self.adds.refill();
        modifications
            .into_iter()
            .map(|m| match m {
                QuerySetModification::Remove { query_id } => {
                    self.held = self.held.saturating_sub(1);
                    Change::Remove { query_id }
                }
                QuerySetModification::Add {
                    query_id,
                    udf_path,
                    args,
                    component_path,
                    journal,
                } => {
                    self.held += 1;
                    if !self.adds.take() {
                        let err = Error::limit(format!(
                            "a connection may add at most {QUERY_CHURN_PER_SECOND} queries a second (after {QUERY_CHURN_BURST} at once); add this query again later"
                        ));
                        return refusal(query_id, err);
                    }
                    let path = match component_path {
                        Some(p) if !p.is_empty() => format!("{p}/{udf_path}"),
                        _ => udf_path,
                    };
                    let checked = registry
                        .lookup(&path, FunctionKind::Query, Access::PublicOnly)
                        .and_then(|f| Registry::check_args(f, &args).map(|_| f.path.clone()));
                    match checked {
                        Ok(path) => Change::Add {
                            query_id,
                            path,
                            args: Arc::new(args),
                            journal,
                        },
                        Err(e) => refusal(query_id, e),
                    }
                }
            })
            .collect()
    }

    /// Counts one `Authenticate`; `Err` (the reason to close with) past the
    /// budget. An identity change re-runs every query held, so it also costs
    /// the add budget that many queries (which may go into debt: later `Add`s
    /// are refused until it is paid back).
    pub fn authenticate(&mut self) -> std::result::Result<(), String> {
        self.authentications.refill();
        if !self.authentications.take() {
            return Err(format!(
                "too many Authenticate messages: at most {AUTHENTICATE_BURST} at once and {AUTHENTICATE_PER_MINUTE} a minute"
            ));
        }
        self.adds.refill();
        self.adds.tokens -= self.held as f64;
        Ok(())
    }
}

fn refusal(query_id: QueryId, e: Error) -> Change {
    Change::Refuse {
        query_id,
        error: e.to_function_error(),
    }
}

/// Bytes a query's path and arguments take.
fn size_of(path: &str, args: &[Value]) -> usize {
    path.len() + args.iter().map(Value::size).sum::<usize>()
}

fn modification(
    query_id: QueryId,
    result: &SharedResult,
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

impl SubscriptionWorker {
    fn run(mut self) {
        loop {
            let mut events = Vec::new();
            match self.rx.recv() {
                Ok(e) => events.push(e),
                Err(_) => return,
            }
            while events.len() < 4096 {
                match self.rx.try_recv() {
                    Ok(e) => events.push(e),
                    Err(_) => break,
                }
            }
            for event in events {
                match event {
                    Event::Shutdown => return,
                    Event::Commit(c) => self.invalidate(c),
                    Event::Evaluated(done) => self.accept(*done),
                    other => self.handle(other),
                }
            }
            self.dispatch();
            self.flush();
        }
    }

    fn invalidate(&mut self, commit: Commit) {
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.processed_ts = self.processed_ts.max(commit.ts);
        let mut hits = HashSet::new();
        if commit.writes.is_everything() {
            // What changed is unknown: every query may have.
            hits.extend(self.queries.keys().copied());
        }
        for key in commit.writes.keys() {
            self.index.hits(key, &mut hits);
        }
        for handle in hits {
            let Some(q) = self.queries.get_mut(&handle) else {
                continue;
            };
            if q.result.is_some() && commit.ts <= q.evaluated_ts {
                continue; // its snapshot already had this commit
            }
            if q.result.is_some() && q.invalid_from.is_none() {
                q.invalid_from = Some(commit.ts);
            }
            // One in flight is checked against this commit when it is back.
            if !q.in_flight {
                self.mark_due(handle);
            }
        }
        if self.idle.len() < self.evaluators.len() {
            self.recent.push_back(commit);
        }
    }

    /// Queues a query for evaluation in its tenant's queue, once.
    fn mark_due(&mut self, handle: u64) {
        let Some(q) = self.queries.get(&handle) else {
            return;
        };
        if self.due.insert(handle) {
            self.queues
                .entry(q.tenant.clone())
                .or_default()
                .push_back(handle);
        }
    }

    fn handle(&mut self, event: Event) {
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
                        args_bytes: 0,
                        refused: HashSet::new(),
                        pending: Vec::new(),
                        version_moved: false,
                        await_ts: None,
                    },
                );
            }
            Event::Disconnect { conn } => self.drop_connection(conn),
            Event::ModifyQuerySet {
                conn,
                base_version,
                new_version,
                changes,
            } => self.modify(conn, base_version, new_version, changes),
            Event::SetIdentity {
                conn,
                base_version,
                identity,
            } => self.set_identity(conn, base_version, identity),
            Event::ClearIdentity { conn } => self.change_identity(conn, Identity::Anonymous),
            Event::AwaitTs { conn, ts } => {
                if let Some(c) = self.connections.get_mut(&conn) {
                    c.await_ts = Some(c.await_ts.map_or(ts, |t| t.max(ts)));
                    self.to_flush.insert(conn);
                }
            }
            Event::Commit(_) | Event::Evaluated(_) | Event::Shutdown => {}
        }
    }

    fn fatal(&mut self, conn: ConnId, error: String) {
        if let Some(c) = self.connections.get(&conn) {
            let _ = c.out.try_send(ServerMessage::FatalError { error });
        }
        self.drop_connection(conn);
    }

    /// Applies a `ModifyQuerySet`: its versions checked, then each change in
    /// order, then the query-set version moved. A protocol violation closes
    /// the connection and stops there.
    fn modify(&mut self, conn: ConnId, base_version: u32, new_version: u32, changes: Vec<Change>) {
        if !self.check_query_set_versions(conn, base_version, new_version) {
            return;
        }
        for change in changes {
            if !self.apply_change(conn, change) {
                return;
            }
        }
        if let Some(c) = self.connections.get_mut(&conn) {
            c.query_set = new_version;
            c.version_moved = true;
            self.to_flush.insert(conn);
        }
    }

    /// Whether a `ModifyQuerySet` starts at the connection's query-set version
    /// and moves it forward; `false` if the connection is gone or was closed
    /// for it.
    fn check_query_set_versions(
        &mut self,
        conn: ConnId,
        base_version: u32,
        new_version: u32,
    ) -> bool {
        let Some(c) = self.connections.get(&conn) else {
            return false;
        };
        if base_version != c.query_set || new_version <= base_version {
            let msg = format!(
                "ModifyQuerySet: baseVersion {base_version} does not match the query set version {} (or newVersion {new_version} is not after it)",
                c.query_set
            );
            self.fatal(conn, msg);
            return false;
        }
        true
    }

    /// Applies one change of a query set; `false` if that closed the
    /// connection (a removed query it does not hold, an added one it does,
    /// too many refused).
    fn apply_change(&mut self, conn: ConnId, change: Change) -> bool {
        let query_id = match &change {
            Change::Remove { query_id } => return self.remove(conn, *query_id),
            Change::Add { query_id, .. } | Change::Refuse { query_id, .. } => *query_id,
        };
        let c = &self.connections[&conn];
        if c.queries.contains_key(&query_id) || c.refused.contains(&query_id) {
            self.fatal(
                conn,
                format!("ModifyQuerySet: query {query_id} is already in the query set"),
            );
            return false;
        }
        let outcome = match change {
            Change::Refuse { error, .. } => Err(error),
            Change::Add {
                path,
                args,
                journal,
                ..
            } => self.add(conn, query_id, path, args, journal),
            Change::Remove { .. } => unreachable!("handled above"),
        };
        match outcome {
            Ok(()) => true,
            Err(error) => self.refuse(conn, query_id, error),
        }
    }

    /// Adds a query the connection's handler accepted, within the
    /// connection's budgets: `Err` (to be answered `QueryFailed`) past them.
    fn add(
        &mut self,
        conn: ConnId,
        query_id: QueryId,
        path: String,
        args: Arc<Vec<Value>>,
        journal: Option<String>,
    ) -> std::result::Result<(), FunctionError> {
        let c = &self.connections[&conn];
        let size = size_of(&path, &args);
        if c.queries.len() >= MAX_QUERIES_PER_CONNECTION {
            return Err(limit(format!(
                "a connection may hold at most {MAX_QUERIES_PER_CONNECTION} queries"
            )));
        }
        if c.args_bytes + size > MAX_QUERY_ARGS_BYTES_PER_CONNECTION {
            return Err(limit(format!(
                "the queries of a connection may hold at most {MAX_QUERY_ARGS_BYTES_PER_CONNECTION} bytes of arguments; this one has {size} and {} are held",
                c.args_bytes
            )));
        }
        let identity = c.identity.clone();
        self.subscribe(conn, query_id, path, args, journal, identity)
    }

    /// Removes a query (held or refused); `false` if the connection was
    /// closed because it holds no such query.
    fn remove(&mut self, conn: ConnId, query_id: QueryId) -> bool {
        let Some(c) = self.connections.get_mut(&conn) else {
            return false;
        };
        let Some(handle) = c.queries.remove(&query_id) else {
            if c.refused.remove(&query_id) {
                c.push(StateModification::QueryRemoved { query_id });
                return true;
            }
            self.fatal(
                conn,
                format!("ModifyQuerySet: query {query_id} is not in the query set"),
            );
            return false;
        };
        c.push(StateModification::QueryRemoved { query_id });
        self.unsubscribe(conn, query_id, handle);
        true
    }

    /// Answers `QueryFailed` for a query that is not kept, remembering only
    /// its id; `false` if that closed the connection (too many refused).
    fn refuse(&mut self, conn: ConnId, query_id: QueryId, error: FunctionError) -> bool {
        let Some(c) = self.connections.get_mut(&conn) else {
            return false;
        };
        if c.refused.len() >= MAX_REFUSED_QUERIES_PER_CONNECTION {
            self.fatal(
                conn,
                format!(
                    "ModifyQuerySet: the query set holds {MAX_REFUSED_QUERIES_PER_CONNECTION} refused queries; remove some before adding more"
                ),
            );
            return false;
        }
        self.stats.refused_queries.fetch_add(1, Ordering::Relaxed);
        c.refused.insert(query_id);
        c.push(StateModification::QueryFailed {
            query_id,
            error,
            log_lines: Vec::new(),
            journal: None,
        });
        self.to_flush.insert(conn);
        true
    }

    /// Subscribes `conn` to the shared query `(path, args, identity)`, making
    /// it if needed: `Err` if a new one would pass the server's total budget.
    fn subscribe(
        &mut self,
        conn: ConnId,
        query_id: QueryId,
        path: String,
        args: Arc<Vec<Value>>,
        journal: Option<String>,
        identity: Identity,
    ) -> std::result::Result<(), FunctionError> {
        let key = QueryKey {
            path,
            args,
            identity: identity.cache_key(),
            journal,
        };
        let (handle, size) = match self.by_key.get(&key) {
            Some(h) => (*h, self.queries[h].size),
            None => {
                let size = size_of(&key.path, &key.args);
                if self.args_bytes + size > MAX_QUERY_ARGS_BYTES_TOTAL {
                    return Err(limit(format!(
                        "the server holds {MAX_QUERY_ARGS_BYTES_TOTAL} bytes of query arguments already; try again later"
                    )));
                }
                let h = self.next_handle;
                self.next_handle += 1;
                let key = Arc::new(key);
                self.queries.insert(
                    h,
                    QueryState {
                        key: key.clone(),
                        tenant: tenant_of(&identity),
                        identity,
                        size,
                        result: None,
                        evaluated_ts: Timestamp::ZERO,
                        invalid_from: None,
                        in_flight: false,
                        cost: None,
                        journal: key.journal.clone(),
                        reads: ReadSet::new(),
                        subscribers: HashSet::new(),
                        awaiting_first: HashSet::new(),
                    },
                );
                self.by_key.insert(key, h);
                self.args_bytes += size;
                self.stats
                    .query_args_bytes
                    .store(self.args_bytes as u64, Ordering::Relaxed);
                self.stats.live_queries.fetch_add(1, Ordering::Relaxed);
                self.mark_due(h);
                (h, size)
            }
        };
        let q = self.queries.get_mut(&handle).expect("just found or made");
        q.subscribers.insert((conn, query_id));
        let c = self.connections.get_mut(&conn).expect("caller checked");
        c.queries.insert(query_id, handle);
        c.args_bytes += size;
        // A query whose result is current and not about to be re-run answers
        // from the shared result right away.
        match (&q.result, q.invalid_from) {
            (Some(result), None) => c.push(modification(query_id, result, q.journal.clone())),
            _ => {
                q.awaiting_first.insert((conn, query_id));
            }
        }
        Ok(())
    }

    fn unsubscribe(&mut self, conn: ConnId, query_id: QueryId, handle: u64) {
        let Some(q) = self.queries.get_mut(&handle) else {
            return;
        };
        q.subscribers.remove(&(conn, query_id));
        q.awaiting_first.remove(&(conn, query_id));
        if let Some(c) = self.connections.get_mut(&conn) {
            c.args_bytes = c.args_bytes.saturating_sub(q.size);
        }
        if q.subscribers.is_empty() {
            let q = self.queries.remove(&handle).expect("present");
            self.index.remove(handle, &q.reads);
            self.by_key.remove(&q.key);
            self.due.remove(&handle);
            self.args_bytes -= q.size;
            self.stats
                .query_args_bytes
                .store(self.args_bytes as u64, Ordering::Relaxed);
            self.stats.live_queries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn set_identity(&mut self, conn: ConnId, base_version: u32, identity: Identity) {
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
        c.version_moved = true;
        self.to_flush.insert(conn);
        self.change_identity(conn, identity);
    }

    /// Re-subscribes the connection's queries under `identity`, if it is new.
    fn change_identity(&mut self, conn: ConnId, identity: Identity) {
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
            let (path, args, journal) = (q.key.path.clone(), q.key.args.clone(), q.journal.clone());
            self.unsubscribe(conn, query_id, handle);
            if let Err(error) =
                self.subscribe(conn, query_id, path, args, journal, identity.clone())
            {
                if !self.refuse(conn, query_id, error) {
                    return;
                }
            }
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

    /// Hands due queries to idle evaluators: the starving tenant first (one
    /// job with all its due queries, once none of its jobs is in flight),
    /// then the tenants that spent the least evaluation time lately, each
    /// one's queries oldest first. A tenant has jobs on at most all but one
    /// evaluator, so another tenant's query never waits for one to be free.
    fn dispatch(&mut self) {
        let started = Instant::now();
        let cap = self.evaluators.len().saturating_sub(1).max(1);
        while !self.idle.is_empty() {
            let mut best: Option<(bool, f64, Arc<str>)> = None;
            for (tenant, queue) in &self.queues {
                let running = self.running.get(tenant).copied().unwrap_or(0);
                let starving = self.cut_off.get(tenant).is_some_and(|since| {
                    started.saturating_duration_since(*since) >= STARVATION_LIMIT
                });
                if queue.is_empty() || running >= cap || (starving && running > 0) {
                    continue;
                }
                let spent = self.spent.get(tenant).map_or(0.0, |s| s.now(started));
                let candidate = (!starving, spent, tenant.clone());
                if best
                    .as_ref()
                    .is_none_or(|b| (candidate.0, candidate.1) < (b.0, b.1))
                {
                    best = Some(candidate);
                }
            }
            let Some((not_starving, _, tenant)) = best else {
                break;
            };
            let running = self.running.get(&tenant).copied().unwrap_or(0);
            let queue = self.queues.get_mut(&tenant).expect("a candidate's queue");
            let most = if not_starving {
                queue.len().div_ceil(cap - running).clamp(1, JOB_QUERIES)
            } else {
                usize::MAX
            };
            let mut queries = Vec::new();
            while queries.len() < most {
                let Some(handle) = queue.pop_front() else {
                    break;
                };
                if !self.due.remove(&handle) {
                    continue; // evaluated or unsubscribed since it was queued
                }
                let q = self.queries.get_mut(&handle).expect("a due query is live");
                q.in_flight = true;
                queries.push(JobQuery {
                    handle,
                    key: q.key.clone(),
                    identity: q.identity.clone(),
                    journal: q.journal.clone(),
                    previous: q.result.clone(),
                });
            }
            if queries.is_empty() {
                continue; // only stale entries: the queue is empty now
            }
            let job = Job {
                tenant: tenant.clone(),
                uncut: !not_starving,
                queries,
            };
            if self.is_small(&job) {
                let done = evaluator::run(INLINE, self.inline.as_mut(), &self.setup, job);
                self.accept(done);
                continue;
            }
            let evaluator = self.idle.pop().expect("checked above");
            if let Err(std_mpsc::SendError(job)) = self.evaluators[evaluator].send(job) {
                tracing::error!("subscription worker: evaluator {evaluator} is gone");
                for q in job.queries {
                    if let Some(state) = self.queries.get_mut(&q.handle) {
                        state.in_flight = false;
                        self.mark_due(q.handle);
                    }
                }
                break;
            }
            self.in_flight[evaluator] = Some(self.processed_ts);
            *self.running.entry(tenant).or_insert(0) += 1;
        }
        self.queues.retain(|_, q| !q.is_empty());
        let (queues, running) = (&self.queues, &self.running);
        self.cut_off
            .retain(|t, _| queues.contains_key(t) || running.contains_key(t));
        for tenant in self.queues.keys() {
            self.cut_off.entry(tenant.clone()).or_insert(started);
        }
        if self.spent.len() > 2 * self.queues.len() + 1024 {
            let now = Instant::now();
            let queues = &self.queues;
            self.spent
                .retain(|t, s| queues.contains_key(t) || s.now(now) > 1e-6);
        }
    }

    /// Whether `job` is small enough to run on the worker's own thread: every
    /// query in it has run before, all together within [`INLINE_COST`], and
    /// its tenant has been light lately ([`INLINE_TENANT_SPENT`]).
    fn is_small(&self, job: &Job) -> bool {
        let spent = self
            .spent
            .get(&job.tenant)
            .map_or(0.0, |s| s.now(Instant::now()));
        if spent > INLINE_TENANT_SPENT.as_secs_f64() {
            return false;
        }
        let mut total = Duration::ZERO;
        for q in &job.queries {
            match self.queries.get(&q.handle).and_then(|s| s.cost) {
                Some(cost) => total += cost,
                None => return false,
            }
        }
        total <= INLINE_COST
    }

    /// Takes in a finished job: its evaluator is free again, its tenant is
    /// charged its time, each result replaces its query's (checked against
    /// the commits processed since its snapshot), and the queries it did not
    /// get to are due again, first in their tenant's queue.
    fn accept(&mut self, done: Done) {
        if done.evaluator != INLINE {
            self.idle.push(done.evaluator);
            self.in_flight[done.evaluator] = None;
            if let Some(n) = self.running.get_mut(&done.tenant) {
                *n -= 1;
                if *n == 0 {
                    self.running.remove(&done.tenant);
                }
            }
        }
        let now = Instant::now();
        let spent = self.spent.entry(done.tenant.clone()).or_insert(Spent {
            seconds: 0.0,
            at: now,
        });
        *spent = Spent {
            seconds: spent.now(now) + done.spent.as_secs_f64(),
            at: now,
        };
        if done.uncut {
            // It had its turn; the next one is a full STARVATION_LIMIT away.
            self.cut_off.remove(&done.tenant);
        }
        self.stats
            .evaluations
            .fetch_add(done.results.len() as u64, Ordering::Relaxed);
        for evaluated in done.results {
            self.accept_one(evaluated, done.ts);
        }
        for &handle in done.not_run.iter().rev() {
            let Some(q) = self.queries.get_mut(&handle) else {
                continue;
            };
            q.in_flight = false;
            if self.due.insert(handle) {
                self.queues
                    .entry(q.tenant.clone())
                    .or_default()
                    .push_front(handle);
            }
        }
        match self.in_flight.iter().flatten().min() {
            Some(&oldest) => {
                while self.recent.front().is_some_and(|c| c.ts <= oldest) {
                    self.recent.pop_front();
                }
            }
            None => self.recent.clear(),
        }
    }

    /// One query's new result, read at `ts`.
    fn accept_one(&mut self, evaluated: evaluator::Evaluated, ts: Timestamp) {
        let handle = evaluated.handle;
        let Some(q) = self.queries.get_mut(&handle) else {
            return; // unsubscribed while it ran
        };
        q.in_flight = false;
        // The slowest recent run counts, fading by half each run: one fast
        // run after a slow one does not make a query small.
        q.cost = Some(
            q.cost
                .map_or(evaluated.spent, |c| (c / 2).max(evaluated.spent)),
        );
        // The page end, once set, stays (a failed run before `paginate`
        // leaves none and must not erase it).
        if evaluated.journal.is_some() {
            q.journal = evaluated.journal;
        }
        // A re-run usually reads the same ranges: refile only on change.
        if q.reads != evaluated.reads {
            self.index.remove(handle, &q.reads);
            self.index.insert(handle, &evaluated.reads);
            q.reads = evaluated.reads;
        }
        // Commits after the snapshot were looked up under the old read set
        // (or this one is not filed yet): check them against the new one.
        q.evaluated_ts = ts;
        q.invalid_from = self
            .recent
            .iter()
            .find(|c| c.ts > ts && q.reads.overlaps(&c.writes))
            .map(|c| c.ts);
        let result = evaluated.result;
        // The job compared it with this query's result when it was sent,
        // which nothing but this job's return could have changed since.
        let unchanged = evaluated.unchanged;
        let awaiting = std::mem::take(&mut q.awaiting_first);
        // Unchanged: only subscribers still waiting for a first result hear.
        let recipients = if unchanged { &awaiting } else { &q.subscribers };
        for (conn, query_id) in recipients {
            if let Some(c) = self.connections.get_mut(conn) {
                c.push(modification(*query_id, &result, q.journal.clone()));
                self.to_flush.insert(*conn);
            }
        }
        q.result = Some(result);
        if q.invalid_from.is_some() {
            self.mark_due(handle);
        }
    }

    /// Sends each connection that has news one Transition, if there is a
    /// timestamp at which every result it holds is valid: the latest such
    /// one, up to the processed timestamp.
    fn flush(&mut self) {
        let mut slow = Vec::new();
        let mut still_waiting = Vec::new();
        for id in self.to_flush.drain() {
            let Some(c) = self.connections.get_mut(&id) else {
                continue;
            };
            let Some(ts) = valid_at(id, c, &self.queries, self.processed_ts) else {
                // Some query it holds has no result valid with the others yet.
                still_waiting.push(id);
                continue;
            };
            let awaited = c.await_ts.is_some_and(|t| t <= ts);
            if !c.version_moved && c.pending.is_empty() && !awaited {
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
                ts,
            };
            let msg = ServerMessage::Transition {
                start_version: c.sent,
                end_version: end,
                modifications: std::mem::take(&mut c.pending),
                client_clock_skew: None,
                server_ts: None,
            };
            c.version_moved = false;
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
        self.to_flush.extend(still_waiting);
        for id in slow {
            self.drop_connection(id);
        }
    }
}

/// The latest timestamp, not after `processed` nor before what `c` was last
/// sent, at which every query `c` holds has a result it was sent (or has
/// pending) that is valid: after each one's snapshot and before the first
/// commit known to invalidate it. `None` if there is none yet (a query
/// awaits its first result, or the results' intervals do not meet).
fn valid_at(
    id: ConnId,
    c: &ConnState,
    queries: &HashMap<u64, QueryState>,
    processed: Timestamp,
) -> Option<Timestamp> {
    let mut lo = c.sent.ts;
    let mut hi = processed;
    for (&query_id, handle) in &c.queries {
        let q = queries.get(handle)?;
        if q.result.is_none() || q.awaiting_first.contains(&(id, query_id)) {
            return None;
        }
        lo = lo.max(q.evaluated_ts);
        if let Some(from) = q.invalid_from {
            hi = hi.min(Timestamp::new(from.get().saturating_sub(1)));
        }
    }
    (lo <= hi).then_some(hi)
}

/// A `LIMIT_EXCEEDED` error as a query's failure.
fn limit(message: String) -> FunctionError {
    Error::limit(message).to_function_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting_connection(queries: u32) -> (ConnState, OutboundRx) {
        let (out, rx) = Arc::new(OutboundQueues::new(MAX_QUEUED_RESULT_BYTES_TOTAL)).queue();
        let c = ConnState {
            out,
            sent: StateVersion::INITIAL,
            query_set: 0,
            identity_version: 0,
            identity: Identity::Anonymous,
            queries: (0..queries).map(|i| (QueryId(i), u64::from(i))).collect(),
            args_bytes: 0,
            refused: HashSet::new(),
            pending: Vec::new(),
            version_moved: false,
            await_ts: None,
        };
        (c, rx)
    }

    fn updated(query: u32, n: f64) -> StateModification {
        StateModification::QueryUpdated {
            query_id: QueryId(query),
            value: Value::Float64(n).into(),
            log_lines: Vec::new(),
            journal: None,
        }
    }

    #[test]
    fn a_waiting_connection_keeps_only_the_last_result_of_each_query() {
        let (mut c, _rx) = waiting_connection(3);
        for round in 0..1000 {
            for query in 0..3 {
                c.push(updated(query, f64::from(round)));
            }
        }
        c.push(StateModification::QueryRemoved {
            query_id: QueryId(1),
        });
        assert!(c.pending.len() <= 2 * 3 + 64 + 1, "{}", c.pending.len());
        // Whatever was dropped, the last modification of each query is there,
        // in the order they were made.
        let mut seen = HashSet::new();
        let last: Vec<&StateModification> = c
            .pending
            .iter()
            .rev()
            .filter(|m| seen.insert(query_of(m)))
            .collect();
        assert_eq!(
            last,
            vec![
                &StateModification::QueryRemoved {
                    query_id: QueryId(1)
                },
                &updated(2, 999.0),
                &updated(0, 999.0),
            ]
        );
    }

    #[test]
    fn a_token_bucket_allows_its_burst_then_its_rate() {
        let mut bucket = TokenBucket::new(3, 0.0);
        assert!(bucket.take() && bucket.take() && bucket.take());
        assert!(!bucket.take());
        bucket.refill();
        assert!(!bucket.take(), "no refill at a rate of zero");
    }
}

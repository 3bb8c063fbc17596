//! The database: the store behind an async handle. Mutations run one at a time
//! on a dedicated writer thread that owns the only write connection (so commits
//! are serial and their timestamps strictly increase); queries run on a small
//! pool of reader threads, each with its own connection and snapshot. Async code
//! sends a job and awaits a oneshot reply; no SQLite connection is ever held
//! across an `.await`.
//!
//! **Group commit.** Mutations that queue up while the disk is busy share one
//! SQLite transaction and so one sync: each runs inside its own savepoint (a
//! failing one is rolled back alone) and gets its own commit timestamp, but
//! nobody is answered — and no subscriber hears of a commit — until the whole
//! group is durable. One mutation alone is a group of one.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use livebase_schema::{Schema, Timestamp};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::persistence::{CommitLog, LogRead, Persistence, StoreConnection};
use crate::readset::{Commit, ReadSet, WriteSet};
use crate::transaction::Transaction;

/// Most mutations committed together.
pub const MAX_GROUP: usize = 64;

enum WriteJob {
    /// Runs between groups, outside any transaction.
    Plain(Box<dyn FnOnce(&mut Writer) + Send>),
    /// Runs inside the group's transaction and is answered after its commit.
    Mutation(MutationJob),
}

/// A mutation: run in the open group transaction, or told why there is none.
type MutationJob = Box<dyn FnOnce(Result<&mut Writer>) -> Staged + Send>;

/// A mutation that ran inside the open group transaction, waiting for the
/// group's commit.
struct Staged {
    /// Its commit timestamp and writes, if it wrote documents.
    commit: Option<(Timestamp, Arc<WriteSet>)>,
    /// Whether it wrote anything at all (documents or other rows such as
    /// mutation outcomes): a group where nothing did is rolled back, not synced.
    durable: bool,
    /// Answers the caller with the group's outcome.
    reply: Box<dyn FnOnce(Result<()>) + Send>,
}
type ReadJob = Box<dyn FnOnce(&mut dyn StoreConnection, &Schema) + Send>;
/// Called after every commit, in commit order: on the writer thread, or on
/// the thread that reads the commit log when the store keeps one.
pub type CommitListener = Box<dyn Fn(Commit) + Send>;

/// The commit listeners, and the last commit they were all told of.
struct Listeners {
    list: Vec<CommitListener>,
    told: Timestamp,
}

impl Listeners {
    /// Tells every listener of `commit`, unless they were told of it (or of
    /// a later one) already: with a commit log, the writer tells of its own
    /// commits at once and the log's reader of everyone's, whichever comes
    /// first, and each commit is told once, in order.
    fn tell(&mut self, commit: Commit) {
        if commit.ts <= self.told {
            return;
        }
        self.told = commit.ts;
        for l in &self.list {
            l(commit.clone());
        }
    }
}

/// Commits read from the commit log at most at once.
pub const LOG_BATCH: usize = 1_024;
/// How long the log's reader waits for an announced commit before it reads
/// the log again anyway: what a lost announcement can delay a commit by.
pub const LOG_POLL: Duration = Duration::from_millis(500);

/// Number of reader threads (and connections) for one-shot queries.
pub const READER_THREADS: usize = 2;
/// Queries (HTTP queries, token checks, sign-ins) waiting for a reader thread
/// at most; one more is answered `LIMIT_EXCEEDED` ("the server is busy") at
/// once instead of growing the queue (each job may hold megabytes of
/// arguments) and every caller's wait.
pub const READER_QUEUE: usize = 256;

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    schema: Arc<Schema>,
    persistence: Arc<dyn Persistence>,
    writer: std_mpsc::Sender<WriteJob>,
    readers: std_mpsc::SyncSender<ReadJob>,
    clock: Clock,
    listeners: Arc<Mutex<Listeners>>,
    /// Tells the commit log's reader, if there is one, to stop.
    stopped: Arc<AtomicBool>,
    /// Whether this process may commit: not while another node is the
    /// store's writer ([`Database::set_writable`]).
    writable: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

struct Writer {
    conn: Box<dyn StoreConnection>,
    schema: Arc<Schema>,
    last_ts: Timestamp,
    /// Told of each commit by the writer itself, as soon as it is durable
    /// (with a commit log, its reader tells them of the other nodes'
    /// commits, and of this one's if it gets there first).
    listeners: Arc<Mutex<Listeners>>,
    /// Whether the group being staged has more than one mutation, so each
    /// runs in a savepoint of its own.
    isolate: bool,
    /// Where commit timestamps come from.
    clock: Clock,
}

/// What a committed mutation produced.
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    /// The commit timestamp; for a mutation that wrote nothing, the timestamp of
    /// the snapshot it read.
    pub ts: Timestamp,
    pub writes: Arc<WriteSet>,
}

/// What a query produced, with the snapshot it ran at and what it read.
#[derive(Debug)]
pub struct QueryOutcome<T> {
    pub value: T,
    pub ts: Timestamp,
    pub reads: ReadSet,
}

/// Runs `f`, turning a panic into an internal error so that one bad handler
/// fails only its own call.
pub fn catch_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::internal(format!("handler panicked: {msg}")))
    })
}

impl Database {
    /// Starts the writer and reader threads over `persistence`.
    pub fn open(persistence: Arc<dyn Persistence>, schema: Schema) -> Result<Database> {
        Database::open_with_clock(persistence, schema, Clock::real())
    }

    /// As [`Database::open`], with commit timestamps read from `clock`.
    pub fn open_with_clock(
        persistence: Arc<dyn Persistence>,
        schema: Schema,
        clock: Clock,
    ) -> Result<Database> {
        schema
            .check()
            .map_err(|e| Error::internal(format!("invalid schema: {e}")))?;
        let schema = Arc::new(schema);
        let mut conn = persistence.connect()?;
        let last_ts = conn.begin_read()?;
        conn.end_read()?;
        let listeners = Arc::new(Mutex::new(Listeners {
            list: Vec::new(),
            told: last_ts,
        }));
        let stopped = Arc::new(AtomicBool::new(false));
        let log = persistence.commit_log()?;
        let (writer_tx, writer_rx) = std_mpsc::channel::<WriteJob>();
        let mut writer = Writer {
            conn,
            schema: schema.clone(),
            last_ts,
            listeners: listeners.clone(),
            isolate: false,
            clock: clock.clone(),
        };
        if let Some(log) = log {
            let (listeners, stopped) = (listeners.clone(), stopped.clone());
            thread::Builder::new()
                .name("livebase-log-reader".into())
                .spawn(move || read_log(log, &listeners, &stopped))
                .map_err(|e| Error::internal(format!("spawning the commit log's reader: {e}")))?;
        }
        thread::Builder::new()
            .name("livebase-writer".into())
            .spawn(move || {
                // Ends when every Database handle (and so the sender) is gone.
                while let Ok(first) = writer_rx.recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match writer_rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    writer.run_group(group);
                }
            })
            .map_err(|e| Error::internal(format!("spawning the writer: {e}")))?;

        let (reader_tx, reader_rx) = std_mpsc::sync_channel::<ReadJob>(READER_QUEUE);
        let reader_rx = Arc::new(Mutex::new(reader_rx));
        for i in 0..READER_THREADS {
            let mut conn = persistence.connect()?;
            let rx = reader_rx.clone();
            let schema = schema.clone();
            thread::Builder::new()
                .name(format!("livebase-reader-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(conn.as_mut(), &schema),
                        Err(_) => return,
                    }
                })
                .map_err(|e| Error::internal(format!("spawning a reader: {e}")))?;
        }
        let db = Database {
            inner: Arc::new(Inner {
                schema,
                persistence,
                writer: writer_tx,
                readers: reader_tx,
                clock,
                listeners,
                stopped,
                writable: AtomicBool::new(true),
            }),
        };
        Ok(db)
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.inner.schema
    }

    /// The clock commit timestamps are read from; what runs on this
    /// database (the scheduler) reads the same one.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    pub fn persistence(&self) -> &Arc<dyn Persistence> {
        &self.inner.persistence
    }

    /// Registers a listener called after every later commit, in commit
    /// order (on the writer thread, or the commit log's reader), and returns
    /// the timestamp of the last commit before it. It must not block for
    /// long: the next commit waits for it.
    pub async fn on_commit(&self, listener: CommitListener) -> Result<Timestamp> {
        let mut listeners = self
            .inner
            .listeners
            .lock()
            .map_err(|_| Error::internal("a commit listener panicked"))?;
        listeners.list.push(listener);
        Ok(listeners.told)
    }

    /// Allows or refuses commits from this process: a node that is not the
    /// store's writer sets it off, and every mutation then fails at once
    /// (without reaching the store) until it is set on again.
    pub fn set_writable(&self, writable: bool) {
        self.inner.writable.store(writable, Ordering::SeqCst);
    }

    /// Whether this process may commit ([`Database::set_writable`]).
    pub fn is_writable(&self) -> bool {
        self.inner.writable.load(Ordering::SeqCst)
    }

    /// The timestamp of the last commit.
    pub async fn last_ts(&self) -> Result<Timestamp> {
        self.on_writer(|w| w.last_ts).await
    }

    async fn on_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writer
            .send(WriteJob::Plain(Box::new(move |w| {
                let _ = tx.send(f(w));
            })))
            .map_err(|_| Error::internal("the writer thread has stopped"))?;
        rx.await
            .map_err(|_| Error::internal("the writer thread dropped a job"))
    }

    /// Runs `f` as a mutation: in the single write transaction, committed (and
    /// durable) if it returns Ok, rolled back if it returns Err or panics.
    pub async fn mutate<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Transaction) -> Result<T> + Send + 'static,
    ) -> Result<Committed<T>> {
        self.submit(f).await
    }

    /// Queues `f` as a mutation on the writer before it returns, and gives
    /// the future of its outcome ([`Database::mutate`] awaits it at once):
    /// mutations submitted one after another run, and commit, in that
    /// order, whether or not the first has been answered yet — so a caller
    /// with several in flight has them committed together.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Transaction) -> Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<Committed<T>>> + Send + 'static {
        let queued = self.queue_mutation(f);
        async move {
            queued?
                .await
                .map_err(|_| Error::internal("the writer thread dropped a job"))?
        }
    }

    fn queue_mutation<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Transaction) -> Result<T> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<Committed<T>>>> {
        if !self.is_writable() {
            return Err(Error::internal(
                "this node is not the store's writer: it cannot commit",
            ));
        }
        let (tx, rx) = oneshot::channel();
        let job = WriteJob::Mutation(Box::new(move |w: Result<&mut Writer>| {
            let (outcome, durable) = match w.and_then(|w| w.stage(f)) {
                Ok((c, durable)) => (Ok(c), durable),
                Err(e) => (Err(e), false),
            };
            let commit = match &outcome {
                Ok(c) if !c.writes.is_empty() => Some((c.ts, c.writes.clone())),
                _ => None,
            };
            Staged {
                commit,
                durable,
                reply: Box::new(move |group: Result<()>| {
                    let _ = tx.send(group.and(outcome));
                }),
            }
        }));
        self.inner
            .writer
            .send(job)
            .map_err(|_| Error::internal("the writer thread has stopped"))?;
        Ok(rx)
    }

    /// Runs `f` as a query on a fresh snapshot, on a reader thread; fails
    /// with `LIMIT_EXCEEDED` at once when [`READER_QUEUE`] queries wait already.
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Transaction) -> Result<T> + Send + 'static,
    ) -> Result<QueryOutcome<T>> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .readers
            .try_send(Box::new(move |conn, schema| {
                let _ = tx.send(run_query(conn, schema, f));
            }))
            .map_err(|e| match e {
                std_mpsc::TrySendError::Full(_) => Error::limit(format!(
                    "the server is busy: {READER_QUEUE} reads are waiting already; try again"
                )),
                std_mpsc::TrySendError::Disconnected(_) => {
                    Error::internal("the reader threads have stopped")
                }
            })?;
        rx.await
            .map_err(|_| Error::internal("a reader thread dropped a job"))?
    }
}

/// Runs `f` on a new read snapshot of `conn`.
pub fn run_query<T>(
    conn: &mut dyn StoreConnection,
    schema: &Schema,
    f: impl FnOnce(&mut Transaction) -> Result<T>,
) -> Result<QueryOutcome<T>> {
    let ts = conn.begin_read()?;
    let result = {
        let mut tx = Transaction::read_only(conn, schema, ts);
        catch_panic(|| f(&mut tx)).map(|value| (value, tx.into_sets().0))
    };
    conn.end_read()?;
    let (value, reads) = result?;
    Ok(QueryOutcome { value, ts, reads })
}

/// The commit log's reader: tells the listeners of each commit in the log
/// after the last they were told of, in order, until the database is gone.
/// A gap (commits trimmed before they were read) is told as one commit that
/// may have written anything.
fn read_log(mut log: Box<dyn CommitLog>, listeners: &Mutex<Listeners>, stopped: &AtomicBool) {
    let mut failures = 0u32;
    while !stopped.load(Ordering::SeqCst) {
        let after = match listeners.lock() {
            Ok(l) => l.told,
            Err(_) => return,
        };
        match log.read_after(after, LOG_BATCH, LOG_POLL) {
            Ok(LogRead::Commits(commits)) => {
                failures = 0;
                let Ok(mut listeners) = listeners.lock() else {
                    return;
                };
                for commit in commits {
                    listeners.tell(commit);
                }
            }
            Ok(LogRead::Gap { through }) => {
                failures = 0;
                tracing::warn!(
                    "the commit log was trimmed past this node's position ({after}); \
                     every live query runs again"
                );
                let Ok(mut listeners) = listeners.lock() else {
                    return;
                };
                listeners.tell(Commit {
                    ts: through,
                    writes: Arc::new(WriteSet::everything()),
                });
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(100) {
                    tracing::error!("reading the commit log failed ({failures} times): {e}");
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Writer {
    /// Runs a batch of jobs: the mutations in one transaction committed once,
    /// then the plain jobs.
    fn run_group(&mut self, jobs: Vec<WriteJob>) {
        let mut plain = Vec::new();
        let mut mutations = Vec::new();
        for job in jobs {
            match job {
                WriteJob::Plain(f) => plain.push(f),
                WriteJob::Mutation(f) => mutations.push(f),
            }
        }
        if !mutations.is_empty() {
            self.run_mutations(mutations);
        }
        for f in plain {
            f(self);
        }
    }

    fn run_mutations(&mut self, mutations: Vec<MutationJob>) {
        let committed_ts = self.last_ts;
        match self.conn.begin_write() {
            Ok(snapshot) => self.last_ts = self.last_ts.max(snapshot),
            Err(e) => {
                tracing::error!("starting a write transaction failed: {e}");
                let e = Error::from(e);
                // Each caller hears the failure; nothing ran.
                for m in mutations {
                    (m(Err(e.clone())).reply)(Ok(()));
                }
                return;
            }
        }
        // Alone in its group, a mutation needs no savepoint: if it fails, the
        // whole transaction is rolled back (SQLite copies every page a
        // savepoint first touches, which a lone mutation would pay for nothing).
        self.isolate = mutations.len() > 1;
        let staged: Vec<Staged> = mutations.into_iter().map(|m| m(Ok(self))).collect();
        let wrote = staged.iter().any(|s| s.durable);
        let outcome = if wrote {
            staged
                .iter()
                .filter_map(|s| s.commit.as_ref())
                .try_for_each(|(ts, writes)| {
                    self.conn.will_commit(*ts, writes);
                    self.conn.log_commit(*ts, writes)
                })
                .and_then(|()| self.conn.commit(self.last_ts))
        } else {
            self.conn.rollback()
        };
        match outcome {
            Ok(()) => {
                if let Ok(mut listeners) = self.listeners.lock() {
                    for (ts, writes) in staged.iter().filter_map(|s| s.commit.clone()) {
                        listeners.tell(Commit { ts, writes });
                    }
                }
                for s in staged {
                    (s.reply)(Ok(()));
                }
            }
            Err(e) => {
                let _ = self.conn.rollback();
                self.last_ts = committed_ts;
                tracing::error!("committing a group of mutations failed: {e}");
                let e = Error::from(e);
                for s in staged {
                    (s.reply)(Err(e.clone()));
                }
            }
        }
    }

    /// Runs one mutation inside the open group transaction, in a savepoint of
    /// its own: on error or panic only its writes are undone. Also says
    /// whether it wrote anything that needs committing.
    fn stage<T>(
        &mut self,
        f: impl FnOnce(&mut Transaction) -> Result<T>,
    ) -> Result<(Committed<T>, bool)> {
        let snapshot = self.last_ts;
        let ts = snapshot.next_after(self.clock.now_nanos());
        if self.isolate {
            self.conn.savepoint()?;
        }
        let outcome = {
            let mut tx = Transaction::writable(self.conn.as_mut(), &self.schema, snapshot, ts);
            catch_panic(|| f(&mut tx)).map(|value| {
                let durable = tx.has_writes();
                (value, tx.into_sets().1, durable)
            })
        };
        match outcome {
            Ok((value, writes, durable)) => {
                if self.isolate {
                    self.conn.release_savepoint()?;
                }
                let ts = if writes.is_empty() {
                    snapshot
                } else {
                    self.last_ts = ts;
                    ts
                };
                let committed = Committed {
                    value,
                    ts,
                    writes: Arc::new(writes),
                };
                Ok((committed, durable))
            }
            Err(e) => {
                if self.isolate {
                    self.conn.rollback_to_savepoint()?;
                } else {
                    self.conn.rollback()?;
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Condvar;

    use livebase_schema::table::define_table;
    use livebase_schema::{v, DocumentId, Object, Value};

    use super::*;
    use crate::persistence::{Document, MutationOutcome, Order};
    use crate::SqlitePersistence;

    /// The log a shared engine keeps, in memory: commits by timestamp, and
    /// the last one trimmed.
    #[derive(Default)]
    struct Log {
        commits: Mutex<(BTreeMap<Timestamp, Arc<WriteSet>>, Timestamp)>,
        appended: Condvar,
    }

    /// SQLite with a commit log beside it, as PostgreSQL keeps one.
    struct Logged {
        sqlite: SqlitePersistence,
        log: Arc<Log>,
    }

    impl Persistence for Logged {
        fn connect(&self) -> crate::error::StoreResult<Box<dyn StoreConnection>> {
            Ok(Box::new(LoggedConnection {
                inner: self.sqlite.connect()?,
                log: self.log.clone(),
                pending: Vec::new(),
            }))
        }

        fn commit_log(&self) -> crate::error::StoreResult<Option<Box<dyn CommitLog>>> {
            Ok(Some(Box::new(LogReader(self.log.clone()))))
        }
    }

    struct LogReader(Arc<Log>);

    impl CommitLog for LogReader {
        fn read_after(
            &mut self,
            after: Timestamp,
            limit: usize,
            wait: Duration,
        ) -> crate::error::StoreResult<LogRead> {
            let mut log = self.0.commits.lock().unwrap();
            if log.0.range(after.next_after(0)..).next().is_none() {
                log = self.0.appended.wait_timeout(log, wait).unwrap().0;
            }
            if after < log.1 {
                return Ok(LogRead::Gap { through: log.1 });
            }
            Ok(LogRead::Commits(
                log.0
                    .range(after.next_after(0)..)
                    .take(limit)
                    .map(|(&ts, writes)| Commit {
                        ts,
                        writes: writes.clone(),
                    })
                    .collect(),
            ))
        }
    }

    struct LoggedConnection {
        inner: Box<dyn StoreConnection>,
        log: Arc<Log>,
        pending: Vec<(Timestamp, WriteSet)>,
    }

    impl StoreConnection for LoggedConnection {
        fn begin_read(&mut self) -> crate::error::StoreResult<Timestamp> {
            self.inner.begin_read()
        }
        fn end_read(&mut self) -> crate::error::StoreResult<()> {
            self.inner.end_read()
        }
        fn begin_write(&mut self) -> crate::error::StoreResult<Timestamp> {
            self.pending.clear();
            self.inner.begin_write()
        }
        fn commit(&mut self, ts: Timestamp) -> crate::error::StoreResult<()> {
            self.inner.commit(ts)?;
            let mut log = self.log.commits.lock().unwrap();
            for (ts, writes) in self.pending.drain(..) {
                log.0.insert(ts, Arc::new(writes));
            }
            self.log.appended.notify_all();
            Ok(())
        }
        fn rollback(&mut self) -> crate::error::StoreResult<()> {
            self.pending.clear();
            self.inner.rollback()
        }
        fn savepoint(&mut self) -> crate::error::StoreResult<()> {
            self.inner.savepoint()
        }
        fn release_savepoint(&mut self) -> crate::error::StoreResult<()> {
            self.inner.release_savepoint()
        }
        fn rollback_to_savepoint(&mut self) -> crate::error::StoreResult<()> {
            self.inner.rollback_to_savepoint()
        }
        fn get(&mut self, id: &DocumentId) -> crate::error::StoreResult<Option<Document>> {
            self.inner.get(id)
        }
        fn get_value(&mut self, id: &DocumentId) -> crate::error::StoreResult<Option<Value>> {
            self.inner.get_value(id)
        }
        fn scan(
            &mut self,
            start: &[u8],
            end: &[u8],
            order: Order,
            limit: usize,
        ) -> crate::error::StoreResult<Vec<(Vec<u8>, Document)>> {
            self.inner.scan(start, end, order, limit)
        }
        fn scan_values(
            &mut self,
            start: &[u8],
            end: &[u8],
            order: Order,
            limit: usize,
        ) -> crate::error::StoreResult<Vec<(Vec<u8>, Value)>> {
            self.inner.scan_values(start, end, order, limit)
        }
        fn scan_documents(
            &mut self,
            after: Option<&DocumentId>,
            limit: usize,
        ) -> crate::error::StoreResult<Vec<Document>> {
            self.inner.scan_documents(after, limit)
        }
        fn put_document(&mut self, doc: &Document) -> crate::error::StoreResult<()> {
            self.inner.put_document(doc)
        }
        fn insert_document(&mut self, doc: &Document) -> crate::error::StoreResult<()> {
            self.inner.insert_document(doc)
        }
        fn delete_document(&mut self, id: &DocumentId) -> crate::error::StoreResult<()> {
            self.inner.delete_document(id)
        }
        fn put_index_entry(
            &mut self,
            key: &[u8],
            id: &DocumentId,
        ) -> crate::error::StoreResult<()> {
            self.inner.put_index_entry(key, id)
        }
        fn delete_index_entry(&mut self, key: &[u8]) -> crate::error::StoreResult<()> {
            self.inner.delete_index_entry(key)
        }
        fn get_outcome(
            &mut self,
            session_id: &str,
            request_id: u32,
            fingerprint: &[u8],
        ) -> crate::error::StoreResult<Option<MutationOutcome>> {
            self.inner.get_outcome(session_id, request_id, fingerprint)
        }
        fn put_outcome(&mut self, outcome: &MutationOutcome) -> crate::error::StoreResult<()> {
            self.inner.put_outcome(outcome)
        }
        fn purge_outcomes(
            &mut self,
            before: Timestamp,
            limit: usize,
        ) -> crate::error::StoreResult<usize> {
            self.inner.purge_outcomes(before, limit)
        }
        fn count_outcomes(&mut self) -> crate::error::StoreResult<usize> {
            self.inner.count_outcomes()
        }
        fn log_commit(
            &mut self,
            ts: Timestamp,
            writes: &WriteSet,
        ) -> crate::error::StoreResult<()> {
            self.pending.push((ts, writes.clone()));
            Ok(())
        }
        fn will_commit(&mut self, ts: Timestamp, writes: &Arc<WriteSet>) {
            self.inner.will_commit(ts, writes)
        }
    }

    fn schema() -> Schema {
        Schema::new().table("notes", define_table([("n", v::float64())]))
    }

    fn told(rx: &std_mpsc::Receiver<Commit>) -> Commit {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a listener is told")
    }

    async fn insert(db: &Database, n: f64) -> Timestamp {
        db.mutate(move |tx| {
            let mut o = Object::new();
            o.insert("n".into(), Value::Float64(n));
            tx.insert("notes", o)
        })
        .await
        .unwrap()
        .ts
    }

    #[tokio::test]
    async fn with_a_commit_log_each_commit_is_told_once_in_order_and_a_gap_as_everything() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::default());
        let persistence = Arc::new(Logged {
            sqlite: SqlitePersistence::open(dir.path().join("db.sqlite3")).unwrap(),
            log: log.clone(),
        });
        let db = Database::open(persistence, schema()).unwrap();
        let (tx, rx) = std_mpsc::channel();
        let tx = Mutex::new(tx);
        let start = db
            .on_commit(Box::new(move |c| {
                let _ = tx.lock().unwrap().send(c);
            }))
            .await
            .unwrap();
        let first = insert(&db, 1.0).await;
        let second = insert(&db, 2.0).await;
        assert!(start < first && first < second);
        // Each commit went through the log, with its writes.
        let (a, b) = (told(&rx), told(&rx));
        assert_eq!((a.ts, b.ts), (first, second));
        assert_eq!(a.writes.documents().len(), 1);
        assert_eq!(log.commits.lock().unwrap().0.len(), 2);

        // Commits trimmed before this node read them: a gap, told as one
        // commit that may have written anything.
        let third = {
            let mut l = log.commits.lock().unwrap();
            let third = second.next_after(0);
            let fourth = third.next_after(0);
            l.0.insert(third, Arc::new(WriteSet::new()));
            l.0.insert(fourth, Arc::new(WriteSet::new()));
            l.0.remove(&third);
            l.1 = third;
            log.appended.notify_all();
            fourth
        };
        let gap = told(&rx);
        assert_eq!(gap.ts, second.next_after(0));
        assert!(gap.writes.is_everything());
        assert_eq!(told(&rx).ts, third, "and it reads on after the gap");
    }
}

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

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use livebase_schema::{Schema, Timestamp};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::persistence::{Persistence, StoreConnection};
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
/// Called on the writer thread after every commit, in commit order.
pub type CommitListener = Box<dyn Fn(Commit) + Send>;

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
}

struct Writer {
    conn: Box<dyn StoreConnection>,
    schema: Arc<Schema>,
    last_ts: Timestamp,
    listeners: Arc<Mutex<Vec<CommitListener>>>,
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
        let listeners: Arc<Mutex<Vec<CommitListener>>> = Arc::default();
        let (writer_tx, writer_rx) = std_mpsc::channel::<WriteJob>();
        let mut writer = Writer {
            conn,
            schema: schema.clone(),
            last_ts,
            listeners: listeners.clone(),
            isolate: false,
            clock: clock.clone(),
        };
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

    /// Registers a listener called after every later commit, on the writer
    /// thread, in commit order, and returns the timestamp of the last commit
    /// before it. It must not block for long: the next commit waits for it.
    pub async fn on_commit(&self, listener: CommitListener) -> Result<Timestamp> {
        self.on_writer(move |w| {
            if let Ok(mut l) = w.listeners.lock() {
                l.push(listener);
            }
            w.last_ts
        })
        .await
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
        rx.await
            .map_err(|_| Error::internal("the writer thread dropped a job"))?
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
            self.conn.commit(self.last_ts)
        } else {
            self.conn.rollback()
        };
        match outcome {
            Ok(()) => {
                if let Ok(listeners) = self.listeners.lock() {
                    for (ts, writes) in staged.iter().filter_map(|s| s.commit.clone()) {
                        for l in listeners.iter() {
                            l(Commit {
                                ts,
                                writes: writes.clone(),
                            });
                        }
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

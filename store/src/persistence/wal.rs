//! The upkeep of a SQLite file's write-ahead log: a checkpointer thread that
//! copies committed pages into the database file, and the writer starting
//! the WAL over once it has grown to [`WAL_CYCLE_PAGES`].
//!
//! SQLite starts the WAL over (writes from its beginning again) only at a
//! write that finds every frame copied into the database file and no reader
//! still reading a snapshot from the WAL. A checkpoint that never waits
//! (`PASSIVE`) can copy frames only up to the oldest snapshot a reader holds,
//! and commits go on while it copies; with readers that always hold one —
//! live queries re-run after every commit of a busy tenant — the WAL never
//! started over and grew by every commit, filling the disk, every sync also
//! recording a new file size.
//!
//! So it is done in two steps. When a commit finds the WAL past its cycle,
//! the writer wakes the checkpointer, which copies what it can without
//! holding anyone up. Then, between two transactions, the writer runs a
//! `RESTART` checkpoint: it copies the little committed since, waits up to
//! [`RESTART_WAIT`] for the readers of older snapshots to finish (a reader
//! that begins meanwhile reads the database file, not the WAL), and the next
//! write starts the WAL over. Writes wait only for that last step, once a
//! cycle (1–4 ms on the machine of BENCHMARKS.md under a tenant writing
//! 1,500 times a second; on a quiet server the copy is all there is).
//!
//! The wait is for the snapshots open when the restart begins, so the writer
//! picks its moment: while a connection of this process holds a snapshot it
//! began more than [`YOUNG_SNAPSHOT`] ago — a starving tenant's job that runs
//! all its queries on one snapshot, an export — a restart would wait for it
//! (up to [`RESTART_WAIT`], then fail), holding every write up meanwhile.
//! The writer puts the restart off to a later transaction instead, for at
//! most [`RESTART_PATIENCE`]; then it tries whatever the snapshots. A reader
//! that holds its snapshot longer still (an export) only delays the
//! restart: the checkpointer copies again, and the writer tries again.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::{StoreError, StoreResult as Result};

/// How often the checkpointer copies the WAL's committed pages into the
/// database file, besides when the writer wakes it.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// WAL pages (of 4 KiB) after which the writer starts the WAL over: the size
/// of one cycle of the file, whose frames are then overwritten (about 39 MiB).
pub const WAL_CYCLE_PAGES: u32 = 10_000;

/// The size the WAL file is cut back to when it starts over, if it grew
/// past it while it could not (a reader held an old snapshot for long).
pub const WAL_SIZE_LIMIT: i64 = 2 * WAL_CYCLE_PAGES as i64 * 4096;

/// Longest the writer waits, before a transaction, for readers of snapshots
/// older than its last commit to finish, so that the WAL can start over.
pub const RESTART_WAIT: Duration = Duration::from_millis(10);

/// After a restart that could not finish (a reader held its snapshot past
/// [`RESTART_WAIT`]), the writer tries again no sooner than this, doubled
/// at each failure in a row up to [`RESTART_BACKOFF_MAX`]: a reader that
/// holds one snapshot for minutes costs writes a wait now and then, not at
/// every transaction.
pub const RESTART_BACKOFF: Duration = Duration::from_millis(100);
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A snapshot held for longer than this is taken to be a long one (a job
/// not cut short, an export): while one is, the writer puts a restart off
/// (see the module's comment). The jobs that re-run live queries end after
/// about 2 ms (`ROUND_BUDGET` of the runtime's evaluators), so a restart
/// begun when every snapshot is younger waits about that long at most.
pub const YOUNG_SNAPSHOT: Duration = Duration::from_millis(1);

/// Longest the writer puts a wanted restart off for a long snapshot; then
/// it tries, waiting up to [`RESTART_WAIT`] as before. The WAL grows past
/// its cycle meanwhile, by at most this long's commits.
pub const RESTART_PATIENCE: Duration = Duration::from_secs(1);

/// How long the WAL may stay past its cycle before each warning that a
/// reader keeps it from starting over.
const STUCK_WARNING: Duration = Duration::from_secs(30);

thread_local! {
    /// Pages in the WAL after the last commit on this thread, as SQLite's WAL
    /// hook told it.
    static WAL_PAGES: Cell<u32> = const { Cell::new(0) };
    /// When the busy handler of a restart on this thread began its current
    /// wait, and when it was last called.
    static RESTART_WAITING: Cell<Option<(Instant, Instant)>> = const { Cell::new(None) };
}

/// Sets up a connection's share of the upkeep: SQLite's WAL hook (which
/// replaces its automatic checkpoints: they are the checkpointer's) records
/// the WAL's size after each commit, and a WAL that grew past
/// [`WAL_SIZE_LIMIT`] while it could not start over is cut back to it when
/// it does.
pub(crate) fn set_up(conn: &Connection) -> rusqlite::Result<()> {
    conn.wal_hook(Some(on_commit));
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
}

fn on_commit(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(u32::try_from(pages).unwrap_or(0));
    Ok(())
}

/// The busy handler during a restart: waits by yielding the core (SQLite's
/// own sleeps a whole millisecond first), [`RESTART_WAIT`] at most for each
/// lock: a call more than a millisecond after the last starts a new wait
/// (the restart did work in between — copying pages, which is not waiting).
fn restart_busy(_attempt: i32) -> bool {
    let now = Instant::now();
    let started = match RESTART_WAITING.get() {
        Some((started, last)) if now.duration_since(last) < Duration::from_millis(1) => started,
        _ => now,
    };
    RESTART_WAITING.set(Some((started, now)));
    if now.duration_since(started) < RESTART_WAIT {
        // The readers waited for are this process's threads, mid-job: give
        // them the core. A sleep, even of 50 µs, took about 300 µs on the
        // virtual machine of BENCHMARKS.md, and every write waits with the
        // writer.
        thread::yield_now();
        true
    } else {
        false
    }
}

/// What the checkpointer and a file's connections share.
#[derive(Debug, Default)]
pub(crate) struct WalState {
    /// The WAL has grown past its cycle: start it over.
    wanted: AtomicBool,
    /// The checkpointer has copied what it could since `wanted` was set:
    /// the writer's restart has little left to copy.
    ready: AtomicBool,
    /// Wakes the checkpointer before its interval is up.
    woken: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
    /// Since when each connection of the file in this process holds its
    /// read snapshot, if it does.
    snapshots: Mutex<Vec<Weak<AtomicU64>>>,
}

/// Where a connection says since when it holds a read snapshot: 0 for none,
/// else nanoseconds since [`epoch`] plus one.
#[derive(Debug)]
pub(crate) struct HeldSnapshot(Arc<AtomicU64>);

impl HeldSnapshot {
    pub(crate) fn began(&self) {
        let since = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.0.store(since + 1, Ordering::Relaxed);
    }

    pub(crate) fn ended(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// The instant snapshot times count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl WalState {
    /// A new connection's [`HeldSnapshot`].
    pub(crate) fn held_snapshot(&self) -> HeldSnapshot {
        let held = Arc::new(AtomicU64::new(0));
        let mut all = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|h| h.strong_count() > 0);
        all.push(Arc::downgrade(&held));
        HeldSnapshot(held)
    }

    /// How long the oldest snapshot held on a connection of this process
    /// has been, if one is.
    fn oldest_snapshot(&self) -> Option<Duration> {
        let all = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        let since = all
            .iter()
            .filter_map(Weak::upgrade)
            .map(|h| h.load(Ordering::Relaxed))
            .filter(|&since| since != 0)
            .min()?;
        let now = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(now.saturating_sub(since - 1)))
    }

    fn wake_checkpointer(&self) {
        *self.woken.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_one();
    }

    /// Waits for the next checkpoint: the interval, or a wake-up. Returns
    /// false once the checkpointer should stop.
    fn wait_for_checkpoint(&self) -> bool {
        let woken = self.woken.lock().unwrap_or_else(|e| e.into_inner());
        let (mut woken, _) = self
            .wake
            .wait_timeout_while(woken, CHECKPOINT_INTERVAL, |woken| !*woken)
            .unwrap_or_else(|e| e.into_inner());
        *woken = false;
        !self.stop.load(Ordering::Relaxed)
    }
}

/// A writing connection's restarts of the WAL.
#[derive(Debug)]
pub(crate) struct Restarts {
    state: Arc<WalState>,
    /// Restarts that could not finish, in a row ...
    failures: u32,
    /// ... the earliest the next may be tried ...
    retry_at: Option<Instant>,
    /// ... since when, and when that was last logged.
    stuck: Option<(Instant, Instant)>,
    /// Since when a wanted restart has been put off for a long snapshot.
    put_off: Option<Instant>,
    /// Restarts tried by this connection, finished or not.
    #[cfg(test)]
    tried: u64,
}

impl Restarts {
    pub(crate) fn new(state: Arc<WalState>) -> Restarts {
        Restarts {
            state,
            failures: 0,
            retry_at: None,
            stuck: None,
            put_off: None,
            #[cfg(test)]
            tried: 0,
        }
    }

    /// Restarts this connection has tried, finished or not.
    #[cfg(test)]
    pub(crate) fn tried(&self) -> u64 {
        self.tried
    }

    /// After a commit on this connection: if the WAL has grown past its
    /// cycle, the checkpointer copies what it can, now.
    pub(crate) fn committed(&mut self) {
        if WAL_PAGES.replace(0) >= WAL_CYCLE_PAGES
            && !self.state.wanted.swap(true, Ordering::Relaxed)
        {
            self.state.wake_checkpointer();
        }
    }

    /// Before a write transaction begins on `conn`: starts the WAL over if
    /// that is wanted and the checkpointer has copied what it could, unless
    /// a long snapshot is held (then later, within [`RESTART_PATIENCE`]).
    /// `busy_timeout` is the connection's usual wait for locks, put back
    /// after.
    pub(crate) fn before_write(&mut self, conn: &Connection, busy_timeout: Duration) {
        // The common write, with no restart wanted, reads one flag.
        if !self.state.ready.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        if self
            .state
            .oldest_snapshot()
            .is_some_and(|held| held > YOUNG_SNAPSHOT)
        {
            let since = *self.put_off.get_or_insert(now);
            if now.duration_since(since) < RESTART_PATIENCE {
                return;
            }
        }
        if !self.state.ready.swap(false, Ordering::Relaxed) {
            return;
        }
        self.put_off = None;
        #[cfg(test)]
        {
            self.tried += 1;
        }
        match restart(conn, busy_timeout) {
            Ok(true) => {
                self.state.wanted.store(false, Ordering::Relaxed);
                self.failures = 0;
                self.retry_at = None;
                self.stuck = None;
            }
            Ok(false) => {
                // A reader held an old snapshot: the checkpointer copies
                // again (`wanted` is still set), and the writer tries again
                // after the backoff.
                let now = Instant::now();
                let backoff = RESTART_BACKOFF.saturating_mul(1 << self.failures.min(16));
                self.retry_at = Some(now + backoff.min(RESTART_BACKOFF_MAX));
                self.failures += 1;
                let (since, warned) = self.stuck.get_or_insert((now, now));
                if now.duration_since(*warned) >= STUCK_WARNING {
                    *warned = now;
                    tracing::warn!(
                        "the WAL has not been able to start over for {:.0} s: a reader holds an old snapshot; the file grows until it can",
                        now.duration_since(*since).as_secs_f64()
                    );
                }
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + RESTART_BACKOFF_MAX);
                tracing::warn!("starting the WAL over failed: {e}");
            }
        }
    }
}

/// Runs a `RESTART` checkpoint on `conn`, outside any transaction, waiting
/// at most [`RESTART_WAIT`] for locks (readers of older snapshots, the
/// checkpointer's copy). Returns whether it finished (the
/// next write starts the WAL over).
fn restart(conn: &Connection, busy_timeout: Duration) -> Result<bool> {
    conn.busy_handler(Some(restart_busy))?;
    RESTART_WAITING.set(None);
    // Columns: busy, pages in the WAL, pages copied.
    let busy = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
        row.get::<_, i64>(0)
    });
    conn.busy_timeout(busy_timeout)?;
    Ok(busy? == 0)
}

/// A thread of its own that checkpoints the WAL every
/// [`CHECKPOINT_INTERVAL`], and at once when the writer wants the WAL to
/// start over (`PASSIVE`: it never waits for, or holds up, the writer or a
/// reader), so that copying pages into the database file and syncing it is
/// no commit's work: left to SQLite, the commit that crosses 1,000 WAL pages
/// does it, and that mutation's round trip takes several milliseconds
/// longer than the others'. It stops when dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    state: Arc<WalState>,
}

impl Checkpointer {
    pub(crate) fn start(conn: Connection, state: Arc<WalState>) -> Result<Checkpointer> {
        let shared = state.clone();
        thread::Builder::new()
            .name("livebase-checkpointer".into())
            .spawn(move || {
                while shared.wait_for_checkpoint() {
                    let wanted = shared.wanted.load(Ordering::Relaxed);
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                        row.get::<_, i64>(0)
                    });
                    if let Err(e) = done {
                        tracing::warn!("checkpointing the WAL failed: {e}");
                    }
                    // Still wanted: the writer did not start the WAL over
                    // while this copy ran (then there is nothing to be
                    // ready for, and a second restart would only sync).
                    if wanted && shared.wanted.load(Ordering::Relaxed) {
                        shared.ready.store(true, Ordering::Relaxed);
                    }
                }
            })
            .map_err(|source| StoreError::Engine {
                engine: "sqlite checkpointer",
                source: Box::new(source),
            })?;
        Ok(Checkpointer { state })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.state.wake_checkpointer();
    }
}

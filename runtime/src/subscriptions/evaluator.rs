//! The evaluators: a pool of threads, each with its own read connection to
//! the store, that run the live queries the worker hands them.
//!
//! A [`Job`] is some of one tenant's due queries. Its evaluator opens one read
//! snapshot, runs them on it (in order, until [`ROUND_BUDGET`] of evaluation
//! is spent, unless the job is a starving tenant's turn that is not cut short)
//! and sends back a [`Done`]: the snapshot's timestamp, each result with its
//! read set, and the queries it did not get to. Evaluators share nothing but
//! the store; what a result means for each connection is the worker's to
//! decide.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use livebase_schema::Timestamp;

use super::cost::JobMeter;
use super::query::{to_wire, QueryKey, SharedResult};
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::identity::Identity;
use crate::pagination::CursorKey;
use crate::readset::ReadSet;
use crate::registry::Registry;
use crate::store::StoreConnection;
use crate::transaction::Transaction;

/// Evaluation time after which a job ends (after the query running at the
/// time) and its results go back to the worker: about what one identity's
/// backlog can delay another's push by when every evaluator is busy.
pub const ROUND_BUDGET: Duration = Duration::from_millis(2);

/// Evaluator threads: one per core, at least two. One tenant has jobs on at
/// most all but one of them at a time, so it can keep all but one core busy
/// while another tenant's query still finds a free evaluator, and a core is
/// left for the writer and the connections.
pub fn evaluator_count() -> usize {
    thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
}

/// One query to run.
pub struct JobQuery {
    pub handle: u64,
    pub key: Arc<QueryKey>,
    pub identity: Identity,
    pub journal: Option<String>,
    /// Its current result, to tell whether the new one differs (compared
    /// here, off the worker's thread).
    pub previous: Option<SharedResult>,
}

/// Queries of one tenant to run on one snapshot.
pub struct Job {
    pub tenant: Arc<str>,
    /// A starving tenant's turn: every query runs, whatever the time.
    pub uncut: bool,
    pub queries: Vec<JobQuery>,
}

/// One query's run.
pub struct Evaluated {
    pub handle: u64,
    pub result: SharedResult,
    /// The result equals the one the query had when the job was sent.
    pub unchanged: bool,
    /// What the run cost (see [`super::cost`]).
    pub spent: Duration,
    pub reads: ReadSet,
    pub journal: Option<String>,
}

/// A finished job, as the worker receives it.
pub struct Done {
    pub evaluator: usize,
    pub tenant: Arc<str>,
    pub uncut: bool,
    /// The snapshot every result was read at.
    pub ts: Timestamp,
    pub results: Vec<Evaluated>,
    /// Queries the job did not get to (its budget ran out, or the snapshot
    /// could not be opened), in their order.
    pub not_run: Vec<u64>,
    /// Evaluation time spent: what its runs cost together.
    pub spent: Duration,
}

/// What an evaluator needs besides its connection.
#[derive(Clone)]
pub struct Setup {
    pub registry: Arc<Registry>,
    /// What live queries sign their cursors and journals with.
    pub cursor_key: Arc<CursorKey>,
    /// What live queries build stored files' URLs on.
    pub public_url: Option<Arc<str>>,
}

/// Starts evaluator `index` on `conn`: it runs each job it is sent and hands
/// the [`Done`] to `done`, until its job channel closes.
pub fn spawn<F>(
    index: usize,
    mut conn: Box<dyn StoreConnection>,
    setup: Setup,
    done: F,
) -> Result<std_mpsc::Sender<Job>>
where
    F: Fn(Done) -> bool + Send + 'static,
{
    let (tx, rx) = std_mpsc::channel::<Job>();
    thread::Builder::new()
        .name(format!("livebase-evaluator-{index}"))
        .spawn(move || {
            lower_priority(index);
            while let Ok(job) = rx.recv() {
                if !done(run(index, conn.as_mut(), &setup, job)) {
                    return;
                }
            }
        })
        .map_err(|e| Error::internal(format!("spawning an evaluator: {e}")))?;
    Ok(tx)
}

/// The niceness evaluator threads run at (0 is the default, 19 the lowest
/// priority). The scheduler gives a thread of niceness 10 about a tenth of a
/// contended core beside one of niceness 0, and the whole core when no one
/// else wants it: the writer, the connections' threads and the worker (which
/// runs the small jobs of light tenants itself) go first, so a tenant whose
/// re-runs keep the pool busy slows other tenants' mutations and pushes as
/// little as the cores allow, and still has every idle cycle.
pub const EVALUATOR_NICENESS: i32 = 10;

#[cfg(target_os = "linux")]
fn lower_priority(index: usize) {
    // On Linux, setpriority on a thread id sets that thread's niceness only.
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), EVALUATOR_NICENESS) {
        tracing::warn!("evaluator {index}: lowering its priority failed: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_index: usize) {}

/// [`Done::evaluator`] of a job the worker ran itself.
pub const INLINE: usize = usize::MAX;

/// How long an evaluator thread runs queries before it offers its core to
/// any other thread waiting for one (`sched_yield`; at once back if none
/// is). Without it, a thread that wakes to answer a connection (the
/// writer's reply, a connection's frame) can wait for the end of the
/// evaluator's time slice — up to a few milliseconds under Linux's EEVDF,
/// which lets a running thread finish its slice before a woken one of
/// higher priority gets the core — so one tenant's long jobs showed up in
/// other tenants' push latency at p99.
pub const YIELD_EVERY: Duration = Duration::from_micros(100);

/// Runs `job` on `conn` (evaluator `index`'s, or the worker's own for a job
/// it runs inline: [`INLINE`]).
pub fn run(index: usize, conn: &mut dyn StoreConnection, setup: &Setup, job: Job) -> Done {
    let started = Instant::now();
    let mut done = Done {
        evaluator: index,
        tenant: job.tenant,
        uncut: job.uncut,
        ts: Timestamp::ZERO,
        results: Vec::with_capacity(job.queries.len()),
        not_run: Vec::new(),
        spent: Duration::ZERO,
    };
    let ts = match conn.begin_read() {
        Ok(ts) => ts,
        Err(e) => {
            tracing::error!("evaluator: opening a read snapshot failed: {e}");
            done.not_run = job.queries.iter().map(|q| q.handle).collect();
            // Not straight back into the same failure.
            thread::sleep(Duration::from_millis(10));
            return done;
        }
    };
    done.ts = ts;
    let mut meter = JobMeter::start();
    let mut queries = job.queries.into_iter();
    let mut yielded = started;
    for q in queries.by_ref() {
        if index != INLINE && yielded.elapsed() >= YIELD_EVERY {
            thread::yield_now();
            yielded = Instant::now();
        }
        let evaluated = evaluate(conn, setup, ts, q, &mut meter);
        done.spent += evaluated.spent;
        done.results.push(evaluated);
        if !job.uncut && started.elapsed() >= ROUND_BUDGET {
            break;
        }
    }
    done.not_run = queries.map(|q| q.handle).collect();
    if let Err(e) = conn.end_read() {
        tracing::error!("evaluator: ending a read snapshot failed: {e}");
    }
    done
}

fn evaluate(
    conn: &mut dyn StoreConnection,
    setup: &Setup,
    ts: Timestamp,
    q: JobQuery,
    meter: &mut JobMeter,
) -> Evaluated {
    let mark = meter.mark();
    let mut tx = Transaction::read_only(conn, setup.registry.schema(), ts);
    tx.set_cursor_key(setup.cursor_key.clone());
    tx.set_public_url(setup.public_url.clone());
    tx.set_journal(q.journal);
    let (result, reads, journal) =
        Executor::evaluate_in(&setup.registry, tx, &q.key.path, &q.key.args, &q.identity);
    let result = to_wire(result.map_err(|e| e.redact(&q.key.path)));
    Evaluated {
        handle: q.handle,
        unchanged: same(q.previous.as_ref(), &result),
        result,
        reads,
        journal,
        spent: meter.cost(mark),
    }
}

/// Whether a re-run's result equals the previous one. Values are compared by
/// their Convex JSON text — equal exactly when the values are (the encoding
/// is canonical: fields in order, each float by its bits) — which the
/// evaluator encodes here, off the connections' threads, and which every
/// Transition carrying the result then reuses; a memory comparison of the
/// two texts is much cheaper than walking both values.
fn same(previous: Option<&SharedResult>, result: &SharedResult) -> bool {
    match (previous, result) {
        (Some(Ok(old)), Ok(new)) => old.json_text() == new.json_text(),
        (Some(Err(old)), Err(new)) => old == new,
        _ => {
            if let Ok(new) = result {
                new.json_text();
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use livebase_schema::{obj, Value};

    use super::*;

    fn ok(v: Value) -> SharedResult {
        Ok(v.into())
    }

    #[test]
    fn results_are_the_same_exactly_when_their_values_are_equal() {
        let values = [
            Value::Float64(0.0),
            Value::Float64(-0.0),
            Value::Float64(1.0),
            Value::Int64(1),
            Value::Float64(f64::NAN),
            Value::Float64(f64::from_bits(f64::NAN.to_bits() ^ 1)),
            Value::Float64(f64::INFINITY),
            Value::String("1".into()),
            Value::Bytes(vec![1]),
            Value::Array(vec![Value::Int64(1)]),
            obj! { "a" => 1.0, "b" => "x" },
            obj! { "b" => "x", "a" => 1.0 },
            obj! { "a" => 1.0 },
            Value::Null,
        ];
        for a in &values {
            for b in &values {
                assert_eq!(
                    same(Some(&ok(a.clone())), &ok(b.clone())),
                    a == b,
                    "{a:?} and {b:?}"
                );
            }
        }
        assert!(!same(None, &ok(Value::Null)), "a first result is news");
    }
}

//! The scheduler's worker: one task shaped like mini-redis's expiry task. It
//! asks the store for the earliest pending jobs (the `by_state_time` index
//! keeps them ordered by time), starts those that are due, and sleeps until
//! the next one is — or until a commit that writes `_scheduled_functions`
//! pokes its [`Notify`], since that commit may have scheduled an earlier job.
//! An idle server costs nothing: the task waits in one `select!` over
//! `sleep_until`, `notified` and shutdown. Time is the database's
//! [`Clock`] — the one its commit timestamps, and so the jobs' scheduled
//! times, come from — so a test can advance it instead of sleeping.
//!
//! Jobs run in tasks of their own, at most
//! [`SchedulerOptions::max_concurrent_jobs`] at once (a [`Semaphore`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livebase_schema::{obj, DocumentId, Object, Value};
use tokio::sync::{broadcast, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::cron;
use super::retry::{self, JobContext, RetryPolicy};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::executor::{Caller, Executor};
use crate::registry::{run_sync, Function, FunctionKind, Identity, Registry};
use crate::system::{JobState, SCHEDULED_FUNCTIONS};
use crate::transaction::Transaction;

/// How the scheduler runs jobs.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Most jobs running at once; more due jobs wait for one to finish.
    pub max_concurrent_jobs: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            max_concurrent_jobs: DEFAULT_MAX_CONCURRENT_JOBS,
        }
    }
}

/// The default of [`SchedulerOptions::max_concurrent_jobs`].
pub const DEFAULT_MAX_CONCURRENT_JOBS: usize = 8;
/// The error of an action found `inProgress` at start-up.
pub const INTERRUPTED: &str = "interrupted by a restart";
/// The longest error text kept on an attempt record (longer ones are cut at
/// a character boundary).
pub const MAX_STORED_ERROR: usize = 4096;
/// The largest action result kept on an attempt record ([`Value::size`]);
/// a larger one is left out.
pub const MAX_STORED_RESULT: usize = 4096;
/// How long a stopping worker waits for running jobs before abandoning them
/// (an abandoned action is marked failed at the next start, or run again if
/// it is retryable).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The longest single sleep. Waking once a day for a job due next year keeps
/// `Instant` arithmetic far from overflow and costs nothing.
const MAX_SLEEP: Duration = Duration::from_secs(24 * 60 * 60);
/// When a job's outcome could not be written (the store failed), it is left
/// alone this long before the worker may pick it up again, so a failing store
/// is retried, not hammered.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// `inProgress` jobs marked failed per start-up transaction.
const RECOVERY_BATCH: usize = 1024;

/// The running worker; it stops when the server's shutdown signal fires.
pub struct Worker {
    task: JoinHandle<()>,
}

impl Worker {
    /// Waits until the worker has stopped: no job is started after the
    /// shutdown signal, and running ones get [`SHUTDOWN_GRACE`] to finish.
    pub async fn stopped(self) {
        if let Err(e) = self.task.await {
            tracing::error!(target: "livebase::scheduler", "the scheduler task failed: {e}");
        }
    }
}

/// What the worker and its job tasks share.
struct Shared {
    executor: Executor,
    /// Poked by every commit that writes `_scheduled_functions` and by every
    /// job that finishes. `Notify` keeps one permit, so a poke that lands while
    /// the worker is busy scanning is not lost: its next wait returns at once.
    wake: Arc<Notify>,
    permits: Arc<Semaphore>,
    max_concurrent_jobs: usize,
    /// Jobs handed to a task and not finished. A mutation's job stays
    /// `pending` in the store until the commit that runs it, so the scan must
    /// skip these. A `std` mutex: it is never held across an `.await`.
    running: Mutex<HashSet<String>>,
    /// The database's clock: when jobs are due, and the sleep until then.
    clock: Clock,
}

/// Starts the scheduler over `executor`'s database and application: marks
/// every action left `inProgress` by the last run failed, brings `_crons` in
/// line with the declared crons, and spawns the worker, which runs until
/// `shutdown` fires.
pub async fn start(
    executor: Executor,
    options: SchedulerOptions,
    mut shutdown: broadcast::Receiver<()>,
) -> Result<Worker> {
    let db = executor.database().clone();
    let wake = Arc::new(Notify::new());
    // Listen before the first scan, so no job committed after it goes unseen.
    let poke = wake.clone();
    db.on_commit(Box::new(move |commit| {
        let schedules = commit.writes.is_everything()
            || commit
                .writes
                .documents()
                .iter()
                .any(|w| w.table == SCHEDULED_FUNCTIONS);
        if schedules {
            poke.notify_one();
        }
    }))
    .await?;
    let (failed, retried) = recover_interrupted(&executor).await?;
    if failed > 0 {
        tracing::warn!(target: "livebase::scheduler", count = failed, "marked actions interrupted by a restart as failed");
    }
    if retried > 0 {
        tracing::warn!(target: "livebase::scheduler", count = retried, "retrying retryable actions interrupted by a restart");
    }
    let registry = executor.registry().clone();
    db.mutate(move |tx| cron::sync(tx, registry.crons()))
        .await?;

    let max = options.max_concurrent_jobs.max(1);
    let clock = db.clock().clone();
    let shared = Arc::new(Shared {
        executor,
        clock,
        wake,
        permits: Arc::new(Semaphore::new(max)),
        max_concurrent_jobs: max,
        running: Mutex::default(),
    });
    let task = tokio::spawn(async move {
        let mut jobs = JoinSet::new();
        loop {
            let wait = match shared.dispatch(&mut jobs).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::error!(target: "livebase::scheduler", "reading due jobs: {e}");
                    Wait::Until(shared.clock.now() + RETRY_AFTER)
                }
            };
            while jobs.try_join_next().is_some() {}
            let deadline = match wait {
                Wait::Until(at) => Some(at),
                Wait::Idle | Wait::Full => None,
            };
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = shared.wake.notified() => {}
                _ = shared.clock.sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
            }
        }
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while jobs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(target: "livebase::scheduler", "jobs still running at shutdown were abandoned");
            jobs.abort_all();
        }
    });
    Ok(Worker { task })
}

/// Settles every `inProgress` job — the process that started it is gone: a
/// retryable action's job is `pending` again, due at once (an interruption
/// is no fault of the remote: never failed for it); any other is marked
/// failed, as an action runs at most once. Returns how many failed and how
/// many will be retried.
async fn recover_interrupted(executor: &Executor) -> Result<(usize, usize)> {
    let (mut failed, mut retried) = (0, 0);
    loop {
        let registry = executor.registry().clone();
        let (marked, again) = executor
            .database()
            .mutate(move |tx| {
                let stuck = tx
                    .query(SCHEDULED_FUNCTIONS)
                    .with_index("by_state_time", |r| {
                        r.eq("state", JobState::InProgress.as_str())
                    })
                    .take(RECOVERY_BATCH)?;
                let mut again = 0;
                for doc in &stuck {
                    let job = Job::parse(doc)?;
                    let function = registry.get(&job.name);
                    match function.and_then(|f| f.retry.map(|p| (p, f.forget_when_done))) {
                        Some((policy, forget)) => {
                            end_attempt(tx, &job.id, &policy, forget, Outcome::Interrupted)?;
                            again += 1;
                        }
                        None => settle(tx, &job.id, JobState::Failed, Some(INTERRUPTED))?,
                    }
                }
                Ok((stuck.len(), again))
            })
            .await?
            .value;
        failed += marked - again;
        retried += again;
        if marked < RECOVERY_BATCH {
            return Ok((failed, retried));
        }
    }
}

/// What the worker waits for after a scan.
enum Wait {
    /// The next pending job is due then.
    Until(Instant),
    /// No pending job: only a commit can bring one.
    Idle,
    /// A job is due but every permit is taken: a finishing job pokes.
    Full,
}

/// A `_scheduled_functions` row, as the worker needs it.
struct Job {
    id: DocumentId,
    name: String,
    args: Value,
    scheduled_time: f64,
}

impl Job {
    fn parse(doc: &Value) -> Result<Job> {
        let id = doc
            .get("_id")
            .and_then(Value::as_str)
            .and_then(DocumentId::parse)
            .ok_or_else(|| Error::internal(format!("a scheduled job without an id: {doc:?}")))?;
        Ok(Job {
            id,
            name: doc
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            args: doc.get("args").cloned().unwrap_or(Value::Null),
            scheduled_time: doc
                .get("scheduledTime")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
        })
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

impl Shared {
    /// Starts every due job a permit allows; says what to wait for next.
    async fn dispatch(self: &Arc<Self>, jobs: &mut JoinSet<()>) -> Result<Wait> {
        let skip = self.running.lock().map(|r| r.len()).unwrap_or(0);
        // Enough rows to pass the running ones, fill every permit, and see
        // the next job after them.
        let limit = skip + self.max_concurrent_jobs + 1;
        let pending = self
            .executor
            .database()
            .query(move |tx| {
                tx.query(SCHEDULED_FUNCTIONS)
                    .with_index("by_state_time", |r| {
                        r.eq("state", JobState::Pending.as_str())
                    })
                    .take(limit)
            })
            .await?
            .value;
        let now = self.clock.now_ms();
        for doc in &pending {
            let job = Job::parse(doc)?;
            if job.scheduled_time > now {
                let wait = Duration::from_secs_f64((job.scheduled_time - now) / 1e3).min(MAX_SLEEP);
                return Ok(Wait::Until(self.clock.now() + wait));
            }
            let Ok(mut running) = self.running.lock() else {
                return Err(Error::internal("the scheduler's running set is poisoned"));
            };
            if running.contains(job.id.as_str()) {
                continue;
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                return Ok(Wait::Full);
            };
            running.insert(job.id.as_str().to_string());
            drop(running);
            jobs.spawn(self.clone().run(job, permit));
        }
        Ok(Wait::Idle)
    }

    /// Runs one job in its own task, then frees its permit and pokes the
    /// worker.
    async fn run(self: Arc<Self>, job: Job, permit: OwnedSemaphorePermit) {
        let id = job.id.as_str().to_string();
        let name = job.name.clone();
        let started = std::time::Instant::now();
        let outcome = self.execute(job).await;
        let ms = format!("{:.2}", started.elapsed().as_secs_f64() * 1e3);
        match outcome {
            Ok(Settled::Success) => {
                tracing::info!(target: "livebase::scheduler", job = %id, function = %name, ms, "success")
            }
            Ok(Settled::Failed(error)) => {
                tracing::warn!(target: "livebase::scheduler", job = %id, function = %name, ms, %error, "failed")
            }
            Ok(Settled::Retrying { error, at }) => {
                let in_ms = format!("{:.0}", at - self.clock.now_ms());
                tracing::warn!(target: "livebase::scheduler", job = %id, function = %name, ms, %error, retry_in_ms = in_ms, "failed; will retry")
            }
            Ok(Settled::NotPending) => {
                tracing::debug!(target: "livebase::scheduler", job = %id, function = %name, "no longer pending; not run")
            }
            Err(e) => {
                // Nothing about the job could be written: leave it be for a
                // while, then let the worker find it again.
                tracing::error!(target: "livebase::scheduler", job = %id, function = %name, "settling the job failed: {e}");
                self.clock.sleep_until(self.clock.now() + RETRY_AFTER).await;
            }
        }
        drop(permit);
        if let Ok(mut running) = self.running.lock() {
            running.remove(&id);
        }
        self.wake.notify_one();
    }

    async fn execute(&self, job: Job) -> Result<Settled> {
        let registry = self.executor.registry().clone();
        let function = registry.get(&job.name).cloned();
        match function {
            Some(f) if f.kind() == FunctionKind::Mutation => self.run_mutation(job, f).await,
            Some(f) if f.kind() == FunctionKind::Action => match f.retry {
                Some(policy) => self.run_retryable(job, policy, f.forget_when_done).await,
                None => self.run_action(job).await,
            },
            Some(_) => {
                let error = format!(
                    "`{}` is a query; only mutations and actions can be scheduled",
                    job.name
                );
                self.fail_pending(job, error).await
            }
            None => {
                let error = format!("there is no function `{}`", job.name);
                self.fail_pending(job, error).await
            }
        }
    }

    /// A mutation runs in one transaction with its job's change to `success`
    /// (and its cron's next run): either all of it commits or none does. If
    /// the mutation fails, its writes are rolled back and a second transaction
    /// marks the job failed.
    async fn run_mutation(&self, job: Job, function: Arc<Function>) -> Result<Settled> {
        let registry = self.executor.registry().clone();
        let Job {
            id,
            name,
            args,
            scheduled_time,
        } = job;
        let run_id = id.clone();
        // The deployment's keys and origin, as a called mutation has them (a
        // stored file's URL made here must verify).
        let cursor_key = self.executor.cursor_key().clone();
        let public_url = self.executor.public_url().cloned();
        let ran = self
            .executor
            .database()
            .mutate(move |tx| {
                tx.set_cursor_key(cursor_key);
                tx.set_public_url(public_url);
                if state_of(tx, &run_id)? != Some(JobState::Pending) {
                    return Ok(false);
                }
                let args = Registry::check_args(&function, &[args])?;
                run_sync(&function, tx, &Identity::Anonymous, args)?;
                settle(tx, &run_id, JobState::Success, None)?;
                cron::advance(tx, &run_id, scheduled_time, registry.crons())?;
                Ok(true)
            })
            .await;
        match ran {
            Ok(c) if c.value => Ok(Settled::Success),
            Ok(_) => Ok(Settled::NotPending),
            Err(e) => {
                let error = e.redact(&name).to_string();
                self.fail_pending(
                    Job {
                        id,
                        name,
                        args: Value::Null,
                        scheduled_time,
                    },
                    error,
                )
                .await
            }
        }
    }

    /// An action is claimed first — `inProgress` in a commit of its own, with
    /// its cron's next run — then run, then settled. A crash in between leaves
    /// it `inProgress`, and the next start marks it failed: at most once.
    async fn run_action(&self, job: Job) -> Result<Settled> {
        let registry = self.executor.registry().clone();
        let Job {
            id,
            name,
            args,
            scheduled_time,
        } = job;
        let claim_id = id.clone();
        let claimed = self
            .executor
            .database()
            .mutate(move |tx| {
                if state_of(tx, &claim_id)? != Some(JobState::Pending) {
                    return Ok(false);
                }
                tx.patch(&claim_id, obj! { "state" => JobState::InProgress.as_str() })?;
                cron::advance(tx, &claim_id, scheduled_time, registry.crons())?;
                Ok(true)
            })
            .await?
            .value;
        if !claimed {
            return Ok(Settled::NotPending);
        }
        let outcome = self
            .executor
            .action(&name, vec![args], Identity::Anonymous, Caller::Server)
            .await;
        let (state, error) = match outcome {
            Ok(_) => (JobState::Success, None),
            Err(e) => (JobState::Failed, Some(e.to_string())),
        };
        let stored = error.clone();
        self.executor
            .database()
            .mutate(move |tx| {
                if state_of(tx, &id)? == Some(JobState::InProgress) {
                    settle(tx, &id, state, stored.as_deref())?;
                }
                Ok(())
            })
            .await?;
        Ok(match error {
            None => Settled::Success,
            Some(e) => Settled::Failed(e),
        })
    }

    /// One attempt of a retryable action: claimed like any action, with an
    /// attempt record started in the claim; run with its [`JobContext`];
    /// then settled by [`end_attempt`] — success, another attempt later, or
    /// failed. A crash in between leaves it `inProgress`, and the next start
    /// makes it pending again ([`recover_interrupted`]).
    async fn run_retryable(
        &self,
        job: Job,
        policy: RetryPolicy,
        forget: &'static [&'static str],
    ) -> Result<Settled> {
        let registry = self.executor.registry().clone();
        let Job {
            id,
            name,
            args,
            scheduled_time,
        } = job;
        let claim_id = id.clone();
        let attempt = self
            .executor
            .database()
            .mutate(move |tx| {
                if state_of(tx, &claim_id)? != Some(JobState::Pending) {
                    return Ok(None);
                }
                let now = tx_now(tx);
                let mut attempt = 0;
                update_job(tx, &claim_id, |fields| {
                    fields.insert("state".into(), JobState::InProgress.as_str().into());
                    let mut attempts = take_attempts(fields);
                    attempts.push(obj! { "startedTime" => now });
                    attempt = attempts.len();
                    fields.insert("attempts".into(), Value::Array(attempts));
                })?;
                cron::advance(tx, &claim_id, scheduled_time, registry.crons())?;
                Ok(Some(attempt))
            })
            .await?
            .value;
        let Some(attempt) = attempt else {
            return Ok(Settled::NotPending);
        };
        let context = JobContext {
            id: id.clone(),
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
        };
        let outcome = self
            .executor
            .scheduled_action(&name, vec![args], context)
            .await;
        let ended = self
            .executor
            .database()
            .mutate(move |tx| {
                if state_of(tx, &id)? != Some(JobState::InProgress) {
                    return Ok(None);
                }
                end_attempt(
                    tx,
                    &id,
                    &policy,
                    forget,
                    Outcome::Returned(outcome.as_ref()),
                )
                .map(Some)
            })
            .await?
            .value;
        Ok(match ended {
            None => Settled::NotPending,
            Some(Ended::Success) => Settled::Success,
            Some(Ended::Retry { error, at }) => Settled::Retrying { error, at },
            Some(Ended::Failed(error)) => Settled::Failed(error),
        })
    }

    /// Marks a job that did not run failed with `error` — if it is still
    /// pending — and moves its cron on.
    async fn fail_pending(&self, job: Job, error: String) -> Result<Settled> {
        let registry = self.executor.registry().clone();
        let stored = error.clone();
        let marked = self
            .executor
            .database()
            .mutate(move |tx| {
                if state_of(tx, &job.id)? != Some(JobState::Pending) {
                    return Ok(false);
                }
                settle(tx, &job.id, JobState::Failed, Some(&stored))?;
                cron::advance(tx, &job.id, job.scheduled_time, registry.crons())?;
                Ok(true)
            })
            .await?
            .value;
        Ok(if marked {
            Settled::Failed(error)
        } else {
            Settled::NotPending
        })
    }
}

/// How a job ended.
enum Settled {
    Success,
    Failed(String),
    /// A retryable action's attempt failed transiently; the next is due `at`.
    Retrying {
        error: String,
        at: f64,
    },
    /// Canceled (or otherwise settled) before it could start.
    NotPending,
}

fn state_of(tx: &mut Transaction, id: &DocumentId) -> Result<Option<JobState>> {
    Ok(tx.get(id)?.as_ref().and_then(JobState::of))
}

/// Moves a job to a final `state` at this transaction's commit time.
fn settle(
    tx: &mut Transaction,
    id: &DocumentId,
    state: JobState,
    error: Option<&str>,
) -> Result<()> {
    let now = tx.commit_ts().map_or_else(now_ms, |ts| ts.as_millis_f64());
    let mut fields = obj! { "state" => state.as_str(), "completedTime" => now };
    if let (Some(error), Value::Object(o)) = (error, &mut fields) {
        o.insert("error".into(), Value::from(error));
    }
    tx.patch(id, fields)
}

/// The time of this transaction's commit (a mutation's), in ms.
fn tx_now(tx: &Transaction) -> f64 {
    tx.commit_ts().map_or_else(now_ms, |ts| ts.as_millis_f64())
}

/// Rewrites job `id` with `edit` applied to its fields.
fn update_job(tx: &mut Transaction, id: &DocumentId, edit: impl FnOnce(&mut Object)) -> Result<()> {
    let Some(Value::Object(mut fields)) = tx.get(id)? else {
        return Err(Error::internal(format!("the scheduled job {id} is gone")));
    };
    fields.remove("_id");
    fields.remove("_creationTime");
    edit(&mut fields);
    tx.replace(id, Value::Object(fields))
}

/// Takes the job's attempt records out of its fields (none when absent);
/// put them back with `fields.insert("attempts", ..)`.
fn take_attempts(fields: &mut Object) -> Vec<Value> {
    match fields.remove("attempts") {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    }
}

/// `text` cut to at most [`MAX_STORED_ERROR`] bytes, at a character boundary.
fn stored_error(text: String) -> String {
    if text.len() <= MAX_STORED_ERROR {
        return text;
    }
    let mut end = MAX_STORED_ERROR;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// How an attempt of a retryable action ended.
enum Ended {
    Success,
    Retry { error: String, at: f64 },
    Failed(String),
}

/// What became of an attempt.
enum Outcome<'a> {
    /// The action returned.
    Returned(std::result::Result<&'a Value, &'a Error>),
    /// The process running it is gone.
    Interrupted,
}

/// Attempt records kept on a job: the first (whose start the deadline counts
/// from) and the newest; older interrupted ones give way. Interrupted
/// attempts do not count against a policy, so a crash loop could otherwise
/// grow the row without bound.
pub const MAX_ATTEMPT_RECORDS: usize = 2 * retry::MAX_ATTEMPTS_LIMIT as usize;

fn is_interrupted(record: &Value) -> bool {
    record.get("interrupted") == Some(&Value::Boolean(true))
}

/// Ends the last attempt of retryable job `id` with `outcome`, in `tx`: a
/// success settles it; an interruption makes it `pending` again, due at once
/// and never failed for it (a restart is no fault of the remote, nor does it
/// count against the policy); a transient error makes it `pending` again at
/// the next attempt's time while `policy` allows one; anything else fails it
/// with the error. Once the job has succeeded or failed, the argument fields
/// `forget` names are removed from its row.
fn end_attempt(
    tx: &mut Transaction,
    id: &DocumentId,
    policy: &RetryPolicy,
    forget: &[&str],
    outcome: Outcome,
) -> Result<Ended> {
    let now = tx_now(tx);
    let mut ended = Ended::Success;
    update_job(tx, id, |fields| {
        let mut attempts = take_attempts(fields);
        if attempts.is_empty() {
            // Claimed before attempts were recorded: count that one.
            attempts.push(obj! { "startedTime" => now });
        }
        // The attempts that ran to an end, this one included.
        let count = attempts[..attempts.len() - 1]
            .iter()
            .filter(|a| !is_interrupted(a))
            .count()
            + 1;
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let first = attempts
            .first()
            .and_then(|a| a.get("startedTime"))
            .and_then(Value::as_f64)
            .unwrap_or(now);
        let mut record = match attempts.pop() {
            Some(Value::Object(o)) => o,
            _ => Object::new().into(),
        };
        record.insert("endedTime".into(), now.into());
        let mut state = JobState::Pending;
        match outcome {
            Outcome::Returned(Ok(result)) => {
                if result.size() <= MAX_STORED_RESULT {
                    record.insert("result".into(), result.clone());
                }
                fields.remove("error");
                state = JobState::Success;
            }
            Outcome::Interrupted => {
                record.insert("error".into(), INTERRUPTED.into());
                record.insert("interrupted".into(), Value::Boolean(true));
                record.insert("nextAttemptTime".into(), now.into());
                fields.insert("scheduledTime".into(), now.into());
                fields.insert("error".into(), INTERRUPTED.into());
                ended = Ended::Retry {
                    error: INTERRUPTED.into(),
                    at: now,
                };
            }
            Outcome::Returned(Err(error)) => {
                let text = stored_error(error.to_string());
                record.insert("error".into(), text.as_str().into());
                let next = if retry::is_transient(error) {
                    policy.next_attempt(count, first, now)
                } else {
                    None
                };
                match next {
                    Some(at) => {
                        record.insert("nextAttemptTime".into(), at.into());
                        fields.insert("scheduledTime".into(), at.into());
                        ended = Ended::Retry {
                            error: text.clone(),
                            at,
                        };
                        fields.insert("error".into(), text.into());
                    }
                    None => {
                        let text = if retry::is_transient(error) {
                            format!("gave up after {count} attempt(s): {text}")
                        } else {
                            text
                        };
                        state = JobState::Failed;
                        ended = Ended::Failed(text.clone());
                        fields.insert("error".into(), text.into());
                    }
                }
            }
        }
        attempts.push(Value::Object(record));
        while attempts.len() > MAX_ATTEMPT_RECORDS {
            match attempts.iter().skip(1).position(is_interrupted) {
                Some(i) => attempts.remove(i + 1),
                None => attempts.remove(1),
            };
        }
        fields.insert("attempts".into(), Value::Array(attempts));
        fields.insert("state".into(), state.as_str().into());
        if state.is_final() {
            fields.insert("completedTime".into(), now.into());
            if let Some(args) = fields.get_mut("args") {
                for path in forget {
                    remove_path(args, path);
                }
            }
        }
    })?;
    Ok(ended)
}

/// Removes the field at dotted `path` (`data.url`) from `value`, if there.
fn remove_path(value: &mut Value, path: &str) {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let Value::Object(fields) = value else {
        return;
    };
    match rest {
        None => {
            fields.remove(head);
        }
        Some(rest) => {
            if let Some(inner) = fields.get_mut(head) {
                remove_path(inner, rest);
            }
        }
    }
}

//! The runtime's own tables, which live beside the application's in the same
//! store (names start with `_`): scheduled jobs and the state of crons — plus
//! the auth tables of [`crate::auth::tables`], which keep plain names. (Stored
//! mutation outcomes for idempotent retries are not documents: see
//! [`crate::store::MutationOutcome`].)
//!
//! Scheduling is written here as plain transaction code ([`schedule`],
//! [`schedule_at`], [`cancel`]); [`crate::scheduler`] runs the jobs.

use livebase_schema::{define_table, obj, v, DocumentId, Schema, Value};

use crate::error::{Error, Result};
use crate::function::canonical_path;
use crate::transaction::Transaction;

/// Jobs scheduled by mutations: run function `name` with `args` at
/// `scheduledTime` (ms since the epoch). A job is a row written in the
/// scheduling mutation's own transaction, so it exists exactly when that
/// mutation commits; the scheduler claims `pending` rows in time order through
/// `by_state_time`.
///
/// A job of a retryable action (see [`crate::scheduler::retry`]) also keeps
/// `attempts`, one record per attempt: `startedTime`, then `endedTime` with
/// its `result` (small ones) or `error`, and — when it is to be retried —
/// `nextAttemptTime`, which is then the job's `scheduledTime` too; an
/// attempt cut short by a restart says `interrupted: true`. Such a job
/// is *retrying* while it is `pending` with attempts behind it; its `error`
/// is the last attempt's.
pub const SCHEDULED_FUNCTIONS: &str = "_scheduled_functions";

/// The crons an application declares (see [`crate::registry::Registry::cron`]),
/// one row each: its schedule as text, the function and arguments it runs, and
/// `jobId`, the `_scheduled_functions` row of its next run. A cron's next run
/// is always a pending job, so a run missed while the server was down is one
/// overdue job — it runs once after the start, whatever the number of ticks
/// missed.
pub const CRONS: &str = "_crons";

/// Which definition of each table the stored documents were last checked
/// against before a server served them: `table` and its `fingerprint`, one
/// row per table (see [`crate::schema_check`]).
pub const SCHEMA_CHECKS: &str = "_schema_checks";
/// The fields of a [`SCHEMA_CHECKS`] row.
pub const CHECKED_TABLE: &str = "table";
pub const CHECKED_FINGERPRINT: &str = "fingerprint";

/// Where a scheduled job is in its life, as `_scheduled_functions.state` holds
/// it: `pending` → (`inProgress`, actions only) → `success` or `failed`; or
/// `pending` → `canceled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for `scheduledTime`.
    Pending,
    /// An action that has started. A mutation is never seen in this state: it
    /// goes from `pending` to `success` in the commit of its own writes.
    InProgress,
    Success,
    /// Failed with `error`; never run again.
    Failed,
    /// Canceled before it started; it never runs.
    Canceled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::InProgress,
        JobState::Success,
        JobState::Failed,
        JobState::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::InProgress => "inProgress",
            JobState::Success => "success",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// The state of a `_scheduled_functions` document.
    pub fn of(job: &Value) -> Option<JobState> {
        job.get("state")
            .and_then(Value::as_str)
            .and_then(JobState::parse)
    }

    /// Whether the job is over: it will never run (again).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Success | JobState::Failed | JobState::Canceled
        )
    }
}

/// Adds the system tables (and the auth and storage tables) to an
/// application's schema.
pub fn with_system_tables(schema: Schema) -> Schema {
    crate::storage::with_storage_tables(crate::auth::tables::with_auth_tables(schema))
        .system_table(
            SCHEDULED_FUNCTIONS,
            define_table([
                ("name", v::string()),
                ("args", v::any()),
                ("scheduledTime", v::float64()),
                ("state", v::string()),
                ("completedTime", v::optional(v::float64())),
                ("error", v::optional(v::string())),
                ("attempts", v::optional(v::array(attempt_validator()))),
            ])
            .index("by_state_time", ["state", "scheduledTime"]),
        )
        .system_table(
            CRONS,
            define_table([
                ("name", v::string()),
                ("schedule", v::string()),
                ("function", v::string()),
                ("args", v::any()),
                ("jobId", v::string()),
                ("nextRun", v::float64()),
                ("lastRun", v::optional(v::float64())),
            ])
            .index("by_name", ["name"])
            .index("by_job", ["jobId"]),
        )
        .system_table(
            SCHEMA_CHECKS,
            define_table([
                (CHECKED_TABLE, v::string()),
                (CHECKED_FINGERPRINT, v::string()),
            ]),
        )
}

/// One record of `_scheduled_functions.attempts`.
fn attempt_validator() -> livebase_schema::Validator {
    v::object([
        ("startedTime", v::float64()),
        ("endedTime", v::optional(v::float64())),
        ("result", v::optional(v::any())),
        ("error", v::optional(v::string())),
        ("nextAttemptTime", v::optional(v::float64())),
        ("interrupted", v::optional(v::boolean())),
    ])
}

/// Schedules function `path` to run with `args` `delay_ms` after this
/// mutation's commit time — the seed's `ctx.scheduler.runAfter`. The job is
/// written in `tx`, so it is stored if and only if the mutation commits.
pub fn schedule(
    tx: &mut Transaction,
    delay_ms: f64,
    path: &str,
    args: Value,
) -> Result<DocumentId> {
    let now = mutation_time(tx)?;
    let delay_ms = if delay_ms.is_finite() {
        delay_ms.max(0.0)
    } else {
        0.0
    };
    schedule_at(tx, now + delay_ms, path, args)
}

/// Schedules function `path` to run with `args` at `time_ms` (ms since the
/// epoch; a time in the past means as soon as possible) — the seed's
/// `ctx.scheduler.runAt`. Written in `tx`, like [`schedule`].
pub fn schedule_at(
    tx: &mut Transaction,
    time_ms: f64,
    path: &str,
    args: Value,
) -> Result<DocumentId> {
    mutation_time(tx)?;
    if !time_ms.is_finite() {
        return Err(Error::invalid(format!(
            "a job's scheduled time must be a finite number of ms, not {time_ms}"
        )));
    }
    if !matches!(args, Value::Object(_)) {
        return Err(Error::invalid(format!(
            "the arguments of a scheduled function must be an object, not {}",
            args.value_type()
        )));
    }
    tx.insert(
        SCHEDULED_FUNCTIONS,
        obj! {
            "name" => canonical_path(path),
            "args" => args,
            "scheduledTime" => time_ms,
            "state" => JobState::Pending.as_str(),
        },
    )
}

/// Cancels a pending job in `tx`: it will never run. Returns whether it was
/// pending; a job that already ran, failed or was canceled is left as it is
/// (an action already in progress runs to its end). An id that is not a job
/// is `NOT_FOUND`.
pub fn cancel(tx: &mut Transaction, job: &DocumentId) -> Result<bool> {
    let now = mutation_time(tx)?;
    let found = match job.table() {
        SCHEDULED_FUNCTIONS => tx.get(job)?,
        _ => None,
    };
    let Some(found) = found else {
        return Err(Error::not_found(format!("there is no scheduled job {job}")));
    };
    if JobState::of(&found) != Some(JobState::Pending) {
        return Ok(false);
    }
    tx.patch(
        job,
        obj! { "state" => JobState::Canceled.as_str(), "completedTime" => now },
    )?;
    Ok(true)
}

/// The commit time of a mutation's transaction, in ms; an error in a query.
fn mutation_time(tx: &Transaction) -> Result<f64> {
    tx.commit_ts()
        .map(|ts| ts.as_millis_f64())
        .ok_or_else(|| Error::internal("only a mutation can schedule or cancel a function"))
}

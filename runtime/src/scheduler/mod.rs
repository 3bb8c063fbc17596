//! Durable scheduling (`docs/reference/invariants.md`, invariant 7): mutations schedule functions
//! with [`Scheduler`] — `ctx.scheduler().run_after(..)`, as the seed's
//! `ctx.scheduler.runAfter` — and the [`worker`] runs them when they come due.
//! Crons declared by the application ([`cron`]) are kept as jobs too.
//!
//! A job is a row of `_scheduled_functions` (see [`crate::system`]) written in
//! the scheduling mutation's own transaction, so it exists exactly when that
//! mutation committed. The store, not memory, is the queue: the worker finds
//! the next due job through the `by_state_time` index, so jobs that came due
//! while the server was down are simply the first ones it finds after a start.
//!
//! **Invariant:** a scheduled mutation runs exactly once — its job row turns
//! `success` in the commit of its own writes; a scheduled action runs at most
//! once — its row turns `inProgress` in a commit before it starts, and a row
//! found `inProgress` at start-up is marked failed, never run again — unless
//! it is declared retryable ([`retry`]): then a transient failure, or a row
//! found `inProgress` at start-up, makes the job `pending` again at its next
//! attempt's time, until an attempt succeeds, one fails permanently, or the
//! policy allows no more (a restart never fails it, nor counts against the
//! policy). Each attempt is recorded on the row (`attempts`).

pub mod cron;
pub mod retry;
pub mod worker;

use std::time::Duration;

use livebase_schema::{DocumentId, Value};

use crate::error::Result;
use crate::system;
use crate::transaction::Transaction;

pub use cron::{CronJob, Schedule};
pub use retry::{is_transient, transient, JobContext, RetryPolicy};
pub use worker::{start, SchedulerOptions, Worker};

/// Schedules and cancels jobs from a mutation, in its transaction: a mutation
/// that fails schedules nothing, and a cancel commits with the mutation that
/// asked for it. Get one with `ctx.scheduler()` in a handler, or
/// [`Scheduler::new`] on a transaction in logic code.
///
/// A job runs as the server, with no signed-in user
/// ([`crate::registry::Identity::Anonymous`]): pass what it needs in `args`.
/// It may be an internal function; a query cannot be scheduled.
///
/// ```text
/// ctx.scheduler().run_after(Duration::ZERO, "emails:send", obj! {
///     "to" => email, "template" => "welcome", "data" => obj! { "name" => name },
/// })?;
/// ```
pub struct Scheduler<'t, 'a> {
    tx: &'t mut Transaction<'a>,
}

impl<'t, 'a> Scheduler<'t, 'a> {
    pub fn new(tx: &'t mut Transaction<'a>) -> Scheduler<'t, 'a> {
        Scheduler { tx }
    }

    /// Runs mutation or action `path` with `args` `delay` after this mutation
    /// commits (`Duration::ZERO`: as soon as it has committed). Returns the
    /// job's id, a `_scheduled_functions` document queries can read and watch.
    pub fn run_after(
        &mut self,
        delay: Duration,
        path: &str,
        args: impl Into<Value>,
    ) -> Result<DocumentId> {
        let delay_ms = delay.as_secs_f64() * 1e3;
        system::schedule(self.tx, delay_ms, path, args.into())
    }

    /// Runs mutation or action `path` with `args` at `time_ms` (ms since the
    /// epoch, like `_creationTime`; a past time means as soon as possible).
    pub fn run_at(
        &mut self,
        time_ms: f64,
        path: &str,
        args: impl Into<Value>,
    ) -> Result<DocumentId> {
        system::schedule_at(self.tx, time_ms, path, args.into())
    }

    /// Cancels a pending job so that it never runs; returns whether it was
    /// still pending. See [`system::cancel`].
    pub fn cancel(&mut self, job: &DocumentId) -> Result<bool> {
        system::cancel(self.tx, job)
    }
}

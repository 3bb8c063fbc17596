//! Crons: functions the application runs on a schedule, declared with
//! [`crate::registry::Registry::interval`] and
//! [`crate::registry::Registry::cron`] as the seed's `crons.interval` and
//! `crons.cron` — a fixed interval, or a cron expression parsed by `croner`
//! (five fields, an optional leading seconds field; UTC).
//!
//! A cron's state is a row of `_crons` (see [`crate::system::CRONS`]) pointing
//! at the pending `_scheduled_functions` job of its next run. When that job
//! runs, the one after it is scheduled in the same commit that settles it (a
//! mutation's own commit, an action's `inProgress` claim), at the first tick
//! after *now* — so after the server was down across several ticks the missed
//! run happens once, and the ticks in between are skipped.
//!
//! A cron's next run is scheduled when its current one starts, so a slow
//! action may still be running when the next one is due; both run. Canceling
//! a cron's pending job stops the cron until the next start, when [`sync`]
//! schedules it again.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use livebase_schema::{obj, DocumentId, Value};

use crate::error::{Error, Result};
use crate::function::canonical_path;
use crate::system::{self, JobState, CRONS, SCHEDULED_FUNCTIONS};
use crate::transaction::Transaction;

/// When a cron runs.
#[derive(Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every `Duration`, counted from the cron's first declaration.
    Interval(Duration),
    /// At the times a cron expression matches, in UTC.
    Cron {
        expression: String,
        parsed: Box<Cron>,
    },
}

impl Schedule {
    /// Every `every` (at least one millisecond).
    pub fn interval(every: Duration) -> Result<Schedule> {
        if every < Duration::from_millis(1) {
            return Err(Error::invalid(format!(
                "a cron interval must be at least 1ms, not {every:?}"
            )));
        }
        Ok(Schedule::Interval(every))
    }

    /// A cron expression: `"0 * * * *"` (minute, hour, day of month, month,
    /// day of week), or with a leading seconds field, `"*/10 * * * * *"`.
    pub fn cron(expression: &str) -> Result<Schedule> {
        let parsed: Cron = expression
            .parse()
            .map_err(|e| Error::invalid(format!("cron expression `{expression}`: {e}")))?;
        Ok(Schedule::Cron {
            expression: expression.trim().to_string(),
            parsed: Box::new(parsed),
        })
    }

    /// The first run of a cron declared at `now` (ms since the epoch).
    pub fn first(&self, now: f64) -> f64 {
        match self {
            Schedule::Interval(every) => now + millis(*every),
            Schedule::Cron { parsed, .. } => next_occurrence(parsed, now),
        }
    }

    /// The run after one that was due at `previous` and ran at `now`: the first
    /// tick after both. An interval keeps its cadence (`previous + k × every`);
    /// ticks that passed while the run waited — the server down — are skipped.
    pub fn next(&self, previous: f64, now: f64) -> f64 {
        match self {
            Schedule::Interval(every) => {
                let every = millis(*every);
                let passed = ((now - previous) / every).floor().max(0.0);
                let next = previous + (passed + 1.0) * every;
                // Guard against rounding: strictly after both.
                if next > now && next > previous {
                    next
                } else {
                    now.max(previous) + every
                }
            }
            Schedule::Cron { parsed, .. } => next_occurrence(parsed, previous.max(now)),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Interval(every) => write!(f, "every {}ms", every.as_millis()),
            Schedule::Cron { expression, .. } => write!(f, "cron {expression}"),
        }
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The first time strictly after `after_ms` that `cron` matches; far in the
/// future if it never matches again (a pattern naming a past year).
fn next_occurrence(cron: &Cron, after_ms: f64) -> f64 {
    const NEVER: f64 = 8.64e15; // the largest time JavaScript's Date holds
    let Some(after) = DateTime::<Utc>::from_timestamp_millis(after_ms as i64) else {
        return NEVER;
    };
    match cron.find_next_occurrence(&after, false) {
        Ok(next) => (next.timestamp_millis() as f64).max(after_ms.floor() + 1.0),
        Err(_) => NEVER,
    }
}

/// One declared cron: run `function` with `args` on `schedule`.
#[derive(Clone, Debug, PartialEq)]
pub struct CronJob {
    pub name: String,
    pub schedule: Schedule,
    pub function: String,
    pub args: Value,
}

impl CronJob {
    pub fn new(name: &str, schedule: Schedule, function: &str, args: Value) -> Result<CronJob> {
        if name.is_empty() {
            return Err(Error::invalid("a cron needs a name"));
        }
        if !matches!(args, Value::Object(_)) {
            return Err(Error::invalid(format!(
                "cron `{name}`: arguments must be an object, not {}",
                args.value_type()
            )));
        }
        Ok(CronJob {
            name: name.to_string(),
            schedule,
            function: canonical_path(function),
            args,
        })
    }
}

fn str_field<'v>(doc: &'v Value, field: &str) -> &'v str {
    doc.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn id_field(doc: &Value, field: &str) -> Option<DocumentId> {
    DocumentId::parse(str_field(doc, field))
}

fn now_of(tx: &Transaction) -> Result<f64> {
    tx.commit_ts()
        .map(|ts| ts.as_millis_f64())
        .ok_or_else(|| Error::internal("crons change only in a mutation"))
}

/// Brings `_crons` in line with the declared crons, at start-up: a new cron
/// gets its first run scheduled; a changed one (schedule, function or
/// arguments) has its pending run canceled and a new first run scheduled; one
/// no longer declared has its pending run canceled and its row removed. An
/// unchanged cron keeps its pending run — overdue if the server was down, and
/// then it runs once, right after the start.
pub fn sync(tx: &mut Transaction, crons: &[CronJob]) -> Result<()> {
    let now = now_of(tx)?;
    let rows = tx.query(CRONS).collect()?;
    for row in &rows {
        let name = str_field(row, "name");
        if crons.iter().any(|c| c.name == name) {
            continue;
        }
        if let Some(job) = id_field(row, "jobId") {
            cancel_if_pending(tx, &job)?;
        }
        if let Some(id) = id_field(row, "_id") {
            tx.delete(&id)?;
        }
        tracing::info!(target: "livebase::scheduler", cron = name, "cron removed");
    }
    for cron in crons {
        let row = rows.iter().find(|r| str_field(r, "name") == cron.name);
        let schedule = cron.schedule.to_string();
        if let Some(row) = row {
            let unchanged = str_field(row, "schedule") == schedule
                && str_field(row, "function") == cron.function
                && row.get("args") == Some(&cron.args);
            let job = id_field(row, "jobId");
            let pending = match &job {
                Some(job) => tx
                    .get(job)?
                    .is_some_and(|j| JobState::of(&j) == Some(JobState::Pending)),
                None => false,
            };
            if unchanged && pending {
                continue;
            }
            if let Some(job) = job {
                cancel_if_pending(tx, &job)?;
            }
        }
        let next = cron.schedule.first(now);
        let job = system::schedule_at(tx, next, &cron.function, cron.args.clone())?;
        let fields = obj! {
            "name" => cron.name.as_str(),
            "schedule" => schedule.as_str(),
            "function" => cron.function.as_str(),
            "args" => cron.args.clone(),
            "jobId" => job.as_str(),
            "nextRun" => next,
        };
        match row.and_then(|r| id_field(r, "_id")) {
            Some(id) => tx.patch(&id, fields)?,
            None => {
                tx.insert(CRONS, fields)?;
            }
        }
        tracing::info!(target: "livebase::scheduler", cron = %cron.name, %schedule, next_run = next, "cron scheduled");
    }
    Ok(())
}

fn cancel_if_pending(tx: &mut Transaction, job: &DocumentId) -> Result<()> {
    if job.table() == SCHEDULED_FUNCTIONS && tx.get(job)?.is_some() {
        system::cancel(tx, job)?;
    }
    Ok(())
}

/// If `job` (due at `due`) is a cron's next run, schedules the run after it —
/// in `tx`, the transaction that settles `job`, so the cron moves on exactly
/// when its run is decided.
pub fn advance(tx: &mut Transaction, job: &DocumentId, due: f64, crons: &[CronJob]) -> Result<()> {
    let row = tx
        .query(CRONS)
        .with_index("by_job", |r| r.eq("jobId", job.as_str()))
        .first()?;
    let Some(row) = row else {
        return Ok(());
    };
    let Some(cron) = crons.iter().find(|c| c.name == str_field(&row, "name")) else {
        return Ok(()); // No longer declared: `sync` removes the row at the next start.
    };
    let now = now_of(tx)?;
    let next = cron.schedule.next(due, now);
    let next_job = system::schedule_at(tx, next, &cron.function, cron.args.clone())?;
    if let Some(id) = id_field(&row, "_id") {
        tx.patch(
            &id,
            obj! { "jobId" => next_job.as_str(), "nextRun" => next, "lastRun" => now },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: f64 = 1000.0;

    #[test]
    fn an_interval_keeps_its_cadence_and_skips_missed_ticks_once() {
        let every = Schedule::interval(Duration::from_millis(100)).unwrap();
        assert_eq!(every.first(1_000.0), 1_100.0);
        // On time, or a little late: the next tick on the grid.
        assert_eq!(every.next(1_100.0, 1_100.0), 1_200.0);
        assert_eq!(every.next(1_100.0, 1_130.0), 1_200.0);
        // Down across several ticks: one run now, then the next tick after now,
        // not one run per tick missed.
        assert_eq!(every.next(1_100.0, 1_450.0), 1_500.0);
        assert_eq!(every.next(1_100.0, 1_500.0), 1_600.0);
    }

    #[test]
    fn a_cron_expression_runs_at_its_next_match_after_now() {
        // 2024-01-01T00:00:00Z.
        let midnight = 1_704_067_200_000.0;
        let hourly = Schedule::cron("0 * * * *").unwrap();
        assert_eq!(hourly.first(midnight), midnight + 3600.0 * SECOND);
        assert_eq!(hourly.first(midnight + 1.0), midnight + 3600.0 * SECOND);
        // Missed 00:00 … 05:00 while down until 05:30: the next is 06:00.
        assert_eq!(
            hourly.next(midnight, midnight + 5.5 * 3600.0 * SECOND),
            midnight + 6.0 * 3600.0 * SECOND
        );
        let every_second = Schedule::cron("* * * * * *").unwrap();
        assert_eq!(every_second.first(midnight + 250.0), midnight + SECOND);
        assert_eq!(
            every_second.next(midnight + SECOND, midnight + SECOND),
            midnight + 2.0 * SECOND
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        let err = Schedule::cron("61 * * * *").unwrap_err();
        assert!(err.to_string().contains("61 * * * *"), "{err}");
        assert!(Schedule::cron("not a cron").is_err());
        assert!(Schedule::interval(Duration::ZERO).is_err());
        assert!(CronJob::new(
            "x",
            Schedule::Interval(Duration::from_secs(1)),
            "a:b",
            Value::Null
        )
        .is_err());
    }
}

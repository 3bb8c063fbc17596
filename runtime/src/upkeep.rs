//! The runtime's housekeeping of its own tables: finished scheduled jobs
//! (`success`, `failed`, `canceled`) scheduled and completed more than
//! [`JOB_RETENTION`] ago, and sessions past their expiry, are deleted at start and every
//! [`UPKEEP_EVERY`] — [`UPKEEP_BATCH`] documents per transaction, batch after
//! batch until none is left, so neither table grows with the rate of jobs or
//! sign-ins and the writer is never held long by one purge.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livebase_schema::{DocumentId, Value};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::auth::tables::SESSIONS;
use crate::database::Database;
use crate::error::{Error, Result};
use crate::system::{JobState, SCHEDULED_FUNCTIONS};
use crate::transaction::Transaction;

/// How long a finished job stays in `_scheduled_functions` after it was
/// scheduled and completed, for applications (and the dashboard) to read
/// its outcome.
pub const JOB_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How often the purge runs (and once at start).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(60 * 60);
/// Most documents one purge transaction deletes; the next batch follows at
/// once until a batch finds nothing.
pub const UPKEEP_BATCH: usize = 1_000;

/// What one purge deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub jobs: usize,
    pub sessions: usize,
}

/// Runs [`purge`] now and every [`UPKEEP_EVERY`] until `shutdown` fires. A
/// failed run is logged; the next one tries again.
pub fn start(db: Database, mut shutdown: broadcast::Receiver<()>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let run = purge(&db, now_ms(), UPKEEP_BATCH);
            let done = tokio::select! {
                done = run => done,
                _ = shutdown.recv() => return,
            };
            match done {
                Ok(p) if p != Purged::default() => {
                    tracing::info!(
                        jobs = p.jobs,
                        sessions = p.sessions,
                        "purged finished jobs and expired sessions"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("purging finished jobs and expired sessions: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(UPKEEP_EVERY) => {}
                _ = shutdown.recv() => return,
            }
        }
    })
}

/// Deletes every finished job scheduled and completed before
/// `now_ms - JOB_RETENTION` and
/// every session expired at `now_ms`, `batch` documents per transaction.
pub async fn purge(db: &Database, now_ms: f64, batch: usize) -> Result<Purged> {
    let before_ms = now_ms - JOB_RETENTION.as_millis() as f64;
    let mut purged = Purged::default();
    loop {
        let deleted = db
            .mutate(move |tx| purge_finished_jobs(tx, before_ms, batch))
            .await?
            .value;
        purged.jobs += deleted;
        if deleted < batch {
            break;
        }
    }
    loop {
        let deleted = db
            .mutate(move |tx| purge_expired_sessions(tx, now_ms, batch))
            .await?
            .value;
        purged.sessions += deleted;
        if deleted == 0 {
            break;
        }
    }
    Ok(purged)
}

/// Deletes up to `limit` finished jobs scheduled and completed before
/// `before_ms`; how many.
pub fn purge_finished_jobs(tx: &mut Transaction, before_ms: f64, limit: usize) -> Result<usize> {
    let mut deleted = 0;
    for state in JobState::ALL.into_iter().filter(|s| s.is_final()) {
        if deleted == limit {
            break;
        }
        let old = tx
            .query(SCHEDULED_FUNCTIONS)
            .with_index("by_state_time", |r| {
                r.eq("state", state.as_str()).lt("scheduledTime", before_ms)
            })
            .filter(move |job| {
                job.get("completedTime")
                    .and_then(Value::as_f64)
                    .is_none_or(|t| t < before_ms)
            })
            .take(limit - deleted)?;
        for job in old {
            tx.delete(&id_of(&job)?)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Deletes the expired among the `limit` oldest sessions; how many. Every
/// session gets the same lifetime, so the oldest expire first: a batch that
/// deletes nothing means none is left.
pub fn purge_expired_sessions(tx: &mut Transaction, now_ms: f64, limit: usize) -> Result<usize> {
    let oldest = tx.query(SESSIONS).take(limit)?;
    let mut deleted = 0;
    for session in oldest {
        let expires_at = session.get("expiresAt").and_then(Value::as_f64);
        if expires_at.is_some_and(|t| t <= now_ms) {
            tx.delete(&id_of(&session)?)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

fn id_of(doc: &Value) -> Result<DocumentId> {
    doc.get("_id")
        .and_then(Value::as_str)
        .and_then(DocumentId::parse)
        .ok_or_else(|| Error::internal("a stored document has no valid _id"))
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use livebase_schema::{obj, Schema};

    use super::*;
    use crate::auth::tables::USERS;
    use crate::store::sqlite::SqlitePersistence;
    use crate::system::with_system_tables;

    const DAY_MS: f64 = 24.0 * 60.0 * 60.0 * 1e3;

    async fn count(db: &Database, table: &'static str) -> usize {
        db.query(move |tx| Ok(tx.query(table).collect()?.len()))
            .await
            .unwrap()
            .value
    }

    #[tokio::test]
    async fn finished_jobs_past_retention_and_expired_sessions_are_purged_batch_after_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqlitePersistence::open(dir.path().join("db.sqlite3")).unwrap());
        let db = Database::open(store, with_system_tables(Schema::new())).unwrap();
        let now = now_ms();
        let job = |state: JobState, at: f64| {
            obj! { "name" => "m:f", "args" => obj! {}, "scheduledTime" => at, "state" => state.as_str() }
        };
        // 2,500 old finished jobs (past 2 batches of 1,000), and the ones
        // that stay: old but pending or running, scheduled long ago but
        // completed recently, scheduled recently.
        db.mutate(move |tx| {
            for i in 0..2_500 {
                let state = [JobState::Success, JobState::Failed, JobState::Canceled][i % 3];
                tx.insert(
                    SCHEDULED_FUNCTIONS,
                    job(state, now - 8.0 * DAY_MS - i as f64),
                )?;
            }
            for i in 0..10 {
                let mut late = job(JobState::Failed, now - 9.0 * DAY_MS);
                if let Value::Object(fields) = &mut late {
                    fields.insert("completedTime".into(), Value::from(now - DAY_MS));
                }
                tx.insert(SCHEDULED_FUNCTIONS, late)?;
                tx.insert(
                    SCHEDULED_FUNCTIONS,
                    job(JobState::Pending, now - 30.0 * DAY_MS),
                )?;
                tx.insert(
                    SCHEDULED_FUNCTIONS,
                    job(JobState::InProgress, now - 30.0 * DAY_MS),
                )?;
                tx.insert(
                    SCHEDULED_FUNCTIONS,
                    job(JobState::Success, now - 6.0 * DAY_MS + i as f64),
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
        // Sessions are created in expiry order: 2,500 expired, then 10 live.
        let user = db
            .mutate(|tx| {
                tx.insert(
                    USERS,
                    obj! { "email" => "a@x", "name" => "A", "passwordHash" => "h" },
                )
            })
            .await
            .unwrap()
            .value;
        for (n, expires_at) in [(2_500, now - DAY_MS), (10, now + DAY_MS)] {
            let user = user.clone();
            db.mutate(move |tx| {
                for _ in 0..n {
                    tx.insert(
                        SESSIONS,
                        obj! { "userId" => user.as_str(), "expiresAt" => expires_at },
                    )?;
                }
                Ok(())
            })
            .await
            .unwrap();
        }

        let purged = purge(&db, now, UPKEEP_BATCH).await.unwrap();
        assert_eq!(
            purged,
            Purged {
                jobs: 2_500,
                sessions: 2_500
            }
        );
        assert_eq!(count(&db, SCHEDULED_FUNCTIONS).await, 40);
        assert_eq!(count(&db, SESSIONS).await, 10);
        let kept = db
            .query(|tx| tx.query(SESSIONS).collect())
            .await
            .unwrap()
            .value;
        assert!(kept
            .iter()
            .all(|s| s.get("expiresAt").and_then(Value::as_f64) > Some(now)));
        // Nothing left to do: a second run deletes nothing.
        assert_eq!(
            purge(&db, now, UPKEEP_BATCH).await.unwrap(),
            Purged::default()
        );
    }
}

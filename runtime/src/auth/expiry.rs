//! Ending sessions at the moment they expire. A live query re-runs only when
//! a commit touches what it read, and nothing writes a session row when its
//! time runs out — so a subscription opened with a token would keep its last
//! result past `exp`. Every session a token is presented for is remembered
//! here with its expiry, and one task deletes each session row when its time
//! comes: the same write as sign-out, which re-runs every live query that
//! relied on it (they then fail with `UNAUTHENTICATED`), on every connection
//! and node, and keeps expired rows from piling up.
//!
//! Memory: one entry per distinct live session presented since the start, at
//! most [`MAX_TRACKED`]; past that the latest-expiring are not tracked (they
//! still fail at their next re-run, as before). A restart forgets the set;
//! the sessions' clients re-present their tokens when they reconnect.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use livebase_schema::{DocumentId, Value};
use tokio::sync::Notify;

use super::users::now_ms;
use crate::database::Database;

/// Most sessions waited on at once.
pub const MAX_TRACKED: usize = 1_000_000;
/// Longest sleep between checks that the server is still running.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Sleep between checks whether a node that is not the store's writer has
/// become it.
const FOLLOWER_SLEEP: Duration = Duration::from_secs(1);

/// The sessions to end, by expiry, and the database to end them in.
pub struct Expiry {
    due: Mutex<Due>,
    wake: Arc<Notify>,
    db: Database,
}

#[derive(Default)]
struct Due {
    /// (expiresAt in ms, session id), earliest first.
    order: BTreeSet<(u64, String)>,
    known: HashSet<String>,
}

impl Expiry {
    pub fn new(db: Database) -> Expiry {
        Expiry {
            due: Mutex::default(),
            wake: Arc::default(),
            db,
        }
    }

    /// Remembers that `session` ends at `expires_at_ms`.
    pub fn watch(&self, session: &str, expires_at_ms: f64) {
        let Ok(mut due) = self.due.lock() else {
            return;
        };
        if due.known.contains(session) || due.known.len() >= MAX_TRACKED {
            return;
        }
        let at = expires_at_ms.max(0.0) as u64;
        let earliest = due.order.first().map(|(t, _)| *t);
        due.known.insert(session.to_string());
        due.order.insert((at, session.to_string()));
        if earliest.is_none_or(|e| at < e) {
            self.wake.notify_one();
        }
    }

    /// The sessions due by `now`, taken out; and how long until the next.
    fn take_due(&self, now: u64) -> (Vec<String>, Option<Duration>) {
        let Ok(mut due) = self.due.lock() else {
            return (Vec::new(), None);
        };
        let mut taken = Vec::new();
        while let Some((at, _)) = due.order.first() {
            if *at > now {
                break;
            }
            if let Some((_, sid)) = due.order.pop_first() {
                due.known.remove(&sid);
                taken.push(sid);
            }
        }
        let next = due
            .order
            .first()
            .map(|(at, _)| Duration::from_millis(at - now));
        (taken, next)
    }
}

/// Deletes each watched session row once its expiry has passed, until the
/// [`Expiry`] is dropped (the server stopped). Between rounds it holds
/// neither the [`Expiry`] nor its database, so a stopped server's store is
/// not kept open by a sleeping task.
pub async fn run(expiry: Weak<Expiry>) {
    let Some(wake) = expiry.upgrade().map(|e| e.wake.clone()) else {
        return;
    };
    loop {
        let Some(watch) = expiry.upgrade() else {
            return;
        };
        if !watch.db.is_writable() {
            // Another node is the writer (this one may become it): the
            // sessions stay watched until this node can end them.
            drop(watch);
            let _ = tokio::time::timeout(FOLLOWER_SLEEP, wake.notified()).await;
            continue;
        }
        let (due, next) = watch.take_due(now_ms() as u64);
        let db = watch.db.clone();
        drop(watch);
        for sid in due {
            let Some(id) = DocumentId::parse_in(&sid, super::tables::SESSIONS) else {
                continue;
            };
            let ended = db
                .mutate(move |tx| {
                    let expired = tx.get(&id)?.is_some_and(|s| {
                        s.get("expiresAt")
                            .and_then(Value::as_f64)
                            .is_none_or(|t| t <= now_ms())
                    });
                    if expired {
                        tx.delete(&id)?;
                    }
                    Ok(expired)
                })
                .await;
            if let Err(e) = ended {
                tracing::warn!("ending the expired session {sid}: {e}");
            }
        }
        drop(db);
        // Sleep until the next expiry (a millisecond past it, so the row is
        // expired when checked), a newly watched earlier one, or a check
        // that the server still runs.
        let sleep = next.map_or(MAX_SLEEP, |d| (d + Duration::from_millis(1)).min(MAX_SLEEP));
        let _ = tokio::time::timeout(sleep, wake.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_come_due_in_expiry_order_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Expiry {
            due: Mutex::default(),
            wake: Arc::default(),
            db: crate::database::Database::open(
                Arc::new(
                    crate::store::sqlite::SqlitePersistence::open(dir.path().join("db"))
                        .expect("a store"),
                ),
                livebase_schema::Schema::default(),
            )
            .expect("a database"),
        };
        e.watch("sessions_b", 2_000.0);
        e.watch("sessions_a", 1_000.0);
        e.watch("sessions_a", 1_000.0);
        let (due, next) = e.take_due(1_500);
        assert_eq!(due, ["sessions_a"]);
        assert_eq!(next, Some(Duration::from_millis(500)));
        let (due, next) = e.take_due(5_000);
        assert_eq!(due, ["sessions_b"]);
        assert_eq!(next, None);
    }
}

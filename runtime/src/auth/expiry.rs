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
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
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

/// Where a node that may not commit (a follower) sends the sessions due to
/// end, for the writer to end them; whether they got there.
pub type EndElsewhere = Arc<dyn Fn(Vec<String>) -> BoxFuture<'static, bool> + Send + Sync>;

/// The sessions to end, by expiry, and the database to end them in.
pub struct Expiry {
    due: Mutex<Due>,
    wake: Arc<Notify>,
    db: Database,
    /// Set on one of several nodes: while it is not the writer, due
    /// sessions go there.
    elsewhere: OnceLock<EndElsewhere>,
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
            elsewhere: OnceLock::new(),
        }
    }

    /// Sends due sessions to `send` whenever this node may not commit (the
    /// first call wins).
    pub fn end_elsewhere(&self, send: EndElsewhere) {
        let _ = self.elsewhere.set(send);
    }

    /// Watches `sessions` again, to be ended at `at_ms` (a hand-off that did
    /// not get through).
    fn watch_again(&self, sessions: Vec<String>, at_ms: u64) {
        let Ok(mut due) = self.due.lock() else {
            return;
        };
        for sid in sessions {
            if due.known.insert(sid.clone()) {
                due.order.insert((at_ms, sid));
            }
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
        let elsewhere = watch.elsewhere.get().cloned();
        if !watch.db.is_writable() && elsewhere.is_none() {
            // Another node is the writer (this one may become it): the
            // sessions stay watched until this node can end them.
            drop(watch);
            let _ = tokio::time::timeout(FOLLOWER_SLEEP, wake.notified()).await;
            continue;
        }
        let now = now_ms() as u64;
        let (due, next) = watch.take_due(now);
        let db = watch.db.clone();
        drop(watch);
        match elsewhere {
            // A follower: the writer ends them (and checks they are due).
            Some(send) if !db.is_writable() && !due.is_empty() => {
                if !send(due.clone()).await {
                    // Not reached: again in a second.
                    if let Some(watch) = expiry.upgrade() {
                        watch.watch_again(due, now + FOLLOWER_SLEEP.as_millis() as u64);
                    }
                }
            }
            _ => {
                end_expired(&db, due).await;
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

/// Ends each session of `ids` whose expiry has passed: deletes its row, the
/// write that re-runs the live queries that relied on it. One not yet due,
/// or gone already, is left alone. Returns how many were ended.
pub async fn end_expired(db: &Database, ids: Vec<String>) -> usize {
    let mut ended = 0;
    for sid in ids {
        let Some(id) = DocumentId::parse_in(&sid, super::tables::SESSIONS) else {
            continue;
        };
        let done = db
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
        match done {
            Ok(c) if c.value => ended += 1,
            Ok(_) => {}
            Err(e) => tracing::warn!("ending the expired session {sid}: {e}"),
        }
    }
    ended
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
            elsewhere: OnceLock::new(),
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

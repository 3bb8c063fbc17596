//! The node lease: which node writes to a schema. A node claims it with a
//! session advisory lock, held by a session of its own (the lock session),
//! and moves the schema's epoch on; every commit is fenced by that epoch.
//!
//! A lock lasts as long as its session, so a writer that stops — SIGSTOP, a
//! hung host, a cut network — must lose its session quickly for another
//! node to take over. The lock session is set up so that it does:
//! `idle_session_timeout` is [`LEASE_TIMEOUT`], so the server ends it once
//! it has heard nothing for that long; a heartbeat thread queries it every
//! quarter of that (which also checks the lock is still held); TCP
//! keepalives and a TCP user timeout on both sides end it when the network
//! goes silent. A write transaction of a node under a lease has
//! `idle_in_transaction_session_timeout` of [`LEASE_TIMEOUT`] too: a writer
//! stopped mid-transaction would otherwise hold the row lock a claim waits
//! for. When the heartbeat finds the session gone or the lock lost,
//! [`PostgresPersistence::lease_lost`] turns true for good: the node must
//! step down (its commits are refused from then on), and a new store must
//! be opened to claim again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use postgres::Client;

use crate::{drop_client, engine_error, next_epoch, off_runtime, pg, PostgresPersistence, Result};

/// How long a node that stopped answering keeps its claim: the server ends
/// its lock session after this long without a word from it, which frees
/// the lock for another node. The heartbeat runs four times as often.
pub const LEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the session still holds its advisory lock (it holds no other).
const HELD_SQL: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks
     WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted)";

/// The session holding the schema's advisory lock: the lock lasts as long as
/// it. Dropping this ends the session, and with it the heartbeat thread.
#[derive(Default)]
pub(crate) struct NodeLock {
    client: Option<Client>,
    /// Dropped with the lock: the heartbeat thread then stops.
    stop: Option<mpsc::Sender<()>>,
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        self.stop.take();
        drop_client(self.client.take());
    }
}

/// The `application_name` of the session holding the lease on `schema`, as
/// `pg_stat_activity` shows it (PostgreSQL keeps its first 63 bytes).
pub fn lock_session_name(schema: &str) -> String {
    format!("livebase node {schema}")
}

impl PostgresPersistence {
    /// Makes this process the one node serving the schema, until this
    /// store (and every clone) is dropped or its lease is lost
    /// ([`PostgresPersistence::lease_lost`]): [`try_claim_node`] once, and
    /// an error saying so when another node holds the schema (each node
    /// re-runs live queries only for its own commits unless it reads the
    /// commit log, so a second writer is refused at start). Export, import
    /// and the data check do not claim it.
    ///
    /// [`try_claim_node`]: PostgresPersistence::try_claim_node
    pub fn claim_node(&self) -> Result<()> {
        if self.try_claim_node()? {
            return Ok(());
        }
        Err(engine_error(format!(
            "another livebase node is serving schema `{}` of this database; \
             run one node per database (several nodes are not supported yet)",
            self.schema
        )))
    }

    /// Tries once to claim the schema: `Ok(true)` when this node holds it
    /// (now or already), `Ok(false)` when another node does — a standby
    /// polls this to take over once the holder's lease ends. A claim moves
    /// the schema's epoch on, which fences every commit of the node that
    /// held it before, and starts the heartbeat that keeps the lease.
    /// A node whose lease was lost cannot claim again (an error). Once it
    /// has the lock, a claim waits for a commit of the previous writer in
    /// progress (at most [`LEASE_TIMEOUT`] when that writer has stopped,
    /// since the server then ends its transaction); past twice that it
    /// fails with an error, releasing the lock, and may be tried again.
    pub fn try_claim_node(&self) -> Result<bool> {
        let mut node = self.node.lock().unwrap_or_else(|e| e.into_inner());
        if self.lease_lost() {
            return Err(engine_error(format!(
                "this node's lease on schema `{}` was lost; it claims nothing more \
                 (open the store again to stand for it)",
                self.schema
            )));
        }
        if node.client.is_some() {
            return Ok(true);
        }
        let mut client = self.lock_client()?;
        let key = format!("livebase node {}", self.schema);
        let claimed = off_runtime(|| {
            let got = client
                .query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key])
                .map_err(pg)?
                .get::<_, bool>(0);
            if got {
                next_epoch(&mut client).map(Some)
            } else {
                Ok(None)
            }
        });
        match claimed {
            Ok(Some(epoch)) => {
                self.epoch.store(epoch, Ordering::SeqCst);
                let (stop, stopped) = mpsc::channel();
                node.client = Some(client);
                node.stop = Some(stop);
                let (weak, lost) = (Arc::downgrade(&self.node), self.lease_lost.clone());
                let schema = self.schema.clone();
                std::thread::Builder::new()
                    .name("livebase-lease".into())
                    .spawn(move || heartbeat(weak, lost, stopped, &schema))
                    .map_err(|e| engine_error(format!("starting the lease's heartbeat: {e}")))?;
                Ok(true)
            }
            Ok(None) => {
                drop_client(Some(client));
                Ok(false)
            }
            Err(e) => {
                drop_client(Some(client));
                Err(e)
            }
        }
    }

    /// True once this node's lease ended — its lock session was closed (the
    /// server ended it after [`LEASE_TIMEOUT`] of silence, an administrator
    /// terminated it, the network failed) or its lock was gone — and from
    /// then on. Such a node must stop serving as the writer: another may
    /// have claimed the schema, and its own commits are refused.
    pub fn lease_lost(&self) -> bool {
        self.lease_lost.load(Ordering::SeqCst)
    }

    /// A session for the lock: named so an administrator can tell it, and
    /// ended by the server (`idle_session_timeout`) or either side's TCP
    /// stack (keepalives, user timeout) once silent for [`LEASE_TIMEOUT`].
    fn lock_client(&self) -> Result<Client> {
        // Whole seconds (the socket options take no fraction, and 0 is
        // refused): a probe after a second of silence, one a second after.
        let probe = Duration::from_secs((LEASE_TIMEOUT / 4).as_secs().max(1));
        let mut config = self.config.clone();
        config
            .application_name(&lock_session_name(&self.schema))
            .keepalives(true)
            .keepalives_idle(probe)
            .keepalives_interval(probe)
            .keepalives_retries(3)
            .tcp_user_timeout(LEASE_TIMEOUT)
            .connect_timeout(LEASE_TIMEOUT);
        let mut client = self.client_with(&config)?;
        let timeout_ms = LEASE_TIMEOUT.as_millis();
        let idle = probe.as_secs();
        let set = off_runtime(|| {
            client
                .batch_execute(&format!(
                    "SET idle_session_timeout = {timeout_ms};
                     SET tcp_keepalives_idle = {idle};
                     SET tcp_keepalives_interval = {idle};
                     SET tcp_keepalives_count = 3;"
                ))
                .map_err(pg)
        });
        match set {
            Ok(()) => Ok(client),
            Err(e) => {
                drop_client(Some(client));
                Err(e)
            }
        }
    }
}

/// Queries the lock session every quarter of [`LEASE_TIMEOUT`] (which keeps
/// the server's idle timeout from ending it) until the lock is released;
/// when the session is gone or no longer holds the lock, marks the lease
/// lost and closes the session.
fn heartbeat(
    node: Weak<Mutex<NodeLock>>,
    lost: Arc<AtomicBool>,
    stop: mpsc::Receiver<()>,
    schema: &str,
) {
    loop {
        match stop.recv_timeout(LEASE_TIMEOUT / 4) {
            Err(RecvTimeoutError::Timeout) => {}
            // The lock was dropped (the last clone of the store).
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        let mut node = node.lock().unwrap_or_else(|e| e.into_inner());
        let Some(client) = node.client.as_mut() else {
            return;
        };
        let held = client
            .query_one(HELD_SQL, &[])
            .map(|row| row.get::<_, bool>(0));
        let why = match held {
            Ok(true) => continue,
            Ok(false) => "its lock session no longer holds the lock".to_string(),
            Err(e) => format!("its lock session failed: {e}"),
        };
        tracing::error!(
            schema,
            "this node lost its lease on the database: {why}; it must step down"
        );
        lost.store(true, Ordering::SeqCst);
        node.stop.take();
        drop_client(node.client.take());
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livebase_schema::Timestamp;
    use livebase_store::Persistence;
    use livebase_testkit::postgres::{server_url, unique_name};
    use std::time::Instant;

    /// A writer that stops (here: its heartbeat cannot run, as under
    /// SIGSTOP) loses its lock when the server ends its silent session,
    /// and learns so once it runs again.
    #[test]
    fn a_writer_that_stops_loses_its_lease_to_a_standby() {
        let Some(url) = server_url("a_writer_that_stops_loses_its_lease") else {
            return;
        };
        let schema = unique_name("lease");
        let first = PostgresPersistence::open_schema(&url, &schema, None).unwrap();
        let second = PostgresPersistence::open_schema(&url, &schema, None).unwrap();
        assert!(first.try_claim_node().unwrap());
        // Stopped mid-transaction, holding the row lock a claim waits for.
        let mut writer = first.connect().unwrap();
        writer.begin_write().unwrap();
        let frozen = first.node.lock().unwrap();
        let deadline = Instant::now() + LEASE_TIMEOUT * 12;
        while !second.try_claim_node().unwrap() {
            assert!(
                Instant::now() < deadline,
                "the stopped writer kept its lock"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(second.epoch(), 2);
        assert!(!first.lease_lost(), "it has not run since");
        writer
            .commit(Timestamp::new(1))
            .expect_err("its transaction was ended");
        drop(frozen);
        let deadline = Instant::now() + LEASE_TIMEOUT * 12;
        while !first.lease_lost() {
            assert!(Instant::now() < deadline, "the writer never learnt");
            std::thread::sleep(Duration::from_millis(50));
        }
        drop((first, second));
        livebase_testkit::postgres::drop_schema(&url, &schema);
    }
}

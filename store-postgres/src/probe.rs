//! The PostgreSQL server's own limits, measured without livebase in the way:
//! what the benchmark sets its PostgreSQL figures beside. A bare round trip
//! (`SELECT 1`), a `NOTIFY` wake-up (how a node learns of a commit), a
//! single-row insert transaction (what one commit costs at the least), and
//! the settings that decide the last (`fsync`, `synchronous_commit`). The
//! benchmark names no `postgres` crate itself (see ARCHITECTURE.md), so these
//! live here.
//!
//! Each call opens sessions of its own, as [`PostgresPersistence`] would
//! (`sslmode=require` over TLS with Mozilla's roots), and closes them at the
//! end. Like the store's calls, a call from async code runs on a thread of
//! its own ([`off_runtime`]); a benchmark still calls them from a blocking
//! task, since they block for as long as they measure.

use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use postgres::config::SslMode;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

use crate::{engine_error, off_runtime, pg, tls_connector, Result};

/// How long a wake-up may take before [`notify_wakeups`] gives up: far past
/// any real one, so only a broken session ends the measurement.
const WAKEUP_LIMIT: Duration = Duration::from_secs(10);

/// `n` round trips of `SELECT 1` on one session, each timed from sending the
/// query to having its row.
pub fn round_trips(url: &str, n: usize) -> Result<Vec<Duration>> {
    off_runtime(|| {
        let mut client = connect(url)?;
        let select = client.prepare("SELECT 1").map_err(pg);
        let samples = select.and_then(|select| {
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let t0 = Instant::now();
                client.query_one(&select, &[]).map_err(pg)?;
                samples.push(t0.elapsed());
            }
            Ok(samples)
        });
        drop(client);
        samples
    })
}

/// `n` wake-ups: one session `LISTEN`s, blocked on its socket in a thread of
/// its own as a node's log reader is; another sends `NOTIFY`. Each sample is
/// the time from sending the `NOTIFY` to the listening thread holding it
/// (the notifier's own round trip not awaited first).
pub fn notify_wakeups(url: &str, n: usize) -> Result<Vec<Duration>> {
    off_runtime(|| {
        let channel = format!("livebase_probe_{}", rand::random::<u64>());
        let mut listener = connect(url)?;
        listener
            .batch_execute(&format!("LISTEN \"{channel}\""))
            .map_err(pg)?;
        let mut notifier = connect(url)?;
        // The listener reports when each wake-up reached it; the notifier
        // waits for that before sending the next, so wake-ups never queue.
        let (woke_tx, woke) = mpsc::channel::<Result<Instant>>();
        let listening = std::thread::spawn(move || {
            for _ in 0..n {
                let got = listener
                    .notifications()
                    .timeout_iter(WAKEUP_LIMIT)
                    .next()
                    .map_err(pg)
                    .and_then(|note| {
                        note.map(|_| Instant::now())
                            .ok_or_else(|| engine_error("no NOTIFY arrived in 10 s".into()))
                    });
                let failed = got.is_err();
                if woke_tx.send(got).is_err() || failed {
                    break;
                }
            }
            drop(listener);
        });
        let notify = format!("NOTIFY \"{channel}\"");
        let mut wake = || -> Result<Duration> {
            let t0 = Instant::now();
            notifier.batch_execute(&notify).map_err(pg)?;
            let at = woke
                .recv()
                .map_err(|_| engine_error("the listening thread ended".into()))??;
            Ok(at.saturating_duration_since(t0))
        };
        let measured = (0..n).map(|_| wake()).collect();
        drop(notifier);
        drop(woke);
        let _ = listening.join();
        measured
    })
}

/// Commits of `n` single-row insert transactions (autocommit `INSERT`s into
/// a table of the schema `schema`, made for the purpose and dropped after),
/// each timed: the least a commit costs on this server.
pub fn insert_commits(url: &str, schema: &str, n: usize) -> Result<Vec<Duration>> {
    let table = format!("\"{}\".livebase_probe_inserts", schema.replace('"', "\"\""));
    off_runtime(|| {
        let mut client = connect(url)?;
        let measured = time_inserts(&mut client, schema, &table, n);
        drop(client);
        measured
    })
}

fn time_inserts(client: &mut Client, schema: &str, table: &str, n: usize) -> Result<Vec<Duration>> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\";
                     DROP TABLE IF EXISTS {table};
                     CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)",
            schema.replace('"', "\"\"")
        ))
        .map_err(pg)?;
    let insert = client
        .prepare(&format!("INSERT INTO {table} (v) VALUES ($1)"))
        .map_err(pg)?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let v = format!("row {i}");
        let t0 = Instant::now();
        client.execute(&insert, &[&v]).map_err(pg)?;
        samples.push(t0.elapsed());
    }
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .map_err(pg)?;
    Ok(samples)
}

/// The server's version and the settings that decide what a commit waits
/// for: `server_version`, `fsync`, `synchronous_commit`, as `(name, value)`.
pub fn server_settings(url: &str) -> Result<Vec<(String, String)>> {
    off_runtime(|| {
        let mut client = connect(url)?;
        let mut settings = Vec::new();
        for name in ["server_version", "fsync", "synchronous_commit"] {
            let row = client
                .query_one("SELECT current_setting($1)", &[&name])
                .map_err(pg)?;
            settings.push((name.to_string(), row.get::<_, String>(0)));
        }
        drop(client);
        Ok(settings)
    })
}

/// Drops the schema `schema` and everything in it: what a measurement that
/// made a schema of its own does when it is done. Nothing may use it then.
pub fn drop_schema(url: &str, schema: &str) -> Result<()> {
    off_runtime(|| {
        let mut client = connect(url)?;
        let dropped = client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                schema.replace('"', "\"\"")
            ))
            .map_err(pg);
        drop(client);
        dropped
    })
}

/// A session with the database at `url`, over TLS when it says
/// `sslmode=require`, as the store connects. Called off the runtime.
fn connect(url: &str) -> Result<Client> {
    let config = postgres::Config::from_str(url)
        .map_err(|e| engine_error(format!("the database URL: {e}")))?;
    match config.get_ssl_mode() {
        SslMode::Require => config.connect(tls_connector(None)?),
        _ => config.connect(NoTls),
    }
    .map_err(pg)
}

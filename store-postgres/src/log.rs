//! The commit log on PostgreSQL: the `commit_log` table the writer appends
//! each commit's write set to, in the commit's own transaction, and
//! [`PostgresCommitLog`], how a node reads it.
//!
//! The writer's commit inserts its rows in the statement that stamps the
//! commit (one round trip for both, with the transaction's buffered writes), and sends `NOTIFY` on the schema's
//! channel ([`log_channel`]) with its `COMMIT` (one round trip again); the
//! server delivers it only once the commit is visible, so a reader woken by
//! it finds the rows. Rows older than [`LOG_RETENTION`] are trimmed by the
//! writer, in a commit, at most every [`TRIM_EVERY_COMMITS`] commits or
//! [`TRIM_INTERVAL`]; `meta`'s `log_floor` keeps the last trimmed
//! timestamp, so a reader that fell behind it is told of the gap instead of
//! missing commits silently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use livebase_schema::Timestamp;
use livebase_store::persistence::{CommitLog, LogRead};
use livebase_store::readset::{Commit, WriteSet};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Statement};

use crate::buffer::Writes;
use crate::{
    as_bigint, connection_lost, drop_client, engine_error, off_runtime, pg, PostgresConnection,
    PostgresPersistence, Result,
};
use livebase_store::StoreError;

/// How long the log keeps a commit, by commit timestamps (nanoseconds since
/// the Unix epoch): a node that has not read for longer learns of a gap.
pub const LOG_RETENTION: Duration = Duration::from_secs(10 * 60);

/// The writer trims the log at most once per this many commits …
pub const TRIM_EVERY_COMMITS: u32 = 1000;

/// … or once per this long, whichever comes first.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// The channel the writer's commits are announced on: one per schema.
/// (PostgreSQL keeps an identifier's first 63 bytes; two schemas whose
/// names agree that far share a channel, which costs only wake-ups.)
pub fn log_channel(schema: &str) -> String {
    format!("livebase_commits_{schema}")
}

/// The `application_name` of a node's session reading the log of `schema`,
/// as `pg_stat_activity` shows it (PostgreSQL keeps its first 63 bytes).
pub fn log_session_name(schema: &str) -> String {
    format!("livebase log {schema}")
}

/// Inserts the transaction's log rows (`$3`, `$4`: timestamps and write
/// sets) and stamps the commit (`$1`), fenced by the epoch `$2` when this
/// node claimed the schema (0: not claimed, no fence). The insert runs even
/// when the fence refuses the stamp: the transaction then rolls back.
const STAMP_LOGGED: &str = "WITH logged AS (
        INSERT INTO commit_log (ts, epoch, writes)
        SELECT l.ts, $2::bigint, l.writes FROM unnest($3::bigint[], $4::bytea[]) AS l(ts, writes)
    )
    UPDATE meta SET value = $1 WHERE name = 'last_ts'
      AND ($2::bigint = 0 OR (SELECT value FROM meta WHERE name = 'epoch') = $2::bigint)";

/// Deletes the log's rows before `$1` and raises `log_floor` to the last
/// of them (when there was one).
const TRIM: &str = "WITH trimmed AS (DELETE FROM commit_log WHERE ts < $1 RETURNING ts)
    INSERT INTO meta (name, value) SELECT 'log_floor', max(ts) FROM trimmed HAVING count(*) > 0
    ON CONFLICT (name) DO UPDATE SET value = GREATEST(meta.value, excluded.value)";

/// The log's floor and the commits after `$1` (at most `$2`), in one
/// statement, so one snapshot: a trim cannot fall between the two. Always
/// one row at least (the floor; `ts` is null when no commit follows), and
/// none of the commits when `$1` is below the floor.
///
/// Why `ts > $1 ORDER BY ts` never shows a later commit before an earlier
/// one: commits are serial. A writer holds the `last_ts` row lock from its
/// first statement to its commit, and a claim takes that lock before moving
/// the epoch, so a commit begins only after the one before it is visible
/// (PostgreSQL releases row locks after a commit becomes visible); and each
/// commit's timestamp is above the last one's. So a snapshot that holds
/// commit `t` holds every commit before `t`, and a reader that has read up
/// to `t` will never find a commit at or before `t` appear later.
const READ: &str = "SELECT f.floor, l.ts, l.writes
    FROM (SELECT COALESCE((SELECT value FROM meta WHERE name = 'log_floor'), 0) AS floor) f
    LEFT JOIN LATERAL (
        SELECT ts, writes FROM commit_log WHERE ts > $1 AND $1 >= f.floor ORDER BY ts LIMIT $2
    ) l ON true
    ORDER BY l.ts";

/// When a connection's writer last trimmed the log.
#[derive(Default)]
pub(crate) struct TrimSchedule {
    commits: u32,
    last: Option<Instant>,
}

impl TrimSchedule {
    /// Counts a logged commit; true when it should trim (the first of the
    /// connection does, then every [`TRIM_EVERY_COMMITS`] or
    /// [`TRIM_INTERVAL`]).
    fn due(&mut self) -> bool {
        self.commits += 1;
        let due = self.last.is_none_or(|last| {
            self.commits >= TRIM_EVERY_COMMITS || last.elapsed() >= TRIM_INTERVAL
        });
        if due {
            self.commits = 0;
            self.last = Some(Instant::now());
        }
        due
    }
}

impl PostgresConnection {
    /// Stamps commit `ts` with its log rows (trimming the log first when
    /// due) and, when given, the transaction's buffered writes, all in one
    /// statement; returns the rows the stamp updated (0: fenced).
    pub(crate) fn stamp_logged(
        &mut self,
        ts: Timestamp,
        epoch: i64,
        log: Vec<(i64, Vec<u8>)>,
        writes: Option<Writes>,
    ) -> Result<u64> {
        let ts = ts.get() as i64;
        if !log.is_empty() && self.trim.due() {
            let retention = LOG_RETENTION.as_nanos() as i64;
            self.execute(TRIM, &[&ts.saturating_sub(retention)])?;
        }
        if let Some(writes) = writes {
            return self.stamp_with_writes(writes, ts, epoch, log);
        }
        let (stamps, writes): (Vec<i64>, Vec<Vec<u8>>) = log.into_iter().unzip();
        self.execute(STAMP_LOGGED, &[&ts, &epoch, &stamps, &writes])
    }
}

/// A node's reader of the commit log: a session of its own that `LISTEN`s
/// on the schema's channel (again after connecting anew).
pub struct PostgresCommitLog {
    source: PostgresPersistence,
    /// `None` when connecting again failed (the next read tries again).
    client: Option<Client>,
    read: Option<Statement>,
}

impl std::fmt::Debug for PostgresCommitLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCommitLog")
            .field("store", &self.source.describe())
            .finish()
    }
}

impl PostgresCommitLog {
    pub(crate) fn open(source: &PostgresPersistence) -> Result<PostgresCommitLog> {
        let mut log = PostgresCommitLog {
            source: source.clone(),
            client: None,
            read: None,
        };
        log.connect()?;
        Ok(log)
    }

    /// Connects and listens (before any read, so no announcement of a
    /// commit the read does not see is missed).
    fn connect(&mut self) -> Result<()> {
        drop_client(self.client.take());
        self.read = None;
        let mut config = self.source.config.clone();
        config.application_name(&log_session_name(&self.source.schema));
        let mut client = self.source.client_with(&config)?;
        let channel = log_channel(&self.source.schema);
        let listened = off_runtime(|| {
            client.batch_execute(&format!("LISTEN \"{channel}\""))?;
            client.prepare(READ)
        });
        match listened {
            Ok(read) => {
                self.client = Some(client);
                self.read = Some(read);
                Ok(())
            }
            Err(e) => {
                drop_client(Some(client));
                Err(pg(e))
            }
        }
    }

    /// One read, connecting again once when the session was lost.
    fn read(&mut self, after: Timestamp, limit: usize) -> Result<LogRead> {
        if self.client.is_none() {
            self.connect()?;
        }
        match self.read_once(after, limit) {
            Err(e) if self.client.as_ref().is_none_or(Client::is_closed) || connection_lost(&e) => {
                tracing::warn!(store = %self.source.describe(), "the commit log's connection was closed; connecting again");
                self.connect()?;
                self.read_once(after, limit)
            }
            read => read,
        }
    }

    fn read_once(&mut self, after: Timestamp, limit: usize) -> Result<LogRead> {
        let (Some(client), Some(read)) = (self.client.as_mut(), self.read.as_ref()) else {
            return Err(engine_error("not connected".into()));
        };
        let after = i64::try_from(after.get()).unwrap_or(i64::MAX);
        let rows = off_runtime(|| {
            // Announcements of commits this read will see are spent.
            {
                let mut notifications = client.notifications();
                let mut pending = notifications.iter();
                while let Ok(Some(_)) = pending.next() {}
            }
            client.query(read, &[&after, &as_bigint(limit)])
        })
        .map_err(pg)?;
        let floor: i64 = rows.first().map_or(0, |r| r.get(0));
        if after < floor {
            return Ok(LogRead::Gap {
                through: Timestamp::new(floor as u64),
            });
        }
        let mut commits = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(ts) = row.get::<_, Option<i64>>(1) else {
                continue;
            };
            let bytes: &[u8] = row.get(2);
            let writes = WriteSet::decode(bytes)
                .map_err(|e| StoreError::Corrupt(format!("the commit log at {ts}: {e}")))?;
            commits.push(Commit {
                ts: Timestamp::new(ts as u64),
                writes: Arc::new(writes),
            });
        }
        Ok(LogRead::Commits(commits))
    }

    /// Waits up to `wait` for an announcement (a failed session ends the
    /// wait: the next read connects again).
    fn wait(&mut self, wait: Duration) {
        if let Some(client) = self.client.as_mut() {
            off_runtime(|| {
                let mut notifications = client.notifications();
                let _ = notifications.timeout_iter(wait).next();
            });
        }
    }
}

impl PostgresCommitLog {
    /// Tells the node's kept ranges of what was read after `after`: each
    /// commit's writes, in order, and then that it is known (see
    /// `livebase_store::persistence::ranges::RecentWrites`), so a follower's
    /// connections keep ranges too. If commits up to `after` are not all
    /// known (the first read, or one after this node's own commits were no
    /// longer recorded), or the log was trimmed past them, every range is
    /// dropped first.
    fn learn(&self, after: Timestamp, read: &LogRead) {
        let recent = &self.source.recent;
        match read {
            LogRead::Commits(commits) if commits.is_empty() => {}
            LogRead::Commits(commits) => {
                if after > recent.through() {
                    recent.restart_at(after);
                }
                for commit in commits {
                    recent.learn(commit.ts, commit.writes.clone());
                }
            }
            LogRead::Gap { through } => recent.restart_at(*through),
        }
    }
}

impl CommitLog for PostgresCommitLog {
    fn read_after(&mut self, after: Timestamp, limit: usize, wait: Duration) -> Result<LogRead> {
        let read = match self.read(after, limit)? {
            LogRead::Commits(commits) if commits.is_empty() && !wait.is_zero() && limit > 0 => {
                self.wait(wait);
                self.read(after, limit)?
            }
            read => read,
        };
        self.learn(after, &read);
        Ok(read)
    }
}

impl Drop for PostgresCommitLog {
    fn drop(&mut self) {
        drop_client(self.client.take());
    }
}

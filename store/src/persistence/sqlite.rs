//! The SQLite storage engine: one database file in WAL mode, `synchronous=FULL`
//! so a commit that returned is on disk, readers on their own connections seeing
//! WAL snapshots while the single writer proceeds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use livebase_schema::{DocumentId, Object, Timestamp, Value};
use rusqlite::{params, Connection, OptionalExtension};

use super::decoded::DecodedDocuments;
use super::ranges::{RangeCache, RecentWrites, Snapshot};
use super::wal::{self, Checkpointer, HeldSnapshot, Restarts, WalState};
use super::{Document, MutationOutcome, Order, Persistence, StoreConnection};
use crate::error::{StoreError, StoreResult as Result};
use crate::readset::WriteSet;

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY NOT NULL,
    creation_time REAL NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_entries (
    key BLOB PRIMARY KEY NOT NULL,
    doc_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mutation_outcomes (
    session_id TEXT NOT NULL,
    request_id INTEGER NOT NULL,
    fingerprint BLOB NOT NULL,
    ts INTEGER NOT NULL,
    path TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (session_id, request_id, fingerprint)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mutation_outcomes_by_ts ON mutation_outcomes (ts);
";

/// Before outcomes had their own table they were documents of this table;
/// opening a file from then drops them (they only matter for a few seconds
/// after a disconnect) so that no document is left without a table.
const LEGACY_OUTCOME_TABLE: &str = "_mutation_outcomes";

const SCAN_ASC: &str = "SELECT e.key, d.id, d.creation_time, d.body FROM index_entries e
     JOIN documents d ON d.id = e.doc_id
     WHERE e.key >= ?1 AND e.key < ?2 ORDER BY e.key ASC LIMIT ?3";
const SCAN_DESC: &str = "SELECT e.key, d.id, d.creation_time, d.body FROM index_entries e
     JOIN documents d ON d.id = e.doc_id
     WHERE e.key >= ?1 AND e.key < ?2 ORDER BY e.key DESC LIMIT ?3";

/// The database file's name in a data folder (`.livebase/livebase.sqlite3`).
pub const DATABASE_FILE: &str = "livebase.sqlite3";

/// How long a connection waits for a lock another holds (the writer's, a
/// checkpoint's) before its statement fails with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A SQLite database file.
#[derive(Clone, Debug)]
pub struct SqlitePersistence {
    path: PathBuf,
    /// The latest commits' write sets, shared by every connection to this
    /// file in the process (see [`super::ranges`]).
    recent: Arc<RecentWrites>,
    /// What the checkpointer and the writer share (see [`super::wal`]).
    wal: Arc<WalState>,
    /// Stops the checkpointer when the last handle goes.
    _checkpointer: Arc<Checkpointer>,
}

impl SqlitePersistence {
    /// Opens (creating if needed) the database at `path` and its tables.
    pub fn open(path: impl AsRef<Path>) -> Result<SqlitePersistence> {
        let path = path.as_ref().to_path_buf();
        // SQLite would create the file with the umask's mode (0644 as a
        // rule), and its -wal and -shm with the mode of the database file:
        // created private first, all three are.
        match crate::files::create_private_file(&path) {
            Err(source) if source.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Create { path, source })
            }
            _ => {}
        }
        let conn = open_connection(&path)?;
        drop_unbound_outcomes(&conn)?;
        conn.execute_batch(SCHEMA_SQL)?;
        drop_legacy_outcomes(&conn)?;
        let wal = Arc::new(WalState::default());
        let checkpointer = Arc::new(Checkpointer::start(open_connection(&path)?, wal.clone())?);
        Ok(SqlitePersistence {
            recent: recent_writes_of(&path),
            path,
            wal,
            _checkpointer: checkpointer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Outcomes stored before they were bound to their caller (keyed by session
/// and request id alone) could answer anyone: a file from then drops them
/// with their table, which is made again bound. They only matter for the
/// few seconds of a reconnect.
fn drop_unbound_outcomes(conn: &Connection) -> Result<()> {
    let (columns, bound): (i64, i64) = conn.query_row(
        "SELECT count(*), count(*) FILTER (WHERE name = 'fingerprint')
         FROM pragma_table_info('mutation_outcomes')",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if columns > 0 && bound == 0 {
        conn.execute_batch("DROP TABLE mutation_outcomes")?;
        tracing::info!("dropped the mutation outcomes stored before they were bound to a caller");
    }
    Ok(())
}

fn drop_legacy_outcomes(conn: &Connection) -> Result<()> {
    // Ids are `<table>_<suffix>`; `` ` `` is the character after `_`.
    let first = format!("{LEGACY_OUTCOME_TABLE}_");
    let past = format!("{LEGACY_OUTCOME_TABLE}`");
    let exists: Option<String> = conn
        .query_row(
            "SELECT id FROM documents WHERE id >= ?1 AND id < ?2 LIMIT 1",
            params![first, past],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    let deleted = tx.execute(
        "DELETE FROM documents WHERE id >= ?1 AND id < ?2",
        params![first, past],
    )?;
    for index in ["by_id", "by_creation_time", "by_request"] {
        let start = super::index_prefix(LEGACY_OUTCOME_TABLE, index);
        let Some(end) = livebase_schema::key::prefix_end(&start) else {
            continue;
        };
        tx.execute(
            "DELETE FROM index_entries WHERE key >= ?1 AND key < ?2",
            params![start, end],
        )?;
    }
    tx.commit()?;
    tracing::info!("dropped {deleted} mutation outcomes stored in the old format");
    Ok(())
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers keep their snapshot while the writer commits. FULL: the WAL
    // is synced at every commit, so an acknowledged commit survives a crash.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Checkpoints are the checkpointer's, and starting the WAL over the
    // writer's, between transactions (see `super::wal`).
    wal::set_up(&conn)?;
    // The bundled SQLite has STAT4, which marks `LIMIT ?` and range bounds as
    // plan-affecting: every execution with new values re-prepared the scan
    // (15 % of the writer's CPU). Our plans never depend on the values.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

impl SqlitePersistence {
    /// A connection of its own to the file, as [`Persistence::connect`]
    /// opens one.
    fn own_connection(&self) -> Result<SqliteConnection> {
        Ok(SqliteConnection::new(
            open_connection(&self.path)?,
            self.recent.clone(),
            self.wal.clone(),
        ))
    }
}

impl Persistence for SqlitePersistence {
    fn connect(&self) -> Result<Box<dyn StoreConnection>> {
        Ok(Box::new(self.own_connection()?))
    }
}

/// The [`RecentWrites`] of the database file at `path`: one per file in the
/// process, however many times it is opened, so that every writer to the
/// file records its commits where every reader of it looks.
fn recent_writes_of(path: &Path) -> Arc<RecentWrites> {
    static FILES: Mutex<Vec<(PathBuf, Weak<RecentWrites>)>> = Mutex::new(Vec::new());
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Ok(mut files) = FILES.lock() else {
        return Arc::default();
    };
    files.retain(|(_, recent)| recent.strong_count() > 0);
    if let Some(recent) = files
        .iter()
        .find(|(p, _)| *p == path)
        .and_then(|(_, recent)| recent.upgrade())
    {
        return recent;
    }
    let recent = Arc::new(RecentWrites::default());
    files.push((path, Arc::downgrade(&recent)));
    recent
}

struct SqliteConnection {
    conn: Connection,
    /// Its restarts of the WAL, as the connection that writes.
    restarts: Restarts,
    /// Since when it holds a read snapshot, for the writer's restarts.
    held: HeldSnapshot,
    in_txn: bool,
    /// Documents decoded by earlier reads, used again while their stored
    /// text is unchanged.
    decoded: DecodedDocuments,
    /// Index ranges read before, brought up to date from `recent`.
    ranges: RangeCache,
    recent: Arc<RecentWrites>,
    /// The open read snapshot, if one is open.
    snapshot: Option<Snapshot>,
    /// The open write transaction wrote documents or index entries …
    wrote: bool,
    /// … and recorded its commits' write sets.
    logged: bool,
    /// The latest timestamp of an outcome the open write transaction stored
    /// (see [`last_ts`]), and its value when the open savepoint began.
    outcome_ts: Option<Timestamp>,
    outcome_ts_at_savepoint: Option<Timestamp>,
}

impl SqliteConnection {
    fn new(conn: Connection, recent: Arc<RecentWrites>, wal: Arc<WalState>) -> SqliteConnection {
        SqliteConnection {
            conn,
            held: wal.held_snapshot(),
            restarts: Restarts::new(wal),
            in_txn: false,
            decoded: DecodedDocuments::default(),
            ranges: RangeCache::new(recent.clone()),
            recent,
            snapshot: None,
            wrote: false,
            logged: false,
            outcome_ts: None,
            outcome_ts_at_savepoint: None,
        }
    }

    /// Ends the open transaction with `COMMIT` or `ROLLBACK`. SQLite keeps a
    /// transaction open when its `COMMIT` fails (`SQLITE_BUSY`, a deferred
    /// constraint): it is rolled back here, so a failed commit keeps nothing
    /// and the next `BEGIN` works. `in_txn` says whether one is still open.
    fn finish(&mut self, sql: &str) -> Result<()> {
        let ended = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]));
        if ended.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.in_txn = !self.conn.is_autocommit();
        ended?;
        Ok(())
    }
}

/// The timestamp of the latest commit: the later of `meta`'s `last_ts` and
/// the newest stored mutation outcome. A commit that stores an outcome at its
/// own timestamp — a client's mutation, the common commit — leaves `meta`
/// alone, so it dirties one page fewer; every other commit (the outcome purge
/// included, so deleting the newest outcome never moves time back) writes
/// `meta`. The newest outcome is one step down `mutation_outcomes_by_ts`.
fn last_ts(conn: &Connection) -> Result<Timestamp> {
    let v: i64 = conn
        .prepare_cached(
            "SELECT max(coalesce((SELECT value FROM meta WHERE name = 'last_ts'), 0),
                        coalesce((SELECT max(ts) FROM mutation_outcomes), 0))",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(Timestamp::new(v as u64))
}

/// Column `i` of a row as text, borrowed from the row.
fn text<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r str> {
    row.get_ref(i)?
        .as_str()
        .map_err(|e| StoreError::Corrupt(format!("column {i} of a stored document: {e}")))
}

fn encode_body(fields: &Object) -> String {
    Value::Object(fields.clone().into()).to_json().to_string()
}

/// Index entries of `[start, end)` in `order`, at most `limit`, each with its
/// document as `read` makes it from the connection's decoded documents and
/// the stored row (id, creation time, text), read from the engine.
fn scan_with<T>(
    conn: &Connection,
    decoded: &mut DecodedDocuments,
    start: &[u8],
    end: &[u8],
    order: Order,
    limit: usize,
    read: impl Fn(&mut DecodedDocuments, &str, f64, &str) -> Result<T>,
) -> Result<Vec<(Vec<u8>, T)>> {
    let sql = match order {
        Order::Asc => SCAN_ASC,
        Order::Desc => SCAN_DESC,
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params![start, end, limit as i64])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let key: Vec<u8> = r.get(0)?;
        let (id, ct, body) = (text(r, 1)?, r.get::<_, f64>(2)?, text(r, 3)?);
        out.push((key, read(decoded, id, ct, body)?));
    }
    Ok(out)
}

/// The document with `id`, as `read` makes it from the connection's decoded
/// documents and the stored row (creation time, text).
fn get_with<T>(
    conn: &Connection,
    decoded: &mut DecodedDocuments,
    id: &DocumentId,
    read: impl FnOnce(&mut DecodedDocuments, f64, &str) -> Result<T>,
) -> Result<Option<T>> {
    let mut stmt =
        conn.prepare_cached("SELECT creation_time, body FROM documents WHERE id = ?1")?;
    let mut rows = stmt.query(params![id.as_str()])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let (ct, body) = (r.get::<_, f64>(0)?, text(r, 1)?);
    read(decoded, ct, body).map(Some)
}

/// [`scan_with`], each document as its value.
fn scan_values(
    conn: &Connection,
    decoded: &mut DecodedDocuments,
    start: &[u8],
    end: &[u8],
    order: Order,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Value)>> {
    scan_with(
        conn,
        decoded,
        start,
        end,
        order,
        limit,
        |decoded, id, ct, body| {
            decoded.value_or_decode(id, ct, body, || Document::decode(id, ct, body))
        },
    )
}

impl StoreConnection for SqliteConnection {
    fn begin_read(&mut self) -> Result<Timestamp> {
        if self.in_txn {
            return Err(StoreError::Misuse("begin_read inside a transaction"));
        }
        // Read before the snapshot begins (see `RecentWrites::snapshot`).
        let before = self.recent.generation();
        self.conn.prepare_cached("BEGIN DEFERRED")?.execute([])?;
        self.in_txn = true;
        self.held.began();
        // The first read starts the WAL snapshot; every later read sees the same.
        let ts = last_ts(&self.conn)?;
        self.snapshot = Some(self.recent.snapshot(ts, before));
        Ok(ts)
    }

    fn end_read(&mut self) -> Result<()> {
        self.snapshot = None;
        self.held.ended();
        if self.in_txn {
            self.finish("COMMIT")?;
        }
        Ok(())
    }

    fn begin_write(&mut self) -> Result<Timestamp> {
        if self.in_txn {
            return Err(StoreError::Misuse("begin_write inside a transaction"));
        }
        self.restarts.before_write(&self.conn, BUSY_TIMEOUT);
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        self.in_txn = true;
        self.snapshot = None;
        self.wrote = false;
        self.logged = false;
        self.outcome_ts = None;
        last_ts(&self.conn)
    }

    fn commit(&mut self, ts: Timestamp) -> Result<()> {
        // An outcome stored at `ts` or later already says how far time went.
        if self.outcome_ts < Some(ts) {
            self.conn
                .prepare_cached(
                    "INSERT INTO meta (name, value) VALUES ('last_ts', ?1)
                     ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![ts.get() as i64])?;
        }
        self.outcome_ts = None;
        // Written outside the writer's mutations: nobody knows what, so no
        // snapshot from around this commit keeps ranges, nor uses older ones.
        let unknown = self.wrote && !self.logged;
        if unknown {
            self.recent.unknown_write_begins();
        }
        let committed = self.finish("COMMIT");
        if unknown {
            self.recent.unknown_write_ends();
        }
        self.wrote = false;
        self.restarts.committed();
        committed
    }

    fn rollback(&mut self) -> Result<()> {
        self.snapshot = None;
        self.held.ended();
        self.wrote = false;
        self.outcome_ts = None;
        if self.in_txn {
            self.finish("ROLLBACK")?;
        }
        Ok(())
    }

    fn savepoint(&mut self) -> Result<()> {
        if !self.in_txn {
            return Err(StoreError::Misuse("savepoint outside a write transaction"));
        }
        self.conn
            .prepare_cached("SAVEPOINT mutation")?
            .execute([])?;
        self.outcome_ts_at_savepoint = self.outcome_ts;
        Ok(())
    }

    fn release_savepoint(&mut self) -> Result<()> {
        self.conn.prepare_cached("RELEASE mutation")?.execute([])?;
        Ok(())
    }

    fn rollback_to_savepoint(&mut self) -> Result<()> {
        self.conn
            .prepare_cached("ROLLBACK TO mutation")?
            .execute([])?;
        // The outcomes stored since the savepoint are gone with it.
        self.outcome_ts = self.outcome_ts_at_savepoint;
        self.release_savepoint()
    }

    fn get(&mut self, id: &DocumentId) -> Result<Option<Document>> {
        get_with(&self.conn, &mut self.decoded, id, |decoded, ct, body| {
            decoded.get_or_decode(id.as_str(), ct, body, || {
                Document::decode(id.as_str(), ct, body)
            })
        })
    }

    fn get_value(&mut self, id: &DocumentId) -> Result<Option<Value>> {
        get_with(&self.conn, &mut self.decoded, id, |decoded, ct, body| {
            decoded.value_or_decode(id.as_str(), ct, body, || {
                Document::decode(id.as_str(), ct, body)
            })
        })
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Document)>> {
        scan_with(
            &self.conn,
            &mut self.decoded,
            start,
            end,
            order,
            limit,
            |decoded, id, ct, body| {
                decoded.get_or_decode(id, ct, body, || Document::decode(id, ct, body))
            },
        )
    }

    fn will_commit(&mut self, ts: Timestamp, writes: &Arc<WriteSet>) {
        self.recent.record(ts, writes.clone());
        self.logged = true;
    }

    fn scan_values(
        &mut self,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Value)>> {
        let Some(at) = self.snapshot else {
            return scan_values(&self.conn, &mut self.decoded, start, end, order, limit);
        };
        let (conn, decoded) = (&self.conn, &mut self.decoded);
        self.ranges.scan_or_read(
            at,
            start,
            end,
            order,
            limit,
            &mut |start, end, order, limit| scan_values(conn, decoded, start, end, order, limit),
        )
    }

    fn scan_documents(
        &mut self,
        after: Option<&DocumentId>,
        limit: usize,
    ) -> Result<Vec<Document>> {
        // "" sorts before every id, so `None` starts at the first document.
        let after = after.map_or("", DocumentId::as_str);
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, creation_time, body FROM documents
             WHERE id > ?1 ORDER BY id ASC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, f64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, ct, body) = row?;
            out.push(Document::decode(&id, ct, &body)?);
        }
        Ok(out)
    }

    fn put_document(&mut self, doc: &Document) -> Result<()> {
        self.wrote = true;
        self.conn
            .prepare_cached(
                "INSERT INTO documents (id, creation_time, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET body = excluded.body",
            )?
            .execute(params![
                doc.id.as_str(),
                doc.creation_time,
                encode_body(&doc.fields)
            ])?;
        Ok(())
    }

    fn insert_document(&mut self, doc: &Document) -> Result<()> {
        self.wrote = true;
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO documents (id, creation_time, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO NOTHING",
            )?
            .execute(params![
                doc.id.as_str(),
                doc.creation_time,
                encode_body(&doc.fields)
            ])?;
        if inserted == 0 {
            return Err(StoreError::IdTaken(doc.id.clone()));
        }
        Ok(())
    }

    fn delete_document(&mut self, id: &DocumentId) -> Result<()> {
        self.wrote = true;
        self.conn
            .prepare_cached("DELETE FROM documents WHERE id = ?1")?
            .execute(params![id.as_str()])?;
        Ok(())
    }

    fn put_index_entry(&mut self, key: &[u8], id: &DocumentId) -> Result<()> {
        self.wrote = true;
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO index_entries (key, doc_id) VALUES (?1, ?2)")?
            .execute(params![key, id.as_str()])?;
        Ok(())
    }

    fn delete_index_entry(&mut self, key: &[u8]) -> Result<()> {
        self.wrote = true;
        self.conn
            .prepare_cached("DELETE FROM index_entries WHERE key = ?1")?
            .execute(params![key])?;
        Ok(())
    }

    fn get_outcome(
        &mut self,
        session_id: &str,
        request_id: u32,
        fingerprint: &[u8],
    ) -> Result<Option<MutationOutcome>> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT ts, path, value FROM mutation_outcomes
                 WHERE session_id = ?1 AND request_id = ?2 AND fingerprint = ?3",
            )?
            .query_row(params![session_id, request_id, fingerprint], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        let Some((ts, path, value)) = row else {
            return Ok(None);
        };
        let value = Value::from_json_str(&value, "stored outcome").map_err(|e| {
            StoreError::Corrupt(format!("outcome of {session_id}/{request_id}: {e}"))
        })?;
        Ok(Some(MutationOutcome {
            session_id: session_id.to_string(),
            request_id,
            fingerprint: fingerprint.to_vec(),
            ts: Timestamp::new(ts as u64),
            path,
            value,
        }))
    }

    fn put_outcome(&mut self, outcome: &MutationOutcome) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO mutation_outcomes
                 (session_id, request_id, fingerprint, ts, path, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                outcome.session_id,
                outcome.request_id,
                outcome.fingerprint,
                outcome.ts.get() as i64,
                outcome.path,
                outcome.value.to_json_text()
            ])?;
        self.outcome_ts = self.outcome_ts.max(Some(outcome.ts));
        Ok(())
    }

    fn purge_outcomes(&mut self, before: Timestamp, limit: usize) -> Result<usize> {
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM mutation_outcomes WHERE (session_id, request_id, fingerprint) IN
                 (SELECT session_id, request_id, fingerprint FROM mutation_outcomes
                  WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
            )?
            .execute(params![before.get() as i64, limit as i64])?;
        Ok(n)
    }

    fn count_outcomes(&mut self) -> Result<usize> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM mutation_outcomes")?
            .query_row([], |r| r.get(0))?;
        Ok(n as usize)
    }
}

impl Drop for SqliteConnection {
    fn drop(&mut self) {
        if self.in_txn {
            // A transaction dropped without commit rolls back: nothing of it is kept.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn committed_pages_reach_the_database_file_without_a_commit_checkpointing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let p = SqlitePersistence::open(&path).unwrap();
        let mut w = p.connect().unwrap();
        let key = crate::persistence::index_prefix("todos", "by_id");
        for n in 1..=5u64 {
            let d = Document {
                id: DocumentId::generate("todos"),
                creation_time: n as f64,
                fields: Object::new(),
            };
            w.begin_write().unwrap();
            w.put_document(&d).unwrap();
            w.put_index_entry(&[key.clone(), vec![n as u8]].concat(), &d.id)
                .unwrap();
            w.commit(Timestamp::new(n)).unwrap();
        }
        // Five commits are far below the WAL size at which a commit would
        // checkpoint, and the writer stays open: only the checkpointer
        // copies them into the database file. A copy of that file alone
        // (no WAL) shows what it holds.
        let copy = dir.path().join("copy.sqlite3");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let in_file = loop {
            let count = std::fs::copy(&path, &copy).ok().and_then(|_| {
                let c = Connection::open(&copy).ok()?;
                c.query_row("SELECT count(*) FROM documents", [], |r| r.get::<_, i64>(0))
                    .ok()
            });
            let _ = std::fs::remove_file(&copy);
            if count == Some(5) || std::time::Instant::now() > deadline {
                break count;
            }
            thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(in_file, Some(5), "the database file holds every commit");
        drop(w);
    }

    /// The checkpoint sequence number in the header of the WAL at `path`
    /// (big-endian, at byte 12): it goes up by one each time the WAL starts
    /// over.
    fn wal_sequence(path: &std::path::Path) -> u32 {
        let header = std::fs::read(path).unwrap_or_default();
        header
            .get(12..16)
            .map_or(0, |n| u32::from_be_bytes(n.try_into().unwrap()))
    }

    /// Commits, at timestamp `n`, a document of 60,000 bytes with one index
    /// entry: about 16 WAL pages.
    fn commit_big_document(w: &mut dyn StoreConnection, n: u64) {
        let d = Document {
            id: DocumentId::generate("todos"),
            creation_time: n as f64,
            fields: [("body".to_string(), Value::String("x".repeat(60_000)))]
                .into_iter()
                .collect(),
        };
        let key = crate::persistence::index_prefix("todos", "by_id");
        w.begin_write().unwrap();
        w.put_document(&d).unwrap();
        w.put_index_entry(&[key, n.to_be_bytes().to_vec()].concat(), &d.id)
            .unwrap();
        w.commit(Timestamp::new(n)).unwrap();
    }

    /// Readers that always hold some snapshot (the evaluators of a tenant
    /// whose live queries re-run after each of its writes) must not keep the
    /// WAL from starting over: each cycle of it is written once and then
    /// overwritten, so the file stays near its cycle's size instead of
    /// growing with every commit (a tenant that could do that fills the disk,
    /// and every commit's sync also records a new file size).
    #[test]
    fn the_wal_starts_over_while_readers_always_hold_a_snapshot() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let p = SqlitePersistence::open(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // Two readers, each holding a snapshot for 2 ms and starting its next
        // at once, half a snapshot apart: at every moment one of them holds
        // a snapshot from before the latest commits.
        let readers: Vec<_> = (0..2)
            .map(|i| {
                let (p, stop) = (p.clone(), stop.clone());
                thread::spawn(move || {
                    let mut r = p.connect().unwrap();
                    thread::sleep(Duration::from_millis(i));
                    while !stop.load(Ordering::Relaxed) {
                        r.begin_read().unwrap();
                        thread::sleep(Duration::from_millis(2));
                        r.end_read().unwrap();
                    }
                })
            })
            .collect();
        let mut w = p.connect().unwrap();
        let wal_path = dir.path().join("db.sqlite3-wal");
        let started_over = || wal_sequence(&wal_path);
        // About 16 pages a commit: four times the WAL's cycle in all.
        let commits = 4 * super::super::wal::WAL_CYCLE_PAGES as u64 / 16;
        let mut before = None;
        for n in 1..=commits {
            commit_big_document(w.as_mut(), n);
            before.get_or_insert_with(started_over);
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        let restarts = started_over() - before.unwrap();
        let written = commits * 60_000;
        let wal = std::fs::metadata(&wal_path).unwrap().len();
        assert!(
            restarts >= 2,
            "the WAL started over {restarts} times while four of its cycles were written"
        );
        assert!(
            wal < written * 3 / 4,
            "the WAL is {wal} bytes after {written} bytes were committed"
        );
    }

    /// A restart waits for every snapshot open when it begins, and holds
    /// every write up meanwhile: with a long one open (a starving tenant's
    /// job, an export) the writer puts the restart off rather than wait for
    /// it, tries once no old snapshot is left, and tries anyway after
    /// `RESTART_PATIENCE`, so the WAL still starts over.
    #[test]
    fn the_writer_puts_a_restart_off_while_a_long_snapshot_is_held() {
        use super::super::wal::{RESTART_PATIENCE, WAL_CYCLE_PAGES, YOUNG_SNAPSHOT};
        let dir = tempfile::tempdir().unwrap();
        let p = SqlitePersistence::open(dir.path().join("db.sqlite3")).unwrap();
        let mut w = p.own_connection().unwrap();
        let wal_path = dir.path().join("db.sqlite3-wal");
        let started_over = || wal_sequence(&wal_path);
        let mut n = 0u64;
        let mut write = |w: &mut SqliteConnection| {
            n += 1;
            commit_big_document(w, n);
        };
        write(&mut w);
        let mut long = p.connect().unwrap();
        long.begin_read().unwrap();
        thread::sleep(YOUNG_SNAPSHOT * 3);
        // About 16 pages a commit: past the WAL's cycle, then writes on
        // while the checkpointer copies what it can and says so.
        for _ in 0..WAL_CYCLE_PAGES / 16 + 50 {
            write(&mut w);
        }
        let seq = started_over();
        for _ in 0..20 {
            thread::sleep(Duration::from_millis(20));
            write(&mut w);
        }
        assert_eq!(
            w.restarts.tried(),
            0,
            "tried while the long snapshot was held"
        );
        long.end_read().unwrap();
        write(&mut w);
        write(&mut w);
        assert!(w.restarts.tried() >= 1, "not tried once the snapshot ended");
        assert!(started_over() > seq, "the WAL did not start over");

        // A snapshot held for good: the writer tries after its patience
        // (and fails, the snapshot being older than the WAL's frames).
        long.begin_read().unwrap();
        for _ in 0..WAL_CYCLE_PAGES / 16 + 50 {
            write(&mut w);
        }
        let tried = w.restarts.tried();
        let deadline = std::time::Instant::now() + RESTART_PATIENCE * 5;
        while w.restarts.tried() == tried && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            write(&mut w);
        }
        assert!(w.restarts.tried() > tried, "not tried after its patience");
        long.end_read().unwrap();
    }

    #[test]
    fn opening_a_file_drops_outcomes_stored_as_documents_by_older_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let doc = |table: &str| Document {
            id: DocumentId::generate(table),
            creation_time: 1.0,
            fields: Object::new(),
        };
        let (legacy, kept) = (doc(LEGACY_OUTCOME_TABLE), doc("todos"));
        let legacy_key = crate::persistence::index_prefix(LEGACY_OUTCOME_TABLE, "by_request");
        let kept_key = crate::persistence::index_prefix("todos", "by_id");
        {
            let p = SqlitePersistence::open(&path).unwrap();
            let mut w = p.connect().unwrap();
            w.begin_write().unwrap();
            for (d, key) in [(&legacy, &legacy_key), (&kept, &kept_key)] {
                w.put_document(d).unwrap();
                w.put_index_entry(key, &d.id).unwrap();
            }
            w.commit(Timestamp::new(1)).unwrap();
        }
        let p = SqlitePersistence::open(&path).unwrap();
        let mut r = p.connect().unwrap();
        r.begin_read().unwrap();
        assert_eq!(r.get(&legacy.id).unwrap(), None);
        assert_eq!(r.get(&kept.id).unwrap(), Some(kept.clone()));
        let all = r.scan(&[], &[0xFF], Order::Asc, 10).unwrap();
        assert_eq!(all, vec![(kept_key, kept)]);
        r.end_read().unwrap();
    }

    #[test]
    fn a_failed_commit_keeps_nothing_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = SqlitePersistence::open(dir.path().join("db.sqlite3")).unwrap();
        let mut w = p.own_connection().unwrap();
        // A deferred foreign key is checked only at COMMIT, which SQLite then
        // refuses and leaves the transaction open — as it does for SQLITE_BUSY.
        w.conn
            .execute_batch(
                "PRAGMA foreign_keys = ON;
                 CREATE TABLE parent (id INTEGER PRIMARY KEY);
                 CREATE TABLE child (parent INTEGER
                     REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
            )
            .unwrap();
        let doc = Document {
            id: DocumentId::generate("todos"),
            creation_time: 1.0,
            fields: Object::new(),
        };
        w.begin_write().unwrap();
        w.put_document(&doc).unwrap();
        w.conn
            .execute("INSERT INTO child (parent) VALUES (42)", [])
            .unwrap();
        let failed = w.commit(Timestamp::new(5));
        assert!(failed.is_err(), "the dangling key fails the COMMIT");
        assert!(w.conn.is_autocommit(), "no transaction is left open");

        // The next transaction starts, sees nothing of the failed one, commits.
        assert_eq!(w.begin_write().unwrap(), Timestamp::ZERO);
        assert_eq!(w.get(&doc.id).unwrap(), None);
        w.put_document(&doc).unwrap();
        w.commit(Timestamp::new(6)).unwrap();
        let mut r = p.connect().unwrap();
        assert_eq!(r.begin_read().unwrap(), Timestamp::new(6));
        assert_eq!(r.get(&doc.id).unwrap(), Some(doc));
        r.end_read().unwrap();
    }

    /// `meta`'s `last_ts` as stored, read on a connection of its own.
    fn stored_meta_ts(path: &Path) -> Option<i64> {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT value FROM meta WHERE name = 'last_ts'", [], |r| {
                r.get(0)
            })
            .optional()
            .unwrap()
    }

    fn outcome(request_id: u32, ts: u64) -> MutationOutcome {
        MutationOutcome {
            session_id: "s".into(),
            request_id,
            fingerprint: vec![1; 32],
            ts: Timestamp::new(ts),
            path: "a:b".into(),
            value: Value::from("done"),
        }
    }

    #[test]
    fn a_commit_that_stores_its_outcome_writes_no_meta_row_and_time_still_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let p = SqlitePersistence::open(&path).unwrap();
        let mut w = p.connect().unwrap();
        let doc = |n: u64| Document {
            id: DocumentId::generate("todos"),
            creation_time: n as f64,
            fields: Object::new(),
        };
        // A commit without an outcome (a scheduled job's, an import's)
        // writes `meta`.
        w.begin_write().unwrap();
        w.put_document(&doc(1)).unwrap();
        w.commit(Timestamp::new(10)).unwrap();
        assert_eq!(stored_meta_ts(&path), Some(10));
        // A client's mutation stores its outcome at its commit's timestamp:
        // `meta` is not written, yet every connection sees time at 20.
        assert_eq!(w.begin_write().unwrap(), Timestamp::new(10));
        w.put_document(&doc(2)).unwrap();
        w.put_outcome(&outcome(0, 20)).unwrap();
        w.commit(Timestamp::new(20)).unwrap();
        assert_eq!(stored_meta_ts(&path), Some(10), "meta was written");
        let mut r = p.connect().unwrap();
        assert_eq!(r.begin_read().unwrap(), Timestamp::new(20));
        r.end_read().unwrap();
        assert_eq!(w.begin_write().unwrap(), Timestamp::new(20));
        w.rollback().unwrap();
        drop((w, r, p));
        // Reopened, the file still says 20.
        let p = SqlitePersistence::open(&path).unwrap();
        let mut w = p.connect().unwrap();
        assert_eq!(w.begin_write().unwrap(), Timestamp::new(20));
        // The purge deletes that newest outcome; its own commit writes
        // `meta`, so time does not move back to 10.
        assert_eq!(w.purge_outcomes(Timestamp::new(25), 10).unwrap(), 1);
        w.commit(Timestamp::new(30)).unwrap();
        assert_eq!(w.begin_write().unwrap(), Timestamp::new(30));
        // An outcome undone with its savepoint says nothing: `meta` is
        // written.
        w.savepoint().unwrap();
        w.put_document(&doc(3)).unwrap();
        w.put_outcome(&outcome(1, 40)).unwrap();
        w.rollback_to_savepoint().unwrap();
        w.put_document(&doc(4)).unwrap();
        w.commit(Timestamp::new(40)).unwrap();
        assert_eq!(stored_meta_ts(&path), Some(40));
        assert_eq!(w.begin_write().unwrap(), Timestamp::new(40));
        // A group whose latest commit stored no outcome writes `meta` too.
        w.put_outcome(&outcome(2, 45)).unwrap();
        w.put_document(&doc(5)).unwrap();
        w.commit(Timestamp::new(50)).unwrap();
        assert_eq!(stored_meta_ts(&path), Some(50));
        assert_eq!(w.begin_write().unwrap(), Timestamp::new(50));
        w.rollback().unwrap();
    }

    #[test]
    fn opening_a_file_drops_outcomes_not_bound_to_a_caller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        {
            // The table as it was: keyed by session and request id alone.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE mutation_outcomes (
                    session_id TEXT NOT NULL, request_id INTEGER NOT NULL,
                    ts INTEGER NOT NULL, path TEXT NOT NULL, success INTEGER NOT NULL,
                    result TEXT NOT NULL, error_data TEXT,
                    PRIMARY KEY (session_id, request_id)) WITHOUT ROWID;
                 INSERT INTO mutation_outcomes VALUES ('s', 0, 1, 'a:b', 1, '\"secret\"', NULL);",
            )
            .unwrap();
        }
        let p = SqlitePersistence::open(&path).unwrap();
        let mut w = p.connect().unwrap();
        w.begin_write().unwrap();
        assert_eq!(w.count_outcomes().unwrap(), 0);
        let outcome = MutationOutcome {
            session_id: "s".into(),
            request_id: 0,
            fingerprint: vec![7; 32],
            ts: Timestamp::new(2),
            path: "a:b".into(),
            value: Value::from("mine"),
        };
        w.put_outcome(&outcome).unwrap();
        w.commit(Timestamp::new(2)).unwrap();
        drop(w);
        // A second open keeps the bound table and its rows.
        let p = SqlitePersistence::open(&path).unwrap();
        let mut r = p.connect().unwrap();
        r.begin_read().unwrap();
        assert_eq!(r.get_outcome("s", 0, &[7; 32]).unwrap(), Some(outcome));
        r.end_read().unwrap();
    }

    #[test]
    fn a_range_scan_is_prepared_once_not_at_every_execution() {
        let dir = tempfile::tempdir().unwrap();
        let p = SqlitePersistence::open(dir.path().join("db.sqlite3")).unwrap();
        let mut conn = p.own_connection().unwrap();
        conn.begin_read().unwrap();
        for i in 0..5u8 {
            conn.scan(&[i], &[i + 1], Order::Asc, 10 + usize::from(i))
                .unwrap();
            conn.scan(&[i], &[i + 2], Order::Desc, 1).unwrap();
        }
        conn.end_read().unwrap();
        for sql in [SCAN_ASC, SCAN_DESC] {
            let stmt = conn.conn.prepare_cached(sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "re-prepared: {sql}"
            );
        }
    }
}

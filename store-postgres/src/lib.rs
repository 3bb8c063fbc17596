//! livebase's PostgreSQL storage engine: the store's [`Persistence`] trait on
//! one schema of a PostgreSQL database, checked by the same conformance suite
//! as the embedded SQLite engine (`tests/conformance.rs`).
//!
//! # Layout
//!
//! The tables are SQLite's, in a schema of their own (`livebase` unless told
//! otherwise, so that they sit beside an application's tables without
//! clashing): `documents`, `index_entries`, `meta` (the last commit's
//! timestamp, the epoch, the log's floor) and `mutation_outcomes`; and, for
//! several nodes on one schema, `commit_log` (each commit's write set, see
//! [`PostgresCommitLog`]) and `shared_settings` (the writer's address, shared
//! secrets); and stored files' bytes, `blobs` and its companions (see
//! [`PostgresBlobs`]). They are created on first connect (tables added since, in a
//! schema made before them, on the next open).
//!
//! # Several nodes
//!
//! One node writes, under a lease ([`PostgresPersistence::try_claim_node`],
//! the `lease` module): a session advisory lock and an epoch that fences
//! every commit. Every node learns of commits by reading the commit log.
//!
//! # Long index keys
//!
//! An index key holds the values of its fields, so it can be as long as a
//! value (1 MiB); a PostgreSQL B-tree entry cannot pass about 2.7 KB. Each
//! entry keeps its whole key in `key` (stored out of line when long) and is
//! indexed on `key_prefix` — the key's first [`KEY_PREFIX_LEN`] bytes — and
//! `key_hash`, its SHA-256, as Convex does. Truncating keeps order
//! (`a < b` implies `prefix(a) <= prefix(b)`), so a range
//! `start <= key < end` lies within `prefix(start) <= key_prefix <=
//! prefix(end)`: the B-tree narrows the scan, `key` decides. A scan reads
//! the B-tree in its own order under the limit — ordering by `key` would make
//! PostgreSQL read and sort the whole range first — which is key order except
//! among keys that share their first [`KEY_PREFIX_LEN`] bytes (in hash order
//! there): `scan` sorts those, fetching the whole of such a run when the
//! limit cut it. The conformance suite holds both engines to this with keys
//! far past the limit, and a test here to the plan's stopping at the limit.
//!
//! # Transactions
//!
//! A read is one `REPEATABLE READ, READ ONLY` transaction: its snapshot is
//! taken by its first statement, the read of the last commit's timestamp, so
//! every later read sees exactly the commits up to that timestamp. The writer
//! begins in `READ COMMITTED` and locks the `meta` row (`FOR UPDATE`): the
//! lock makes it the one writer, so each of its statements sees the store as
//! its own transaction left it; a second writer waits for the first to end
//! (under `REPEATABLE READ` it would fail instead). A commit returns once
//! PostgreSQL has made it durable (`synchronous_commit` as the server has
//! it, `on` by default).
//!
//! # Connections and threads
//!
//! Each [`StoreConnection`] owns one synchronous `postgres::Client`, as each
//! SQLite connection owns its handle: the store's writer and readers are
//! threads, each with its own connection, so no pool is needed. The client
//! drives its socket on a small runtime of its own, which may not run inside
//! another's: a call made from async code (opening the store, the start of
//! the subscription worker) runs on a scoped thread instead ([`off_runtime`]).
//!
//! # TLS
//!
//! `sslmode=require` in the URL connects over TLS with rustls (ring, the
//! certificate checked against Mozilla's roots, or against the CA given with
//! [`PostgresPersistence::with_ca_file`]); any other mode connects in plain
//! text, as `prefer` does with a server that has no TLS.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use livebase_schema::{DocumentId, Object, Timestamp, Value};
use livebase_store::persistence::decoded::DecodedDocuments;
use livebase_store::persistence::ranges::{RangeCache, RecentWrites, Snapshot};
use livebase_store::persistence::{
    CommitLog, Document, MutationOutcome, Order, Persistence, StoreConnection,
};
use livebase_store::readset::WriteSet;
use livebase_store::StoreError;
use postgres::config::SslMode;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

mod blobs;
mod buffer;
mod lease;
mod log;
mod shared;

pub mod probe;

use blobs::BLOBS_SQL;
pub use blobs::{PostgresBlobs, ABANDONED, CHUNK, MAX_CLIENTS, READ_PIECE};
use lease::NodeLock;
pub use lease::{lock_session_name, LEASE_TIMEOUT};
pub use log::{
    log_channel, log_session_name, PostgresCommitLog, LOG_RETENTION, TRIM_EVERY_COMMITS,
    TRIM_INTERVAL,
};
pub use shared::SHARED_SECRET_LEN;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How many leading bytes of an index key its B-tree entry holds; the rest
/// is told apart by the key's SHA-256 (see the module docs). Far under
/// PostgreSQL's limit of about 2.7 KB per entry, far over a usual key.
pub const KEY_PREFIX_LEN: usize = 1024;

/// The schema the tables live in unless [`PostgresPersistence::open_schema`]
/// names another.
pub const DEFAULT_SCHEMA: &str = "livebase";

/// The version of the tables' layout, kept in `meta` for later migrations.
const LAYOUT_VERSION: i64 = 1;

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS documents (
    id TEXT COLLATE \"C\" PRIMARY KEY,
    creation_time DOUBLE PRECISION NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS index_entries (
    key BYTEA NOT NULL,
    key_prefix BYTEA GENERATED ALWAYS AS (substring(key FROM 1 FOR 1024)) STORED,
    key_hash BYTEA GENERATED ALWAYS AS (sha256(key)) STORED,
    doc_id TEXT COLLATE \"C\" NOT NULL,
    PRIMARY KEY (key_prefix, key_hash)
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS mutation_outcomes (
    session_id TEXT NOT NULL,
    request_id BIGINT NOT NULL,
    fingerprint BYTEA NOT NULL,
    ts BIGINT NOT NULL,
    path TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (session_id, request_id, fingerprint)
);
CREATE INDEX IF NOT EXISTS mutation_outcomes_by_ts ON mutation_outcomes (ts);
CREATE TABLE IF NOT EXISTS commit_log (
    ts BIGINT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    writes BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS shared_settings (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL,
    epoch BIGINT NOT NULL
);
INSERT INTO meta (name, value) VALUES ('last_ts', 0) ON CONFLICT (name) DO NOTHING;
";

// `$1`/`$2` are the scan's bounds. The first two conditions let the B-tree
// on `(key_prefix, key_hash)` narrow the scan, the last two decide; rows
// come in the B-tree's own order, so the scan stops after `$3` of them
// (ordering by `key` itself would make PostgreSQL read and sort the whole
// range first). `scan` puts keys that share a full prefix in key order.
const SCAN_ASC: &str = "SELECT e.key, d.id, d.creation_time, d.body FROM index_entries e
     JOIN documents d ON d.id = e.doc_id
     WHERE e.key_prefix >= substring($1::bytea FROM 1 FOR 1024)
       AND e.key_prefix <= substring($2::bytea FROM 1 FOR 1024)
       AND e.key >= $1 AND e.key < $2
     ORDER BY e.key_prefix ASC, e.key_hash ASC LIMIT $3";
const SCAN_DESC: &str = "SELECT e.key, d.id, d.creation_time, d.body FROM index_entries e
     JOIN documents d ON d.id = e.doc_id
     WHERE e.key_prefix >= substring($1::bytea FROM 1 FOR 1024)
       AND e.key_prefix <= substring($2::bytea FROM 1 FOR 1024)
       AND e.key >= $1 AND e.key < $2
     ORDER BY e.key_prefix DESC, e.key_hash DESC LIMIT $3";
/// Every entry within the bounds whose key starts with the full prefix `$3`.
const SCAN_PREFIX: &str = "SELECT e.key, d.id, d.creation_time, d.body FROM index_entries e
     JOIN documents d ON d.id = e.doc_id
     WHERE e.key_prefix = $3::bytea AND e.key >= $1 AND e.key < $2";

/// The engine's name in errors.
const ENGINE: &str = "postgres";

fn pg(e: postgres::Error) -> StoreError {
    StoreError::Engine {
        engine: ENGINE,
        source: Box::new(e),
    }
}

fn engine_error(message: String) -> StoreError {
    StoreError::Engine {
        engine: ENGINE,
        source: message.into(),
    }
}

/// One schema of a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresPersistence {
    config: postgres::Config,
    schema: String,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// The session that holds this schema's node lock, once claimed
    /// ([`PostgresPersistence::claim_node`]); shared by clones, released
    /// when the last is dropped.
    node: Arc<std::sync::Mutex<NodeLock>>,
    /// Set for good once the lock's session ended (see `lease.rs`).
    lease_lost: Arc<std::sync::atomic::AtomicBool>,
    /// The epoch this node claimed the schema at (0 until it has): every
    /// commit is fenced by it — made only while the database's epoch is
    /// still this one.
    epoch: Arc<std::sync::atomic::AtomicI64>,
    /// The write sets of this node's latest commits, for the index ranges
    /// its connections keep (see `livebase_store::persistence::ranges`).
    /// Other nodes and tools commit to the same database: a snapshot past
    /// the commits this node knows of keeps no ranges, so a node that only
    /// reads keeps none.
    recent: Arc<RecentWrites>,
}

impl std::fmt::Debug for PostgresPersistence {
    // Not the config: it holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresPersistence")
            .field("dbname", &self.config.get_dbname())
            .field("schema", &self.schema)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl PostgresPersistence {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`,
    /// or libpq's `key=value` form) and creates the tables in the schema
    /// [`DEFAULT_SCHEMA`] if they are not there.
    pub fn open(url: &str) -> Result<PostgresPersistence> {
        PostgresPersistence::open_schema(url, DEFAULT_SCHEMA, None)
    }

    /// As [`PostgresPersistence::open`], with TLS certificates checked
    /// against the CA certificates in the PEM file `ca_file` instead of
    /// Mozilla's roots.
    pub fn with_ca_file(url: &str, ca_file: &Path) -> Result<PostgresPersistence> {
        PostgresPersistence::open_schema(url, DEFAULT_SCHEMA, Some(ca_file))
    }

    /// As [`PostgresPersistence::open`], in the schema `schema` (letters,
    /// digits and `_`, at most 63 bytes), which is created if missing.
    pub fn open_schema(
        url: &str,
        schema: &str,
        ca_file: Option<&Path>,
    ) -> Result<PostgresPersistence> {
        let config = postgres::Config::from_str(url)
            .map_err(|e| engine_error(format!("the database URL: {e}")))?;
        if schema.is_empty()
            || schema.len() > 63
            || !schema
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || schema.as_bytes()[0].is_ascii_digit()
        {
            return Err(engine_error(format!(
                "`{schema}` is not a schema name (letters, digits, `_`)"
            )));
        }
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Some(tls_connector(ca_file)?),
            _ => None,
        };
        let p = PostgresPersistence {
            config,
            schema: schema.to_string(),
            tls,
            node: Arc::default(),
            lease_lost: Arc::default(),
            epoch: Arc::default(),
            recent: Arc::new(RecentWrites::with_other_writers()),
        };
        p.create_tables()?;
        Ok(p)
    }

    /// The epoch this node claimed the schema at; 0 if it has not.
    pub fn epoch(&self) -> i64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Where the tables are, for logs and messages: database, hosts and
    /// schema, never the password.
    pub fn describe(&self) -> String {
        describe(&self.config, &self.schema)
    }

    fn client(&self) -> Result<Client> {
        self.client_with(&self.config)
    }

    /// A session with `config` (this store's, perhaps with settings added),
    /// its `search_path` set to the schema.
    fn client_with(&self, config: &postgres::Config) -> Result<Client> {
        off_runtime(|| {
            let mut client = match &self.tls {
                Some(tls) => config.connect(tls.clone()),
                None => config.connect(NoTls),
            }
            .map_err(pg)?;
            client
                .batch_execute(&format!("SET search_path TO \"{}\"", self.schema))
                .map_err(pg)?;
            Ok(client)
        })
    }

    /// Creates the schema and its tables, once: concurrent first starts wait
    /// for each other on an advisory lock instead of racing on the catalog.
    fn create_tables(&self) -> Result<()> {
        let mut client = Some(self.client()?);
        let schema = &self.schema;
        let created = off_runtime(|| {
            let c = client.as_mut().expect("the client is there");
            // Made already: read and write rights are enough from then on
            // (CREATE ... IF NOT EXISTS would still ask for the right to create).
            // Tables added since the first layout (the commit log, the shared
            // settings, the blobs) are made in a schema that lacks them.
            let made = c
                .query_one(
                    "SELECT to_regclass(format('%I.meta', $1::text)) IS NOT NULL
                        AND to_regclass(format('%I.commit_log', $1::text)) IS NOT NULL
                        AND to_regclass(format('%I.shared_settings', $1::text)) IS NOT NULL
                    AND to_regclass(format('%I.blob_pins', $1::text)) IS NOT NULL",
                    &[schema],
                )
                .map_err(pg)?
                .get::<_, bool>(0);
            if !made {
                c.batch_execute(&format!(
                    "BEGIN;
                 SELECT pg_advisory_xact_lock(hashtext('livebase schema'));
                 CREATE SCHEMA IF NOT EXISTS \"{schema}\";
                 {SCHEMA_SQL}
                 {BLOBS_SQL}
                 INSERT INTO meta (name, value) VALUES ('layout_version', {LAYOUT_VERSION})
                     ON CONFLICT (name) DO NOTHING;
                 COMMIT;"
                ))
                .map_err(pg)?;
            }
            let version: i64 = c
                .query_one("SELECT value FROM meta WHERE name = 'layout_version'", &[])
                .map_err(pg)?
                .get(0);
            if version != LAYOUT_VERSION {
                return Err(engine_error(format!(
                    "the tables in schema `{schema}` have layout version {version}; \
                     this livebase knows version {LAYOUT_VERSION}"
                )));
            }
            Ok(())
        });
        drop_client(client.take());
        created
    }
}

/// Moves the schema to its next epoch and returns it. The `last_ts` row is
/// locked first, as a writer locks it: a commit of the previous epoch's
/// writer still in progress ends before the epoch moves, and every later
/// one finds the epoch moved and fails.
///
/// A writer stopped mid-transaction has its transaction ended by the server
/// after [`LEASE_TIMEOUT`]; should the row stay locked for twice that, the
/// claim fails (and may be tried again) instead of waiting for ever.
fn next_epoch(client: &mut Client) -> Result<i64> {
    let mut tx = client.transaction().map_err(pg)?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = {}",
        (LEASE_TIMEOUT * 2).as_millis()
    ))
    .map_err(pg)?;
    tx.query_one(
        "SELECT value FROM meta WHERE name = 'last_ts' FOR UPDATE",
        &[],
    )
    .map_err(pg)?;
    let epoch: i64 = tx
        .query_one(
            "INSERT INTO meta (name, value) VALUES ('epoch', 1)
             ON CONFLICT (name) DO UPDATE SET value = meta.value + 1
             RETURNING value",
            &[],
        )
        .map_err(pg)?
        .get(0);
    tx.commit().map_err(pg)?;
    Ok(epoch)
}

/// Where the tables of `schema` in the database at `url` are, for messages
/// (never the password); `None` if `url` is no database URL.
pub fn describe_url(url: &str, schema: &str) -> Option<String> {
    postgres::Config::from_str(url)
        .ok()
        .map(|config| describe(&config, schema))
}

fn describe(config: &postgres::Config, schema: &str) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    format!(
        "PostgreSQL database `{}` on {}, schema `{schema}`",
        config.get_dbname().unwrap_or("(default)"),
        if hosts.is_empty() {
            "localhost".to_string()
        } else {
            hosts.join(",")
        },
    )
}

/// A rustls connector: ring, the certificate checked against `ca_file`'s
/// certificates or else Mozilla's roots (the ones lettre uses).
fn tls_connector(ca_file: Option<&Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| engine_error(format!("reading {}: {e}", path.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| engine_error(format!("reading {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| engine_error(format!("{}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| engine_error(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Runs `f` where a synchronous `postgres::Client` may block: here, or — when
/// this thread drives async tasks, where the client's own runtime may not
/// run — on a scoped thread that borrows what `f` needs.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Drops a client where its runtime may be dropped (not inside another's).
fn drop_client(client: Option<Client>) {
    if let Some(client) = client {
        off_runtime(move || drop(client));
    }
}

impl Persistence for PostgresPersistence {
    fn commit_log(&self) -> Result<Option<Box<dyn CommitLog>>> {
        Ok(Some(Box::new(PostgresCommitLog::open(self)?)))
    }

    fn connect(&self) -> Result<Box<dyn StoreConnection>> {
        Ok(Box::new(self.connection()?))
    }
}

impl PostgresPersistence {
    fn connection(&self) -> Result<PostgresConnection> {
        Ok(PostgresConnection {
            client: Some(self.client()?),
            statements: HashMap::new(),
            txn: Txn::None,
            decoded: DecodedDocuments::default(),
            log: Vec::new(),
            buffer: buffer::Buffer::default(),
            trim: log::TrimSchedule::default(),
            notify: format!("NOTIFY \"{}\"; COMMIT", log_channel(&self.schema)),
            ranges: RangeCache::new(self.recent.clone()),
            snapshot: None,
            wrote: false,
            logged: false,
            source: self.clone(),
            sent: 0,
        })
    }
}

/// What transaction a connection is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Txn {
    None,
    Read,
    Write,
}

struct PostgresConnection {
    /// `None` only while being dropped, or when connecting again failed.
    client: Option<Client>,
    /// Statements prepared on this connection, by their text: each is parsed
    /// and planned once, then only bound and executed.
    statements: HashMap<&'static str, Statement>,
    txn: Txn,
    /// Documents decoded by earlier reads, used again while their stored
    /// text is unchanged.
    decoded: DecodedDocuments,
    /// Where to connect again when the server closed this connection (a
    /// restart, a failover of the database, an idle timeout).
    source: PostgresPersistence,
    /// The commit log's rows of the open write transaction
    /// ([`StoreConnection::log_commit`]): timestamps and encoded write sets,
    /// sent with the commit's own statement.
    log: Vec<(i64, Vec<u8>)>,
    /// The open write transaction's writes not sent yet (`buffer.rs`).
    buffer: buffer::Buffer,
    /// When the log was last trimmed by this connection.
    trim: log::TrimSchedule,
    /// The commit that announces logged commits to the log's readers.
    notify: String,
    /// How many times this connection sent statements and waited for their
    /// answer: its round trips (but the one that prepares a statement on
    /// its first use).
    sent: u64,
    /// Index ranges read before, brought up to date from the node's
    /// recorded commits.
    ranges: RangeCache,
    /// The open read snapshot, if one is open.
    snapshot: Option<Snapshot>,
    /// The open write transaction wrote documents or index entries …
    wrote: bool,
    /// … and recorded its commits' write sets.
    logged: bool,
}

impl PostgresConnection {
    /// The document with `id`, as `read` makes it from the cache and the
    /// stored row (creation time, text).
    fn get_with<T>(
        &mut self,
        id: &DocumentId,
        read: impl FnOnce(&mut DecodedDocuments, f64, &str) -> Result<T>,
    ) -> Result<Option<T>> {
        self.flush_if(buffer::touches_document(id.as_str()))?;
        let rows = self.query(
            "SELECT creation_time, body FROM documents WHERE id = $1",
            &[&id.as_str()],
        )?;
        rows.first()
            .map(|r| {
                let (ct, body): (f64, &str) = (r.get(0), r.get(1));
                read(&mut self.decoded, ct, body)
            })
            .transpose()
    }

    /// Index entries with `start <= key < end`, in `order`, at most `limit`,
    /// each with its document as `read` makes it from the cache and the
    /// stored row (id, creation time, text).
    fn scan_with<T>(
        &mut self,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
        read: impl Fn(&mut DecodedDocuments, &str, f64, &str) -> Result<T>,
    ) -> Result<Vec<(Vec<u8>, T)>> {
        self.flush_if(buffer::touches_range(start, end))?;
        let sql = match order {
            Order::Asc => SCAN_ASC,
            Order::Desc => SCAN_DESC,
        };
        let entry = |decoded: &mut DecodedDocuments, r: Row| -> Result<(Vec<u8>, T)> {
            let (id, ct, body): (&str, f64, &str) = (r.get(1), r.get(2), r.get(3));
            Ok((r.get(0), read(decoded, id, ct, body)?))
        };
        let mut found: Vec<(Vec<u8>, T)> = self
            .query(sql, &[&start, &end, &as_bigint(limit)])?
            .into_iter()
            .map(|r| entry(&mut self.decoded, r))
            .collect::<Result<_>>()?;
        // Rows came in prefix order; keys that share a full prefix came in
        // hash order, and the limit may have cut their run short. Every key
        // of that run is fetched so that the smallest (or largest) of them
        // are kept. (A key shorter than the prefix is its own prefix: no
        // other key shares it.)
        let cut_run = match found.last() {
            Some((key, _)) if found.len() == limit && key.len() >= KEY_PREFIX_LEN => {
                Some(key[..KEY_PREFIX_LEN].to_vec())
            }
            _ => None,
        };
        if let Some(prefix) = cut_run {
            found.retain(|(key, _)| !key.starts_with(&prefix));
            for row in self.query(SCAN_PREFIX, &[&start, &end, &prefix])? {
                found.push(entry(&mut self.decoded, row)?);
            }
        }
        match order {
            Order::Asc => found.sort_by(|a, b| a.0.cmp(&b.0)),
            Order::Desc => found.sort_by(|a, b| b.0.cmp(&a.0)),
        }
        found.truncate(limit);
        Ok(found)
    }

    /// Begins a write transaction; the last commit's timestamp.
    fn begin_write_transaction(&mut self) -> Result<Timestamp> {
        // The row lock makes this the one writer until it commits or rolls back.
        const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED;
             SELECT value FROM meta WHERE name = 'last_ts' FOR UPDATE";
        if self.source.epoch() == 0 {
            return self.begin(BEGIN, Txn::Write);
        }
        // A node under a lease: should it stop mid-transaction, the server
        // ends the transaction after `LEASE_TIMEOUT` of silence, so that its
        // row lock does not keep the next writer's claim waiting for ever.
        // (Set on each begin: a session connected again has lost it.)
        let sql = format!(
            "SET idle_in_transaction_session_timeout = {}; {BEGIN}",
            LEASE_TIMEOUT.as_millis()
        );
        self.begin(&sql, Txn::Write)
    }

    /// Stamps and commits the open write transaction.
    fn commit_transaction(&mut self, ts: Timestamp) -> Result<()> {
        self.in_write("commit outside a write transaction")?;
        if self.source.lease_lost() {
            self.end("ROLLBACK")?;
            return Err(engine_error(format!(
                "this node's lease on the database (epoch {}) was lost: it commits nothing more",
                self.source.epoch()
            )));
        }
        // In a transaction a failed statement aborted, this UPDATE fails (and
        // the COMMIT below would only roll back): the commit reports it.
        // A node that claimed the schema stamps only while the database's
        // epoch is still its own: a deposed writer's commit fails here.
        let epoch = self.source.epoch();
        let log = std::mem::take(&mut self.log);
        let announce = !log.is_empty();
        let stamped = match self.take_writes() {
            Err(e) => Err(e),
            Ok(writes) if !writes.is_empty() => self.stamp_logged(ts, epoch, log, Some(writes)),
            Ok(_) if announce => self.stamp_logged(ts, epoch, log, None),
            Ok(_) if epoch == 0 => self.execute(
                "UPDATE meta SET value = $1 WHERE name = 'last_ts'",
                &[&(ts.get() as i64)],
            ),
            Ok(_) => self.execute(
                "UPDATE meta SET value = $1 WHERE name = 'last_ts'
                 AND (SELECT value FROM meta WHERE name = 'epoch') = $2",
                &[&(ts.get() as i64), &epoch],
            ),
        };
        let stamped = stamped.and_then(|rows| match rows {
            0 => Err(engine_error(format!(
                "this node's claim on the database (epoch {epoch}) was taken over by another \
                 node: it commits nothing more"
            ))),
            n => Ok(n),
        });
        match stamped {
            Err(e) => {
                self.end("ROLLBACK")?;
                Err(e)
            }
            // NOTIFY reaches the listeners only if the transaction commits.
            Ok(_) if announce => {
                let sql = std::mem::take(&mut self.notify);
                let ended = self.end(&sql);
                self.notify = sql;
                ended
            }
            Ok(_) => self.end("COMMIT"),
        }
    }

    /// Runs `f` with the client (off any async runtime, see [`off_runtime`]).
    fn with<T: Send>(
        &mut self,
        f: impl FnOnce(&mut Client, &mut HashMap<&'static str, Statement>) -> Result<T> + Send,
    ) -> Result<T> {
        let Some(client) = self.client.as_mut() else {
            return Err(engine_error(
                "not connected (connecting again failed)".into(),
            ));
        };
        let statements = &mut self.statements;
        self.sent += 1;
        off_runtime(move || f(client, statements))
    }

    fn query(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.with(|c, statements| {
            let stmt = prepared(c, statements, sql)?;
            c.query(&stmt, params).map_err(pg)
        })
    }

    fn execute(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.with(|c, statements| {
            let stmt = prepared(c, statements, sql)?;
            c.execute(&stmt, params).map_err(pg)
        })
    }

    /// Runs `sql` (statements without parameters) in one round trip and
    /// returns the first column of the rows it answered.
    fn simple(&mut self, sql: &str) -> Result<Vec<String>> {
        self.with(|c, _| {
            let messages = c.simple_query(sql).map_err(pg)?;
            Ok(messages
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
                    _ => None,
                })
                .collect())
        })
    }

    /// Begins a transaction with `sql`, which ends by reading the last
    /// commit's timestamp. A failure leaves no transaction open. A
    /// connection the server has closed since its last use is opened again
    /// here, and only here: nothing of a transaction is lost by it, since
    /// none had begun (a transaction the loss interrupts fails instead).
    fn begin(&mut self, sql: &str, txn: Txn) -> Result<Timestamp> {
        if self.txn != Txn::None {
            return Err(StoreError::Misuse("begin inside a transaction"));
        }
        self.txn = txn;
        let mut begun = self.simple(sql);
        let lost = match &begun {
            Ok(_) => false,
            Err(e) => self.client.as_ref().is_none_or(Client::is_closed) || connection_lost(e),
        };
        if lost {
            tracing::warn!(store = %self.source.describe(), "the connection was closed; connecting again");
            drop_client(self.client.take());
            self.statements.clear();
            self.client = Some(self.source.client().inspect_err(|_| self.txn = Txn::None)?);
            begun = self.simple(sql);
        }
        match begun.and_then(|rows| parse_ts(&rows)) {
            Ok(ts) => Ok(ts),
            Err(e) => {
                let _ = self.end("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Ends the open transaction with `COMMIT` or `ROLLBACK`. A `COMMIT`
    /// that fails has ended the transaction all the same (PostgreSQL rolls
    /// it back), so afterwards no transaction is open either way.
    fn end(&mut self, sql: &str) -> Result<()> {
        let ended = self.simple(sql).map(drop);
        if ended.is_err() {
            // A lost connection, or a statement the server refused: make sure.
            let _ = self.simple("ROLLBACK");
        }
        self.txn = Txn::None;
        // Log rows and writes of a transaction that did not commit are
        // dropped with it.
        self.log.clear();
        self.clear_buffer();
        ended
    }

    fn in_write(&self, what: &'static str) -> Result<()> {
        match self.txn {
            Txn::Write => Ok(()),
            _ => Err(StoreError::Misuse(what)),
        }
    }
}

/// Whether `e` ended the connection: the server closed it (a `FATAL` error,
/// such as `57P01` when an administrator or a shutdown terminates the
/// session) or the socket failed. The client may not have seen the socket
/// close yet when the error arrives, so `Client::is_closed` alone is not
/// enough.
fn connection_lost(e: &StoreError) -> bool {
    let StoreError::Engine { source, .. } = e else {
        return false;
    };
    let Some(e) = source.downcast_ref::<postgres::Error>() else {
        return false;
    };
    let socket_failed = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    e.is_closed() || socket_failed || e.as_db_error().is_some_and(|db| db.severity() == "FATAL")
}

fn prepared(
    c: &mut Client,
    statements: &mut HashMap<&'static str, Statement>,
    sql: &'static str,
) -> Result<Statement> {
    if let Some(stmt) = statements.get(sql) {
        return Ok(stmt.clone());
    }
    let stmt = c.prepare(sql).map_err(pg)?;
    statements.insert(sql, stmt.clone());
    Ok(stmt)
}

fn parse_ts(rows: &[String]) -> Result<Timestamp> {
    let [value] = rows else {
        return Err(StoreError::Corrupt(
            "the last commit's timestamp is missing".into(),
        ));
    };
    value
        .parse::<i64>()
        .map(|v| Timestamp::new(v as u64))
        .map_err(|e| StoreError::Corrupt(format!("the last commit's timestamp: {e}")))
}

fn encode_body(fields: &Object) -> String {
    Value::Object(fields.clone().into()).to_json().to_string()
}

/// A count or limit as PostgreSQL's `bigint` (a limit past it is no limit).
fn as_bigint(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl StoreConnection for PostgresConnection {
    fn begin_read(&mut self) -> Result<Timestamp> {
        // Read before the snapshot begins (see `RecentWrites::snapshot`).
        let before = self.source.recent.generation();
        // One round trip; the SELECT takes the snapshot every later read sees.
        let ts = self.begin(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
             SELECT value FROM meta WHERE name = 'last_ts'",
            Txn::Read,
        )?;
        self.snapshot = Some(self.source.recent.snapshot(ts, before));
        Ok(ts)
    }

    fn end_read(&mut self) -> Result<()> {
        self.snapshot = None;
        if self.txn != Txn::None {
            self.end("COMMIT")?;
        }
        Ok(())
    }

    fn begin_write(&mut self) -> Result<Timestamp> {
        self.snapshot = None;
        self.wrote = false;
        self.logged = false;
        let last = self.begin_write_transaction()?;
        // Holding the row lock, no commit is made meanwhile: if the last one
        // is not the last this node knows of, another node or tool made it.
        let recent = &self.source.recent;
        if last != recent.through() {
            recent.restart_at(last);
        }
        Ok(last)
    }

    fn will_commit(&mut self, ts: Timestamp, writes: &Arc<WriteSet>) {
        self.source.recent.record(ts, writes.clone());
        self.logged = true;
    }

    fn commit(&mut self, ts: Timestamp) -> Result<()> {
        // Written outside the writer's mutations: nobody knows what, so no
        // snapshot from around this commit keeps ranges, nor uses older ones.
        let unknown = self.wrote && !self.logged;
        self.wrote = false;
        let recent = self.source.recent.clone();
        if unknown {
            recent.unknown_write_begins();
        }
        let committed = self.commit_transaction(ts);
        if committed.is_ok() {
            recent.committed(ts);
        }
        if unknown {
            recent.unknown_write_ends();
        }
        committed
    }

    fn rollback(&mut self) -> Result<()> {
        self.snapshot = None;
        self.wrote = false;
        if self.txn != Txn::None {
            self.end("ROLLBACK")?;
        }
        Ok(())
    }

    fn savepoint(&mut self) -> Result<()> {
        self.in_write("savepoint outside a write transaction")?;
        self.buffer_savepoint()
    }

    fn release_savepoint(&mut self) -> Result<()> {
        self.buffer_release_savepoint()
    }

    fn rollback_to_savepoint(&mut self) -> Result<()> {
        self.buffer_rollback_to_savepoint()
    }

    fn get(&mut self, id: &DocumentId) -> Result<Option<Document>> {
        self.get_with(id, |decoded, ct, body| {
            decoded.get_or_decode(id.as_str(), ct, body, || {
                Document::decode(id.as_str(), ct, body)
            })
        })
    }

    fn get_value(&mut self, id: &DocumentId) -> Result<Option<Value>> {
        self.get_with(id, |decoded, ct, body| {
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
        self.scan_with(start, end, order, limit, |decoded, id, ct, body| {
            decoded.get_or_decode(id, ct, body, || Document::decode(id, ct, body))
        })
    }

    fn scan_values(
        &mut self,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Value)>> {
        let value = |decoded: &mut DecodedDocuments, id: &str, ct: f64, body: &str| {
            decoded.value_or_decode(id, ct, body, || Document::decode(id, ct, body))
        };
        let Some(at) = self.snapshot else {
            return self.scan_with(start, end, order, limit, value);
        };
        let mut ranges = std::mem::replace(
            &mut self.ranges,
            RangeCache::new(self.source.recent.clone()),
        );
        let found = ranges.scan_or_read(
            at,
            start,
            end,
            order,
            limit,
            &mut |start, end, order, limit| self.scan_with(start, end, order, limit, value),
        );
        self.ranges = ranges;
        found
    }

    fn scan_documents(
        &mut self,
        after: Option<&DocumentId>,
        limit: usize,
    ) -> Result<Vec<Document>> {
        // "" sorts before every id, so `None` starts at the first document.
        self.flush_if(buffer::touches_documents)?;
        let after = after.map_or("", DocumentId::as_str);
        let rows = self.query(
            "SELECT id, creation_time, body FROM documents
             WHERE id > $1 ORDER BY id ASC LIMIT $2",
            &[&after, &as_bigint(limit)],
        )?;
        rows.into_iter()
            .map(|r| Document::decode(r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    fn put_document(&mut self, doc: &Document) -> Result<()> {
        self.wrote = true;
        self.buffer_put_document(doc)
    }

    fn insert_document(&mut self, doc: &Document) -> Result<()> {
        if self.txn == Txn::Write {
            self.wrote = true;
            return self.buffer_insert_document(doc);
        }
        // Outside a transaction it commits at once, unrecorded and without a
        // timestamp of its own: no snapshot from around it keeps ranges.
        let recent = self.source.recent.clone();
        recent.unknown_write_begins();
        let inserted = self.execute(
            "INSERT INTO documents (id, creation_time, body) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
            &[
                &doc.id.as_str(),
                &doc.creation_time,
                &encode_body(&doc.fields),
            ],
        );
        recent.unknown_write_ends();
        if inserted? == 0 {
            return Err(StoreError::IdTaken(doc.id.clone()));
        }
        Ok(())
    }

    fn delete_document(&mut self, id: &DocumentId) -> Result<()> {
        self.wrote = true;
        self.buffer_delete_document(id)
    }

    fn put_index_entry(&mut self, key: &[u8], id: &DocumentId) -> Result<()> {
        self.wrote = true;
        self.buffer_index_entry(key, Some(id))
    }

    fn delete_index_entry(&mut self, key: &[u8]) -> Result<()> {
        self.wrote = true;
        self.buffer_index_entry(key, None)
    }

    fn get_outcome(
        &mut self,
        session_id: &str,
        request_id: u32,
        fingerprint: &[u8],
    ) -> Result<Option<MutationOutcome>> {
        self.flush_if(buffer::touches_outcome(
            session_id,
            i64::from(request_id),
            fingerprint,
        ))?;
        let rows = self.query(
            "SELECT ts, path, value FROM mutation_outcomes
             WHERE session_id = $1 AND request_id = $2 AND fingerprint = $3",
            &[&session_id, &i64::from(request_id), &fingerprint],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let value = Value::from_json_str(row.get(2), "stored outcome").map_err(|e| {
            StoreError::Corrupt(format!("outcome of {session_id}/{request_id}: {e}"))
        })?;
        Ok(Some(MutationOutcome {
            session_id: session_id.to_string(),
            request_id,
            fingerprint: fingerprint.to_vec(),
            ts: Timestamp::new(row.get::<_, i64>(0) as u64),
            path: row.get(1),
            value,
        }))
    }

    fn put_outcome(&mut self, outcome: &MutationOutcome) -> Result<()> {
        self.buffer_outcome(outcome)
    }

    fn purge_outcomes(&mut self, before: Timestamp, limit: usize) -> Result<usize> {
        self.flush_for_write()?;
        let n = self.execute(
            "DELETE FROM mutation_outcomes WHERE (session_id, request_id, fingerprint) IN
             (SELECT session_id, request_id, fingerprint FROM mutation_outcomes
              WHERE ts < $1 ORDER BY ts LIMIT $2)",
            &[&(before.get() as i64), &as_bigint(limit)],
        )?;
        Ok(n as usize)
    }

    fn count_outcomes(&mut self) -> Result<usize> {
        self.flush_if(buffer::touches_outcomes)?;
        let rows = self.query("SELECT count(*) FROM mutation_outcomes", &[])?;
        let n: i64 = rows.first().map_or(0, |r| r.get(0));
        Ok(n as usize)
    }

    fn log_commit(&mut self, ts: Timestamp, writes: &WriteSet) -> Result<()> {
        self.in_write("log_commit outside a write transaction")?;
        let ts = i64::try_from(ts.get()).map_err(|_| {
            engine_error(format!(
                "commit timestamp {ts:?} is past PostgreSQL's bigint"
            ))
        })?;
        self.log.push((ts, writes.encode()));
        Ok(())
    }
}

impl Drop for PostgresConnection {
    fn drop(&mut self) {
        if self.txn != Txn::None {
            // A transaction dropped without commit rolls back: nothing of it
            // is kept (the server would roll it back when the socket closes;
            // saying so here makes it happen before the drop returns).
            let _ = self.simple("ROLLBACK");
        }
        drop_client(self.client.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livebase_store::readset::WriteSet;
    use livebase_testkit::postgres::{drop_schema, server_url, unique_name};

    /// A mutation as the store's writer makes one: the resend check, a new
    /// document with four index entries, the outcome and the log's row;
    /// `isolated`, in a savepoint of its own (as in a group of several).
    fn mutation(c: &mut PostgresConnection, n: u32, isolated: bool) {
        if isolated {
            c.savepoint().unwrap();
        }
        let fingerprint = [n as u8; 32];
        assert_eq!(c.get_outcome("s", n, &fingerprint).unwrap(), None);
        let doc = Document {
            id: DocumentId::generate("t"),
            creation_time: f64::from(n),
            fields: Object::new(),
        };
        c.insert_document(&doc).unwrap();
        for index in 0..4u8 {
            let mut key = vec![index];
            key.extend_from_slice(doc.id.as_str().as_bytes());
            c.put_index_entry(&key, &doc.id).unwrap();
        }
        if isolated {
            c.release_savepoint().unwrap();
        }
        c.put_outcome(&MutationOutcome {
            session_id: "s".into(),
            request_id: n,
            fingerprint: fingerprint.to_vec(),
            ts: Timestamp::new(u64::from(n)),
            path: "f".into(),
            value: Value::Null,
        })
        .unwrap();
    }

    /// The writer's buffered writes make a mutation few round trips: its
    /// begin, its two reads (the resend check, the new id's check), the
    /// stamp with every write, `COMMIT`; a mutation more in the group adds
    /// only its reads.
    #[test]
    fn a_mutation_is_its_reads_and_three_round_trips() {
        let Some(url) = server_url("a_mutation_is_its_reads_and_three_round_trips") else {
            return;
        };
        let p = PostgresPersistence::open_schema(&url, &unique_name("trips"), None).unwrap();
        let mut c = p.connection().unwrap();
        let mut n = 0;
        for group in [1, 1, 3] {
            let sent = c.sent;
            c.begin_write().unwrap();
            for _ in 0..group {
                n += 1;
                mutation(&mut c, n, group > 1);
            }
            let ts = Timestamp::new(u64::from(n));
            c.log_commit(ts, &WriteSet::default()).unwrap();
            c.commit(ts).unwrap();
            // The first commit prepares its statements; the others are
            // counted.
            if n > 1 {
                assert_eq!(c.sent - sent, 3 + 2 * group, "a group of {group}");
            }
        }
        c.begin_read().unwrap();
        assert_eq!(c.count_outcomes().unwrap(), 5);
        assert_eq!(c.scan(&[3], &[4], Order::Asc, 10).unwrap().len(), 5);
        c.end_read().unwrap();
        drop(c);
        drop_schema(&url, p.schema());
    }

    /// Commits one new document with index key `key`, telling the node
    /// what it wrote and logging it, as the writer does; its timestamp.
    fn commit(w: &mut PostgresConnection, key: Vec<u8>) -> Timestamp {
        let ts = w.begin_write().unwrap().next_after(0);
        let doc = Document {
            id: DocumentId::generate("t"),
            creation_time: 1.0,
            fields: Object::new(),
        };
        w.insert_document(&doc).unwrap();
        w.put_index_entry(&key, &doc.id).unwrap();
        let mut writes = WriteSet::new();
        let write = livebase_store::readset::DocumentWrite {
            table: "t".into(),
            id: doc.id.as_str().to_string(),
            kind: livebase_store::readset::WriteKind::Insert,
        };
        writes.record(write, &[], &[key]);
        let writes = Arc::new(writes);
        w.will_commit(ts, &writes);
        w.log_commit(ts, &writes).unwrap();
        w.commit(ts).unwrap();
        ts
    }

    /// The entries of `[k, l)` one read finds, and its round trips (its
    /// begin excluded).
    fn read(r: &mut PostgresConnection) -> (usize, u64) {
        r.begin_read().unwrap();
        let sent = r.sent;
        let n = r.scan_values(b"k", b"l", Order::Asc, 1_000).unwrap().len();
        let trips = r.sent - sent;
        r.end_read().unwrap();
        (n, trips)
    }

    /// On the node that commits, a live query's re-run over an unchanged
    /// range makes no round trip, and over a changed one reads only the
    /// changed key: the node's connections keep what they read and bring it
    /// up to date from the node's commits.
    #[test]
    fn a_kept_range_is_read_again_only_where_the_nodes_commits_wrote() {
        let Some(url) = server_url("a_kept_range_is_read_again_only_where") else {
            return;
        };
        let p = PostgresPersistence::open_schema(&url, &unique_name("kept"), None).unwrap();
        let (mut w, mut r) = (p.connection().unwrap(), p.connection().unwrap());
        for n in 0..50 {
            commit(&mut w, vec![b'k', n]);
        }
        assert_eq!(read(&mut r), (50, 1), "the first read scans");
        assert_eq!(read(&mut r), (50, 0), "nothing changed: nothing is read");
        commit(&mut w, vec![b'k', 200]);
        assert_eq!(read(&mut r), (51, 1), "one key written: one point read");
        drop((w, r));
        drop_schema(&url, p.schema());
    }

    /// A follower keeps ranges too, from the commits its log reader reads: a
    /// re-run after a commit outside the range makes no round trip.
    #[test]
    fn a_follower_reads_nothing_again_for_a_commit_outside_its_range() {
        use livebase_store::persistence::LogRead;
        let Some(url) = server_url("a_follower_reads_nothing_again") else {
            return;
        };
        let schema = unique_name("follower");
        let writer = PostgresPersistence::open_schema(&url, &schema, None).unwrap();
        let follower = PostgresPersistence::open_schema(&url, &schema, None).unwrap();
        let (mut w, mut r) = (writer.connection().unwrap(), follower.connection().unwrap());
        let mut log = follower.commit_log().unwrap().unwrap();
        let mut last = Timestamp::new(0);
        for n in 0..20u8 {
            last = commit(&mut w, vec![b'k', n]);
        }
        let mut follow = |after: Timestamp| {
            let read = log.read_after(after, 100, std::time::Duration::ZERO);
            assert!(matches!(read, Ok(LogRead::Commits(c)) if !c.is_empty()));
        };
        follow(Timestamp::new(0));
        assert_eq!(read(&mut r), (20, 1), "the first read scans");
        assert_eq!(read(&mut r), (20, 0));
        let outside = commit(&mut w, b"x".to_vec());
        assert_eq!(read(&mut r), (20, 1), "a commit not read from the log yet");
        follow(last);
        assert_eq!(read(&mut r), (20, 0), "brought up to date from the log");
        let inside = commit(&mut w, vec![b'k', 99]);
        follow(outside);
        assert_eq!(read(&mut r), (21, 1), "one key written: one point read");
        commit(&mut w, b"y".to_vec());
        follow(inside);
        assert_eq!(read(&mut r), (21, 0), "a commit outside: nothing read");
        drop((w, r, log));
        drop_schema(&url, &schema);
    }

    /// A range scan reads as many entries as its limit asks for, not the
    /// whole range: the plan walks the B-tree in its order under the limit,
    /// with no sort of the range — also as a generic plan, the one a
    /// prepared statement ends up with, whose estimates know no bounds.
    #[test]
    fn a_range_scan_stops_at_its_limit_instead_of_sorting_the_range() {
        let Some(url) = server_url("a_range_scan_stops_at_its_limit") else {
            return;
        };
        let p = PostgresPersistence::open_schema(&url, &unique_name("plan"), None).unwrap();
        let mut c = p.client().unwrap();
        c.batch_execute(
            "INSERT INTO documents SELECT 't_' || i, i, '{}' FROM generate_series(1, 5000) i;
             INSERT INTO index_entries (key, doc_id)
                 SELECT convert_to('k' || lpad(i::text, 6, '0'), 'UTF8'), 't_' || i
                 FROM generate_series(1, 5000) i;
             ANALYZE;
             SET plan_cache_mode = force_generic_plan;",
        )
        .unwrap();
        for (n, sql) in [SCAN_ASC, SCAN_DESC].into_iter().enumerate() {
            // A named prepared statement, so that EXPLAIN shows its generic
            // plan (EXPLAIN of a statement with values plans for them).
            let plan: String = c
                .simple_query(&format!(
                    "PREPARE scan{n} (bytea, bytea, bigint) AS {sql};
                     EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
                         EXECUTE scan{n} ('k'::bytea, 'l'::bytea, 10);"
                ))
                .unwrap()
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(row) => {
                        row.get(0).map(|l| l.to_string() + "\n")
                    }
                    _ => None,
                })
                .collect();
            assert!(!plan.contains("Sort"), "{plan}");
            assert!(plan.contains("Index Scan"), "{plan}");
            assert!(plan.contains("(actual rows=10 loops=1)"), "{plan}");
        }
        drop_client(Some(c));
        drop_schema(&url, p.schema());
    }
}

//! Persistence: the [`Persistence`] trait every storage engine implements, the
//! stored [`Document`], and how documents map to keys in the one index key space.
//!
//! The layout is one documents table plus one index-entries table keyed by
//! order-preserving key bytes. Every key starts with the encoded `(table, index)`
//! pair, so all indexes of all tables share one ordered key space and read sets
//! and write sets are plain byte intervals and byte keys.
//!
//! Engines fail with [`crate::StoreError`], which the rest of the crate turns
//! into an internal [`crate::Error`].
//!
//! **Invariant:** nothing above this module sees a SQL connection; functions
//! reach the store only through [`crate::transaction::Transaction`].

pub mod decoded;
pub mod ranges;
pub mod sqlite;
pub mod wal;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use livebase_schema::key::{encode_tuple, encode_value};
use livebase_schema::table::{IndexDefinition, CREATION_TIME_FIELD, ID_FIELD};
use livebase_schema::{DocumentId, Object, Timestamp, Value};

use crate::error::{StoreError, StoreResult as Result};
use crate::readset::{Commit, WriteSet};

/// A stored document: its id, creation time and user fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub id: DocumentId,
    /// Milliseconds since the epoch.
    pub creation_time: f64,
    pub fields: Object,
}

impl Document {
    /// A field, the system fields `_id` and `_creationTime` included (those
    /// two are made on the spot; user fields are borrowed, not copied).
    pub fn field(&self, name: &str) -> Option<Cow<'_, Value>> {
        if name == ID_FIELD {
            Some(Cow::Owned(Value::from(self.id.as_str())))
        } else if name == CREATION_TIME_FIELD {
            Some(Cow::Owned(Value::Float64(self.creation_time)))
        } else {
            self.fields.get(name).map(Cow::Borrowed)
        }
    }

    /// The document as functions and clients see it: user fields plus `_id` and
    /// `_creationTime`.
    pub fn to_value(&self) -> Value {
        let mut o = self.fields.clone();
        o.insert(ID_FIELD.into(), Value::from(self.id.as_str()));
        o.insert(
            CREATION_TIME_FIELD.into(),
            Value::Float64(self.creation_time),
        );
        Value::Object(o.into())
    }

    /// A stored document from its id, creation time and stored JSON text, as
    /// every engine keeps them; a malformed one is [`StoreError::Corrupt`].
    pub fn decode(id: &str, creation_time: f64, body: &str) -> Result<Document> {
        let id = DocumentId::parse(id).ok_or_else(|| {
            StoreError::Corrupt(format!("stored document id `{id}` is malformed"))
        })?;
        let fields = match Value::from_json_str(body, "document") {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                return Err(StoreError::Corrupt(format!(
                    "stored document {id} is not an object"
                )))
            }
            Err(e) => return Err(StoreError::Corrupt(format!("stored document {id}: {e}"))),
        };
        Ok(Document {
            id,
            creation_time,
            fields: fields.into_fields(),
        })
    }

    /// [`Document::to_value`], moving the fields instead of copying them.
    pub fn into_value(self) -> Value {
        let mut o = self.fields;
        o.insert(ID_FIELD.into(), Value::from(self.id.as_str()));
        o.insert(
            CREATION_TIME_FIELD.into(),
            Value::Float64(self.creation_time),
        );
        Value::Object(o.into())
    }

    pub fn table(&self) -> &str {
        self.id.table()
    }
}

/// The key prefix of one index of one table: every key of that index starts
/// with it and no other key does.
pub fn index_prefix(table: &str, index: &str) -> Vec<u8> {
    encode_tuple([Some(&Value::from(table)), Some(&Value::from(index))])
}

/// The key of `doc` in `index`: the prefix, then the values of the index's key
/// fields (declared fields, `_creationTime`, `_id`); a missing field encodes as
/// "missing", which sorts before null.
pub fn index_key(table: &str, index: &IndexDefinition, doc: &Document) -> Vec<u8> {
    let mut key = index_prefix(table, index.name());
    for field in index.key_fields() {
        encode_value(&mut key, doc.field(field).as_deref());
    }
    key
}

/// A client mutation's outcome, kept (by session and request id) so that a
/// resent mutation is answered with what its first run returned instead of
/// running again. Stored beside the documents, not as one: it is written by
/// every client mutation that wrote, and a plain row costs the writer a
/// fraction of a document with its index entries. Only mutations that wrote
/// keep one: a failure or a mutation that wrote nothing has no effect a
/// resend could repeat, so it leaves nothing behind.
#[derive(Clone, Debug, PartialEq)]
pub struct MutationOutcome {
    pub session_id: String,
    pub request_id: u32,
    /// A digest of who called, which function and with what arguments: the
    /// outcome answers only a request with the same session, request id and
    /// fingerprint — a resend — never another caller who learned the
    /// session id.
    pub fingerprint: Vec<u8>,
    /// The commit timestamp the first run answered with.
    pub ts: Timestamp,
    /// The function, for the logs.
    pub path: String,
    /// What the first run returned.
    pub value: Value,
}

/// Scan direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// A storage engine. SQLite is the embedded default; PostgreSQL
/// (`livebase-store-postgres`) implements it too, and both pass the same
/// conformance suite.
pub trait Persistence: Send + Sync + 'static {
    /// Opens a new connection. Each connection is used by one thread at a time.
    fn connect(&self) -> Result<Box<dyn StoreConnection>>;

    /// A reader of the log of commits, when several nodes share this store
    /// (PostgreSQL): every node learns of the others' commits by reading it
    /// (the writer tells of its own at once, too). `None` (SQLite): commits
    /// are made and seen in this process only.
    fn commit_log(&self) -> Result<Option<Box<dyn CommitLog>>> {
        Ok(None)
    }
}

/// The commit log, as one node reads it: each commit's timestamp and write
/// set, appended by the writer in the commit's own transaction
/// ([`StoreConnection::log_commit`]), so a commit is in the log exactly when
/// it is visible, and serial commits make timestamp order visibility order.
pub trait CommitLog: Send {
    /// The commits after `after`, oldest first, at most `limit`. When there
    /// is none yet, waits up to `wait` for one to be announced (and then
    /// reads again), so a reader neither spins nor misses one: a lost
    /// announcement costs at most `wait`.
    fn read_after(&mut self, after: Timestamp, limit: usize, wait: Duration) -> Result<LogRead>;
}

/// The writer's lease and the settings several nodes share, as a store that
/// several nodes may serve keeps them (PostgreSQL): one node at a time is
/// the writer, and every commit it makes is fenced by its claim.
pub trait Lease: Send + Sync + 'static {
    /// Tries to become the writer: `Ok(true)` once this node holds the
    /// lease (and every commit it makes is fenced by it), `Ok(false)` while
    /// another node does; an error is worth trying again.
    fn try_claim(&self) -> Result<bool>;
    /// Whether this node held the lease and has lost it (its session ended,
    /// or another node took it over): its commits are refused from then on.
    fn lost(&self) -> bool;
    /// Records `url` as where the other nodes forward writes to, as the
    /// holder of the lease.
    fn advertise(&self, url: &str) -> Result<()>;
    /// Where the writer takes forwarded writes, if a writer advertised.
    fn writer(&self) -> Result<Option<String>>;
    /// The secret `name` every node shares, made by the first to ask: from
    /// `seed` if it has one, else random.
    fn secret(&self, name: &str, seed: Option<&[u8]>) -> Result<Vec<u8>>;
}

/// What a read of the commit log found.
#[derive(Debug)]
pub enum LogRead {
    /// The next commits, oldest first (none if `wait` passed without one).
    Commits(Vec<Commit>),
    /// Commits after the reader's position were trimmed from the log before
    /// it read them: what changed up to `through` (the last trimmed commit)
    /// is unknown, so a reader must take everything as changed, then go on
    /// reading after `through`.
    Gap { through: Timestamp },
}

/// One connection to the store. A connection is in at most one transaction;
/// reads inside a transaction see one consistent snapshot (plus, in a write
/// transaction, its own writes).
pub trait StoreConnection: Send {
    /// Starts a read-only snapshot; returns the timestamp of the last commit it
    /// sees.
    fn begin_read(&mut self) -> Result<Timestamp>;
    /// Ends a read-only snapshot.
    fn end_read(&mut self) -> Result<()>;
    /// Starts the (single) write transaction; returns the last commit's
    /// timestamp. Only one writer exists at a time.
    fn begin_write(&mut self) -> Result<Timestamp>;
    /// Makes the write transaction durable with commit timestamp `ts`; when this
    /// returns Ok the commit survives a killed process.
    fn commit(&mut self, ts: Timestamp) -> Result<()>;
    /// Discards the write transaction.
    fn rollback(&mut self) -> Result<()>;
    /// Marks a point inside the write transaction that
    /// [`StoreConnection::rollback_to_savepoint`] can return to (one level).
    fn savepoint(&mut self) -> Result<()>;
    /// Keeps everything since the savepoint and forgets the savepoint.
    fn release_savepoint(&mut self) -> Result<()>;
    /// Undoes everything since the savepoint and forgets the savepoint; the
    /// transaction stays open.
    fn rollback_to_savepoint(&mut self) -> Result<()>;

    fn get(&mut self, id: &DocumentId) -> Result<Option<Document>>;
    /// [`StoreConnection::get`], the document as its value
    /// ([`Document::into_value`]), shared by an engine that keeps decoded
    /// documents.
    fn get_value(&mut self, id: &DocumentId) -> Result<Option<Value>> {
        Ok(self.get(id)?.map(Document::into_value))
    }
    /// Index entries with `start <= key < end`, in `order`, at most `limit`,
    /// each with its document.
    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Document)>>;
    /// [`StoreConnection::scan`], each document as its value
    /// ([`Document::into_value`]). An engine that keeps decoded documents
    /// hands out the values it keeps, shared rather than copied.
    fn scan_values(
        &mut self,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Value)>> {
        Ok(self
            .scan(start, end, order, limit)?
            .into_iter()
            .map(|(key, doc)| (key, doc.into_value()))
            .collect())
    }
    /// Every document, of every table, in id order: at most `limit` of those
    /// whose id sorts after `after` (`None` = from the first). Not an index
    /// scan — it is how a backup reads the whole store, page by page, inside
    /// one read snapshot.
    fn scan_documents(&mut self, after: Option<&DocumentId>, limit: usize)
        -> Result<Vec<Document>>;

    /// Inserts or overwrites a document.
    fn put_document(&mut self, doc: &Document) -> Result<()>;
    /// Inserts a new document; fails, changing nothing, if its id exists.
    fn insert_document(&mut self, doc: &Document) -> Result<()>;
    fn delete_document(&mut self, id: &DocumentId) -> Result<()>;
    fn put_index_entry(&mut self, key: &[u8], id: &DocumentId) -> Result<()>;
    fn delete_index_entry(&mut self, key: &[u8]) -> Result<()>;

    /// The stored outcome of request `request_id` of session `session_id`
    /// with this fingerprint.
    fn get_outcome(
        &mut self,
        session_id: &str,
        request_id: u32,
        fingerprint: &[u8],
    ) -> Result<Option<MutationOutcome>>;
    /// Stores an outcome (replacing one with the same session, request and
    /// fingerprint).
    fn put_outcome(&mut self, outcome: &MutationOutcome) -> Result<()>;
    /// Deletes at most `limit` outcomes whose `ts` is before `before`, oldest
    /// first; returns how many.
    fn purge_outcomes(&mut self, before: Timestamp, limit: usize) -> Result<usize>;
    /// How many outcomes are stored.
    fn count_outcomes(&mut self) -> Result<usize>;

    /// Appends commit `ts` and what it wrote to the store's commit log, in
    /// the open write transaction (see [`CommitLog`]). Engines without a log
    /// (SQLite) keep nothing.
    fn log_commit(&mut self, ts: Timestamp, writes: &WriteSet) -> Result<()> {
        let _ = (ts, writes);
        Ok(())
    }

    /// Tells the connection, in the open write transaction and before it
    /// commits, what commit `ts` writes. SQLite keeps it where its readers
    /// bring the index ranges they keep up to date
    /// ([`ranges`](crate::persistence::ranges)); a write transaction that
    /// writes documents without saying what commits them makes every reader
    /// drop its ranges. Engines that keep no ranges ignore it.
    fn will_commit(&mut self, ts: Timestamp, writes: &Arc<WriteSet>) {
        let _ = (ts, writes);
    }
}

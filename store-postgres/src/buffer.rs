//! The writer's buffered writes: inside a write transaction, document,
//! index-entry and outcome writes are kept in the connection, each key
//! coalesced to its last state, and sent as a few multi-row statements —
//! with the commit's stamp, in its one statement, when nothing asked for
//! them earlier. A mutation then costs a round trip for the transaction's
//! begin, one per read (and per insert, whose taken id is checked at the
//! call), one for the stamp with every write, and one for `COMMIT`. (A
//! buffer grown past [`SEND_PAST_BYTES`] is sent before it grows further.)
//!
//! A read sees the transaction's own writes: whatever is buffered that the
//! read could see is sent first. A savepoint is kept in the connection too
//! (the writes since it, in a layer of their own that a rollback to it
//! drops) and made on the server only when writes made after it must be
//! sent before it ends. A failed send fails the call that caused it, and
//! the transaction can then commit nothing — unless the writes lost were
//! all made after a savepoint on the server, which a rollback to it undoes.

use std::collections::HashMap;

use livebase_schema::DocumentId;
use livebase_store::persistence::{Document, MutationOutcome};
use livebase_store::StoreError;
use postgres::types::ToSql;

use crate::{encode_body, engine_error, PostgresConnection, Result, Txn};

/// The data-modifying statements that apply one batch of writes
/// (`$1`–`$16`, see [`Writes::params`]); each key is in at most one of them
/// and at most once, as PostgreSQL's `ON CONFLICT DO UPDATE` requires.
/// Documents written over after a delete in the same batch are replaced
/// whole (their creation time too); a plain put keeps a stored document's
/// creation time, as the single-row put does.
macro_rules! apply_writes {
    () => {
        "WITH put_documents AS (
        INSERT INTO documents (id, creation_time, body)
        SELECT * FROM unnest($1::text[], $2::float8[], $3::text[])
        ON CONFLICT (id) DO UPDATE SET body = excluded.body
    ), replace_documents AS (
        INSERT INTO documents (id, creation_time, body)
        SELECT * FROM unnest($4::text[], $5::float8[], $6::text[])
        ON CONFLICT (id) DO UPDATE SET creation_time = excluded.creation_time, body = excluded.body
    ), delete_documents AS (
        DELETE FROM documents WHERE id = ANY($7::text[])
    ), put_entries AS (
        INSERT INTO index_entries (key, doc_id)
        SELECT * FROM unnest($8::bytea[], $9::text[])
        ON CONFLICT (key_prefix, key_hash) DO UPDATE SET doc_id = excluded.doc_id
    ), delete_entries AS (
        DELETE FROM index_entries WHERE (key_prefix, key_hash) IN
            (SELECT substring(k FROM 1 FOR 1024), sha256(k) FROM unnest($10::bytea[]) AS k)
    ), put_outcomes AS (
        INSERT INTO mutation_outcomes (session_id, request_id, fingerprint, ts, path, value)
        SELECT * FROM unnest($11::text[], $12::bigint[], $13::bytea[], $14::bigint[],
                             $15::text[], $16::text[])
        ON CONFLICT (session_id, request_id, fingerprint)
        DO UPDATE SET ts = excluded.ts, path = excluded.path, value = excluded.value
    )"
    };
}

/// Applies one batch of writes.
const APPLY: &str = concat!(apply_writes!(), " SELECT 1");

/// Applies one batch of writes, inserts the commit's log rows (`$19`,
/// `$20`: timestamps and write sets) and stamps the commit (`$17`), fenced
/// by the epoch `$18` as the log's stamp is (0: no fence): the whole commit
/// but its `COMMIT` in one statement.
pub(crate) const APPLY_AND_STAMP: &str = concat!(
    apply_writes!(),
    ", logged AS (
        INSERT INTO commit_log (ts, epoch, writes)
        SELECT l.ts, $18::bigint, l.writes FROM unnest($19::bigint[], $20::bytea[]) AS l(ts, writes)
    )
    UPDATE meta SET value = $17 WHERE name = 'last_ts'
      AND ($18::bigint = 0 OR (SELECT value FROM meta WHERE name = 'epoch') = $18::bigint)"
);

/// Buffered writes past about this many bytes are sent before the next one
/// is buffered: a batch stays far under PostgreSQL's limit on one message
/// (1 GB), however many large mutations a group commit holds.
const SEND_PAST_BYTES: usize = 64 << 20;

/// Whether the documents table has a row with id `$1`.
const DOCUMENT_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM documents WHERE id = $1)";

/// A document's last buffered state.
#[derive(Clone, Debug)]
enum DocumentWrite {
    /// Stored with this body; with this creation time too when it is new,
    /// or when `replace` (it was deleted earlier in the batch).
    Put {
        creation_time: f64,
        body: String,
        replace: bool,
    },
    Delete,
}

impl DocumentWrite {
    /// This state followed by `next`: the state one write of `next`'s
    /// result would leave.
    fn then(self, next: DocumentWrite) -> DocumentWrite {
        match (self, next) {
            (
                DocumentWrite::Put {
                    creation_time,
                    replace,
                    ..
                },
                DocumentWrite::Put {
                    body,
                    replace: false,
                    ..
                },
            ) => DocumentWrite::Put {
                creation_time,
                body,
                replace,
            },
            (
                DocumentWrite::Delete,
                DocumentWrite::Put {
                    creation_time,
                    body,
                    ..
                },
            ) => DocumentWrite::Put {
                creation_time,
                body,
                replace: true,
            },
            (_, next) => next,
        }
    }
}

/// An outcome's row, encoded.
#[derive(Clone, Debug)]
struct OutcomeRow {
    ts: i64,
    path: String,
    value: String,
}

/// Buffered writes, each key at its last state.
#[derive(Default, Debug)]
pub(crate) struct Writes {
    documents: HashMap<String, DocumentWrite>,
    /// `Some(id)`: put; `None`: deleted.
    entries: HashMap<Vec<u8>, Option<String>>,
    outcomes: HashMap<(String, i64, Vec<u8>), OutcomeRow>,
}

impl Writes {
    pub(crate) fn is_empty(&self) -> bool {
        self.documents.is_empty() && self.entries.is_empty() && self.outcomes.is_empty()
    }

    fn write_document(&mut self, id: &str, write: DocumentWrite) {
        let next = match self.documents.remove(id) {
            Some(prev) => prev.then(write),
            None => write,
        };
        self.documents.insert(id.to_string(), next);
    }

    /// Applies `later` (writes made after these) on top of these.
    fn extend(&mut self, later: Writes) {
        for (id, write) in later.documents {
            self.write_document(&id, write);
        }
        self.entries.extend(later.entries);
        self.outcomes.extend(later.outcomes);
    }

    /// The parameters of [`APPLY`] (`$1`–`$16`), as owned arrays.
    fn arrays(&self) -> Arrays<'_> {
        let mut a = Arrays::default();
        for (id, write) in &self.documents {
            match write {
                DocumentWrite::Put {
                    creation_time,
                    body,
                    replace: false,
                } => {
                    a.put_ids.push(id);
                    a.put_times.push(*creation_time);
                    a.put_bodies.push(body);
                }
                DocumentWrite::Put {
                    creation_time,
                    body,
                    replace: true,
                } => {
                    a.replace_ids.push(id);
                    a.replace_times.push(*creation_time);
                    a.replace_bodies.push(body);
                }
                DocumentWrite::Delete => a.delete_ids.push(id),
            }
        }
        for (key, id) in &self.entries {
            match id {
                Some(id) => {
                    a.entry_keys.push(key);
                    a.entry_ids.push(id);
                }
                None => a.delete_keys.push(key),
            }
        }
        for ((session, request, fingerprint), row) in &self.outcomes {
            a.sessions.push(session);
            a.requests.push(*request);
            a.fingerprints.push(fingerprint);
            a.ts.push(row.ts);
            a.paths.push(&row.path);
            a.values.push(&row.value);
        }
        a
    }
}

#[derive(Default)]
struct Arrays<'a> {
    put_ids: Vec<&'a str>,
    put_times: Vec<f64>,
    put_bodies: Vec<&'a str>,
    replace_ids: Vec<&'a str>,
    replace_times: Vec<f64>,
    replace_bodies: Vec<&'a str>,
    delete_ids: Vec<&'a str>,
    entry_keys: Vec<&'a [u8]>,
    entry_ids: Vec<&'a str>,
    delete_keys: Vec<&'a [u8]>,
    sessions: Vec<&'a str>,
    requests: Vec<i64>,
    fingerprints: Vec<&'a [u8]>,
    ts: Vec<i64>,
    paths: Vec<&'a str>,
    values: Vec<&'a str>,
}

impl Arrays<'_> {
    fn params(&self) -> [&(dyn ToSql + Sync); 16] {
        [
            &self.put_ids,
            &self.put_times,
            &self.put_bodies,
            &self.replace_ids,
            &self.replace_times,
            &self.replace_bodies,
            &self.delete_ids,
            &self.entry_keys,
            &self.entry_ids,
            &self.delete_keys,
            &self.sessions,
            &self.requests,
            &self.fingerprints,
            &self.ts,
            &self.paths,
            &self.values,
        ]
    }
}

/// The write transaction's buffered writes and savepoint.
#[derive(Default, Debug)]
pub(crate) struct Buffer {
    /// Writes not sent yet (made before the buffered savepoint, if any).
    writes: Writes,
    /// `Some` while a savepoint is open that the server has not been told
    /// of: the writes made since it.
    since_savepoint: Option<Writes>,
    /// The open savepoint was made on the server (`SAVEPOINT mutation`):
    /// every write in `writes` was made after it.
    savepoint_sent: bool,
    /// A send of buffered writes failed: the transaction commits nothing
    /// (but a rollback to a savepoint made on the server before them).
    failed: bool,
    /// About how many bytes were buffered since the last send (writes
    /// coalesced away still count).
    bytes: usize,
}

impl Buffer {
    /// The latest buffered state of document `id`, if any.
    fn document(&self, id: &str) -> Option<&DocumentWrite> {
        self.since_savepoint
            .as_ref()
            .and_then(|w| w.documents.get(id))
            .or_else(|| self.writes.documents.get(id))
    }

    /// Where a write goes, counting `bytes` of it.
    fn top(&mut self, bytes: usize) -> &mut Writes {
        self.bytes += bytes;
        self.since_savepoint.as_mut().unwrap_or(&mut self.writes)
    }

    fn any(&self, f: impl Fn(&Writes) -> bool) -> bool {
        f(&self.writes) || self.since_savepoint.as_ref().is_some_and(f)
    }
}

impl PostgresConnection {
    fn buffering(&self) -> bool {
        self.txn == Txn::Write
    }

    /// Sends `writes` in one statement. A failure marks the transaction.
    fn apply(&mut self, writes: Writes) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let arrays = writes.arrays();
        let applied = self.execute(APPLY, &arrays.params()).map(drop);
        if applied.is_err() {
            self.buffer.failed = true;
        }
        applied
    }

    /// Sends every buffered write: those made before a buffered savepoint,
    /// then (when there are any since it) the savepoint itself and the rest.
    pub(crate) fn flush(&mut self) -> Result<()> {
        let writes = std::mem::take(&mut self.buffer.writes);
        self.apply(writes)?;
        if self
            .buffer
            .since_savepoint
            .as_ref()
            .is_some_and(|w| !w.is_empty())
        {
            self.send_savepoint()?;
            let writes = std::mem::take(&mut self.buffer.writes);
            self.apply(writes)?;
        }
        self.buffer.bytes = 0;
        Ok(())
    }

    /// Makes the buffered savepoint on the server (after sending the
    /// writes made before it); the writes made since it become the
    /// unsent ones.
    fn send_savepoint(&mut self) -> Result<()> {
        let Some(since) = self.buffer.since_savepoint.take() else {
            return Ok(());
        };
        let before = std::mem::take(&mut self.buffer.writes);
        self.apply(before)?;
        if let Err(e) = self.simple("SAVEPOINT mutation") {
            self.buffer.failed = true;
            return Err(e);
        }
        self.buffer.savepoint_sent = true;
        self.buffer.writes = since;
        Ok(())
    }

    /// Before a read `touches` could see buffered writes: sends them.
    pub(crate) fn flush_if(&mut self, touches: impl Fn(&Writes) -> bool) -> Result<()> {
        if self.buffering() && self.buffer.any(touches) {
            self.flush()?;
        }
        Ok(())
    }

    /// Before a statement that writes by itself: sends everything and
    /// makes a buffered savepoint on the server, so that the statement
    /// falls after it.
    pub(crate) fn flush_for_write(&mut self) -> Result<()> {
        if self.buffering() {
            self.flush()?;
            self.send_savepoint()?;
        }
        Ok(())
    }

    /// Buffers (or, outside a write transaction, sends) a document write.
    fn write_document(&mut self, id: &DocumentId, write: DocumentWrite) -> Result<()> {
        let bytes = id.as_str().len()
            + match &write {
                DocumentWrite::Put { body, .. } => body.len() + 8,
                DocumentWrite::Delete => 0,
            };
        self.buffer.top(bytes).write_document(id.as_str(), write);
        self.send_unless_buffering()
    }

    /// After a write was buffered: outside a write transaction, sends it;
    /// inside one, sends the buffer once it grew past [`SEND_PAST_BYTES`].
    fn send_unless_buffering(&mut self) -> Result<()> {
        if self.buffering() {
            if self.buffer.bytes > SEND_PAST_BYTES {
                self.flush()?;
            }
            return Ok(());
        }
        let writes = std::mem::take(&mut self.buffer.writes);
        let applied = self.apply(writes);
        self.buffer.failed = false;
        applied
    }

    pub(crate) fn buffer_put_document(&mut self, doc: &Document) -> Result<()> {
        let write = DocumentWrite::Put {
            creation_time: doc.creation_time,
            body: encode_body(&doc.fields),
            replace: false,
        };
        self.write_document(&doc.id, write)
    }

    /// Buffers a new document after checking, at the call, that its id is
    /// free: in the buffered writes, else in the table (the writer holds
    /// the `meta` row lock, so no other session adds one meanwhile).
    pub(crate) fn buffer_insert_document(&mut self, doc: &Document) -> Result<()> {
        let taken = match self.buffer.document(doc.id.as_str()) {
            Some(DocumentWrite::Put { .. }) => true,
            Some(DocumentWrite::Delete) => false,
            None => self.query(DOCUMENT_EXISTS, &[&doc.id.as_str()])?[0].get::<_, bool>(0),
        };
        if taken {
            return Err(StoreError::IdTaken(doc.id.clone()));
        }
        let write = DocumentWrite::Put {
            creation_time: doc.creation_time,
            body: encode_body(&doc.fields),
            replace: true,
        };
        self.write_document(&doc.id, write)
    }

    pub(crate) fn buffer_delete_document(&mut self, id: &DocumentId) -> Result<()> {
        self.write_document(id, DocumentWrite::Delete)
    }

    pub(crate) fn buffer_index_entry(&mut self, key: &[u8], id: Option<&DocumentId>) -> Result<()> {
        let bytes = key.len() + id.map_or(0, |id| id.as_str().len());
        self.buffer
            .top(bytes)
            .entries
            .insert(key.to_vec(), id.map(|id| id.as_str().to_string()));
        self.send_unless_buffering()
    }

    pub(crate) fn buffer_outcome(&mut self, outcome: &MutationOutcome) -> Result<()> {
        let row = OutcomeRow {
            ts: outcome.ts.get() as i64,
            path: outcome.path.clone(),
            value: outcome.value.to_json_text(),
        };
        let key = (
            outcome.session_id.clone(),
            i64::from(outcome.request_id),
            outcome.fingerprint.clone(),
        );
        let bytes = key.0.len() + key.2.len() + row.path.len() + row.value.len() + 16;
        self.buffer.top(bytes).outcomes.insert(key, row);
        self.send_unless_buffering()
    }

    /// A savepoint, in the buffer: no round trip.
    pub(crate) fn buffer_savepoint(&mut self) -> Result<()> {
        if let Some(since) = self.buffer.since_savepoint.take() {
            // A savepoint inside an open one: the earlier one's writes stay.
            self.buffer.writes.extend(since);
        }
        self.buffer.savepoint_sent = false;
        self.buffer.since_savepoint = Some(Writes::default());
        Ok(())
    }

    pub(crate) fn buffer_release_savepoint(&mut self) -> Result<()> {
        if let Some(since) = self.buffer.since_savepoint.take() {
            self.buffer.writes.extend(since);
            return Ok(());
        }
        self.buffer.savepoint_sent = false;
        self.simple("RELEASE SAVEPOINT mutation").map(drop)
    }

    pub(crate) fn buffer_rollback_to_savepoint(&mut self) -> Result<()> {
        if self.buffer.since_savepoint.take().is_some() {
            return Ok(());
        }
        if self.buffer.savepoint_sent {
            // Every unsent write was made after the savepoint; so was any
            // send that failed.
            self.buffer.writes = Writes::default();
            self.buffer.failed = false;
            self.buffer.savepoint_sent = false;
        }
        self.simple("ROLLBACK TO SAVEPOINT mutation; RELEASE SAVEPOINT mutation")
            .map(drop)
    }

    /// Every buffered write, for the commit's own statement; an error if a
    /// send failed earlier in the transaction.
    pub(crate) fn take_writes(&mut self) -> Result<Writes> {
        if self.buffer.failed {
            return Err(engine_error(
                "a write of this transaction failed: it commits nothing".into(),
            ));
        }
        self.buffer.bytes = 0;
        let mut writes = std::mem::take(&mut self.buffer.writes);
        if let Some(since) = self.buffer.since_savepoint.take() {
            writes.extend(since);
        }
        Ok(writes)
    }

    /// Forgets the buffer (the transaction ended).
    pub(crate) fn clear_buffer(&mut self) {
        self.buffer = Buffer::default();
    }

    /// Stamps commit `ts` with every buffered write and the log rows in
    /// one statement; returns the rows the stamp updated (0: fenced).
    pub(crate) fn stamp_with_writes(
        &mut self,
        writes: Writes,
        ts: i64,
        epoch: i64,
        log: Vec<(i64, Vec<u8>)>,
    ) -> Result<u64> {
        let (stamps, logged): (Vec<i64>, Vec<Vec<u8>>) = log.into_iter().unzip();
        let arrays = writes.arrays();
        let mut params: Vec<&(dyn ToSql + Sync)> = arrays.params().to_vec();
        params.extend([&ts as &(dyn ToSql + Sync), &epoch, &stamps, &logged]);
        self.execute(APPLY_AND_STAMP, &params)
    }
}

/// Whether a read of document `id` could see one of `writes`.
pub(crate) fn touches_document(id: &str) -> impl Fn(&Writes) -> bool + '_ {
    move |w| w.documents.contains_key(id)
}

/// Whether a scan of index entries in `start..end` could see one of
/// `writes`: an entry in the range, or any document (an entry's document
/// comes with it).
pub(crate) fn touches_range<'a>(start: &'a [u8], end: &'a [u8]) -> impl Fn(&Writes) -> bool + 'a {
    move |w| {
        !w.documents.is_empty()
            || w.entries
                .keys()
                .any(|k| k.as_slice() >= start && k.as_slice() < end)
    }
}

pub(crate) fn touches_documents(w: &Writes) -> bool {
    !w.documents.is_empty()
}

/// Whether a read of one outcome could see one of `writes`.
pub(crate) fn touches_outcome<'a>(
    session_id: &'a str,
    request_id: i64,
    fingerprint: &'a [u8],
) -> impl Fn(&Writes) -> bool + 'a {
    move |w| {
        w.outcomes
            .keys()
            .any(|(s, r, f)| s == session_id && *r == request_id && f.as_slice() == fingerprint)
    }
}

pub(crate) fn touches_outcomes(w: &Writes) -> bool {
    !w.outcomes.is_empty()
}
